"""plugin/findings.py and plugin/engine.py: one order, the suppression pass (subjects,
severity, transitivity), per-pod findings joined per Service port, --fail-on, the agent's
findings merged, node targets, and the one renderer."""

from __future__ import annotations

import io
import json
import random

import pytest
import yaml
from sockdebug_plugin import findings, flags
from sockdebug_plugin.errors import FindingsError, UsageError
from sockdebug_plugin.findings import Finding
from sockdebug_plugin.rules import RULES, SUPPRESSES
from sockdebug_plugin.view import NodeObservation
from test_findings_kit import (
    NODE,
    agent_finding,
    analyse,
    by_id,
    container,
    crashing,
    ids,
    listen,
    objs,
    one,
    pod,
    running,
    svc,
    tcp_probe,
)


def f(fid: str, severity: str = "warning", about=(), name: str = "p") -> Finding:
    return Finding(fid, severity, f"{fid} on {name}", [findings.pod_obj(("ns", name))], "why", "fix", {},
                   about=frozenset(about))


PORT = ("port", "ns", "p", 8080, "TCP")
READY = ("ready", "ns", "p", "app")


# --- order -----------------------------------------------------------------------------------------

def test_order_is_severity_then_id_then_objects():
    found = [f("b", "info"), f("a", "warning", name="z"), f("a", "warning", name="a"), f("c", "critical")]
    assert [(x.id, x.objects[0]["name"]) for x in findings.order(found)] == [
        ("c", "p"), ("a", "a"), ("a", "z"), ("b", "p")]


def test_the_engine_output_does_not_depend_on_input_order():
    pods = [pod(f"api-{i}", container("app", (8080, 9000)), labels={"app": "api"}) for i in range(6)]
    sockets = {("shop", f"api-{i}"): [listen(8080, "127.0.0.1" if i % 2 else "0.0.0.0"), listen(7000 + i)]
               for i in range(6)}
    services = [svc("api", {"app": "api"}, {"port": 80, "targetPort": 8080})]
    first = analyse(pods, services, sockets).findings
    shuffled = pods[:]
    random.Random(7).shuffle(shuffled)
    assert analyse(shuffled, services, dict(reversed(list(sockets.items())))).findings == first
    assert [x.severity for x in first] == sorted((x.severity for x in first), key=lambda s: -findings.RANK[s])


# --- suppression ------------------------------------------------------------------------------------

def test_a_finding_is_dropped_when_every_subject_is_explained_by_a_rule_that_says_so():
    explainer = f("service-port-not-listening", "critical", {PORT})
    victim = f("declared-port-not-listening", "warning", {PORT})
    out = findings.suppress([victim, explainer], SUPPRESSES)
    assert out == [explainer._replace(evidence={"explains": ["declared-port-not-listening"]})]


def test_suppression_needs_the_relation_every_subject_and_no_more_severe_victim():
    explainer = f("service-port-not-listening", "critical", {PORT})
    assert len(findings.suppress([explainer, f("undeclared-listener", "info", {PORT})], SUPPRESSES)) == 2
    partly = f("pod-not-ready", "warning", {READY, ("ready", "ns", "p", "side")})
    crash = f("container-crash-looping", "critical", {READY})
    assert len(findings.suppress([crash, partly], SUPPRESSES)) == 2
    warning_probe = f("probe-not-listening", "warning", {PORT})
    critical = f("service-port-not-listening", "critical", {PORT})
    assert len(findings.suppress([warning_probe, critical], SUPPRESSES)) == 2
    assert findings.suppress([f("x", about={PORT})], SUPPRESSES) == [f("x", about={PORT})]


def test_suppression_is_transitive():
    conflict = f("container-port-conflict", "critical", {("crash", "ns", "p", "b"), ("ready", "ns", "p", "b")})
    crash = f("container-crash-looping", "critical", {("crash", "ns", "p", "b"), ("ready", "ns", "p", "b")})
    not_ready = f("pod-not-ready", "warning", {("ready", "ns", "p", "b")})
    out = findings.suppress([not_ready, crash, conflict], SUPPRESSES)
    assert [x.id for x in out] == ["container-port-conflict"]
    assert out[0].evidence["explains"] == ["container-crash-looping", "pod-not-ready"]


def test_every_suppression_names_a_known_rule():
    known = set(RULES)
    for rule in RULES.values():
        assert set(rule.suppresses) <= known, rule.id
        assert rule.id not in rule.suppresses


# --- per-pod findings joined per Service port --------------------------------------------------------

def test_a_service_finding_joins_its_pods_and_loses_only_the_explained_one():
    pods = [pod(n, container("app", (8080,), ("--listen", ":8080")), labels={"app": "api"}) for n in "abc"]
    pods.append(pod("d", container("app", (8080,), ("--listen", ":8080")), container("side", (8080,)),
                    labels={"app": "api"}, statuses=[running("app"), crashing("side")]))
    sockets = {("shop", n): [listen(9090)] for n in "abc"}
    sockets["shop", "d"] = [listen(9090)]
    s = svc("api", {"app": "api"}, {"port": 80, "targetPort": 8080})
    report = analyse(pods, [s], sockets, logs={("shop", "d", "side"): "bind: address already in use"})
    f_svc = one(report, "service-port-not-listening")
    assert objs(f_svc) == [("a", None, "not listening"), ("b", None, "not listening"), ("c", None, "not listening")]
    assert "nothing listens there in 3 of 4 selected pod(s)" in f_svc.title
    assert sorted(f_svc.evidence["pods"]) == ["shop/a", "shop/b", "shop/c"]
    assert by_id(report, "container-port-conflict")[0].evidence["explains"] == [
        "container-crash-looping", "declared-port-not-listening", "pod-not-ready", "service-port-not-listening"]


def test_per_pod_findings_of_a_triage_of_one_pod():
    """Triage of one pod of a Service: the finding names that pod, counted among all the
    Service selects (the others are context, not inspected)."""
    pods = [pod(n, container("app", (8080,)), labels={"app": "api"}) for n in "abc"]
    s = svc("api", {"app": "api"}, {"port": 80, "targetPort": 8081})
    report = analyse(pods[:1], [s], {("shop", "a"): [listen(8080)]}, context_pods=pods[1:])
    f_svc = one(report, "service-port-not-listening")
    assert objs(f_svc) == [("a", None, "not listening")] and "in 1 of 3 selected pod(s)" in f_svc.title


# --- --fail-on ---------------------------------------------------------------------------------------

def test_fail_on():
    found = [f("a", "warning"), f("b", "info")]
    findings.fail_on(found, None)
    findings.fail_on(found, "critical")
    with pytest.raises(FindingsError) as exc:
        findings.fail_on(found, "info")
    assert exc.value.cause == "2 finding(s) at or above info" and exc.value.exit_code == 1
    assert findings.at_or_above(found, "warning") == found[:1]
    flags.check_choice(flags.FAIL_ON, "warning")  # the one check of --fail-on's value (options.py)
    with pytest.raises(UsageError):
        flags.check_choice(flags.FAIL_ON, "error")
    assert findings.FAIL_ON == ("critical", "warning", "info")


# --- the agent's findings ----------------------------------------------------------------------------

def test_agent_findings_merge_into_the_model():
    p = pod("api", container("app", (8080,)))
    close_wait = agent_finding("close-wait-leak", "critical", pid=10, close_wait=120)
    report = analyse([p], (), {("shop", "api"): [listen(8080)]}, agent={("shop", "api"): [close_wait]})
    f_cw = one(report, "close-wait-leak")
    assert f_cw.fix == "next step `cmd`" and f_cw.objects == [{"kind": "Pod", "namespace": "shop", "name": "api"}]
    assert f_cw.evidence == {"pid": 10, "close_wait": 120} and f_cw.severity == "critical"


def test_the_agents_loopback_finding_is_judged_with_the_spec():
    p = pod("api", container("app", (8080,), readiness=tcp_probe(8081)), container("envoy"))
    sockets = [listen(8080, "127.0.0.1"), listen(8081), listen(15000, "127.0.0.1", container="envoy", pid=20)]
    agent = [agent_finding("loopback-only-listener", port=8080, processes=[]),
             agent_finding("loopback-only-listener", port=15000, processes=[])]
    agent[1] = agent[1]._replace(explanation="an unknown process accepts connections on port 15000 ...")
    report = analyse([p], (), {("shop", "api"): sockets}, agent={("shop", "api"): agent})
    loopback = by_id(report, "loopback-only-listener")
    # port 8080 is declared: the plugin's own finding, objects named; the agent's is dropped
    assert [(x.severity, x.evidence["port"]) for x in loopback] == [("warning", 8080), ("info", 15000)]
    mine = loopback[1]
    assert objs(mine) == [("api", "envoy", "loopback only")] and mine.evidence["containers"] == ["envoy"]
    assert "an unknown process" not in mine.explanation and "container envoy (server/20)" in mine.explanation


def test_node_targets_keep_their_findings():
    p = pod("agent", container("app", (33847,)), host_network=True)
    host = {NODE: NodeObservation([listen(33847, "127.0.0.1", container=None, comm="containerd", pid=5)],
                                  findings=[agent_finding("conntrack-near-max", "critical", percent=95)])}
    report = analyse([], (), {}, context_pods=[p], node_observed=host, scope_nodes=[NODE])
    assert ids(report) == [("conntrack-near-max", "critical"), ("host-port-in-use", "critical")]
    assert report.findings[0].objects == [{"kind": "Node", "name": NODE}]
    assert report.pods == 0 and report.not_seen == []
    assert analyse([], (), {}, scope_nodes=["node-9"]).not_seen == [
        "node/node-9: its own network namespace was not read"]


# --- rendering ---------------------------------------------------------------------------------------

EVIL = "evil\x1b[2J\x07"


def evil_report() -> findings.Report:
    x = Finding("close-wait-leak", "warning", f"title {EVIL}", [findings.pod_obj(("ns", f"p{EVIL}"), EVIL, EVIL)],
                f"why {EVIL}", f"fix {EVIL}", {"comm": EVIL, "list": [EVIL]})
    return findings.Report([x], [findings.Uninspected("ns", f"q{EVIL}", None, EVIL)], 1, 2, [f"events: {EVIL}"])


def test_table_escapes_every_target_supplied_string():
    out = findings.text(evil_report(), {"via": "ephemeral", "elapsed_s": 0.5}, color=True)
    assert "\x1b[2J" not in out and "\x07" not in out
    assert "\x1b[33;1mWARNING\x1b[0m" in out  # only our own colour codes
    assert "evidence: comm=evil\\x1b[2J\\x07" in out and "not seen: events: evil" in out
    assert out.endswith("1 of 2 pods inspected via ephemeral in 0.5s: 0 critical, 1 warning, 0 info")
    assert findings.findings_text([], empty="all good").strip() == "all good"


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_documents(output):
    doc = findings.document(evil_report(), {"via": "node"}, "TriageReport")
    buf = io.StringIO()
    findings.write(doc, output, buf)
    back = json.loads(buf.getvalue()) if output == "json" else yaml.safe_load(buf.getvalue())
    assert back["kind"] == "TriageReport" and back["summary"]["findings"] == {"critical": 0, "warning": 1, "info": 0}
    assert set(back["findings"][0]) == set(findings.FIELDS)  # plumbing (about, group) never rendered
    assert back["findings"][0]["evidence"]["comm"] == EVIL and back["not_seen"] == [f"events: {EVIL}"]
    if output == "json":
        assert "\x1b" not in buf.getvalue()
    with pytest.raises(UsageError):
        findings.write(doc, "table", buf)
