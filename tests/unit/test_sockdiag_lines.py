"""The JSON-lines fast path (sockdiag.inet_lines) against the record path it replaces:
on captured kernel replies and on crafted messages, every line is byte for byte
``socket_to_json`` of the record, repeats of a cookie are dropped the same way, and
bad input ends in ProtocolError / NetlinkError only."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
from pathlib import Path

import pytest
from sockdebug_agent.inspectors import sockdiag
from sockdebug_agent.inspectors.processes import Owners
from sockdebug_agent.inspectors.sockdiag import (
    INET_DIAG_MARK,
    INET_DIAG_SHUTDOWN,
    INET_DIAG_SKV6ONLY,
    CookieWindow,
    inet_lines,
    inet_parser,
    unique,
)
from sockdebug_agent.netlink import NLM_F_DUMP_INTR, NLMSG_DONE, NLMSGHDR, NetlinkError, ProtocolError
from sockdebug_agent.schema import socket_to_json

DATA = Path(__file__).parent / "data"
SEQ = 1
CAPTURES = [("tcp4.bin", socket.AF_INET, 6), ("tcp6.bin", socket.AF_INET6, 6), ("udp4.bin", socket.AF_INET, 17)]


def ifname(index: int) -> str:
    return {1: "lo", 7: 'we"ird\\dev\x01é'}.get(index, str(index))


def owners_for(inodes: list[int]) -> Owners:
    """Owners of every other inode: one holder, two holders (the second in another
    process, listed first by fd), and a container id and a comm that needs escaping."""
    owners = Owners()
    chosen = inodes[::2]
    owners.add(300, "serv er", None, [(inode, 10 + i) for i, inode in enumerate(chosen)])
    owners.add(40, 'we"ird)\\nm\udcff', "ab" * 32, [(inode, 3) for inode in chosen[::3]])
    return owners


def records_and_lines(data: bytes, family: int, protocol: int, owners=None, size=None, seq=SEQ):
    """What both paths make of the same bytes (split in datagrams of ``size`` bytes at
    message boundaries when given)."""
    grams = _datagrams(data, size)
    by_records = unique(inet_parser(family, protocol, ifname=ifname, owners=owners), record_window := CookieWindow())
    by_lines = inet_lines(family, protocol, line_window := CookieWindow(), ifname=ifname, owners=owners)
    records, lines, ends = [], [], []
    for gram in grams:
        items, done, interrupted = by_records(gram, len(gram), seq)
        records += items
        items2, done2, interrupted2 = by_lines(gram, len(gram), seq)
        lines += items2
        ends.append(((done, interrupted), (done2, interrupted2)))
    assert all(a == b for a, b in ends)
    assert record_window.dropped == line_window.dropped
    return records, lines, record_window.dropped


def _datagrams(data: bytes, size) -> list[bytes]:
    if size is None:
        return [data]
    out, start, off = [], 0, 0
    while off < len(data):
        end = off + ((NLMSGHDR.unpack_from(data, off)[0] + 3) & ~3)
        if end - start > size:
            out.append(data[start:off])
            start = off
        off = end
    return [*out, data[start:]]


def _inodes(data: bytes, family: int, protocol: int) -> list[int]:
    records, _lines, _ = records_and_lines(data, family, protocol)
    return [r.inode for r in records if r.inode]


@pytest.mark.parametrize(("name", "family", "protocol"), CAPTURES)
@pytest.mark.parametrize("with_owners", [False, True])
def test_lines_are_the_records_serialised(name, family, protocol, with_owners):
    data = (DATA / name).read_bytes()
    owners = owners_for(_inodes(data, family, protocol)) if with_owners else None
    records, lines, dropped = records_and_lines(data, family, protocol, owners)
    assert len(records) >= 2 and dropped == 0
    assert lines == [socket_to_json(r) for r in records]
    if family == socket.AF_INET6:  # the captures' v6-only and dual-stack listeners
        assert {r.v6only for r in records} >= {True, False}
    if owners is not None:
        assert any(len(r.processes) == 2 for r in records) and any(r.processes == [] for r in records)


# --- crafted messages ------------------------------------------------------------------

def attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def inet_msg(*, family=socket.AF_INET6, state=1, sport=8080, dport=41000, src="::1", dst="::1", ifindex=0,
             cookie=5, rq=0, wq=0, uid=0, inode=100, attrs=b"", seq=SEQ, flags=2, kind=20) -> bytes:
    size = 4 if family == socket.AF_INET else 16
    body = struct.pack("=BBBB", family, state, 0, 0) + struct.pack(">HH", sport, dport)
    body += socket.inet_pton(family, src).ljust(16, b"\0") + socket.inet_pton(family, dst).ljust(16, b"\0")
    assert size <= 16
    body += struct.pack("=IQIIIII", ifindex, cookie, 0, rq, wq, uid, inode) + attrs
    return NLMSGHDR.pack(16 + len(body), kind, flags, seq, 0) + body


def done_msg() -> bytes:
    return NLMSGHDR.pack(20, NLMSG_DONE, 2, SEQ, 0) + struct.pack("=i", 0)


ORDINARY = attr(INET_DIAG_SHUTDOWN, b"\0") + attr(INET_DIAG_MARK, struct.pack("=I", 7))


def test_crafted_messages_take_either_path_and_agree(monkeypatch):
    data = b"".join([
        inet_msg(ifindex=7, cookie=4, attrs=ORDINARY),                      # bound to a device with a hostile name
        inet_msg(ifindex=1, cookie=(1 << 40) + 9, rq=17, wq=2**31, uid=2**32 - 2, inode=0),
        inet_msg(src="::ffff:127.0.0.1", dst="fe80::1", cookie=6, state=6, inode=0),  # TIME-WAIT: no owner
        inet_msg(cookie=9, state=255),                                       # a state ss has no name for
        inet_msg(cookie=7, seq=99),                                          # another request: skipped
        inet_msg(cookie=8, flags=2 | NLM_F_DUMP_INTR, attrs=ORDINARY),      # flagged: the general loop
        inet_msg(state=10, dport=0, dst="::", attrs=attr(INET_DIAG_SKV6ONLY, b"\1"), cookie=1),   # v6-only listener
        inet_msg(state=10, dport=0, dst="::", attrs=attr(INET_DIAG_SKV6ONLY, b"\0"), cookie=2),   # dual-stack
        inet_msg(state=7, attrs=b"", cookie=3),                             # CLOSE without the flag: null
        done_msg(),
    ])
    owners = Owners()
    owners.add(5, "x", None, [(100, 4)])
    serialised = []
    monkeypatch.setattr(sockdiag, "socket_to_json", lambda s: serialised.append(s) or socket_to_json(s))
    for own in (None, owners):
        serialised.clear()
        records, lines, _ = records_and_lines(data, socket.AF_INET6, 6, own)
        # the loop wrote the four ordinary messages itself; the general loop took over at seq 99
        assert [s.cookie for s in serialised] == [8, 1, 2, 3]
        assert [r.cookie for r in records] == [4, (1 << 40) + 9, 6, 9, 8, 1, 2, 3]
        assert lines == [socket_to_json(r) for r in records]
        assert [r.v6only for r in records[-3:]] == [True, False, None]
        assert records[0].interface == ifname(7) and records[1].interface == "lo"
        assert records[3].state == "UNKNOWN"
    serialised.clear()
    records_and_lines(data[data.index(inet_msg(state=10, dport=0, dst="::", attrs=attr(INET_DIAG_SKV6ONLY, b"\1"),
                                               cookie=1)):], socket.AF_INET6, 6)
    assert [s.cookie for s in serialised] == [1, 2, 3]  # a v6only flag to read: the record parser reads it
    ipv4 = inet_msg(family=socket.AF_INET, src="10.1.2.3", dst="192.168.0.1", sport=1, dport=65535, cookie=1)
    records, lines, _ = records_and_lines(ipv4 + done_msg(), socket.AF_INET, 17)
    assert lines == [socket_to_json(r) for r in records]
    assert (records[0].local_address, records[0].local_port, records[0].peer_port) == ("10.1.2.3", 1, 65535)


def test_repeats_within_and_across_datagrams_are_dropped():
    """A chain shifted between two datagrams repeats the sockets before the resume
    point; the first sighting is kept, the count is reported."""
    first = [inet_msg(cookie=c, inode=100 + c, attrs=ORDINARY) for c in (1, 2, 3, 2)]  # 2 again: a chunk boundary
    second = [inet_msg(cookie=c, inode=100 + c, attrs=ORDINARY) for c in (3, 4, 5)]   # 3 again: the resume point
    third = [inet_msg(cookie=c, inode=100 + c, attrs=ORDINARY) for c in (6, 5)] + [done_msg()]
    data = b"".join(first + second + third)
    size = len(b"".join(first))
    assert len(_datagrams(data, size)) == 3
    records, lines, dropped = records_and_lines(data, socket.AF_INET6, 6, size=size)
    assert [r.cookie for r in records] == [1, 2, 3, 4, 5, 6]
    assert dropped == 3
    assert lines == [socket_to_json(r) for r in records]


# --- bad input -------------------------------------------------------------------------

def overwritten(data: bytes, seed: str, count: int):
    """Copies of ``data`` with a random 4-byte window replaced (a length, flags, a port...)."""
    rng = random.Random(seed)
    for _ in range(count):
        at = rng.randrange(len(data) - 4)
        yield data[:at] + rng.randbytes(4) + data[at + 4:]


@pytest.mark.parametrize(("name", "family", "protocol"), CAPTURES)
def test_truncated_and_corrupted_replies_fail_cleanly(name, family, protocol):
    data = (DATA / name).read_bytes()
    for cut in range(1, len(data), 3):
        with contextlib.suppress(ProtocolError):
            records_and_lines(data[:cut], family, protocol)
    for buf in overwritten(data, name, 1500):
        with contextlib.suppress(ProtocolError, NetlinkError):
            inet_lines(family, protocol, CookieWindow(), ifname=ifname)(buf, len(buf), SEQ)


def test_a_message_claiming_more_than_the_datagram_is_an_error():
    msg = bytearray(inet_msg(cookie=1) + done_msg())
    struct.pack_into("=I", msg, 0, len(msg) + 40)
    with pytest.raises(ProtocolError):
        inet_lines(socket.AF_INET6, 6, CookieWindow())(bytes(msg), len(msg), SEQ)


# --- owners ----------------------------------------------------------------------------

def test_owner_json_is_json_dumps_of_the_records():
    owners = Owners()
    owners.add(900, "b", None, [(1, 30), (2, 4)])
    owners.add(12, 'q"uote\n\udcfe', "f" * 64, [(1, 8), (3, 5)])
    owners.add(12, "dup pid", "", [(1, 2)])  # the same pid seen again (a thread group leader's task)
    assert owners.get(1) == [{"pid": 12, "comm": "dup pid", "fd": 2},
                             {"pid": 12, "comm": 'q"uote\n\udcfe', "fd": 8, "container_id": "f" * 64},
                             {"pid": 900, "comm": "b", "fd": 30}]  # ss's order: pid, then fd
    for inode in (1, 2, 3, 4):
        assert owners.json(inode) == json.dumps(owners.get(inode, []), separators=(",", ":"))
    assert owners.get(4) is None and owners.get(4, []) == [] and len(owners) == 3 and 3 in owners


def test_only_a_json_writer_takes_lines():
    """The table writer keeps records to lay them out: it must get records, not lines."""
    from sockdebug_agent.render import TableWriter
    from sockdebug_agent.stream import Writer

    assert Writer().takes_lines and not TableWriter([]).takes_lines
