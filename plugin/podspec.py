"""Pure pod-spec and pod-status knowledge: containers (sidecars included), their ports and
states, probes with their ports resolved the way the kubelet resolves them, label
selectors, and what a container's last log lines say about why it stopped.

Plain API dicts in, small typed records out; no I/O.  The findings rules
(``plugin/rules``) and the sweep's collection both read pods through these functions so
that "which container", "is it running" and "which port does this name mean" have one
answer each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Optional, Union

PodKey = tuple[str, str]  #: (namespace, name)
PROBE_KINDS = ("startup", "liveness", "readiness")  #: the kubelet runs startup first, then the other two
PROBE_HANDLERS = ("tcpSocket", "httpGet", "grpc")  #: the handlers that connect to a port
_PROBE_FIELDS = tuple((kind, f"{kind}Probe") for kind in PROBE_KINDS)
_PORT_WORDS = re.compile(r"(?::|\bport[=: ]\s*|\bports?=)(\d{1,5})\b", re.I)
# A bind that failed because the address is taken, in the wording of the usual servers and
# runtimes: Python "[Errno 98] Address already in use", Go "bind: address already in use",
# nginx "(98: Address already in use)", Node "EADDRINUSE", Rust "(os error 98)", Spring Boot
# "Port 8080 was already in use", Erlang "eaddrinuse", .NET/Windows wording.
_BIND_IN_USE = re.compile(
    r"address (?:already )?in use|already in use|eaddrinuse|errno 98\b|\b98: |os error 98\b"
    r"|only one usage of each socket address", re.I)
# A bind refused for want of privilege: a port below net.ipv4.ip_unprivileged_port_start
# (1024 by default) as a non-root user without CAP_NET_BIND_SERVICE.
_BIND_DENIED = re.compile(
    r"(?:bind|listen)\w*[^\n]{0,80}?(?:permission denied|eacces|errno 13\b|os error 13\b)"
    r"|(?:permission denied|eacces)[^\n]{0,40}?(?:bind|listen|port)", re.I)
# Waiting reasons that mean the container will not start without a change (as opposed to
# ContainerCreating / PodInitializing, which pass by themselves).
ERROR_WAITING = frozenset({
    "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError",
    "CreateContainerError", "RunContainerError", "PreCreateHookError", "PostStartHookError",
    "PreStartHookError",
})


class ContainerPort(NamedTuple):
    container: str
    name: Optional[str]
    port: int
    protocol: str  #: TCP | UDP | SCTP
    host_port: Optional[int]  #: hostPort, or the port itself for a hostNetwork pod
    host_ip: str


class Probe(NamedTuple):
    """One readiness/liveness/startup probe of one container, its port resolved."""

    container: str
    kind: str  #: startup | liveness | readiness
    handler: str  #: tcpSocket | httpGet | grpc | exec
    port_ref: Union[int, str, None]  #: as written in the spec
    port: Optional[int]  #: the number the kubelet connects to; None when it cannot resolve the name
    host: Optional[str]  #: the spec's host field (None: the pod IP)
    path: Optional[str]  #: httpGet path
    scheme: Optional[str]  #: httpGet scheme
    declared_by: Optional[str]  #: an unresolved name that another container of the pod declares
    failure_threshold: int
    period_seconds: int

    def text(self) -> str:
        """``readiness probe httpGet :http/healthz (8080)`` style."""
        where = f"{self.host or ''}:{self.port_ref}" + ((self.path or "/") if self.handler == "httpGet" else "")
        if self.port is not None and str(self.port_ref) != str(self.port):
            where += f" ({self.port})"
        return f"{self.kind} probe {self.handler} {where}"


# --- containers and their state -----------------------------------------------------------

def key(pod: Mapping) -> PodKey:
    meta = pod["metadata"]
    return meta.get("namespace", ""), meta["name"]


def host_network(pod: Mapping) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))


def containers(pod: Mapping) -> list[dict]:
    """Regular containers, then sidecars (init containers that keep running): the order in
    which the endpoints controller looks up a named port (FindPort)."""
    spec = pod.get("spec") or {}
    sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    return list(spec.get("containers") or []) + sidecars


def container_ports(pod: Mapping) -> list[ContainerPort]:
    host_net = host_network(pod)
    out = []
    for c in containers(pod):
        for p in c.get("ports") or []:
            port = p.get("containerPort")
            if not port:
                continue
            host_port = p.get("hostPort") or (port if host_net else None)
            out.append(ContainerPort(c["name"], p.get("name"), int(port), p.get("protocol") or "TCP",
                                     host_port, p.get("hostIP") or ""))
    return out


def statuses(pod: Mapping) -> dict[str, dict]:
    st = pod.get("status") or {}
    return {s["name"]: s for k in ("initContainerStatuses", "containerStatuses") for s in st.get(k) or []}


def running_containers(pod: Mapping) -> set[str]:
    return {n for n, s in statuses(pod).items() if "running" in (s.get("state") or {})}


def trouble(pod: Mapping, container: str) -> Optional[dict[str, Any]]:
    """How a container is failing (crash-looping, or exited with an error), else None."""
    s = statuses(pod).get(container)
    return status_trouble(s) if s else None


def status_trouble(s: Mapping) -> Optional[dict[str, Any]]:
    """``trouble`` of one container status record."""
    state = s.get("state") or {}
    waiting = state.get("waiting") or {}
    last = (s.get("lastState") or {}).get("terminated") or {}
    term = state.get("terminated") or {}
    restarts = int(s.get("restartCount") or 0)
    failed_now = bool(term) and term.get("exitCode", 0) != 0
    failed_before = bool(last) and last.get("exitCode", 0) != 0
    # Running again after 2+ failed runs is a crash loop caught between restarts (it runs
    # for a moment each time); after one failure it may have recovered.
    if (waiting.get("reason") == "CrashLoopBackOff" or failed_now
            or (failed_before and restarts and ("running" not in state or restarts >= 2))):
        ended = term or last
        return {"state": waiting.get("reason") or ("Terminated" if term else
                                                   "Running between restarts" if "running" in state else "Restarting"),
                "restarts": restarts, "exit_code": ended.get("exitCode"), "reason": ended.get("reason")}
    return None


def waiting_error(pod: Mapping, container: str) -> Optional[dict[str, Any]]:
    """A container held in a waiting state that will not pass by itself (image pull, bad
    config, ...), else None."""
    waiting = ((statuses(pod).get(container) or {}).get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in ERROR_WAITING:
        return {"reason": waiting["reason"], "message": (waiting.get("message") or "")[:300]}
    return None


def conditions(pod: Mapping) -> dict[str, dict]:
    return {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}


def is_ready(pod: Mapping) -> Optional[bool]:
    """The Ready condition; None when the status does not say."""
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return None


def is_live(pod: Mapping) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get("phase") in (
        "Running", "Pending", None)


def is_running(pod: Mapping) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")


def scheduled_message(pod: Mapping) -> str:
    c = conditions(pod).get("PodScheduled") or {}
    if c.get("status") == "False":
        return c.get("message") or c.get("reason") or ""
    return ""


def unschedulable_for_ports(pod: Mapping) -> bool:
    return ((pod.get("status") or {}).get("phase") == "Pending" and not pod["metadata"].get("deletionTimestamp")
            and "free ports" in scheduled_message(pod))


def rejected_for_ports(pod: Mapping) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Failed" and ("NodePorts" in (st.get("reason") or "")
                                            or "free ports" in (st.get("message") or "")
                                            or "NodePorts" in (st.get("message") or ""))


def pod_ips(pod: Mapping) -> list[str]:
    st = pod.get("status") or {}
    ips = [p.get("ip") for p in st.get("podIPs") or [] if p.get("ip")]
    if st.get("podIP") and st["podIP"] not in ips:
        ips.insert(0, st["podIP"])
    return ips


# --- ports: declared, named, mentioned ------------------------------------------------------

def resolve_target_port(pod: Mapping, target: Any, protocol: str) -> Optional[int]:
    """What a Service targetPort means for one pod (the endpoints controller's FindPort):
    a name is looked up in every container's ports (sidecars included) with the Service
    port's protocol."""
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in containers(pod):
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                return int(p["containerPort"])
    return None


def named_port(pod: Mapping, name: str, protocol: Optional[str] = None) -> Optional[int]:
    """A containerPort of any container by name (NetworkPolicy named ports mean that)."""
    for c in containers(pod):
        for p in c.get("ports") or []:
            if p.get("name") == name and (protocol is None or (p.get("protocol") or "TCP") == protocol):
                return int(p["containerPort"])
    return None


def ports_in(text: str) -> set[int]:
    """Port numbers written as ``:N``, ``port N``, ``--port=N`` in a word or a log line."""
    return {int(m) for m in _PORT_WORDS.findall(text) if 0 < int(m) < 65536}


def mentioned_ports(container: Mapping) -> set[int]:
    """Ports a container declares or names on its command line / in *PORT* variables: the
    ports it probably tries to bind."""
    ports = {int(p["containerPort"]) for p in container.get("ports") or [] if p.get("containerPort")}
    for word in [*(container.get("command") or []), *(container.get("args") or [])]:
        ports |= ports_in(str(word))
    for env in container.get("env") or []:
        value = str(env.get("value") or "")
        if "PORT" in str(env.get("name", "")).upper() and value.isdigit() and 0 < int(value) < 65536:
            ports.add(int(value))
    return ports


def bind_failure(log: Optional[str]) -> Optional[str]:
    """The log line saying a bind failed because the address is taken, if any."""
    return _last_line(log, _BIND_IN_USE)


def bind_denied(log: Optional[str]) -> Optional[str]:
    """The log line saying a bind was refused for want of privilege, if any."""
    return _last_line(log, _BIND_DENIED)


def _last_line(log: Optional[str], pattern: re.Pattern) -> Optional[str]:
    for line in reversed((log or "").splitlines()):
        if pattern.search(line):
            return line.strip()[:200]
    return None


# --- probes ---------------------------------------------------------------------------------

def probe_port(container: Mapping, ref: Any) -> Optional[int]:
    """The kubelet's ResolveContainerPort: a number, or a name looked up in the probed
    container's own ports only (then, as a last resort, a number written as a string)."""
    if isinstance(ref, int):
        return ref if 0 < ref < 65536 else None
    if isinstance(ref, str):
        for p in container.get("ports") or []:
            if p.get("name") == ref:
                return int(p["containerPort"])
        if ref.isdigit() and 0 < int(ref) < 65536:
            return int(ref)
    return None


def probes(pod: Mapping) -> list[Probe]:
    """Every probe of every container (sidecars included), ports resolved as the kubelet
    does; exec probes are listed with no port."""
    out = []
    all_containers = containers(pod)
    for c in all_containers:
        for kind, field in _PROBE_FIELDS:
            spec = c.get(field)
            if not spec:
                continue
            handler = "exec" if "exec" in spec else None
            for h in PROBE_HANDLERS:
                if spec.get(h):
                    handler = h
                    break
            if handler is None:
                continue
            action = spec.get(handler) or {}
            ref = action.get("port")
            port = probe_port(c, ref) if handler != "exec" else None
            declared_by = None
            if handler != "exec" and port is None and isinstance(ref, str):
                declared_by = next((o["name"] for o in all_containers if o is not c for p in o.get("ports") or []
                                    if p.get("name") == ref), None)
            out.append(Probe(c["name"], kind, handler, ref, port, action.get("host") or None, action.get("path"),
                             action.get("scheme"), declared_by, int(spec.get("failureThreshold") or 3),
                             int(spec.get("periodSeconds") or 10)))
    return out


# --- label selectors --------------------------------------------------------------------------

def selects(selector: Optional[Mapping[str, str]], labels: Mapping[str, str]) -> bool:
    """A Service-style selector (a plain map): every pair present.  An empty or absent
    selector selects nothing (a Service without one has hand-managed endpoints)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())  # type: ignore[union-attr]


def label_selector_matches(selector: Optional[Mapping], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions): ``{}`` selects everything,
    None nothing; unknown operators select nothing (as the API server would reject them)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            ok = k in labels and labels[k] in values
        elif op == "NotIn":
            ok = k not in labels or labels[k] not in values
        elif op == "Exists":
            ok = k in labels
        elif op == "DoesNotExist":
            ok = k not in labels
        else:
            ok = False
        if not ok:
            return False
    return True


def labels(pod: Mapping) -> dict[str, str]:
    return pod["metadata"].get("labels") or {}


def ports_text(ports: Iterable[int]) -> str:
    return ", ".join(str(p) for p in sorted(set(ports)))
