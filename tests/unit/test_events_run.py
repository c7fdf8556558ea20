"""``events`` around the parser: flags rejected before any socket is opened, a refused
subscription named with its capability, ENOBUFS counted and survived, ticks' counts.
The socket doubles here stand in for the kernel only on error paths; the feature itself
is proven in tests/integration/test_events_vs_ss.py."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from sockdebug_agent import cli
from sockdebug_agent.errors import KernelError, PermissionDenied, UsageError
from sockdebug_agent.inspectors import events
from sockdebug_agent.inspectors.destroy import destroy_parser, to_event
from sockdebug_agent.inspectors.events import Counts, Subscription
from sockdebug_agent.netlink import parse_datagram
from sockdebug_agent.query import Query, SocketFlags
from sockdebug_agent.stream import Writer

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(("argv", "says"), [
    (["events", "--count", "0"], "--count"),
    (["events", "--for", "soon"], "--for"),
    (["events", "--for", "0"], "--for"),
    (["events", "--tick", "-1"], "--tick"),
    (["events", "--rcvbuf", "10"], "--rcvbuf"),
    (["events", "-p", "--no-watch"], "-p"),
    (["events", "-x"], "-x"),  # unix sockets have no destroy messages: not a flag of events
    (["events", "-t", "dport", "=", ":80", "and"], "and"),
    (["events", "src", "unix:/tmp/x"], "TCP and UDP"),  # a unix host condition: no group to join
    (["events", "--count", "\u0663"], "--count"),  # ASCII digits only, as ss reads numbers
    (["events", "--tick", "nan"], "--tick"),
    (["events", "--rcvbuf", "1e6"], "--rcvbuf"),
])
def test_bad_flags_end_framed_with_a_usage_error(run_agent, argv, says):
    run = run_agent(*argv)
    assert run.returncode == 2 and not run.of_type("event")
    (error,) = run.of_type("error")
    assert error["code"] == "usage" and says in error["message"]


class FakeNetlink:
    """What socket.socket(AF_NETLINK, ...) returns here: scripted failures and datagrams."""

    def __init__(self, bind_error=None, datagrams=(), meminfo=True):
        self.bind_error, self.datagrams, self.meminfo = bind_error, list(datagrams), meminfo
        self.closed = False

    def bind(self, _addr):
        if self.bind_error:
            raise self.bind_error

    def setsockopt(self, level, opt, value):
        if opt == events.SO_RCVBUFFORCE:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self.rcvbuf = value

    def getsockopt(self, level, opt, size=None):
        if opt == events.SO_MEMINFO:
            if not self.meminfo:
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
            return bytes(36)
        return self.rcvbuf  # what the kernel reports: twice the request, here rmem_max-capped

    def setblocking(self, _flag):
        pass

    def recv_into(self, buf):
        if not self.datagrams:
            raise BlockingIOError()
        item = self.datagrams.pop(0)
        if isinstance(item, Exception):
            raise item
        buf[:len(item)] = item
        return len(item)

    def fileno(self):
        return -1

    def close(self):
        self.closed = True


def fake(monkeypatch, **kw):
    sock = FakeNetlink(**kw)
    monkeypatch.setattr(events.socket, "socket", lambda *a: sock)
    return sock


def test_a_refused_subscription_names_the_capability(monkeypatch):
    sock = fake(monkeypatch, bind_error=PermissionError(errno.EPERM, "Operation not permitted"))
    with pytest.raises(PermissionDenied) as caught:
        Subscription(0xF, 1 << 20)
    assert "CAP_NET_ADMIN" in caught.value.hint and caught.value.code == "permission"
    assert sock.closed


def test_a_forbidden_netlink_socket_is_a_permission_error(monkeypatch):
    def deny(*_a):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(events.socket, "socket", deny)
    with pytest.raises(PermissionDenied) as caught:
        Subscription(0xF, 1 << 20)
    assert "seccomp" in caught.value.hint


def test_a_kernel_without_the_groups_is_a_kernel_error(monkeypatch):
    fake(monkeypatch, bind_error=OSError(errno.EINVAL, "Invalid argument"))
    with pytest.raises(KernelError):
        Subscription(0xF, 1 << 20)


def test_enobufs_is_counted_and_reading_goes_on(monkeypatch):
    data = (DATA / "events.bin").read_bytes()
    first = data[:int.from_bytes(data[:4], "little")]
    overflow = OSError(errno.ENOBUFS, "No buffer space available")
    fake(monkeypatch, datagrams=[first, overflow, first, overflow], meminfo=False)
    sub = Subscription(0xF, 1 << 20)
    assert sub.rcvbuf == (1 << 20) // 2 and not sub.forced  # SO_RCVBUFFORCE refused: SO_RCVBUF taken
    items = sub.receive(destroy_parser())
    assert len(items) == 2 and sub.overruns == 2
    assert sub.lost() == 2  # without SO_MEMINFO: at least one lost message per ENOBUFS


def test_other_receive_errors_are_raised(monkeypatch):
    fake(monkeypatch, datagrams=[OSError(errno.EBADF, "Bad file descriptor")])
    with pytest.raises(OSError):
        Subscription(0xF, 1 << 20).receive(destroy_parser())


def test_counts_of_a_tick():
    data = (DATA / "events.bin").read_bytes()
    items, _, _ = parse_datagram(data, len(data), 0, destroy_parser())
    labels = json.loads((DATA / "events_labels.json").read_text())
    counts = Counts({"estab_resets": 5, "out_rsts": None})
    for d in items:
        counts.add(to_event(d, 0.0))
    counts.unmatched = 3
    record = counts.record({"estab_resets": 7, "out_rsts": 4})
    assert record["events"] == len(labels) and record["unmatched"] == 3
    assert record["by_netid"] == {"tcp": len(labels) - 3, "udp": 3}
    assert record["resets"] == record["by_close"]["reset"] == 2
    assert record["by_close"]["none"] == 3  # UDP
    assert record["kernel"] == {"estab_resets": 2, "out_rsts": None}  # unknown at the start: no delta


def test_kernel_counters_of_this_namespace():
    counters = events.read_kernel_counters()
    assert set(counters) == {field for field, _g, _n in events.KERNEL_COUNTERS}
    assert all(v is None or v >= 0 for v in counters.values())


def test_the_matcher_is_ss_e():
    """Family, table and ss's own evaluation of the expression; no state mask."""
    from sockdebug_agent.filter import select

    data = (DATA / "events.bin").read_bytes()
    items, _, _ = parse_datagram(data, len(data), 0, destroy_parser())
    socks = [d.sock for d in items]

    def kept(**kw):
        return [s for s in socks if events.matcher(select(**kw))(s)]

    assert len(kept()) == len(socks)
    assert {s.family for s in kept(ipv6=True)} == {"inet6"}
    assert {s.netid for s in kept(udp=True)} == {"udp"}
    assert {(s.local_port, s.peer_port) for s in kept(tcp=True, words=["dport", "=", ":7000"])} == \
        {(s.local_port, 7000) for s in socks if s.peer_port == 7000}
    assert kept(tcp=True, words=["state", "established"]) == [s for s in socks if s.netid == "tcp"]


EVENT_QUERIES = [
    Query("events"),
    Query("events", SocketFlags(tcp=True, ipv6=True, processes=True, info=True), ("dport", "=", ":443"),
          duration="30s", count=5, tick=0.5, rcvbuf=1 << 20),
    Query("events", SocketFlags(udp=True, ipv4=True), ("sport", "=", "-1"), no_watch=True, tick=0),
    Query("events", SocketFlags(ipv4=True, ipv6=True, preferred_family="inet"), ("src", "127.0.0.1")),
    Query("events", SocketFlags(tcp=True, processes=True), duration="30s", stdin_stop=True),
]


@pytest.mark.parametrize("query", EVENT_QUERIES, ids=lambda q: " ".join(q.to_argv()))
def test_events_queries_round_trip_through_the_agents_parser(query):
    """The plugin's --events builds a Query; the agent reads the same one back."""
    query.check()
    argv = query.to_argv()
    assert Query.from_argv(argv) == query
    assert Query.from_args(cli.build_parser().parse_args(["--netns", "x", *argv])) == query


@pytest.mark.parametrize(("query", "says"), [
    (Query("events", SocketFlags(listening=True)), "-l"),
    (Query("events", SocketFlags(unix=True)), "-x"),
    (Query("events", SocketFlags(memory=True)), "-m"),
    (Query("events", duration="soon"), "--for"),
    (Query("events", duration="0s"), "--for"),
    (Query("events", count=0), "--count"),
    (Query("events", tick=-1.0), "--tick"),
    (Query("events", rcvbuf=100), "--rcvbuf"),
    (Query("events", SocketFlags(processes=True), no_watch=True), "-p"),
    (Query("sockets", count=3), "--count"),
    (Query("triage", duration="1s"), "--for"),
    (Query("sockets", stdin_stop=True), "--stdin-stop"),
])
def test_events_checks_on_the_laptop(query, says):
    with pytest.raises(UsageError) as caught:
        query.check()
    assert says in caught.value.cause


def test_options_take_the_agents_defaults():
    from sockdebug_agent.filter import select

    opts = events.options(Query("events").check(), select())
    assert (opts.tick, opts.rcvbuf, opts.watch, opts.duration, opts.count) == (
        events.DEFAULT_TICK, events.DEFAULT_RCVBUF, True, None, None)
    opts = events.options(Query("events", words=("state", "established"), duration="2m").check(), select())
    assert opts.state_words and opts.duration == 120.0


def test_events_write_records_even_where_tables_are_asked_for():
    """Tables are printed at end; a follow stream has none to wait for."""
    assert type(cli.writer(["-o", "table", "events", "-t"])) is Writer
    assert type(cli.writer(["--netns", "x", "-o", "table", "sockets"])) is not Writer
