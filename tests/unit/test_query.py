"""The query contract: a Query and the agent's command line are one and the same
(round trips through the agent's own argparse parser), and ``check()`` is syntax only:
the plugin validates filters without resolving a single name on the laptop."""

from __future__ import annotations

import itertools
import socket

import pytest
from sockdebug_agent import cli
from sockdebug_agent.errors import UsageError
from sockdebug_agent.query import COMMANDS, FAIL_ON, SOCKET_COMMANDS, SOCKET_FLAGS, Query, SocketFlags
from sockdebug_agent.ssfilter import Dev, HostCond, Not
from sockdebug_plugin import flags, options

FLAG_FIELDS = [field for field, *_ in SOCKET_FLAGS]
WORDS = [(), ("state", "established"), ("sport", "=", ":22", "or", "dport", "=", ":22"),
         ("(", "dport", "=", ":-1", ")"), ("sport", "=", "-1"), ("dport", "=", "--"), ("dev", "=", "eth1"),
         ("fwmark", "0x2a/0xff")]


def _queries():
    yield from (Query(c) for c in COMMANDS)
    for command in SOCKET_COMMANDS:
        for field in FLAG_FIELDS:  # every flag alone
            yield Query(command, SocketFlags(**{field: True}))
        for words in WORDS:
            yield Query(command, SocketFlags(tcp=True, all=True), words)
    yield Query("sockets", SocketFlags(**dict.fromkeys(FLAG_FIELDS, True)), ("src", "default"))
    # -x/-4/-6 given in another order than ss's: the last one decides how the filter reads
    for fams in itertools.permutations(("unix", "ipv4", "ipv6"), 2):
        for preferred in (None, "unix" if "unix" in fams else "inet"):
            flags = SocketFlags(**dict.fromkeys(fams, True))
            if preferred is None or (preferred in flags.families() and preferred != flags.families()[-1]):
                yield Query("sockets", flags.replace(preferred_family=preferred), ("sport", "=", ":22"))
    for fail_on in FAIL_ON:
        yield Query("triage", fail_on=fail_on)
    yield Query("triage", fail_on="warning", sockets=True, host=True)
    yield Query("triage", sockets=True)
    yield Query("triage", host=True)
    yield Query("limits", all_processes=True)


QUERIES = list(dict.fromkeys(_queries()))


@pytest.mark.parametrize("query", QUERIES, ids=[" ".join(q.to_argv()) for q in QUERIES])
def test_round_trip_through_the_agents_own_parser(query):
    query.check()
    argv = query.to_argv()
    assert Query.from_argv(argv) == query
    args = cli.build_parser().parse_args(["--netns", "x", *argv])  # what the agent really reads
    assert Query.from_args(args) == query


def test_every_command_and_flag_is_covered():
    assert {q.command for q in QUERIES} == set(COMMANDS)
    for field in FLAG_FIELDS:
        assert any(getattr(q.flags, field) for q in QUERIES), field


@pytest.mark.parametrize("argv, want", [
    (["sockets", "-tuaxp"], Query("sockets", SocketFlags(tcp=True, udp=True, all=True, unix=True, processes=True))),
    (["sockets", "-tln", "-H"], Query("sockets", SocketFlags(tcp=True, listening=True))),  # -n, -H: ss habits
    (["sockets", "-x4"], Query("sockets", SocketFlags(unix=True, ipv4=True))),  # ss's order: no preference
    (["sockets", "-tal"], Query("sockets", SocketFlags(tcp=True, listening=True))),  # ss: the last of -a/-l
    (["sockets", "-tla"], Query("sockets", SocketFlags(tcp=True, all=True))),
    (["sockets", "-4x"], Query("sockets", SocketFlags(unix=True, ipv4=True, preferred_family="unix"))),
    (["sockets", "--tcp", "--options", "state", "listening"],
     Query("sockets", SocketFlags(tcp=True, timers=True), ("state", "listening"))),
    (["triage", "--fail-on", "critical", "--host"], Query("triage", fail_on="critical", host=True)),
])
def test_from_argv_reads_ss_habits(argv, want):
    assert Query.from_argv(argv) == want


def test_preferred_family_changes_the_argv_order():
    q = Query("sockets", SocketFlags(unix=True, ipv4=True, preferred_family="unix"), ("sport", "=", ":22"))
    assert q.to_argv() == ["sockets", "-4", "-x", "sport", "=", ":22"]
    assert Query("sockets", SocketFlags(unix=True, ipv4=True)).to_argv() == ["sockets", "-x", "-4"]
    # ... and how the filter reads: with -x last, :22 is a unix name pattern
    assert type(q.expression().tree.host).__name__ == "Host" and q.expression().tree.host.kind == "unix"


@pytest.mark.parametrize("argv, says", [
    (["sockets", "-q"], "-q"), (["nosuch"], "nosuch"), ([], "COMMAND"), (["triage", "--fail-on", "bad"], "bad"),
    (["summary", "-t"], "-t"), (["sockets", "--help"], "--help"),
])
def test_from_argv_rejects_with_usage_errors(argv, says):
    with pytest.raises(UsageError) as err:
        Query.from_argv(argv)
    assert says in err.value.cause


@pytest.mark.parametrize("query, says", [
    (Query("nosuch"), "unknown agent command"),
    (Query("summary", SocketFlags(tcp=True)), "takes no socket flags"),
    (Query("routes", words=("state", "listening")), "takes no socket flags"),
    (Query("sockets", host=True), "takes no --host"),
    (Query("triage", all_processes=True), "takes no --all-processes"),
    (Query("triage", fail_on="sometimes"), "unknown --fail-on"),
    (Query("sockets", SocketFlags(ipv4=True, preferred_family="inet6")), "preferred family"),
    (Query("sockets", words=("sport", "=")), "invalid filter: unexpected end of expression"),
    (Query("sockets", words=("dev", "a/b")), "cannot parse device"),
    (Query("sockets", words=("src", "bad!host")), "an inet prefix is expected rather than 'bad!host'"),
])
def test_check_rejects(query, says):
    with pytest.raises(UsageError) as err:
        query.check()
    assert says in err.value.cause


# --- syntax only: nothing is looked up on the laptop -------------------------------------

@pytest.fixture
def no_lookups(monkeypatch):
    """Fail the test on any name, service, device or file look-up."""
    def forbidden(*args, **kwargs):
        raise AssertionError(f"looked up {args!r}")

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "getservbyname", "if_nametoindex",
                 "if_indextoname", "if_nameindex"):
        monkeypatch.setattr(socket, name, forbidden)
    monkeypatch.setattr("os.stat", forbidden)
    monkeypatch.setattr("builtins.open", forbidden)


LAPTOP_FILTERS = [
    ["dev", "=", "eth1"], ["dev", "!=", "cni0"], ["dst", "some-name.cluster.local"], ["src", "default"],
    ["dst", "default"], ["dport", "=", ":ssh"], ["sport", "=", ":http", "or", "dst", "db.prod.svc:postgresql"],
    ["cgroup", "/kubepods/burstable"], ["fwmark", "0x2a/0xff"], ["src", "inet6:api-v6.local"],
    ["state", "established", "(", "dst", "redis", "or", "dev", "eth0", ")"],
]


@pytest.mark.parametrize("words", LAPTOP_FILTERS, ids=[" ".join(w) for w in LAPTOP_FILTERS])
def test_check_resolves_nothing(no_lookups, words):
    Query("sockets", SocketFlags(tcp=True), tuple(words)).check()


@pytest.mark.parametrize("words", LAPTOP_FILTERS, ids=[" ".join(w) for w in LAPTOP_FILTERS])
def test_the_plugin_validates_without_lookups(no_lookups, words):
    """The bug of issue 12: `dev = eth1` failed on a laptop without eth1, and cluster DNS
    names were looked up on the laptop."""
    request = options.build(flags.parse(["pod/x", *words]))
    request.validate()
    assert [q.to_argv() for q in request.queries()] == [["sockets", "-p", *words]]


def test_the_tree_keeps_names_as_text():
    tree = Query("sockets", words=("not", "dev", "eth1", "or", "dst", "db.svc:postgresql")).expression().tree
    (negated, dst) = tree.items
    assert type(negated) is Not and negated.item == Dev("eth1", 2)
    assert type(dst) is HostCond and dst.host.hostname == "db.svc" and dst.host.service == "postgresql"
    assert dst.host.prefix is None and dst.host.port == -1


def test_names_are_resolved_by_the_agent():
    """selection() (the agent's side) is where names fail."""
    q = Query("sockets", SocketFlags(tcp=True), ("dev", "sdq-no-such-dev"))
    q.check()
    with pytest.raises(UsageError, match=r"cannot parse device 'sdq-no-such-dev' .* >>sdq-no-such-dev<<"):
        q.selection()
    with pytest.raises(UsageError, match=r"'sdq-nosuch' does not look like a port"):
        Query("sockets", SocketFlags(tcp=True), ("sport", "=", ":sdq-nosuch")).selection()
    assert Query("sockets", SocketFlags(tcp=True), ("sport", "=", ":ssh")).selection().expr is not None
