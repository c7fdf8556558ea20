"""Builders the findings-engine tests share: pod, Service, EndpointSlice, NetworkPolicy and
Event dicts as the API returns them, agent Socket records, and ``analyse`` over them."""

from __future__ import annotations

from typing import Any, Optional

from sockdebug_agent.schema import Finding as AgentFinding
from sockdebug_agent.schema import Limits, Socket
from sockdebug_plugin import engine
from sockdebug_plugin.findings import Finding, Report
from sockdebug_plugin.view import ClusterInput, ClusterView, NodeObservation, PodObservation

NODE = "node-1"
NODE_IP = "10.0.0.1"


def tcp_probe(port: Any, host: Optional[str] = None, **extra: Any) -> dict:
    return {"tcpSocket": {"port": port, **({"host": host} if host else {})}, **extra}


def http_probe(port: Any, path: str = "/healthz", host: Optional[str] = None) -> dict:
    return {"httpGet": {"port": port, "path": path, **({"host": host} if host else {})}}


def grpc_probe(port: int) -> dict:
    return {"grpc": {"port": port}}


def container(name: str, ports: tuple = (), args: tuple = (), *, readiness: Optional[dict] = None,
              liveness: Optional[dict] = None, startup: Optional[dict] = None) -> dict:
    c: dict[str, Any] = {"name": name, "image": "app", "args": list(args)}
    if ports:
        c["ports"] = [p if isinstance(p, dict) else {"containerPort": p} for p in ports]
    for kind, probe in (("readiness", readiness), ("liveness", liveness), ("startup", startup)):
        if probe:
            c[f"{kind}Probe"] = probe
    return c


def running(name: str, ready: bool = True, restarts: int = 0, last: Optional[dict] = None) -> dict:
    st: dict[str, Any] = {"name": name, "ready": ready, "started": True, "restartCount": restarts,
                          "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}
    if last:
        st["lastState"] = {"terminated": last}
    return st


def crashing(name: str, restarts: int = 4, exit_code: int = 1, reason: str = "Error") -> dict:
    return {"name": name, "ready": False, "restartCount": restarts,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": exit_code, "reason": reason}}}


def waiting(name: str, reason: str, message: str = "") -> dict:
    return {"name": name, "ready": False, "restartCount": 0, "state": {"waiting": {"reason": reason,
                                                                                  "message": message}}}


def pod(name: str, *containers: dict, ns: str = "shop", labels: Optional[dict] = None, host_network: bool = False,
        node: Optional[str] = NODE, phase: str = "Running", statuses: Optional[list] = None,
        ip: Optional[str] = None, ready: Optional[bool] = None, gates: tuple = ()) -> dict:
    spec: dict[str, Any] = {"containers": list(containers)}
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    if gates:
        spec["readinessGates"] = [{"conditionType": g} for g in gates]
    status: dict[str, Any] = {"phase": phase}
    if statuses is not None:
        status["containerStatuses"] = statuses
    if phase == "Running":
        status.setdefault("containerStatuses", [running(c["name"]) for c in containers])
        if ready is None:
            ready = all(s.get("ready") for s in status["containerStatuses"])
        status["conditions"] = [{"type": "Ready", "status": str(ready)},
                                {"type": "ContainersReady", "status": str(ready)}]
        address = NODE_IP if host_network else (ip or f"10.244.0.{sum(map(ord, name)) % 250 + 2}")
        status.update(podIP=address, podIPs=[{"ip": address}], hostIP=NODE_IP)
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {}, "uid": f"uid-{name}"},
            "spec": spec, "status": status}


def svc(name: str, selector: dict, *ports: dict, ns: str = "shop", type_: str = "ClusterIP",
        cluster_ips: tuple = ()) -> dict:
    spec: dict[str, Any] = {"selector": selector, "ports": list(ports), "type": type_}
    if cluster_ips:
        spec["clusterIP"], spec["clusterIPs"] = cluster_ips[0], list(cluster_ips)
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def endpoint_slice(service: str, *members: tuple[dict, bool], ns: str = "shop", name: str = "") -> dict:
    return {"metadata": {"name": name or f"{service}-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": [p["status"]["podIP"]], "conditions": {"ready": ready},
                           "targetRef": {"kind": "Pod", "name": p["metadata"]["name"], "namespace": ns}}
                          for p, ready in members]}


def policy(name: str, selector: dict, *ingress: dict, ns: str = "shop", types: Optional[list] = None) -> dict:
    spec: dict[str, Any] = {"podSelector": selector, "ingress": list(ingress)}
    if types is not None:
        spec["policyTypes"] = types
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def event(p: dict, reason: str, message: str, container: Optional[str] = None, count: int = 1,
          at: str = "2025-01-01T00:01:00Z") -> dict:
    obj = {"kind": "Pod", "namespace": p["metadata"]["namespace"], "name": p["metadata"]["name"]}
    if container:
        obj["fieldPath"] = f"spec.containers{{{container}}}"
    return {"involvedObject": obj, "reason": reason, "message": message, "type": "Warning", "count": count,
            "lastTimestamp": at}


def listen(port: int, addr: str = "0.0.0.0", container: Optional[str] = "app", proto: str = "tcp",
           comm: str = "server", pid: int = 10, family: Optional[str] = None, v6only: Optional[bool] = None) -> Socket:
    family = family or ("inet6" if ":" in addr else "inet")
    procs = [{"pid": pid, "comm": comm, "fd": 3, **({"container": container} if container else {})}]
    return Socket(family, proto, "LISTEN" if proto == "tcp" else "UNCONN", 0, 128, addr, port,
                  "0.0.0.0" if family == "inet" else "::", 0, inode=port * 7 + pid, v6only=v6only, processes=procs)


def counters(**groups: dict) -> Limits:
    return Limits({}, {}, groups)


def agent_finding(fid: str, severity: str = "warning", **evidence: Any) -> AgentFinding:
    return AgentFinding(fid, severity, f"title of {fid}", evidence, "explanation " * 20, "next step `cmd`")


def analyse(pods: list, services: tuple = (), sockets: Optional[dict] = None, *, limits: Optional[dict] = None,
            agent: Optional[dict] = None, rules: Optional[tuple] = None, **kw: Any) -> Report:
    sockets = sockets or {}
    observed = {k: PodObservation(v, (limits or {}).get(k), (agent or {}).get(k, ())) for k, v in sockets.items()}
    return engine.analyse(ClusterInput(pods=pods, services=list(services), observed=observed, **kw), rules=rules)


def view(pods: list, **kw: Any) -> ClusterView:
    return ClusterView(ClusterInput(pods=pods, **kw))


def ids(report: Report) -> list[tuple[str, str]]:
    return [(f.id, f.severity) for f in report.findings]


def by_id(report: Report, fid: str) -> list[Finding]:
    return [f for f in report.findings if f.id == fid]


def one(report: Report, fid: str) -> Finding:
    found = by_id(report, fid)
    assert len(found) == 1, [(f.id, f.title) for f in report.findings]
    return found[0]


def objs(f: Finding, kind: str = "Pod") -> list[tuple]:
    return [(o.get("name"), o.get("container"), o.get("role")) for o in f.objects if o["kind"] == kind]


# --- the builders themselves -------------------------------------------------------------------

def test_builders_make_a_clean_ready_pod_behind_its_service():
    p = pod("web", container("app", ({"name": "http", "containerPort": 8080},), readiness=http_probe("http")),
            labels={"app": "web"})
    s = svc("web", {"app": "web"}, {"port": 80, "targetPort": "http"})
    report = analyse([p], [s], {("shop", "web"): [listen(8080)]},
                     endpoint_slices=[endpoint_slice("web", (p, True))])
    assert report.findings == [] and report.inspected == 1
    v = view([p], services=[s], endpoint_slices=[endpoint_slice("web", (p, True))])
    assert [sv.name for sv in v.pods[0].services] == ["web"] and v.services[0].ready_endpoints() == 1
    assert NodeObservation().sockets == ()
