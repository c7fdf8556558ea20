"""Netlink.stream on the real kernel: the prefetching helper thread gives the same
records as plain receiving, stops with its reply, and the reply-end check is exact."""

from __future__ import annotations

import importlib
import socket
import struct
import threading
import types
from pathlib import Path

import pytest
from sockdebug_agent import netlink
from sockdebug_agent.inspectors.sockdiag import SOCK_DIAG_BY_FAMILY, inet_parser, inet_request

ALL_STATES = 0xFFF


@pytest.fixture
def many_sockets():
    """A listener with a few hundred accepted connections on loopback: enough for a
    multi-datagram TCP dump."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    held = [listener]
    for _ in range(300):
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        held += (client, server)
    yield listener.getsockname()[1]
    for s in held:
        s.close()


def _dump(prefetch: bool) -> list:
    with netlink.Netlink(netlink.NETLINK_SOCK_DIAG) as nl:
        batches = list(nl.stream(SOCK_DIAG_BY_FAMILY, inet_request(socket.AF_INET, 6, ALL_STATES),
                                 inet_parser(socket.AF_INET, 6), prefetch=prefetch))
    return [s for b in batches for s in b], len(batches)


def test_prefetch_gives_the_same_sockets_and_its_thread_ends(many_sockets):
    before = threading.active_count()
    fetched, batches = _dump(prefetch=True)
    plain, _ = _dump(prefetch=False)
    assert batches > 1  # several datagrams, so the helper really pipelined

    def ours(socks):  # the fixture's sockets: the rest of this namespace may change in between
        return sorted((s.local_port, s.peer_port, s.inode, s.state) for s in socks if many_sockets in
                      (s.local_port, s.peer_port))

    assert ours(fetched) == ours(plain) and len(ours(fetched)) == 601
    for thread in threading.enumerate():
        if thread.name == "netlink-prefetch":
            thread.join(timeout=5)
    assert threading.active_count() == before


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "netlink-prefetch"]


def test_a_one_datagram_reply_starts_no_thread(monkeypatch):
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self))
    with netlink.Netlink(netlink.NETLINK_SOCK_DIAG) as nl:  # CLOSING sockets: none here
        batches = list(nl.stream(SOCK_DIAG_BY_FAMILY, inet_request(socket.AF_INET, 6, 1 << 11),
                                 inet_parser(socket.AF_INET, 6), prefetch=True))
    assert batches == [] and started == []


# INET_DIAG_INFO, _CONG and _SKMEMINFO: bigger messages, so the dump spans more datagrams
# than the reader's three and the helper's ring together (else the helper may end first).
BIG_MESSAGES = (1 << 1) | (1 << 3) | (1 << 6)


def test_a_reader_that_stops_early_ends_the_helper(many_sockets):
    with netlink.Netlink(netlink.NETLINK_SOCK_DIAG) as nl:
        batches = nl.stream(SOCK_DIAG_BY_FAMILY, inet_request(socket.AF_INET, 6, ALL_STATES, BIG_MESSAGES),
                            inet_parser(socket.AF_INET, 6), prefetch=True)
        for _ in range(3):  # the third datagram comes from the helper (after a full one)
            next(batches)
        assert _prefetch_threads()
        batches.close()
    for thread in _prefetch_threads():
        thread.join(timeout=10)
    assert not _prefetch_threads()


def test_what_stops_the_helper_is_raised_in_the_reader(monkeypatch, many_sockets):
    """MemoryError under RLIMIT_AS in the helper: the reader raises it, nothing hangs and
    no thread traceback is printed (threading.excepthook is never reached)."""
    real = netlink._receive
    hooked = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)

    def failing(sock, view):
        if threading.current_thread().name == "netlink-prefetch":
            raise MemoryError()
        return real(sock, view)

    monkeypatch.setattr(netlink, "_receive", failing)
    with netlink.Netlink(netlink.NETLINK_SOCK_DIAG) as nl, pytest.raises(MemoryError):
        list(nl.stream(SOCK_DIAG_BY_FAMILY, inet_request(socket.AF_INET, 6, ALL_STATES),
                       inet_parser(socket.AF_INET, 6), prefetch=True))
    for thread in _prefetch_threads():
        thread.join(timeout=5)
    assert not _prefetch_threads() and not hooked


def test_a_thread_started_by_a_failing_start_never_reads(monkeypatch, many_sockets):
    """Under RLIMIT_AS, Thread.start can raise RuntimeError ("can't allocate lock", from the
    wait for the new thread) after the thread was started.  The reader then receives the rest
    itself; the helper must not read too, or it takes datagrams (the reply's end among them)
    and the reader waits for them forever."""
    real = threading.Thread.start
    started = []

    def start_then_fail(self):
        real(self)
        if self.name != "netlink-prefetch":
            return
        started.append(self)
        raise RuntimeError("can't allocate lock")

    monkeypatch.setattr(threading.Thread, "start", start_then_fail)
    done = []
    reader = threading.Thread(target=lambda: done.append(_dump(prefetch=True)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert done, "the reader hangs: the helper took part of the reply"
    monkeypatch.undo()
    fetched, _ = done[0]
    assert len([s for s in fetched if many_sockets in (s.local_port, s.peer_port)]) == 601
    assert started and all(t.daemon for t in started)  # left waiting for a slot; the process may exit


def test_a_datagram_larger_than_the_buffer_is_an_error():
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_SOCK_DIAG)
    with sock:
        payload = inet_request(socket.AF_INET, 6, ALL_STATES)
        sock.send(netlink.NLMSGHDR.pack(16 + len(payload), SOCK_DIAG_BY_FAMILY, 0x301, 1, 0) + payload)
        with pytest.raises(netlink.ProtocolError, match="does not fit"):
            netlink._receive(sock, memoryview(bytearray(8)))


def test_prefetch_reports_kernel_errors():
    # An unknown family: the kernel answers with an error, which must surface.
    with netlink.Netlink(netlink.NETLINK_SOCK_DIAG) as nl, pytest.raises(netlink.NetlinkError):
        list(nl.stream(SOCK_DIAG_BY_FAMILY, inet_request(99, 6, ALL_STATES), inet_parser(socket.AF_INET, 6),
                       prefetch=True))


def _msg(kind: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), kind, 0, 1, 0) + payload


@pytest.mark.parametrize(("datagram", "ends"), [
    (_msg(20, b"x" * 72) + _msg(netlink.NLMSG_DONE, struct.pack("=i", 0)), True),
    (_msg(netlink.NLMSG_DONE, struct.pack("=i", -2)), True),
    (_msg(netlink.NLMSG_ERROR, struct.pack("=i", -22) + b"\0" * 16), True),
    (_msg(20, b"x" * 72) + _msg(20, b"y" * 72), False),
    # a data message whose last 20 bytes are not a DONE header
    (_msg(20, struct.pack("=IH", 21, netlink.NLMSG_DONE) + b"\0" * 66), False),
])
def test_ends_reply(datagram, ends):
    buf = bytearray(datagram)
    assert netlink._ends_reply(buf, len(buf)) is ends


def _handlers(code) -> list[tuple[int, int, bool]]:
    """(start, end, needs lasti) of each entry of a 3.11+ code object's exception table."""
    data, pos, out = code.co_exceptiontable, 0, []

    def varint() -> int:
        nonlocal pos
        byte = data[pos]
        pos += 1
        value = byte & 63
        while byte & 64:
            byte = data[pos]
            pos += 1
            value = (value << 6) | (byte & 63)
        return value

    while pos < len(data):
        start, length, _target, depth_lasti = varint(), varint(), varint(), varint()
        out.append((start, start + length, bool(depth_lasti & 1)))
    return out


def _code_objects(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


@pytest.mark.skipif(not hasattr(types.CodeType, "co_exceptiontable"), reason="Python < 3.11")
@pytest.mark.parametrize("module", ["netlink", "inspectors.sockets", "inspectors.sockdiag", "inspectors.processes",
                                    "inspectors.podns"])
def test_try_blocks_of_the_dump_path_stay_short(module):
    """netlink._SHORT_TRY: no instruction beyond offset 256 is guarded by a handler that
    needs its offset as an int, which CPython 3.11 cannot allocate when memory is gone
    (and then unwinds into the same handler forever)."""
    mod = importlib.import_module(f"sockdebug_agent.{module}")
    code = compile(Path(mod.__file__).read_text(), mod.__file__, "exec")
    long = [(c.co_qualname, start, end) for c in _code_objects(code) for start, end, lasti in _handlers(c)
            if lasti and end > netlink._SHORT_TRY + 1]
    assert not long
