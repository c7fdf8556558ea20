"""Property-based fuzzing (Hypothesis) of every record parser: random bytes, and
mutations of the bytes captured from a real kernel in tests/unit/data.  Each parser may
raise only its documented exception (ProtocolError/NetlinkError for netlink and
/proc/net, ValueError where its docstring says so), and every string it returns is
strict UTF-8 (no lone surrogate reaches a reader).  Last, the agent's own output stays
framed for any command line.

Run time is bounded: SOCKDEBUG_FUZZ_EXAMPLES examples per property (default 150,
derandomized in CI); raise it locally for a longer hunt.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sockdebug_agent import namespaces
from sockdebug_agent.inspectors import counters, interfaces, limits, podns, processes, procfs, procnet, routes
from sockdebug_agent.inspectors.sockdiag import inet_parser, parse_unix
from sockdebug_agent.netlink import NetlinkError, ProtocolError, parse_attrs, parse_datagram
from sockdebug_agent.schema import text

DATA = Path(__file__).parent / "data"
settings.register_profile("sockdebug", max_examples=int(os.environ.get("SOCKDEBUG_FUZZ_EXAMPLES", "150")),
                          deadline=None, database=None, derandomize=bool(os.environ.get("CI")),
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("sockdebug")
NETLINK_ERRORS = (ProtocolError, NetlinkError)


def captured(name: str) -> bytes:
    return (DATA / name).read_bytes()


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few bytes changed, cut, inserted or deleted."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(("set", "cut", "insert", "delete")))
        if op == "set":
            out[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del out[i:]
        elif op == "insert":
            out[i:i] = draw(st.binary(max_size=16))
        else:
            del out[i:i + draw(st.integers(1, 16))]
    return bytes(out)


def bytes_like(*names: str):
    """Random bytes, or a mutation of one of the captures."""
    return st.one_of(st.binary(max_size=2048), *(mutated(captured(n)) for n in names))


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in strings_in(v)]
    return []


def assert_utf8(value) -> None:
    for s in strings_in(value):
        s.encode("utf-8")  # raises on a lone surrogate


def datagram(data: bytes, parse) -> list:
    try:
        items, _done, _interrupted = parse_datagram(data, len(data), 1, parse)
    except NETLINK_ERRORS:
        return []
    assert_utf8(items)
    return items


# --- netlink -------------------------------------------------------------------------------

@given(bytes_like("tcp4.bin", "udp4.bin"))
def test_inet_diag_ipv4(data):
    datagram(data, inet_parser(socket.AF_INET, 6, timers=True, extended=True, memory=True, info=True,
                               ifname=lambda i: text(os.fsdecode(b"\xffeth%d" % i)), owners={}))


@given(bytes_like("tcp6.bin"))
def test_inet_diag_ipv6(data):
    datagram(data, inet_parser(socket.AF_INET6, 6, timers=True, extended=True, memory=True, info=True))


@given(bytes_like("unix.bin"))
def test_unix_diag(data):
    datagram(data, lambda b, s, e: parse_unix(b, s, e, extended=True, memory=True, owners={}))


@given(bytes_like("rt_link.bin"))
def test_rtnetlink_links(data):
    datagram(data, interfaces.parse_link)


@given(bytes_like("rt_addr.bin"), bytes_like("rt_link.bin"))
def test_rtnetlink_addresses_and_the_interfaces_built_from_them(addr_data, link_data):
    links = datagram(link_data, interfaces.parse_link)
    addrs = datagram(addr_data, interfaces.parse_addr)
    assert_utf8(interfaces.build_interfaces(links, addrs))


@given(bytes_like("rt_route4.bin", "rt_route6.bin"))
def test_rtnetlink_routes(data):
    datagram(data, lambda b, s, e: routes.parse_route(b, s, e, {1: "lo", 2: text(b"\xffsd0")}))


@given(st.binary(max_size=512))
def test_attributes(data):
    try:
        parse_attrs(data, 0, len(data))
    except ProtocolError:
        pass


# --- /proc text ----------------------------------------------------------------------------

@given(bytes_like("proc_tcp.txt", "proc_udp.txt"))
def test_proc_net_inet4(data):
    try:
        assert_utf8(procnet.parse_proc_inet(data, socket.AF_INET, "tcp", timers=True))
    except ProtocolError:
        pass


@given(bytes_like("proc_tcp6.txt"))
def test_proc_net_inet6(data):
    try:
        assert_utf8(procnet.parse_proc_inet(data, socket.AF_INET6, "tcp", timers=True))
    except ProtocolError:
        pass


@given(bytes_like("proc_unix.txt"), st.one_of(st.none(), st.integers(0, 20)),
       st.one_of(st.none(), st.sets(st.integers(0, 1 << 20))))
def test_proc_net_unix(data, expected, held):
    try:
        table = procnet.parse_proc_unix(data, expected, held)
    except ProtocolError:
        return
    assert_utf8(table.sockets)
    assert table.ambiguous >= 0


@given(st.binary(max_size=1024))
def test_proc_net_protocols(data):
    count = procnet.parse_unix_count(data)
    assert count is None or count >= 0


SNMP = (b"Tcp: RtoAlgorithm RtoMin CurrEstab\nTcp: 1 200 3\nUdp: InDatagrams NoPorts\nUdp: 5 0\n")
LIMITS = (b"Limit                     Soft Limit           Hard Limit           Units     \n"
          b"Max open files            1024                 524288               files     \n")


@given(st.binary(max_size=2048) | mutated(SNMP))
def test_proc_net_snmp_and_netstat(data):
    textual = data.decode("utf-8", "surrogateescape")
    try:
        counters.parse_counter_pairs(textual)
    except ValueError:
        pass
    counters.parse_sockstat(textual)
    assert_utf8(limits.build_limits(textual, textual, textual, {"somaxconn": textual}, textual, textual, textual,
                                    None))


@given(st.one_of(st.binary(max_size=512), mutated(LIMITS)))
def test_proc_pid_limits(data):
    try:
        soft, _hard = limits.parse_nofile(data.decode("utf-8", "surrogateescape"))
    except ValueError:
        return
    assert soft is None or soft >= 0


@given(st.binary(max_size=512))
def test_proc_pid_stat_cgroup_and_mountinfo(data):
    textual = text(data)
    assert_utf8([processes.parse_comm(data), processes.parse_container_id(textual), podns.parse_pod_uid(textual)])
    limits.is_kernel_thread(data)
    options = procfs.proc_mount_options(textual)
    if options is not None:
        procfs.hidden_reason(options, 65534, [65534], False)


@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_one_escaping_rule(raw):
    out = text(raw)
    out.encode("utf-8")
    if isinstance(raw, bytes):
        assert out == raw.decode("utf-8", "backslashreplace")
    assert_utf8(namespaces.shown(out * 50))


# --- the agent's output stays framed -------------------------------------------------------

WORDS = st.sampled_from(["sockets", "summary", "routes", "limits", "serve", "-t", "-x", "-l", "-a", "-p", "state",
                         "listening", "sport", "=", ":80", "(", ")", "and", "or", "not", "--netns", "/dev/null",
                         "--target-pid", "1", "\u0663", "--idle-timeout", "nan", "--psutil", "\udcff", "-q"])


@pytest.mark.skipif(os.geteuid() != 0, reason="reads sock_diag of the host namespace as root")
@settings(max_examples=max(10, int(os.environ.get("SOCKDEBUG_FUZZ_EXAMPLES", "150")) // 6))
@given(st.lists(st.one_of(WORDS, st.text(max_size=12)), max_size=8))
def test_any_command_line_gives_a_framed_stream(argv):
    if "serve" in argv:
        argv = [*argv, "--idle-timeout", "0.01"]
    argv = [a.replace("\0", "") for a in argv]
    proc = subprocess.run([sys.executable, "-m", "sockdebug_agent", *argv], capture_output=True, timeout=60)
    assert b"Traceback" not in proc.stderr, proc.stderr[-2000:]
    if not proc.stdout:  # --help / --version-like: plain text, no stream
        return
    lines = proc.stdout.split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert_utf8(records)
    assert records[0]["type"] == "hello" and records[-1]["type"] == "end"
    assert records[-1]["exit_code"] == proc.returncode
    assert records[-1]["records"] == dict(Counter(r["type"] for r in records[:-1]))
