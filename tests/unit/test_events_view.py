"""``--events`` from the agent's records to what a person or a program reads: which side and
which peer each closed connection was (also when the kernel zeroed the peer port), per-peer
totals, the streaming rows, the tables at the end, the jsonl lines and the json/yaml
document.  The events are the kernel's own destroy messages captured in a namespace
(data/events.bin, labelled in data/events_labels.json), read by the agent's parser."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from sockdebug_agent.inspectors.destroy import destroy_parser, to_event
from sockdebug_agent.netlink import parse_datagram
from sockdebug_agent.schema import Event, Tick, Warning, from_dict, to_json
from sockdebug_plugin import events_view, render
from sockdebug_plugin.events import IN, NONE, OUT, Capture, PeerKey, by_peer, direction, peer_key, peer_port
from sockdebug_plugin.events_view import Item, Rows, document, duration_text, jsonl_record, summary_text
from sockdebug_plugin.peers import PeerIndex

DATA = Path(__file__).parent / "data"
LABELS = json.loads((DATA / "events_labels.json").read_text())


def captured() -> list[tuple[str, Event]]:
    """(scenario, event) for every message of the capture, through the agent's JSON and back."""
    data = (DATA / "events.bin").read_bytes()
    items, _, _ = parse_datagram(data, len(data), 0, destroy_parser())
    return [(label, from_dict(json.loads(to_json(to_event(d, 1796116914.25 + i / 1000)))))
            for i, (label, d) in enumerate(zip(LABELS, items))]


EVENTS = captured()


def of(label: str) -> list[Event]:
    return [e for lab, e in EVENTS if lab == label]


def tick(events: int = 3, final: bool = True, ended_by: str = "for", **kernel) -> Tick:
    total = {"events": events, "unmatched": 1, "lost": 2, "resets": 0, "by_netid": {"tcp": events},
             "by_state": {"UNCONN": events}, "by_close": {"closed": events}, "kernel": {"estab_resets": 0, **kernel}}
    return Tick(10000.0, total, total, final, ended_by if final else None)


# --- sides and peers --------------------------------------------------------------------------------

def test_each_captured_close_is_on_the_side_it_was():
    sides = [(lab, e.local_port, e.close, direction(e)) for lab, e in EVENTS if e.netid == "tcp"]
    assert ("clean", 51260, "closed", OUT) in sides and ("clean", 7000, "closed", IN) in sides  # ephemeral: client
    assert ("unread", 7002, "reset", IN) in sides  # the server reset it: data unread
    assert ("linger0", 59580, "reset", OUT) in sides  # aborted: peer port zeroed, our port ephemeral
    assert ("refused", 39930, "failed", OUT) in sides and ("syn-timeout", 48018, "timeout", OUT) in sides
    assert {d for _, _, close, d in sides if close == "unconnected"} == {NONE}  # listeners, never connected
    assert [direction(e) for e in of("udp")] == [NONE, OUT, NONE]  # only the connected UDP socket has a peer


def test_declared_listening_ports_say_in_whatever_the_numbers():
    client = of("clean")[0]  # 127.0.0.1:51260 -> :7000
    assert direction(client) == OUT
    assert direction(client, frozenset({51260})) == IN


def test_lower_port_is_the_service_when_both_or_neither_are_ephemeral():
    e = of("clean")[0]._replace(local_port=8080, peer_port=443)
    assert direction(e) == OUT and peer_key(e) == PeerKey(OUT, "127.0.0.1", 443)
    assert direction(e._replace(local_port=80, peer_port=443)) == IN
    assert direction(e._replace(local_port=40000, peer_port=50000)) == IN


def test_a_zeroed_peer_port_comes_back_from_seen():
    reset = of("linger0")[0]
    assert reset.peer_port == 0 and peer_port(reset) == 0
    seen = {"state": "ESTAB", "local_address": "127.0.0.1", "local_port": 59580, "peer_address": "127.0.0.1",
            "peer_port": 7001, "inode": 1, "uid": 0, "age_ms": 5.0}
    assert peer_port(reset._replace(seen=seen)) == 7001
    assert peer_key(reset._replace(seen=seen)) == PeerKey(OUT, "127.0.0.1", 7001)
    assert peer_port(reset._replace(seen={**seen, "peer_address": "10.0.0.9"})) == 0  # another socket's sight


def test_inbound_clients_are_one_peer_whatever_their_ports():
    server = of("clean")[1]  # 127.0.0.1:7000 <- :51260
    evs = [server._replace(peer_port=p, duration_ms=d) for p, d in ((51260, 10.0), (51270, 30.0), (51280, None))]
    totals = by_peer(evs)
    assert list(totals) == [PeerKey(IN, "127.0.0.1", 7000)]
    t = totals[PeerKey(IN, "127.0.0.1", 7000)]
    assert (t.connections, t.count("closed"), t.mean_duration_ms, t.bytes_sent) == (3, 3, 20.0, 1500)


def test_totals_count_every_close():
    totals = by_peer(e for _, e in EVENTS)
    assert sum(t.connections for t in totals.values()) == len(EVENTS)
    every = {c: sum(t.count(c) for t in totals.values()) for c in ("closed", "reset", "failed", "timeout")}
    assert every == {"closed": 6, "reset": 2, "failed": 1, "timeout": 1}
    assert sum(t.udp for t in totals.values()) == 3


# --- names -------------------------------------------------------------------------------------------

POD = {"metadata": {"name": "server", "namespace": "shop"}, "spec": {"nodeName": "n1"},
       "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}
SVC = {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"clusterIP": "10.99.0.5", "ports": [{"port": 80}]}}
LOOKUP = PeerIndex([POD], [SVC], []).lookup


def test_rows_name_peers_and_stream_in_fixed_columns():
    rows = Rows([{"kind": "pod", "namespace": "shop", "name": "client", "container": "app"}], LOOKUP)
    header = rows.header()
    assert header.split() == ["Time", "Netid", "Close", "Local", "Address:Port", "Peer", "Duration", "Sent", "Recv",
                              "Retrans", "Process", "Container"]
    lines = {lab: rows.line({"kind": "pod"}, e) for lab, e in EVENTS if e.close != "unconnected"}
    assert "pod/shop/server:51260" in lines["clean"] and "400ms" in lines["clean"]  # the server's side, last
    assert "svc/shop/web:80" in lines["syn-timeout"] and " timeout " in lines["syn-timeout"]
    assert "pod/shop/server:*" in lines["refused"]  # the kernel zeroed the port; nobody saw it
    assert "pod/shop/server:7000" in rows.line({}, of("clean")[0]) and "344ms" in rows.line({}, of("clean")[0])
    starts = {line.index(" tcp ") for lab, line in lines.items() if lab != "udp"}
    assert len(starts) == 1  # fixed widths: every row lines up with the header
    assert header.index("Netid") == starts.pop() + 1


def test_every_cell_from_the_target_is_escaped():
    hostile = of("clean")[0]._replace(peer_address="1.2.3.4\x1b[31m", interface="eth0\u202e",
                                      processes=[{"pid": 7, "comm": "evil\x1b]0;x\x07", "fd": 3, "container": "c\n"}])
    line = Rows([{"kind": "pod", "name": "p\x1b"}, {"kind": "pod", "name": "q"}], None).line({"name": "p\x1b"},
                                                                                               hostile)
    assert "\x1b" not in line and "\u202e" not in line and "\n" not in line and "\x07" not in line
    assert "\\x1b" in line


def test_wide_rows_add_the_state_before_the_close_and_rtt():
    rows = Rows([{"kind": "node", "name": "n1"}], None, wide=True)
    assert rows.header().split()[-4:] == ["State", "RTT", "Segs", "Process"]  # no Container on a node
    assert "ESTAB" in rows.line({}, of("clean")[0]._replace(seen={"state": "ESTAB"}))


def test_duration_text():
    assert [duration_text(v) for v in (None, 0.0, 344.0, 1500.0, 61000.0, 3725000.0)] == [
        "-", "0ms", "344ms", "1.5s", "1m01s", "62m05s"]


# --- the end ------------------------------------------------------------------------------------------

def item(events: list[Event], ticks: list[Tick], name: str = "client") -> Item:
    it = Item({"kind": "pod", "namespace": "shop", "name": name, "container": "app"})
    for rec in [*events, *ticks, Warning("events-lost", "the kernel dropped 2", 2)]:
        it.add(rec)
    return it


def test_summary_has_per_peer_and_run_totals():
    text = summary_text([item([e for _, e in EVENTS], [tick(len(EVENTS))])], LOOKUP, interrupted=False)
    peers, _, run = text.partition("# run totals")
    rows = [line.split() for line in peers.splitlines() if line and not line.startswith(("#", "Peer"))]
    assert rows[0][:3] == ["(no", "peer)", "-"]  # most connections first: the listeners and unbound ones
    by_peer = {tuple(r[:3]): r[3:] for r in rows[1:]}
    assert by_peer[("pod/shop/server", "out", "7000")][:2] == ["1", "1"]  # the clean client: 1 conn, closed
    assert by_peer[("pod/shop/server", "in", "7000")][:2] == ["1", "1"]  # its server side: the port is ours
    assert by_peer[("svc/shop/web", "out", "80")][4] == "1"  # one timeout
    last = run.splitlines()[-1].split()
    assert last[1] == str(len(EVENTS)) and last[-1] == "for" and last[8] == "2"  # events, ended by, lost


def test_run_totals_say_how_each_stream_ended():
    a = item(of("clean"), [tick(3, ended_by="stdin")], "a")
    b = item(of("clean"), [tick(3, final=False)], "b")
    c = item([], [], "c")
    c.error = "the agent failed"
    text = events_view.run_table([a, b, c], interrupted=True)
    ends = [line.split()[-1] for line in text.splitlines()[1:]]
    assert ends == ["Ctrl-C", "tick)", "failed"] and "cut (last tick)" in text


def test_json_and_yaml_documents_carry_events_peers_ticks_and_totals():
    it = item([e for _, e in EVENTS], [tick(3, final=False), tick(len(EVENTS))])
    doc = document([it], LOOKUP, interrupted=True)
    assert doc["kind"] == "ConnectionEvents" and doc["interrupted"] is True
    (entry,) = doc["items"]
    assert entry["ended_by"] == "for" and entry["totals"]["events"] == len(EVENTS) and len(entry["ticks"]) == 2
    assert entry["warnings"][0]["code"] == "events-lost"
    timeout = next(e for e in entry["events"] if e["close"] == "timeout")
    assert timeout["peer"] == {"kind": "Service", "namespace": "shop", "name": "web"}
    assert timeout["direction"] == "out" and timeout["type"] == "event"
    udp = next(e for e in entry["events"] if e["netid"] == "udp" and e["state"] == "UNCONN")
    assert udp["peer"] is None and udp["direction"] is None
    top = entry["peers"][0]
    assert set(top) >= {"peer", "address", "direction", "port", "connections", "reset", "failed",
                        "mean_duration_ms", "bytes_sent", "bytes_received"}
    out = io.StringIO()
    render.write_doc(doc, "yaml", out)
    assert yaml.safe_load(out.getvalue()) == json.loads(json.dumps(doc))
    assert document([item([], [tick(0, final=False)])], None, False)["items"][0]["totals"] is None


def test_jsonl_lines_add_the_peer_and_the_target():
    t = {"kind": "pod", "namespace": "shop", "name": "client"}
    line = jsonl_record(t, of("clean")[0], frozenset(), LOOKUP)
    assert line["peer"] == {"kind": "Pod", "namespace": "shop", "name": "server"} and line["target"] == t
    assert jsonl_record(t, tick(), frozenset(), LOOKUP)["target"] == t


@pytest.mark.parametrize("label", ["clean", "unread", "refused"])
def test_capture_span_and_kernel_counters_come_from_the_last_tick(label):
    cap = Capture(of(label), [tick(3, estab_resets=4)])
    assert cap.span_s() == 10.0 and cap.kernel("estab_resets") == 4 and cap.kernel("nope") is None
    assert Capture(of(label), [], seconds=2.5).span_s() == 2.5
