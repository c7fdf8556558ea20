"""One pod's ports: what its containers declare and its Services target against what
really listens in its network namespace, and containers of one pod fighting over a port."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Optional

from .. import podspec
from ..findings import Finding, pod_obj, svc_obj
from ..view import Listener, PodView
from .common import Check, Rule, client_port, crash_subjects, on_port, owners_text, port_subject

_PORT_FINDINGS = ("declared-port-not-listening", "service-port-not-listening", "loopback-only-listener",
                  "undeclared-listener")


# --- declared and targeted ports against listeners -----------------------------------------------

def loopback_only(pv: PodView) -> list[Finding]:
    if pv.listeners is None:
        return []
    ls = pv.listeners
    entries: dict[tuple[int, str], dict[str, Any]] = {}
    for sv, sp, port, proto in pv.targets:
        found = on_port(ls, port, proto)
        if found and all(lst.loopback for lst in found):
            entries.setdefault((port, proto), {"services": [], "listeners": found})["services"].append((sv, sp))
    running = pv.running
    for cp in pv.ports:
        if cp.protocol not in ("TCP", "UDP") or cp.container not in running:
            continue
        found = on_port(ls, cp.port, cp.protocol)
        if found and all(lst.loopback for lst in found):
            entries.setdefault((cp.port, cp.protocol), {"services": [], "listeners": found}).setdefault(
                "container", cp.container)
    return [_loopback(pv, port, proto, e) for (port, proto), e in sorted(entries.items())]


def _loopback(pv: PodView, port: int, proto: str, entry: dict[str, Any]) -> Finding:
    k = pv.key
    services = entry["services"]
    found: list[Listener] = entry["listeners"]
    containers = sorted({c for lst in found for c in lst.containers}) or (
        [entry["container"]] if entry.get("container") else [])
    addresses = sorted({lst.address for lst in found})
    if services:
        via = "; ".join(f"Service {sv.name} {sv.port_label(sp)}" for sv, sp in services)
        title = (f"pod {k[1]} listens on {port}/{proto} only on loopback ({', '.join(addresses)}), "
                 f"but {via} sends traffic there")
        severity = "critical"
        explanation = ("A socket bound to 127.0.0.1 (or ::1) accepts connections from inside the pod "
                       "only. Service traffic arrives on the pod's own IP address, so every connection "
                       "through the Service is refused, while `curl localhost` inside the pod works "
                       "fine — the classic 'works in the pod, not from outside'.")
    elif pv.host_network:
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
    return Finding(
        "loopback-only-listener", severity, title,
        [*[svc_obj(sv.svc) for sv, _ in services], pod_obj(k, ",".join(containers) or None, "loopback only")],
        explanation,
        "Make the server listen on 0.0.0.0 (or ::, or the pod IP from the downward API: "
        "status.podIP); look for a default like `--host 127.0.0.1`, `bind: localhost` or "
        "`server.address`. If loopback is intended, remove the containerPort/Service port.",
        {"port": port, "protocol": proto, "addresses": addresses,
         "processes": sorted({p for lst in found for p in lst.processes}),
         "services": ["/".join(sv.key) for sv, _ in services]},
        about=frozenset({port_subject(k, port, proto)}))


def declared_not_listening(pv: PodView) -> list[Finding]:
    if pv.listeners is None:
        return []
    k, ls = pv.key, pv.listeners
    running = pv.running
    out, seen = [], set()
    for cp in pv.ports:
        if cp.protocol not in ("TCP", "UDP") or cp.container not in running or (cp.port, cp.protocol) in seen:
            continue
        seen.add((cp.port, cp.protocol))
        if on_port(ls, cp.port, cp.protocol):
            continue
        out.append(Finding(
            "declared-port-not-listening", "warning",
            f"pod {k[1]}: container {cp.container} declares port "
            f"{cp.name + ' ' if cp.name else ''}{cp.port}/{cp.protocol}, but nothing listens on it",
            [pod_obj(k, cp.container)],
            "containerPort is documentation that tools rely on (named Service targetPorts, "
            "NetworkPolicies, monitoring scrape configs): this one promises a server that is not "
            "there, so whatever is sent to it is refused.",
            "Fix the declaration to the port the container really listens on (see `listening`), or "
            "start the server it announces.",
            {"port": cp.port, "protocol": cp.protocol, "name": cp.name,
             "listening": sorted({f"{lst.protocol.lower()}/{lst.port}" for lst in ls})},
            about=frozenset({port_subject(k, cp.port, cp.protocol)})))
    return out


def undeclared(pv: PodView) -> list[Finding]:
    """One finding per port, joined per pod after suppression (``merge_undeclared``)."""
    if pv.listeners is None:
        return []
    k = pv.key
    known = {(cp.port, cp.protocol) for cp in pv.ports}
    known |= {(port, proto) for _sv, _sp, port, proto in pv.targets}
    by_port: dict[tuple[int, str], list[Listener]] = defaultdict(list)
    for lst in pv.listeners:
        if not lst.loopback and (lst.port, lst.protocol) not in known and not client_port(lst):
            by_port[lst.port, lst.protocol].append(lst)
    return [_undeclared(k, port, proto, extra) for (port, proto), extra in sorted(by_port.items())]


def _undeclared(k: tuple[str, str], port: int, proto: str, extra: list[Listener]) -> Finding:
    ports = [(port, proto)]
    return Finding(
        "undeclared-listener", "info", _undeclared_title(k, ports),
        [pod_obj(k, ",".join(sorted({c for lst in extra for c in lst.containers})) or None)],
        "Kubernetes does not need containerPorts to deliver traffic, but Services by port name, "
        "NetworkPolicies written from the spec, and people reading it do; an undeclared listener is "
        "also how a forgotten debug or admin endpoint stays open to the whole cluster.",
        "Declare the port (with a name) in the container that serves it, or bind it to 127.0.0.1 if "
        "only the pod itself should reach it.",
        {"listeners": [{"listener": lst.text(), "processes": list(lst.processes), "containers": list(lst.containers)}
                       for lst in extra]},
        about=frozenset({port_subject(k, port, proto)}), group=k)


def _undeclared_title(k: tuple[str, str], ports: Sequence[tuple[int, str]]) -> str:
    return (f"pod {k[1]} listens on {', '.join(f'{p}/{proto}' for p, proto in ports)} without declaring "
            f"{'it' if len(ports) == 1 else 'them'}")


def merge_undeclared(findings: list[Finding]) -> Finding:
    first = findings[0]
    listeners = [e for f in findings for e in f.evidence["listeners"]]
    ports = sorted({(s[3], s[4]) for f in findings for s in f.about})
    containers = sorted({c for e in listeners for c in e["containers"]})
    return first._replace(title=_undeclared_title(first.group, ports),
                          objects=[pod_obj(first.group, ",".join(containers) or None)],
                          evidence={"listeners": listeners}, about=frozenset().union(*(f.about for f in findings)))


# --- containers of one pod on one port ------------------------------------------------------------

def container_conflicts(pv: PodView) -> list[Finding]:
    pod = pv.pod
    if not podspec.is_live(pod):
        return []
    ls = pv.listeners or []
    out = []
    declared: dict[tuple[int, str], list[str]] = defaultdict(list)
    for cp in pv.ports:
        if cp.container not in declared[cp.port, cp.protocol]:
            declared[cp.port, cp.protocol].append(cp.container)
    covered: set[str] = set()
    for (port, proto), names in sorted(declared.items()):
        if len(names) < 2:
            continue
        holders = sorted({c for lst in on_port(ls, port, proto) for c in lst.containers})
        losers = {n: dict(t) for n in names if (t := pv.trouble.get(n))}
        covered.update(losers)
        out.append(_conflict(pv, port, proto, names, holders, losers))
    if pv.host_network:
        return out  # a crash of a hostNetwork container may be about any port on the node (rules/nodes.py)
    for c in podspec.containers(pod):
        name = c["name"]
        t = pv.trouble.get(name)
        line = podspec.bind_failure(pv.logs.get(name))
        if not t or not line or name in covered:
            continue
        wanted = podspec.mentioned_ports(c)
        taken = [lst for lst in ls if lst.port in wanted and name not in lst.containers]
        ports = sorted({lst.port for lst in taken}) or sorted(wanted)
        holders = sorted({h for lst in taken for h in lst.containers})
        proto = taken[0].protocol if taken else "TCP"
        names = [name, *[h for h in holders if h != name]]
        for port in ports[:1] or [0]:
            out.append(_conflict(pv, port, proto, names, holders, {name: {**t, "log": line}}, other_ports=ports[1:]))
    return out


def _conflict(pv: PodView, port: int, proto: str, names: list[str], holders: list[str], losers: dict[str, dict],
              other_ports: Sequence[int] = ()) -> Finding:
    k = pv.key
    for name, t in losers.items():
        if "log" not in t:
            line = podspec.bind_failure(pv.logs.get(name))
            if line:
                t["log"] = line
    objects = [pod_obj(k, n, "crash-looping" if n in losers else ("holds the port" if n in holders else None))
               for n in names]
    what = f"port {port}/{proto}" if port else "a port"
    about = {port_subject(k, port, proto)} if port else set()
    if losers:
        loser = ", ".join(sorted(losers))
        holder = ", ".join(h for h in holders if h not in losers) or ", ".join(n for n in names if n not in losers)
        title = (f"pod {k[1]}: container {loser} crash-loops because "
                 f"{'container ' + holder if holder else 'another process in the pod'} already binds {what}")
        explanation = (f"All containers of a pod share one network namespace, so only one of them can bind "
                       f"{what}; the other gets EADDRINUSE ('address already in use') at start-up, exits, and "
                       f"the kubelet restarts it with growing back-off (CrashLoopBackOff).")
        fix = (f"Give container {loser} its own port (its listen address/flag and its containerPort), or "
               f"remove the duplicate listener if both containers run the same server by mistake; check with "
               f"`kubectl logs {k[1]} -n {k[0]} -c {sorted(losers)[0]} --previous`.")
        severity = "critical"
        for n in losers:
            about |= crash_subjects(k, n)
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
    return Finding("container-port-conflict", severity, title, objects, explanation, fix, evidence,
                   about=frozenset(about))


# --- the agent's loopback finding, seen with the pod's spec -----------------------------------------

def referenced_ports(pv: PodView) -> set[int]:
    """TCP ports something in Kubernetes expects to reach: containerPorts, Service targets,
    probes."""
    ports = {cp.port for cp in pv.ports if cp.protocol == "TCP"}
    ports |= {port for _sv, _sp, port, proto in pv.targets if proto == "TCP"}
    ports |= {p.port for p in pv.probes if p.port}
    return ports


def adapt_agent_loopback(pv: PodView, f: Finding) -> Optional[Finding]:
    """The agent's loopback-only-listener judged with the pod's spec: on a port a
    containerPort, Service or probe refers to, the plugin's own findings say it with the
    objects named (the agent's is dropped); on any other port nothing in Kubernetes expects
    to reach it, so it is info, with the owning containers named."""
    port = f.evidence.get("port")
    if pv.listeners is None or not isinstance(port, int):
        return f
    if port in referenced_ports(pv):
        return None
    found = [lst for lst in on_port(pv.listeners, port, "TCP") if lst.loopback]
    containers = sorted({c for lst in found for c in lst.containers})
    explanation = f.explanation.replace("an unknown process", owners_text(found)) if found else f.explanation
    return f._replace(
        severity="info", objects=[pod_obj(pv.key, ",".join(containers) or None, "loopback only")],
        explanation=explanation + f" No containerPort, Service or probe of this pod refers to port {port}: "
                                  "nothing in the cluster is configured to reach it, so it is probably private "
                                  "on purpose.",
        evidence={**f.evidence, "containers": containers, "referenced_by": []})


RULES = (
    Rule("loopback-only-listener", ("critical", "warning", "info"),
         "a Service (critical) or a containerPort (warning; info for a hostNetwork pod, where node-local agents do "
         "that on purpose) points at a port the pod listens on only on 127.0.0.0/8, ::1 or ::ffff:127.x; the "
         "agent's own finding of that id, on a port nothing refers to, is kept as info",
         ("port", "protocol", "addresses", "processes", "services")),
    Rule("declared-port-not-listening", ("warning",),
         "a running container declares a port nothing listens on", ("port", "protocol", "name", "listening")),
    Rule("undeclared-listener", ("info",),
         "a pod listens (not on loopback) on ports no container declares and no Service targets (UDP sockets in "
         "the ephemeral port range are resolver clients and are skipped)", ("listeners",), (), merge_undeclared),
    Rule("container-port-conflict", ("critical", "warning"),
         "containers of one pod declare or bind the same port; critical when one crash-loops on it (from its "
         "status, and the 'address already in use' line of its failed run's log in any server's wording: it is "
         "named); warning when both run",
         ("port", "protocol", "containers", "holders", "crash_looping", "other_ports_in_use"),
         (*_PORT_FINDINGS, "container-crash-looping", "pod-not-ready")),
)
CHECKS = (
    Check("pod", loopback_only, ("loopback-only-listener",)),
    Check("pod", declared_not_listening, ("declared-port-not-listening",)),
    Check("pod", undeclared, ("undeclared-listener",)),
    Check("pod", container_conflicts, ("container-port-conflict",)),
)
