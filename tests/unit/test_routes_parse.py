"""rtnetlink parsers (routes, links, addresses) on constructed bytes.

The messages are built field by field from the uapi layouts (rtmsg, rtattr,
rtnexthop, ifinfomsg, ifaddrmsg), so each test states exactly what the kernel sent.
Truncated or garbage input must end in ``ProtocolError`` — never another exception.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest
from sockdebug_agent.inspectors import interfaces, routes
from sockdebug_agent.inspectors.routes import parse_route
from sockdebug_agent.netlink import ProtocolError

LINKS = {1: "lo", 2: "eth0", 3: "eth1"}
V4, V6 = socket.AF_INET, socket.AF_INET6


def rta(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


def ip(text: str) -> bytes:
    return socket.inet_pton(V6 if ":" in text else V4, text)


def rtmsg(family=V4, dst_len=0, src_len=0, table=254, protocol=3, scope=0, rtype=1, flags=0) -> bytes:
    return struct.pack("=BBBBBBBBI", family, dst_len, src_len, 0, table, protocol, scope, rtype, flags)


def route(*attrs: bytes, **header) -> bytes:
    return rtmsg(**header) + b"".join(attrs)


def parse(data: bytes):
    return parse_route(data, 0, len(data), LINKS)


def nexthop(ifindex: int, weight: int, *attrs: bytes, flags: int = 0) -> bytes:
    body = b"".join(attrs)
    return struct.pack("=HBBi", 8 + len(body), flags, weight - 1, ifindex) + body


# --- routes -------------------------------------------------------------------------

def test_ipv4_unicast_route_with_gateway_metric_and_static_protocol():
    r = parse(route(rta(1, ip("198.51.100.0")), rta(5, ip("192.0.2.254")), rta(4, u32(2)),
                    rta(6, u32(50)), rta(15, u32(254)), dst_len=24, protocol=4))
    assert (r.family, r.table, r.route_type, r.dst) == ("inet", "main", "unicast", "198.51.100.0/24")
    assert (r.gateway, r.dev, r.metric, r.protocol, r.scope) == ("192.0.2.254", "eth0", 50, "static", "global")
    assert r.pref is None and r.nexthops is None and r.src is None


def test_default_route_has_no_rta_dst_and_ipv4_metric_defaults_to_zero():
    r = parse(route(rta(5, ip("192.0.2.1")), rta(4, u32(2))))
    assert r.dst == "default" and r.metric == 0 and r.protocol == "boot"


def test_local_table_host_route_prefsrc_and_scope_host():
    r = parse(route(rta(15, u32(255)), rta(1, ip("127.0.0.1")), rta(7, ip("127.0.0.1")), rta(4, u32(1)),
                    dst_len=32, table=255, protocol=2, scope=254, rtype=2))
    assert (r.table, r.route_type, r.dst, r.prefsrc, r.scope, r.protocol) == (
        "local", "local", "127.0.0.1/32", "127.0.0.1", "host", "kernel")


def test_rta_table_overrides_the_u8_header_field():
    # Tables above 255 only fit in RTA_TABLE; the header then says RT_TABLE_COMPAT (252).
    r = parse(route(rta(15, u32(1000)), rta(1, ip("203.0.113.0")), dst_len=24, table=252))
    assert r.table == "1000"


@pytest.mark.parametrize("rtype,name", [(6, "blackhole"), (7, "unreachable"), (8, "prohibit"),
                                        (9, "throw"), (3, "broadcast"), (5, "multicast"), (77, "77")])
def test_route_types(rtype, name):
    r = parse(route(rta(1, ip("192.0.2.0")), dst_len=24, rtype=rtype))
    assert r.route_type == name and r.dev is None and r.gateway is None


@pytest.mark.parametrize("proto,name", [(2, "kernel"), (9, "ra"), (16, "dhcp"), (186, "bgp"), (250, "250")])
def test_protocol_names(proto, name):
    assert parse(route(protocol=proto)).protocol == name


def test_ipv6_route_pref_and_metric():
    r = parse(route(rta(15, u32(254)), rta(1, ip("2001:db8:1::")), rta(5, ip("fe80::1")), rta(4, u32(3)),
                    rta(6, u32(1024)), rta(20, bytes([1])), family=V6, dst_len=48))
    assert (r.family, r.dst, r.gateway, r.dev, r.metric, r.pref) == (
        "inet6", "2001:db8:1::/48", "fe80::1", "eth1", 1024, "high")
    low = parse(route(rta(20, bytes([3])), family=V6))
    assert low.pref == "low" and low.dst == "default"


def test_source_specific_route():
    r = parse(route(rta(1, ip("2001:db8::")), rta(2, ip("2001:db8:ff::")), family=V6, dst_len=32, src_len=48))
    assert r.src == "2001:db8:ff::/48"


def test_multipath_nexthops_with_weights_flags_and_via():
    hops = (nexthop(2, 1, rta(5, ip("10.0.0.254")))
            + nexthop(3, 3, rta(5, ip("10.1.0.254")), flags=0x10)
            # RTA_VIA: an IPv4 route through an IPv6 gateway (struct rtvia: u16 family + address)
            + nexthop(2, 2, rta(18, struct.pack("=H", V6) + ip("fe80::9"))))
    r = parse(route(rta(1, ip("172.16.0.0")), rta(9, hops), dst_len=16))
    assert r.gateway is None and r.dev is None
    assert r.nexthops == [
        {"gateway": "10.0.0.254", "dev": "eth0", "weight": 1, "flags": []},
        {"gateway": "10.1.0.254", "dev": "eth1", "weight": 3, "flags": ["linkdown"]},
        {"gateway": "fe80::9", "dev": "eth0", "weight": 2, "flags": []},
    ]


def test_route_flags_and_unknown_ifindex():
    r = parse(route(rta(4, u32(42)), flags=0x14))
    assert r.flags == ("onlink", "linkdown")
    assert r.dev == "42"


def test_cloned_entries_and_other_families_are_skipped():
    assert parse(route(flags=0x200)) is None
    assert parse(route(family=28)) is None  # AF_MPLS
    assert parse(route(family=128)) is None  # RTNL_FAMILY_IPMR


def test_route_request_is_a_zeroed_rtmsg_of_the_family():
    assert routes.route_request(V6) == rtmsg(family=V6, table=0, protocol=0, rtype=0)


# --- malformed input ----------------------------------------------------------------

@pytest.mark.parametrize("data,what", [
    (rtmsg()[:11], "rtmsg of 11 bytes"),
    (route(rta(1, ip("10.0.0.0"))[:-2], dst_len=8), "overruns"),
    (route(rta(1, b"\x0a\x00\x00"), dst_len=8), "RTA_DST of 3 bytes"),
    (route(rta(5, ip("fe80::1"))), "RTA_GATEWAY of 16 bytes"),
    (route(dst_len=33), "prefix length 33"),
    (route(dst_len=24), "no RTA_DST"),
    (route(rta(15, b"\x01\x00")), "RTA_TABLE attribute of 2 bytes"),
    (route(rta(9, struct.pack("=HBBi", 4, 0, 0, 2))), "rtnexthop of length 4"),
    (route(rta(9, struct.pack("=HBBi", 40, 0, 0, 2))), "rtnexthop of length 40"),
    (route(rta(9, nexthop(2, 1) + b"\x01\x02\x03\x04")), "stray bytes"),
    (route(rta(18, b"\x0a")), "RTA_VIA of 1 bytes"),
])
def test_malformed_routes_raise_protocol_error(data, what):
    with pytest.raises(ProtocolError, match=what):
        parse(data)


def _garbage_only_protocol_errors(parser, valid: bytes, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[:rng.randrange(len(data))]
        try:
            parser(bytes(data), 0, len(data))
        except ProtocolError:
            pass


def test_corrupted_routes_fail_cleanly():
    valid = route(rta(15, u32(100)), rta(1, ip("172.16.0.0")), rta(7, ip("10.0.0.1")), rta(6, u32(9)),
                  rta(9, nexthop(2, 1, rta(5, ip("10.0.0.254"))) + nexthop(3, 2, rta(5, ip("10.1.0.254")))),
                  dst_len=16)
    _garbage_only_protocol_errors(lambda b, s, e: parse_route(b, s, e, LINKS), valid, 1)


# --- links and addresses ------------------------------------------------------------

def ifinfomsg(index: int, flags: int, ifi_type: int = 1) -> bytes:
    return struct.pack("=BxHiII", 0, ifi_type, index, flags, 0)


def test_link_with_kind_master_operstate_and_stats():
    stats = struct.pack("=8Q", 10, 20, 1000, 2000, 1, 2, 3, 4) + b"\0" * 128
    data = (ifinfomsg(7, 0x1 | 0x2 | 0x40 | 0x1000 | 0x10000)
            + rta(3, b"veth0\0") + rta(4, u32(1400)) + rta(1, bytes.fromhex("02aabbccddee"))
            + rta(16, bytes([6])) + rta(10, u32(9)) + rta(23, stats)
            + rta(18 | 0x8000, rta(1, b"veth\0")))
    link = interfaces.parse_link(data, 0, len(data))
    assert (link.index, link.name, link.state, link.mtu, link.mac, link.kind, link.master) == (
        7, "veth0", "UP", 1400, "02:aa:bb:cc:dd:ee", "veth", 9)
    assert link.flags == ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"]
    assert link.link_type == "ether"
    assert link.stats == {"rx_packets": 10, "tx_packets": 20, "rx_bytes": 1000, "tx_bytes": 2000,
                          "rx_errors": 1, "tx_errors": 2, "rx_dropped": 3, "tx_dropped": 4}


def test_link_up_without_carrier_is_no_carrier_like_ip():
    data = ifinfomsg(3, 0x1 | 0x2, ifi_type=772) + rta(3, b"x\0") + rta(16, bytes([2]))
    link = interfaces.parse_link(data, 0, len(data))
    assert link.flags[0] == "NO-CARRIER" and link.state == "DOWN" and link.link_type == "loopback"


def ifaddrmsg(family: int, prefixlen: int, flags: int, scope: int, index: int) -> bytes:
    return struct.pack("=BBBBI", family, prefixlen, flags, scope, index)


def test_ipv4_address_with_broadcast_label_and_flags():
    data = (ifaddrmsg(V4, 24, 0x80, 0, 2) + rta(1, ip("10.0.0.1")) + rta(2, ip("10.0.0.1"))
            + rta(4, ip("10.0.0.255")) + rta(3, b"eth0:1\0") + rta(8, u32(0x80 | 0x01)))
    index, entry = interfaces.parse_addr(data, 0, len(data))
    assert index == 2
    assert entry == {"family": "inet", "address": "10.0.0.1", "prefixlen": 24, "scope": "global",
                     "broadcast": "10.0.0.255", "label": "eth0:1", "flags": ["secondary"]}


def test_point_to_point_peer_and_dynamic_ipv6():
    data = ifaddrmsg(V4, 32, 0x80, 0, 3) + rta(2, ip("10.9.0.1")) + rta(1, ip("10.9.0.2"))
    assert interfaces.parse_addr(data, 0, len(data))[1]["peer"] == "10.9.0.2"
    data = ifaddrmsg(V6, 64, 0, 253, 3) + rta(1, ip("fe80::1")) + rta(8, u32(0x40 | 0x200))
    entry = interfaces.parse_addr(data, 0, len(data))[1]
    assert (entry["scope"], entry["flags"]) == ("link", ["dynamic", "tentative", "noprefixroute"])


@pytest.mark.parametrize("data,what", [
    (ifinfomsg(1, 0)[:10], "ifinfomsg of 10 bytes"),
    (ifinfomsg(1, 0) + rta(4, u32(1500)), "without IFLA_IFNAME"),
    (ifinfomsg(1, 0) + rta(3, b"lo\0") + rta(4, b"\x01"), "IFLA_MTU attribute of 1 bytes"),
])
def test_malformed_links(data, what):
    with pytest.raises(ProtocolError, match=what):
        interfaces.parse_link(data, 0, len(data))


@pytest.mark.parametrize("data,what", [
    (ifaddrmsg(V4, 8, 0, 0, 1)[:7], "ifaddrmsg of 7 bytes"),
    (ifaddrmsg(V4, 8, 0, 0, 1), "without IFA_LOCAL or IFA_ADDRESS"),
    (ifaddrmsg(V4, 8, 0, 0, 1) + rta(2, ip("::1")), "address of 16 bytes"),
])
def test_malformed_addresses(data, what):
    with pytest.raises(ProtocolError, match=what):
        interfaces.parse_addr(data, 0, len(data))


def test_corrupted_links_and_addresses_fail_cleanly():
    link = (ifinfomsg(7, 0x1043) + rta(3, b"veth0\0") + rta(4, u32(1400)) + rta(16, bytes([6]))
            + rta(18 | 0x8000, rta(1, b"veth\0")) + rta(23, b"\0" * 64))
    _garbage_only_protocol_errors(interfaces.parse_link, link, 2)
    addr = ifaddrmsg(V6, 64, 0, 0, 2) + rta(1, ip("2001:db8::1")) + rta(8, u32(0x80))
    _garbage_only_protocol_errors(interfaces.parse_addr, addr, 3)


def test_build_interfaces_resolves_masters_and_groups_addresses():
    br = interfaces.Link(5, "br0", "UP", 1500, None, ["UP"], "bridge", "ether", None, None)
    port = interfaces.Link(6, "veth1", "UP", 1500, None, ["UP"], "veth", "ether", 5, None)
    built = interfaces.build_interfaces([port, br], [(6, {"address": "10.0.0.1"}), (6, {"address": "::1"})])
    assert [i.name for i in built] == ["br0", "veth1"]
    assert built[1].master == "br0" and [a["address"] for a in built[1].addresses] == ["10.0.0.1", "::1"]
