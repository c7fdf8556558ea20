"""Collect sockets of the current network namespace: sock_diag first, /proc where a
diag module is missing (as ss does for raw sockets), owners from /proc/PID/fd."""

from __future__ import annotations

import _socket
import errno
from collections.abc import Callable, Collection, Iterator
from typing import NamedTuple, Optional

from ..filter import CLOSE, NEW_SYN_RECV, SYN_RECV, Selection, Unlocked
from ..netlink import NETLINK_SOCK_DIAG, DumpInterrupted, Netlink, NetlinkError
from ..schema import Socket, Warning, text
from .processes import CAP_SYS_PTRACE, Owners, has_capability, scan_owners
from .sockdiag import (
    AUTOBOUND_BYTECODE,
    EXT_INFO,
    EXT_MEMORY,
    IPPROTO_RAW,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SOCK_DIAG_BY_FAMILY,
    CookieWindow,
    inet_cookie,
    inet_lines,
    inet_parser,
    inet_request,
    parse_unix,
    unique,
    unix_request,
    unix_show_flags,
)

_PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "raw": IPPROTO_RAW}
CAP_NET_ADMIN = 12  # linux/capability.h
_FAMILIES = (("inet", _socket.AF_INET, ""), ("inet6", _socket.AF_INET6, "6"))
# A diag module that is not built answers ENOENT (raw_diag here), an unknown family EINVAL.
_MISSING_MODULE = (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT)
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)

MaybeOwners = Optional[Owners]
Warn = Callable[[Warning], None]


class Details(NamedTuple):
    """Which optional parts each socket record carries (ss -p -o -e -m -i)."""

    processes: bool = False
    timers: bool = False
    extended: bool = False
    memory: bool = False
    info: bool = False


class InterfaceNames:
    """ifindex -> name in the current network namespace, looked up once per index."""

    def __init__(self) -> None:
        self._names: dict[int, Optional[str]] = {}

    def __call__(self, index: int) -> Optional[str]:
        if index not in self._names:
            try:
                self._names[index] = text(_socket.if_indextoname(index))  # \xNN, not a lone surrogate
            except OSError:
                self._names[index] = str(index)
        return self._names[index]


def _kernel_states(states: int, table: str) -> int:
    """The state mask of a dump request for ``table``."""
    # Request sockets carry the kernel's NEW_SYN_RECV state; ss asks for both.
    states |= 1 << NEW_SYN_RECV if states & 1 << SYN_RECV else 0
    if table == "tcp":
        # A TCP socket leaves the kernel's hash tables before it turns CLOSE (tcp_set_state
        # unhashes first), so a dump never lists one; asking for CLOSE (ss -l does: LISTEN|CLOSE)
        # only makes the kernel walk the whole established table, which every network
        # namespace shares: on a node, most of the cost of `-tl` in each pod's namespace.
        states &= ~(1 << CLOSE)
    return states


def _proc_fallback(table: str, families: list[tuple[str, int, str]], details: Details, owners: MaybeOwners,
                   why: str,
                   warn: Warn) -> list[Socket]:
    from . import procnet  # only without a diag module: compiling its row patterns costs every run 1-2 ms

    if table == "unix":
        warn(Warning("proc-fallback", f"{why or 'the kernel has no unix_diag'}: unix sockets are read from "
                     "/proc/net/unix (no peers, queues or uids), as ss does"))
        out = procnet.read_unix(warn)
    else:
        warn(Warning("proc-fallback", f"{why or f'the kernel has no {table}_diag'}: {table} sockets are read from "
                     f"/proc/net/{table}{{,6}} (no cookies, listener backlogs or ms timers), as ss does"))
        out = [s for _name, family, suffix in families
               for s in procnet.read_inet(f"/proc/net/{table}{suffix}", family, table, details.timers, warn)]
    if owners is not None:
        out = [s._replace(processes=owners.get(s.inode, []) if s.inode else []) for s in out]
    return out


def dump_table(nl: Optional[Netlink], table: str, sel: Selection, details: Details, owners: MaybeOwners,
               ifname: Callable[[int], Optional[str]], warn: Warn, lines: bool = False) -> Iterator[list]:
    """Batches of sockets of one table (unix, raw, udp, tcp), one per netlink datagram,
    in the selected families and states; a socket the kernel lists twice in one dump
    is listed once.  With ``lines``, inet tables without an expression or details come
    as their JSON lines (``sockdiag.inet_lines``), everything else as Socket records."""
    states = _kernel_states(sel.states, table)
    if table == "unix":
        families = [("unix", _socket.AF_UNIX, "")] if "unix" in sel.families else []
    else:
        families = [f for f in _FAMILIES if f[0] in sel.families]
    if not families:
        return
    if nl is None:
        yield _proc_fallback(table, families, details, owners, "netlink is unavailable", warn)
        return
    try:  # kept short: see netlink._SHORT_TRY
        yield from _dump_netlink(nl, table, families, states, sel, details, owners, ifname, warn, lines)
    except NetlinkError as exc:
        if exc.errno not in _MISSING_MODULE:
            raise
        yield _proc_fallback(table, families, details, owners, "", warn)


def _dump_netlink(nl: Netlink, table: str, families: list[tuple[str, int, str]], states: int, sel: Selection,
                  details: Details, owners: MaybeOwners, ifname: Callable[[int], Optional[str]], warn: Warn,
                  lines: bool) -> Iterator[list]:
    if table == "unix":
        show = unix_show_flags(details.extended, details.memory)
        window = CookieWindow()
        yield from _warn_if_interrupted(
            nl.dump(SOCK_DIAG_BY_FAMILY, unix_request(states, show),
                    unique(lambda b, s, e: parse_unix(b, s, e, extended=details.extended, memory=details.memory,
                                                      owners=owners), window)), "unix", window, warn)
        return
    protocol = _PROTOCOLS[table]
    ext = (EXT_MEMORY if details.memory else 0) | (EXT_INFO if details.info and table == "tcp" else 0)
    plain = lines and sel.expr is None and not sel.marks and details == Details(processes=details.processes)
    for name, family, _suffix in families:
        if sel.netlink_family is not None and name != sel.netlink_family:
            continue  # ss asks the kernel for its preferred family only (-4 or -6 given last)
        if sel.unlocked is not None:  # the expression uses `autobound`: see filter.py
            _unlocked(nl, family, protocol, states, sel.unlocked)
        window = CookieWindow()
        if plain:
            split = inet_lines(family, protocol, window, ifname=ifname, owners=owners)
        else:
            split = unique(inet_parser(family, protocol, timers=details.timers, extended=details.extended,
                                       memory=details.memory, info=details.info, ifname=ifname, owners=owners,
                                       marks=sel.marks), window)
        yield from _warn_if_interrupted(
            nl.dump(SOCK_DIAG_BY_FAMILY, inet_request(family, protocol, states, ext), split, prefetch=True),
            f"{table} ({name})", window, warn)


def _warn_if_interrupted(batches: Iterator[list], what: str, window: CookieWindow, warn: Warn) -> Iterator[list]:
    """Pass a dump's batches through; an interrupted dump (already streamed, so it cannot
    be retried) becomes a warning and the next family or table is still read.  So do
    sockets the kernel listed twice (dropped by ``window``): the table changed under the
    dump, which can also have missed a socket."""
    try:
        yield from batches
    except DumpInterrupted:
        warn(Warning("dump-interrupted", f"the {what} table changed while it was read: "
                     "a socket may be missing or listed twice"))
    if window.dropped:
        repeats = f"{window.dropped} socket{'s' if window.dropped != 1 else ''}"
        warn(Warning("dump-interrupted", f"the {what} table changed while it was read: the kernel listed {repeats} "
                     "twice (listed once here); a socket may be missing", window.dropped))


def _unlocked(nl: Netlink, family: int, protocol: int, states: int, into: Unlocked) -> None:
    """Cookies of the sockets the kernel's INET_DIAG_BC_AUTO accepts (no SOCK_BINDPORT_LOCK),
    which ss's bytecode for `autobound` keeps; no attribute reports that lock."""
    try:
        for cookies in nl.stream(SOCK_DIAG_BY_FAMILY, inet_request(family, protocol, states) + AUTOBOUND_BYTECODE,
                                 inet_cookie):
            into.update(cookies)
    except DumpInterrupted:  # the main dump will say so, if the table is still changing
        pass
    except NetlinkError:  # bytecode refused: judge autobound by the port range alone
        into.known = False


def owners_warned(warn: Warn, pids: Optional[Collection[int]] = None) -> Owners:
    """Socket inode -> holders (``scan_owners``, of ``pids`` when given), warning about
    processes it may not read."""
    scan = scan_owners(pids=pids)
    if scan.denied:
        ptrace = has_capability(CAP_SYS_PTRACE)
        why = ("CAP_SYS_PTRACE is missing from this agent's capabilities" if ptrace is False
               else "permission denied")
        warn(Warning("process-attribution-denied",
                     f"could not read the open files of {len(scan.denied)} processes ({why}): "
                     "sockets they hold show no owner. Run as the same uid as the target or "
                     "with CAP_SYS_PTRACE.", len(scan.denied)))
    return scan.owners


def collect(sel: Selection, details: Details, warn: Warn, lines: bool = False) -> Iterator[list]:
    """Every selected socket in ss's table order, in batches as the kernel returns them
    (so a writer can stream them), with owners when asked for.  With ``lines`` (for a
    writer, not an analysis), batches of plain inet sockets come as their JSON lines."""
    owners = owners_warned(warn) if details.processes else None
    nl = _open_sock_diag(sel, warn)
    try:  # kept short: see netlink._SHORT_TRY
        yield from _batches(nl, sel, details, owners, warn, lines)
    finally:
        if nl is not None:
            nl.close()


def _open_sock_diag(sel: Selection, warn: Warn) -> Optional[Netlink]:
    """The dumps' netlink socket, or None (with a warning) where /proc must do."""
    try:
        nl: Optional[Netlink] = Netlink(NETLINK_SOCK_DIAG)
    except OSError as exc:
        if exc.errno in _OUT_OF_RESOURCES:  # /proc would fail the same way: say which limit (faults.py)
            raise
        nl = None
        warn(Warning("netlink-unavailable", f"NETLINK_SOCK_DIAG could not be opened ({exc.strerror}): "
                     "reading /proc/net instead"))
    if sel.reads_fwmark and has_capability(CAP_NET_ADMIN) is False:
        warn(Warning("fwmark-unavailable", "the kernel sends socket marks only to a reader with CAP_NET_ADMIN, "
                     "which this agent lacks: fwmark conditions see every mark as 0 (ss without it fails its "
                     "bytecode with EPERM and reads /proc, where marks are 0 too). Run with CAP_NET_ADMIN."))
    return nl


def _batches(nl: Optional[Netlink], sel: Selection, details: Details, owners: MaybeOwners, warn: Warn,
             lines: bool) -> Iterator[list]:
    ifname = InterfaceNames()
    matches = sel.matches
    # fwmark/cgroup conditions read marks and cgroup ids from `extended`; without -e the
    # records do not keep them.  The kernel sends marks only to CAP_NET_ADMIN (filter.py).
    strip = sel.marks and not details.extended
    # The kernel applies the state mask itself; only expressions and /proc rows need a check here.
    for table in sel.tables():
        for batch in dump_table(nl, table, sel, details, owners, ifname, warn, lines):
            if batch and type(batch[0]) is Socket and (sel.expr is not None or batch[0].cookie is None):
                batch = [s for s in batch if matches(s)]
            if strip:
                batch = [s._replace(extended=None) if s.extended is not None else s for s in batch]
            if batch:
                yield batch


def collect_all(sel: Selection, details: Details, warn: Warn) -> list[Socket]:
    """``collect`` as one list, for analyses that need every socket at once."""
    return [s for batch in collect(sel, details, warn) for s in batch]
