"""Collect sockets of the current network namespace: sock_diag first, /proc where a
diag module is missing (as ss does for raw sockets), owners from /proc/PID/fd."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional

from ..filter import NEW_SYN_RECV, SYN_RECV, Selection
from ..netlink import NETLINK_SOCK_DIAG, Netlink, NetlinkError, dump_all
from ..schema import Socket, Warning
from . import procnet
from .processes import CAP_SYS_PTRACE, has_capability, scan_owners
from .sockdiag import (
    EXT_INFO,
    EXT_MEMORY,
    IPPROTO_RAW,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SOCK_DIAG_BY_FAMILY,
    InetParser,
    inet_request,
    parse_unix,
    unix_request,
    unix_show_flags,
)

_PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "raw": IPPROTO_RAW}
_FAMILIES = (("inet", socket.AF_INET, ""), ("inet6", socket.AF_INET6, "6"))
# A diag module that is not built answers ENOENT (raw_diag here), an unknown family EINVAL.
_MISSING_MODULE = (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT)


@dataclass(frozen=True)
class Details:
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
                self._names[index] = socket.if_indextoname(index)
            except OSError:
                self._names[index] = str(index)
        return self._names[index]


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _kernel_states(states: int) -> int:
    # Request sockets carry the kernel's NEW_SYN_RECV state; ss asks for both.
    return states | (1 << NEW_SYN_RECV if states & 1 << SYN_RECV else 0)


def dump_table(nl: Optional[Netlink], table: str, sel: Selection, details: Details,
               ifname: Callable[[int], Optional[str]], warn: Callable[[Warning], None]) -> list[Socket]:
    """All sockets of one table (unix, raw, udp, tcp) in the selected families and states."""
    states = _kernel_states(sel.states)
    if table == "unix":
        if "unix" not in sel.families:
            return []
        if nl is not None:
            try:
                show = unix_show_flags(details.extended, details.memory)
                return dump_all(nl, SOCK_DIAG_BY_FAMILY, unix_request(states, show),
                                lambda b, s, e: parse_unix(b, s, e, extended=details.extended,
                                                           memory=details.memory))
            except NetlinkError as exc:
                if exc.errno not in _MISSING_MODULE:
                    raise
        warn(Warning("proc-fallback", "unix_diag is not available: unix sockets read from "
                     "/proc/net/unix (no peers, queues or uids)"))
        return procnet.parse_proc_unix(_read("/proc/net/unix"))
    protocol = _PROTOCOLS[table]
    ext = (EXT_MEMORY if details.memory else 0) | (EXT_INFO if details.info and table == "tcp" else 0)
    out: list[Socket] = []
    for name, family, suffix in _FAMILIES:
        if name not in sel.families:
            continue
        if nl is not None:
            parser = InetParser(family, protocol, timers=details.timers, extended=details.extended,
                                memory=details.memory, info=details.info, ifname=ifname)
            try:
                out.extend(dump_all(nl, SOCK_DIAG_BY_FAMILY, inet_request(family, protocol, states, ext),
                                    parser))
                continue
            except NetlinkError as exc:
                if exc.errno not in _MISSING_MODULE:
                    raise
        path = f"/proc/net/{table}{suffix}"
        warn(Warning("proc-fallback", f"the kernel has no {table}_diag: {table} sockets are read from "
                     f"/proc/net/{table}{{,6}} (no cookies, listener backlogs or ms timers), as ss does"))
        try:
            text = _read(path)
        except FileNotFoundError:  # IPv6 disabled in this kernel or namespace
            continue
        out.extend(procnet.parse_proc_inet(text, family, table, details.timers))
    return out


def collect(sel: Selection, details: Details, warn: Callable[[Warning], None]) -> Iterator[Socket]:
    """Every selected socket, in ss's table order, with owners when asked for."""
    owners = None
    if details.processes:
        scan = scan_owners()
        owners = scan.owners
        if scan.denied:
            ptrace = has_capability(CAP_SYS_PTRACE)
            why = ("CAP_SYS_PTRACE is missing from this agent's capabilities" if ptrace is False
                   else "permission denied")
            warn(Warning("process-attribution-denied",
                         f"could not read the open files of {len(scan.denied)} processes ({why}): "
                         "sockets they hold show no owner. Run as the same uid as the target or "
                         "with CAP_SYS_PTRACE.", len(scan.denied)))
    try:
        nl: Optional[Netlink] = Netlink(NETLINK_SOCK_DIAG)
    except OSError as exc:
        nl = None
        warn(Warning("netlink-unavailable", f"NETLINK_SOCK_DIAG could not be opened ({exc.strerror}): "
                     "reading /proc/net instead"))
    ifname = InterfaceNames()
    warned: set[str] = set()

    def warn_once(w: Warning) -> None:
        if w.message not in warned:
            warned.add(w.message)
            warn(w)
    try:
        for table in sel.tables():
            for sock in dump_table(nl, table, sel, details, ifname, warn_once):
                if sock.netid not in sel.netids or not sel.matches(sock):
                    continue
                if owners is not None:
                    sock.processes = owners.get(sock.inode, []) if sock.inode else []
                yield sock
    finally:
        if nl is not None:
            nl.close()
