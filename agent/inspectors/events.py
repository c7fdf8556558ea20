"""``events``: every TCP/UDP socket of the namespace as the kernel destroys it (``ss -E``).

The kernel broadcasts an inet_diag message on NETLINK_SOCK_DIAG's destroy groups
(``sock_diag_broadcast_destroy``) for each full TCP or UDP socket it frees, in the
network namespace the listening netlink socket belongs to: addresses, ports, state,
queues, cookie and, for TCP, the final ``tcp_info``.  It carries no uid or inode (the
socket has left its file by then), so the agent also dumps the tables now and then
(the *watch*) and remembers each socket's first sight, last state, inode, uid and,
with ``-p``, owners, by cookie.

``destroy_parser``, ``classify`` and ``lifetime_ms`` are pure (bytes or records in,
records out) and tested on captured bytes; ``run`` is the loop around them.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

from ..errors import EXIT_OK, KernelError, PermissionDenied, UsageError
from ..filter import Selection
from ..filter import select as select_sockets
from ..netlink import NETLINK_SOCK_DIAG, ProtocolError, parse_attrs, parse_datagram
from ..schema import Event, EventCounts, Seen, Socket, Tick, Warning
from .counters import parse_counter_pairs, read_optional
from .sockdiag import INET_DIAG_INFO, IPPROTO_TCP, IPPROTO_UDP, inet_parser, parse_tcp_info
from .sockets import Details, InterfaceNames, collect, owners_warned

# enum sknetlink_groups (linux/sock_diag.h); bind() takes them as bits 1 << (group - 1).
SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET_UDP_DESTROY = 1, 2
SKNLGRP_INET6_TCP_DESTROY, SKNLGRP_INET6_UDP_DESTROY = 3, 4
GROUPS = {("inet", "tcp"): SKNLGRP_INET_TCP_DESTROY, ("inet", "udp"): SKNLGRP_INET_UDP_DESTROY,
          ("inet6", "tcp"): SKNLGRP_INET6_TCP_DESTROY, ("inet6", "udp"): SKNLGRP_INET6_UDP_DESTROY}
INET_DIAG_PROTOCOL = 10  # the u8 the destroy message adds (a dump's messages lack it)
_INET_MSG_LEN = 72
SO_RCVBUFFORCE = 33  # socket(7): above net.core.rmem_max, needs CAP_NET_ADMIN
SO_MEMINFO = 55  # u32[SK_MEMINFO_VARS]; index 8 is sk_drops (messages the kernel dropped)
_MEMINFO = struct.Struct("=9I")
DEFAULT_RCVBUF = 8 << 20  # ~20k destroy messages (an skb of ~400 bytes each) before any loss
WATCH_MIN_INTERVAL = 1.0  # s between table dumps, stretched to keep them under a tenth of the time
WATCH_DUTY = 10
_BATCH = 256  # datagrams read before writing: bounds the latency of a storm's first lines
CLOSE_KINDS = ("closed", "reset", "failed", "timeout", "unconnected")
# Namespace TCP counters each tick reports the change of: (field, /proc/net group, name).
KERNEL_COUNTERS = (
    ("active_opens", "Tcp", "ActiveOpens"), ("passive_opens", "Tcp", "PassiveOpens"),
    ("attempt_fails", "Tcp", "AttemptFails"), ("estab_resets", "Tcp", "EstabResets"),
    ("out_rsts", "Tcp", "OutRsts"), ("abort_on_data", "TcpExt", "TCPAbortOnData"),
    ("abort_on_close", "TcpExt", "TCPAbortOnClose"), ("abort_on_linger", "TcpExt", "TCPAbortOnLinger"),
    ("abort_on_timeout", "TcpExt", "TCPAbortOnTimeout"),
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_ANY = ("0.0.0.0", "::")


def parse_duration(text: str) -> float:
    """``30s``, ``1.5m``, ``500ms``, ``2h`` or plain seconds -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 2m, 500ms, or seconds)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def groups_for(sel: Selection) -> int:
    """The bind() mask of the destroy groups ss -E would join for this selection."""
    mask = 0
    for (family, netid), group in GROUPS.items():
        if family in sel.families and netid in sel.netids:
            mask |= 1 << (group - 1)
    return mask


# --- pure: bytes -> records -----------------------------------------------------------

class Destroyed(NamedTuple):
    """One parsed destroy message: the socket as a dump row would show it, and its final
    tcp_info (None for UDP) with ``tcpi_retransmits``, which ``parse_tcp_info`` leaves out."""

    sock: Socket
    tcp_info: Optional[dict[str, Any]]
    retransmits: Optional[int]


# The tcp_info fields an event shows, read in one unpack (``parse_tcp_info`` reads all
# ~50, three times the cost of the rest of an event): tcpi_retransmits, lost, last_data_sent,
# last_data_recv, rtt, total_retrans, bytes_acked, bytes_received, segs_out, segs_in,
# bytes_sent, snd_wnd (struct tcp_info of Linux >= 5.4; shorter ones take the full parse).
_TCP_FIGURES = struct.Struct("=2xB29xI8xI4xI12xI28xI16xQQII56xQ20xI")
_FIGURE_NAMES = ("lost", "last_data_sent_ms", "last_data_recv_ms", "rtt_us", "total_retrans", "bytes_acked",
                 "bytes_received", "segs_out", "segs_in", "bytes_sent", "snd_wnd")


def tcp_figures(data: Any) -> tuple[dict[str, Any], int]:
    """The final tcp_info fields events use, by ``parse_tcp_info``'s names, and tcpi_retransmits."""
    if len(data) < _TCP_FIGURES.size:
        return parse_tcp_info(data), data[2] if len(data) > 2 else 0
    retransmits, *values = _TCP_FIGURES.unpack_from(data)
    figures = dict(zip(_FIGURE_NAMES, values))
    figures["rtt_ms"] = figures.pop("rtt_us") / 1000.0
    return figures, retransmits


def destroy_parser(ifname: Callable[[int], Optional[str]] = lambda i: None, info: bool = False
                   ) -> Callable[[Any, int, int], Optional[Destroyed]]:
    """A parser of destroy messages (``parse_datagram``'s ``parse``).  The protocol comes
    from INET_DIAG_PROTOCOL, then the dump's own ``inet_parser`` reads the message.  With
    ``info`` the whole tcp_info is parsed (``-i``), else only the fields an event shows."""
    parsers: dict[tuple[int, int], Callable[[Any, int, int], Socket]] = {}

    def parse(buf: Any, start: int, end: int) -> Optional[Destroyed]:
        if end - start < _INET_MSG_LEN:
            raise ProtocolError(f"inet_diag_msg of {end - start} bytes (need {_INET_MSG_LEN})")
        family = buf[start]
        if family not in (socket.AF_INET, socket.AF_INET6):
            return None
        attrs = parse_attrs(buf, start + _INET_MSG_LEN, end)
        raw_info = attrs.get(INET_DIAG_INFO)
        raw_proto = attrs.get(INET_DIAG_PROTOCOL)
        if raw_proto is not None and len(raw_proto):
            protocol = raw_proto[0]
        else:  # only TCP's destroy message carries tcp_info
            protocol = IPPROTO_TCP if raw_info is not None else IPPROTO_UDP
        if protocol not in (IPPROTO_TCP, IPPROTO_UDP):
            return None
        parser = parsers.get((family, protocol))
        if parser is None:
            parser = parsers[family, protocol] = inet_parser(family, protocol, ifname=ifname)
        sock = parser(buf, start, end)
        if raw_info is None:
            return Destroyed(sock, None, None)
        if info:
            return Destroyed(sock, parse_tcp_info(raw_info), raw_info[2] if len(raw_info) > 2 else None)
        return Destroyed(sock, *tcp_figures(raw_info))

    return parse


def classify(sock: Socket, tcp_info: Optional[dict[str, Any]], retransmits: Optional[int],
             last_state: Optional[str] = None) -> Optional[str]:
    """How a TCP connection ended, judged from its final figures (docs/schema.md, ``close``):

    - ``unconnected``: it had no peer (a listener, or a socket that never connected);
    - ``failed`` / ``reset``: the kernel had already torn it down (``tcp_disconnect``
      keeps the peer address, zeroes the peer port and the counters): a connect that
      failed (no send window ever) / an abort of an established one (SO_LINGER 0);
    - ``timeout``: retransmissions were still unanswered (a SYN never answered, a peer gone);
    - ``reset``: data was still unread at close, so the kernel answered with an RST;
    - ``closed``: none of these (an orderly close, or a reset *received*: they look alike).
    """
    if sock.netid != "tcp" or tcp_info is None:
        return None
    if sock.peer_port == 0:
        if sock.peer_address in _ANY:
            return "unconnected"
        window = tcp_info.get("snd_wnd")
        if window is not None:
            return "reset" if window else "failed"
        return "failed" if last_state == "SYN-SENT" else "reset"
    if retransmits:
        return "timeout"
    if sock.recv_q > 1:  # rcv_nxt - copied_seq counts the FIN too: > 1 means unread data
        return "reset"
    return "closed"


def lifetime_ms(tcp_info: Optional[dict[str, Any]], seen_age_ms: Optional[float]) -> Optional[float]:
    """A lower bound of how long the connection lived: the time since the agent first saw
    it, and tcp_info's ``last_data_sent``/``last_data_recv`` of an established connection
    (the kernel starts both clocks at the handshake; before one, they hold garbage)."""
    best = seen_age_ms
    if tcp_info and tcp_info.get("segs_in") and tcp_info.get("rtt_ms"):
        for key in ("last_data_sent_ms", "last_data_recv_ms"):
            value = tcp_info.get(key)
            if value is not None and (best is None or value > best):
                best = float(value)
    return None if best is None else round(best, 3)


def _signed(value: int) -> int:
    """A queue the kernel sends as u32, as ss prints it (UDP's send queue reads -1)."""
    return value - (1 << 32) if value >= 1 << 31 else value


def to_event(d: Destroyed, now: float, seen: Optional[Seen] = None, processes: Optional[list] = None,
             keep_info: bool = False) -> Event:
    """The ``event`` record of one destroyed socket."""
    s, info = d.sock, d.tcp_info
    last_state = seen["state"] if seen else None
    figures: tuple = (None,) * 8
    if info is not None:
        figures = (info.get("bytes_sent"), info.get("bytes_received"), info.get("bytes_acked"),
                   info.get("total_retrans"), info.get("lost"), info.get("rtt_ms") or None, info.get("segs_in"),
                   info.get("segs_out"))
    return Event(
        round(now, 3), s.family, s.netid, s.state, _signed(s.recv_q), _signed(s.send_q), s.local_address,
        s.local_port, s.peer_address, s.peer_port, s.interface, s.cookie,
        classify(s, info, d.retransmits, last_state), lifetime_ms(info, seen["age_ms"] if seen else None),
        *figures, seen, processes, info if keep_info else None)


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
        self.netid: Counter[str] = Counter()
        self.state: Counter[str] = Counter()
        self.close: Counter[str] = Counter()
        self.kernel_start = kernel

    def add(self, event: Event) -> None:
        self.events += 1
        self.netid[event.netid] += 1
        self.state[event.state] += 1
        self.close[event.close or "none"] += 1
        if event.close == "reset":
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
        for _ in range(limit):
            try:
                size = recv_into(buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1  # the queue overflowed; the socket keeps working
                continue
            parsed, _done, _intr = parse_datagram(view, size, 0, parse)  # broadcasts carry seq 0
            items += parsed
        return items


class Watch:
    """Periodic dumps of the subscribed tables: cookie -> (first sight, last row), and with
    ``-p`` a periodic owner scan: inode -> processes.

    Each job runs at most every second, and no more often than keeps it under a tenth of
    the time (an owner scan walks every process's fds: a second on a busy host).  Two
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
            began = time.monotonic()
            old, seen = self.current, {}
            for batch in collect(self.sel, Details(), self.warn):
                for sock in batch:
                    cookie = sock.cookie
                    if cookie is None:  # a /proc row: no cookie to match a message with
                        continue
                    known = old.get(cookie) or self.previous.get(cookie)
                    seen[cookie] = (known[0] if known else began, sock)
            self.previous, self.current = old, seen
            self.due = _next_run(began)
        if self.processes and now >= self.owners_due:
            began = time.monotonic()
            self.owners = owners_warned(self.warn)
            self.owners_due = _next_run(began)

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


def _next_run(began: float) -> float:
    done = time.monotonic()
    return done + max(WATCH_MIN_INTERVAL, (done - began) * WATCH_DUTY)


# --- the command ----------------------------------------------------------------------

class EventsOptions(NamedTuple):
    """``events`` after its flags are checked (``options_from_args``)."""

    selection: Selection
    duration: Optional[float]  #: --for, seconds
    count: Optional[int]
    tick: float  #: seconds between ticks; 0: only the final one
    processes: bool
    info: bool
    watch: bool
    rcvbuf: int
    state_words: bool  #: state/exclude words were given (ss -E ignores them; so does the agent)


def options_from_args(args: Any, selection: Selection) -> EventsOptions:
    """Validate the parsed flags of ``events`` (usage errors before any socket is opened)."""
    try:
        duration = parse_duration(args.for_) if args.for_ is not None else None
    except ValueError as exc:
        raise UsageError(f"--for: {exc}", "e.g. --for 30s, --for 2m") from None
    if duration is not None and duration <= 0:
        raise UsageError("--for must be more than 0", "e.g. --for 30s")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1", "e.g. --count 100")
    if args.tick < 0:
        raise UsageError("--tick must be 0 (only the final tick) or more", "e.g. --tick 5")
    if args.rcvbuf < 4096:
        raise UsageError("--rcvbuf must be at least 4096 bytes", f"the default is {DEFAULT_RCVBUF}")
    if args.processes and args.no_watch:
        raise UsageError("-p needs the watch: owners come from the table dumps",
                         "drop --no-watch, or -p")
    if not groups_for(selection):
        raise UsageError("events covers TCP and UDP sockets only", "use -t, -u, -4 or -6 (or none)")
    words = list(args.filter)
    return EventsOptions(selection, duration, args.count, args.tick, args.processes, args.info,
                         not args.no_watch, args.rcvbuf, bool(words) and words[0] in ("state", "exclude", "excl"))


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


class _Said(NamedTuple):
    count: int = 0
    at: float = 0.0


def _report_lost(out: Any, sub: Subscription, said: _Said, total: Counts, interval: Counts, final: bool) -> _Said:
    """Count newly lost messages into the ticks, and say so in a warning (at most once a second
    during a storm, and once more before the final tick)."""
    lost = sub.lost()
    if lost > total.lost:
        interval.lost += lost - total.lost
        total.lost = lost
    now = time.monotonic()
    if lost <= said.count or (not final and now - said.at < 1.0):
        return said
    out.warning("events-lost", f"the kernel dropped {lost - said.count} destroy messages: the agent's "
                "receive buffer was full (a storm of closes, or a slow reader of this stream); ticks count "
                "them under lost", lost - said.count)
    return _Said(lost, now)


def _loop(opts: EventsOptions, out: Any, sub: Subscription, stop: _Stop, poke_serve: bool) -> int:
    from .. import serve

    if sub.rcvbuf < opts.rcvbuf:
        out.warning("events-rcvbuf-limited",
                    f"the receive buffer holds {sub.rcvbuf} bytes, not {opts.rcvbuf} (net.core.rmem_max caps "
                    "it without CAP_NET_ADMIN): a burst of more than about "
                    f"{max(1, sub.rcvbuf // 1024)} closes between two reads is lost and counted in ticks",
                    sub.rcvbuf)
    if opts.state_words:
        out.warning("events-state-ignored", "state and exclude words are ignored, as by ss -E: every "
                    "destroyed TCP socket is in state UNCONN (see last_state in `seen`)")
    kernel = read_kernel_counters()  # from the subscription on, like the events
    total, interval = Counts(kernel), Counts(kernel)
    started = last_tick = time.monotonic()
    watch = Watch(opts.selection, opts.processes, _warn_once(out)) if opts.watch else None
    if watch is not None:
        watch.refresh(started)
    parse = destroy_parser(InterfaceNames(), opts.info)
    matches = matcher(opts.selection)
    deadline = started + opts.duration if opts.duration is not None else None
    poller = select.poll()
    poller.register(sub.fileno(), select.POLLIN)
    poller.register(stop.read_fd, select.POLLIN)
    lost_said, ended_by = _Said(), None
    while ended_by is None:
        now = time.monotonic()
        wakes = [t for t in (deadline, watch.next_due if watch else None,
                             last_tick + opts.tick if opts.tick else None) if t is not None]
        wait = max(0.0, min(wakes) - now) if wakes else None
        ready = poller.poll(None if wait is None else wait * 1000)
        if stop.signal:
            ended_by = stop.signal
        if any(fd == sub.fileno() for fd, _ in ready):
            items = sub.receive(parse)
            wall, mono = time.time(), time.monotonic()
            events = []
            for d in items:
                if not matches(d.sock):
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
                    ended_by = "count"
                    break
            if events:
                out.emit_batch(events)
            lost_said = _report_lost(out, sub, lost_said, total, interval, final=False)
        now = time.monotonic()
        if deadline is not None and now >= deadline and ended_by is None:
            ended_by = "for"
        if ended_by is None and watch is not None and now >= watch.next_due:
            watch.refresh(now)
        if ended_by is None and opts.tick and now >= last_tick + opts.tick:
            lost_said = _report_lost(out, sub, lost_said, total, interval, final=False)
            kernel = read_kernel_counters()
            out.emit(Tick(round((now - started) * 1000, 3), interval.record(kernel), total.record(kernel)))
            interval, last_tick = Counts(kernel), now
            if poke_serve:  # a long run must keep the plugin's serve container alive
                serve.keep_alive()
    _report_lost(out, sub, lost_said, total, interval, final=True)
    kernel = read_kernel_counters()
    out.emit(Tick(round((time.monotonic() - started) * 1000, 3), interval.record(kernel), total.record(kernel),
                  final=True, ended_by=ended_by))
    return EXIT_OK
