"""``events`` on captured destroy messages (tests/unit/data, made by capture_events.py):
every message equals the row ``ss -E`` printed for the same cookie, each way a connection
ended is told apart, and bad input ends in ProtocolError, never IndexError."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from sockdebug_agent.filter import select
from sockdebug_agent.inspectors.destroy import (
    CLOSE_KINDS,
    Destroyed,
    classify,
    destroy_parser,
    lifetime_ms,
    tcp_figures,
    to_event,
)
from sockdebug_agent.inspectors.events import groups_for
from sockdebug_agent.netlink import ProtocolError, parse_datagram
from sockdebug_agent.query import parse_duration
from sockdebug_agent.schema import Event, Seen, Tick, from_dict, to_dict, to_json

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from helpers.ss_text import parse as parse_ss  # ss's text, read as in the integration tests

DATA = Path(__file__).parent / "data"
# How each captured scenario's sockets ended (capture_events.py), as a multiset.
EXPECTED_CLOSE = {
    "clean": {"closed": 2, "unconnected": 1},  # both sides of an orderly close, and the listener
    "linger0": {"reset": 1, "closed": 1, "unconnected": 1},  # the RST's sender; its receiver looks clean
    "unread": {"reset": 1, "closed": 1, "unconnected": 1},  # closed with unread data; the peer got the RST
    "refused": {"failed": 1},
    "syn-timeout": {"timeout": 1},
    "unused": {"unconnected": 1},
    "udp": {None: 3},
    "v6": {"closed": 2, "unconnected": 1},
}


def captured() -> list[tuple[str, Destroyed]]:
    buf = (DATA / "events.bin").read_bytes()
    items, _done, _intr = parse_datagram(buf, len(buf), 0, destroy_parser())
    labels = json.loads((DATA / "events_labels.json").read_text())
    assert len(items) == len(labels)
    return list(zip(labels, items))


def ss_rows() -> dict[int, object]:
    rows = {}
    for row in parse_ss((DATA / "events_ss.txt").read_text()):
        cookie = re.search(r"\bsk:([0-9a-f]+)", row.extra)
        rows[int(cookie.group(1), 16)] = row
    return rows


def test_every_message_is_the_row_ss_printed():
    rows = ss_rows()
    items = captured()
    assert len(rows) == len(items)
    for label, d in items:
        e = to_event(d, 0.0)
        row = rows[e.cookie]
        assert (e.netid, e.state, e.recv_q, e.send_q, e.local_address, e.local_port, e.peer_address,
                e.peer_port) == (row.netid, row.state, row.recv_q, row.send_q, row.local_address, row.local_port,
                                 row.peer_address, row.peer_port), label
        if e.netid == "tcp":  # the figures ss prints with -i, where it prints them (it omits zeros)
            for ours, theirs in (("bytes_sent", "bytes_sent"), ("bytes_received", "bytes_received"),
                                 ("bytes_acked", "bytes_acked"), ("segs_in", "segs_in"), ("segs_out", "segs_out")):
                found = re.search(rf"\b{theirs}:(\d+)", row.extra)
                assert getattr(e, ours) == (int(found.group(1)) if found else 0), (label, ours)


def test_each_way_of_ending_is_told_apart():
    got: dict[str, Counter] = {}
    for label, d in captured():
        got.setdefault(label, Counter())[to_event(d, 0.0).close] += 1
    assert {k: dict(v) for k, v in got.items()} == EXPECTED_CLOSE
    assert {c for counts in got.values() for c in counts} - {None} == set(CLOSE_KINDS)


def test_the_reset_sender_keeps_the_peer_address_but_not_its_port():
    """tcp_disconnect: what ss -E shows for an SO_LINGER 0 close (0.0.0.0:P 127.0.0.1:*)."""
    (reset,) = [d for label, d in captured() if label == "linger0" and to_event(d, 0).close == "reset"]
    e = to_event(reset, 0.0)
    assert (e.local_address, e.peer_address, e.peer_port) == ("0.0.0.0", "127.0.0.1", 0)
    assert e.bytes_acked == 0 and e.segs_in == 0  # the kernel zeroed the counters


def test_durations_are_lower_bounds_from_established_connections_only():
    for label, d in captured():
        e = to_event(d, 0.0)
        if label == "clean" and e.local_port != 7000:  # the client slept 0.3 s after its last data
            assert e.duration_ms >= 290
        if e.close in ("failed", "timeout", "unconnected") or e.netid == "udp":
            assert e.duration_ms is None, (label, e)  # last_data_* hold garbage before a handshake
    d = captured()[0][1]
    assert lifetime_ms(d.tcp_info, 5000.0) == max(5000.0, lifetime_ms(d.tcp_info, None) or 0)
    assert lifetime_ms(None, None) is None and lifetime_ms(None, 12.5) == 12.5


def test_udp_events_have_no_tcp_figures_and_ss_queue_numbers():
    for label, d in captured():
        if label == "udp":
            e = to_event(d, 0.0)
            assert e.netid == "udp" and e.close is None and e.bytes_sent is None and e.rtt_ms is None
            assert e.send_q == -1  # the kernel's u32 0xffffffff, as ss prints it


def test_info_and_seen_and_owners_go_where_asked():
    d = captured()[0][1]
    seen = Seen(state="ESTAB", local_address="127.0.0.1", local_port=1, peer_address="127.0.0.1", peer_port=2,
                inode=77, uid=1000, age_ms=60000.0)
    e = to_event(d, 1700000000.1234, seen, [{"pid": 1, "comm": "x", "fd": 3}], keep_info=True)
    assert e.time == 1700000000.123 and e.seen == seen and e.processes[0]["pid"] == 1
    assert e.tcp_info["bytes_acked"] == e.bytes_acked and e.duration_ms >= 60000.0
    assert to_event(d, 0.0).tcp_info is None


def test_classify_without_a_send_window_uses_the_last_state():
    """Kernels before tcpi_snd_wnd: an aborted socket is a failed connect only if the watch
    last saw it connecting."""
    (failed,) = [d for label, d in captured() if label == "refused"]
    info = {k: v for k, v in failed.tcp_info.items() if k != "snd_wnd"}
    assert classify(failed.sock, info, 0, "SYN-SENT") == "failed"
    assert classify(failed.sock, info, 0, "ESTAB") == "reset"
    assert classify(failed.sock, None, None) is None


def test_a_connect_that_never_got_a_window_failed_even_with_its_peer_port():
    """A non-blocking connect refused (RST or ICMP): the kernel never ran tcp_disconnect, so
    the peer port is there, but no handshake completed: no send window, no RTT sample."""
    (syn,) = [d for label, d in captured() if label == "syn-timeout"]
    assert syn.sock.peer_port == 80 and syn.tcp_info["snd_wnd"] == 0 and not syn.tcp_info["rtt_ms"]
    assert classify(syn.sock, syn.tcp_info, 2) == "timeout"  # SYNs still unanswered: the timeout rule first
    assert classify(syn.sock, syn.tcp_info, 0) == "failed"
    no_window = {k: v for k, v in syn.tcp_info.items() if k != "snd_wnd"}  # a kernel before 5.4
    assert classify(syn.sock, no_window, 0, "SYN-SENT") == "failed"
    assert classify(syn.sock, no_window, 0, None) == "closed"
    for label, d in captured():  # every established one keeps its verdict: it has a window and an RTT
        if label in ("clean", "v6") and d.sock.peer_port:
            assert classify(d.sock, d.tcp_info, 0) == "closed"


def test_event_and_tick_records_round_trip():
    d = captured()[0][1]
    counts = {"events": 2, "unmatched": 1, "lost": 0, "resets": 1, "by_netid": {"tcp": 2},
              "by_state": {"UNCONN": 2}, "by_close": {"reset": 1, "closed": 1},
              "kernel": {"estab_resets": 1, "out_rsts": None}}
    for record in (to_event(d, 1.5), Tick(1000.0, counts, counts), Tick(2.0, counts, counts, True, "SIGINT")):
        obj = json.loads(to_json(record))
        assert next(iter(obj)) == "type" and from_dict(obj) == record
    assert list(json.loads(to_json(to_event(d, 1.5))))[1:4] == ["time", "family", "netid"]
    assert Event._fields[-3:] == ("seen", "processes", "tcp_info")


@pytest.mark.parametrize("cut", [0, 16, 40, 71, 84, 120])
def test_truncated_messages_raise_protocol_error(cut):
    buf = bytearray((DATA / "events.bin").read_bytes())
    length = int.from_bytes(buf[:4], "little")
    first = bytearray(buf[:length])
    first[:4] = (16 + cut).to_bytes(4, "little")  # the header claims only `cut` payload bytes
    with pytest.raises(ProtocolError):
        parse_datagram(bytes(first[:16 + cut]), 16 + cut, 0, destroy_parser())


def test_other_families_and_protocols_are_skipped():
    buf = bytearray((DATA / "events.bin").read_bytes())
    length = int.from_bytes(buf[:4], "little")
    msg = bytearray(buf[:length])
    msg[16] = 1  # AF_UNIX: not an inet message
    assert parse_datagram(bytes(msg), len(msg), 0, destroy_parser())[0] == []


@pytest.mark.parametrize(("flags", "mask"), [
    ({}, 0b1111), ({"tcp": True}, 0b0101), ({"udp": True}, 0b1010), ({"ipv4": True}, 0b0011),
    ({"ipv6": True, "tcp": True}, 0b0100), ({"unix": True}, 0),
])
def test_groups_are_those_ss_joins(flags, mask):
    assert groups_for(select(**flags)) == mask


@pytest.mark.parametrize(("text", "seconds"), [("30", 30.0), ("30s", 30.0), ("2m", 120.0), ("500ms", 0.5),
                                               ("1.5h", 5400.0), (" 7 s ", 7.0), (".5", 0.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "3d", "-1", "1e3", "five"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_compact_tcp_info_read_agrees_with_the_full_one():
    buf = (DATA / "events.bin").read_bytes()
    full, _, _ = parse_datagram(buf, len(buf), 0, destroy_parser(info=True))
    compact, _, _ = parse_datagram(buf, len(buf), 0, destroy_parser())
    for f, c in zip(full, compact):
        assert f.retransmits == c.retransmits and f.sock == c.sock
        if f.tcp_info is None:
            assert c.tcp_info is None
            continue
        assert c.tcp_info.items() <= f.tcp_info.items()  # same names, same values
        assert to_event(f, 0.0)._replace(tcp_info=None) == to_event(c, 0.0)
    old_kernel = tcp_figures(bytes(200))  # a shorter tcp_info (Linux < 5.4) takes the full parse
    assert old_kernel[0]["bytes_acked"] == 0 and "snd_wnd" not in old_kernel[0] and old_kernel[1] == 0


def test_event_json_is_json_dumps_of_to_dict():
    seen = Seen(state="ESTAB", local_address="::1", local_port=1, peer_address="::1", peer_port=2, inode=7,
                uid=0, age_ms=1.5)
    for _label, d in captured():
        for e in (to_event(d, 1796115222.639), to_event(d, 5.0, seen, [{"pid": 1, "comm": 'a"\x1b', "fd": 3}], True),
                  to_event(d, 0.0)._replace(interface='we"ird\n\u00e9')):
            line = to_json(e)
            assert line == json.dumps(to_dict(e), separators=(",", ":"))
            assert "\n" not in line and "\x1b" not in line and from_dict(json.loads(line)) == e
