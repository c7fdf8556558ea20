"""Property-based fuzzing of the filter language (Hypothesis): random token sequences,
random text (lone surrogates included, as Python sees undecodable argv bytes) and random
bytes never make the parser raise anything but FilterError, nor ``Query.check()``
anything but UsageError; whatever parses evaluates on sample sockets without an
exception, and the closure and jump-program evaluators agree.

Run time is bounded for CI by the ``ci`` profile (``SOCKDEBUG_HYPOTHESIS=dev`` runs
more examples).  Host names are resolved by a stub: a fuzzer must not send DNS queries.
"""

from __future__ import annotations

import os
import socket
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sockdebug_agent import filter as flt
from sockdebug_agent.errors import UsageError
from sockdebug_agent.filter import FilterError, parse, select
from sockdebug_agent.query import Query, SocketFlags
from sockdebug_agent.schema import Socket

# The resolver stub is a function-scoped fixture, the same for every example.
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=250, deadline=None, suppress_health_check=_SUPPRESS)
settings.register_profile("dev", max_examples=5000, deadline=None, suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("SOCKDEBUG_HYPOTHESIS", "ci"))

TOKENS = [
    "(", ")", "and", "&", "&&", "or", "|", "||", "not", "!", "src", "dst", "sport", "dport", "dev", "fwmark",
    "cgroup", "autobound", "state", "exclude", "excl", "=", "==", "eq", "!=", "ne", "neq", ">", "gt", "<", "lt",
    ">=", "ge", "geq", "<=", "le", "leq", ":22", ":*", "*", ":0x16", ":026", ":-1", ":65536", ":ssh", ":http",
    "127.0.0.1", "127.1", "10.0.0.0/8", "0.0.0.0/255.0.0.0", "[::1]", "[::1]:22", "[::ffff:127.0.0.1]", "::1",
    "default", "any", "all", "inet:default", "inet6:[::1]/64", "unix:/run/*", "@abs*", "/tmp/x", "link:x",
    "localhost", "lo", "0", "1", "0x2a", "0x2a/0xff", "-1", "/", "/nosuch", "established", "listening", "bucket",
    "\u0661\u0662", ":\uff11", ":\udcff", "\udcff", "a\\ b", "( sport = :22 )", "",
]
text_word = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates too
byte_word = st.binary(max_size=12).map(lambda b: os.fsdecode(b.replace(b"\0", b"")))  # as argv arrives
words = st.lists(st.one_of(st.sampled_from(TOKENS), text_word, byte_word), max_size=25)
families = st.sampled_from([None, "unix", "inet", "inet6"])


def _sockets() -> list[Socket]:
    def sock(fam, netid, state, local, lport, peer, pport, cookie=1, ext=None, iface=None):
        return Socket(fam, netid, state, 0, 0, local, lport, peer, pport, iface, 7, 0, cookie, None, None, None, ext)

    return [
        sock("inet", "tcp", "ESTAB", "127.0.0.1", 22, "127.0.0.1", 40000, ext={"fwmark": 42, "cgroup_id": 1}),
        sock("inet6", "tcp", "LISTEN", "::", 8080, "::", 0, iface="lo"),
        sock("inet6", "udp", "UNCONN", "::ffff:127.0.0.1", 53, "::", 0, cookie=None),
        sock("inet", "raw", "UNCONN", "0.0.0.0", 1, "0.0.0.0", 0, cookie=None),
        sock("unix", "u_str", "ESTAB", "/run/app.sock", 5000, None, 5001),
        sock("unix", "u_dgr", "UNCONN", None, 5002, None, 0),
        sock("unix", "u_seq", "LISTEN", "@0a1b2", 5003, None, 0, ext={"shutdown": "<->"}),
    ]


SOCKETS = _sockets()


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    """A resolver stub: `localhost` is loopback, any other name does not exist."""
    def getaddrinfo(host, port, family=0, *args, **kwargs):
        if host == "localhost":
            addr = "127.0.0.1" if family == socket.AF_INET else "::1"
            return [(family, socket.SOCK_STREAM, 6, "", (addr, 0))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@given(words, families)
def test_parse_raises_only_filter_errors(ws, family):
    try:
        parse(ws, family)
    except FilterError as exc:
        assert exc.position is None or 0 <= exc.position <= len(ws)


@given(words, st.booleans(), st.booleans(), families)
def test_select_raises_only_filter_errors_and_evaluates(ws, tcp, unix, family):
    try:
        sel = select(tcp=tcp, udp=not tcp, unix=unix, all_states=True, words=ws, preferred_family=family)
    except FilterError:
        return
    answers = [sel.matches(s) for s in SOCKETS]
    assert all(type(a) is bool for a in answers)


@given(words, families)
def test_closures_and_jump_program_agree(ws, family):
    try:
        tree = parse(ws, family).tree
        if tree is None:
            return
        closures = flt.compile_tree(tree, frozenset(("tcp", "udp")), (32768, 60999), flt.Unlocked())
        with mock.patch.object(flt, "CLOSURE_NODES", 0):  # every tree as a jump program
            programs = flt.compile_tree(tree, frozenset(("tcp", "udp")), (32768, 60999), flt.Unlocked())
    except FilterError:
        return
    for s in SOCKETS:
        assert [bool(closures[0](s)), bool(closures[1](s))] == [programs[0](s), programs[1](s)]


flag_values = st.builds(SocketFlags, **{f: st.booleans() for f in (
    "listening", "all", "tcp", "udp", "unix", "raw", "ipv4", "ipv6", "processes", "timers", "extended",
    "memory", "info")})


@given(flag_values, words)
def test_check_raises_only_usage_errors(flags, ws):
    try:
        Query("sockets", flags, ws).check()
    except UsageError as exc:
        assert exc.cause.startswith("invalid filter: ") and exc.hint


@given(flag_values, st.lists(st.one_of(st.sampled_from(TOKENS), text_word, byte_word), max_size=8),
       st.sampled_from(["sockets", "pods"]))
def test_argv_round_trip(flags, ws, command):
    """Any words (dashes, ``--``, empty, undecodable) survive the agent's command line."""
    query = Query(command, flags, ws)
    assert Query.from_argv(query.to_argv()) == query
