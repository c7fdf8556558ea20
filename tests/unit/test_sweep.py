"""The sweep's analysis (``engine.analyse`` on what ``sweep_run`` collects: specs and
listening sockets, every rule) on constructed pod/Service specs and socket records: the
suppression of duplicate findings, scope, ordering and rendering."""

from __future__ import annotations

import json
from typing import Any, Optional

from sockdebug_agent.schema import Socket
from sockdebug_plugin import engine, findings, podspec, view
from sockdebug_plugin.findings import Finding, Report
from sockdebug_plugin.view import ClusterInput, NodeObservation, PodObservation

NODE = "node-1"


def container(name: str, ports: tuple = (), args: tuple = (), env: Optional[list] = None) -> dict:
    c: dict[str, Any] = {"name": name, "image": "app", "args": list(args)}
    if ports:
        c["ports"] = [p if isinstance(p, dict) else {"containerPort": p} for p in ports]
    if env:
        c["env"] = env
    return c


def running(name: str) -> dict:
    return {"name": name, "restartCount": 0, "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}},
            "containerID": f"containerd://{name:0<64}"[:77]}


def crashing(name: str, restarts: int = 4) -> dict:
    return {"name": name, "restartCount": restarts,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}


def pod(name: str, *containers: dict, ns: str = "shop", labels: Optional[dict] = None, host_network: bool = False,
        node: Optional[str] = NODE, phase: str = "Running", statuses: Optional[list] = None,
        conditions: Optional[list] = None, annotations: Optional[dict] = None) -> dict:
    spec: dict[str, Any] = {"containers": list(containers)}
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    status: dict[str, Any] = {"phase": phase}
    if phase == "Running":
        status["containerStatuses"] = statuses if statuses is not None else [running(c["name"]) for c in containers]
    if conditions:
        status["conditions"] = conditions
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels or {}, "uid": f"uid-{name}"}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec, "status": status}


def svc(name: str, selector: dict, *ports: dict, ns: str = "shop", type_: str = "ClusterIP") -> dict:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ports": list(ports), "type": type_}}


def listen(port: int, addr: str = "0.0.0.0", container: Optional[str] = "app", proto: str = "tcp",
           comm: str = "server", pid: int = 10, family: str = "inet") -> Socket:
    procs = [{"pid": pid, "comm": comm, "fd": 3, **({"container": container} if container else {})}]
    return Socket(family, proto, "LISTEN" if proto == "tcp" else "UNCONN", 0, 128, addr, port,
                  "0.0.0.0" if family == "inet" else "::", 0, inode=port * 7 + pid, processes=procs)


def run(pods: list, services: list = (), sockets: Optional[dict] = None, host_listeners: Optional[dict] = None,
        **kw) -> Report:
    """What sweep_run hands the engine: listening sockets per pod, the node's own listeners."""
    return engine.analyse(ClusterInput(
        pods=pods, services=list(services), observed={k: PodObservation(v) for k, v in (sockets or {}).items()},
        node_observed={n: NodeObservation(v) for n, v in (host_listeners or {}).items()}, **kw))


def ids(report: Report) -> list[tuple[str, str]]:
    return [(f.id, f.severity) for f in report.findings]


def by_id(report: Report, fid: str) -> list[Finding]:
    return [f for f in report.findings if f.id == fid]


def objs(f: Finding, kind: str = "Pod") -> list[tuple]:
    return [(o.get("name"), o.get("container"), o.get("role")) for o in f.objects if o["kind"] == kind]


# --- clean ------------------------------------------------------------------------------

def test_clean_pods_and_service_have_no_findings():
    pods = [pod(f"web-{i}", container("app", ({"name": "http", "containerPort": 8080},)), labels={"app": "web"})
            for i in range(3)]
    pods.append(pod("dns", container("app", ({"containerPort": 5353, "protocol": "UDP"},))))
    sockets = {("shop", f"web-{i}"): [listen(8080), listen(9901, "127.0.0.1")] for i in range(3)}
    sockets["shop", "dns"] = [listen(5353, proto="udp"), listen(45000, proto="udp")]  # + a resolver's client port
    report = run(pods, [svc("web", {"app": "web"}, {"port": 80, "targetPort": "http"})], sockets)
    assert report.findings == []
    assert report.inspected == 4 and report.uninspected == []


# --- Services -------------------------------------------------------------------------------

def test_service_numeric_target_port_nobody_listens_on():
    pods = [pod("api", container("app", (8080,)), labels={"app": "api"})]
    report = run(pods, [svc("api", {"app": "api"}, {"port": 80, "targetPort": 8081})],
                 {("shop", "api"): [listen(8080)]})
    assert ids(report) == [("service-port-not-listening", "critical")]
    f = report.findings[0]
    assert objs(f, "Service") == [("api", None, None)]
    assert objs(f) == [("api", None, "not listening")]
    assert f.evidence["pods"]["shop/api"] == {"target_port": 8081, "listening": [8080]}


def test_service_named_target_port_not_listening_suppresses_the_containerport_finding():
    pods = [pod("api", container("app", ({"name": "http", "containerPort": 8080},)), labels={"app": "api"})]
    report = run(pods, [svc("api", {"app": "api"}, {"port": 80, "targetPort": "http"})],
                 {("shop", "api"): [listen(9090)]})
    assert [f.id for f in report.findings] == ["service-port-not-listening", "undeclared-listener"]
    assert "(8080)" in report.findings[0].title


def test_service_default_target_port_is_the_port():
    pods = [pod("api", container("app", (80,)), labels={"app": "api"})]
    report = run(pods, [svc("api", {"app": "api"}, {"port": 80})], {("shop", "api"): [listen(80)]})
    assert report.findings == []


def test_service_only_some_pods_not_listening():
    pods = [pod(n, container("app", (8080,)), labels={"app": "api"}) for n in ("a", "b", "c")]
    sockets = {("shop", "a"): [listen(8080)], ("shop", "b"): [listen(8080)], ("shop", "c"): []}
    report = run(pods, [svc("api", {"app": "api"}, {"port": 80, "targetPort": 8080})], sockets)
    f = by_id(report, "service-port-not-listening")[0]
    assert objs(f) == [("c", None, "not listening")] and "1 of 3" in f.title
    assert not by_id(report, "declared-port-not-listening")  # the Service finding explains pod c's port


def test_service_loopback_only_is_critical_and_names_the_service():
    pods = [pod("api", container("app", ({"name": "http", "containerPort": 8080},)), labels={"app": "api"})]
    report = run(pods, [svc("api", {"app": "api"}, {"name": "web", "port": 80, "targetPort": "http"})],
                 {("shop", "api"): [listen(8080, "127.0.0.1")]})
    assert ids(report) == [("loopback-only-listener", "critical")]
    f = report.findings[0]
    assert objs(f, "Service") == [("api", None, None)]
    assert objs(f) == [("api", "app", "loopback only")]
    assert f.evidence["addresses"] == ["127.0.0.1"] and "Service api port web 80" in f.title


def test_loopback_ipv6_and_mapped():
    assert view.is_loopback("::1") and view.is_loopback("::ffff:127.0.0.1") and view.is_loopback("127.0.0.53")
    assert not view.is_loopback("0.0.0.0") and not view.is_loopback("::") and not view.is_loopback("10.0.0.1")
    assert not view.is_loopback("*")


def test_containerport_loopback_only_is_a_warning():
    pods = [pod("api", container("app", (8080,)))]
    report = run(pods, [], {("shop", "api"): [listen(8080, "::1", family="inet6")]})
    assert ids(report) == [("loopback-only-listener", "warning")]


def test_loopback_plus_wildcard_is_fine():
    pods = [pod("api", container("app", (8080,)), labels={"app": "api"})]
    report = run(pods, [svc("api", {"app": "api"}, {"port": 8080})],
                 {("shop", "api"): [listen(8080, "127.0.0.1"), listen(8080, "::", family="inet6")]})
    assert report.findings == []


def test_named_port_mismatch_and_missing():
    pods = [pod("v1", container("app", ({"name": "http", "containerPort": 8080},)), labels={"app": "web"}),
            pod("v2", container("app", ({"name": "http", "containerPort": 8081},)), labels={"app": "web"}),
            pod("other", container("app", (8080,)), labels={"app": "web"})]
    sockets = {("shop", "v1"): [listen(8080)], ("shop", "v2"): [listen(8081)], ("shop", "other"): [listen(8080)]}
    report = run(pods, [svc("web", {"app": "web"}, {"port": 80, "targetPort": "http"})], sockets)
    assert ids(report) == [("named-port-missing", "critical"), ("named-port-mismatch", "warning")]
    missing, mismatch = report.findings
    assert objs(missing) == [("other", None, "no such port")]
    assert objs(mismatch) == [("v1", None, "http=8080"), ("v2", None, "http=8081")]
    assert mismatch.evidence["resolves_to"] == {"8080": ["shop/v1"], "8081": ["shop/v2"]}


def test_named_port_protocol_must_match():
    pods = [pod("dns", container("app", ({"name": "dns", "containerPort": 53, "protocol": "UDP"},)),
                labels={"app": "dns"})]
    report = run(pods, [svc("dns", {"app": "dns"}, {"port": 53, "targetPort": "dns", "protocol": "TCP"})],
                 {("shop", "dns"): [listen(53, proto="udp")]})
    assert ids(report) == [("named-port-missing", "critical")]


def test_service_without_selector_or_pods_in_scope_is_ignored():
    pods = [pod("api", container("app", (8080,)), labels={"app": "api"})]
    services = [{"metadata": {"name": "manual", "namespace": "shop"}, "spec": {"ports": [{"port": 1}]}},
                svc("elsewhere", {"app": "api"}, {"port": 1}, ns="other"),
                svc("nobody", {"app": "x"}, {"port": 1})]
    report = run(pods, services, {("shop", "api"): [listen(8080)]})
    assert report.findings == []


# --- one pod: declared vs listening -----------------------------------------------------------

def test_declared_port_not_listening():
    pods = [pod("api", container("app", (8080, {"name": "admin", "containerPort": 9000})))]
    report = run(pods, [], {("shop", "api"): [listen(8080)]})
    assert ids(report) == [("declared-port-not-listening", "warning")]
    f = report.findings[0]
    assert objs(f) == [("api", "app", None)] and "admin 9000/TCP" in f.title
    assert f.evidence["listening"] == ["tcp/8080"]


def test_declared_udp_port_needs_a_udp_socket():
    pods = [pod("dns", container("app", ({"containerPort": 53, "protocol": "UDP"},)))]
    report = run(pods, [], {("shop", "dns"): [listen(53)]})  # TCP only
    assert [f.id for f in report.findings] == ["declared-port-not-listening", "undeclared-listener"]


def test_undeclared_listener_is_info_and_loopback_or_udp_client_ports_are_not():
    pods = [pod("api", container("app", (8080,)))]
    sockets = {("shop", "api"): [listen(8080), listen(7000), listen(7001, "127.0.0.1"), listen(50000, proto="udp"),
                                 listen(9999, proto="udp")]}
    report = run(pods, [], sockets)
    assert ids(report) == [("undeclared-listener", "info")]
    f = report.findings[0]
    assert "7000/TCP, 9999/UDP" in f.title
    assert [e["listener"] for e in f.evidence["listeners"]] == ["tcp 0.0.0.0:7000", "udp 0.0.0.0:9999"]


def test_numeric_service_target_counts_as_declared():
    pods = [pod("api", container("app"), labels={"app": "api"})]
    report = run(pods, [svc("api", {"app": "api"}, {"port": 80, "targetPort": 8080})],
                 {("shop", "api"): [listen(8080)]})
    assert report.findings == []


def test_ports_of_a_container_that_is_not_running_are_not_judged():
    pods = [pod("api", container("app", (8080,)), container("side", (9000,)),
                statuses=[running("app"), crashing("side")])]
    report = run(pods, [], {("shop", "api"): [listen(8080)]})
    # no port finding for the stopped container's 9000: only why it is down (the pods-down rules)
    assert ids(report) == [("container-crash-looping", "critical")]
    assert objs(report.findings[0]) == [("api", "side", "crash-looping")]


def test_sidecar_init_container_ports_count():
    p = pod("api", container("app", (8080,)))
    p["spec"]["initContainers"] = [{"name": "proxy", "restartPolicy": "Always", "ports": [{"containerPort": 15001}]},
                                   {"name": "setup", "ports": [{"containerPort": 1}]}]
    p["status"]["initContainerStatuses"] = [running("proxy"), {"name": "setup", "state": {"terminated": {
        "exitCode": 0}}}]
    report = run([p], [], {("shop", "api"): [listen(8080), listen(15001, container="proxy")]})
    assert report.findings == []


# --- containers of one pod --------------------------------------------------------------------

def test_two_containers_declare_one_port_and_the_loser_crash_loops():
    p = pod("dup", container("a", (8080,), ("--listen", "0.0.0.0:8080")),
            container("b", (8080,), ("--listen", "0.0.0.0:8080")), statuses=[running("a"), crashing("b")])
    logs = {("shop", "dup", "b"): "Traceback ...\nOSError: [Errno 98] Address already in use\n"}
    report = run([p], [], {("shop", "dup"): [listen(8080, container="a")]}, logs=logs)
    assert ids(report) == [("container-port-conflict", "critical")]
    f = report.findings[0]
    assert objs(f) == [("dup", "a", "holds the port"), ("dup", "b", "crash-looping")]
    assert "container b crash-loops because container a already binds port 8080/TCP" in f.title
    assert f.evidence["crash_looping"]["b"]["log"] == "OSError: [Errno 98] Address already in use"
    assert f.evidence["crash_looping"]["b"]["restarts"] == 4


def test_two_running_containers_declaring_one_port_is_a_warning():
    p = pod("dup", container("a", (8080,)), container("b", (8080,)))
    report = run([p], [], {("shop", "dup"): [listen(8080, container="a")]})
    assert ids(report) == [("container-port-conflict", "warning")]


def test_undeclared_bind_conflict_found_from_the_log_and_the_command_line():
    p = pod("dup", container("a", (8090,), ("--listen", "0.0.0.0:8090")),
            container("b", (), ("--listen", "0.0.0.0:8090", "--metrics-port=9100")),
            statuses=[running("a"), crashing("b")])
    logs = {("shop", "dup", "b"): "listen tcp :8090: bind: address already in use"}
    report = run([p], [], {("shop", "dup"): [listen(8090, container="a")]}, logs=logs)
    assert ids(report) == [("container-port-conflict", "critical")]
    f = report.findings[0]
    assert objs(f) == [("dup", "b", "crash-looping"), ("dup", "a", "holds the port")]
    assert f.evidence["port"] == 8090


def test_a_crash_without_a_bind_error_is_not_a_port_finding():
    p = pod("api", container("a", (8080,)), container("b", (), ("--listen", ":8080")),
            statuses=[running("a"), crashing("b")])
    report = run([p], [], {("shop", "api"): [listen(8080, container="a")]},
                 logs={("shop", "api", "b"): "KeyError: 'DATABASE_URL'"})
    assert ids(report) == [("container-crash-looping", "critical")]  # why it is down, not a port conflict
    assert report.findings[0].evidence["log"] == ["KeyError: 'DATABASE_URL'"]


def test_mentioned_ports_and_bind_failure():
    c = container("x", (80,), ("--listen", "127.0.0.1:8080", "--port=9000", "-p", "10.0.0.1:1"),
                  env=[{"name": "METRICS_PORT", "value": "9100"}, {"name": "N", "value": "5"}])
    assert podspec.mentioned_ports(c) == {80, 8080, 9000, 1, 9100}
    assert podspec.bind_failure("ok\nError: listen EADDRINUSE: address already in use :::3000\n").startswith("Error")
    assert podspec.bind_failure("nginx: [emerg] bind() to 0.0.0.0:80 failed (98: Address in use)")
    assert podspec.bind_failure("all good") is None and podspec.bind_failure(None) is None


# --- nodes: hostNetwork, hostPort, daemons, NodePort range -----------------------------------------

def test_hostnetwork_pods_listening_on_one_port():
    a = pod("a", container("app", (24711,)), host_network=True)
    b = pod("b", container("app", (24711,)), host_network=True)
    sockets = {("shop", "a"): [listen(24711, "0.0.0.0")], ("shop", "b"): [listen(24711, "0.0.0.0", pid=11)]}
    report = run([a, b], [], sockets)
    found = {f.id: f for f in report.findings}
    assert found["hostnetwork-port-conflict"].severity == "critical"
    assert found["hostport-conflict"].severity == "critical"
    assert "declared-port-not-listening" not in found


def test_hostnetwork_pods_on_disjoint_addresses_is_a_warning():
    a = pod("a", container("app"), host_network=True)
    b = pod("b", container("app"), host_network=True)
    sockets = {("shop", "a"): [listen(24711, "10.0.0.1")], ("shop", "b"): [listen(24711, "10.0.0.2", pid=11)]}
    report = run([a, b], [], sockets)
    f = by_id(report, "hostnetwork-port-conflict")[0]
    assert f.severity == "warning" and {o["name"] for o in f.objects} == {"a", "b", NODE}


def test_hostnetwork_pods_on_other_nodes_do_not_clash():
    a = pod("a", container("app", (24711,)), host_network=True)
    b = pod("b", container("app", (24711,)), host_network=True, node="node-2")
    sockets = {("shop", "a"): [listen(24711)], ("shop", "b"): [listen(24711)]}
    report = run([a, b], [], sockets)
    assert report.findings == []


def test_hostnetwork_crash_loop_on_a_port_another_pod_holds():
    a = pod("hostnet-a", container("app", (24711,), ("--listen", "127.0.0.1:24711")), host_network=True)
    c = pod("hostnet-c", container("app", (), ("--listen", "127.0.0.1:24711")), host_network=True,
            statuses=[crashing("app")])
    logs = {("shop", "hostnet-c", "app"): "OSError: [Errno 98] Address already in use"}
    report = run([a, c], [], {("shop", "hostnet-a"): [listen(24711, "127.0.0.1")]}, logs=logs)
    f = by_id(report, "hostnetwork-port-conflict")[0]
    assert f.severity == "critical"
    assert objs(f) == [("hostnet-c", "app", "crash-looping"), ("hostnet-a", "app", "holds the port")]
    assert "port 24711 is already held by pod hostnet-a" in f.title
    # hostnet-a's own node-loopback listener behind its declared port: worth knowing only
    assert ids(report) == [("hostnetwork-port-conflict", "critical"), ("loopback-only-listener", "info")]


def test_node_daemon_port_declared_by_a_hostnetwork_pod():
    p = pod("sneaky", container("app", (10259, 24712)), host_network=True)
    report = run([p], [], {("shop", "sneaky"): [listen(24712)]})
    assert ids(report) == [("node-daemon-port", "critical")]
    f = report.findings[0]
    assert f.evidence["daemon"] == "kube-scheduler" and f.evidence["node_listener"] == []
    # --via node also knows who holds it
    host = {NODE: [listen(10259, "127.0.0.1", container=None, comm="kube-scheduler", pid=99)]}
    report = run([p], [], {("shop", "sneaky"): [listen(24712)]}, host_listeners=host)
    assert ids(report) == [("node-daemon-port", "critical")]
    assert report.findings[0].evidence["node_listener"] == [{"address": "127.0.0.1",
                                                            "processes": ["kube-scheduler/99"]}]


def test_node_daemon_port_by_hostport_and_the_daemon_itself_is_exempt():
    hp = pod("hp", container("app", ({"containerPort": 8080, "hostPort": 10250},)))
    proxy = pod("kube-proxy-abcde", container("kube-proxy", (10256,)), ns="kube-system", host_network=True,
                labels={"k8s-app": "kube-proxy"})
    sockets = {("shop", "hp"): [listen(8080)],
               ("kube-system", "kube-proxy-abcde"): [listen(10256, "::", "kube-proxy", comm="kube-proxy",
                                                            family="inet6")]}
    report = run([hp, proxy], [], sockets)
    assert ids(report) == [("node-daemon-port", "critical")]
    assert objs(report.findings[0]) == [("hp", "app", None)]


def test_host_port_in_use_by_a_node_process():
    p = pod("agent", container("app", (33847,)), host_network=True)
    host = {NODE: [listen(33847, "127.0.0.1", container=None, comm="containerd", pid=5)]}
    report = run([p], [], {("shop", "agent"): []}, host_listeners=host)
    assert ids(report) == [("host-port-in-use", "critical")]
    assert "containerd/5 already listens" in report.findings[0].title


def test_nodeport_range_warning_and_critical_with_a_service():
    p = pod("np", container("app", (31999,)), host_network=True)
    sockets = {("shop", "np"): [listen(31999)]}
    assert ids(run([p], [], sockets)) == [("nodeport-range", "warning")]
    s = svc("public", {"app": "other"}, {"port": 80, "nodePort": 31999}, type_="NodePort")
    report = run([p], [s], sockets)
    assert ids(report) == [("nodeport-range", "critical")]
    assert objs(report.findings[0], "Service") == [("public", None, None)]


def test_hostport_unschedulable_pending_pod_names_the_holder():
    holder = pod("hp-a", container("app", ({"containerPort": 80, "hostPort": 24713},)))
    cond = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."}]
    pending = pod("hp-b", container("app", ({"containerPort": 80, "hostPort": 24713},)), node=None, phase="Pending",
                  conditions=cond)
    report = run([holder, pending], [], {("shop", "hp-a"): [listen(80)]})
    assert ids(report) == [("hostport-conflict", "critical")]
    f = report.findings[0]
    assert objs(f) == [("hp-b", "app", "unschedulable"), ("hp-a", "app", f"holds it on node {NODE}")]
    assert [(u.name, u.reason.split(":")[0]) for u in report.uninspected] == [("hp-b", "not running (Pending")]


def test_hostport_rejected_by_the_kubelet():
    a = pod("a", container("app", ({"containerPort": 80, "hostPort": 24713},)))
    b = pod("b", container("app", ({"containerPort": 80, "hostPort": 24713},)), phase="Failed")
    b["status"].update(reason="NodePorts", message="Pod was rejected: Predicate NodePorts failed")
    report = run([a, b], [], {("shop", "a"): [listen(80)]})
    f = by_id(report, "hostport-conflict")[0]
    assert objs(f) == [("a", "app", None), ("b", "app", "rejected")]


def test_hostport_on_different_host_ips_is_fine():
    a = pod("a", container("app", ({"containerPort": 80, "hostPort": 24713, "hostIP": "10.0.0.1"},)))
    b = pod("b", container("app", ({"containerPort": 80, "hostPort": 24713, "hostIP": "10.0.0.2"},)))
    report = run([a, b], [], {("shop", "a"): [listen(80)], ("shop", "b"): [listen(80)]})
    assert report.findings == []


# --- scope, uninspected, ordering, rendering ----------------------------------------------------------

def test_conflicts_between_pods_out_of_scope_are_not_reported():
    a = pod("a", container("app", (24711,)), ns="other", host_network=True)
    b = pod("b", container("app", (24711,)), ns="other", host_network=True)
    mine = pod("mine", container("app", (8080,)))
    report = run([mine], [], {("shop", "mine"): [listen(8080)]}, context_pods=[a, b])
    assert report.findings == []
    c = pod("c", container("app", (24711,)), host_network=True)
    report = run([mine, c], [], {("shop", "mine"): [listen(8080)], ("shop", "c"): [listen(24711)]},
                 context_pods=[a, b])
    f = by_id(report, "hostport-conflict")[0]
    assert {o["name"] for o in f.objects if o["kind"] == "Pod"} == {"a", "b", "c"}


def test_uninspected_pods_are_listed_with_the_reason():
    pods = [pod("ok", container("app")), pod("denied", container("app")), pod("done", container("app"),
                                                                                phase="Succeeded"),
            pod("waiting", container("app"), phase="Pending")]
    report = run(pods, [], {("shop", "ok"): []},
                 uninspected={("shop", "denied"): "Pod Security admission rejected the agent container"})
    assert [(u.name, u.reason) for u in report.uninspected] == [
        ("denied", "Pod Security admission rejected the agent container"), ("waiting", "not running (Pending)")]
    assert report.inspected == 1 and report.pods == 4


def test_most_severe_first_and_rendering():
    pods = [pod("api", container("app", (8080, 9000)), labels={"app": "api"})]
    sockets = {("shop", "api"): [listen(8080, "127.0.0.1"), listen(7000)]}
    report = run(pods, [svc("api", {"app": "api"}, {"port": 80, "targetPort": 8080})], sockets)
    assert [f.severity for f in report.findings] == ["critical", "warning", "info"]
    scope = {"namespaces": ["shop"], "selector": None, "via": "node", "elapsed_s": 1.25}
    out = findings.text(report, scope, empty="no port problems found")
    assert out.index("CRITICAL") < out.index("WARNING") < out.index("INFO")
    assert "objects: svc/api -n shop; pod/api -n shop (container app, loopback only)" in out
    assert out.rstrip().endswith("1 of 1 pods inspected via node in 1.2s: 1 critical, 1 warning, 1 info")
    doc = json.loads(json.dumps(findings.document(report, scope, "SweepReport")))
    assert doc["kind"] == "SweepReport" and doc["summary"]["findings"] == {"critical": 1, "warning": 1, "info": 1}
    assert set(doc["findings"][0]) == {"id", "severity", "title", "objects", "explanation", "fix", "evidence"}
    assert findings.at_or_above(report.findings, "warning") == report.findings[:2]


def test_terminal_text_is_escaped():
    pods = [pod("api", container("app"))]
    report = run(pods, [], {("shop", "api"): [listen(7000, comm="evil\x1b[2J")]})
    out = findings.text(report, {"via": "ephemeral"}, color=False)
    assert "\x1b" not in out


def test_trouble_catches_a_crash_loop_between_restarts():
    p = pod("x", container("app"), statuses=[running("app")])
    assert podspec.trouble(p, "app") is None
    st = p["status"]["containerStatuses"][0]
    st.update(restartCount=1, lastState={"terminated": {"exitCode": 1}})
    assert podspec.trouble(p, "app") is None  # failed once, running again: may have recovered
    st.update(restartCount=2)
    assert podspec.trouble(p, "app")["state"] == "Running between restarts"
    st.update(lastState={"terminated": {"exitCode": 0}})
    assert podspec.trouble(p, "app") is None  # restarted after clean exits
    assert podspec.trouble(pod("y", container("app"), statuses=[crashing("app")]), "app")["state"] == "CrashLoopBackOff"
