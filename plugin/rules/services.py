"""Services against their pods: a targetPort nothing listens on, a named targetPort a pod
does not declare, or that means different numbers on different pods.

The first two are judged per pod (one finding per pod, ``group`` = the Service port) and
joined after suppression, so a pod whose port another finding explains (a crash on that
port, a failing probe) drops out of the Service's finding alone.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .. import podspec
from ..findings import Finding, pod_obj, svc_obj
from ..podspec import PodKey
from ..view import ClusterView, ServiceView
from .common import Check, Rule, on_port, port_subject


def _label(sp: dict) -> str:
    return ServiceView.port_label(sp)


def _not_listening_title(group: tuple, detail: dict[str, dict]) -> str:
    _ns, name, label, target, _proto, selected = group
    named = isinstance(target, str) and not target.isdigit()
    numbers = f" ({podspec.ports_text(d['target_port'] for d in detail.values())})" if named else ""
    return (f"Service {name} {label} → targetPort {target}{numbers}: nothing listens there "
            f"in {len(detail)} of {selected} selected pod(s)")


def _missing_title(group: tuple, pods: list[str]) -> str:
    _ns, name, label, target, proto, _selected = group
    return (f"Service {name} {label} → targetPort {target!r}: {len(pods)} selected pod(s) declare no {proto} port "
            "of that name")


def service_ports(sv: ServiceView, view: ClusterView) -> list[Finding]:
    out: list[Finding] = []
    svc = sv.svc
    for sp in sv.ports():
        proto = sp.get("protocol") or "TCP"
        target = sp.get("targetPort", sp.get("port"))
        named = isinstance(target, str) and not target.isdigit()
        resolved = {podspec.key(p): view.resolve(p, target, proto) for p in sv.selected}
        evidence: dict[str, Any] = {"service_port": sp.get("port"), "target_port": target, "protocol": proto}
        group = (*sv.key, _label(sp), target, proto, len(sv.selected))
        if named:
            for k in sorted(k for k, v in resolved.items() if v is None and k in view.scope_keys):
                out.append(Finding(
                    "named-port-missing", "critical", _missing_title(group, ["/".join(k)]),
                    [svc_obj(svc), pod_obj(k, role="no such port")],
                    "A named targetPort is looked up in each pod's containerPorts; a pod without a port of that "
                    "name (and protocol) is left out of the Service's endpoints, so it gets no traffic on this "
                    "port even though the selector matches.",
                    f"Add `name: {target}` to the right containerPort of those pods, or use a numeric targetPort.",
                    {**evidence, "pods": ["/".join(k)]}, group=group))
            out += _mismatch(svc, sp, resolved, evidence)
        for pod in sv.selected:
            k = podspec.key(pod)
            port = resolved[k]
            ls = view.listeners.get(k)
            if port is None or ls is None or k not in view.scope_keys or on_port(ls, port, proto):
                continue
            detail = {"/".join(k): {"target_port": port,
                                    "listening": sorted({lst.port for lst in ls if lst.protocol == proto})}}
            out.append(Finding(
                "service-port-not-listening", "critical", _not_listening_title(group, detail),
                [svc_obj(svc), pod_obj(k, role="not listening")],
                "kube-proxy forwards connections for this Service port to the targetPort of the selected pods; "
                "in these pods no socket listens on it, so clients get 'connection refused' (or a timeout) "
                "whenever they land on one of them.",
                "Point targetPort at the port the application really listens on (see `listening` in the "
                "evidence), or make the application listen on the targetPort.",
                {**evidence, "pods": detail},
                about=frozenset({port_subject(k, port, proto)}), group=group))
    return out


def _mismatch(svc: dict, sp: dict, resolved: dict[PodKey, Any], evidence: dict) -> list[Finding]:
    numbers: dict[int, list[PodKey]] = defaultdict(list)
    for k, v in resolved.items():
        if v is not None:
            numbers[v].append(k)
    if len(numbers) < 2:
        return []
    target = sp.get("targetPort")
    return [Finding(
        "named-port-mismatch", "warning",
        f"Service {svc['metadata']['name']} {_label(sp)} → targetPort {target!r} means different ports on different "
        "pods: " + "; ".join(f"{n} on {len(ks)} pod(s)" for n, ks in sorted(numbers.items())),
        [svc_obj(svc), *[pod_obj(k, role=f"{target}={n}") for n, ks in sorted(numbers.items()) for k in sorted(ks)]],
        "The Service sends each connection to whatever number the name resolves to in the chosen pod. "
        "That is deliberate during a port migration; otherwise two different workloads (or two "
        "versions) share the Service's selector and clients get different servers.",
        "Make the selector match one workload, or finish the migration so every pod declares the "
        "same number under this name.",
        {**evidence, "resolves_to": {str(n): ["/".join(k) for k in sorted(ks)] for n, ks in sorted(numbers.items())}})]


# --- joining the per-pod findings of one Service port ------------------------------------------

def _join(findings: list[Finding]) -> tuple[Finding, dict, list[dict]]:
    first = findings[0]
    pods = sorted((o for f in findings for o in f.objects if o["kind"] == "Pod"),
                  key=lambda o: (o["namespace"], o["name"]))
    others = [o for o in first.objects if o["kind"] != "Pod"]
    return first, {**first.evidence}, [*others, *pods]


def merge_not_listening(findings: list[Finding]) -> Finding:
    first, evidence, objects = _join(findings)
    evidence["pods"] = dict(sorted({k: v for f in findings for k, v in f.evidence["pods"].items()}.items()))
    return first._replace(title=_not_listening_title(first.group, evidence["pods"]), objects=objects,
                          evidence=evidence, about=frozenset().union(*(f.about for f in findings)))


def merge_missing(findings: list[Finding]) -> Finding:
    first, evidence, objects = _join(findings)
    evidence["pods"] = sorted(p for f in findings for p in f.evidence["pods"])
    return first._replace(title=_missing_title(first.group, evidence["pods"]), objects=objects, evidence=evidence)


RULES = (
    Rule("service-port-not-listening", ("critical",),
         "a Service's targetPort resolves, in a selected pod whose sockets were read, to a port nothing listens on",
         ("service_port", "target_port", "protocol", "pods"),
         ("declared-port-not-listening",), merge_not_listening),
    Rule("named-port-missing", ("critical",),
         "a named targetPort that a selected pod does not declare with the Service port's protocol (it gets no "
         "endpoint for that port)",
         ("service_port", "target_port", "protocol", "pods"), (), merge_missing),
    Rule("named-port-mismatch", ("warning",),
         "a named targetPort resolving to different numbers across the Service's pods",
         ("service_port", "target_port", "protocol", "resolves_to")),
)
CHECKS = (Check("service", service_ports, ("service-port-not-listening", "named-port-missing", "named-port-mismatch")),)
