"""TARGET words to kinds, and the pod-spec logic that picks containers and pods:
pure functions on plain pod dicts, no cluster."""

from __future__ import annotations

import pytest
from sockdebug_plugin.errors import EXIT_TARGET, EXIT_USAGE, TargetError, UsageError
from sockdebug_plugin.targets import (
    DEFAULT_CONTAINER_ANNOTATION,
    TargetRef,
    check_running,
    container_ids,
    parse_target,
    pick_container,
    running_pods,
    workload_selector,
)


def pod(name="api", containers=("app", "sidecar"), annotations=None, phase="Running", statuses=None,
        created="2026-01-01T00:00:00Z", deleting=False, **status_extra):
    meta = {"name": name, "namespace": "prod", "creationTimestamp": created}
    if annotations is not None:
        meta["annotations"] = annotations
    if deleting:
        meta["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    status = {"phase": phase, **status_extra}
    if statuses is not None:
        status["containerStatuses"] = statuses
    return {"metadata": meta, "spec": {"containers": [{"name": c, "image": "x"} for c in containers]},
            "status": status}


def running(name, cid=None):
    return {"name": name, "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}},
            **({"containerID": cid} if cid else {})}


# --- parse_target ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kind", "name"), [
    ("pod/x", "pod", "x"),
    ("pods/x", "pod", "x"),
    ("po/x", "pod", "x"),
    ("x", "pod", "x"),
    ("api-7d9f8-abcde", "pod", "api-7d9f8-abcde"),
    ("deploy/api", "deployments", "api"),
    ("deployment/api", "deployments", "api"),
    ("deployments/api", "deployments", "api"),
    ("Deploy/Api", "deployments", "Api"),  # kinds are case-insensitive, names are not touched
    ("sts/db", "statefulsets", "db"),
    ("statefulset/db", "statefulsets", "db"),
    ("ds/agent", "daemonsets", "agent"),
    ("daemonset/agent", "daemonsets", "agent"),
    ("rs/api-7d9f8", "replicasets", "api-7d9f8"),
    ("replicaset/api-7d9f8", "replicasets", "api-7d9f8"),
    ("job/migrate", "jobs", "migrate"),
    ("jobs/migrate", "jobs", "migrate"),
    ("svc/web", "service", "web"),
    ("service/web", "service", "web"),
    ("services/web", "service", "web"),
    ("node/worker-1", "node", "worker-1"),
    ("no/worker-1", "node", "worker-1"),
])
def test_parse_target_kinds(text, kind, name):
    assert parse_target(text) == TargetRef(kind, name)


@pytest.mark.parametrize("text", ["cronjob/x", "configmap/x", "ingress/x", "a/b/c", "/x", "rc/x"])
def test_parse_target_rejects_unsupported_kinds(text):
    with pytest.raises(UsageError) as err:
        parse_target(text)
    kind = text.partition("/")[0]
    assert repr(kind) in err.value.cause  # the offending kind is named
    assert "deploy/" in err.value.hint and "svc/" in err.value.hint and "node/" in err.value.hint
    assert err.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize("text", ["pod/", "deploy/", "deployment/", "sts/", "ds/", "rs/", "job/", "svc/",
                                  "service/", "node/", "deploy/a/b", "pod/a/"])
def test_parse_target_rejects_empty_or_nested_names(text):
    with pytest.raises(UsageError) as err:
        parse_target(text)
    assert repr(text) in err.value.cause
    assert "KIND/NAME" in err.value.hint


def test_parse_target_empty():
    with pytest.raises(UsageError, match="no target"):
        parse_target("")


# --- pick_container ----------------------------------------------------------------------

def test_pick_container_flag_wins_over_annotation():
    p = pod(annotations={DEFAULT_CONTAINER_ANNOTATION: "sidecar"})
    assert pick_container(p, "app") == "app"


def test_pick_container_default_container_annotation():
    assert pick_container(pod(annotations={DEFAULT_CONTAINER_ANNOTATION: "sidecar"}), None) == "sidecar"


def test_pick_container_first_container():
    assert pick_container(pod(), None) == "app"
    assert pick_container(pod(annotations={}), None) == "app"
    assert pick_container(pod(containers=("only",)), None) == "only"


def test_pick_container_annotation_naming_a_missing_container_falls_back_to_the_first():
    assert pick_container(pod(annotations={DEFAULT_CONTAINER_ANNOTATION: "gone"}), None) == "app"


def test_pick_container_unknown_lists_existing():
    with pytest.raises(TargetError) as err:
        pick_container(pod(), "db")
    assert "'db'" in err.value.cause and "api" in err.value.cause
    assert err.value.hint == "containers: app, sidecar"
    assert err.value.exit_code == EXIT_TARGET


def test_pick_container_never_picks_an_init_container():
    p = pod(containers=("app",))
    p["spec"]["initContainers"] = [{"name": "init", "image": "x"}]
    assert pick_container(p, None) == "app"
    with pytest.raises(TargetError):
        pick_container(p, "init")


# --- check_running -----------------------------------------------------------------------

def test_check_running_ok():
    check_running(pod(statuses=[running("app"), running("sidecar")]), "app")
    check_running(pod(), "app")  # no container statuses yet: the phase decides


@pytest.mark.parametrize("phase", ["Pending", "Succeeded", "Failed", "Unknown"])
def test_check_running_pod_phase(phase):
    with pytest.raises(TargetError) as err:
        check_running(pod(phase=phase), "app")
    assert f"pod api is {phase}, not Running" == err.value.cause
    assert err.value.hint


def test_check_running_without_phase():
    p = pod()
    del p["status"]["phase"]
    with pytest.raises(TargetError, match="not running"):
        check_running(p, "app")


def test_check_running_container_waiting_names_the_reason():
    statuses = [{"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}},
                running("sidecar")]
    with pytest.raises(TargetError) as err:
        check_running(pod(statuses=statuses), "app")
    assert err.value.cause == "container app of pod api is waiting CrashLoopBackOff"
    assert "-c" in err.value.hint
    check_running(pod(statuses=statuses), "sidecar")  # the other container is fine


def test_check_running_container_terminated_and_unknown():
    statuses = [{"name": "app", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}},
                {"name": "sidecar"}]
    with pytest.raises(TargetError, match=r"^container app of pod api is terminated Completed$"):
        check_running(pod(statuses=statuses), "app")
    with pytest.raises(TargetError, match=r"^container sidecar of pod api is unknown$"):
        check_running(pod(statuses=statuses), "sidecar")


# --- workload_selector -------------------------------------------------------------------

def workload(selector, kind="Deployment"):
    return {"kind": kind, "metadata": {"name": "api"}, "spec": {"selector": selector}}


def test_workload_selector_match_labels_sorted():
    assert workload_selector(workload({"matchLabels": {"tier": "web", "app": "api"}})) == "app=api,tier=web"


def test_workload_selector_match_expressions():
    sel = {"matchLabels": {"app": "api"}, "matchExpressions": [
        {"key": "env", "operator": "In", "values": ["prod", "staging"]},
        {"key": "track", "operator": "NotIn", "values": ["canary"]},
        {"key": "owner", "operator": "Exists"},
        {"key": "legacy", "operator": "DoesNotExist"},
    ]}
    assert workload_selector(workload(sel)) == ("app=api,env in (prod,staging),track notin (canary),owner,"
                                                "!legacy")


def test_workload_selector_expressions_only():
    sel = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}]}
    assert workload_selector(workload(sel)) == "app in (api)"


@pytest.mark.parametrize("selector", [None, {}, {"matchLabels": {}}, {"matchExpressions": []}])
def test_workload_selector_empty(selector):
    with pytest.raises(TargetError, match=r"^Deployment api has no pod selector$"):
        workload_selector(workload(selector))


# --- running_pods ------------------------------------------------------------------------

def test_running_pods_oldest_first_then_by_name_and_only_live():
    pods = [
        pod("c", created="2026-01-03T00:00:00Z"),
        pod("b", created="2026-01-01T00:00:00Z"),
        pod("a", created="2026-01-01T00:00:00Z"),
        pod("pending", phase="Pending", created="2025-01-01T00:00:00Z"),
        pod("done", phase="Succeeded", created="2025-01-01T00:00:00Z"),
        pod("terminating", deleting=True, created="2025-01-01T00:00:00Z"),
        pod("d", created="2026-01-02T00:00:00Z"),
    ]
    assert [p["metadata"]["name"] for p in running_pods(pods)] == ["a", "b", "d", "c"]
    assert running_pods([]) == []
    assert running_pods([pod("x", phase="Pending")]) == []


# --- container_ids -----------------------------------------------------------------------

def test_container_ids_every_kind_of_status():
    a, b, c, d = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
    p = pod(statuses=[running("app", f"containerd://{a}"), running("sidecar", f"cri-o://{b}")],
            initContainerStatuses=[{"name": "init", "containerID": f"docker://{c}"}],
            ephemeralContainerStatuses=[{"name": "sockdebug-abc123", "containerID": f"containerd://{d}"},
                                        {"name": "sockdebug-starting"}])
    assert container_ids(p) == {a: "app", b: "sidecar", c: "init", d: "sockdebug-abc123"}


def test_container_ids_no_status():
    assert container_ids({"metadata": {"name": "x"}}) == {}
    assert container_ids(pod(statuses=[{"name": "app", "containerID": ""}])) == {}
