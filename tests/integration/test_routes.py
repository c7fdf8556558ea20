"""`sockdebug-agent routes` against `ip -j route show table all`, in a private namespace
with routes in several tables, of several types, IPv4 and IPv6, and multipath.

Two veth pairs with both ends in the namespace (no dummy interfaces on this kernel)
give the gateways a connected subnet.  DAD is off so that no route appears late.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.root

SETUP = [
    # links
    "link set lo up",
    "link add va type veth peer name vb",
    "link add vc type veth peer name vd",
    "addr add 10.10.0.1/24 dev va", "addr add 10.10.0.2/24 dev vb", "addr add 10.20.0.1/24 dev vc",
    "-6 addr add fd00:10::1/64 dev va nodad", "-6 addr add fd00:20::1/64 dev vc nodad",
    "link set va up", "link set vb up", "link set vc up", "link set vd up",
    # IPv4: main, a static route with a metric, table 100, reject types, multipath, src, onlink
    "route add default via 10.10.0.254 dev va metric 50",
    "route add 198.51.100.0/24 via 10.10.0.254 dev va metric 7 proto static",
    "route add 203.0.113.0/24 via 10.20.0.254 dev vc table 100",
    "route add default via 10.20.0.254 dev vc table 100",
    "route add blackhole 192.0.2.0/24",
    "route add unreachable 192.0.2.128/25 table 100",
    "route add prohibit 10.99.0.0/16",
    "route add 172.16.0.0/16 nexthop via 10.10.0.254 dev va weight 1 nexthop via 10.20.0.254 dev vc weight 3",
    "route add 10.30.0.0/16 dev va src 10.10.0.1 scope link",
    "route add 10.40.0.0/16 via 10.50.0.1 dev vc onlink",
    "route add throw 10.60.0.0/16 table 100",
    # IPv6: gateway with a metric and a router preference, multipath, blackhole, another table
    "-6 route add 2001:db8:1::/48 via fd00:10::fe dev va metric 7 pref high",
    "-6 route add 2001:db8:2::/48 nexthop via fd00:10::fe dev va nexthop via fd00:20::fe dev vc",
    "-6 route add blackhole 2001:db8:dead::/48",
    "-6 route add 2001:db8:3::/48 via fd00:20::fe dev vc table 100",
    "-6 route add default via fd00:10::fe dev va",
]


def _ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True,
                          timeout=30).stdout


@pytest.fixture(scope="module")
def route_ns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip (creates a network namespace)")
    name = "sdroute-" + secrets.token_hex(3)
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        for key in ("all", "default"):
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0"],
                           check=True, capture_output=True, timeout=30)
        for line in SETUP:
            _ip(name, *line.split())
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def normalise_ip(entry: dict, family: str) -> tuple:
    """One `ip -j route` object in the agent's terms (ip leaves defaults out)."""
    dst = entry["dst"]
    if dst != "default" and "/" not in dst:
        dst += "/32" if family == "inet" else "/128"
    hops = entry.get("nexthops")
    if hops is not None:
        hops = tuple((h.get("gateway"), h.get("dev"), h.get("weight", 1), tuple(h.get("flags", ()))) for h in hops)
    return (family, entry.get("table", "main"), entry.get("type", "unicast"), dst, entry.get("gateway"),
            entry.get("dev"), entry.get("prefsrc"), entry.get("metric", 0), entry.get("protocol", "boot"),
            entry.get("scope", "global"), entry.get("pref"), entry.get("from"), hops, tuple(entry.get("flags", ())))


def normalise_agent(r: dict) -> tuple:
    hops = r["nexthops"]
    if hops is not None:
        hops = tuple((h["gateway"], h["dev"], h["weight"], tuple(h["flags"])) for h in hops)
    return (r["family"], r["table"], r["route_type"], r["dst"], r["gateway"], r["dev"], r["prefsrc"], r["metric"],
            r["protocol"], r["scope"], r["pref"], r["src"], hops, tuple(r["flags"]))


def ip_routes(ns: str) -> list[tuple]:
    v4 = json.loads(_ip(ns, "-4", "-j", "route", "show", "table", "all"))
    v6 = json.loads(_ip(ns, "-6", "-j", "route", "show", "table", "all"))
    return [normalise_ip(e, "inet") for e in v4] + [normalise_ip(e, "inet6") for e in v6]


def test_every_route_matches_ip(route_ns, run_agent):
    run = run_agent("--netns", route_ns, "routes")
    assert run.returncode == 0, run.stderr
    got = [normalise_agent(r) for r in run.of_type("route")]
    want = ip_routes(route_ns)
    assert len(want) > 30  # the setup above really happened
    assert sorted(got, key=repr) == sorted(want, key=repr)


def test_route_details(route_ns, run_agent):
    routes = run_agent("--netns", route_ns, "routes").of_type("route")

    def one(**match):
        found = [r for r in routes if all(r[k] == v for k, v in match.items())]
        assert len(found) == 1, (match, found)
        return found[0]

    assert one(family="inet", table="main", dst="default")["gateway"] == "10.10.0.254"
    static = one(dst="198.51.100.0/24")
    assert (static["metric"], static["protocol"], static["dev"]) == (7, "static", "va")
    assert one(dst="203.0.113.0/24")["table"] == "100"
    assert one(dst="192.0.2.0/24")["route_type"] == "blackhole"
    assert one(dst="192.0.2.128/25")["route_type"] == "unreachable"
    assert one(dst="10.99.0.0/16")["route_type"] == "prohibit"
    assert one(dst="10.60.0.0/16")["route_type"] == "throw"
    multi = one(dst="172.16.0.0/16")
    assert multi["nexthops"] == [{"gateway": "10.10.0.254", "dev": "va", "weight": 1, "flags": []},
                                 {"gateway": "10.20.0.254", "dev": "vc", "weight": 3, "flags": []}]
    assert (multi["gateway"], multi["dev"]) == (None, None)
    linked = one(dst="10.30.0.0/16")
    assert (linked["prefsrc"], linked["scope"]) == ("10.10.0.1", "link")
    assert one(dst="10.40.0.0/16")["flags"] == ["onlink"]
    local = one(table="local", dst="10.10.0.1/32")
    assert (local["route_type"], local["scope"], local["protocol"]) == ("local", "host", "kernel")
    v6 = one(dst="2001:db8:1::/48")
    assert (v6["family"], v6["gateway"], v6["metric"], v6["pref"]) == ("inet6", "fd00:10::fe", 7, "high")
    assert [h["gateway"] for h in one(dst="2001:db8:2::/48")["nexthops"]] == ["fd00:10::fe", "fd00:20::fe"]
    assert one(dst="2001:db8:dead::/48")["route_type"] == "blackhole"
    assert one(family="inet6", table="main", dst="default")["pref"] == "medium"


def test_routes_follow_the_namespace(route_ns, run_agent):
    """The same command without --netns shows the host's routes, not the test namespace's."""
    host = run_agent("routes").of_type("route")
    assert not any(r["dst"] == "198.51.100.0/24" and r["dev"] == "va" for r in host)
