"""The ``/proc/net/{tcp,udp,raw}{,6}`` and ``/proc/net/unix`` fallback, as ``ss`` reads them.

Used where a sock_diag module is missing (raw_diag on many kernels) or netlink is
unavailable.  What these files lack compared with netlink: listener backlogs
(Send-Q is 0), unix peers and queues, cookies and ms-precise timers.
"""

from __future__ import annotations

import socket
from typing import Optional

from ..netlink import ProtocolError
from ..schema import STATE_NAMES, Socket, Timer
from .sockdiag import TIMER_NAMES, UNIX_NETIDS

USER_HZ = 100
_UNIX_STATES = {1: "UNCONN", 2: "SYN-SENT", 3: "ESTAB", 4: "CLOSING"}
_UNIX_LISTENING = 0x10000


def _inet_addr(text: str, family: int) -> tuple[str, int]:
    addr, port = text.split(":")
    # Each 32-bit word is printed in host order (little-endian here).
    raw = b"".join(int(addr[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(addr), 8))
    return socket.inet_ntop(family, raw), int(port, 16)


def parse_proc_inet(text: str, family: int, netid: str, timers: bool = False) -> list[Socket]:
    """Rows of /proc/net/tcp|udp|raw (or the ``6`` variants) as Socket records."""
    try:
        return _parse_proc_inet(text, family, netid, timers)
    except (ValueError, IndexError) as exc:  # not the kernel's format
        raise ProtocolError(f"malformed /proc/net/{netid} row: {exc}") from None


def _parse_proc_inet(text: str, family: int, netid: str, timers: bool) -> list[Socket]:
    family_name = "inet" if family == socket.AF_INET else "inet6"
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        local, lport = _inet_addr(f[1], family)
        peer, pport = _inet_addr(f[2], family)
        state = int(f[3], 16)
        tx, rx = (int(x, 16) for x in f[4].split(":"))
        tr, when = (int(x, 16) for x in f[5].split(":"))
        timer = None
        if timers and tr:
            timer = Timer(name=TIMER_NAMES.get(tr, "unknown"),
                          expires_ms=(when * 1000 + USER_HZ - 1) // USER_HZ,
                          retrans=int(f[6], 16) if tr == 1 else int(f[8]))
        out.append(Socket(family_name, netid, STATE_NAMES[state] if state < 13 else "UNKNOWN",
                          rx, 0 if state == 10 else tx, local, lport, peer, pport,
                          None, int(f[9]), int(f[7]), None, timer=timer))
    return out


def parse_proc_unix(text: str) -> list[Socket]:
    """Rows of /proc/net/unix: no peer and no queue data exist there (ss prints ``* 0``)."""
    try:
        return _parse_proc_unix(text)
    except (ValueError, IndexError) as exc:  # not the kernel's format
        raise ProtocolError(f"malformed /proc/net/unix row: {exc}") from None


def _parse_proc_unix(text: str) -> list[Socket]:
    out = []
    for line in text.splitlines()[1:]:
        f = line.split(None, 7)
        if len(f) < 7:
            continue
        flags, kind, st, inode = int(f[3], 16), int(f[4], 16), int(f[5], 16), int(f[6])
        state = "LISTEN" if flags & _UNIX_LISTENING else _UNIX_STATES.get(st, "UNKNOWN")
        name: Optional[str] = f[7] if len(f) > 7 else None
        out.append(Socket("unix", UNIX_NETIDS.get(kind, f"u_{kind}"), state, 0, 0, name, inode,
                          None, 0, None, inode, None, None))
    return out
