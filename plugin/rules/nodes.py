"""One node: host ports and hostNetwork pods against each other, the node's own daemons
and processes, and the NodePort range; pods no node can take for want of a host port."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .. import podspec
from ..findings import Finding, node_obj, pod_obj, svc_obj
from ..podspec import ContainerPort
from ..view import ClusterView, Listener, NodeView, overlaps
from .common import Check, Rule, crash_subjects, port_subject

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
_EXPLAINED_HERE = ("declared-port-not-listening", "loopback-only-listener", "undeclared-listener")


def _host_ports(view: ClusterView, pod: dict) -> list[ContainerPort]:
    return [cp for cp in view.ports(pod) if cp.host_port]


def _claim_about(pod: dict, port: int, proto: str, crashed: bool = False, container: str = "") -> frozenset:
    """A host-port claim accounts for the pod's own port only when that is the same port
    (hostNetwork); a crash, for the crashing container."""
    k = podspec.key(pod)
    about = {port_subject(k, port, proto)} if podspec.host_network(pod) else set()
    if crashed and container:
        about |= crash_subjects(k, container)
    return frozenset(about)


def hostport_duplicates(nv: NodeView, view: ClusterView) -> list[Finding]:
    node = nv.name
    claims: dict[tuple[int, str], list[tuple[dict, ContainerPort]]] = defaultdict(list)
    for pod in nv.pods:
        for cp in _host_ports(view, pod):
            claims[cp.host_port, cp.protocol].append((pod, cp))  # type: ignore[index]
    out = []
    for (port, proto), found in sorted(claims.items()):
        if len({podspec.key(p) for p, _ in found}) < 2:
            continue
        clashing = [(p, cp) for p, cp in found
                    if any(podspec.key(q) != podspec.key(p) and overlaps(cp.host_ip, cq.host_ip) for q, cq in found)]
        if not clashing:
            continue
        names = ", ".join(sorted({podspec.key(p)[1] for p, _ in clashing}))
        about: set = set()
        for p, cp in clashing:
            about |= {port_subject(podspec.key(p), cp.port, proto)}
            if podspec.trouble(p, cp.container):
                about |= crash_subjects(podspec.key(p), cp.container)
        out.append(Finding(
            "hostport-conflict", "critical", f"node {node}: pods {names} all claim host port {port}/{proto}",
            [*[pod_obj(p, cp.container, "rejected" if podspec.rejected_for_ports(p) else None) for p, cp in clashing],
             node_obj(node)],
            "A host port can be bound by one pod per node only. The scheduler keeps a second claimant off "
            "the node (Pending: 'didn't have free ports'); a pod placed with spec.nodeName is rejected by "
            "the kubelet, and a hostNetwork pod started anyway fails to bind.",
            "Use a different hostPort for one of them, or let a Service (NodePort/LoadBalancer) expose the "
            "port instead of hostPort/hostNetwork; a DaemonSet runs one pod per node by design.",
            {"node": node, "port": port, "protocol": proto,
             "claims": [{"pod": "/".join(podspec.key(p)), "container": cp.container, "host_ip": cp.host_ip or "*",
                         "phase": (p.get("status") or {}).get("phase")} for p, cp in clashing]},
            about=frozenset(about)))
    return out


def unschedulable(view: ClusterView) -> list[Finding]:
    out = []
    for pod in view.pending_for_ports():
        for cp in _host_ports(view, pod):
            holders = [(node, q, cq) for node, nv in view.nodes.items() for q in nv.pods
                       if podspec.key(q) != podspec.key(pod) for cq in _host_ports(view, q)
                       if cq.host_port == cp.host_port and cq.protocol == cp.protocol
                       and overlaps(cq.host_ip, cp.host_ip)]
            if not holders:
                continue
            k = podspec.key(pod)
            out.append(Finding(
                "hostport-conflict", "critical",
                f"pod {k[1]} cannot be scheduled: host port {cp.host_port}/{cp.protocol} is taken on "
                f"{'every node' if len({h[0] for h in holders}) > 1 else 'node ' + holders[0][0]}",
                [pod_obj(pod, cp.container, "unschedulable"),
                 *[pod_obj(q, cq.container, f"holds it on node {node}") for node, q, cq in holders]],
                "The scheduler only places a pod on a node where all its host ports are free; "
                f"{', '.join(sorted({podspec.key(q)[1] for _, q, _ in holders}))} already claim this one, so the "
                "pod stays Pending.",
                "Pick another hostPort, drop hostPort/hostNetwork in favour of a Service, or move the holder.",
                {"port": cp.host_port, "protocol": cp.protocol, "condition": podspec.scheduled_message(pod)},
                about=frozenset({port_subject(k, cp.port, cp.protocol)})))
    return out


def hostnetwork_listeners(nv: NodeView, view: ClusterView) -> list[Finding]:
    """Several hostNetwork pods bound to one port of the node."""
    node = nv.name
    out = []
    for (port, proto), found in sorted(_owned(nv, view).items()):
        if len({podspec.key(p) for p, _ in found}) < 2:
            continue
        clash = any(podspec.key(p) != podspec.key(q) and overlaps(a.address, b.address)
                    for p, a in found for q, b in found)
        names = ", ".join(sorted({podspec.key(p)[1] for p, _ in found}))
        out.append(Finding(
            "hostnetwork-port-conflict", "critical" if clash else "warning",
            f"node {node}: hostNetwork pods {names} all listen on port {port}/{proto}",
            [*[pod_obj(p, ",".join(lst.containers) or None, lst.address) for p, lst in found], node_obj(node)],
            ("They share the node's network namespace: with overlapping addresses (SO_REUSEPORT) the kernel "
             "spreads connections between them at random." if clash else
             "They share the node's network namespace and only bind different addresses today; the first "
             "one to bind the wildcard address (or to restart on another node address) fails with "
             "EADDRINUSE."),
            "Give each hostNetwork workload its own port, or drop hostNetwork and put a Service in front.",
            {"node": node, "port": port, "protocol": proto,
             "listeners": [{"pod": "/".join(podspec.key(p)), "address": lst.address, "processes": list(lst.processes)}
                           for p, lst in found]},
            about=frozenset(port_subject(podspec.key(p), port, proto) for p, _ in found)))
    return out


def _owned(nv: NodeView, view: ClusterView) -> dict[tuple[int, str], list[tuple[dict, Listener]]]:
    owned: dict[tuple[int, str], list[tuple[dict, Listener]]] = defaultdict(list)
    for pod in nv.pods:
        if podspec.host_network(pod) and podspec.is_live(pod):
            for lst in view.listeners.get(podspec.key(pod), []):
                owned[lst.port, lst.protocol].append((pod, lst))
    return owned


def hostnetwork_crashes(nv: NodeView, view: ClusterView) -> list[Finding]:
    """hostNetwork containers crash-looping on a port another pod or a node process holds."""
    node, host = nv.name, nv.host
    owned = _owned(nv, view)
    out = []
    for pod in [p for p in nv.pods if podspec.host_network(p) and podspec.is_live(p)]:
        k = podspec.key(pod)
        for c in podspec.containers(pod):
            t = podspec.trouble(pod, c["name"])
            if not t:
                continue
            line = podspec.bind_failure(view.data.logs.get((*k, c["name"])))
            wanted = podspec.mentioned_ports(c)
            holders = [(q, lst) for (port, _proto), found in owned.items() if port in wanted
                       for q, lst in found if podspec.key(q) != k]
            node_procs = [lst for lst in host if lst.port in wanted]
            if not line and not holders and not node_procs:
                continue
            port_list = sorted({lst.port for _, lst in holders} | {lst.port for lst in node_procs}) or sorted(wanted)
            held_by = (", ".join(sorted({f"pod {podspec.key(q)[1]}" for q, _ in holders}
                                        | {", ".join(lst.processes) or "a node process" for lst in node_procs}))
                       or "another process on the node")
            about = crash_subjects(k, c["name"]) | {port_subject(k, p, proto) for p in port_list
                                                   for proto in ("TCP", "UDP")}
            out.append(Finding(
                "hostnetwork-port-conflict", "critical",
                f"node {node}: hostNetwork pod {k[1]} (container {c['name']}) crash-loops: port "
                f"{podspec.ports_text(port_list) or '?'} is already held by {held_by}",
                [pod_obj(pod, c["name"], "crash-looping"),
                 *[pod_obj(q, ",".join(lst.containers) or None, "holds the port") for q, lst in holders],
                 node_obj(node)],
                "A hostNetwork pod binds in the node's own network namespace, which it shares with every "
                "other hostNetwork pod and the node's daemons; when the port is taken the bind fails with "
                "EADDRINUSE, the container exits and the kubelet restarts it with growing back-off.",
                f"Move one of them to another port, or drop hostNetwork; confirm with `kubectl logs "
                f"{k[1]} -n {k[0]} -c {c['name']} --previous`.",
                {"node": node, "ports": port_list, "log": line, "crash": t,
                 "holders": ["/".join(podspec.key(q)) for q, _ in holders]
                 + [", ".join(lst.processes) or lst.text() for lst in node_procs]},
                about=frozenset(about)))
    return out


def host_port_claims(nv: NodeView, view: ClusterView) -> list[Finding]:
    """Every host port a pod declares or (hostNetwork) listens on, against the node's
    daemons, the node's own listeners and the NodePort range."""
    out = []
    for pod in [p for p in nv.pods if podspec.is_live(p)]:
        ports: dict[tuple[int, str], dict[str, Any]] = {}
        for cp in _host_ports(view, pod):
            ports.setdefault((cp.host_port, cp.protocol), {"container": cp.container, "how": "declares",  # type: ignore[arg-type]
                                                           "address": cp.host_ip or "*"})
        for lst in view.listeners.get(podspec.key(pod), []) if podspec.host_network(pod) else []:
            if lst.loopback and (lst.port, lst.protocol) not in ports:
                continue  # loopback of the node: no one else can reach it, not a claim on the node's port
            ports.setdefault((lst.port, lst.protocol), {"container": ",".join(lst.containers) or None,
                                                        "how": "listens on", "address": lst.address})
        for (port, proto), claim in sorted(ports.items()):
            out += _claim(nv, view, pod, port, proto, claim)
    return out


def _claim(nv: NodeView, view: ClusterView, pod: dict, port: int, proto: str, claim: dict[str, Any]) -> list[Finding]:
    node, k, how = nv.name, podspec.key(pod), claim["how"]
    kind = "hostNetwork pod" if podspec.host_network(pod) else "pod (hostPort)"
    held = [lst for lst in nv.host if lst.port == port and lst.protocol == proto
            and overlaps(lst.address, claim["address"] if claim["address"] != "*" else None)]
    daemon = NODE_DAEMON_PORTS.get(port) if proto == "TCP" else None
    o = pod_obj(pod, claim["container"])
    about = _claim_about(pod, port, proto)
    if daemon and not _is_daemon(pod, daemon[0], view.listeners.get(k, []), port):
        return [Finding(
            "node-daemon-port", "critical", f"node {node}: {kind} {k[1]} {how} port {port}, the {daemon[1]}",
            [o, node_obj(node)],
            f"Port {port} belongs to {daemon[0]} on every node. A hostNetwork pod or hostPort on it either "
            f"fails to bind (EADDRINUSE), or, where {daemon[0]} is not running yet, takes the port from it: "
            f"the node then breaks when {daemon[0]} starts.",
            "Move the workload to another port (outside 30000-32767 and away from the 10248-10259 daemon "
            "ports), and fix its containerPort/hostPort to match.",
            {"node": node, "port": port, "daemon": daemon[0], "claim": how,
             "node_listener": [{"address": lst.address, "processes": list(lst.processes)} for lst in held]},
            about=about)]
    out = []
    if held and how == "declares" and not daemon:
        out.append(Finding(
            "host-port-in-use", "critical",
            f"node {node}: {kind} {k[1]} declares port {port}/{proto}, which "
            f"{', '.join(p for lst in held for p in lst.processes) or 'a process of the node'} already listens on",
            [o, node_obj(node)],
            "The node itself (not a pod) already listens on this port in its own network namespace, so the "
            "pod's bind fails with EADDRINUSE (hostNetwork), or its hostPort rule shadows the node's "
            "service.",
            "Pick a port the node does not use (`kubectl sockdebug node/NODE --listening` lists them).",
            {"node": node, "port": port, "protocol": proto,
             "node_listener": [{"address": lst.address, "processes": list(lst.processes)} for lst in held]},
            about=about))
    low, high = view.node_port_range
    if low <= port <= high:
        services = [s for s in view.data.services for sp in ((s.get("spec") or {}).get("ports") or [])
                    if sp.get("nodePort") == port and (sp.get("protocol") or "TCP") == proto]
        out.append(Finding(
            "nodeport-range", "critical" if services else "warning",
            f"node {node}: {kind} {k[1]} {how} port {port}/{proto}, inside the NodePort range {low}-{high}",
            [o, node_obj(node), *[svc_obj(s) for s in services]],
            ("kube-proxy answers a Service's NodePort on every node: "
             + (f"Service {', '.join(s['metadata']['name'] for s in services)} has taken nodePort {port}, so "
                "connections to the node on that port go to the Service, not to this pod."
                if services else
                "the day a Service is given this nodePort (they are allocated at random from the range) "
                "connections to the node on this port go to the Service instead of this pod.")),
            f"Use a port outside {low}-{high} for hostNetwork pods and hostPorts.",
            {"node": node, "port": port, "protocol": proto, "claim": how,
             "services": ["/".join(podspec.key(s)) for s in services]}))
    return out


def _is_daemon(pod: dict, daemon: str, own: list[Listener], port: int) -> bool:
    """The pod is the daemon itself (a static pod of the control plane, kube-proxy's DaemonSet)."""
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    if meta.get("namespace") == "kube-system" and (
            meta["name"].startswith(daemon) or labels.get("component") == daemon
            or labels.get("k8s-app") == daemon):
        return True
    return any(p.split("/", 1)[0].startswith(daemon[:15]) for lst in own if lst.port == port for p in lst.processes)


_CRASH = ("container-crash-looping", "pod-not-ready", "service-port-not-listening")
RULES = (
    Rule("hostport-conflict", ("critical",),
         "two pods on one node claim the same hostPort on overlapping host IPs (a hostNetwork pod's containerPorts "
         "are hostPorts), or a pod is Pending/rejected for want of a free host port: the holder is named",
         ("node", "port", "protocol", "claims", "condition"), (*_EXPLAINED_HERE, *_CRASH)),
    Rule("hostnetwork-port-conflict", ("critical", "warning"),
         "hostNetwork pods on one node listen on the same port (warning on disjoint addresses), or one crash-loops "
         "with EADDRINUSE on a port another pod or a node process holds",
         ("node", "port", "protocol", "listeners", "ports", "log", "crash", "holders"), (*_EXPLAINED_HERE, *_CRASH)),
    Rule("node-daemon-port", ("critical",),
         "a hostNetwork pod or hostPort declares or binds a port of the node's daemons: kubelet 10250/10248/10255, "
         "kube-proxy 10249/10256, kube-controller-manager 10257, kube-scheduler 10259, etcd 2379/2380, "
         "kube-apiserver 6443 (the daemons' own pods are exempt)",
         ("node", "port", "daemon", "claim", "node_listener"), _EXPLAINED_HERE),
    Rule("host-port-in-use", ("critical",),
         "a hostNetwork pod or hostPort declares a port a process of the node itself already listens on (seen "
         "from the node's network namespace)", ("node", "port", "protocol", "node_listener"), _EXPLAINED_HERE),
    Rule("nodeport-range", ("warning", "critical"),
         "a hostNetwork pod or hostPort uses a port inside the NodePort range (30000-32767 by default); critical "
         "when a Service already has that nodePort", ("node", "port", "protocol", "claim", "services")),
)
CHECKS = (
    Check("node", hostport_duplicates, ("hostport-conflict",)),
    Check("node", hostnetwork_listeners, ("hostnetwork-port-conflict",)),
    Check("node", hostnetwork_crashes, ("hostnetwork-port-conflict",)),
    Check("node", host_port_claims, ("node-daemon-port", "host-port-in-use", "nodeport-range")),
    Check("cluster", unschedulable, ("hostport-conflict",)),
)
