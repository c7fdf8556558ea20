"""Cluster-wide port checks: what pods and Services declare against what really listens.

Pure functions, no I/O: ``analyse(SweepInput)`` takes pod and Service specs (plain API
dicts), each inspected pod's listening sockets (agent ``Socket`` records whose owning
processes carry the container name in ``container``), the listeners of each node's own
network namespace that no pod owns, and the last log lines of crash-looping containers,
and returns ``SweepFinding`` s, most severe first.  ``sweep_run`` collects those inputs
from a cluster; the unit tests construct them.

Each finding names the objects involved (Services, pods, containers, nodes) with their
role, says what goes wrong in plain language and what to change.  The rules:

==============================  ========  ==================================================
id                              severity  when
==============================  ========  ==================================================
service-port-not-listening      critical  a Service's targetPort resolves to a port on which a
                                          selected pod has no listener at all
loopback-only-listener          critical  a Service points at a port the pod only listens on
                                warning   loopback for; warning when only a containerPort does
                                info      (info for a hostNetwork pod: node-local agents do that)
named-port-missing              critical  a named targetPort that a selected pod does not declare
named-port-mismatch             warning   a named targetPort resolving to different numbers
                                          across the Service's pods
declared-port-not-listening     warning   a containerPort of a running container nothing listens on
undeclared-listener             info      a pod listens (not on loopback) on ports it does not declare
container-port-conflict         critical  containers of one pod declare or bind the same port
                                          and one of them crash-loops (EADDRINUSE): it is named;
                                warning   declared twice, both still running
hostport-conflict               critical  two pods on one node declare the same hostPort (a
                                          hostNetwork pod's containerPorts are hostPorts), or a
                                          pod cannot be scheduled for want of a free host port
hostnetwork-port-conflict       critical  hostNetwork pods on one node bind the same port (or one
                                          crash-loops with EADDRINUSE on a port another holds);
                                warning   same port on disjoint addresses: works until one binds
                                          the wildcard address
node-daemon-port                critical  a hostNetwork pod or hostPort uses a port of the node's
                                          own daemons (kubelet 10250, ...)
host-port-in-use                critical  a hostNetwork pod or hostPort declares a port a process
                                          of the node itself already listens on (``--via node``,
                                          or seen from a hostNetwork pod)
nodeport-range                  warning   a hostNetwork pod or hostPort uses a port inside the
                                critical  Service NodePort range; critical when a Service has
                                          taken that nodePort
==============================  ========  ==================================================

Declared-but-not-listening is not reported for a port another finding already explains
(the Service finding, a conflict, a node daemon).  Ports of containers that are not
running are only judged by the conflict rules: a crash that is not about a port is not a
port finding.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Optional

SEVERITIES = ("critical", "warning", "info")
RANK = {"critical": 2, "warning": 1, "info": 0}
NODE_PORT_RANGE = (30000, 32767)  # kube-apiserver --service-node-port-range default
EPHEMERAL_RANGE = (32768, 60999)  # net.ipv4.ip_local_port_range default
# Ports the node's own daemons listen on (host network namespace), with the process name
# prefix (comm is cut at 15 characters) that legitimately holds each.
NODE_DAEMON_PORTS: dict[int, tuple[str, str]] = {
    10250: ("kubelet", "kubelet API"),
    10248: ("kubelet", "kubelet healthz"),
    10255: ("kubelet", "kubelet read-only API"),
    10249: ("kube-proxy", "kube-proxy metrics"),
    10256: ("kube-proxy", "kube-proxy healthz"),
    10257: ("kube-controller-manager", "kube-controller-manager secure port"),
    10259: ("kube-scheduler", "kube-scheduler secure port"),
    2379: ("etcd", "etcd client"),
    2380: ("etcd", "etcd peer"),
    6443: ("kube-apiserver", "kube-apiserver secure port"),
}
_WILDCARDS = frozenset({None, "", "*", "0.0.0.0", "::"})
_BIND_FAILURE = re.compile(r"address (?:already )?in use|eaddrinuse|errno 98\b|\b98: ", re.I)
_PORT_WORDS = re.compile(r"(?::|\bport[=: ]\s*|\bports?=)(\d{1,5})\b", re.I)

PodKey = tuple[str, str]  # (namespace, name)


class SweepFinding(NamedTuple):
    """One port problem: what, who, why, and what to change."""

    id: str
    severity: str  #: critical | warning | info
    title: str
    objects: list[dict[str, Any]]  #: {kind: Service|Pod|Node, namespace?, name, container?, role?}
    explanation: str
    fix: str
    evidence: dict[str, Any]


class Uninspected(NamedTuple):
    """A pod in scope whose sockets could not be read, and why."""

    namespace: str
    name: str
    node: Optional[str]
    reason: str


class Listener(NamedTuple):
    """A listening TCP socket or a bound, unconnected UDP socket."""

    protocol: str  #: TCP | UDP
    address: str  #: "0.0.0.0", "::", "127.0.0.1", ...
    port: int
    containers: tuple[str, ...]  #: owning containers, when owners could be read
    processes: tuple[str, ...]  #: comm/pid

    @property
    def loopback(self) -> bool:
        return is_loopback(self.address)

    def text(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol.lower()} {host}:{self.port}"


class ContainerPort(NamedTuple):
    container: str
    name: Optional[str]
    port: int
    protocol: str
    host_port: Optional[int]
    host_ip: str


class SweepInput(NamedTuple):
    pods: list[dict]  #: the pods in scope (every phase; only running ones are inspected)
    services: list[dict]  #: Services of the namespaces in scope (or all)
    sockets: dict[PodKey, list[Any]]  #: inspected pods: their listening Socket records
    uninspected: dict[PodKey, str] = {}  #: pods that could not be inspected -> why
    context_pods: list[dict] = []  #: other pods (any namespace) for node-level checks
    host_listeners: dict[str, list[Any]] = {}  #: node -> host-netns listeners no pod owns
    logs: dict[tuple[str, str, str], str] = {}  #: (ns, pod, container) -> last log lines (previous run)
    node_port_range: tuple[int, int] = NODE_PORT_RANGE


class Report(NamedTuple):
    findings: list[SweepFinding]
    uninspected: list[Uninspected]
    inspected: int  #: pods whose sockets were read
    pods: int  #: pods in scope


# --- small helpers ------------------------------------------------------------------

def key(pod: dict) -> PodKey:
    meta = pod["metadata"]
    return meta.get("namespace", ""), meta["name"]


def is_loopback(addr: Optional[str]) -> bool:
    if not addr or addr in _WILDCARDS:
        return False
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def overlaps(a: Optional[str], b: Optional[str]) -> bool:
    """Two bind addresses on one port collide: a wildcard collides with everything."""
    return a in _WILDCARDS or b in _WILDCARDS or a == b


def listeners(sockets: Iterable[Any]) -> list[Listener]:
    """TCP LISTEN and bound UDP UNCONN sockets as ``Listener`` s (other records ignored)."""
    out = []
    for s in sockets:
        if getattr(s, "type", "socket") != "socket" or s.family not in ("inet", "inet6") or not s.local_port:
            continue
        if s.netid == "tcp" and s.state == "LISTEN":
            proto = "TCP"
        elif s.netid == "udp" and s.state == "UNCONN":
            proto = "UDP"
        else:
            continue
        procs = s.processes or []
        containers = tuple(sorted({p["container"] for p in procs if p.get("container")}))
        processes = tuple(dict.fromkeys(f"{p.get('comm')}/{p.get('pid')}" for p in procs))
        out.append(Listener(proto, s.local_address or "*", s.local_port, containers, processes))
    return out


def _containers(pod: dict) -> list[dict]:
    """Regular containers and sidecars (init containers that keep running)."""
    spec = pod.get("spec", {})
    sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    return sidecars + list(spec.get("containers") or [])


def container_ports(pod: dict) -> list[ContainerPort]:
    host_network = bool(pod.get("spec", {}).get("hostNetwork"))
    out = []
    for c in _containers(pod):
        for p in c.get("ports") or []:
            port = p.get("containerPort")
            if not port:
                continue
            host_port = p.get("hostPort") or (port if host_network else None)
            out.append(ContainerPort(c["name"], p.get("name"), int(port), p.get("protocol") or "TCP",
                                     host_port, p.get("hostIP") or ""))
    return out


def _statuses(pod: dict) -> dict[str, dict]:
    st = pod.get("status", {})
    return {s["name"]: s for k in ("initContainerStatuses", "containerStatuses") for s in st.get(k) or []}


def running_containers(pod: dict) -> set[str]:
    return {n for n, s in _statuses(pod).items() if "running" in (s.get("state") or {})}


def trouble(pod: dict, container: str) -> Optional[dict[str, Any]]:
    """How a container is failing (crash-looping, or exited with an error), else None."""
    s = _statuses(pod).get(container)
    if not s:
        return None
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


def bind_failure(log: Optional[str]) -> Optional[str]:
    """The log line saying a bind failed because the address is taken, if any."""
    for line in reversed((log or "").splitlines()):
        if _BIND_FAILURE.search(line):
            return line.strip()[:200]
    return None


def mentioned_ports(container: dict) -> set[int]:
    """Ports a container declares or names on its command line / in *PORT* variables: the
    ports it probably tries to bind."""
    ports = {int(p["containerPort"]) for p in container.get("ports") or [] if p.get("containerPort")}
    for word in [*(container.get("command") or []), *(container.get("args") or [])]:
        ports.update(int(m) for m in _PORT_WORDS.findall(str(word)) if 0 < int(m) < 65536)
    for env in container.get("env") or []:
        value = str(env.get("value") or "")
        if "PORT" in str(env.get("name", "")).upper() and value.isdigit() and 0 < int(value) < 65536:
            ports.add(int(value))
    return ports


def selects(selector: dict, pod: dict) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def resolve_target_port(pod: dict, target: Any, protocol: str) -> Optional[int]:
    """What a Service targetPort means for one pod (the endpoints controller's FindPort)."""
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in _containers(pod):
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                return int(p["containerPort"])
    return None


def pod_obj(pod_or_key: Any, container: Optional[str] = None, role: Optional[str] = None) -> dict[str, Any]:
    ns, name = pod_or_key if isinstance(pod_or_key, tuple) else key(pod_or_key)
    obj: dict[str, Any] = {"kind": "Pod", "namespace": ns, "name": name}
    if container:
        obj["container"] = container
    if role:
        obj["role"] = role
    return obj


def svc_obj(svc: dict) -> dict[str, Any]:
    return {"kind": "Service", "namespace": svc["metadata"].get("namespace", ""), "name": svc["metadata"]["name"]}


def node_obj(node: str) -> dict[str, Any]:
    return {"kind": "Node", "name": node}


def object_text(obj: dict[str, Any]) -> str:
    """kubectl-style: ``svc/web -n shop``, ``pod/api -n shop (container app, crash-looping)``."""
    kind = {"Service": "svc", "Pod": "pod", "Node": "node"}.get(obj["kind"], obj["kind"].lower())
    text = f"{kind}/{obj['name']}"
    if obj.get("namespace"):
        text += f" -n {obj['namespace']}"
    extra = [f"container {obj['container']}"] if obj.get("container") else []
    if obj.get("role"):
        extra.append(obj["role"])
    return text + (f" ({', '.join(extra)})" if extra else "")


def _live(pod: dict) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod.get("status", {}).get("phase") in (
        "Running", "Pending", None)


def _ports_text(ports: Iterable[int]) -> str:
    return ", ".join(str(p) for p in sorted(set(ports)))


# --- the analysis ----------------------------------------------------------------------

class _Sweep:
    def __init__(self, data: SweepInput):
        self.data = data
        self.scope = {key(p) for p in data.pods}
        seen: dict[PodKey, dict] = {}
        for p in [*data.pods, *data.context_pods]:
            seen.setdefault(key(p), p)
        self.all_pods = list(seen.values())
        self.listeners = {k: listeners(v) for k, v in data.sockets.items()}
        self.findings: list[SweepFinding] = []
        self.explained: set[tuple[PodKey, int, str]] = set()  #: (pod, port, protocol) already reported
        self.loopback: dict[tuple[PodKey, int, str], dict[str, Any]] = {}

    def add(self, f: SweepFinding) -> None:
        pods = {(o["namespace"], o["name"]) for o in f.objects if o["kind"] == "Pod"}
        services = {(o["namespace"], o["name"]) for o in f.objects if o["kind"] == "Service"}
        if pods & self.scope or (not pods and services):
            self.findings.append(f)

    def run(self) -> list[SweepFinding]:
        self.container_conflicts()
        self.node_checks()
        self.services()
        self.pods()
        self.flush_loopback()
        out = {(f.id, repr(f.objects)): f for f in self.findings}  # one finding per id and objects
        return sorted(out.values(), key=lambda f: (-RANK[f.severity], f.id, [object_text(o) for o in f.objects]))

    # --- containers of one pod ---------------------------------------------------------

    def container_conflicts(self) -> None:
        for pod in self.data.pods:
            if not _live(pod):
                continue
            k = key(pod)
            declared: dict[tuple[int, str], list[str]] = defaultdict(list)
            for cp in container_ports(pod):
                if cp.container not in declared[cp.port, cp.protocol]:
                    declared[cp.port, cp.protocol].append(cp.container)
            ls = self.listeners.get(k, [])
            covered: set[str] = set()
            for (port, proto), names in sorted(declared.items()):
                if len(names) < 2:
                    continue
                holders = sorted({c for lst in ls if lst.port == port and lst.protocol == proto
                                  for c in lst.containers})
                losers = {n: t for n in names if (t := trouble(pod, n))}
                covered.update(losers)
                self._container_conflict(pod, port, proto, names, holders, losers)
            if pod.get("spec", {}).get("hostNetwork"):
                continue  # a crash of a hostNetwork container may be about any port on the node
            for c in _containers(pod):
                name = c["name"]
                t = trouble(pod, name)
                line = bind_failure(self.data.logs.get((*k, name)))
                if not t or not line or name in covered:
                    continue
                wanted = mentioned_ports(c)
                taken = [lst for lst in ls if lst.port in wanted and name not in lst.containers]
                ports = sorted({lst.port for lst in taken}) or sorted(wanted)
                holders = sorted({h for lst in taken for h in lst.containers})
                proto = taken[0].protocol if taken else "TCP"
                names = [name, *[h for h in holders if h != name]]
                for port in ports[:1] or [0]:
                    self._container_conflict(pod, port, proto, names, holders, {name: {**t, "log": line}},
                                             other_ports=ports[1:])

    def _container_conflict(self, pod: dict, port: int, proto: str, names: list[str], holders: list[str],
                            losers: dict[str, dict], other_ports: Sequence[int] = ()) -> None:
        k = key(pod)
        for name, t in losers.items():
            if "log" not in t:
                line = bind_failure(self.data.logs.get((*k, name)))
                if line:
                    t["log"] = line
        objects = [pod_obj(pod, n, "crash-looping" if n in losers else ("holds the port" if n in holders
                                                                        else None)) for n in names]
        what = f"port {port}/{proto}" if port else "a port"
        if losers:
            loser = ", ".join(sorted(losers))
            holder = ", ".join(h for h in holders if h not in losers) or ", ".join(
                n for n in names if n not in losers) or "another process in the pod"
            title = (f"pod {k[1]}: container {loser} crash-loops because container {holder} already binds "
                     f"{what}")
            explanation = (f"All containers of a pod share one network namespace, so only one of them can bind "
                           f"{what}; the other gets EADDRINUSE ('address already in use') at start-up, exits, and "
                           f"the kubelet restarts it with growing back-off (CrashLoopBackOff).")
            fix = (f"Give container {loser} its own port (its listen address/flag and its containerPort), or "
                   f"remove the duplicate listener if both containers run the same server by mistake; check with "
                   f"`kubectl logs {k[1]} -n {k[0]} -c {sorted(losers)[0]} --previous`.")
            severity = "critical"
        else:
            title = f"pod {k[1]}: containers {', '.join(names)} all declare port {port}/{proto}"
            explanation = ("Containers of a pod share one network namespace: only one process can bind a port "
                           "(without SO_REUSEPORT), so one of these declarations is wrong, or the second "
                           "container will fail with EADDRINUSE the day it really binds the port. Named-port "
                           "lookups (Service targetPort) also pick the first match only.")
            fix = "Keep the port on the container that serves it and remove or renumber the other declaration."
            severity = "warning"
        evidence: dict[str, Any] = {"port": port, "protocol": proto, "containers": names, "holders": holders,
                                    "crash_looping": losers}
        if other_ports:
            evidence["other_ports_in_use"] = list(other_ports)
        self.add(SweepFinding("container-port-conflict", severity, title, objects, explanation, fix, evidence))
        if port:
            self.explained.add((k, port, proto))

    # --- node level: host ports, hostNetwork pods, the node's own daemons -----------------

    def _host_ports(self, pod: dict) -> list[ContainerPort]:
        return [cp for cp in container_ports(pod) if cp.host_port]

    def node_checks(self) -> None:
        by_node: dict[str, list[dict]] = defaultdict(list)
        pending_for_ports: list[dict] = []
        for pod in self.all_pods:
            node = pod.get("spec", {}).get("nodeName")
            if node and (_live(pod) or _rejected_for_ports(pod)):
                by_node[node].append(pod)
            elif not node and _unschedulable_for_ports(pod):
                pending_for_ports.append(pod)
        for node, pods in sorted(by_node.items()):
            self._hostport_duplicates(node, pods)
            self._host_listeners(node, pods)
        for pod in pending_for_ports:
            self._unschedulable(pod, by_node)

    def _hostport_duplicates(self, node: str, pods: list[dict]) -> None:
        claims: dict[tuple[int, str], list[tuple[dict, ContainerPort]]] = defaultdict(list)
        for pod in pods:
            for cp in self._host_ports(pod):
                claims[cp.host_port, cp.protocol].append((pod, cp))
        for (port, proto), found in sorted(claims.items()):
            pods_here = {key(p) for p, _ in found}
            if len(pods_here) < 2:
                continue
            clashing = [(p, cp) for p, cp in found
                        if any(key(q) != key(p) and overlaps(cp.host_ip, cq.host_ip) for q, cq in found)]
            if not clashing:
                continue
            objects = [pod_obj(p, cp.container, "rejected" if _rejected_for_ports(p) else None)
                       for p, cp in clashing]
            names = ", ".join(sorted({key(p)[1] for p, _ in clashing}))
            self.add(SweepFinding(
                "hostport-conflict", "critical",
                f"node {node}: pods {names} all claim host port {port}/{proto}",
                [*objects, node_obj(node)],
                "A host port can be bound by one pod per node only. The scheduler keeps a second claimant off "
                "the node (Pending: 'didn't have free ports'); a pod placed with spec.nodeName is rejected by "
                "the kubelet, and a hostNetwork pod started anyway fails to bind.",
                "Use a different hostPort for one of them, or let a Service (NodePort/LoadBalancer) expose the "
                "port instead of hostPort/hostNetwork; a DaemonSet runs one pod per node by design.",
                {"node": node, "port": port, "protocol": proto,
                 "claims": [{"pod": "/".join(key(p)), "container": cp.container, "host_ip": cp.host_ip or "*",
                             "phase": p.get("status", {}).get("phase")} for p, cp in clashing]}))
            for p, _ in clashing:
                self.explained.add((key(p), port, proto))

    def _unschedulable(self, pod: dict, by_node: dict[str, list[dict]]) -> None:
        for cp in self._host_ports(pod):
            holders = [(node, q, cq) for node, pods in sorted(by_node.items()) for q in pods if key(q) != key(pod)
                       for cq in self._host_ports(q)
                       if cq.host_port == cp.host_port and cq.protocol == cp.protocol
                       and overlaps(cq.host_ip, cp.host_ip)]
            if not holders:
                continue
            objects = [pod_obj(pod, cp.container, "unschedulable"),
                       *[pod_obj(q, cq.container, f"holds it on node {node}") for node, q, cq in holders]]
            self.add(SweepFinding(
                "hostport-conflict", "critical",
                f"pod {key(pod)[1]} cannot be scheduled: host port {cp.host_port}/{cp.protocol} is taken on "
                f"{'every node' if len({h[0] for h in holders}) > 1 else 'node ' + holders[0][0]}",
                objects,
                "The scheduler only places a pod on a node where all its host ports are free; "
                f"{', '.join(sorted({key(q)[1] for _, q, _ in holders}))} already claim this one, so the pod "
                "stays Pending.",
                "Pick another hostPort, drop hostPort/hostNetwork in favour of a Service, or move the holder.",
                {"port": cp.host_port, "protocol": cp.protocol, "condition": _scheduled_message(pod)}))
            self.explained.add((key(pod), cp.port, cp.protocol))

    def _host_listeners(self, node: str, pods: list[dict]) -> None:
        """hostNetwork pods' observed listeners against each other, the daemons and the
        node's own processes; hostNetwork crash loops on a taken port."""
        host_pods = [p for p in pods if p.get("spec", {}).get("hostNetwork") and _live(p)]
        owned: dict[tuple[int, str], list[tuple[dict, Listener]]] = defaultdict(list)
        for pod in host_pods:
            for lst in self.listeners.get(key(pod), []):
                owned[lst.port, lst.protocol].append((pod, lst))
        host = listeners(self.data.host_listeners.get(node, []))
        # 1. several hostNetwork pods bound to one port
        for (port, proto), found in sorted(owned.items()):
            if len({key(p) for p, _ in found}) < 2:
                continue
            clash = any(key(p) != key(q) and overlaps(a.address, b.address) for p, a in found for q, b in found)
            objects = [pod_obj(p, ",".join(lst.containers) or None, lst.address) for p, lst in found]
            names = ", ".join(sorted({key(p)[1] for p, _ in found}))
            self.add(SweepFinding(
                "hostnetwork-port-conflict", "critical" if clash else "warning",
                f"node {node}: hostNetwork pods {names} all listen on port {port}/{proto}",
                [*objects, node_obj(node)],
                ("They share the node's network namespace: with overlapping addresses (SO_REUSEPORT) the kernel "
                 "spreads connections between them at random." if clash else
                 "They share the node's network namespace and only bind different addresses today; the first "
                 "one to bind the wildcard address (or to restart on another node address) fails with "
                 "EADDRINUSE."),
                "Give each hostNetwork workload its own port, or drop hostNetwork and put a Service in front.",
                {"node": node, "port": port, "protocol": proto,
                 "listeners": [{"pod": "/".join(key(p)), "address": lst.address, "processes": list(lst.processes)}
                               for p, lst in found]}))
            for p, _ in found:
                self.explained.add((key(p), port, proto))
        # 2. daemon ports, the node's own listeners, the NodePort range
        for pod in [p for p in pods if _live(p)]:
            ports: dict[tuple[int, str], dict[str, Any]] = {}
            for cp in self._host_ports(pod):
                ports.setdefault((cp.host_port, cp.protocol), {"container": cp.container, "how": "declares",
                                                               "address": cp.host_ip or "*"})
            for lst in self.listeners.get(key(pod), []) if pod.get("spec", {}).get("hostNetwork") else []:
                if lst.loopback and (lst.port, lst.protocol) not in ports:
                    continue  # loopback of the node: no one else can reach it, not a claim on the node's port
                ports.setdefault((lst.port, lst.protocol), {"container": ",".join(lst.containers) or None,
                                                            "how": "listens on", "address": lst.address})
            for (port, proto), claim in sorted(ports.items()):
                self._host_port_claim(node, pod, port, proto, claim, host)
        # 3. hostNetwork containers crash-looping on a port something else holds
        for pod in host_pods:
            for c in _containers(pod):
                t = trouble(pod, c["name"])
                if not t:
                    continue
                line = bind_failure(self.data.logs.get((*key(pod), c["name"])))
                wanted = mentioned_ports(c)
                holders = [(q, lst) for (port, _proto), found in owned.items() if port in wanted
                           for q, lst in found if key(q) != key(pod)]
                node_procs = [lst for lst in host if lst.port in wanted]
                if not line and not holders and not node_procs:
                    continue
                objects = [pod_obj(pod, c["name"], "crash-looping"),
                           *[pod_obj(q, ",".join(lst.containers) or None, "holds the port") for q, lst in holders]]
                port_list = sorted({lst.port for _, lst in holders} | {lst.port for lst in node_procs}) or sorted(
                    wanted)
                held_by = (", ".join(sorted({f"pod {key(q)[1]}" for q, _ in holders}
                                            | {", ".join(lst.processes) or "a node process" for lst in node_procs}))
                           or "another process on the node")
                self.add(SweepFinding(
                    "hostnetwork-port-conflict", "critical",
                    f"node {node}: hostNetwork pod {key(pod)[1]} (container {c['name']}) crash-loops: port "
                    f"{_ports_text(port_list) or '?'} is already held by {held_by}",
                    [*objects, node_obj(node)],
                    "A hostNetwork pod binds in the node's own network namespace, which it shares with every "
                    "other hostNetwork pod and the node's daemons; when the port is taken the bind fails with "
                    "EADDRINUSE, the container exits and the kubelet restarts it with growing back-off.",
                    f"Move one of them to another port, or drop hostNetwork; confirm with `kubectl logs "
                    f"{key(pod)[1]} -n {key(pod)[0]} -c {c['name']} --previous`.",
                    {"node": node, "ports": port_list, "log": line, "crash": t,
                     "holders": ["/".join(key(q)) for q, _ in holders]
                     + [", ".join(lst.processes) or lst.text() for lst in node_procs]}))
                for port in port_list:
                    self.explained.add((key(pod), port, "TCP"))
                    self.explained.add((key(pod), port, "UDP"))

    def _host_port_claim(self, node: str, pod: dict, port: int, proto: str, claim: dict[str, Any],
                         host: list[Listener]) -> None:
        k = key(pod)
        how = claim["how"]
        kind = "hostNetwork pod" if pod.get("spec", {}).get("hostNetwork") else "pod (hostPort)"
        held = [lst for lst in host if lst.port == port and lst.protocol == proto
                and overlaps(lst.address, claim["address"] if claim["address"] != "*" else None)]
        daemon = NODE_DAEMON_PORTS.get(port) if proto == "TCP" else None
        obj = pod_obj(pod, claim["container"])
        if daemon and not _is_daemon(pod, daemon[0], self.listeners.get(k, []), port):
            self.add(SweepFinding(
                "node-daemon-port", "critical",
                f"node {node}: {kind} {k[1]} {how} port {port}, the {daemon[1]}",
                [obj, node_obj(node)],
                f"Port {port} belongs to {daemon[0]} on every node. A hostNetwork pod or hostPort on it either "
                f"fails to bind (EADDRINUSE), or, where {daemon[0]} is not running yet, takes the port from it: "
                f"the node then breaks when {daemon[0]} starts.",
                "Move the workload to another port (outside 30000-32767 and away from the 10248-10259 daemon "
                "ports), and fix its containerPort/hostPort to match.",
                {"node": node, "port": port, "daemon": daemon[0], "claim": how,
                 "node_listener": [{"address": lst.address, "processes": list(lst.processes)} for lst in held]}))
            self.explained.add((k, port, proto))
            return
        if held and how == "declares" and not daemon:
            self.add(SweepFinding(
                "host-port-in-use", "critical",
                f"node {node}: {kind} {k[1]} declares port {port}/{proto}, which "
                f"{', '.join(p for lst in held for p in lst.processes) or 'a process of the node'} already "
                f"listens on",
                [obj, node_obj(node)],
                "The node itself (not a pod) already listens on this port in its own network namespace, so the "
                "pod's bind fails with EADDRINUSE (hostNetwork), or its hostPort rule shadows the node's "
                "service.",
                "Pick a port the node does not use (`kubectl sockdebug node/NODE --listening` lists them).",
                {"node": node, "port": port, "protocol": proto,
                 "node_listener": [{"address": lst.address, "processes": list(lst.processes)} for lst in held]}))
            self.explained.add((k, port, proto))
        low, high = self.data.node_port_range
        if low <= port <= high:
            services = [s for s in self.data.services for sp in (s.get("spec", {}).get("ports") or [])
                        if sp.get("nodePort") == port and (sp.get("protocol") or "TCP") == proto]
            self.add(SweepFinding(
                "nodeport-range", "critical" if services else "warning",
                f"node {node}: {kind} {k[1]} {how} port {port}/{proto}, inside the NodePort range {low}-{high}",
                [obj, node_obj(node), *[svc_obj(s) for s in services]],
                ("kube-proxy answers a Service's NodePort on every node: "
                 + (f"Service {', '.join(s['metadata']['name'] for s in services)} has taken nodePort {port}, so "
                    "connections to the node on that port go to the Service, not to this pod."
                    if services else
                    "the day a Service is given this nodePort (they are allocated at random from the range) "
                    "connections to the node on this port go to the Service instead of this pod.")),
                f"Use a port outside {low}-{high} for hostNetwork pods and hostPorts.",
                {"node": node, "port": port, "protocol": proto, "claim": how,
                 "services": ["/".join(key(s)) for s in services]}))

    # --- Services ----------------------------------------------------------------------------

    def services(self) -> None:
        for svc in self.data.services:
            spec = svc.get("spec") or {}
            selector = spec.get("selector")
            if not selector or spec.get("type") == "ExternalName":
                continue
            ns = svc["metadata"].get("namespace", "")
            selected = [p for p in self.data.pods if key(p)[0] == ns and _live(p) and selects(selector, p)]
            if not selected:
                continue
            for sp in spec.get("ports") or []:
                self._service_port(svc, sp, selected)

    def _service_port(self, svc: dict, sp: dict, selected: list[dict]) -> None:
        proto = sp.get("protocol") or "TCP"
        if proto not in ("TCP", "UDP"):
            return
        target = sp.get("targetPort", sp.get("port"))
        name = svc["metadata"]["name"]
        label = f"port {sp.get('name') + ' ' if sp.get('name') else ''}{sp.get('port')}"
        resolved = {key(p): resolve_target_port(p, target, proto) for p in selected}
        named = isinstance(target, str) and not target.isdigit()
        if named:
            missing = [k for k, v in resolved.items() if v is None]
            if missing:
                self.add(SweepFinding(
                    "named-port-missing", "critical",
                    f"Service {name} {label} → targetPort {target!r}: {len(missing)} selected pod(s) declare no "
                    f"{proto} port of that name",
                    [svc_obj(svc), *[pod_obj(k, role="no such port") for k in sorted(missing)]],
                    "A named targetPort is looked up in each pod's containerPorts; a pod without a port of that "
                    "name (and protocol) is left out of the Service's endpoints, so it gets no traffic on this "
                    "port even though the selector matches.",
                    f"Add `name: {target}` to the right containerPort of those pods, or use a numeric targetPort.",
                    {"service_port": sp.get("port"), "target_port": target, "protocol": proto,
                     "pods": ["/".join(k) for k in sorted(missing)]}))
            numbers: dict[int, list[PodKey]] = defaultdict(list)
            for k, v in resolved.items():
                if v is not None:
                    numbers[v].append(k)
            if len(numbers) > 1:
                self.add(SweepFinding(
                    "named-port-mismatch", "warning",
                    f"Service {name} {label} → targetPort {target!r} means different ports on different pods: "
                    + "; ".join(f"{n} on {len(ks)} pod(s)" for n, ks in sorted(numbers.items())),
                    [svc_obj(svc), *[pod_obj(k, role=f"{target}={n}") for n, ks in sorted(numbers.items())
                                     for k in sorted(ks)]],
                    "The Service sends each connection to whatever number the name resolves to in the chosen pod. "
                    "That is deliberate during a port migration; otherwise two different workloads (or two "
                    "versions) share the Service's selector and clients get different servers.",
                    "Make the selector match one workload, or finish the migration so every pod declares the "
                    "same number under this name.",
                    {"service_port": sp.get("port"), "target_port": target, "protocol": proto,
                     "resolves_to": {str(n): ["/".join(k) for k in sorted(ks)] for n, ks in sorted(numbers.items())}}))
        silent, detail = [], {}
        for pod in selected:
            k = key(pod)
            port = resolved[k]
            if port is None or k not in self.listeners:
                continue
            found = [lst for lst in self.listeners[k] if lst.port == port and lst.protocol == proto]
            if not found:
                if self._crashing_on(pod, port):
                    continue  # the conflict finding explains it
                silent.append(k)
                detail["/".join(k)] = {"target_port": port, "listening": sorted(
                    {lst.port for lst in self.listeners[k] if lst.protocol == proto})}
                self.explained.add((k, port, proto))
            elif all(lst.loopback for lst in found):
                entry = self.loopback.setdefault((k, port, proto), {"services": [], "listeners": found,
                                                                    "pod": pod})
                entry["services"].append((svc, label))
        if silent:
            self.add(SweepFinding(
                "service-port-not-listening", "critical",
                f"Service {name} {label} → targetPort {target}"
                f"{'' if not named else ' (' + _ports_text(detail[p]['target_port'] for p in detail) + ')'}: "
                f"nothing listens there in {len(silent)} of {len(selected)} selected pod(s)",
                [svc_obj(svc), *[pod_obj(k, role="not listening") for k in sorted(silent)]],
                "kube-proxy forwards connections for this Service port to the targetPort of the selected pods; "
                "in these pods no socket listens on it, so clients get 'connection refused' (or a timeout) "
                "whenever they land on one of them.",
                "Point targetPort at the port the application really listens on (see `listening` in the "
                "evidence), or make the application listen on the targetPort.",
                {"service_port": sp.get("port"), "target_port": target, "protocol": proto, "pods": detail}))

    def _crashing_on(self, pod: dict, port: int) -> bool:
        return any((key(pod), port, proto) in self.explained for proto in ("TCP", "UDP")) and any(
            trouble(pod, c["name"]) for c in _containers(pod))

    # --- one pod: declared vs listening ---------------------------------------------------------

    def pods(self) -> None:
        numeric_targets = self._numeric_targets()
        for pod in self.data.pods:
            k = key(pod)
            if k not in self.listeners:
                continue
            ls = self.listeners[k]
            running = running_containers(pod)
            declared = container_ports(pod)
            declared_set = {(cp.port, cp.protocol) for cp in declared}
            for cp in declared:
                if cp.protocol not in ("TCP", "UDP") or cp.container not in running:
                    continue
                if (k, cp.port, cp.protocol) in self.explained:
                    continue
                found = [lst for lst in ls if lst.port == cp.port and lst.protocol == cp.protocol]
                if not found:
                    self.explained.add((k, cp.port, cp.protocol))
                    self.add(SweepFinding(
                        "declared-port-not-listening", "warning",
                        f"pod {k[1]}: container {cp.container} declares port "
                        f"{cp.name + ' ' if cp.name else ''}{cp.port}/{cp.protocol}, but nothing listens on it",
                        [pod_obj(pod, cp.container)],
                        "containerPort is documentation that tools rely on (named Service targetPorts, "
                        "NetworkPolicies, monitoring scrape configs): this one promises a server that is not "
                        "there, so whatever is sent to it is refused.",
                        "Fix the declaration to the port the container really listens on (see `listening`), or "
                        "start the server it announces.",
                        {"port": cp.port, "protocol": cp.protocol, "name": cp.name,
                         "listening": sorted({f"{lst.protocol.lower()}/{lst.port}" for lst in ls})}))
                elif all(lst.loopback for lst in found):
                    self.loopback.setdefault((k, cp.port, cp.protocol), {"services": [], "listeners": found,
                                                                         "pod": pod, "container": cp.container})
                    self.loopback[k, cp.port, cp.protocol].setdefault("container", cp.container)
            extra = [lst for lst in ls if not lst.loopback and (lst.port, lst.protocol) not in declared_set
                     and (lst.port, lst.protocol) not in numeric_targets.get(k, set())
                     and (k, lst.port, lst.protocol) not in self.explained
                     and not (lst.protocol == "UDP" and EPHEMERAL_RANGE[0] <= lst.port <= EPHEMERAL_RANGE[1])]
            if extra:
                ports = sorted({(lst.port, lst.protocol) for lst in extra})
                containers = sorted({c for lst in extra for c in lst.containers})
                self.add(SweepFinding(
                    "undeclared-listener", "info",
                    f"pod {k[1]} listens on {', '.join(f'{p}/{proto}' for p, proto in ports)} without declaring "
                    f"{'it' if len(ports) == 1 else 'them'}",
                    [pod_obj(pod, ",".join(containers) or None)],
                    "Kubernetes does not need containerPorts to deliver traffic, but Services by port name, "
                    "NetworkPolicies written from the spec, and people reading it do; an undeclared listener is "
                    "also how a forgotten debug or admin endpoint stays open to the whole cluster.",
                    "Declare the port (with a name) in the container that serves it, or bind it to 127.0.0.1 if "
                    "only the pod itself should reach it.",
                    {"listeners": [{"listener": lst.text(), "processes": list(lst.processes),
                                    "containers": list(lst.containers)} for lst in extra]}))

    def _numeric_targets(self) -> dict[PodKey, set[tuple[int, str]]]:
        out: dict[PodKey, set[tuple[int, str]]] = defaultdict(set)
        for svc in self.data.services:
            spec = svc.get("spec") or {}
            selector = spec.get("selector")
            if not selector:
                continue
            for pod in self.data.pods:
                if key(pod)[0] != svc["metadata"].get("namespace", "") or not selects(selector, pod):
                    continue
                for sp in spec.get("ports") or []:
                    port = resolve_target_port(pod, sp.get("targetPort", sp.get("port")), sp.get("protocol") or "TCP")
                    if port:
                        out[key(pod)].add((port, sp.get("protocol") or "TCP"))
        return out

    def flush_loopback(self) -> None:
        for (k, port, proto), entry in sorted(self.loopback.items(), key=lambda kv: kv[0]):
            services = entry["services"]
            found: list[Listener] = entry["listeners"]
            pod = entry["pod"]
            containers = sorted({c for lst in found for c in lst.containers}) or (
                [entry["container"]] if entry.get("container") else [])
            addresses = sorted({lst.address for lst in found})
            if services:
                via = "; ".join(f"Service {s['metadata']['name']} {label}" for s, label in services)
                title = f"pod {k[1]} listens on {port}/{proto} only on loopback ({', '.join(addresses)}), " \
                        f"but {via} sends traffic there"
                severity = "critical"
                explanation = ("A socket bound to 127.0.0.1 (or ::1) accepts connections from inside the pod "
                               "only. Service traffic arrives on the pod's own IP address, so every connection "
                               "through the Service is refused, while `curl localhost` inside the pod works "
                               "fine — the classic 'works in the pod, not from outside'.")
            elif pod.get("spec", {}).get("hostNetwork"):
                title = (f"hostNetwork pod {k[1]} declares port {port}/{proto} but listens on it only on the "
                         f"node's loopback ({', '.join(addresses)})")
                severity = "info"
                explanation = ("Only processes on the same node can reach it. That is usual for a node-local "
                               "agent (and declaring the port reserves it on the node); it is a bug if other "
                               "pods or nodes are meant to connect.")
            else:
                title = (f"pod {k[1]} declares port {port}/{proto} but listens on it only on loopback "
                         f"({', '.join(addresses)})")
                severity = "warning"
                explanation = ("A socket bound to 127.0.0.1 (or ::1) accepts connections from inside the pod "
                               "only; the declared containerPort promises other pods (and a future Service) a "
                               "server they cannot reach.")
            objects = [*[svc_obj(s) for s, _ in services],
                       pod_obj(pod, ",".join(containers) or None, "loopback only")]
            self.add(SweepFinding(
                "loopback-only-listener", severity, title, objects, explanation,
                "Make the server listen on 0.0.0.0 (or ::, or the pod IP from the downward API: "
                "status.podIP); look for a default like `--host 127.0.0.1`, `bind: localhost` or "
                "`server.address`. If loopback is intended, remove the containerPort/Service port.",
                {"port": port, "protocol": proto, "addresses": addresses,
                 "processes": sorted({p for lst in found for p in lst.processes}),
                 "services": [f"{s['metadata'].get('namespace', '')}/{s['metadata']['name']}" for s, _ in services]}))
            self.explained.add((k, port, proto))


def _is_daemon(pod: dict, daemon: str, own: list[Listener], port: int) -> bool:
    """The pod is the daemon itself (a static pod of the control plane, kube-proxy's DaemonSet)."""
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    if meta.get("namespace") == "kube-system" and (
            meta["name"].startswith(daemon) or labels.get("component") == daemon
            or labels.get("k8s-app") == daemon):
        return True
    return any(p.split("/", 1)[0].startswith(daemon[:15]) for lst in own if lst.port == port for p in lst.processes)


def _scheduled_message(pod: dict) -> str:
    for c in pod.get("status", {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return c.get("message") or c.get("reason") or ""
    return ""


def _unschedulable_for_ports(pod: dict) -> bool:
    return (pod.get("status", {}).get("phase") == "Pending" and not pod["metadata"].get("deletionTimestamp")
            and "free ports" in _scheduled_message(pod))


def _rejected_for_ports(pod: dict) -> bool:
    st = pod.get("status", {})
    return st.get("phase") == "Failed" and ("NodePorts" in (st.get("reason") or "")
                                            or "free ports" in (st.get("message") or "")
                                            or "NodePorts" in (st.get("message") or ""))


def uninspected_list(data: SweepInput) -> list[Uninspected]:
    out = []
    for pod in data.pods:
        k = key(pod)
        if k in data.sockets:
            continue
        reason = data.uninspected.get(k)
        if reason is None:
            phase = pod.get("status", {}).get("phase") or "Unknown"
            if phase == "Succeeded":
                continue
            reason = f"not running ({phase}{': ' + _scheduled_message(pod) if _scheduled_message(pod) else ''})"
        out.append(Uninspected(k[0], k[1], pod.get("spec", {}).get("nodeName"), reason))
    return sorted(out)


def analyse(data: SweepInput) -> Report:
    """Every finding for the pods in scope, most severe first, and the pods not inspected."""
    findings = _Sweep(data).run()
    return Report(findings, uninspected_list(data), len([k for k in data.sockets if k in {key(p) for p in data.pods}]),
                  len(data.pods))


def at_or_above(findings: Sequence[SweepFinding], severity: str) -> list[SweepFinding]:
    return [f for f in findings if RANK[f.severity] >= RANK[severity]]


# --- rendering ------------------------------------------------------------------------------

_COLORS = {"critical": "31;1", "warning": "33;1", "info": "36"}


def finding_dict(f: SweepFinding) -> dict[str, Any]:
    return dict(zip(SweepFinding._fields, f))


def document(report: Report, scope: dict[str, Any]) -> dict[str, Any]:
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in SEVERITIES}
    return {
        "apiVersion": "sockdebug.io/v1", "kind": "SweepReport", "scope": scope,
        "summary": {"pods": report.pods, "inspected": report.inspected, "findings": counts},
        "findings": [finding_dict(f) for f in report.findings],
        "uninspected": [u._asdict() for u in report.uninspected],
    }


def text(report: Report, scope: dict[str, Any], color: bool = False) -> str:
    from .render import escape

    out = []
    for f in report.findings:
        tag = f.severity.upper()
        if color:
            tag = f"\x1b[{_COLORS[f.severity]}m{tag}\x1b[0m"
        out.append(f"{tag}  {escape(f.title)}  [{f.id}]")
        out.append("    objects: " + "; ".join(escape(object_text(o)) for o in f.objects))
        out.append(f"    why: {escape(f.explanation)}")
        out.append(f"    fix: {escape(f.fix)}")
        out.append("")
    if not report.findings:
        out += ["no port problems found", ""]
    if report.uninspected:
        out.append(f"not inspected ({len(report.uninspected)}):")
        for u in report.uninspected:
            out.append(f"    pod/{escape(u.name)} -n {escape(u.namespace)}: {escape(u.reason)}")
        out.append("")
    counts = ", ".join(f"{sum(1 for f in report.findings if f.severity == s)} {s}" for s in SEVERITIES)
    elapsed = f" in {scope['elapsed_s']:.1f}s" if scope.get("elapsed_s") is not None else ""
    out.append(f"{report.inspected} of {report.pods} pods inspected via {scope.get('via', '?')}{elapsed}: {counts}")
    return "\n".join(out)
