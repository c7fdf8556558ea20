"""rtnetlink routes (``ip route show table all``, ``ip -6 route show table all``).

``parse_route`` turns one RTM_NEWROUTE payload into a ``Route`` with no I/O: the
link names it needs are passed in (from RTM_GETLINK of the same namespace, since the
agent may have entered another network namespace).  ``collect`` dumps every table of
both families.  Layout: ``include/uapi/linux/rtnetlink.h`` (offsets in
../shared/reference/ss.md section 6).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Mapping
from typing import Any, Optional

from ..netlink import NETLINK_ROUTE, Netlink, NetlinkError, ProtocolError, align4, parse_attrs
from ..netlink import dump_all as _dump_all
from ..schema import Route
from .interfaces import dump_links

RTM_NEWROUTE, RTM_GETROUTE = 24, 26

_RTMSG = struct.Struct("=BBBBBBBBI")  # family dst_len src_len tos table protocol scope type flags
_RTNEXTHOP = struct.Struct("=HBBi")  # len flags hops ifindex
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")

RTA_DST, RTA_SRC, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 2, 4, 5, 6, 7
RTA_MULTIPATH, RTA_TABLE, RTA_VIA, RTA_PREF = 9, 15, 18, 20

RTM_F_CLONED = 0x200

TABLES = {253: "default", 254: "main", 255: "local"}
ROUTE_TYPES = ("unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole",
               "unreachable", "prohibit", "throw", "nat", "xresolve")
# iproute2's /etc/iproute2/rt_protos (the agent's image has no /etc/iproute2).
PROTOCOLS = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra", 10: "mrt",
    11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp", 18: "keepalived",
    42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp",
}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
PREFS = {0: "medium", 1: "high", 3: "low"}  # ICMPV6_ROUTER_PREF_*
# rtm_flags / rtnh_flags bits with ip's words.
FLAGS = ((0x1, "dead"), (0x2, "pervasive"), (0x4, "onlink"), (0x8, "offload"), (0x10, "linkdown"),
         (0x20, "unresolved"), (0x40, "trap"), (0x4000, "rt_offload"), (0x8000, "rt_trap"),
         (0x20000000, "rt_offload_failed"))
_FAMILY_NAMES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
_ADDR_LEN = {socket.AF_INET: 4, socket.AF_INET6: 16}


def route_request(family: int) -> bytes:
    """An rtmsg asking for a dump of every table of one family (rtm_table 0 = all)."""
    return _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in FLAGS if flags & bit]


def _addr(family: int, raw: bytes | memoryview, what: str) -> str:
    if len(raw) != _ADDR_LEN[family]:
        raise ProtocolError(f"{what} of {len(raw)} bytes in an {_FAMILY_NAMES[family]} route")
    return socket.inet_ntop(family, bytes(raw))


def _u32(raw: bytes | memoryview, what: str) -> int:
    if len(raw) < 4:
        raise ProtocolError(f"{what} attribute of {len(raw)} bytes (need 4)")
    return _U32.unpack_from(raw)[0]


def _via(raw: bytes | memoryview) -> str:
    """RTA_VIA: struct rtvia {u16 family; u8 addr[]} (an IPv4 route via an IPv6 gateway)."""
    if len(raw) < 2:
        raise ProtocolError(f"RTA_VIA of {len(raw)} bytes")
    family = _U16.unpack_from(raw)[0]
    if family not in _ADDR_LEN:
        return f"family {family}"
    return _addr(family, raw[2:2 + _ADDR_LEN[family]], "RTA_VIA")


def _dev(index: int, links: Mapping[int, str]) -> str:
    return links.get(index, str(index))


def parse_multipath(data: bytes | memoryview, family: int, links: Mapping[int, str]) -> list[dict[str, Any]]:
    """RTA_MULTIPATH: a sequence of struct rtnexthop, each followed by its attributes."""
    out = []
    off, size = 0, len(data)
    while off + _RTNEXTHOP.size <= size:
        length, flags, hops, ifindex = _RTNEXTHOP.unpack_from(data, off)
        if length < _RTNEXTHOP.size or off + length > size:
            raise ProtocolError(f"rtnexthop of length {length} at offset {off} of {size}")
        attrs = parse_attrs(data, off + _RTNEXTHOP.size, off + length)
        gateway = None
        if RTA_GATEWAY in attrs:
            gateway = _addr(family, attrs[RTA_GATEWAY], "RTA_GATEWAY")
        elif RTA_VIA in attrs:
            gateway = _via(attrs[RTA_VIA])
        out.append({"gateway": gateway, "dev": _dev(ifindex, links) if ifindex else None,
                    "weight": hops + 1, "flags": flag_names(flags)})
        off += align4(length)
    if off < size:
        raise ProtocolError(f"{size - off} stray bytes after the last rtnexthop")
    return out


def parse_route(buf: memoryview | bytes, start: int, end: int, links: Mapping[int, str]) -> Optional[Route]:
    """One rtmsg and its attributes; None for families other than IPv4/IPv6 and for
    cached (cloned) entries, which ``ip route show`` leaves out too."""
    if end - start < _RTMSG.size:
        raise ProtocolError(f"rtmsg of {end - start} bytes (need {_RTMSG.size})")
    family, dst_len, src_len, _tos, table, protocol, scope, rtype, flags = _RTMSG.unpack_from(buf, start)
    if family not in _FAMILY_NAMES or flags & RTM_F_CLONED:
        return None
    attrs = parse_attrs(buf, start + _RTMSG.size, end)
    max_len = _ADDR_LEN[family] * 8
    if dst_len > max_len or src_len > max_len:
        raise ProtocolError(f"prefix length {max(dst_len, src_len)} in an {_FAMILY_NAMES[family]} route")
    if RTA_TABLE in attrs:
        table = _u32(attrs[RTA_TABLE], "RTA_TABLE")
    if RTA_DST in attrs:
        dst = "%s/%d" % (_addr(family, attrs[RTA_DST], "RTA_DST"), dst_len)
    elif dst_len == 0:
        dst = "default"
    else:
        raise ProtocolError(f"route with a /{dst_len} destination but no RTA_DST")
    src = None
    if RTA_SRC in attrs:
        src = "%s/%d" % (_addr(family, attrs[RTA_SRC], "RTA_SRC"), src_len)
    gateway = None
    if RTA_GATEWAY in attrs:
        gateway = _addr(family, attrs[RTA_GATEWAY], "RTA_GATEWAY")
    elif RTA_VIA in attrs:
        gateway = _via(attrs[RTA_VIA])
    oif = attrs.get(RTA_OIF)
    prefsrc = attrs.get(RTA_PREFSRC)
    pref = attrs.get(RTA_PREF)
    nexthops = None
    if RTA_MULTIPATH in attrs:
        nexthops = parse_multipath(attrs[RTA_MULTIPATH], family, links)
    priority = attrs.get(RTA_PRIORITY)
    return Route(
        family=_FAMILY_NAMES[family],
        table=TABLES.get(table, str(table)),
        route_type=ROUTE_TYPES[rtype] if rtype < len(ROUTE_TYPES) else str(rtype),
        dst=dst,
        gateway=gateway,
        dev=_dev(_u32(oif, "RTA_OIF"), links) if oif is not None else None,
        prefsrc=_addr(family, prefsrc, "RTA_PREFSRC") if prefsrc is not None else None,
        # IPv4 leaves RTA_PRIORITY out when it is 0; the route's metric is then 0.
        metric=_u32(priority, "RTA_PRIORITY") if priority is not None else 0,
        protocol=PROTOCOLS.get(protocol, str(protocol)),
        scope=SCOPES.get(scope, str(scope)),
        pref=(PREFS.get(pref[0], str(pref[0])) if len(pref) else None) if pref is not None else None,
        src=src,
        nexthops=nexthops,
        flags=tuple(flag_names(flags)),
    )


def dump_routes(nl: Netlink, family: int, links: Mapping[int, str]) -> list[Route]:
    return _dump_all(nl, RTM_GETROUTE, route_request(family),
                     lambda b, s, e: parse_route(b, s, e, links))


def collect(nl: Optional[Netlink] = None, links: Optional[Mapping[int, str]] = None) -> list[Route]:
    """Every route of every table: IPv4 first, then IPv6 (absent when IPv6 is disabled)."""
    own = nl is None
    nl = nl or Netlink(NETLINK_ROUTE)
    try:
        if links is None:
            links = {link.index: link.name for link in dump_links(nl)}
        routes = dump_routes(nl, socket.AF_INET, links)
        try:
            routes += dump_routes(nl, socket.AF_INET6, links)
        except NetlinkError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
                raise
        return routes
    finally:
        if own:
            nl.close()
