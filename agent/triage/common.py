"""What every triage rule reads (``TriageInput``) and the small helpers their evidence
and wording share."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from ..schema import Interface, Limits, ProcessLimits, Route, Socket, Summary


@dataclass
class TriageInput:
    """What one run collected; None where a part could not be collected."""

    sockets: Optional[Sequence[Socket]] = None
    summary: Optional[Summary] = None
    routes: Optional[Sequence[Route]] = None
    interfaces: Optional[Sequence[Interface]] = None
    processes: Optional[Sequence[ProcessLimits]] = None
    limits: Optional[Limits] = None
    host: bool = False  #: a node's own network namespace, where loopback-only daemons are normal


PEERED = frozenset(("ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT",
                     "LAST-ACK", "CLOSING"))
REJECT_TYPES = frozenset(("blackhole", "unreachable", "prohibit"))
MAX_ITEMS = 10  # entries listed in one finding's evidence
DEFAULT_RULE_TABLES = ("local", "main", "default")  # `ip rule` of a fresh namespace, in order


def ip_of(addr: Optional[str]) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address, IPv4-mapped IPv6 as IPv4; None for non-addresses."""
    if not addr:
        return None
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(addr: Optional[str]) -> bool:
    ip = ip_of(addr)
    return ip is not None and ip.is_loopback


def endpoint(addr: Optional[str], port: int) -> str:
    if addr and ":" in addr:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


def owners(socks: Iterable[Socket]) -> list[dict[str, Any]]:
    """The distinct processes holding any of ``socks``: [{pid, comm}] by pid."""
    seen: dict[int, str] = {}
    for sock in socks:
        for proc in sock.processes or ():
            seen.setdefault(proc["pid"], proc.get("comm", "?"))
    return [{"pid": pid, "comm": comm} for pid, comm in sorted(seen.items())]


def who(procs: list[dict[str, Any]]) -> str:
    if not procs:
        return "an unknown process"
    text = ", ".join(f"{p['comm']} (pid {p['pid']})" for p in procs[:3])
    return text + (f" and {len(procs) - 3} more" if len(procs) > 3 else "")


def counter(limits: Optional[Limits], group: str, name: str) -> Optional[int]:
    if limits is None:
        return None
    return limits.counters.get(group, {}).get(name)


def counted(n: int, singular: str, plural: Optional[str] = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def pct(ratio: float) -> float:
    return round(ratio * 100, 1)


def tcp(data: TriageInput) -> list[Socket]:
    return [s for s in data.sockets or () if s.netid == "tcp"]
