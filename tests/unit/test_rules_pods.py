"""rules/pods.py: pods that are down, judged from spec, status, Events and the failed run's
log alone (no sockets needed), what they say they could not see, and which findings
explain them."""

from __future__ import annotations

import pytest
from test_findings_kit import (
    analyse,
    by_id,
    container,
    crashing,
    endpoint_slice,
    event,
    ids,
    listen,
    objs,
    one,
    pod,
    running,
    svc,
    waiting,
)

LIVENESS_FAILED = 'Liveness probe failed: Get "http://10.244.0.5:8081/healthz": dial tcp 10.244.0.5:8081: ' \
                  "connect: connection refused"


def down(*statuses, **kw):
    names = [s["name"] for s in statuses]
    return pod("api", *[container(n, (8080,) if n == "app" else ()) for n in names], labels={"app": "api"},
               statuses=list(statuses), **kw)


def test_crash_loop_driven_by_the_liveness_probe_from_events_alone():
    p = down(crashing("app", restarts=6, exit_code=137))
    events = [event(p, "Unhealthy", LIVENESS_FAILED, "app", count=18),
              event(p, "Killing", "Container app failed liveness probe, will be restarted", "app", count=6)]
    report = analyse([p], (), {}, events=events, uninspected={("shop", "api"): "no running container"})
    assert ids(report) == [("container-crash-looping", "critical")]  # pod-not-ready is explained by it
    f = report.findings[0]
    assert "liveness probe fails" in f.title and "6 restarts" in f.title
    assert objs(f) == [("api", "app", "crash-looping")]
    assert f.evidence["exit_code"] == 137 and f.evidence["restarts"] == 6
    assert LIVENESS_FAILED + " (x18)" in f.evidence["events"]
    assert f.evidence["not_seen"] == ["sockets: its network namespace was not read (no running container)",
                                      "logs: the failed run of container app was not read"]
    assert f.evidence["explains"] == ["pod-not-ready"]


def test_a_bind_failure_with_no_other_holder_is_the_conflict_rule_s():
    p = down(crashing("app"))
    report = analyse([p], (), {}, logs={("shop", "api", "app"): "Web server failed to start. Port 8080 was already "
                                                                "in use."})
    assert ids(report) == [("container-port-conflict", "critical")]
    assert "because another process in the pod already binds port 8080/TCP" in report.findings[0].title
    assert report.findings[0].evidence["explains"] == ["container-crash-looping", "pod-not-ready"]


@pytest.mark.parametrize("log, reason, says, why", [
    ("listen tcp :80: bind: permission denied", "Error", "its bind is refused", "below 1024"),
    ("PermissionError: [Errno 13] Permission denied (while binding to port 80)", "Error", "its bind is refused",
     "below 1024"),
    ('FATAL: could not bind IPv4 address "0.0.0.0": Permission denied', "Error", "its bind is refused",
     "security module"),  # it wants 8080: not a privileged port
    ("", "OOMKilled", "OOMKilled", "resources.limits.memory"),
    ("KeyError: 'DATABASE_URL'", "Error", "the process exits with code 1 (Error)", "in its log"),
])
def test_crash_causes_from_the_status_and_the_log(log, reason, says, why):
    p = down(crashing("app", reason=reason))
    report = analyse([p], (), {}, logs={("shop", "api", "app"): log})
    f = one(report, "container-crash-looping")
    assert says in f.title and why in f.explanation, (f.title, f.explanation)
    assert f.evidence["log"] == ([log] if log else [])


def test_an_init_container_crash_loop():
    p = pod("api", container("app"), phase="Pending")
    p["spec"]["initContainers"] = [{"name": "migrate", "image": "x"}]
    p["status"]["initContainerStatuses"] = [crashing("migrate")]
    f = one(analyse([p], (), {}), "container-crash-looping")
    assert objs(f) == [("api", "migrate", "crash-looping")]


@pytest.mark.parametrize("reason, says", [("ImagePullBackOff", "cannot pull"), ("CreateContainerConfigError",
                                                                                 "ConfigMap, Secret or key")])
def test_container_that_cannot_start(reason, says):
    p = down(waiting("app", reason, 'secret "db" not found'), phase="Pending")
    f = one(analyse([p], (), {}), "container-not-running")
    assert f.severity == "critical" and reason in f.title and says in f.explanation
    assert 'secret "db" not found' in f.title
    assert analyse([down(waiting("app", "ContainerCreating"), phase="Pending")], (), {}).findings == []


def test_not_ready_pod_out_of_its_service_endpoints():
    p = pod("api-1", container("app", (8080,), readiness={"exec": {"command": ["check"]}}), labels={"app": "api"},
            statuses=[running("app", ready=False)])
    other = pod("api-2", container("app", (8080,)), labels={"app": "api"})
    s = svc("api", {"app": "api"}, {"port": 80, "targetPort": 8080})
    ev = [event(p, "Unhealthy", "Readiness probe failed: database not reachable", "app", count=12)]
    sockets = {("shop", "api-1"): [listen(8080)]}
    report = analyse([p], [s], sockets, events=ev, context_pods=[other],
                     endpoint_slices=[endpoint_slice("api", (p, False), (other, True))])
    f = one(report, "pod-not-ready")
    assert f.severity == "warning" and f.evidence["endpoints"] == [{"service": "api", "ready_endpoints": 1}]
    assert "Readiness probe failed: database not reachable (x12)" in f.title
    assert objs(f) == [("api-1", "app", "not ready")] and objs(f, "Service") == [("api", None, "not a ready endpoint")]
    # the last one: the Service has no ready endpoint left
    report = analyse([p], [s], sockets, events=ev, endpoint_slices=[endpoint_slice("api", (p, False))])
    f = one(report, "pod-not-ready")
    assert f.severity == "critical" and "no ready endpoint left in api" in f.title


def test_not_ready_because_of_a_readiness_gate():
    p = pod("api", container("app"), gates=("example.com/lb-registered",), ready=False)
    p["status"]["conditions"].append({"type": "example.com/lb-registered", "status": "False"})
    f = one(analyse([p], (), {("shop", "api"): []}), "pod-not-ready")
    assert f.evidence["readiness_gates"] == ["example.com/lb-registered"] and f.evidence["unready_containers"] == []


def test_port_conflict_explains_the_crash_and_the_readiness():
    p = pod("dup", container("a", (8080,)), container("b", (8080,)), statuses=[running("a"), crashing("b")],
            ready=False)
    logs = {("shop", "dup", "b"): "OSError: [Errno 98] Address already in use"}
    report = analyse([p], (), {("shop", "dup"): [listen(8080, container="a")]}, logs=logs)
    assert ids(report) == [("container-port-conflict", "critical")]
    assert report.findings[0].evidence["explains"] == ["container-crash-looping", "pod-not-ready"]


def test_a_crash_the_conflict_does_not_explain_stays():
    """Two containers declare one port (both running: a warning) and a third crash-loops
    for another reason: the warning explains nothing about the third."""
    p = pod("api", container("a", (8080,)), container("b", (8080,)), container("c"),
            statuses=[running("a"), running("b"), crashing("c")], ready=False)
    report = analyse([p], (), {("shop", "api"): [listen(8080, container="a")]},
                     logs={("shop", "api", "c"): "panic: no config"})
    assert ids(report) == [("container-crash-looping", "critical"), ("container-port-conflict", "warning")]
    assert by_id(report, "pod-not-ready") == []  # c's crash explains it
