"""rules/ports.py and plugin/view.py: listeners attributed to the container whose process
holds them (a sibling's listener is never "an unknown process"), IPv6 and mapped loopback,
and what the views are built from (Events of both API versions, EndpointSlices without
targetRef, kinds that could not be listed)."""

from __future__ import annotations

from sockdebug_agent.schema import Socket
from sockdebug_plugin.findings import from_agent
from sockdebug_plugin.rules.ports import adapt_agent_loopback
from sockdebug_plugin.view import Listener, event, is_loopback, listeners
from test_findings_kit import (
    agent_finding,
    analyse,
    container,
    crashing,
    endpoint_slice,
    ids,
    listen,
    objs,
    one,
    pod,
    running,
    svc,
    view,
)


def test_a_loopback_listener_held_by_a_sibling_names_that_container():
    p = pod("api", container("app", (8080,)), container("proxy"))
    report = analyse([p], (), {("shop", "api"): [listen(8080, "127.0.0.1", container="proxy", comm="envoy")]})
    f = one(report, "loopback-only-listener")
    assert f.severity == "warning" and objs(f) == [("api", "proxy", "loopback only")]
    assert f.evidence["processes"] == ["envoy/10"]


def test_undeclared_listeners_name_their_containers_or_none_when_owners_were_unreadable():
    p = pod("api", container("app", (8080,)), container("proxy"))
    sockets = [listen(8080), listen(15000, container="proxy", pid=11), listen(7000, container=None, pid=12)]
    f = one(analyse([p], (), {("shop", "api"): sockets}), "undeclared-listener")
    assert objs(f) == [("api", "proxy", None)] and "7000/TCP, 15000/TCP" in f.title
    assert [e["containers"] for e in f.evidence["listeners"]] == [[], ["proxy"]]


def test_ipv6_and_mapped_loopback_behind_a_service_is_critical():
    for address in ("::1", "::ffff:127.0.0.1"):
        p = pod("api", container("app", ({"name": "http", "containerPort": 8080},)), labels={"app": "api"})
        s = svc("api", {"app": "api"}, {"port": 80, "targetPort": "http"})
        report = analyse([p], [s], {("shop", "api"): [listen(8080, address)]})
        assert ids(report) == [("loopback-only-listener", "critical")], address
        assert report.findings[0].evidence["addresses"] == [address]


def test_hostnetwork_pod_behind_a_service_on_the_nodes_loopback_is_critical():
    p = pod("agent", container("app", (9100,)), host_network=True, labels={"app": "agent"})
    s = svc("agent", {"app": "agent"}, {"port": 9100})
    assert ids(analyse([p], [s], {("shop", "agent"): [listen(9100, "127.0.0.1")]})) == [
        ("loopback-only-listener", "critical")]


def test_the_agents_loopback_finding_is_kept_as_it_is_without_the_pods_listeners():
    pv = view([pod("api", container("app", (8080,)))]).pods[0]
    assert pv.listeners is None
    kept = from_agent(agent_finding("loopback-only-listener", port=8080), {"kind": "Pod", "name": "api"})
    assert adapt_agent_loopback(pv, kept) == kept


# --- the views ---------------------------------------------------------------------------------

def test_listeners_are_tcp_listen_and_udp_unconn_with_their_containers():
    est = Socket("inet", "tcp", "ESTAB", 0, 0, "10.0.0.5", 8080, "10.0.0.9", 4000, processes=[])
    unix = Socket("unix", "u_str", "LISTEN", 0, 0, "/run/x.sock", 123, None, 0)
    found = listeners([listen(8080, "::", family="inet6", v6only=True), listen(53, proto="udp", container=None), est,
                       unix])
    assert found == [Listener("TCP", "::", 8080, ("app",), found[0].owners, True, False),
                     Listener("UDP", "0.0.0.0", 53, (), found[1].owners, None, False)]
    assert found[0].processes == ("server/10",) and found[0].text() == "tcp [::]:8080"
    assert not found[0].accepts("10.0.0.5") and found[0].accepts("fd00::5")
    assert is_loopback("127.1.2.3") and is_loopback("::ffff:127.0.0.1") and is_loopback("::1")
    assert not is_loopback("::") and not is_loopback("*") and not is_loopback("10.0.0.1") and not is_loopback(None)


def test_events_of_both_api_versions():
    core = {"involvedObject": {"kind": "Pod", "namespace": "shop", "name": "api",
                               "fieldPath": "spec.containers{app}"},
            "reason": "Unhealthy", "message": "Readiness probe failed: x", "type": "Warning", "count": 3,
            "lastTimestamp": "2025-01-01T00:00:01Z"}
    new = {"regarding": {"kind": "Pod", "namespace": "shop", "name": "api", "fieldPath": "spec.initContainers{init}"},
           "reason": "BackOff", "note": "Back-off restarting", "type": "Warning",
           "series": {"count": 7, "lastObservedTime": "2025-01-01T00:00:02Z"}}
    assert event(core) == (("shop", "api"), event(core)[1]) and event(core)[1].container == "app"
    key, ev = event(new)
    assert key == ("shop", "api") and (ev.container, ev.count, ev.message) == ("init", 7, "Back-off restarting")
    assert event({"involvedObject": {"kind": "Node", "name": "n"}, "message": "m"})[0] is None


def test_endpoint_slices_match_pods_by_target_ref_or_address_and_unlisted_kinds_are_unseen():
    a, b = (pod(n, container("app", (8080,)), labels={"app": "api"}) for n in ("a", "b"))
    s = svc("api", {"app": "api"}, {"port": 80, "targetPort": 8080})
    sl = endpoint_slice("api", (a, True), (b, False))
    del sl["endpoints"][1]["targetRef"]
    v = view([a, b], services=[s], endpoint_slices=[sl])
    assert [(pv.key[1], [e.ready for e in pv.endpoints]) for pv in v.pods] == [("a", [True]), ("b", [False])]
    assert v.services[0].ready_endpoints() == 1
    v = view([a], services=[s], not_listed={"endpointslices": "forbidden", "networkpolicies": "forbidden"})
    pv = v.pods[0]
    assert v.services[0].ready_endpoints() is None and pv.policies is None
    assert pv.unseen == ["sockets: its network namespace was not read (not collected)",
                         "endpointslices: not listed (forbidden)", "networkpolicies: not listed (forbidden)"]


def test_failing_containers_are_known_once_per_pod_with_their_missing_logs():
    p = pod("api", container("app"), container("side"), statuses=[running("app"), crashing("side")])
    pv = view([p], logs={}).pods[0]
    assert list(pv.trouble) == ["side"] and pv.running == {"app"}
    assert "logs: the failed run of container side was not read" in pv.unseen
