"""``events``: every TCP/UDP socket of the namespace as the kernel destroys it (``ss -E``).

The kernel broadcasts an inet_diag message on NETLINK_SOCK_DIAG's destroy groups
(``sock_diag_broadcast_destroy``) for each full TCP or UDP socket it frees, in the
network namespace the listening netlink socket belongs to (destroy.py reads them).  It
carries no uid or inode (the socket has left its file by then), so the agent also dumps
the tables now and then (the *watch*) and remembers each socket's first sight, last
state, inode and uid by cookie, and with ``-p`` scans owners by inode.

Here: the subscription, the watch, the counts of ticks, and the loop (``run``).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

from ..errors import EXIT_OK, KernelError, PermissionDenied, UsageError
from ..filter import Selection
from ..filter import select as select_sockets
from ..netlink import NETLINK_SOCK_DIAG, parse_datagram
from ..query import Query, parse_duration
from ..schema import Event, EventCounts, Seen, Socket, Tick, Warning
from .counters import parse_counter_pairs, read_optional
from .destroy import Destroyed, destroy_parser, to_event
from .sockets import Details, InterfaceNames, collect, owners_warned

# enum sknetlink_groups (linux/sock_diag.h); bind() takes them as bits 1 << (group - 1).
SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET_UDP_DESTROY = 1, 2
SKNLGRP_INET6_TCP_DESTROY, SKNLGRP_INET6_UDP_DESTROY = 3, 4
GROUPS = {("inet", "tcp"): SKNLGRP_INET_TCP_DESTROY, ("inet", "udp"): SKNLGRP_INET_UDP_DESTROY,
          ("inet6", "tcp"): SKNLGRP_INET6_TCP_DESTROY, ("inet6", "udp"): SKNLGRP_INET6_UDP_DESTROY}
SO_RCVBUFFORCE = 33  # socket(7): above net.core.rmem_max, needs CAP_NET_ADMIN
SO_MEMINFO = 55  # u32[SK_MEMINFO_VARS]; index 8 is sk_drops (messages the kernel dropped)
_MEMINFO = struct.Struct("=9I")
_MESSAGE_COST = 640  # receive-buffer bytes a destroy message takes (1280 of the doubled buffer)
DEFAULT_TICK = 5.0  # s between ticks
DEFAULT_RCVBUF = 8 << 20  # the kernel doubles it: ~13k destroy messages of 1280 bytes (skb truesize)
WATCH_MIN_INTERVAL = 1.0  # s between table dumps, stretched to keep them under a tenth of the CPU
WATCH_DUTY = 10
_BATCH = 256  # datagrams read before writing: bounds the latency of a storm's first lines
# After a read that did not fill a batch, wait this long before the next: at a few thousand
# closes a second, waking per message cost as much again as the messages themselves.
_COALESCE = 0.01
DRAIN_SECONDS = 2.0  # at a stop by signal or --for: at most this long to write what is queued
# Namespace TCP counters each tick reports the change of: (field, /proc/net group, name).
KERNEL_COUNTERS = (
    ("active_opens", "Tcp", "ActiveOpens"), ("passive_opens", "Tcp", "PassiveOpens"),
    ("attempt_fails", "Tcp", "AttemptFails"), ("estab_resets", "Tcp", "EstabResets"),
    ("out_rsts", "Tcp", "OutRsts"), ("abort_on_data", "TcpExt", "TCPAbortOnData"),
    ("abort_on_close", "TcpExt", "TCPAbortOnClose"), ("abort_on_linger", "TcpExt", "TCPAbortOnLinger"),
    ("abort_on_timeout", "TcpExt", "TCPAbortOnTimeout"),
)


def groups_for(sel: Selection) -> int:
    """The bind() mask of the destroy groups ss -E would join for this selection."""
    mask = 0
    for (family, netid), group in GROUPS.items():
        if family in sel.families and netid in sel.netids:
            mask |= 1 << (group - 1)
    return mask


# --- counting -------------------------------------------------------------------------

def read_kernel_counters() -> dict[str, Optional[int]]:
    """The namespace's TCP counters (``nstat``'s Tcp*/TcpExt* names) that ticks report."""
    groups: dict[str, dict[str, int]] = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        text = read_optional(path)
        if text:
            try:
                groups.update(parse_counter_pairs(text))
            except ValueError:
                pass
    return {field: groups.get(group, {}).get(name) for field, group, name in KERNEL_COUNTERS}


def _kernel_delta(now: dict[str, Optional[int]], then: dict[str, Optional[int]]) -> dict[str, Optional[int]]:
    return {k: None if v is None or then.get(k) is None else v - then[k] for k, v in now.items()}  # type: ignore[operator]


class Counts:
    """The running counts of a tick's ``interval`` or ``total``."""

    def __init__(self, kernel: dict[str, Optional[int]]) -> None:
        self.events = self.unmatched = self.lost = self.resets = 0
        self.netid: dict[str, int] = {}
        self.state: dict[str, int] = {}
        self.close: dict[str, int] = {}
        self.kernel_start = kernel

    def add(self, event: Event) -> None:
        self.events += 1
        netid, state, close = event.netid, event.state, event.close or "none"
        self.netid[netid] = self.netid.get(netid, 0) + 1
        self.state[state] = self.state.get(state, 0) + 1
        self.close[close] = self.close.get(close, 0) + 1
        if close == "reset":
            self.resets += 1

    def record(self, kernel_now: dict[str, Optional[int]]) -> EventCounts:
        return EventCounts(events=self.events, unmatched=self.unmatched, lost=self.lost, resets=self.resets,
                           by_netid=dict(self.netid), by_state=dict(self.state), by_close=dict(self.close),
                           kernel=_kernel_delta(kernel_now, self.kernel_start))


# --- I/O: the subscription and the watch ---------------------------------------------

class Subscription:
    """A NETLINK_SOCK_DIAG socket joined to destroy groups, in the current network namespace."""

    def __init__(self, groups: int, rcvbuf: int) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        except PermissionError as exc:
            raise PermissionDenied(f"may not open a NETLINK_SOCK_DIAG socket ({exc.strerror})",
                                   "a seccomp or LSM policy forbids netlink sockets to this container; "
                                   "sock_diag itself needs no capability") from None
        except OSError as exc:
            raise KernelError(f"NETLINK_SOCK_DIAG is unavailable ({exc.strerror})",
                              "socket-destroy events need Linux >= 4.1 with CONFIG_INET_DIAG") from None
        try:
            self.sock.bind((0, groups))
        except PermissionError as exc:
            self.sock.close()
            raise PermissionDenied(
                f"the kernel refused to join the socket-destroy groups ({exc.strerror})",
                "this kernel lets only CAP_NET_ADMIN (over the namespace's user namespace) receive "
                "NETLINK_SOCK_DIAG multicast: run with the netadmin profile or --cap-add NET_ADMIN") from None
        except OSError as exc:
            self.sock.close()
            raise KernelError(f"cannot join the socket-destroy groups ({exc.strerror})",
                              "socket-destroy events need Linux >= 4.1 with CONFIG_INET_DIAG") from None
        self.forced = True
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:  # no CAP_NET_ADMIN: the kernel caps it at net.core.rmem_max
            self.forced = False
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # The kernel doubles the request for its bookkeeping and reports the doubled size.
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        self.sock.setblocking(False)
        self.buf = bytearray(64 * 1024)
        self.read = 0
        self.view = memoryview(self.buf)
        self.overruns = 0  #: ENOBUFS seen (each: at least one message lost)
        self._drops_base = self.drops()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def drops(self) -> Optional[int]:
        """Messages the kernel dropped for this socket so far (SO_MEMINFO's sk_drops)."""
        try:
            return _MEMINFO.unpack(self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size))[8]
        except (OSError, struct.error):
            return None

    def lost(self) -> int:
        """Messages lost since the subscription started: the drop counter, or at least one per ENOBUFS."""
        now = self.drops()
        if now is None or self._drops_base is None:
            return self.overruns
        return max(now - self._drops_base, self.overruns)

    def receive(self, parse: Callable[[Any, int, int], Any], limit: int = _BATCH) -> list:
        """Parse up to ``limit`` waiting datagrams; returns the parsed items (maybe none)."""
        items: list = []
        recv_into, buf, view = self.sock.recv_into, self.buf, self.view
        self.read = 0  #: reads that did not block: datagrams (maybe nothing selected) and ENOBUFS
        for _ in range(limit):
            try:
                size = recv_into(buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1  # the queue overflowed; the socket keeps working
                self.read += 1
                continue
            self.read += 1
            parsed, _done, _intr = parse_datagram(view, size, 0, parse)  # broadcasts carry seq 0
            items += parsed
        return items


class Watch:
    """Periodic dumps of the subscribed tables: cookie -> (first sight, last row), and with
    ``-p`` a periodic owner scan: inode -> processes.

    Each job runs at most every second, and no more often than keeps it under a tenth of
    the agent's CPU time (a dump of 40,000 sockets costs ~0.1 s).  Two
    generations of rows are kept, so a socket destroyed just before a dump is still known
    when its message is read after it.  TIME-WAIT and request sockets are left out: the
    first keeps its full socket's cookie but is never destroyed with a message.
    """

    def __init__(self, sel: Selection, processes: bool, warn: Callable[[Warning], None]) -> None:
        v4, v6 = "inet" in sel.families, "inet6" in sel.families
        self.sel = select_sockets(tcp="tcp" in sel.netids, udp="udp" in sel.netids, ipv4=v4 and not v6,
                                  ipv6=v6 and not v4, words=["exclude", "time-wait", "exclude", "syn-recv"])
        self.processes = processes
        self.warn = warn
        self.current: dict[int, tuple[float, Socket]] = {}
        self.previous: dict[int, tuple[float, Socket]] = {}
        self.owners: dict[int, list] = {}
        self.due = self.owners_due = 0.0

    def refresh(self, now: float) -> None:
        """Run whichever job is due at ``now`` (monotonic seconds)."""
        if now >= self.due:
            began, cpu = time.monotonic(), time.process_time()
            old, seen = self.current, {}
            for batch in collect(self.sel, Details(), self.warn):
                for sock in batch:
                    cookie = sock.cookie
                    if cookie is None:  # a /proc row: no cookie to match a message with
                        continue
                    known = old.get(cookie) or self.previous.get(cookie)
                    seen[cookie] = (known[0] if known else began, sock)
            self.previous, self.current = old, seen
            self.due = _next_run(cpu)
        if self.processes and now >= self.owners_due:
            cpu = time.process_time()
            self.owners = owners_warned(self.warn, pids_in_this_netns())
            self.owners_due = _next_run(cpu)

    @property
    def next_due(self) -> float:
        return min(self.due, self.owners_due) if self.processes else self.due

    def lookup(self, cookie: int, now: float) -> tuple[Optional[Seen], Optional[list]]:
        """The last sight of a socket, and its owners as the last scan found them."""
        found = self.current.get(cookie) or self.previous.get(cookie)
        if found is None:
            return None, None
        first, s = found
        seen = Seen(state=s.state, local_address=s.local_address or "", local_port=s.local_port,
                    peer_address=s.peer_address or "", peer_port=s.peer_port, inode=s.inode,
                    uid=s.uid, age_ms=round((now - first) * 1000, 3))
        return seen, self.owners.get(s.inode) if s.inode else None


def pids_in_this_netns(proc: str = "/proc") -> set[int]:
    """The visible processes in the agent's network namespace (the inspected one), and those
    whose namespace it may not read (their fds will be refused too, and counted).  Owners
    are looked for among them only: a host holds far more sockets than a namespace, and the
    scan is periodic here (a process holding a socket of a namespace it has left is missed)."""
    own = os.stat(f"{proc}/self/ns/net").st_ino
    pids = set()
    for entry in os.listdir(proc):
        if entry.isdigit():
            try:
                if os.stat(f"{proc}/{entry}/ns/net").st_ino == own:
                    pids.add(int(entry))
            except PermissionError:
                pids.add(int(entry))
            except OSError:  # gone
                pass
    return pids


def _next_run(cpu_before: float) -> float:
    """When a job that started at process time ``cpu_before`` may run again.  CPU time, not
    wall time: on a busy machine a job waits for a core, which costs the agent nothing."""
    cost = time.process_time() - cpu_before
    return time.monotonic() + max(WATCH_MIN_INTERVAL, cost * WATCH_DUTY)


# --- the command ----------------------------------------------------------------------

class EventsOptions(NamedTuple):
    """``events`` as a checked query resolves it (``options``)."""

    selection: Selection
    duration: Optional[float]  #: --for, seconds
    count: Optional[int]
    tick: float  #: seconds between ticks; 0: only the final one
    processes: bool
    info: bool
    watch: bool
    rcvbuf: int
    state_words: bool  #: state/exclude words were given (ss -E ignores them; so does the agent)
    stdin_stop: bool = False  #: --stdin-stop: stdin readable (a byte, EOF, hang-up) ends the run as SIGINT does


def options(query: Query, selection: Selection) -> EventsOptions:
    """The options of a checked ``events`` query (query.py validated every flag), with
    the agent's defaults, and its selection (names resolved in the inspected namespace)."""
    if not groups_for(selection):
        raise UsageError("events covers TCP and UDP sockets only", "use -t, -u, -4 or -6 (or none), and inet "
                         "addresses in the filter")
    words = query.words
    return EventsOptions(
        selection, parse_duration(query.duration) if query.duration is not None else None, query.count,
        DEFAULT_TICK if query.tick is None else query.tick, query.flags.processes, query.flags.info,
        not query.no_watch, DEFAULT_RCVBUF if query.rcvbuf is None else query.rcvbuf,
        bool(words) and words[0] in ("state", "exclude", "excl"), query.stdin_stop)


class _Stop:
    """SIGINT/SIGTERM while subscribed: remember the signal and wake the poll through a pipe,
    so the loop ends between two whole records (a handler that raised could cut a line)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.signal: Optional[str] = None
        self.saved = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        self.saved_wakeup = signal.set_wakeup_fd(self.write_fd)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signal = self.signal or signal.Signals(signum).name

    def close(self) -> None:
        signal.set_wakeup_fd(self.saved_wakeup)
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        os.close(self.read_fd)
        os.close(self.write_fd)


def matcher(sel: Selection) -> Callable[[Socket], bool]:
    """ss -E's test of a message: its family, then ss's own evaluation of the expression
    (no state mask, no kernel bytecode: there is no dump)."""
    families, netids, expr = sel.families, sel.netids, sel.expr

    def matches(sock: Socket) -> bool:
        return sock.family in families and sock.netid in netids and (expr is None or expr(sock))
    return matches


def run(opts: EventsOptions, out: Any) -> int:
    """Subscribe, then write events and ticks until --count, --for or a signal ends it."""
    from .. import serve

    sub = Subscription(groups_for(opts.selection), opts.rcvbuf)
    stop = _Stop()
    try:
        return _loop(opts, out, sub, stop, bool(os.environ.get(serve.SERVE_ENV)))
    finally:
        stop.close()
        sub.close()


def _warn_once(out: Any) -> Callable[[Warning], None]:
    said: set[str] = set()

    def warn(w: Warning) -> None:
        if w.code != "dump-interrupted" and w.code not in said:  # a watch dump may be torn: harmless
            said.add(w.code)
            out.emit(w)
    return warn


class _Stream:
    """The state of one run: the counts of the current tick and of the whole run, what
    has been said about losses, and why it ended."""

    def __init__(self, opts: EventsOptions, out: Any, sub: Subscription, watch: Optional[Watch]) -> None:
        self.opts, self.out, self.sub, self.watch = opts, out, sub, watch
        kernel = read_kernel_counters()  # from the subscription on, like the events
        self.total, self.interval = Counts(kernel), Counts(kernel)
        self.started = self.last_tick = time.monotonic()
        self.matches = matcher(opts.selection)
        self.lost_said = self.lost_said_at = 0
        self.ended_by: Optional[str] = None

    def handle(self, items: list[Destroyed]) -> None:
        """Write the events of one read (up to --count) and count them."""
        opts, watch, total, interval = self.opts, self.watch, self.total, self.interval
        wall, mono = time.time(), time.monotonic()
        events = []
        for d in items:
            if not self.matches(d.sock):
                total.unmatched += 1
                interval.unmatched += 1
                continue
            seen, owners = watch.lookup(d.sock.cookie, mono) if watch else (None, None)
            if opts.processes and owners is None:
                owners = []
            event = to_event(d, wall, seen, owners if opts.processes else None, opts.info)
            events.append(event)
            total.add(event)
            interval.add(event)
            if opts.count is not None and total.events >= opts.count:
                self.ended_by = "count"
                break
        if events:
            self.out.emit_batch(events)

    def count_lost(self, final: bool = False) -> None:
        """Count newly lost messages into the ticks, and say so in a warning (at most once a
        second during a storm, and once more before the final tick)."""
        lost = self.sub.lost()
        if lost > self.total.lost:
            self.interval.lost += lost - self.total.lost
            self.total.lost = lost
        now = time.monotonic()
        if lost <= self.lost_said or (not final and now - self.lost_said_at < 1.0):
            return
        self.out.warning("events-lost", f"the kernel dropped {lost - self.lost_said} destroy messages: the "
                         "agent's receive buffer was full (a storm of closes, or a slow reader of this stream); "
                         "ticks count them under lost", lost - self.lost_said)
        self.lost_said, self.lost_said_at = lost, now

    def tick(self, now: float, final: bool = False) -> None:
        self.count_lost(final)
        kernel = read_kernel_counters()
        self.out.emit(Tick(round((now - self.started) * 1000, 3), self.interval.record(kernel),
                           self.total.record(kernel), final=final, ended_by=self.ended_by if final else None))
        self.interval, self.last_tick = Counts(kernel), now


def _loop(opts: EventsOptions, out: Any, sub: Subscription, stop: _Stop, poke_serve: bool) -> int:
    from .. import serve

    if sub.rcvbuf < opts.rcvbuf:
        out.warning("events-rcvbuf-limited",
                    f"the receive buffer holds {sub.rcvbuf} bytes, not {opts.rcvbuf} (net.core.rmem_max caps "
                    "it without CAP_NET_ADMIN): a burst of more than about "
                    f"{max(1, sub.rcvbuf // _MESSAGE_COST)} closes between two reads is lost and counted in ticks",
                    sub.rcvbuf)
    if opts.state_words:
        out.warning("events-state-ignored", "state and exclude words are ignored, as by ss -E: every "
                    "destroyed TCP socket is in state UNCONN (its state before the close: seen.state)")
    watch = Watch(opts.selection, opts.processes, _warn_once(out)) if opts.watch else None
    run = _Stream(opts, out, sub, watch)
    if watch is not None:
        watch.refresh(run.started)
    parse = destroy_parser(InterfaceNames(), opts.info)
    deadline = run.started + opts.duration if opts.duration is not None else None
    poller = select.poll()
    poller.register(sub.fileno(), select.POLLIN)
    poller.register(stop.read_fd, select.POLLIN)
    if opts.stdin_stop:
        # A reader that cannot signal the agent (an exec has no signal channel) writes a byte
        # or closes stdin; an exec whose client went away closes it too, so no agent is left
        # behind.  Nothing is read: the first readiness ends the run.
        poller.register(0, select.POLLIN)
    while run.ended_by is None:
        wakes = [t for t in (deadline, watch.next_due if watch else None,
                             run.last_tick + opts.tick if opts.tick else None) if t is not None]
        wait = max(0.0, min(wakes) - time.monotonic()) if wakes else None
        ready = poller.poll(None if wait is None else wait * 1000)
        run.ended_by = stop.signal
        if run.ended_by is None and opts.stdin_stop and any(fd == 0 for fd, _ in ready):
            run.ended_by = "stdin"
        if any(fd == sub.fileno() for fd, _ in ready):
            items = sub.receive(parse)
            run.handle(items)
            run.count_lost()
            if len(items) < _BATCH and run.ended_by is None:
                time.sleep(_COALESCE)
        now = time.monotonic()
        if run.ended_by is None and deadline is not None and now >= deadline:
            run.ended_by = "for"
        if run.ended_by is None and watch is not None and now >= watch.next_due:
            watch.refresh(now)
        if run.ended_by is None and opts.tick and now >= run.last_tick + opts.tick:
            run.tick(now)
            if poke_serve:  # a long run must keep the plugin's serve container alive
                serve.keep_alive()
    if run.ended_by != "count":  # closes before the stop that are still queued are part of the run
        drain_until = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < drain_until and run.ended_by != "count":
            run.handle(sub.receive(parse))
            if not sub.read:
                break
    run.tick(time.monotonic(), final=True)
    return EXIT_OK
