"""rules/policies.py: NetworkPolicies selecting a pod (matchLabels, matchExpressions, {})
against its Service ports, declared ports and listeners; named ports, endPort ranges,
protocols, policyTypes; no policy, egress-only and hostNetwork pods say nothing."""

from __future__ import annotations

import pytest
from sockdebug_plugin import podspec
from sockdebug_plugin.rules.policies import admits
from test_findings_kit import analyse, by_id, container, ids, listen, objs, one, pod, policy, svc

WEB = {"app": "web", "tier": "front"}


def web_pod(*extra_ports, **kw):
    return pod("web", container("app", ({"name": "http", "containerPort": 8080}, {"name": "metrics",
                                                                                 "containerPort": 9090},
                                        *extra_ports)), labels=WEB, **kw)


def run(policies, listeners=None, services=(), p=None):
    p = p or web_pod()
    return analyse([p], services, {("shop", "web"): listeners if listeners is not None else [listen(8080),
                                                                                             listen(9090)]},
                   network_policies=policies)


SERVICE = svc("web", {"app": "web"}, {"name": "http", "port": 80, "targetPort": "http"})


def test_a_policy_admitting_only_one_of_two_service_ports():
    s = svc("web", {"app": "web"}, {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090, "targetPort": 9090})
    allow_http = policy("allow-http", {"matchLabels": {"app": "web"}}, {"ports": [{"port": "http"}]})
    report = run([allow_http], services=[s])
    assert ids(report) == [("networkpolicy-blocks-port", "warning")]
    f = report.findings[0]
    assert f.evidence["port"] == 9090 and "where Service web port metrics 9090 sends traffic" in f.title
    assert objs(f, "NetworkPolicy") == [("allow-http", None, "selects the pod")]
    assert objs(f, "Service") == [("web", None, "targets the port")]
    assert f.evidence["policies"] == [{"name": "allow-http", "admits": ["TCP http (8080)"]}]


def test_default_deny_blocks_every_declared_port():
    deny = policy("default-deny", {}, types=["Ingress"])
    report = run([deny], services=[SERVICE])
    assert ids(report) == [("networkpolicy-blocks-port", "warning")] * 2
    port = {f.evidence["port"]: f for f in report.findings}
    assert sorted(port) == [8080, 9090]
    assert port[9090].evidence["declared_by"] == ["app"] and "which container app declares" in port[9090].title
    assert port[8080].evidence["policies"] == [{"name": "default-deny", "admits": ["nothing (no ingress rules)"]}]


def test_rules_without_ports_or_with_all_ports_of_a_protocol_admit():
    assert run([policy("all", {}, {"from": [{"podSelector": {}}]})]).findings == []
    assert run([policy("tcp", {}, {"ports": [{"protocol": "TCP"}]})]).findings == []
    udp_only = run([policy("udp", {}, {"ports": [{"protocol": "UDP", "port": 8080}]})])
    assert [f.evidence["port"] for f in by_id(udp_only, "networkpolicy-blocks-port")] == [8080, 9090]


def test_end_port_ranges():
    assert run([policy("range", {}, {"ports": [{"port": 8000, "endPort": 9999}]})]).findings == []
    report = run([policy("range", {}, {"ports": [{"port": 8000, "endPort": 9000}]})])
    assert [f.evidence["port"] for f in report.findings] == [9090]
    assert report.findings[0].evidence["policies"][0]["admits"] == ["TCP 8000-9000"]


def test_the_union_of_several_policies():
    a = policy("a", {"matchLabels": {"app": "web"}}, {"ports": [{"port": 8080}]})
    b = policy("b", {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]},
               {"ports": [{"port": "metrics"}]})
    assert run([a, b]).findings == []
    assert [f.evidence["port"] for f in run([a]).findings] == [9090]


@pytest.mark.parametrize("selector, selected", [
    ({}, True),
    ({"matchLabels": {"app": "web"}}, True),
    ({"matchLabels": {"app": "db"}}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "edge"]}]}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, False),
    ({"matchExpressions": [{"key": "canary", "operator": "NotIn", "values": ["true"]}]}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
    ({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "Bogus"}]}, False),
])
def test_pod_selectors(selector, selected):
    assert podspec.label_selector_matches(selector, WEB) is selected
    assert bool(run([policy("deny", selector)]).findings) is selected


def test_policies_that_do_not_restrict_ingress_or_do_not_apply():
    egress = policy("egress-only", {}, types=["Egress"])
    other_ns = policy("deny", {}, ns="elsewhere")
    assert run([egress, other_ns]).findings == []
    assert run([]).findings == []
    host = pod("web", container("app", (8080,)), labels=WEB, host_network=True)
    assert analyse([host], (), {("shop", "web"): [listen(8080)]},
                   network_policies=[policy("deny", {})]).findings == []


def test_listeners_no_rule_admits_are_info():
    allow = policy("allow-http", {}, {"ports": [{"port": 8080}, {"port": 9090}]})
    report = run([allow], [listen(8080), listen(9090), listen(7000, container="sidecar", pid=11),
                           listen(7001, "127.0.0.1"), listen(45000, proto="udp")])
    f = one(report, "networkpolicy-blocks-listener")
    assert f.severity == "info" and "7000/TCP" in f.title and objs(f) == [("web", "sidecar", None)]
    assert [e["listener"] for e in f.evidence["listeners"]] == ["tcp 0.0.0.0:7000"]


def test_named_port_in_a_policy_matches_any_container_with_the_protocol():
    p = pod("web", container("app", (8080,)), container("dns", ({"name": "dns", "containerPort": 53,
                                                                 "protocol": "UDP"},)), labels=WEB)
    assert admits(p, policy("x", {}, {"ports": [{"port": "dns", "protocol": "UDP"}]}), 53, "UDP")
    assert not admits(p, policy("x", {}, {"ports": [{"port": "dns"}]}), 53, "UDP")  # TCP by default
    assert not admits(p, policy("x", {}, {"ports": [{"port": "nope"}]}), 8080, "TCP")
