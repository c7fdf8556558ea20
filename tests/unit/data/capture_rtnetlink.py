"""Capture rtnetlink reply bytes (links, addresses, IPv4 and IPv6 routes) for the parser
fuzzing in tests/unit/test_fuzz_parsers.py to mutate.

Run once, as root, from the repository root: ``python3 tests/unit/data/capture_rtnetlink.py``.
It makes a throw-away network namespace with a veth pair in a bridge, addresses, a
gateway, a multipath and a blackhole route, and writes the first reply datagram of each
dump here (``rt_*.bin``, request sequence number 1).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
NS = "sdt-capture-rt"


def inner() -> None:
    sys.path.insert(0, os.path.join(HERE, "..", "..", ".."))
    from sockdebug_agent.inspectors.interfaces import RTM_GETADDR, RTM_GETLINK, addr_request, link_request
    from sockdebug_agent.inspectors.routes import RTM_GETROUTE, route_request
    from sockdebug_agent.netlink import NETLINK_ROUTE, NLM_F_DUMP, NLM_F_REQUEST, NLMSGHDR

    for name, msg_type, payload in (("rt_link.bin", RTM_GETLINK, link_request()),
                                    ("rt_addr.bin", RTM_GETADDR, addr_request()),
                                    ("rt_route4.bin", RTM_GETROUTE, route_request(socket.AF_INET)),
                                    ("rt_route6.bin", RTM_GETROUTE, route_request(socket.AF_INET6))):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        sock.bind((0, 0))
        sock.send(NLMSGHDR.pack(16 + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + payload)
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(sock.recv(1 << 16))
        sock.close()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "inner":
        inner()
        return
    run = lambda *a: subprocess.run(a, check=True)  # noqa: E731
    run("ip", "netns", "add", NS)
    try:
        ip = lambda *a: run("ip", "-n", NS, *a)  # noqa: E731
        ip("link", "set", "lo", "up")
        ip("link", "add", "sdbr0", "type", "bridge")
        ip("link", "add", "sdveth0", "type", "veth", "peer", "name", "sdveth1")
        ip("link", "set", "sdveth1", "master", "sdbr0")
        for dev in ("sdbr0", "sdveth0", "sdveth1"):
            ip("link", "set", dev, "up")
        ip("addr", "add", "192.0.2.10/24", "dev", "sdveth0")
        ip("addr", "add", "198.51.100.1/24", "dev", "sdbr0")
        ip("addr", "add", "2001:db8::10/64", "dev", "sdveth0", "nodad")
        ip("route", "add", "default", "via", "192.0.2.1")
        ip("route", "add", "203.0.113.0/24", "nexthop", "via", "192.0.2.2", "weight", "2",
           "nexthop", "via", "198.51.100.2")
        ip("route", "add", "blackhole", "10.99.0.0/16")
        ip("-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8::1", "metric", "50", "pref", "high")
        run("ip", "netns", "exec", NS, sys.executable, os.path.abspath(__file__), "inner")
    finally:
        subprocess.run(["ip", "netns", "del", NS])


if __name__ == "__main__":
    main()
