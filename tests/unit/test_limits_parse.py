"""limits parsers on captured /proc texts: absent figures are None, never 0."""

from __future__ import annotations

import socket

import pytest
from sockdebug_agent.inspectors import limits, portable
from sockdebug_agent.schema import Socket

PROC_LIMITS = """\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max file size             unlimited            unlimited            bytes
Max processes             63514                63514                processes
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
"""

NETSTAT = """\
TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed ListenOverflows ListenDrops TCPAbortOnData TW
TcpExt: 3 2 1 17 19 5 40
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
"""

SNMP = """\
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs \
OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 289 202 12 67 142 100 32918 13 0 159 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 155 4 9 150 7 0 0 0 0
"""


def test_parse_nofile():
    assert limits.parse_nofile(PROC_LIMITS) == (1024, 524288)
    text = PROC_LIMITS.replace("1024                 524288", "unlimited            unlimited")
    assert limits.parse_nofile(text) == (None, None)
    with pytest.raises(ValueError):
        limits.parse_nofile("Limit Soft Hard Units\nMax processes 1 1 processes\n")


def test_file_nr_port_range_and_ints():
    assert limits.parse_file_nr("20716\t0\t2466177\n") == (20716, 0, 2466177)
    assert limits.parse_file_nr(None) == (None, None, None)
    assert limits.parse_file_nr("garbage") == (None, None, None)
    assert limits.parse_port_range("32768\t60999\n") == (32768, 60999)
    assert limits.parse_port_range("1") is None and limits.parse_port_range(None) is None
    assert limits.parse_int("4096\n") == 4096
    assert limits.parse_int(None) is None and limits.parse_int("") is None and limits.parse_int("x") is None
    assert limits.parse_int("0\n") == 0  # a real zero stays zero


def test_kernel_threads_are_recognised_by_pf_kthread():
    kthread = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 7 0 0"
    user = b"812 (my (odd) app) S 1 812 812 0 -1 4194560 149 0 0 0 0 0 0 0 20 0 1 0 300 0 0"
    assert limits.is_kernel_thread(kthread)
    assert not limits.is_kernel_thread(user)
    assert not limits.is_kernel_thread(b"1 (x)")


def test_percent():
    assert limits.percent(85, 100) == 85.0
    assert limits.percent(1, 3) == 33.3
    assert limits.percent(None, 100) is None and limits.percent(5, None) is None and limits.percent(5, 0) is None


def test_counters_missing_names_are_none_and_wildcards_take_the_group():
    picked = limits.pick_counters({**limits.parse_counter_pairs(NETSTAT), **limits.parse_counter_pairs(SNMP)})
    ext = picked["TcpExt"]
    assert (ext["ListenOverflows"], ext["ListenDrops"], ext["TW"]) == (17, 19, 40)
    assert ext["TCPTimeWaitOverflow"] is None  # this kernel's text lacks it: absent, not 0
    assert (ext["SyncookiesSent"], ext["SyncookiesRecv"], ext["SyncookiesFailed"]) == (3, 2, 1)
    assert picked["Tcp"]["RetransSegs"] == 13 and picked["Tcp"]["CurrEstab"] == 142
    assert picked["Udp"] == {"InDatagrams": 155, "RcvbufErrors": 7, "SndbufErrors": 0, "NoPorts": 4,
                             "InErrors": 9}
    assert set(picked) == {"TcpExt", "Tcp", "Udp"} and "IpExt" not in picked


def sock(netid: str, port: int, state: str = "ESTAB") -> Socket:
    return Socket("inet", netid, state, 0, 0, "127.0.0.1", port, "127.0.0.1", 80)


def test_local_ports_in_use_counts_distinct_ports_inside_the_range_per_protocol():
    socks = [sock("tcp", 40000), sock("tcp", 40000, "TIME-WAIT"), sock("tcp", 40001), sock("tcp", 80, "LISTEN"),
             sock("udp", 40005), sock("udp", 50000), sock("raw", 40002)]
    assert limits.local_ports_in_use(socks, (40000, 40010)) == {"tcp": 2, "udp": 1}
    assert limits.local_ports_in_use(socks, None) is None


def test_build_limits_everything_missing_is_null_not_zero():
    lim = limits.build_limits(None, None, None, {}, None, None, None, None)
    assert all(v is None for v in lim.system.values())
    assert all(v is None for v in lim.netns.values())
    assert all(v is None for group in lim.counters.values() for v in group.values())


def test_build_limits_from_texts():
    sysctls = {"somaxconn": "4096\n", "tcp_max_tw_buckets": "131072\n", "conntrack_count": "0\n"}
    lim = limits.build_limits("900\t0\t2466170\n", "2466170\n", "1048576\n", sysctls, "32768\t60999\n",
                              NETSTAT, SNMP, [sock("tcp", 40000), sock("udp", 33000)])
    assert lim.system == {"file_handles_allocated": 900, "file_handles_free": 0, "file_max": 2466170,
                          "nr_open": 1048576}
    assert lim.netns["somaxconn"] == 4096 and lim.netns["conntrack_count"] == 0
    assert lim.netns["conntrack_max"] is None  # nf_conntrack not loaded: absent
    assert lim.netns["ip_local_port_range"] == [32768, 60999]
    assert lim.netns["local_ports_in_use"] == {"tcp": 1, "udp": 1}
    assert lim.counters["TcpExt"]["ListenOverflows"] == 17


def test_portable_limits_have_the_linux_keys_all_null():
    linux = limits.build_limits(None, None, None, {}, None, NETSTAT, SNMP, [])
    fallback = portable.collect_limits()
    assert set(fallback.system) == set(linux.system) and set(fallback.netns) == set(linux.netns)
    assert set(fallback.counters) == set(linux.counters)
    assert all(v is None for v in fallback.netns.values())


def test_psutil_connection_mapping():
    class Conn:
        def __init__(self, family, kind, laddr, raddr, status):
            self.family, self.type, self.laddr, self.raddr, self.status = family, kind, laddr, raddr, status

    listen = portable.connection_to_socket(Conn(socket.AF_INET6, socket.SOCK_STREAM, ("::", 80), (), "LISTEN"),
                                           [{"pid": 1, "comm": "x", "fd": 3}])
    assert (listen.family, listen.netid, listen.state, listen.local_address, listen.local_port,
            listen.peer_address, listen.peer_port) == ("inet6", "tcp", "LISTEN", "::", 80, "::", 0)
    assert listen.processes == [{"pid": 1, "comm": "x", "fd": 3}]
    udp = portable.connection_to_socket(Conn(socket.AF_INET, socket.SOCK_DGRAM, ("0.0.0.0", 53), (), "NONE"), None)
    assert udp.state == "UNCONN" and udp.netid == "udp"
    connected = portable.connection_to_socket(
        Conn(socket.AF_INET, socket.SOCK_DGRAM, ("10.0.0.1", 5000), ("10.0.0.2", 53), "NONE"), None)
    assert connected.state == "ESTAB"
    assert portable.connection_to_socket(Conn(socket.AF_UNIX, socket.SOCK_STREAM, "/x", "", "NONE"), None) is None
    tw = portable.connection_to_socket(
        Conn(socket.AF_INET, socket.SOCK_STREAM, ("10.0.0.1", 5000), ("10.0.0.2", 80), "TIME_WAIT"), None)
    assert tw.state == "TIME-WAIT"
