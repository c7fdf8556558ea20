"""``ss -s``: socket totals from /proc/net/sockstat{,6} and snmp, plus TCP state counts."""

from __future__ import annotations

from collections import Counter
from typing import Optional

from ..schema import Summary
from .counters import parse_counter_pairs, parse_sockstat, read_optional


def build_summary(sockstat: dict[str, dict[str, int]], sockstat6: dict[str, dict[str, int]],
                  curr_estab: Optional[int], tcp_states: dict[str, int], udp_sockets: int = 0,
                  unix_sockets: int = 0) -> Summary:
    """ss's print_summary arithmetic.  ``alloc`` is global, the rest per namespace, so
    ``tcp_closed`` is only meaningful in the initial namespace (as with ss)."""
    tcp, tcp6 = sockstat.get("TCP", {}), sockstat6.get("TCP6", {})
    tw, alloc = tcp.get("tw"), tcp.get("alloc")

    def row(v4: str, v6: str, key: str = "inuse") -> dict[str, int]:
        a, b = sockstat.get(v4, {}).get(key, 0), sockstat6.get(v6, {}).get(key, 0)
        return {"total": a + b, "ipv4": a, "ipv6": b}

    transports = {"RAW": row("RAW", "RAW6"), "UDP": row("UDP", "UDP6"), "TCP": row("TCP", "TCP6"),
                  "FRAG": row("FRAG", "FRAG6")}
    inet = {k: sum(transports[t][k] for t in ("RAW", "UDP", "TCP")) for k in ("total", "ipv4", "ipv6")}
    transports["INET"] = inet
    closed = None
    if alloc is not None and tw is not None:
        closed = alloc - (tcp.get("inuse", 0) + tcp6.get("inuse", 0) - tw)
    return Summary(
        sockets_used=sockstat.get("sockets", {}).get("used"),
        tcp_total=alloc + tw if alloc is not None and tw is not None else None,
        tcp_estab=curr_estab, tcp_closed=closed, tcp_orphaned=tcp.get("orphan"), tcp_timewait=tw,
        transports=transports, tcp_states=tcp_states, udp_sockets=udp_sockets, unix_sockets=unix_sockets,
    )


def read_counters() -> tuple[str, str, str]:
    """The texts of sockstat, sockstat6 and snmp.  Read them before opening any socket:
    "sockets: used" counts the agent's own netlink socket, and still does for a while
    after it is closed (netlink sockets are freed after an RCU grace period)."""
    return tuple(read_optional(f"/proc/net/{name}") or "" for name in ("sockstat", "sockstat6", "snmp"))


def collect_summary(tcp_states: Counter, udp_sockets: int, unix_sockets: int,
                    counters: Optional[tuple[str, str, str]] = None) -> Summary:
    text, text6, snmp_text = counters if counters is not None else read_counters()
    sockstat = parse_sockstat(text)
    sockstat6 = parse_sockstat(text6)
    snmp = parse_counter_pairs(snmp_text)
    return build_summary(sockstat, sockstat6, snmp.get("Tcp", {}).get("CurrEstab"), dict(tcp_states),
                         udp_sockets, unix_sockets)
