"""NetworkPolicies that select a pod against the ports it serves.

Once any policy of type Ingress selects a pod, only what one of their ingress rules admits
gets in (the union of the rules).  Sources are not judged (who the clients are is not
known here): a port some rule admits from anywhere or from some peers is admitted.  A rule
without ``ports`` admits every port; a port entry without ``port`` every port of its
protocol; ``endPort`` makes a range; a named port is looked up in the pod's containerPorts
(any container) with the entry's protocol.  hostNetwork pods are not judged: policies do
not apply to the node's network namespace.  No policy selecting the pod: nothing to say.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .. import podspec
from ..findings import Finding, pod_obj, policy_obj, svc_obj
from ..view import Listener, PodView
from .common import Check, Rule, client_port, port_subject

_EXPLANATION = (
    "Once a NetworkPolicy with policyType Ingress selects a pod, the pod accepts only the traffic one of the "
    "ingress rules of the policies selecting it admits; everything else is dropped silently, so clients time "
    "out instead of being refused. A rule without `ports` admits every port, a `ports` entry admits its port "
    "(a named port means the pod's containerPort of that name, `endPort` a range).")


def admits(pod: Mapping, policy: Mapping, port: int, proto: str) -> bool:
    for rule in (policy.get("spec") or {}).get("ingress") or []:
        entries = rule.get("ports")
        if not entries:
            return True
        for p in entries:
            if (p.get("protocol") or "TCP") != proto:
                continue
            ref = p.get("port")
            if ref is None:
                return True
            if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
                if int(ref) <= port <= int(p.get("endPort") or ref):
                    return True
            elif podspec.named_port(pod, ref, proto) == port:
                return True
    return False


def _admitted_text(pod: Mapping, policy: Mapping) -> list[str]:
    rules = (policy.get("spec") or {}).get("ingress") or []
    if not rules:
        return ["nothing (no ingress rules)"]
    out = []
    for rule in rules:
        if not rule.get("ports"):
            return ["every port"]
        for p in rule["ports"]:
            ref, proto = p.get("port"), p.get("protocol") or "TCP"
            if ref is None:
                out.append(f"every {proto} port")
            elif p.get("endPort"):
                out.append(f"{proto} {ref}-{p['endPort']}")
            elif isinstance(ref, str) and not ref.isdigit():
                number = podspec.named_port(pod, ref, proto)
                out.append(f"{proto} {ref} ({number if number else 'no such containerPort'})")
            else:
                out.append(f"{proto} {ref}")
    return list(dict.fromkeys(out))


def _summary(pod: Mapping, policies: Sequence[Mapping]) -> list[dict[str, Any]]:
    return [{"name": p["metadata"]["name"], "admits": _admitted_text(pod, p)} for p in policies]


def policy_checks(pv: PodView) -> list[Finding]:
    if not pv.policies or pv.host_network:
        return []
    pod, k, policies = pv.pod, pv.key, sorted(pv.policies, key=lambda p: p["metadata"]["name"])
    wanted: dict[tuple[int, str], dict[str, list]] = defaultdict(lambda: {"services": [], "containers": []})
    for sv, sp, port, proto in pv.targets:
        wanted[port, proto]["services"].append((sv.svc, sv.port_label(sp)))
    for cp in pv.ports:
        if cp.container not in wanted[cp.port, cp.protocol]["containers"]:
            wanted[cp.port, cp.protocol]["containers"].append(cp.container)
    names = ", ".join(p["metadata"]["name"] for p in policies)
    verbs = ("selects", "admits") if len(policies) == 1 else ("select", "admit")
    out = []
    for (port, proto), why in sorted(wanted.items()):
        if any(admits(pod, p, port, proto) for p in policies):
            continue
        summary = _summary(pod, policies)
        via = "; ".join(f"Service {s['metadata']['name']} {label}" for s, label in why["services"])
        out.append(Finding(
            "networkpolicy-blocks-port", "warning",
            f"pod {k[1]}: NetworkPolicy {names} {verbs[0]} it but {verbs[1]} no ingress to port {port}/{proto}"
            + (f", where {via} sends traffic" if via else f", which container {', '.join(why['containers'])} "
               "declares"),
            [pod_obj(k, ",".join(why["containers"]) or None, "port not admitted"),
             *[policy_obj(p, "selects the pod") for p in policies],
             *[svc_obj(s, "targets the port") for s, _ in why["services"]]],
            _EXPLANATION + (" Connections through the Service to this port are dropped." if via else
                            " The declared port promises a server no other pod can reach."),
            f"Add an ingress rule admitting {proto} port {port} (from the clients that need it) to one of "
            f"{names}; or, if the port is meant to be closed, remove it from the Service or the containerPorts.",
            {"port": port, "protocol": proto, "policies": summary,
             "services": [f"{s['metadata'].get('namespace', '')}/{s['metadata']['name']} {label}"
                          for s, label in why["services"]],
             "declared_by": why["containers"]},
            about=frozenset({port_subject(k, port, proto)})))
    blocked = _blocked_listeners(pv, policies, wanted)
    if blocked:
        summary = _summary(pod, policies)
        ports = sorted({(lst.port, lst.protocol) for lst in blocked})
        out.append(Finding(
            "networkpolicy-blocks-listener", "info",
            f"pod {k[1]}: NetworkPolicy {names} {verbs[1]} no ingress to "
            f"{', '.join(f'{p}/{proto}' for p, proto in ports)}, where it listens",
            [pod_obj(k, ",".join(sorted({c for lst in blocked for c in lst.containers})) or None),
             *[policy_obj(p, "selects the pod") for p in policies]],
            _EXPLANATION + " Nothing declares or targets these listeners, so this is often deliberate (an admin or "
            "metrics port kept private): worth knowing when something in the cluster should reach it.",
            f"If another pod needs it, admit the port in one of {names}; otherwise bind it to 127.0.0.1.",
            {"listeners": [{"listener": lst.text(), "processes": list(lst.processes),
                            "containers": list(lst.containers)} for lst in blocked], "policies": summary},
            about=frozenset(port_subject(k, p, proto) for p, proto in ports)))
    return out


def _blocked_listeners(pv: PodView, policies: Sequence[Mapping], wanted: Mapping[tuple[int, str], Any]
                       ) -> list[Listener]:
    return [lst for lst in pv.listeners or [] if not lst.loopback and not client_port(lst)
            and (lst.port, lst.protocol) not in wanted
            and not any(admits(pv.pod, p, lst.port, lst.protocol) for p in policies)]


RULES = (
    Rule("networkpolicy-blocks-port", ("warning",),
         "NetworkPolicies of type Ingress select the pod (podSelector with matchLabels/matchExpressions) and none "
         "of their ingress rules admits a port a Service targets or a container declares (named ports and endPort "
         "ranges resolved); hostNetwork pods are not judged",
         ("port", "protocol", "policies", "services", "declared_by")),
    Rule("networkpolicy-blocks-listener", ("info",),
         "as networkpolicy-blocks-port, for ports the pod listens on (not loopback) that nothing declares or "
         "targets", ("listeners", "policies")),
)
CHECKS = (Check("pod", policy_checks, ("networkpolicy-blocks-port", "networkpolicy-blocks-listener")),)
