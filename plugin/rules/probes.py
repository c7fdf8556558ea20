"""Readiness, liveness and startup probes against what listens: the kubelet connects from
the node to the pod's IP (a hostNetwork pod's is the node's), on the port the probe names,
resolved in the probed container's own ports only.

Only running containers are judged (a stopped one has no sockets; ``rules/pods.py`` speaks
for it), only ``tcpSocket``, ``httpGet`` and ``grpc`` probes (``exec`` runs inside the
container), and a probe whose ``host`` is neither the pod's IP nor (hostNetwork) the node's
loopback is left alone: the pod's sockets do not decide it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Optional

from .. import podspec
from ..findings import Finding, pod_obj, svc_obj
from ..podspec import Probe
from ..view import Listener, PodView, is_loopback, normal_ip
from .common import Check, Rule, crash_subjects, on_port, owners_text, port_subject, ready_subject, recent, restarts

_EFFECTS = {
    "readiness": "the kubelet marks the container not ready after failureThreshold failures: the pod's Ready "
                 "condition is False and every Service selecting it lists it as not ready in its EndpointSlices, "
                 "so it gets no Service traffic",
    "liveness": "after failureThreshold failures the kubelet kills the container and restarts it (exit 137, "
                "'Container ... failed liveness probe, will be restarted'), into CrashLoopBackOff",
    "startup": "liveness and readiness probes do not run until it succeeds; after failureThreshold failures the "
               "kubelet kills the container and restarts it, so it never starts for good",
}
_EVENT_PREFIXES = {"readiness": ("Readiness probe",), "liveness": ("Liveness probe", "Container {} failed liveness"),
                   "startup": ("Startup probe", "Container {} failed startup")}


def _events(pv: PodView, container: str, kind: str, first: bool = False) -> list[str]:
    """The kubelet's Events about this probe of this container (``first``: the probe's own
    'probe failed' ones only, not the 'Container X failed liveness probe, will be restarted')."""
    prefixes = _EVENT_PREFIXES[kind][:1] if first else _EVENT_PREFIXES[kind]
    return recent(pv.events, container, *(p.format(container) for p in prefixes))
_REFUSED_COUNTERS = ("Tcp.OutRsts",)


def probe_checks(pv: PodView) -> list[Finding]:
    running = pv.running
    failing: dict[tuple[str, Any, str], list[Probe]] = defaultdict(list)  # (container, port, how) -> probes
    found_on: dict[tuple[str, Any, str], list[Listener]] = {}
    for probe in pv.probes:
        if probe.handler == "exec" or probe.container not in running:
            continue
        if probe.port is None:
            if isinstance(probe.port_ref, str):
                failing[probe.container, probe.port_ref, "unresolved"].append(probe)
            continue
        judged, target = _target(pv, probe)
        if not judged or pv.listeners is None:
            continue
        found = on_port(pv.listeners, probe.port, "TCP")
        if any(lst.accepts(target) for lst in found):
            continue
        how = "loopback" if found and all(lst.loopback for lst in found) else "none"
        failing[probe.container, probe.port, how].append(probe)
        found_on[probe.container, probe.port, how] = found
    return [_finding(pv, container, port, how, probes, found_on.get((container, port, how), []))
            for (container, port, how), probes in sorted(failing.items(), key=lambda kv: str(kv[0]))]


def _target(pv: PodView, probe: Probe) -> tuple[bool, Optional[str]]:
    """(whether the pod's sockets decide this probe, the address the kubelet connects to)."""
    if not probe.host:
        return True, pv.target_ip()
    host = "127.0.0.1" if probe.host.lower() == "localhost" else normal_ip(probe.host)
    if host is not None and host in {normal_ip(ip) for ip in podspec.pod_ips(pv.pod)}:
        return True, host
    if pv.host_network and host is not None and is_loopback(host):
        return True, host  # the node's loopback is this pod's namespace
    return False, None


def _finding(pv: PodView, container: str, port: Any, how: str, probes: list[Probe],
             found: list[Listener]) -> Finding:
    k = pv.key
    kinds = [p.kind for p in probes]
    confirmed = _confirmed(pv, container, kinds)
    severity = "critical" if confirmed else "warning"
    what = " and ".join(p.text() for p in probes)
    services = pv.services if "readiness" in kinds else []
    effects = _effects(pv, container, kinds, services)
    about: set = set()
    for kind in kinds:
        about |= {ready_subject(k, container)} if kind == "readiness" else crash_subjects(k, container)
    evidence: dict[str, Any] = {
        "container": container, "probes": [_probe_dict(p) for p in probes], **_status(pv, container),
        "events": [e for kind in dict.fromkeys(kinds) for e in _events(pv, container, kind)],
    }
    if services:
        evidence["endpoints"] = _endpoints(pv, services)
    if how == "unresolved":
        declared_by = next((p.declared_by for p in probes if p.declared_by), None)
        title = (f"pod {k[1]}: {what} of container {container} names port {port!r}, which container {container} "
                 f"does not declare{f' (container {declared_by} does)' if declared_by else ''}: the probe always "
                 f"fails → {effects}")
        return Finding(
            "probe-named-port-missing", severity, title, _objects(pv, container, services),
            "The kubelet resolves a probe's named port in the probed container's own ports only "
            "(ResolveContainerPort), never in another container's, even though all containers share the pod's "
            "network namespace. It cannot resolve this one, so every probe errors ('... probe errored: ...' "
            f"Events) and counts as a failure. Then {_joined_effects(kinds)}.",
            f"Use the port number in the probe (`port: N`), or declare the named port in container {container}"
            + (f" (and remove it from container {declared_by}, or two containers declare one port)" if declared_by
               else "") + ".",
            {**evidence, "port": port, "declared_by": declared_by}, about=frozenset(about))
    about.add(port_subject(k, port, "TCP"))
    target = next((t for p in probes if (t := _target(pv, p)[1])), None)
    evidence.update(port=port, target=target, **pv.counters(*_REFUSED_COUNTERS))
    if how == "loopback":
        addresses = sorted({lst.address for lst in found})
        title = (f"pod {k[1]}: {what} of container {container} fails: port {port} listens only on loopback "
                 f"({', '.join(addresses)}) → {effects}")
        why = (f"The kubelet connects from the node to {target or 'the pod IP'}:{port}; {owners_text(found)} accepts "
               f"connections on port {port} only on {', '.join(addresses)}, which only the pod itself can reach "
               "(`curl localhost` inside the pod works), so the kernel answers the kubelet's SYN with RST: "
               f"'connect: connection refused'. Then {_joined_effects(kinds)}.")
        fix = ("Make the server listen on 0.0.0.0 (or ::, or the pod IP from the downward API: status.podIP); "
               "look for a default like `--host 127.0.0.1`, `bind: localhost` or `server.address`. Check with "
               f"`kubectl sockdebug pod/{k[1]} -n {k[0]} --listening`.")
        return Finding("probe-loopback-only", severity, title, _objects(pv, container, services), why, fix,
                       {**evidence, "addresses": addresses,
                        "processes": sorted({p for lst in found for p in lst.processes})},
                       about=frozenset(about))
    listening = sorted({lst.port for lst in pv.listeners or [] if lst.protocol == "TCP" and not lst.loopback})
    elsewhere = sorted({lst.address for lst in found})
    title = (f"pod {k[1]}: {what} of container {container} fails: nothing listens on port {port}"
             + (f" at {target}" if elsewhere else "") + f" → {effects}")
    why = (f"The kubelet connects from the node to {target or 'the pod IP'}:{port}, and no socket of the pod "
           + (f"accepts it there (port {port} is bound to {', '.join(elsewhere)} only)" if elsewhere
              else "listens on that port") + ", so the kernel answers with RST: 'connect: connection refused'. "
           f"Then {_joined_effects(kinds)}.")
    fix = (f"Point the probe at the port the server really listens on ({', '.join(map(str, listening)) or 'none'} "
           f"in `listening`), or make the server listen on {port}; a server that takes long to start needs a "
           "startupProbe rather than a port that is not open yet.")
    return Finding("probe-not-listening", severity, title, _objects(pv, container, services), why, fix,
                   {**evidence, "listening": listening, **({"bound_to": elsewhere} if elsewhere else {})},
                   about=frozenset(about))


def _objects(pv: PodView, container: str, services: list) -> list[dict]:
    return [pod_obj(pv.key, container, "probe fails"), *[svc_obj(sv.svc, "not a ready endpoint") for sv in services]]


def _joined_effects(kinds: list[str]) -> str:
    return "; ".join(f"for the {kind} probe, {_EFFECTS[kind]}" for kind in dict.fromkeys(kinds))


def _effects(pv: PodView, container: str, kinds: list[str], services: list) -> str:
    out = []
    if "startup" in kinds:
        out.append(f"container {container} never counts as started and is restarted")
    if "liveness" in kinds:
        n = restarts(pv.pod, container)
        out.append(f"the kubelet restarts container {container}" + (f" ({n} restarts so far)" if n else ""))
    if "readiness" in kinds:
        names = ", ".join(sv.name for sv in services)
        out.append("the pod is not Ready" + (f" and out of the ready endpoints of Service {names}" if names else ""))
    return "; ".join(out)


def _confirmed(pv: PodView, container: str, kinds: list[str]) -> bool:
    """Whether the pod's status or Events show the failure the sockets predict."""
    st = podspec.statuses(pv.pod).get(container) or {}
    for kind in kinds:
        if _events(pv, container, kind, first=True):
            return True
        if kind == "readiness" and (st.get("ready") is False or podspec.is_ready(pv.pod) is False):
            return True
        if kind != "readiness" and (restarts(pv.pod, container) or (kind == "startup" and st.get("started") is False)):
            return True
    return False


def _status(pv: PodView, container: str) -> dict[str, Any]:
    st = podspec.statuses(pv.pod).get(container) or {}
    last = (st.get("lastState") or {}).get("terminated")
    return {"pod_conditions": {t: c.get("status") for t, c in podspec.conditions(pv.pod).items()
                               if t in ("Ready", "ContainersReady")},
            "container_status": {"ready": st.get("ready"), "started": st.get("started"),
                                 "restarts": int(st.get("restartCount") or 0),
                                 "last_termination": {k: last.get(k) for k in ("exitCode", "reason", "finishedAt")
                                                      if k in last} if last else None}}


def _endpoints(pv: PodView, services: list) -> list[dict[str, Any]]:
    out = []
    for sv in services:
        mine = [e for e in pv.endpoints if e.service == sv.name]
        out.append({"service": sv.name, "ready": (all(e.ready for e in mine) if mine else None),
                    "slices": sorted({e.slice for e in mine}), "ready_endpoints": sv.ready_endpoints()})
    return out


def _probe_dict(p: Probe) -> dict[str, Any]:
    return {"probe": p.kind, "handler": p.handler, "port": p.port_ref, "resolved": p.port, "host": p.host,
            "path": p.path, "failure_threshold": p.failure_threshold, "period_seconds": p.period_seconds}


_EXPLAINS = ("declared-port-not-listening", "service-port-not-listening", "loopback-only-listener",
             "pod-not-ready", "container-crash-looping")
_EVIDENCE = ("container", "probes", "pod_conditions", "container_status", "events", "endpoints", "port")
RULES = (
    Rule("probe-not-listening", ("critical", "warning"),
         "a tcpSocket/httpGet/grpc probe of a running container targets a port no socket of the pod accepts on "
         "the address the kubelet uses (the pod IP; the node IP for hostNetwork; the probe's host when that is "
         "the pod's); critical when the pod's status or Events confirm the failure (not ready, restarts, "
         "'probe failed' Events), warning when they do not yet",
         (*_EVIDENCE, "target", "listening", "bound_to", "Tcp.OutRsts"), _EXPLAINS),
    Rule("probe-loopback-only", ("critical", "warning"),
         "as probe-not-listening, but the port listens only on 127.0.0.0/8, ::1 or ::ffff:127.x: the bind "
         "address is the cause", (*_EVIDENCE, "target", "addresses", "processes", "Tcp.OutRsts"), _EXPLAINS),
    Rule("probe-named-port-missing", ("critical", "warning"),
         "a probe names a port the probed container does not declare (another container's ports do not count "
         "for the kubelet): the probe always fails; critical when confirmed as above",
         (*_EVIDENCE, "declared_by"), _EXPLAINS[3:]),
)
CHECKS = (Check("pod", probe_checks, ("probe-not-listening", "probe-loopback-only", "probe-named-port-missing")),)
