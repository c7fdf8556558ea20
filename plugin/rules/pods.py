"""Pods that are down: a container crash-looping or held before it starts, a pod that is not
Ready.  These are judged from the spec, the status, the pod's Events and the failed run's
log alone (the sockets of a stopped container are gone), and each finding says what could
not be seen where that matters."""

from __future__ import annotations

from typing import Any, Optional

from .. import podspec
from ..findings import Finding, pod_obj, svc_obj
from ..view import PodView
from .common import Check, Rule, crash_subjects, ready_subject, recent

_PULL = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
_LOG_LINES = 5
_UNPRIVILEGED = 1024  # net.ipv4.ip_unprivileged_port_start default


def _container(pv: PodView, name: str) -> dict:
    spec = pv.pod.get("spec") or {}
    return next((c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
                 if c["name"] == name), {})


def _tail(log: Optional[str]) -> list[str]:
    return [line[:200] for line in (log or "").strip().splitlines()[-_LOG_LINES:]]


def _cause(pv: PodView, name: str, t: dict[str, Any]) -> tuple[str, str, str]:
    """(short cause, explanation, fix) of a container's failures, from what is known."""
    k, log = pv.key, pv.logs.get(name)
    logs_cmd = f"`kubectl logs {k[1]} -n {k[0]} -c {name} --previous`"
    for kind in ("liveness", "startup"):
        # the kubelet's kill message first, so that the probe's own failure (its error) is the one quoted
        events = recent(pv.events, name, f"Container {name} failed {kind} probe") + recent(
            pv.events, name, f"{kind.capitalize()} probe")
        if events:
            return (f"the kubelet kills it because its {kind} probe fails ({events[-1]})",
                    f"The kubelet's Events say the {kind} probe fails, and after failureThreshold failures it kills "
                    "the container (exit 137) and restarts it, with growing back-off (CrashLoopBackOff). The "
                    "process itself may be healthy: the probe may target the wrong port, path or address, or give "
                    "it too little time to start.",
                    f"Compare the probe with what the container serves (`kubectl sockdebug pod/{k[1]} -n {k[0]} "
                    "--listening` while it runs); give a slow starter a startupProbe; raise timeoutSeconds or "
                    "failureThreshold if it is only slow.")
    if t.get("reason") == "OOMKilled":
        return ("it is OOMKilled: it exceeds its memory limit",
                "The kernel's OOM killer ends the container when its memory use reaches the limit "
                "(resources.limits.memory); the kubelet restarts it with growing back-off.",
                "Raise the memory limit, or find what grows (heap size flags such as -Xmx or "
                "GOMEMLIMIT should stay below the limit).")
    line = podspec.bind_failure(log)
    if line:
        return (f"its bind fails: {line}",
                "Its log says the address it binds is already in use. In a pod's network namespace that is "
                "another container of the pod (or, for hostNetwork, any process on the node) holding the port, or "
                "the process binding the same port twice.",
                f"See who holds the port (`kubectl sockdebug pod/{k[1]} -n {k[0]} --listening`) and give one of "
                f"them another port; {logs_cmd} shows the failed run.")
    line = podspec.bind_denied(log)
    if line:
        wanted = podspec.mentioned_ports(_container(pv, name)) | podspec.ports_in(line)
        low = sorted(p for p in wanted if p < _UNPRIVILEGED)
        if low:
            return (f"its bind is refused: {line}",
                    f"Its log says binding was refused, and it wants port {low[0]}: a port below 1024 needs root or "
                    "the NET_BIND_SERVICE capability (or the pod sysctl net.ipv4.ip_unprivileged_port_start "
                    "lowered), and the container runs without them (runAsNonRoot, capabilities dropped).",
                    "Listen on a port of 1024 or above (a Service can still expose 80), or add NET_BIND_SERVICE to "
                    "securityContext.capabilities.add, or set the pod sysctl net.ipv4.ip_unprivileged_port_start.")
        return (f"its bind is refused: {line}",
                "Its log says binding was refused (EACCES). Its ports are not privileged ones, so the usual cause "
                "is a security module (SELinux, AppArmor, a seccomp profile) or a raised "
                "net.ipv4.ip_unprivileged_port_start.",
                "Check the node's audit log for a denial of bind() for this container, and the pod's "
                "securityContext (seLinuxOptions, appArmorProfile, seccompProfile) and sysctls.")
    code = t.get("exit_code")
    return (f"the process exits with code {code}" + (f" ({t['reason']})" if t.get("reason") else ""),
            "The container's process keeps exiting on its own and the kubelet restarts it with growing "
            "back-off (CrashLoopBackOff). The cause is in its log: a missing setting or file, a dependency it "
            "cannot reach at start-up, a bad command line.",
            f"Read the failed run: {logs_cmd} (its last lines are in the evidence when they were read).")


def crash_loops(pv: PodView) -> list[Finding]:
    if not podspec.is_live(pv.pod):
        return []
    out = []
    for name, t in pv.trouble.items():
        short, why, fix = _cause(pv, name, t)
        k = pv.key
        not_seen = [u for u in pv.unseen if u.startswith(("sockets", "logs", "events"))]
        out.append(Finding(
            "container-crash-looping", "critical",
            f"pod {k[1]}: container {name} crash-loops ({t['restarts']} restarts, {t['state']}): {short}",
            [pod_obj(k, name, "crash-looping")], why, fix,
            {**t, "log": _tail(pv.logs.get(name)),
             "events": recent(pv.events, name, "Liveness probe", "Startup probe", "Readiness probe",
                              f"Container {name} failed", "Back-off"),
             "not_seen": not_seen},
            about=frozenset(crash_subjects(k, name))))
    return out


def not_started(pv: PodView) -> list[Finding]:
    if not podspec.is_live(pv.pod):
        return []
    out = []
    k = pv.key
    for name in podspec.statuses(pv.pod):
        w = podspec.waiting_error(pv.pod, name)
        if not w:
            continue
        if w["reason"] in _PULL:
            why = ("The kubelet cannot pull the container's image: the name or tag does not exist, the registry "
                   "needs credentials the pod does not have (imagePullSecrets), or the node cannot reach the "
                   "registry. It retries with growing back-off.")
            fix = (f"Check the image reference in the spec against the registry, and the pod's imagePullSecrets; "
                   f"`kubectl describe pod {k[1]} -n {k[0]}` shows the pull error.")
        elif w["reason"] == "CreateContainerConfigError":
            why = ("The kubelet cannot build the container's configuration: usually a ConfigMap, Secret or key "
                   "that an env or envFrom entry refers to does not exist.")
            fix = "Create the missing ConfigMap/Secret (or key) named in the message, or mark the reference optional."
        else:
            why = ("The container runtime refused to create or start the container (a bad command or working "
                   "directory, a mount, a securityContext the runtime rejects, a failing lifecycle hook).")
            fix = f"Read the message in the evidence and `kubectl describe pod {k[1]} -n {k[0]}`."
        out.append(Finding(
            "container-not-running", "critical",
            f"pod {k[1]}: container {name} cannot start: {w['reason']}" + (f" ({w['message'][:120]})"
                                                                          if w["message"] else ""),
            [pod_obj(k, name, "not running")], why, fix,
            {**w, "events": recent(pv.events, name, "Failed", "Error", "Back-off")},
            about=frozenset(crash_subjects(k, name))))
    return out


def not_ready(pv: PodView) -> list[Finding]:
    pod, k = pv.pod, pv.key
    if not podspec.is_running(pod) or podspec.is_ready(pod) is not False:
        return []
    main = {c["name"] for c in podspec.containers(pod)}
    unready = sorted(n for n, st in podspec.statuses(pod).items() if n in main and st.get("ready") is False)
    conds = podspec.conditions(pod)
    gates = sorted(g.get("conditionType") for g in (pod.get("spec") or {}).get("readinessGates") or []
                   if (conds.get(g.get("conditionType")) or {}).get("status") != "True")
    reasons = []
    for n in unready:
        events = recent(pv.events, n, "Readiness probe")
        state = next(iter(podspec.statuses(pod)[n].get("state") or {}), "unknown")
        reasons.append(f"container {n}: " + (events[-1] if events else f"{state}, not ready"))
    reasons += [f"readiness gate {g} is not True" for g in gates]
    endpoints = []
    for sv in pv.services:
        left = sv.ready_endpoints()
        if left is None:
            left = sum(1 for p in sv.selected if podspec.is_ready(p))
        endpoints.append({"service": sv.name, "ready_endpoints": left})
    empty = [e["service"] for e in endpoints if e["ready_endpoints"] == 0]
    about = {ready_subject(k, n) for n in unready} | {("gate", *k, g) for g in gates}
    return [Finding(
        "pod-not-ready", "critical" if empty else "warning",
        f"pod {k[1]} is not Ready"
        + (f": out of the ready endpoints of Service {', '.join(e['service'] for e in endpoints)}" if endpoints else "")
        + (f" (no ready endpoint left in {', '.join(empty)})" if empty else "")
        + (f"; {reasons[0]}" if reasons else ""),
        [pod_obj(k, ",".join(unready) or None, "not ready"),
         *[svc_obj(sv.svc, "not a ready endpoint") for sv in pv.services]],
        "A pod is Ready when every container's readiness probe passes (a container without one is ready once "
        "running) and every readiness gate is True. Until then the endpoints controller lists it as not ready in "
        "its Services' EndpointSlices, so no Service sends it traffic, and a rollout waiting for it stalls."
        + (" With no ready endpoint left, connections to the Service are refused or time out." if empty else ""),
        "Find out why the container is not ready: the readiness probe's Events (in the evidence), "
        f"`kubectl describe pod {k[1]} -n {k[0]}`; a readiness gate is set by its controller (a load balancer "
        "registration, for instance).",
        {"reasons": reasons, "unready_containers": unready, "readiness_gates": gates, "endpoints": endpoints,
         "conditions": {t: c.get("status") for t, c in conds.items()}},
        about=frozenset(about or {("ready", *k, "*")}))]


RULES = (
    Rule("container-crash-looping", ("critical",),
         "a container (init containers and sidecars included) is in CrashLoopBackOff, terminated with an error, or "
         "running again after 2+ failed runs; the cause is taken from the kubelet's probe Events, an OOMKilled "
         "termination, or the failed run's log (address in use, bind permission denied)",
         ("state", "restarts", "exit_code", "reason", "log", "events", "not_seen"), ("pod-not-ready",)),
    Rule("container-not-running", ("critical",),
         "a container waits for a reason that does not pass by itself: ImagePullBackOff, ErrImagePull, "
         "InvalidImageName, CreateContainerConfigError, CreateContainerError, RunContainerError, hook errors",
         ("reason", "message", "events"), ("pod-not-ready",)),
    Rule("pod-not-ready", ("critical", "warning"),
         "a Running pod whose Ready condition is False; critical when a Service selecting it has no ready endpoint "
         "left (from its EndpointSlices, else from its pods' Ready conditions)",
         ("reasons", "unready_containers", "readiness_gates", "endpoints", "conditions")),
)
CHECKS = (
    Check("pod", crash_loops, ("container-crash-looping",)),
    Check("pod", not_started, ("container-not-running",)),
    Check("pod", not_ready, ("pod-not-ready",)),
)
