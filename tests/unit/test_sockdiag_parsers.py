"""Pure parsers on captured bytes (tests/unit/data, made by capture_sockdiag.py) and on
truncated and garbage input: the records equal what ss printed at capture time, and
bad input ends in ProtocolError / NetlinkError, never IndexError or struct.error."""

from __future__ import annotations

import random
import socket
import struct
import sys
from pathlib import Path

import pytest
from sockdebug_agent.inspectors import procnet, sockdiag
from sockdebug_agent.inspectors.processes import parse_comm, parse_container_id
from sockdebug_agent.inspectors.sockdiag import (
    inet_cookie,
    parse_skmem,
    parse_tcp_info,
    parse_unix,
    unix_name,
)
from sockdebug_agent.netlink import (
    NLM_F_DUMP_INTR,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    NetlinkError,
    ProtocolError,
    parse_attrs,
    parse_datagram,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from helpers.ss_text import bare, parse  # ss's text, read as in the integration tests

# The inet parser factory (a class, or a closure on the fast path): same arguments.
inet_parser = getattr(sockdiag, "inet_parser", None) or sockdiag.InetParser
DATA = Path(__file__).parent / "data"
SEQ = 1  # the capture's request sequence number


def _inet(name: str, family: int, protocol: int, **kw):
    buf = (DATA / name).read_bytes()
    parser = inet_parser(family, protocol, timers=True, extended=True, memory=True, info=True, **kw)
    items, done, interrupted = parse_datagram(buf, len(buf), SEQ, parser)
    assert done and not interrupted
    return items


def _unix():
    buf = (DATA / "unix.bin").read_bytes()
    items, done, _ = parse_datagram(buf, len(buf), SEQ, lambda b, s, e: parse_unix(b, s, e, extended=True,
                                                                                  memory=True))
    assert done
    return items


def _ss(name: str, netid: str):
    return {r.key: r for r in parse((DATA / f"ss_{name}.txt").read_text(), netid)}


def _row(sock):
    from helpers.ss_text import agent_row
    return agent_row({**sock._asdict(), "processes": None})


def test_tcp_records_equal_ss():
    socks = _inet("tcp4.bin", socket.AF_INET, 6) + _inet("tcp6.bin", socket.AF_INET6, 6)
    want = _ss("tcp", "tcp")
    assert {_row(s).key for s in socks} == set(want)
    for sock in socks:
        row = want[_row(sock).key]
        assert bare(_row(sock)) == bare(row)  # state, queues, addresses, ports
        words = row.extra.split()
        assert f"ino:{sock.inode}" in words and f"sk:{sock.cookie:x}" in words
        assert sock.extended["shutdown"] in words
        skmem = sock.skmem
        assert f"skmem:(r{skmem['rmem_alloc']},rb{skmem['rcvbuf']},t{skmem['wmem_alloc']},tb{skmem['sndbuf']}," \
               f"f{skmem['fwd_alloc']},w{skmem['wmem_queued']},o{skmem['optmem']},bl{skmem['backlog']}," \
               f"d{skmem['drops']})" in words
        info = sock.tcp_info
        assert info["congestion"] == "bbr" and f"cwnd:{info['cwnd']}" in words
        if sock.state != "LISTEN":
            assert f"mss:{info['mss']}" in words and f"rcvmss:{info['rcv_mss']}" in words
            assert f"rto:{info['rto_ms']:g}" in words
            assert f"rtt:{info['rtt_ms']:g}/{info['rttvar_ms']:g}" in words
            assert f"minrtt:{info['min_rtt_ms']:g}" in words
            assert info["options"][:2] == ["ts", "sack"] and (info["snd_wscale"], info["rcv_wscale"]) == (10, 10)
        if "v6only:1" in words or "v6only:0" in words:
            assert f"v6only:{int(sock.v6only)}" in words
    by_state = {s.state: s for s in socks}
    assert by_state["CLOSE-WAIT"].extended["shutdown"] == "-->"
    assert by_state["FIN-WAIT-2"].extended["shutdown"] == "<--"
    listen = next(s for s in socks if s.local_port == 8080 and s.state == "LISTEN")
    assert (listen.recv_q, listen.send_q) == (0, 5)


def test_udp_records_equal_ss():
    socks = _inet("udp4.bin", socket.AF_INET, 17)
    want = _ss("udp", "udp")
    assert sorted(repr(bare(_row(s))) for s in socks) == sorted(repr(bare(r)) for r in want.values())
    unconn = next(s for s in socks if s.state == "UNCONN")
    assert unconn.recv_q == unconn.skmem["rmem_alloc"] == 832  # UDP Recv-Q is memory


def test_unix_records_equal_ss():
    socks = _unix()
    want = _ss("unix", None)
    assert sorted(map(repr, (bare(_row(s)) for s in socks))) == sorted(map(repr, (bare(r) for r in want.values())))
    for sock in socks:
        row = want[_row(sock).key]
        assert sock.extended["shutdown"] in row.extra.split()
        if "dev:" in row.extra:
            assert f"ino:{sock.extended['vfs_inode']} dev:{sock.extended['vfs_dev']}" in row.extra
        if sock.state == "LISTEN":
            assert row.extra.endswith("peers: " + " ".join(map(str, sock.extended["peers"])))
    names = {s.local_address for s in socks}
    assert {"/tmp/sdt-capture.sock", "@sdt-capture", None} == names


def test_cookie_only_parser_agrees():
    buf = (DATA / "tcp4.bin").read_bytes()
    cookies, _, _ = parse_datagram(buf, len(buf), SEQ, inet_cookie)
    assert cookies == [s.cookie for s in _inet("tcp4.bin", socket.AF_INET, 6)]


@pytest.mark.parametrize("name", ["tcp4.bin", "tcp6.bin", "udp4.bin", "unix.bin"])
def test_truncated_replies_fail_cleanly(name):
    buf = (DATA / name).read_bytes()
    family = socket.AF_INET6 if "6" in name else socket.AF_INET
    parser = (lambda b, s, e: parse_unix(b, s, e, extended=True, memory=True)) if name == "unix.bin" else \
        inet_parser(family, 17 if "udp" in name else 6, timers=True, extended=True, memory=True, info=True)
    boundaries = set()
    off = 0
    while off < len(buf):
        boundaries.add(off)
        off += (NLMSGHDR.unpack_from(buf, off)[0] + 3) & ~3
    for cut in range(1, len(buf)):
        if cut in boundaries:  # whole messages: fewer records, no DONE yet
            _items, done, _ = parse_datagram(buf[:cut], cut, SEQ, parser)
            assert not done
            continue
        with pytest.raises(ProtocolError):
            parse_datagram(buf[:cut], cut, SEQ, parser)


@pytest.mark.parametrize("name", ["tcp4.bin", "tcp6.bin", "udp4.bin", "unix.bin"])
def test_corrupted_replies_fail_cleanly(name):
    """Random byte flips (lengths, attribute headers, payloads): a record, or a clean
    error; never an IndexError / struct.error / KeyError escaping."""
    buf = (DATA / name).read_bytes()
    family = socket.AF_INET6 if "6" in name else socket.AF_INET
    parser = (lambda b, s, e: parse_unix(b, s, e, extended=True, memory=True)) if name == "unix.bin" else \
        inet_parser(family, 17 if "udp" in name else 6, timers=True, extended=True, memory=True, info=True)
    rng = random.Random(name)
    for _ in range(3000):
        data = bytearray(buf)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            parse_datagram(bytes(data), len(data), SEQ, parser)
        except (ProtocolError, NetlinkError):
            pass


def test_garbage_fails_cleanly():
    rng = random.Random(7)
    parser = inet_parser(socket.AF_INET, 6, timers=True, extended=True, memory=True, info=True)
    for size in range(0, 300, 3):
        data = bytes(rng.randrange(256) for _ in range(size))
        try:
            parse_datagram(data, len(data), SEQ, parser)
        except (ProtocolError, NetlinkError):
            pass
    with pytest.raises(ProtocolError):
        parser(b"\0" * 71, 0, 71)
    with pytest.raises(ProtocolError):
        parse_unix(b"\0" * 15, 0, 15)


# --- netlink framing ------------------------------------------------------------------

def _msg(kind: int, payload: bytes, seq: int = SEQ, flags: int = 2) -> bytes:
    data = NLMSGHDR.pack(16 + len(payload), kind, flags, seq, 0) + payload
    return data + b"\0" * (-len(data) % 4)


def test_parse_datagram_control_messages():
    data = _msg(20, b"abcd") + _msg(20, b"xy", seq=99) + _msg(20, b"efgh", flags=2 | NLM_F_DUMP_INTR)
    data += _msg(NLMSG_DONE, struct.pack("=i", 0))
    def payload(b, s, e):
        return bytes(b[s:e])

    items, done, interrupted = parse_datagram(data, len(data), SEQ, payload)
    assert items == [b"abcd", b"efgh"] and done and interrupted  # seq 99 skipped
    with pytest.raises(NetlinkError) as err:
        parse_datagram(_msg(NLMSG_DONE, struct.pack("=i", -2)), 20, SEQ, payload)
    assert err.value.errno == 2
    error = _msg(NLMSG_ERROR, struct.pack("=i", -22) + NLMSGHDR.pack(16, 20, 0x301, SEQ, 0))
    with pytest.raises(NetlinkError) as err:
        parse_datagram(error, len(error), SEQ, payload)
    assert err.value.errno == 22
    ack = _msg(NLMSG_ERROR, struct.pack("=i", 0))
    assert parse_datagram(ack, len(ack), SEQ, payload) == ([], True, False)
    with pytest.raises(ProtocolError):
        parse_datagram(_msg(NLMSG_ERROR, b""), 16, SEQ, payload)
    with pytest.raises(ProtocolError, match="stray"):
        parse_datagram(_msg(20, b"abcd") + b"\1\2", 22, SEQ, payload)
    with pytest.raises(ProtocolError):
        parse_datagram(NLMSGHDR.pack(8, 20, 0, SEQ, 0), 16, SEQ, payload)  # length < header


def test_parse_attrs():
    raw = struct.pack("=HH", 8, 1) + b"abcd" + struct.pack("=HH", 5, 0x8002) + b"x\0\0\0"
    raw += struct.pack("=HH", 4, 3) + b"\1\2"  # an empty attribute, then 2 bytes too few for a header
    attrs = parse_attrs(raw, 0, len(raw))
    assert bytes(attrs[1]) == b"abcd" and bytes(attrs[2]) == b"x" and bytes(attrs[3]) == b""
    with pytest.raises(ProtocolError):
        parse_attrs(struct.pack("=HH", 12, 1) + b"abcd", 0, 8)  # overruns its message
    with pytest.raises(ProtocolError):
        parse_attrs(struct.pack("=HH", 2, 1) + b"abcd", 0, 8)  # shorter than its header


def test_short_attributes_are_protocol_errors():
    """Attributes shorter than their type needs (a u32 mark of 2 bytes, an empty v6only
    flag, a 4-byte RQLEN) raise ProtocolError from the parsers themselves."""
    base = bytearray((DATA / "tcp6.bin").read_bytes())
    msg_len = NLMSGHDR.unpack_from(base, 0)[0]
    body = bytes(base[16:16 + 72])
    parser = inet_parser(socket.AF_INET6, 6, extended=True)
    for kind, payload in ((15, b"\1\2"), (11, b""), (21, b"\1" * 4)):
        attr = struct.pack("=HH", 4 + len(payload), kind) + payload
        attr += b"\0" * (-len(attr) % 4)
        data = body + attr
        with pytest.raises(ProtocolError):
            parser(data, 0, len(data))
    assert msg_len > 88
    unix_msg = struct.pack("=BBBBIII", 1, 1, 10, 0, 5, 0, 0) + struct.pack("=HH", 8, 4) + b"\1\0\0\0"
    with pytest.raises(ProtocolError):
        parse_unix(unix_msg, 0, len(unix_msg))


def test_parse_tcp_info_lengths():
    with pytest.raises(ProtocolError):
        parse_tcp_info(b"\0" * 7)
    short = parse_tcp_info(bytes([1, 0, 0, 0, 0, 7, 0xA7, 1]) + b"\0" * 8, "cubic")
    assert short["options"] == ["ts", "sack", "wscale"] and (short["snd_wscale"], short["rcv_wscale"]) == (7, 10)
    assert short["rto_ms"] == 0.0 and "mss" not in short  # only the fields the kernel sent
    info = bytearray(232)
    struct.pack_into("=I", info, 68, 1500)  # rtt 1.5 ms
    struct.pack_into("=I", info, 80, 10)  # cwnd
    struct.pack_into("=I", info, 16, 1448)  # mss
    struct.pack_into("=I", info, 148, 0xFFFFFFFF)  # min_rtt unset
    struct.pack_into("=Q", info, 104, 0xFFFFFFFFFFFFFFFF)  # pacing rate unset
    struct.pack_into("=Q", info, 160, 1000)  # delivery rate, bytes/s
    parsed = parse_tcp_info(bytes(info), "bbr")
    assert parsed["rtt_ms"] == 1.5 and parsed["cwnd"] == 10 and parsed["min_rtt_ms"] is None
    assert parsed["pacing_rate_bps"] is None and parsed["delivery_rate_bps"] == 8000
    assert parsed["send_bps"] == int(10 * 1448 * 8000 / 1.5)


def test_skmem_and_names():
    assert parse_skmem(struct.pack("=7I", *range(7))) == {
        "rmem_alloc": 0, "rcvbuf": 1, "wmem_alloc": 2, "sndbuf": 3, "fwd_alloc": 4, "wmem_queued": 5, "optmem": 6}
    assert unix_name(b"\0abc\0d") == "@abc@d"  # every NUL of an abstract name is shown as @
    assert unix_name(b"/run/x.sock\0junk") == "/run/x.sock"
    assert unix_name(b"/tmp/\xff") == "/tmp/\\xff"


# --- /proc fallback ---------------------------------------------------------------------

def test_proc_net_inet_matches_netlink():
    """The /proc rows of the capture moment carry the same sockets as the netlink dump
    (ss's fallback: no listener backlog, so Send-Q 0 for LISTEN)."""
    from helpers.ss_text import Row
    nl = _inet("tcp4.bin", socket.AF_INET, 6) + _inet("tcp6.bin", socket.AF_INET6, 6)
    proc = procnet.parse_proc_inet((DATA / "proc_tcp.txt").read_text(), socket.AF_INET, "tcp", timers=True)
    proc += procnet.parse_proc_inet((DATA / "proc_tcp6.txt").read_text(), socket.AF_INET6, "tcp")

    def key(s):
        return (s.state, s.local_address, s.local_port, s.peer_address, s.peer_port, s.inode,
                s.recv_q, 0 if s.state == "LISTEN" else s.send_q)
    assert sorted(map(key, proc)) == sorted(map(key, nl))
    assert all(s.cookie is None for s in proc)
    udp = procnet.parse_proc_inet((DATA / "proc_udp.txt").read_text(), socket.AF_INET, "udp")
    assert {(s.local_port, s.recv_q) for s in udp} >= {(5353, 832)}
    assert Row  # imported for symmetry with the netlink tests


def test_proc_net_unix():
    socks = procnet.parse_proc_unix((DATA / "proc_unix.txt").read_bytes()).sockets
    by_inode = {s.inode: s for s in _unix()}
    # /proc also lists the not yet accepted server end of a pending connection (inode 0),
    # which unix_diag leaves out
    assert {s.inode for s in socks} == set(by_inode) | {0}
    for sock in socks:
        if not sock.inode:
            continue
        nl = by_inode[sock.inode]
        assert (sock.netid, sock.state, sock.local_address) == (nl.netid, nl.state, nl.local_address)
        assert sock.peer_port == 0 and sock.recv_q == sock.send_q == 0  # /proc has neither


@pytest.mark.parametrize("text", [
    "  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A\n",
    "  sl  local\n   0: zz:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 123 1\n",
    "  sl  local\n   0: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 123 1\n",
])
def test_proc_net_garbage(text):
    try:
        procnet.parse_proc_inet(text, socket.AF_INET, "tcp", timers=True)
    except ProtocolError:
        pass
    try:
        procnet.parse_proc_unix(text)
    except ProtocolError:
        pass


# --- processes -------------------------------------------------------------------------

def test_parse_comm():
    assert parse_comm(b"123 (we ird)nm) S 1 2 3") == "we ird)nm"  # ss would cut at the first ')'
    assert parse_comm(b"1 (systemd) S 0") == "systemd"
    assert parse_comm(b"9 ((sd-pam)) S 1") == "(sd-pam)"
    assert parse_comm(b"9 (a\xffb) S 1") == "a\\xffb"
    assert parse_comm(b"9 () S 1") == ""


def test_parse_container_id():
    cid = "4f1e" + "a" * 60
    assert parse_container_id(f"0::/system.slice/docker-{cid}.scope\n") == cid
    assert parse_container_id(f"0::/kubepods/burstable/pod1/cri-containerd-{cid}.scope") == cid
    assert parse_container_id(f"12:pids:/kubepods/besteffort/podx/{cid}\n11:cpu:/\n") == cid
    assert parse_container_id("0::/user.slice/user-0.slice/session-1.scope\n") is None
    assert parse_container_id("") is None
    assert parse_container_id("0::/" + "A" * 64) is None  # ids are lower-case hex
