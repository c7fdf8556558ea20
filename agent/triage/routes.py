"""Rules over the routing tables: no default route, connections to peers no route reaches."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Sequence
from typing import Any, Optional

from ..schema import Finding, Route, Socket
from .common import DEFAULT_RULE_TABLES, MAX_ITEMS, PEERED, REJECT_TYPES, TriageInput, counted, endpoint, ip_of, owners


def no_default_route(data: TriageInput) -> list[Finding]:
    if data.routes is None:
        return []
    out = []
    ifaces = data.interfaces or ()
    for family, label in (("inet", "IPv4"), ("inet6", "IPv6")):
        if any(r.family == family and r.dst == "default" and r.route_type == "unicast" for r in data.routes):
            continue
        addressed = [
            {"interface": i.name, "addresses": [f"{a['address']}/{a['prefixlen']}" for a in i.addresses
                                                if a.get("family") == family and a.get("scope") == "global"]}
            for i in ifaces if "LOOPBACK" not in i.flags and "UP" in i.flags]
        addressed = [a for a in addressed if a["addresses"]]
        if family == "inet6" and not addressed:
            continue  # no global IPv6 address: IPv6 is simply not in use here
        if addressed:
            severity = "warning" if family == "inet" else "info"
        else:
            severity = "info"  # only loopback: isolated on purpose (hostNetwork: false, network none)
        routes = [f"{r.dst} dev {r.dev}" + (f" via {r.gateway}" if r.gateway else "")
                  for r in data.routes if r.family == family and r.table == "main"]
        out.append(Finding(
            id="no-default-route",
            severity=severity,
            title=f"No {label} default route" + ("" if addressed else " (the namespace has no "
                                                  f"{label} address besides loopback)"),
            evidence={"family": family, "interfaces": addressed, "main_table": routes[:MAX_ITEMS]},
            explanation=(
                f"Without a default route only directly connected subnets and explicitly routed "
                f"destinations are reachable over {label}; connect() to anything else fails at once with "
                "ENETUNREACH 'Network is unreachable'. A pod gets its default route from the CNI plugin, "
                "so its absence means a broken or unfinished network setup, or a namespace set up by hand."),
            next_step=(
                "`ip route show table all` (sockdebug: `routes`) and compare with a healthy pod on the same "
                "node; check the CNI plugin's logs on the node (and `ip rule` if policy routing is used)."),
        ))
    return out


class RouteTable:
    """Longest-prefix match over the collected routes, the way the default rules look them
    up (tables local, main, default; ``throw`` moves on to the next table)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.entries: list[tuple[Any, Route]] = []
        for r in routes:
            try:
                net = ipaddress.ip_network("0.0.0.0/0" if r.dst == "default" and r.family == "inet"
                                           else "::/0" if r.dst == "default" else r.dst, strict=False)
            except ValueError:
                continue
            self.entries.append((net, r))

    def _best(self, ip: Any, tables: Optional[set[str]], exclude: frozenset[str] = frozenset()
              ) -> dict[str, Route]:
        best: dict[str, tuple[int, int, Route]] = {}
        for net, r in self.entries:
            if net.version != ip.version or (tables is not None and r.table not in tables):
                continue
            if r.route_type in exclude or ip not in net:
                continue
            key = (net.prefixlen, -(r.metric or 0))
            held = best.get(r.table)
            if held is None or key > held[:2]:
                best[r.table] = (*key, r)
        return {t: v[2] for t, v in best.items()}

    def lookup(self, ip: Any) -> Optional[Route]:
        best = self._best(ip, set(DEFAULT_RULE_TABLES))
        for table in DEFAULT_RULE_TABLES:
            route = best.get(table)
            if route is not None and route.route_type != "throw":
                return route
        return None

    def usable_elsewhere(self, ip: Any) -> bool:
        """Whether a table other than the default rules' (policy routing may select it) has
        a usable route for ``ip``."""
        best = self._best(ip, None, exclude=REJECT_TYPES | {"throw"})
        return any(t not in DEFAULT_RULE_TABLES for t in best)


def no_route_to_peer(data: TriageInput) -> list[Finding]:
    if data.sockets is None or data.routes is None:
        return []
    table = RouteTable(data.routes)
    by_peer: dict[str, list[Socket]] = {}
    unroutable: dict[str, Optional[Route]] = {}  #: peer -> the reject route that matched, or None
    routable: set[str] = set()
    for sock in data.sockets:
        if sock.netid not in ("tcp", "udp") or sock.state not in PEERED:
            continue
        ip = ip_of(sock.peer_address)
        if ip is None or ip.is_unspecified or ip.is_multicast:
            continue
        key = str(ip)
        if key in routable:
            continue
        if key not in unroutable:
            route = table.lookup(ip)
            # A policy rule may select another table that has a route: do not guess then.
            if (route is not None and route.route_type not in REJECT_TYPES) or table.usable_elsewhere(ip):
                routable.add(key)
                continue
            unroutable[key] = route
        by_peer.setdefault(key, []).append(sock)
    out = []
    for peer, socks in sorted(by_peer.items(), key=lambda kv: -len(kv[1])):
        route = unroutable[peer]
        matched = None if route is None else {"dst": route.dst, "table": route.table,
                                              "route_type": route.route_type}
        why = ("no route matches it" if route is None
               else f"the matching route is {route.route_type} {route.dst} (table {route.table})")
        out.append(Finding(
            id="no-route-to-peer",
            severity="critical",
            title=f"{counted(len(socks), 'connection')} to {peer}, but {why}",
            evidence={"peer": peer, "sockets": len(socks), "matched_route": matched,
                      "states": dict(Counter(s.state for s in socks)),
                      "connections": [f"{endpoint(s.local_address, s.local_port)} -> "
                                      f"{endpoint(s.peer_address, s.peer_port)} ({s.netid} {s.state})"
                                      for s in socks[:MAX_ITEMS]],
                      "processes": owners(socks)},
            explanation=(
                f"This namespace has connections to {peer}, but the routing table has no usable way to "
                "it now, so their packets cannot leave: the connections will stall and time out, and new "
                "connect() calls fail with ENETUNREACH or EHOSTUNREACH. Usually the route went away after "
                "the connection was made (an interface or address changed, the CNI reconfigured the pod, "
                "a VPN or tunnel went down), or a blackhole/unreachable route covers the address."),
            next_step=(
                f"`ip route get {peer}` inside the namespace shows the kernel's decision; `ip route show "
                "table all` (sockdebug: `routes`) and `ip rule` show why."),
        ))
    return out
