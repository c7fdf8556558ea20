"""rtnetlink links and addresses (``ip -d addr``): RTM_GETLINK + RTM_GETADDR.

``parse_link`` / ``parse_addr`` turn one reply payload into plain values with no I/O;
``collect`` runs the two dumps on a NETLINK_ROUTE socket of the current network
namespace.  Interface names come from here (not ``if_indextoname``) so they are those
of the namespace the agent entered.  Layouts: ``include/uapi/linux/rtnetlink.h``,
``if_link.h``, ``if_addr.h``.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, NamedTuple, Optional

from ..netlink import NETLINK_ROUTE, Netlink, ProtocolError, dump_all, parse_attrs
from ..schema import Interface, text

RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22

_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_U32 = struct.Struct("=I")
_STATS64 = struct.Struct("=8Q")

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_STATS64, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_LINK_NETNSID = 23, 16, 18, 37
IFLA_INFO_KIND = 1

IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 3, 4, 8

OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

# ip's print_link_flags order; IFF_RUNNING is not shown (ip prints NO-CARRIER for UP
# without RUNNING instead).
_IFF_UP, _IFF_RUNNING = 0x1, 0x40
LINK_FLAGS = (
    (0x8, "LOOPBACK"), (0x2, "BROADCAST"), (0x10, "POINTOPOINT"), (0x1000, "MULTICAST"),
    (0x80, "NOARP"), (0x200, "ALLMULTI"), (0x100, "PROMISC"), (0x400, "MASTER"), (0x800, "SLAVE"),
    (0x4, "DEBUG"), (0x8000, "DYNAMIC"), (0x4000, "AUTOMEDIA"), (0x2000, "PORTSEL"),
    (0x20, "NOTRAILERS"), (0x1, "UP"), (0x10000, "LOWER_UP"), (0x20000, "DORMANT"), (0x40000, "ECHO"),
)
# IFA_F_*, with ip's words (ip shows "dynamic" for an address that is not permanent).
ADDR_FLAGS = (
    (0x01, "secondary"), (0x02, "nodad"), (0x04, "optimistic"), (0x08, "dadfailed"),
    (0x10, "home"), (0x20, "deprecated"), (0x40, "tentative"), (0x100, "mngtmpaddr"),
    (0x200, "noprefixroute"), (0x400, "autojoin"), (0x800, "stable-privacy"),
)
_IFA_F_PERMANENT = 0x80
# ARPHRD_* names as ip prints link_type (the common ones; others as numbers).
LINK_TYPES = {
    1: "ether", 24: "ieee1394", 32: "infiniband", 512: "ppp", 768: "ipip", 769: "tunnel6",
    772: "loopback", 776: "sit", 778: "gre", 779: "pimreg", 823: "ip6gre", 65534: "none",
    280: "can", 519: "rawip",
}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
STATS_FIELDS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
                "rx_dropped", "tx_dropped")


class Link(NamedTuple):
    """One RTM_NEWLINK, before master indexes are resolved to names."""

    index: int
    name: str
    state: str
    mtu: Optional[int]
    mac: Optional[str]
    flags: list[str]
    kind: Optional[str]
    link_type: str
    master: Optional[int]
    stats: Optional[dict[str, int]]
    peer: Optional[int] = None  #: IFLA_LINK in this namespace (a veth's other end), for M-DOWN


def link_request() -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def addr_request() -> bytes:
    return _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def link_flag_names(flags: int) -> list[str]:
    out = ["NO-CARRIER"] if flags & _IFF_UP and not flags & _IFF_RUNNING else []
    out.extend(name for bit, name in LINK_FLAGS if flags & bit)
    return out


def _cstring(raw: bytes | memoryview) -> str:
    return text(bytes(raw).split(b"\0", 1)[0])


def _u32(raw: bytes | memoryview, what: str) -> int:
    if len(raw) < 4:
        raise ProtocolError(f"{what} attribute of {len(raw)} bytes (need 4)")
    return _U32.unpack_from(raw)[0]


def parse_link(buf: memoryview | bytes, start: int, end: int) -> Link:
    """One ifinfomsg and its attributes."""
    if end - start < _IFINFOMSG.size:
        raise ProtocolError(f"ifinfomsg of {end - start} bytes (need {_IFINFOMSG.size})")
    _family, ifi_type, index, flags, _change = _IFINFOMSG.unpack_from(buf, start)
    attrs = parse_attrs(buf, start + _IFINFOMSG.size, end)
    name = attrs.get(IFLA_IFNAME)
    if name is None:
        raise ProtocolError(f"link {index} without IFLA_IFNAME")
    mtu = attrs.get(IFLA_MTU)
    mac = attrs.get(IFLA_ADDRESS)
    oper = attrs.get(IFLA_OPERSTATE)
    master = attrs.get(IFLA_MASTER)
    peer = attrs.get(IFLA_LINK)
    if IFLA_LINK_NETNSID in attrs:
        peer = None  # the other end lives in another namespace: its flags are not ours to read
    kind = None
    info = attrs.get(IFLA_LINKINFO)
    if info is not None:
        nested = parse_attrs(info, 0, len(info))
        if IFLA_INFO_KIND in nested:
            kind = _cstring(nested[IFLA_INFO_KIND])
    stats = None
    raw_stats = attrs.get(IFLA_STATS64)
    if raw_stats is not None and len(raw_stats) >= _STATS64.size:
        stats = dict(zip(STATS_FIELDS, _STATS64.unpack_from(raw_stats)))
    state = "UNKNOWN"
    if oper is not None and len(oper):
        state = OPERSTATES[oper[0]] if oper[0] < len(OPERSTATES) else str(oper[0])
    return Link(
        index=index, name=_cstring(name), state=state,
        mtu=_u32(mtu, "IFLA_MTU") if mtu is not None else None,
        mac=":".join("%02x" % b for b in bytes(mac)) if mac is not None else None,
        flags=link_flag_names(flags), kind=kind, link_type=LINK_TYPES.get(ifi_type, str(ifi_type)),
        master=_u32(master, "IFLA_MASTER") if master is not None else None, stats=stats,
        peer=_u32(peer, "IFLA_LINK") if peer is not None else None,
    )


def _ip(family: int, raw: bytes | memoryview) -> str:
    try:
        return socket.inet_ntop(family, bytes(raw))
    except ValueError:
        raise ProtocolError(f"address of {len(raw)} bytes for address family {family}") from None


def parse_addr(buf: memoryview | bytes, start: int, end: int) -> Optional[tuple[int, dict[str, Any]]]:
    """One ifaddrmsg as ``(ifindex, {family, address, prefixlen, scope, ...})``; None for
    families other than IPv4/IPv6."""
    if end - start < _IFADDRMSG.size:
        raise ProtocolError(f"ifaddrmsg of {end - start} bytes (need {_IFADDRMSG.size})")
    family, prefixlen, flags8, scope, index = _IFADDRMSG.unpack_from(buf, start)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = parse_attrs(buf, start + _IFADDRMSG.size, end)
    local, address = attrs.get(IFA_LOCAL), attrs.get(IFA_ADDRESS)
    if local is None and address is None:
        raise ProtocolError(f"address on link {index} without IFA_LOCAL or IFA_ADDRESS")
    flags = _u32(attrs[IFA_FLAGS], "IFA_FLAGS") if IFA_FLAGS in attrs else flags8
    entry: dict[str, Any] = {
        "family": "inet" if family == socket.AF_INET else "inet6",
        "address": _ip(family, local if local is not None else address),  # type: ignore[arg-type]
        "prefixlen": prefixlen,
        "scope": SCOPES.get(scope, str(scope)),
    }
    # Point-to-point: IFA_ADDRESS is the far end when it differs from IFA_LOCAL.
    if local is not None and address is not None and bytes(local) != bytes(address):
        entry["peer"] = _ip(family, address)
    if IFA_BROADCAST in attrs:
        entry["broadcast"] = _ip(family, attrs[IFA_BROADCAST])
    if IFA_LABEL in attrs:
        entry["label"] = _cstring(attrs[IFA_LABEL])
    names = [] if flags & _IFA_F_PERMANENT else ["dynamic"]
    if family == socket.AF_INET6 and flags & 0x01:
        names.append("temporary")  # IFA_F_TEMPORARY shares the bit with SECONDARY
        flags &= ~0x01
    names.extend(name for bit, name in ADDR_FLAGS if flags & bit)
    entry["flags"] = names
    return index, entry


def build_interfaces(links: list[Link], addrs: list[tuple[int, dict[str, Any]]]) -> list[Interface]:
    """Links in index order with their addresses (in dump order) and master names."""
    names = {link.index: link.name for link in links}
    up = {link.index for link in links if "UP" in link.flags}
    by_index: dict[int, list[dict[str, Any]]] = {}
    for index, entry in addrs:
        by_index.setdefault(index, []).append(entry)
    out = []
    for link in sorted(links, key=lambda lk: lk.index):
        master = None if link.master is None else names.get(link.master, str(link.master))
        flags = link.flags
        if link.peer and link.peer not in up:  # ip's M-DOWN: the link this one sits on is down
            flags = [*flags, "M-DOWN"]
        out.append(Interface(
            index=link.index, name=link.name, state=link.state, mtu=link.mtu, mac=link.mac,
            flags=flags, kind=link.kind, addresses=by_index.get(link.index, []),
            link_type=link.link_type, master=master, stats=link.stats,
        ))
    return out


def dump_links(nl: Netlink) -> list[Link]:
    return dump_all(nl, RTM_GETLINK, link_request(), parse_link)


def collect(nl: Optional[Netlink] = None) -> list[Interface]:
    """Every link of the current network namespace with its addresses."""
    own = nl is None
    nl = nl or Netlink(NETLINK_ROUTE)
    try:
        links = dump_links(nl)
        addrs = dump_all(nl, RTM_GETADDR, addr_request(), parse_addr)
    finally:
        if own:
            nl.close()
    return build_interfaces(links, addrs)
