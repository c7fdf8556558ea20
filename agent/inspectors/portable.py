"""The psutil fallback, for where there is no netlink or /proc (a laptop: macOS,
Windows) — the ``netstat -ano`` / ``netstat -b`` question "which process owns which
port", and fd counts against their limits.

The CLI takes this path when ``sys.platform`` is not Linux, or on any platform with
``--psutil`` (so it is tested on Linux).  psutil is imported here only, and only when
this path runs.  Every stream on this path carries a ``warning`` record naming the
fields it cannot fill: they are reported as null, or 0 where the schema's type is a
number that is always present (queues, inode).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any, Optional

from ..filter import Selection
from ..schema import STATE_NAMES, Limits, Process, ProcessLimits, Socket, Warning
from .limits import COUNTERS, NETNS_SYSCTLS, percent

Warn = Callable[[Warning], None]

MISSING_SOCKET_FIELDS = ("recv_q", "send_q", "inode", "uid", "cookie", "interface", "v6only", "timer",
                         "extended", "skmem", "tcp_info", "unix and raw sockets")
MISSING_LIMITS_FIELDS = ("system.file_handles_allocated", "system.file_handles_free", "system.file_max",
                         "system.nr_open", "netns", "counters", "container_id")

# psutil's CONN_* values -> ss's state names.
_STATES = {
    "ESTABLISHED": "ESTAB", "SYN_SENT": "SYN-SENT", "SYN_RECV": "SYN-RECV", "FIN_WAIT1": "FIN-WAIT-1",
    "FIN_WAIT2": "FIN-WAIT-2", "TIME_WAIT": "TIME-WAIT", "CLOSE": "UNCONN", "CLOSE_WAIT": "CLOSE-WAIT",
    "LAST_ACK": "LAST-ACK", "LISTEN": "LISTEN", "CLOSING": "CLOSING",
}
_TABLE_ORDER = {"udp": 0, "tcp": 1}
_STATE_ORDER = {name: i for i, name in enumerate(STATE_NAMES)}


def _psutil():
    try:
        import psutil
    except ImportError:
        from ..errors import AgentError

        raise AgentError("this platform needs psutil for sockets and limits, and it is not installed",
                         "pip install psutil") from None
    return psutil


def missing_warning(kind: str, fields: tuple[str, ...]) -> Warning:
    why = "--psutil was given" if sys.platform.startswith("linux") else f"this is {sys.platform}, not Linux"
    return Warning("psutil-fallback", f"{kind} read through psutil ({why}); not available on this path: "
                   + ", ".join(fields), len(fields))


def state_name(status: str, netid: str, has_peer: bool) -> str:
    if netid == "udp":  # psutil reports no state for UDP: ss calls a connected one ESTAB
        return "ESTAB" if has_peer else "UNCONN"
    return _STATES.get(status, "UNKNOWN")


def connection_to_socket(conn: Any, owners: Optional[list[Process]]) -> Optional[Socket]:
    """One psutil ``sconn`` (family, type, laddr, raddr, status) as a Socket; None for
    anything but TCP/UDP over IPv4/IPv6."""
    if conn.family == socket.AF_INET:
        family, wildcard = "inet", "0.0.0.0"
    elif conn.family == socket.AF_INET6:
        family, wildcard = "inet6", "::"
    else:
        return None
    netid = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}.get(conn.type)
    if netid is None:
        return None
    local = conn.laddr or (wildcard, 0)
    peer = conn.raddr or (wildcard, 0)
    return Socket(family=family, netid=netid, state=state_name(conn.status, netid, bool(conn.raddr)),
                  recv_q=0, send_q=0, local_address=local[0], local_port=local[1],
                  peer_address=peer[0], peer_port=peer[1], interface=None, inode=0, uid=None,
                  cookie=None, v6only=None, processes=owners)


class _Names:
    """pid -> process name, looked up once."""

    def __init__(self, psutil: Any) -> None:
        self._psutil = psutil
        self._names: dict[int, str] = {}

    def __call__(self, pid: int) -> str:
        if pid not in self._names:
            try:
                self._names[pid] = self._psutil.Process(pid).name()
            except Exception:  # exited, or denied: keep the pid, say nothing about its name
                self._names[pid] = "?"
        return self._names[pid]


def _connections(psutil: Any, warn: Warn) -> list[Any]:
    try:
        return list(psutil.net_connections(kind="inet"))
    except psutil.AccessDenied:
        pass
    # macOS without root: the processes we may read, one at a time.
    conns, denied = [], 0
    for proc in psutil.process_iter():
        try:
            method = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
            conns.extend(_WithPid(c, proc.pid) for c in method(kind="inet"))
        except (psutil.AccessDenied, psutil.ZombieProcess):
            denied += 1
        except psutil.NoSuchProcess:
            pass
    if denied:
        warn(Warning("process-attribution-denied",
                     f"psutil could not read the sockets of {denied} processes: run as root/Administrator",
                     denied))
    return conns


class _WithPid:
    """A per-process ``pconn`` (which has no pid field) with its pid attached."""

    def __init__(self, conn: Any, pid: int) -> None:
        self.fd, self.family, self.type = conn.fd, conn.family, conn.type
        self.laddr, self.raddr, self.status, self.pid = conn.laddr, conn.raddr, conn.status, pid


def collect_sockets(sel: Selection, processes: bool, warn: Warn) -> list[Socket]:
    """The selected TCP/UDP sockets through psutil, one record per socket with all its
    owners (psutil lists a socket once per process fd holding it)."""
    psutil = _psutil()
    warn(missing_warning("sockets", MISSING_SOCKET_FIELDS))
    names = _Names(psutil)
    merged: dict[tuple, tuple[Any, list[Process]]] = {}
    for conn in _connections(psutil, warn):
        sock = connection_to_socket(conn, None)
        if (sock is None or sock.netid not in sel.netids or sock.family not in sel.families
                or not sel.matches(sock)):
            continue
        key = (sock.family, sock.netid, sock.state, sock.local_address, sock.local_port,
               sock.peer_address, sock.peer_port)
        _first, owners = merged.setdefault(key, (conn, []))
        if conn.pid is not None:
            owners.append(Process(pid=conn.pid, comm=names(conn.pid), fd=conn.fd))
    out = []
    for conn, owners in merged.values():
        owners.sort(key=lambda p: (p["pid"], p["fd"]))
        out.append(connection_to_socket(conn, owners if processes else None))
    out.sort(key=lambda s: (_TABLE_ORDER[s.netid], s.family, _STATE_ORDER.get(s.state, 99),
                            s.local_port, s.peer_port))
    return out


def collect_process_limits(warn: Warn) -> list[ProcessLimits]:
    """Every process psutil can see: open fds (handles on Windows) and RLIMIT_NOFILE
    where the platform reports it for other processes (Linux, FreeBSD)."""
    psutil = _psutil()
    rlimit_nofile = getattr(psutil, "RLIMIT_NOFILE", None)
    out, denied = [], 0
    for proc in psutil.process_iter():
        try:
            with proc.oneshot():
                name = proc.name()
                if hasattr(proc, "num_fds"):
                    open_fds: Optional[int] = proc.num_fds()
                else:
                    open_fds = proc.num_handles()
                soft = hard = None
                if rlimit_nofile is not None and hasattr(proc, "rlimit"):
                    soft, hard = (None if v == psutil.RLIM_INFINITY else v
                                  for v in proc.rlimit(rlimit_nofile))
                elif proc.pid == os.getpid():
                    soft, hard = _own_nofile()
        except (psutil.AccessDenied, psutil.ZombieProcess):
            denied += 1
            continue
        except psutil.NoSuchProcess:
            continue
        out.append(ProcessLimits(pid=proc.pid, comm=name, open_fds=open_fds, fd_soft_limit=soft,
                                 fd_hard_limit=hard, percent_used=percent(open_fds, soft)))
    if denied:
        warn(Warning("process-limits-denied", f"psutil could not read the open files of {denied} processes "
                     "(another user's): run as root/Administrator", denied))
    out.sort(key=lambda p: p.pid)
    return out


def _own_nofile() -> tuple[Optional[int], Optional[int]]:
    try:
        import resource
    except ImportError:  # Windows
        return None, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    return (None if soft == inf else soft), (None if hard == inf else hard)


def collect_limits() -> Limits:
    """The limits record on this path: every figure null (none of them exists outside
    Linux's /proc), with the same keys as on Linux so readers need no special case."""
    netns: dict[str, Any] = {key: None for key, _path in NETNS_SYSCTLS}
    netns["ip_local_port_range"] = None
    netns["local_ports_in_use"] = None
    return Limits(
        system={"file_handles_allocated": None, "file_handles_free": None, "file_max": None, "nr_open": None},
        netns=netns,
        counters={group: {name: None for name in names if not name.endswith("*")}
                  for group, names in COUNTERS.items()},
    )
