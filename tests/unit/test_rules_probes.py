"""rules/probes.py on constructed pods and listeners: every probe handler, named ports
(own container, another container's), IPv4/IPv6 loopback, hostNetwork pods, the host
field, confirmation by status and Events, and what the probe findings explain."""

from __future__ import annotations

import pytest
from test_findings_kit import (
    NODE_IP,
    analyse,
    by_id,
    container,
    counters,
    crashing,
    endpoint_slice,
    event,
    grpc_probe,
    http_probe,
    ids,
    listen,
    objs,
    one,
    pod,
    running,
    svc,
    tcp_probe,
)

HTTP = {"name": "http", "containerPort": 8080}


def not_ready_pod(*containers, **kw):
    statuses = [running(c["name"], ready=False) for c in containers]
    return pod("api", *containers, labels={"app": "api"}, statuses=statuses, **kw)


@pytest.mark.parametrize("probe", [tcp_probe(8080), http_probe("http"), grpc_probe(8080), tcp_probe("8080")])
def test_readiness_probe_on_a_port_nothing_listens_on(probe):
    p = not_ready_pod(container("app", (HTTP,), readiness=probe))
    report = analyse([p], (), {("shop", "api"): [listen(9090)]})
    f = one(report, "probe-not-listening")
    assert f.severity == "critical"  # the pod's status confirms it: not ready
    assert objs(f) == [("api", "app", "probe fails")]
    assert "readiness probe" in f.title and "nothing listens on port 8080" in f.title and "not Ready" in f.title
    assert f.evidence["listening"] == [9090] and f.evidence["target"] == p["status"]["podIP"]
    assert f.evidence["pod_conditions"] == {"Ready": "False", "ContainersReady": "False"}
    # the containerPort finding on the same port is the same fact: explained
    assert not by_id(report, "declared-port-not-listening") and not by_id(report, "pod-not-ready")
    assert set(f.evidence["explains"]) == {"declared-port-not-listening", "pod-not-ready"}


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"])
def test_readiness_probe_on_a_loopback_only_port_names_the_bind_address_and_the_service(address):
    p = not_ready_pod(container("app", (HTTP,), readiness=tcp_probe("http")))
    s = svc("api", {"app": "api"}, {"port": 80, "targetPort": "http"})
    sl = endpoint_slice("api", (p, False))
    report = analyse([p], [s], {("shop", "api"): [listen(8080, address)]}, endpoint_slices=[sl],
                     limits={("shop", "api"): counters(Tcp={"OutRsts": 42, "AttemptFails": 0})},
                     events=[event(p, "Unhealthy", f"Readiness probe failed: dial tcp {p['status']['podIP']}:8080: "
                                                   "connect: connection refused", "app", count=30)])
    assert ids(report) == [("probe-loopback-only", "critical")]  # the Service's loopback finding is explained
    f = report.findings[0]
    assert f"only on loopback ({address})" in f.title and "out of the ready endpoints of Service api" in f.title
    assert objs(f, "Service") == [("api", None, "not a ready endpoint")]
    assert f.evidence["addresses"] == [address] and f.evidence["Tcp.OutRsts"] == 42
    assert f.evidence["endpoints"] == [{"service": "api", "ready": False, "slices": ["api-abcde"],
                                        "ready_endpoints": 0}]
    assert f.evidence["events"] == ["Readiness probe failed: dial tcp " + p["status"]["podIP"]
                                    + ":8080: connect: connection refused (x30)"]
    assert "container app (server/10)" in f.explanation  # the owner is named, never "an unknown process"
    assert "loopback-only-listener" in f.evidence["explains"]


def test_unconfirmed_probe_failure_is_a_warning_and_does_not_hide_a_critical_service_finding():
    p = pod("api", container("app", (8080,), readiness=tcp_probe(8080)), labels={"app": "api"})  # still Ready
    s = svc("api", {"app": "api"}, {"port": 80, "targetPort": 8080})
    report = analyse([p], [s], {("shop", "api"): [listen(9090)]})
    assert ids(report) == [("service-port-not-listening", "critical"), ("probe-not-listening", "warning"),
                           ("undeclared-listener", "info")]


def test_liveness_probe_failure_says_the_kubelet_restarts_the_container():
    p = pod("api", container("app", (8080,), liveness=http_probe(8081)),
            statuses=[running("app", restarts=3, last={"exitCode": 137, "reason": "Error"})])
    report = analyse([p], (), {("shop", "api"): [listen(8080)]})
    f = one(report, "probe-not-listening")
    assert f.severity == "critical" and "the kubelet restarts container app (3 restarts so far)" in f.title
    assert f.evidence["container_status"]["last_termination"] == {"exitCode": 137, "reason": "Error"}
    assert "liveness probe httpGet :8081/healthz" in f.title


def test_a_crash_loop_caught_between_restarts_is_explained_by_the_liveness_probe():
    p = pod("api", container("app", (8080,), liveness=tcp_probe(8080)),
            statuses=[running("app", ready=False, restarts=5, last={"exitCode": 137, "reason": "Error"})])
    report = analyse([p], (), {("shop", "api"): [listen(8080, "127.0.0.1")]})
    assert ids(report) == [("probe-loopback-only", "critical")]
    assert {"container-crash-looping", "pod-not-ready", "loopback-only-listener"} <= set(
        report.findings[0].evidence["explains"])


def test_startup_probe():
    p = pod("api", container("app", (), startup=tcp_probe(8080)),
            statuses=[{**running("app", ready=False), "started": False}])
    f = one(analyse([p], (), {("shop", "api"): []}), "probe-not-listening")
    assert f.severity == "critical" and "never counts as started" in f.title


def test_probes_of_one_container_on_one_port_are_one_finding():
    p = not_ready_pod(container("app", (HTTP,), readiness=http_probe("http", "/ready"), liveness=http_probe(8080)))
    f = one(analyse([p], (), {("shop", "api"): []}), "probe-not-listening")
    assert [d["probe"] for d in f.evidence["probes"]] == ["liveness", "readiness"]
    assert "the kubelet restarts container app" in f.title and "the pod is not Ready" in f.title


def test_probe_on_a_port_another_container_listens_on_is_fine():
    """All containers share the pod's network namespace: a numeric probe port served by a
    sidecar works."""
    p = pod("api", container("app", (8080,), readiness=tcp_probe(15020)),
            container("proxy", ({"name": "health", "containerPort": 15020},)))
    report = analyse([p], (), {("shop", "api"): [listen(8080), listen(15020, container="proxy", pid=11)]})
    assert report.findings == []


def test_named_probe_port_declared_only_by_another_container_never_resolves():
    """The kubelet looks a probe's port name up in the probed container only."""
    p = pod("api", container("app", (8080,), readiness=tcp_probe("health")),
            container("proxy", ({"name": "health", "containerPort": 15020},)),
            statuses=[running("app", ready=False), running("proxy")])
    report = analyse([p], (), {("shop", "api"): [listen(8080), listen(15020, container="proxy", pid=11)]})
    assert ids(report) == [("probe-named-port-missing", "critical")]
    f = report.findings[0]
    assert f.evidence["declared_by"] == "proxy" and f.evidence["port"] == "health"
    assert "(container proxy does)" in f.title
    # no sockets needed: it is decided by the spec alone
    assert ids(analyse([p], (), {})) == [("probe-named-port-missing", "critical")]


def test_hostnetwork_probe_targets_the_node_ip():
    p = pod("agent", container("app", (9100,), readiness=http_probe(9100)), host_network=True,
            statuses=[running("app", ready=False)])
    report = analyse([p], (), {("shop", "agent"): [listen(9100, "127.0.0.1")]})
    f = one(report, "probe-loopback-only")
    assert f.evidence["target"] == NODE_IP and "the node" not in f.title
    # the node's loopback is the pod's namespace: a probe with host 127.0.0.1 reaches it
    p2 = pod("agent", container("app", (9100,), readiness=http_probe(9100, host="127.0.0.1")), host_network=True)
    assert by_id(analyse([p2], (), {("shop", "agent"): [listen(9100, "127.0.0.1")]}), "probe-loopback-only") == []


def test_probe_host_field():
    own = pod("api", container("app", (8080,), readiness=tcp_probe(8080)), ip="10.244.0.9")
    own["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]["host"] = "10.244.0.9"
    assert [f.id for f in analyse([own], (), {("shop", "api"): [listen(8080, "10.244.0.9")]}).findings] == []
    assert by_id(analyse([own], (), {("shop", "api"): [listen(8080, "10.244.0.7")]}), "probe-not-listening")
    elsewhere = pod("api", container("app", (), readiness=tcp_probe(5432, host="db.example")))
    assert analyse([elsewhere], (), {("shop", "api"): []}).findings == []  # another host: not the pod's sockets


def test_listener_on_another_address_does_not_take_the_probe():
    p = not_ready_pod(container("app", (), readiness=tcp_probe(8080)), ip="10.244.0.9")
    f = one(analyse([p], (), {("shop", "api"): [listen(8080, "10.1.2.3")]}), "probe-not-listening")
    assert f.evidence["bound_to"] == ["10.1.2.3"] and "at 10.244.0.9" in f.title


def test_v6only_wildcard_does_not_take_an_ipv4_probe():
    p = not_ready_pod(container("app", (), readiness=tcp_probe(8080)))
    assert by_id(analyse([p], (), {("shop", "api"): [listen(8080, "::", v6only=True)]}), "probe-not-listening")
    assert by_id(analyse([p], (), {("shop", "api"): [listen(8080, "::", v6only=False)]}), "probe-not-listening") == []
    assert by_id(analyse([p], (), {("shop", "api"): [listen(8080, "::")]}), "probe-not-listening") == []


def test_exec_probes_stopped_containers_and_unread_sockets_are_not_judged():
    exec_probe = {"exec": {"command": ["true"]}}
    p = pod("api", container("app", (), readiness=exec_probe))
    assert analyse([p], (), {("shop", "api"): []}).findings == []
    down = pod("api", container("app", (), liveness=tcp_probe(8080)), statuses=[crashing("app")])
    assert by_id(analyse([down], (), {("shop", "api"): []}), "probe-not-listening") == []
    unread = not_ready_pod(container("app", (), readiness=tcp_probe(8080)))
    assert by_id(analyse([unread], (), {}), "probe-not-listening") == []
