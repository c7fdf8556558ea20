"""The connection rules (``triage --events``) on captures made of the kernel's own destroy
messages (data/events.bin) and their variations: each threshold on both sides of it, peers
named through the engine's view, node targets, and docs/triage.md naming every threshold
with its value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sockdebug_agent.inspectors.destroy import destroy_parser, to_event
from sockdebug_agent.netlink import parse_datagram
from sockdebug_agent.schema import Tick
from sockdebug_plugin import engine
from sockdebug_plugin.events import Capture
from sockdebug_plugin.rules import RULES
from sockdebug_plugin.rules.connections import IDS, THRESHOLDS, capture_findings
from sockdebug_plugin.view import ClusterInput, NodeObservation, PodObservation

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[2]


def kernel(close: str, **where) -> object:
    data = (DATA / "events.bin").read_bytes()
    items, _, _ = parse_datagram(data, len(data), 0, destroy_parser())
    return next(e for e in (to_event(d, 1.0) for d in items) if e.close == close and e.family == "inet"
                and all(getattr(e, k) == v for k, v in where.items()))


CLEAN = kernel("closed")  # 127.0.0.1:51260 -> 127.0.0.1:7000, lived 344 ms
RESET_IN = kernel("reset", local_port=7002)  # 127.0.0.1:7002 <- :40786, closed with data unread (server side)
FAILED = kernel("failed")  # refused: 0.0.0.0:39930 -> 127.0.0.1:*
TIMEOUT = kernel("timeout")  # 10.99.0.1:48018 -> 10.99.0.5:80


def tick(seconds: float = 10.0, estab_resets: int | None = 0) -> Tick:
    total = {"events": 0, "unmatched": 0, "lost": 0, "resets": 0, "by_netid": {}, "by_state": {}, "by_close": {},
             "kernel": {"estab_resets": estab_resets}}
    return Tick(seconds * 1000, total, total, True, "for")


def clients(e, n: int, **change) -> list:
    """``n`` connections like ``e`` from as many client ports."""
    return [e._replace(peer_port=40000 + i, **change) if e.local_port < 32768 else e._replace(local_port=40000 + i,
                                                                                             **change)
            for i in range(n)]


def findings(events: list, seconds: float = 10.0, estab_resets: int | None = 0, lookup=None) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in capture_findings({"kind": "Pod", "namespace": "shop", "name": "api"},
                              Capture(events, [tick(seconds, estab_resets)]), lookup):
        out.setdefault(f.id, []).append(f)
    return out


# --- resets ---------------------------------------------------------------------------------------------

def test_resets_below_the_threshold_say_nothing():
    assert "connection-resets" not in findings(clients(RESET_IN, 2), estab_resets=2)


def test_three_resets_with_one_peer_are_a_warning_from_the_server_side():
    (f,) = findings(clients(RESET_IN, 3) + clients(CLEAN._replace(local_port=7002), 7), estab_resets=3)[
        "connection-resets"]
    assert f.severity == "warning" and f.title == "3 connections from 127.0.0.1 reset in 10 s"
    assert f.evidence["direction"] == "in" and f.evidence["port"] == 7002 and f.evidence["connections"] == 10


def test_resets_that_are_most_of_a_peers_connections_are_critical():
    (f,) = findings(clients(RESET_IN, 10) + clients(CLEAN._replace(local_port=7002), 2), estab_resets=10)[
        "connection-resets"]
    assert f.severity == "critical"
    (f,) = findings(clients(RESET_IN, 10) + clients(CLEAN._replace(local_port=7002), 20), estab_resets=10)[
        "connection-resets"]
    assert f.severity == "warning"  # 10 of 30: a third


# --- failed connects -------------------------------------------------------------------------------------

def test_one_refused_connect_is_a_warning():
    (f,) = findings([FAILED])["connection-failures"]
    assert f.severity == "warning" and "1 refused or unreachable" in f.title and f.evidence["failed"] == 1


def test_most_connects_timing_out_is_critical():
    (f,) = findings([TIMEOUT] * 3 + [TIMEOUT._replace(close="closed", local_port=48019)])["connection-failures"]
    assert f.severity == "critical" and "3 timed out (of 4 in 10 s)" in f.title and f.evidence["port"] == 80


# --- churn -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "seconds", "severity"), [
    (9, 1.0, None),  # fewer than churn.min, however fast
    (40, 10.0, None),  # 4 a second
    (60, 10.0, "info"),
    (600, 10.0, "warning"),
])
def test_churn_is_judged_per_second(n, seconds, severity):
    found = findings(clients(CLEAN, n), seconds).get("connection-churn", [])
    assert [f.severity for f in found] == ([severity] if severity else [])
    if found:
        assert found[0].evidence["short_lived"] == n and found[0].evidence["port"] == 7000
        assert "to 127.0.0.1:7000" in found[0].title


def test_long_lived_or_reset_connections_are_not_churn():
    assert "connection-churn" not in findings(clients(CLEAN, 100, duration_ms=5000.0))
    assert "connection-churn" not in findings(clients(CLEAN, 100, close="reset"), estab_resets=100)


# --- resets received ------------------------------------------------------------------------------------------

def test_resets_received_are_estab_resets_less_our_own():
    (f,) = findings(clients(RESET_IN, 2), estab_resets=7)["connections-reset-by-peers"]
    assert f.evidence == {"estab_resets": 7, "resets_sent": 2, "seconds": 10.0}
    assert "5 connections were reset by their peers" in f.title
    assert "connections-reset-by-peers" not in findings(clients(RESET_IN, 2), estab_resets=4)
    assert "connections-reset-by-peers" not in findings([CLEAN], estab_resets=None)  # counter unread: no guess


# --- through the engine: names, scope, nodes ---------------------------------------------------------------------

POD = {"metadata": {"name": "api", "namespace": "shop"},
       "spec": {"nodeName": "n1", "containers": [{"name": "app", "ports": [{"containerPort": 7002}]}]},
       "status": {"phase": "Running", "podIP": "127.0.0.9"}}
CLIENT = {"metadata": {"name": "client", "namespace": "shop"}, "spec": {"nodeName": "n1"},
          "status": {"phase": "Running", "podIP": "127.0.0.1"}}
SVC = {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"clusterIP": "10.99.0.5", "ports": [{"port": 80}]}}


def test_the_engine_names_peers_from_its_lists():
    capture = Capture(clients(RESET_IN, 4) + [TIMEOUT] * 3, [tick(estab_resets=4)])
    data = ClusterInput([POD], [CLIENT], [SVC], observed={("shop", "api"): PodObservation((), capture=capture)})
    report = engine.analyse(data, rules=IDS)
    by_id = {f.id: f for f in report.findings}
    assert by_id["connection-failures"].severity == "critical"
    assert by_id["connection-failures"].title.startswith("connections to svc/shop/web:80 fail")
    assert {"kind": "Service", "namespace": "shop", "name": "web", "role": "peer"} in \
        by_id["connection-failures"].objects
    assert by_id["connection-resets"].title == "4 connections from pod/shop/client reset in 10 s"
    assert [f.id for f in report.findings] == sorted(by_id, key=[f.id for f in report.findings].index)


def test_a_node_targets_capture_is_judged_too():
    capture = Capture([FAILED], [tick()])
    data = ClusterInput([], [CLIENT], nodes=[], scope_nodes=["n1"],
                        node_observed={"n1": NodeObservation(capture=capture)})
    (f,) = engine.analyse(data, rules=IDS).findings
    assert f.id == "connection-failures" and f.objects[0] == {"kind": "Node", "name": "n1"}
    assert "pod/shop/client:*" in f.title


def test_no_capture_no_connection_findings():
    assert engine.analyse(ClusterInput([POD], observed={("shop", "api"): PodObservation(())}), rules=IDS).findings \
        == []


def test_every_rule_is_registered_and_every_threshold_documented_with_its_value():
    assert set(IDS) <= set(RULES)
    text = (ROOT / "docs" / "triage.md").read_text()
    for name, value in THRESHOLDS.items():
        row = re.search(rf"^\| `{re.escape(name)}` \| ([^|]+) \|", text, re.M)
        assert row, name
        assert float(row.group(1).strip()) == value, name


def test_triage_observes_a_capture_as_the_rules_read_it():
    """``triage --events``: the capture's events and ticks in a pod's records become the
    observation's ``capture`` (its declared ports telling the inbound side)."""
    from sockdebug_plugin.triage import observation

    records = [*clients(RESET_IN, 4), tick(estab_resets=4)]
    obs = observation(POD, records, captured=True)
    assert obs.capture.listening == frozenset({7002}) and len(obs.capture.events) == 4
    assert obs.capture.span_s() == 10.0 and observation(POD, records).capture is None
    report = engine.analyse(ClusterInput([POD], [CLIENT], [SVC], observed={("shop", "api"): obs}), rules=IDS)
    assert [f.title for f in report.findings] == ["4 connections from pod/shop/client reset in 10 s"]
