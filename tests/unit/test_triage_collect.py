"""What triage and sweep read from the API and the agents, mapped into the engine's
``ClusterInput``, on the API double replaying answers recorded on the local cluster
(data/api/triage.json: redis never Ready behind a Service, a pod restarted by its liveness
probe, a NetworkPolicy): the lists, once each; a kind that may not be listed degrading to
a note; a pod that is down read through an agent without a target; ``--fail-on`` alike in
both commands.  The features themselves are proven on the real cluster (tests/e2e)."""

from __future__ import annotations

import json

import pytest
from kube_double import TRIAGE, ApiDouble, patched
from sockdebug_plugin import collect, engine
from sockdebug_plugin.view import ClusterInput
from test_plugin_commands import run


@pytest.fixture
def api(monkeypatch, tmp_path) -> ApiDouble:
    double = patched(monkeypatch, tmp_path)
    double.add_triage()
    return double


@pytest.fixture
def seen(monkeypatch) -> list[ClusterInput]:
    """Every ClusterInput the engine is handed."""
    got: list[ClusterInput] = []
    analyse = engine.analyse

    def spy(data, rules=None):
        got.append(data)
        return analyse(data, rules)

    monkeypatch.setattr(engine, "analyse", spy)
    return got


def lists(api: ApiDouble) -> list[str]:
    return [path for method, path in api.calls if method == "GET"]


# --- collect.read --------------------------------------------------------------------------------

def test_each_kind_is_listed_once_for_the_namespace_in_scope(api):
    r = collect.read(api.kube(), ["shop"])
    assert [len(x) for x in (r.services, r.endpoint_slices, r.network_policies, r.nodes, r.pods)] == [1, 1, 1, 1, 2]
    assert {e["involvedObject"]["kind"] for e in r.events} == {"Pod"} and len(r.events) == len(
        TRIAGE["events"]["body"]["items"])
    assert r.not_listed == {} and r.notes == []
    assert sorted(lists(api)) == sorted([
        "/api/v1/services", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
        "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies", "/api/v1/namespaces/shop/events",
        "/api/v1/nodes", "/api/v1/pods"])


def test_a_kind_that_may_not_be_listed_is_left_out_with_a_note(api):
    api.denied = {"endpointslices", "networkpolicies", "events", "nodes"}
    r = collect.read(api.kube(), ["shop"])
    assert r.endpoint_slices == r.network_policies == r.events == r.nodes == []
    assert r.not_listed == {kind: f"no permission to list {kind} (see docs/rbac.md)"
                            for kind in ("endpointslices", "networkpolicies", "events", "nodes")}
    assert len(r.services) == 1 and len(r.pods) == 2


def test_pods_and_services_fall_back_to_the_namespace_when_the_cluster_is_forbidden(api):
    api.denied_wide = {"pods", "services"}
    r = collect.read(api.kube(), ["shop"])
    assert len(r.pods) == 2 and len(r.services) == 1 and r.not_listed == {}
    assert sorted(r.notes) == [f"{kind}: only namespace shop could be listed (no permission to list {kind} (see "
                               "docs/rbac.md) cluster-wide)" for kind in ("pods", "services")]


def test_the_failed_run_of_a_restarted_container_is_read():
    api = ApiDouble()
    api.add_triage()
    pods = [p for (_, name), p in api.pods.items()]
    logs = collect.failed_run_logs(api.kube(), pods)
    assert list(logs) == [("shop", "liveness", "app")]
    assert '"type": "ready"' in logs["shop", "liveness", "app"]


# --- triage: collection -> ClusterInput -> report ---------------------------------------------------

def test_triage_of_a_pod_maps_its_view_and_names_the_probe_the_address_and_the_service(api, capsys, seen):
    code, out, err = run(capsys, "triage", "pod/redis", "-n", "shop", "-o", "json")
    assert code == 0, err
    (data,) = seen
    assert [p["metadata"]["name"] for p in data.pods] == ["redis"]
    assert {p["metadata"]["name"] for p in data.context_pods} == {"redis", "liveness"}
    assert {e["involvedObject"]["name"] for e in data.events} == {"redis"}  # the pod's own (by uid)
    assert data.logs == {} and data.uninspected == {} and data.not_listed == {}
    obs = data.observed["shop", "redis"]
    assert sorted((s.local_address, s.local_port, s.processes[0]["container"]) for s in obs.sockets) == [
        ("127.0.0.1", 6379, "redis"), ("::1", 6379, "redis")]
    assert obs.limits.counters["Tcp"]["OutRsts"] > 0 and {f.id for f in obs.findings} >= {"no-default-route"}
    doc = json.loads(out)
    assert doc["kind"] == "TriageReport" and doc["summary"]["pods"] == doc["summary"]["inspected"] == 1
    probe = next(f for f in doc["findings"] if f["id"] == "probe-loopback-only")
    assert probe["severity"] == "critical"
    assert {(o["kind"], o["name"], o.get("role")) for o in probe["objects"]} == {
        ("Pod", "redis", "probe fails"), ("Service", "redis", "not a ready endpoint")}
    assert probe["evidence"]["addresses"] == ["127.0.0.1", "::1"]
    assert probe["evidence"]["pod_conditions"]["Ready"] == "False"
    assert probe["evidence"]["endpoints"] == [{"service": "redis", "ready": False, "slices": [
        TRIAGE["endpointslices"]["body"]["items"][0]["metadata"]["name"]], "ready_endpoints": 0}]
    assert any("Readiness probe failed" in e for e in probe["evidence"]["events"])
    assert set(probe["evidence"]["explains"]) == {"loopback-only-listener", "pod-not-ready"}
    (item,) = doc["items"]
    assert item["target"]["container"] == "redis" and item["connections"] == [] and "summary" in item


def test_a_pod_that_is_down_is_read_through_an_agent_without_a_target(api, capsys, seen):
    code, out, err = run(capsys, "triage", "pod/liveness", "-n", "shop")
    assert code == 0, err
    (agent,) = api.agents("shop", "liveness")
    assert "targetContainerName" not in agent  # app crash-loops: an agent next to it would die with it
    (data,) = seen
    assert list(data.observed) == [("shop", "liveness")]
    assert list(data.logs) == [("shop", "liveness", "app")]
    assert "CRITICAL  pod liveness: container app crash-loops" in out
    assert "the kubelet kills it because its liveness probe fails (Liveness probe failed" in out
    assert "not seen: pod/liveness: no container runs steadily" in out
    assert "# pod/liveness -n shop (no container: its network namespace): summary" in out


def test_a_kind_that_may_not_be_listed_degrades_to_a_note_in_the_report(api, capsys):
    api.denied = {"endpointslices", "networkpolicies", "events", "nodes"}
    code, out, err = run(capsys, "triage", "pod/redis", "-n", "shop", "-o", "yaml")
    assert code == 0, err
    import yaml

    doc = yaml.safe_load(out)
    assert doc["not_seen"] == [f"{kind}: not listed (no permission to list {kind} (see docs/rbac.md))"
                               for kind in ("endpointslices", "events", "networkpolicies", "nodes")]
    probe = next(f for f in doc["findings"] if f["id"] == "probe-loopback-only")
    assert probe["severity"] == "critical"  # the pod's status still confirms it
    assert probe["evidence"]["events"] == [] and probe["evidence"]["endpoints"][0]["slices"] == []


def test_fail_on_is_the_same_in_triage_and_sweep(api, capsys):
    tri = run(capsys, "triage", "pod/redis", "-n", "shop", "--fail-on", "critical")
    swe = run(capsys, "sweep", "-n", "shop", "-l", "app=redis", "--fail-on", "critical")
    assert tri[0] == swe[0] == 1
    assert tri[2].splitlines()[-2:] == swe[2].splitlines()[-2:] == [
        "error: 1 finding(s) at or above critical", "hint: see the findings above"]
    assert run(capsys, "triage", "pod/redis", "-n", "shop", "--fail-on", "critical", "-o", "json")[0] == 1
    assert run(capsys, "sweep", "-n", "shop", "-l", "app=nothing", "--fail-on", "info")[0] == 0


# --- inspect: the peer lists ------------------------------------------------------------------------

PEER_LISTS = {"/api/v1/pods", "/api/v1/services", "/api/v1/nodes"}


def test_inspect_reads_the_peer_lists_only_when_connections_can_be_shown(api, capsys):
    api.add_pod()
    assert run(capsys, "pod/api", "-n", "shop", "--listening")[0] == 0
    assert not PEER_LISTS & set(lists(api))
    assert run(capsys, "pod/api", "-n", "shop", "-a", "--no-peers")[0] == 0
    assert not PEER_LISTS & set(lists(api))
    code, out, err = run(capsys, "pod/api", "-n", "shop", "-a", "-o", "json")
    assert code == 0, err
    assert all(s["peer"] is None for s in json.loads(out)["items"][0]["sockets"])  # listeners: nothing to name


def test_a_peer_list_that_may_not_be_read_is_a_note_not_an_error(api, capsys):
    from sockdebug_plugin import collect as c

    api.denied, api.denied_wide = {"nodes"}, {"pods"}
    listed = c.read_for_peers(api.kube(), "shop")
    assert len(listed.pods) == 2 and len(listed.services) == 1 and listed.nodes == []
    assert listed.notes == [
        "pods: only namespace shop could be listed (no permission to list pods (see docs/rbac.md) cluster-wide)",
        "nodes: not listed (no permission to list nodes (see docs/rbac.md)): nodes are not named"]
    assert ("GET", "/api/v1/pods") in api.calls and ("GET", "/api/v1/namespaces/shop/pods") in api.calls


def test_a_second_triage_of_a_pod_execs_warm_and_still_reads_the_api(api, capsys, tmp_path):
    from test_plugin_commands import ANSWER, fake_kubectl

    api.add_pod()
    code, _, err = run(capsys, "triage", "pod/api", "-n", "shop")
    assert code == 0, err
    agents = {c["targetContainerName"]: c["name"] for c in api.agents()}
    fake_kubectl(tmp_path, ANSWER)
    (tmp_path / "bin" / "kubectl.sidecars").write_text(agents.get("sidecar", "-"))
    patches = sum(1 for m, p in api.calls if m == "PATCH")
    code, out, err = run(capsys, "triage", "pod/api", "-n", "shop")
    assert code == 0, err
    execs = (tmp_path / "bin" / "kubectl.log").read_text().splitlines()
    assert any(e.endswith("sockdebug-agent triage") for e in execs)  # started before the client was imported
    assert sum(1 for m, p in api.calls if m == "PATCH") == patches  # no new agent
    assert ("GET", "/api/v1/services") in api.calls and out.startswith("# pod/api -n shop: findings")


def test_a_service_target_is_triaged_pod_by_pod(api, capsys, seen):
    api.pods["shop", "liveness"]["metadata"]["labels"] = {"app": "redis"}  # a second pod behind the Service
    code, out, err = run(capsys, "triage", "svc/redis", "-n", "shop", "-o", "json")
    assert code == 0, err
    (data,) = seen
    assert sorted(p["metadata"]["name"] for p in data.pods) == ["liveness", "redis"]
    assert {e["involvedObject"]["name"] for e in data.events} == {"redis", "liveness"}  # the namespace's, once
    doc = json.loads(out)
    assert doc["summary"]["pods"] == doc["summary"]["inspected"] == 2
    assert {f["id"] for f in doc["findings"]} >= {"probe-loopback-only", "container-crash-looping"}
    assert sorted(i["target"]["name"] for i in doc["items"]) == ["liveness", "redis"]
