"""The ``/proc/net/{tcp,udp,raw}{,6}`` and ``/proc/net/unix`` fallback, as ``ss`` reads them.

Used where a sock_diag module is missing (raw_diag on many kernels) or netlink is
unavailable.  What these files lack compared with netlink: listener backlogs
(Send-Q is 0), unix peers and queues, cookies and ms-precise timers.

The files are read as bytes and parsed by pure functions.  Unix socket names are
whatever bytes their owner chose, newlines included, and the kernel prints them raw
(NULs as ``@``) to the end of the row, so the row boundaries are worked out instead of
trusted (``parse_proc_unix``): ss is fooled by a name holding a newline and a row.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Callable
from typing import NamedTuple, Optional

from ..errors import KernelError
from ..netlink import ProtocolError
from ..schema import STATE_NAMES, Socket, Timer, Warning, text
from .sockdiag import TIMER_NAMES, UNIX_NETIDS

USER_HZ = 100
_UNIX_STATES = {1: "UNCONN", 2: "SYN-SENT", 3: "ESTAB", 4: "CLOSING"}
_UNIX_LISTENING = 0x10000
UNIX_NAME_MAX = 108  # sizeof(sun_path): no name the kernel prints is longer

# tcp4_seq_show and friends: "%4d: %08X:%04X %08X:%04X %02X %08X:%08X %02X:%08lX %08X %5u %8d %lu ..."
_INET_ROW = re.compile(
    rb" *[0-9]+: ([0-9A-F]{8}|[0-9A-F]{32}):([0-9A-F]{4}) ([0-9A-F]{8}|[0-9A-F]{32}):([0-9A-F]{4}) ([0-9A-F]{2}) "
    rb"([0-9A-F]{8}):([0-9A-F]{8}) ([0-9A-F]{2}):([0-9A-F]{8,16}) ([0-9A-F]{8}) +([0-9]+) +(-?[0-9]+) ([0-9]+)")
# unix_seq_show: "%pK: %08X %08X %08X %04X %02X %5lu", then " " and the name if bound.
_UNIX_ROW = re.compile(
    rb"([0-9a-f]{8}|[0-9a-f]{16}|\(_*ptrval_*\)): ([0-9A-F]{8}) ([0-9A-F]{8}) ([0-9A-F]{8}) ([0-9A-F]{4}) "
    rb"([0-9A-F]{2}) +([0-9]+)(?: (.*))?", re.S)
_ADDR_HEX = {socket.AF_INET: 8, socket.AF_INET6: 32}


def _inet_addr(hex_addr: bytes, hex_port: bytes, family: int) -> tuple[str, int]:
    # Each 32-bit word is printed in host order (little-endian here).
    raw = b"".join(int(hex_addr[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(hex_addr), 8))
    return socket.inet_ntop(family, raw), int(hex_port, 16)


def _lines(data: bytes | str) -> list[bytes]:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines[1:]  # the header


def parse_proc_inet(data: bytes | str, family: int, netid: str, timers: bool = False) -> list[Socket]:
    """Rows of /proc/net/tcp|udp|raw (or the ``6`` variants) as Socket records.  A row
    that is not the kernel's format raises ProtocolError (the run then fails framed, as
    a ``kernel`` error): these rows hold no text a process chose."""
    family_name = "inet" if family == socket.AF_INET else "inet6"
    width = _ADDR_HEX.get(family)
    out = []
    for number, line in enumerate(_lines(data), 1):
        if not line.strip():
            continue
        m = _INET_ROW.match(line)
        if m is None or len(m[1]) != width or len(m[3]) != width:
            raise ProtocolError(f"malformed /proc/net/{netid} row {number}: {text(line[:100])!r}")
        (local_hex, lport_hex, peer_hex, pport_hex, state_hex, tx_hex, rx_hex, tr_hex, when_hex, retr_hex,
         uid, probes, inode) = m.groups()
        local, lport = _inet_addr(local_hex, lport_hex, family)
        peer, pport = _inet_addr(peer_hex, pport_hex, family)
        state, tr = int(state_hex, 16), int(tr_hex, 16)
        timer = None
        if timers and tr:
            timer = Timer(name=TIMER_NAMES.get(tr, "unknown"),
                          expires_ms=(int(when_hex, 16) * 1000 + USER_HZ - 1) // USER_HZ,
                          retrans=int(retr_hex, 16) if tr == 1 else int(probes))
        out.append(Socket(family_name, netid, STATE_NAMES[state] if state < len(STATE_NAMES) else "UNKNOWN",
                          int(rx_hex, 16), 0 if state == 10 else int(tx_hex, 16), local, lport, peer, pport,
                          None, int(inode), int(uid), None, timer=timer))
    return out


class UnixTable(NamedTuple):
    sockets: list[Socket]
    #: rows that could also be the end of the name above them, when the row count says
    #: some of them must be (and which cannot be told); 0 when every row is certain
    ambiguous: int = 0


class _Row:
    __slots__ = ("fields", "name", "raw")

    def __init__(self, fields: tuple, name: Optional[bytes], raw: bytes) -> None:
        self.fields, self.name, self.raw = fields, name, raw


def _split_unix_rows(lines: list[bytes]) -> list[_Row]:
    """Rows by shape: a line that is not a whole row, or whose address field differs in
    width or style (all zeros under kptr_restrict, else distinct hashes) from the first
    row's, is the rest of the name above it after a newline."""
    rows: list[_Row] = []
    width, zeros = 0, False
    seen: set[bytes] = set()
    for line in lines:
        m = _UNIX_ROW.fullmatch(line)
        if m is not None:
            ptr = m[1]
            if not rows:
                width, zeros = len(ptr), not ptr.strip(b"0")
            elif len(ptr) != width or (not ptr.strip(b"0")) != zeros or (not zeros and ptr in seen):
                m = None
        if m is None:
            # Only a name can go on over a newline: rows since the last named one were in it.
            named = next((i for i in range(len(rows) - 1, -1, -1) if rows[i].name is not None), None)
            if named is None:
                raise ProtocolError(f"malformed /proc/net/unix line: {text(line[:100])!r}")
            for row in [*rows[named + 1:], _Row((), None, line)]:
                rows[named].name += b"\n" + row.raw
                rows[named].raw += b"\n" + row.raw
            del rows[named + 1:]
            continue
        seen.add(m[1])
        rows.append(_Row(m.groups()[1:7], m[8], line))
    return rows


def parse_proc_unix(data: bytes | str, expected: Optional[int] = None,
                    held: Optional[set[int]] = None) -> UnixTable:
    """Rows of /proc/net/unix: no peer and no queue data exist there (ss prints ``* 0``).

    A name can hold a newline followed by a line shaped exactly like a row.  Such a line
    is a *candidate*: it follows a named row closely enough to fit in that name
    (``UNIX_NAME_MAX``).  ``expected`` is the number of unix sockets the kernel counts in
    this namespace (/proc/net/protocols): when there are that many rows too many and
    exactly that many candidates, the candidates are names' ends and are joined back;
    when there are more candidates, ``held`` (the inodes some process holds an fd of,
    from the owner scan) narrows them to those no process holds, since a forged row
    names a socket nobody has.  When that cannot decide either, they stay rows and
    ``ambiguous`` says how many."""
    rows = _split_unix_rows(_lines(data))
    candidates = [i for i in range(1, len(rows)) if rows[i - 1].name is not None
                  and len(rows[i - 1].name) + 1 + len(rows[i].raw) <= UNIX_NAME_MAX]
    surplus = len(rows) - expected if expected is not None else 0
    if held is not None and 0 < surplus < len(candidates):
        candidates = [i for i in candidates if int(rows[i].fields[5]) not in held]
    ambiguous = 0
    if surplus > 0 and surplus == len(candidates):
        for i in reversed(candidates):  # from the end, so a name holding two rows gets both
            above = rows[i - 1]
            above.name = (above.name or b"") + b"\n" + rows[i].raw
            above.raw += b"\n" + rows[i].raw
            del rows[i]
    elif surplus > 0 and candidates:
        ambiguous = len(candidates)
    out = []
    for row in rows:
        _refs, _proto, flags, kind, st, inode = row.fields
        flags_n, kind_n, st_n = int(flags, 16), int(kind, 16), int(st, 16)
        state = "LISTEN" if flags_n & _UNIX_LISTENING else _UNIX_STATES.get(st_n, "UNKNOWN")
        name = text(row.name) if row.name is not None else None
        ino = int(inode)
        out.append(Socket("unix", UNIX_NETIDS.get(kind_n, f"u_{kind_n}"), state, 0, 0, name, ino,
                          None, 0, None, ino, None, None))
    return UnixTable(out, ambiguous)


def parse_unix_count(protocols: bytes | str) -> Optional[int]:
    """Unix sockets in this network namespace from /proc/net/protocols (the ``sockets``
    column of the UNIX and UNIX-STREAM rows); None when the kernel does not count them."""
    total, found = 0, False
    for line in _lines(protocols):
        words = line.split()
        if len(words) > 2 and words[0] in (b"UNIX", b"UNIX-STREAM"):
            if not words[2].isdigit():
                return None  # -1: not counted
            total += int(words[2])
            found = True
    return total if found else None


Warn = Callable[[Warning], None]


def _read(path: str, warn: Warn) -> Optional[bytes]:
    """The file's bytes; None, with a warning, when /proc is not mounted at all; [] is
    for the caller when the file alone is missing (IPv6 disabled)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            raise  # a limit: faults.py says which
        if not os.path.isdir("/proc/net"):
            warn(Warning("proc-unavailable", f"netlink did not give this table and /proc is not mounted: "
                         f"the sockets of {path} are missing"))
            return None
        if isinstance(exc, FileNotFoundError):
            return b""
        raise KernelError(f"netlink did not give this table and {path} cannot be read ({exc.strerror})",
                          "let the agent read /proc/net, or open netlink sockets (seccomp, LSM)") from None


def _unix_count() -> Optional[int]:
    try:
        with open("/proc/net/protocols", "rb") as f:
            return parse_unix_count(f.read())
    except OSError:
        return None


def read_unix(warn: Warn) -> list[Socket]:
    """/proc/net/unix of the current namespace, with the kernel's count of unix sockets
    read before and after (a count that moved meanwhile cannot judge the rows)."""
    before = _unix_count()
    data = _read("/proc/net/unix", warn)
    if not data:
        return []
    after = _unix_count()
    expected = before if before == after else None
    table = parse_proc_unix(data, expected)
    if table.ambiguous:  # rare: worth a walk of every process's fds to tell forged rows apart
        from .processes import scan_owners

        table = parse_proc_unix(data, expected, set(scan_owners(with_containers=False).owners))
    if table.ambiguous:
        warn(Warning("unix-names-ambiguous",
                     f"{table.ambiguous} rows of /proc/net/unix could also be the end of a unix socket name holding "
                     "a newline, and the socket count cannot tell which: some unix sockets listed may be forged "
                     "by such names", table.ambiguous))
    return table.sockets


def read_inet(path: str, family: int, netid: str, timers: bool, warn: Warn) -> list[Socket]:
    """One /proc/net/{tcp,udp,raw}{,6} file; [] where it does not exist (IPv6 disabled)."""
    data = _read(path, warn)
    return parse_proc_inet(data, family, netid, timers) if data else []
