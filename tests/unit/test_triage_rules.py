"""Triage rules on constructed records: each fires at its threshold and not below,
with the evidence a reader needs; docs/triage.md lists every finding and threshold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sockdebug_agent import triage
from sockdebug_agent.inspectors.limits import build_limits
from sockdebug_agent.schema import SEVERITIES, Interface, Limits, ProcessLimits, Route, Socket
from sockdebug_agent.triage import THRESHOLDS, TriageInput

DOCS = Path(__file__).resolve().parents[2] / "docs" / "triage.md"


def tcp(state, local="10.0.0.5", lport=8080, peer="10.0.0.9", pport=40000, rq=0, wq=0, pids=(), **extra):
    procs = [{"pid": p, "comm": f"app{p}", "fd": 3 + i} for i, p in enumerate(pids)]
    return Socket("inet6" if ":" in local else "inet", "tcp", state, rq, wq, local, lport, peer, pport,
                  processes=procs, **extra)


def listener(local="0.0.0.0", port=8080, rq=0, backlog=128, pids=(100,), cookie=1):
    return tcp("LISTEN", local, port, "0.0.0.0" if ":" not in local else "::", 0, rq, backlog, pids, cookie=cookie)


def limits(netns=None, counters=None, system=None) -> Limits:
    base = build_limits(None, None, None, {}, None, None, None, [])
    lim = Limits(dict(base.system), dict(base.netns), {g: dict(v) for g, v in base.counters.items()})
    lim.system.update(system or {})
    lim.netns.update(netns or {})
    for group, values in (counters or {}).items():
        lim.counters[group].update(values)
    return lim


def route(dst, table="main", route_type="unicast", family="inet", gateway=None, dev="eth0", metric=0):
    return Route(family, table, route_type, dst, gateway, dev, None, metric, "kernel", "global")


def iface(name, addrs, flags=("BROADCAST", "UP", "LOWER_UP")):
    return Interface(2, name, "UP", 1500, None, list(flags), "veth",
                     [{"family": "inet6" if ":" in a else "inet", "address": a.split("/")[0],
                       "prefixlen": int(a.split("/")[1]), "scope": "global"} for a in addrs])


LO = Interface(1, "lo", "UNKNOWN", 65536, None, ["LOOPBACK", "UP", "LOWER_UP"], None,
               [{"family": "inet", "address": "127.0.0.1", "prefixlen": 8, "scope": "host"}])
HEALTHY_ROUTES = [route("default", gateway="10.0.0.1"), route("10.0.0.0/24"),
                  route("127.0.0.0/8", table="local", route_type="local", dev="lo")]


def ids(findings, severity=None):
    return [f.id for f in findings if severity is None or f.severity == severity]


def only(findings, finding_id):
    found = [f for f in findings if f.id == finding_id]
    assert len(found) == 1, [(f.id, f.title) for f in findings]
    return found[0]


# --- a clean namespace ------------------------------------------------------------

def test_a_healthy_namespace_has_no_findings():
    socks = [listener(), tcp("ESTAB", pids=(100,)), tcp("TIME-WAIT", lport=40001, peer="10.0.0.7", pport=80),
             tcp("CLOSE-WAIT", pids=(100,)),
             tcp("ESTAB", tcp_info={"total_retrans": 2, "segs_out": 1000})]
    data = TriageInput(
        sockets=socks, routes=HEALTHY_ROUTES, interfaces=[LO, iface("eth0", ["10.0.0.5/24"])],
        processes=[ProcessLimits(100, "app", 50, 1024, 4096, 4.9)],
        limits=limits({"somaxconn": 4096, "tcp_max_tw_buckets": 131072, "ip_local_port_range": [32768, 60999],
                       "conntrack_count": 10, "conntrack_max": 262144},
                      {"TcpExt": {"ListenOverflows": 0, "ListenDrops": 0}, "Udp": {"RcvbufErrors": 0}},
                      {"file_handles_allocated": 1000, "file_max": 100000}))
    assert triage.triage(data) == []


def test_nothing_collected_means_nothing_concluded():
    assert triage.triage(TriageInput()) == []


# --- one rule at a time -----------------------------------------------------------

def test_loopback_only_listener_warning_and_deliberate_admin_port_info():
    socks = [listener("127.0.0.1", 8080, pids=(10,)), listener("::1", 8080, pids=(10,)),
             listener("127.0.0.1", 15000, pids=(20,)), listener("0.0.0.0", 15001, pids=(20,)),
             listener("127.0.0.1", 9000, pids=(30,)), listener("::", 9000, pids=(31,))]
    found = triage.loopback_only_listeners(TriageInput(sockets=socks))
    assert [(f.evidence["port"], f.severity) for f in found] == [(8080, "warning"), (15000, "info")]
    first = found[0]
    assert first.evidence["addresses"] == ["127.0.0.1", "::1"]
    assert first.evidence["processes"] == [{"pid": 10, "comm": "app10"}]
    assert "0.0.0.0" in first.next_step and "sport = :8080" in first.next_step
    assert found[1].evidence["reachable_listeners_of_same_process"] == ["0.0.0.0:15001"]


def test_ipv4_mapped_loopback_counts_as_loopback():
    found = triage.loopback_only_listeners(TriageInput(sockets=[listener("::ffff:127.0.0.1", 7000)]))
    assert ids(found) == ["loopback-only-listener"]


def test_close_wait_threshold_is_per_process():
    warn = int(THRESHOLDS["close_wait.warning"].value)
    below = [tcp("CLOSE-WAIT", pport=50000 + i, pids=(7,)) for i in range(warn - 1)]
    assert triage.close_wait_leaks(TriageInput(sockets=below)) == []
    at = [*below, tcp("CLOSE-WAIT", peer="10.0.0.8", pport=1, rq=5, pids=(7,))]
    others = [tcp("CLOSE-WAIT", pport=60000 + i, pids=(8,)) for i in range(warn - 1)]
    f = only(triage.close_wait_leaks(TriageInput(sockets=at + others)), "close-wait-leak")
    assert f.severity == "warning"
    assert (f.evidence["pid"], f.evidence["comm"], f.evidence["close_wait"], f.evidence["recv_q_bytes"]) == (
        7, "app7", warn, 5)
    assert f.evidence["peers"][0] == {"peer": "10.0.0.9:50000", "count": 1}
    assert "close()" in f.explanation and "state close-wait" in f.next_step
    many = [tcp("CLOSE-WAIT", pport=i, pids=(9,)) for i in range(int(THRESHOLDS["close_wait.critical"].value))]
    assert triage.close_wait_leaks(TriageInput(sockets=many))[0].severity == "critical"


def test_accept_queue_full_nearly_full_and_small_backlogs():
    lim = limits({"somaxconn": 4096}, {"TcpExt": {"ListenOverflows": 3, "ListenDrops": 3}})
    socks = [listener(port=1, rq=2, backlog=1), listener(port=2, rq=103, backlog=128),
             listener(port=3, rq=1, backlog=5),  # 20% of a tiny backlog: nothing
             listener(port=4, rq=4, backlog=5),  # 80% of a tiny backlog: nothing either (min_backlog)
             listener(port=5, rq=4096, backlog=4096)]
    found = triage.accept_queues(TriageInput(sockets=socks, limits=lim))
    assert [(f.evidence["listener"], f.severity) for f in found] == [
        ("0.0.0.0:5", "critical"), ("0.0.0.0:1", "critical"), ("0.0.0.0:2", "warning")]
    # A /proc row (no cookie) has Send-Q 0, not the backlog: never judged.
    assert triage.accept_queues(TriageInput(sockets=[listener(port=6, rq=1, backlog=0, cookie=None)])) == []
    capped = found[0]
    assert capped.evidence["somaxconn"] == 4096 and "somaxconn" in capped.next_step
    assert found[1].evidence == {"listener": "0.0.0.0:1", "recv_q": 2, "backlog": 1,
                                 "processes": [{"pid": 100, "comm": "app100"}], "somaxconn": 4096,
                                 "ListenOverflows": 3, "ListenDrops": 3}


def test_listen_overflows_from_counters_only_when_present_and_non_zero():
    assert triage.listen_overflows(TriageInput(limits=limits())) == []  # absent counters: say nothing
    assert triage.listen_overflows(TriageInput(limits=limits(counters={"TcpExt": {"ListenOverflows": 0}}))) == []
    f = only(triage.listen_overflows(TriageInput(
        sockets=[listener(port=80, rq=3, backlog=3)],
        limits=limits(counters={"TcpExt": {"ListenOverflows": 0, "ListenDrops": 4}}))), "listen-overflows")
    assert f.severity == "warning" and f.evidence["ListenDrops"] == 4
    assert f.evidence["listeners_with_queued_connections"][0]["listener"] == "0.0.0.0:80"


def syn_sent(peer, retrans, pid=5):
    return tcp("SYN-SENT", lport=41000 + retrans, peer=peer, pport=5432, pids=(pid,),
               timer={"name": "on", "expires_ms": 900, "retrans": retrans})


def test_syn_sent_stuck_needs_a_retransmitted_syn_and_groups_by_destination():
    socks = [syn_sent("10.1.1.1", 0), syn_sent("10.2.2.2", 1), syn_sent("10.2.2.2", 3, pid=6),
             tcp("SYN-SENT", peer="10.3.3.3", pport=80)]  # no timer information: no claim
    f = only(triage.syn_sent_stuck(TriageInput(sockets=socks)), "syn-sent-stuck")
    assert f.evidence == {"destination": "10.2.2.2:5432", "sockets": 2, "max_syn_retransmits": 3,
                          "processes": [{"pid": 5, "comm": "app5"}, {"pid": 6, "comm": "app6"}]}
    assert f.severity == "warning"
    many = [syn_sent("10.4.4.4", 1) for _ in range(int(THRESHOLDS["syn_sent.critical"].value))]
    assert triage.syn_sent_stuck(TriageInput(sockets=many))[0].severity == "critical"


def test_time_wait_against_buckets_and_overflow():
    tw = [tcp("TIME-WAIT", lport=40000 + i, peer="10.0.0.7", pport=80) for i in range(50)]
    data = TriageInput(sockets=tw, limits=limits({"tcp_max_tw_buckets": 101}))
    assert triage.time_wait_pressure(data) == []  # 49.5%
    data = TriageInput(sockets=tw, limits=limits({"tcp_max_tw_buckets": 100}))
    f = only(triage.time_wait_pressure(data), "time-wait-pressure")
    assert (f.severity, f.evidence["percent"], f.evidence["top_destinations"]) == (
        "warning", 50.0, [{"peer": "10.0.0.7:80", "count": 50}])
    data = TriageInput(sockets=tw[:5], limits=limits({"tcp_max_tw_buckets": 131072},
                                                     {"TcpExt": {"TCPTimeWaitOverflow": 12}}))
    f = only(triage.time_wait_pressure(data), "time-wait-pressure")
    assert f.severity == "critical" and f.evidence["TCPTimeWaitOverflow"] == 12


def test_ephemeral_ports_per_destination():
    lim = limits({"ip_local_port_range": [40000, 40019], "local_ports_in_use": {"tcp": 9, "udp": 0}})
    socks = [tcp("ESTAB", lport=40000 + i, peer="10.9.9.9", pport=443, pids=(3,)) for i in range(9)]
    socks += [tcp("ESTAB", lport=40010, peer="10.9.9.8", pport=443), listener(port=40015)]
    assert triage.ephemeral_ports(TriageInput(sockets=socks, limits=lim)) == []  # 9/20
    socks.append(tcp("TIME-WAIT", lport=40009, peer="10.9.9.9", pport=443))
    f = only(triage.ephemeral_ports(TriageInput(sockets=socks, limits=lim)), "ephemeral-ports-exhaustion")
    assert (f.severity, f.evidence["destination"], f.evidence["ports_in_use"], f.evidence["range_size"]) == (
        "warning", "10.9.9.9:443", 10, 20)
    assert f.evidence["states"] == {"ESTAB": 9, "TIME-WAIT": 1}
    socks += [tcp("ESTAB", lport=40011 + i, peer="10.9.9.9", pport=443) for i in range(6)]
    assert triage.ephemeral_ports(TriageInput(sockets=socks, limits=lim))[0].severity == "critical"  # 16/20
    # Spread over many destinations, the total still runs out (bind() and UDP draw from it too).
    lim.netns["local_ports_in_use"] = {"tcp": 10, "udp": 0}
    spread = [tcp("ESTAB", lport=40000 + i, peer=f"10.8.0.{i}", pport=443) for i in range(10)]
    f = only(triage.ephemeral_ports(TriageInput(sockets=spread, limits=lim)), "ephemeral-ports-exhaustion")
    assert f.evidence["destination"] is None and f.evidence["ports_in_use"] == 10


def test_fd_limit_near():
    procs = [ProcessLimits(1, "ok", 79, 100, 100, 79.0), ProcessLimits(2, "near", 85, 100, 4096, 85.0),
             ProcessLimits(3, "full", 99, 100, 100, 99.0), ProcessLimits(4, "unknown", 5, None, None, None)]
    found = triage.fd_limits(TriageInput(processes=procs))
    assert [(f.evidence["pid"], f.severity) for f in found] == [(3, "critical"), (2, "warning")]
    near = found[1]
    assert near.evidence["open_fds"] == 85 and near.evidence["fd_soft_limit"] == 100
    assert "4096" in near.next_step  # it may raise its own soft limit up to the hard one
    assert "/proc/2/fd" in near.next_step


def test_file_max_and_conntrack():
    lim = limits(system={"file_handles_allocated": 79, "file_max": 100},
                 netns={"conntrack_count": 74, "conntrack_max": 100})
    assert triage.file_max(TriageInput(limits=lim)) == [] and triage.conntrack(TriageInput(limits=lim)) == []
    lim = limits(system={"file_handles_allocated": 96, "file_max": 100},
                 netns={"conntrack_count": 75, "conntrack_max": 100})
    assert only(triage.file_max(TriageInput(limits=lim)), "file-max-near").severity == "critical"
    f = only(triage.conntrack(TriageInput(limits=lim)), "conntrack-near-max")
    assert f.severity == "warning" and f.evidence == {"conntrack_count": 75, "conntrack_max": 100, "percent": 75.0}
    # No conntrack module: count and max are absent, and nothing is claimed.
    assert triage.conntrack(TriageInput(limits=limits())) == []


def test_no_default_route():
    ifaces = [LO, iface("eth0", ["10.0.0.5/24"])]
    f = only(triage.no_default_route(TriageInput(routes=[route("10.0.0.0/24")], interfaces=ifaces)),
             "no-default-route")
    assert f.severity == "warning" and f.evidence["family"] == "inet"
    assert f.evidence["interfaces"] == [{"interface": "eth0", "addresses": ["10.0.0.5/24"]}]
    assert f.evidence["main_table"] == ["10.0.0.0/24 dev eth0"]
    # Only loopback: isolated on purpose -> info.  A default in another table counts.
    assert triage.no_default_route(TriageInput(routes=[], interfaces=[LO]))[0].severity == "info"
    assert triage.no_default_route(TriageInput(routes=[route("default", table="100", gateway="10.0.0.1")],
                                               interfaces=ifaces)) == []
    # A blackhole default is not a way out.
    assert ids(triage.no_default_route(TriageInput(routes=[route("default", route_type="blackhole")],
                                                   interfaces=ifaces))) == ["no-default-route"]
    # IPv6 only matters with a global IPv6 address.
    v6 = [LO, iface("eth0", ["10.0.0.5/24", "2001:db8::5/64"])]
    found = triage.no_default_route(TriageInput(routes=HEALTHY_ROUTES, interfaces=v6))
    assert [(f.evidence["family"], f.severity) for f in found] == [("inet6", "info")]


def test_no_route_to_peer():
    routes = [*HEALTHY_ROUTES[1:], route("192.0.2.0/24", route_type="blackhole"),
              route("198.51.100.0/24", table="100", gateway="10.0.0.1"),
              route("203.0.113.0/24", table="local", route_type="throw")]
    socks = [tcp("ESTAB", peer="10.0.0.9"),  # connected subnet
             tcp("ESTAB", peer="127.0.0.1", local="127.0.0.1"),  # local table
             tcp("ESTAB", peer="8.8.8.8", pids=(4,)), tcp("SYN-SENT", peer="8.8.8.8", pport=1),  # nothing
             tcp("ESTAB", peer="192.0.2.7"),  # blackhole in main
             tcp("ESTAB", peer="198.51.100.7"),  # only in table 100: a rule may use it
             tcp("TIME-WAIT", peer="8.8.4.4"),  # no traffic needed
             tcp("ESTAB", peer="::ffff:203.0.113.5"),  # throw in local, nothing in main
             Socket("inet", "udp", "ESTAB", 0, 0, "10.0.0.5", 5000, "8.8.8.8", 53),
             Socket("inet", "udp", "UNCONN", 0, 0, "0.0.0.0", 5353, "0.0.0.0", 0)]
    found = triage.no_route_to_peer(TriageInput(sockets=socks, routes=routes))
    by_peer = {f.evidence["peer"]: f for f in found}
    assert set(by_peer) == {"8.8.8.8", "192.0.2.7", "203.0.113.5"}
    assert all(f.severity == "critical" for f in found)
    google = by_peer["8.8.8.8"]
    assert google.evidence["sockets"] == 3 and google.evidence["matched_route"] is None
    assert google.evidence["states"] == {"ESTAB": 2, "SYN-SENT": 1}
    assert google.evidence["processes"] == [{"pid": 4, "comm": "app4"}]
    assert by_peer["192.0.2.7"].evidence["matched_route"] == {"dst": "192.0.2.0/24", "table": "main",
                                                              "route_type": "blackhole"}
    assert "ip route get 8.8.8.8" in google.next_step
    # With the default route back, only the blackhole remains.
    found = triage.no_route_to_peer(TriageInput(sockets=socks, routes=[*routes, route("default", gateway="10.0.0.1")]))
    assert [f.evidence["peer"] for f in found] == ["192.0.2.7"]


def test_longest_prefix_and_metric_win():
    table = triage.RouteTable([route("10.0.0.0/8", route_type="unreachable"), route("10.1.0.0/16"),
                               route("10.2.0.0/16", dev="a", metric=10), route("10.2.0.0/16", dev="b", metric=5)])
    import ipaddress

    assert table.lookup(ipaddress.ip_address("10.1.2.3")).dst == "10.1.0.0/16"
    assert table.lookup(ipaddress.ip_address("10.3.0.1")).route_type == "unreachable"
    assert table.lookup(ipaddress.ip_address("10.2.0.1")).dev == "b"


def test_retransmissions():
    socks = [tcp("ESTAB", pport=1, tcp_info={"total_retrans": 9, "segs_out": 10}),  # too few to judge
             tcp("ESTAB", pport=2, tcp_info={"total_retrans": 10, "segs_out": 1000}),  # 1%
             tcp("ESTAB", pport=3, tcp_info={"total_retrans": 50, "segs_out": 1000, "rtt_ms": 3.5}, pids=(2,)),
             tcp("ESTAB", pport=4, tcp_info={"total_retrans": 30, "segs_out": 100}),  # 30%
             tcp("ESTAB", pport=5)]  # no tcp_info
    f = only(triage.retransmissions(TriageInput(sockets=socks)), "retransmissions-high")
    assert f.severity == "critical" and f.evidence["count"] == 2
    assert [c["peer"] for c in f.evidence["connections"]] == ["10.0.0.9:4", "10.0.0.9:3"]
    assert f.evidence["connections"][1] == {"local": "10.0.0.5:8080", "peer": "10.0.0.9:3", "state": "ESTAB",
                                            "total_retrans": 50, "segs_out": 1000, "percent": 5.0,
                                            "rtt_ms": 3.5, "processes": [{"pid": 2, "comm": "app2"}]}
    assert triage.retransmissions(TriageInput(sockets=socks[:2] + socks[4:])) == []


def test_udp_rcvbuf_errors():
    udp = [Socket("inet", "udp", "UNCONN", 4608, 0, "0.0.0.0", 8125, "0.0.0.0", 0,
                  processes=[{"pid": 9, "comm": "statsd", "fd": 4}], skmem={"rcvbuf": 4608, "drops": 120}),
           Socket("inet", "udp", "UNCONN", 0, 0, "0.0.0.0", 53, "0.0.0.0", 0, skmem={"rcvbuf": 212992, "drops": 0})]
    quiet = limits(counters={"Udp": {"RcvbufErrors": 0}})
    assert triage.udp_rcvbuf_errors(TriageInput(sockets=udp, limits=quiet)) == []
    dropped = limits(counters={"Udp": {"RcvbufErrors": 120}})
    f = only(triage.udp_rcvbuf_errors(TriageInput(sockets=udp, limits=dropped)), "udp-rcvbuf-errors")
    assert f.evidence["RcvbufErrors"] == 120
    assert f.evidence["sockets"] == [{"local": "0.0.0.0:8125", "recv_q": 4608, "drops": 120, "rcvbuf": 4608,
                                      "processes": [{"pid": 9, "comm": "statsd"}]}]


# --- ordering, exit codes, docs -----------------------------------------------------

def test_findings_come_most_severe_first():
    data = TriageInput(
        sockets=[listener("127.0.0.1", 1, pids=(1,)), listener("0.0.0.0", 2, rq=5, backlog=5)]
        + [tcp("CLOSE-WAIT", pport=i, pids=(3,)) for i in range(10)],
        routes=[], interfaces=[LO],
        processes=[ProcessLimits(4, "x", 96, 100, 100, 96.0)])
    found = triage.triage(data)
    ranks = [SEVERITIES.index(f.severity) for f in found]
    assert ranks == sorted(ranks)
    assert set(ids(found)) == {"accept-queue-full", "fd-limit-near", "close-wait-leak", "loopback-only-listener",
                               "no-default-route", "no-route-to-peer"}
    assert ids(found, "critical") == ["accept-queue-full", "no-route-to-peer", "fd-limit-near"]
    assert triage.at_or_above(found, "warning") and triage.at_or_above(found, "critical")
    assert not triage.at_or_above([f for f in found if f.severity == "info"], "warning")


def test_every_finding_reads_as_plain_language():
    """Each finding of a busy fixture names its evidence, explains, and gives a command."""
    data = TriageInput(
        sockets=[listener("127.0.0.1", 1, pids=(1,)), listener("0.0.0.0", 2, rq=5, backlog=5)]
        + [tcp("CLOSE-WAIT", pport=i, pids=(3,)) for i in range(10)] + [syn_sent("10.5.5.5", 2)],
        routes=[], interfaces=[LO, iface("eth0", ["10.0.0.5/24"])],
        processes=[ProcessLimits(4, "x", 96, 100, 100, 96.0)],
        limits=limits({"conntrack_count": 99, "conntrack_max": 100},
                      {"TcpExt": {"ListenOverflows": 1}, "Udp": {"RcvbufErrors": 1}},
                      {"file_handles_allocated": 99, "file_max": 100}))
    found = triage.triage(data)
    assert len(set(ids(found))) >= 9
    for f in found:
        assert f.id in triage.FINDING_IDS and f.severity in SEVERITIES
        assert re.fullmatch(r"[a-z]+(-[a-z]+)+", f.id)
        assert f.evidence and len(f.explanation) > 150 and "`" in f.next_step, f.id


def test_finding_ids_match_the_rules():
    assert len(triage.RULES) == len(triage.FINDING_IDS)


@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_docs_list_every_threshold_with_its_value(name):
    text = DOCS.read_text()
    row = [line for line in text.splitlines() if f"`{name}`" in line]
    assert row, f"docs/triage.md has no row for {name}"
    value = THRESHOLDS[name].value
    shown = f"{value:g}" if value < 1 or value != int(value) else str(int(value))
    assert shown in row[0], (name, shown, row[0])


@pytest.mark.parametrize("finding_id", triage.FINDING_IDS)
def test_docs_describe_every_finding(finding_id):
    assert f"`{finding_id}`" in DOCS.read_text()


def test_host_namespace_skips_loopback_only_listeners():
    socks = [listener("127.0.0.1", 10248)]
    assert ids(triage.loopback_only_listeners(TriageInput(sockets=socks))) == ["loopback-only-listener"]
    assert triage.loopback_only_listeners(TriageInput(sockets=socks, host=True)) == []
