"""Command line to agent queries, and the CLI edge: kubectl conventions vs ss letters,
usage errors as one ``error:`` line and one ``hint:`` line, never a traceback.

No cluster: KUBECONFIG points at a file that does not exist, so anything that tried to
reach one would fail with an access error (exit 3) instead of the usage error expected.
"""

from __future__ import annotations

import pytest
import typer
from sockdebug_agent import __version__
from sockdebug_plugin import cli, commands
from sockdebug_plugin.errors import EXIT_USAGE, UsageError

NO_FLAGS = {"processes": True}  # what the CLI passes when no socket flag is given (-p is on by default)
NO_VIEWS = {"summary": False, "routes": False, "interfaces": False, "limits": False}


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def forbid_cluster(monkeypatch):
    """Fail the test if a command gets as far as connecting to a cluster."""
    def connect(conn):
        raise AssertionError(f"connected to a cluster with {conn}")

    monkeypatch.setattr(commands, "connect", connect)


def flags(**on):
    return {**NO_FLAGS, **on}


# --- agent_queries: flag mapping -----------------------------------------------------------

def test_default_query_is_sockets_with_processes():
    assert commands.agent_queries([], NO_FLAGS, NO_VIEWS) == [["sockets", "-p"]]


def test_no_processes():
    assert commands.agent_queries([], {"processes": False}, NO_VIEWS) == [["sockets"]]


@pytest.mark.parametrize(("name", "letter"), [
    ("listening", "-l"), ("all_states", "-a"), ("tcp", "-t"), ("udp", "-u"), ("unix", "-x"), ("raw", "-w"),
    ("ipv4", "-4"), ("ipv6", "-6"), ("timers", "-o"), ("extended", "-e"), ("memory", "-m"), ("info", "-i"),
])
def test_each_socket_flag_maps_to_its_ss_letter(name, letter):
    assert commands.agent_queries([], {name: True, "processes": False}, NO_VIEWS) == [["sockets", letter]]


def test_letters_come_in_a_stable_order_before_the_words():
    q = commands.agent_queries(["state", "established", "dport", "=", ":443"],
                               flags(info=True, tcp=True, listening=True, ipv4=True), NO_VIEWS)
    assert q == [["sockets", "-l", "-t", "-4", "-p", "-i", "state", "established", "dport", "=", ":443"]]


def test_kubectl_letters_never_reach_the_agent_as_ss_options():
    # -o is --output here and -n/-c/-l are kubectl's: only --timers means ss -o
    q = commands.agent_queries([], NO_FLAGS, NO_VIEWS, output="json")
    assert q == [["sockets", "-p"]]


def test_wide_adds_timers_and_info_once():
    assert commands.agent_queries([], NO_FLAGS, NO_VIEWS, output="wide") == [["sockets", "-p", "-o", "-i"]]
    q = commands.agent_queries([], flags(timers=True, info=True), NO_VIEWS, output="wide")
    assert q == [["sockets", "-p", "-o", "-i"]]
    q = commands.agent_queries([], flags(info=True), NO_VIEWS, output="wide")
    assert q == [["sockets", "-p", "-i", "-o"]]


@pytest.mark.parametrize("view", ["summary", "routes", "interfaces", "limits"])
def test_a_view_flag_alone_shows_just_that_view(view):
    assert commands.agent_queries([], NO_FLAGS, {**NO_VIEWS, view: True}) == [[view]]
    # -p is on by default, so it does not count as asking for sockets; wide neither
    assert commands.agent_queries([], NO_FLAGS, {**NO_VIEWS, view: True}, output="wide") == [[view]]


def test_several_views_in_a_fixed_order():
    views = {"summary": True, "routes": True, "interfaces": True, "limits": True}
    assert commands.agent_queries([], NO_FLAGS, views) == [["summary"], ["routes"], ["interfaces"], ["limits"]]


def test_views_with_socket_flags_add_the_socket_list_first():
    q = commands.agent_queries([], flags(listening=True), {**NO_VIEWS, "summary": True, "limits": True})
    assert q == [["sockets", "-l", "-p"], ["summary"], ["limits"]]


def test_views_with_filter_words_add_the_socket_list():
    q = commands.agent_queries(["state", "listening"], NO_FLAGS, {**NO_VIEWS, "routes": True})
    assert q == [["sockets", "-p", "state", "listening"], ["routes"]]


def test_views_with_no_processes_only():
    assert commands.agent_queries([], {"processes": False}, {**NO_VIEWS, "summary": True}) == [["summary"]]


@pytest.mark.parametrize(("words", "where"), [
    (["bogus"], "(word 1: >>bogus<<)"),
    (["state", "nosuch"], "(word 2: state >>nosuch<<)"),
    (["dport", "=", ":\u0661\u0662\u0663"], "(word 3: dport = >>:\u0661\u0662\u0663<<)"),  # Arabic-Indic digits
    (["sport", "=", ":80", "and"], "(after the last word: sport = :80 and >><<)"),
    (["(", "dport", "=", ":443"], "(after the last word: ( dport = :443 >><<)"),
])
def test_invalid_filter_is_a_usage_error_naming_the_word(words, where):
    with pytest.raises(UsageError) as err:
        commands.agent_queries(words, NO_FLAGS, NO_VIEWS)
    assert err.value.cause.startswith("invalid filter: ") and err.value.cause.endswith(f" {where}")
    assert "ss(8) syntax" in err.value.hint
    assert err.value.exit_code == EXIT_USAGE
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback material


def test_invalid_filter_fails_before_any_cluster_call(forbid_cluster, capsys):
    assert cli.main(["pod/api", "-n", "prod", "--listening", "state", "nosuch"]) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("error: invalid filter: wrong state name 'nosuch' (see `ss --help`: "
                      "established, listening, time-wait, connected, bucket, big, ...) (word 2: state >>nosuch<<)")
    assert err[1].startswith("hint: ss(8) syntax")
    assert len(err) == 2


def test_invalid_filter_without_the_guard_still_wins_over_missing_kubeconfig(capsys):
    # the real connect() would fail with exit 3 (no kubeconfig): the filter is checked first
    assert cli.main(["pod/api", "dport", "=", "src"]) == EXIT_USAGE
    assert "invalid filter: expected a port, not 'src'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["pod/api", "-o", "xml"], "unknown output format 'xml'"),
    (["pod/api", "--watch=0"], "--watch needs a positive interval"),
    (["pod/api", "--watch", "-1"], "--watch needs a positive interval"),
])
def test_other_usage_errors_before_any_cluster_call(forbid_cluster, capsys, argv, message):
    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: ") and message in err[0]
    assert err[1].startswith("hint: ")


def test_missing_kubeconfig_is_an_access_error(capsys):
    assert cli.main(["pod/api"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: no kubeconfig found")
    assert err[1].startswith("hint: ") and "--kubeconfig" in err[1]
    assert len(err) == 2


# --- cli._normalise ---------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "expected"), [
    ([], ["inspect"]),
    (["pod/x"], ["inspect", "pod/x"]),
    (["x", "-n", "prod", "--listening"], ["inspect", "x", "-n", "prod", "--listening"]),
    (["pod/x", "--watch"], ["inspect", "pod/x", "--watch=2"]),
    (["--watch", "pod/x"], ["inspect", "--watch=2", "pod/x"]),
    (["pod/x", "--watch", "state", "established"], ["inspect", "pod/x", "--watch=2", "state", "established"]),
    (["pod/x", "--watch", "5"], ["inspect", "pod/x", "--watch", "5"]),
    (["pod/x", "--watch", "0.5"], ["inspect", "pod/x", "--watch", "0.5"]),
    (["pod/x", "--watch=7"], ["inspect", "pod/x", "--watch=7"]),
    (["inspect", "pod/x"], ["inspect", "pod/x"]),
    (["triage", "pod/x"], ["triage", "pod/x"]),
    (["sweep", "-A"], ["sweep", "-A"]),
    (["version"], ["version"]),
    (["--help"], ["inspect", "--help"]),
    (["-n", "prod", "pod/x"], ["inspect", "-n", "prod", "pod/x"]),
])
def test_normalise(argv, expected):
    assert cli._normalise(argv) == expected


def test_bare_watch_becomes_two_seconds_when_parsed(monkeypatch):
    seen = {}

    def inspect(target, words, **kw):
        seen.update(target=target, words=words, **kw)
        return 0

    monkeypatch.setattr(commands, "inspect", inspect)
    assert cli.main(["pod/x", "--watch", "state", "established"]) == 0
    assert seen["watch"] == 2.0 and seen["target"] == "pod/x" and seen["words"] == ["state", "established"]
    assert cli.main(["pod/x", "--watch", "5"]) == 0
    assert seen["watch"] == 5.0 and seen["words"] == []


def test_flags_reach_the_command(monkeypatch):
    seen = {}

    def inspect(target, words, **kw):
        seen.update(target=target, words=words, **kw)
        return 0

    monkeypatch.setattr(commands, "inspect", inspect)
    argv = ["deploy/api", "-n", "prod", "-c", "app", "-o", "wide", "--listening", "-t", "--summary", "-P",
            "--profile", "restricted", "--image", "reg/agent:1", "--image-pull-policy", "Never", "--timeout", "9",
            "state", "established"]
    assert cli.main(argv) == 0
    assert seen["target"] == "deploy/api" and seen["words"] == ["state", "established"]
    assert seen["conn"] == {"namespace": "prod", "context": None, "kubeconfig": None}
    assert seen["agent"] == {"image": "reg/agent:1", "pull_policy": "Never", "profile": "restricted", "timeout": 9.0}
    assert seen["container"] == "app" and seen["output"] == "wide"
    assert seen["socket_flags"]["listening"] and seen["socket_flags"]["tcp"]
    assert not seen["socket_flags"]["processes"] and not seen["socket_flags"]["udp"]
    assert seen["views"] == {"summary": True, "routes": False, "interfaces": False, "limits": False}
    assert cli.main(["pod/x"]) == 0
    assert seen["agent"]["image"] == f"sockdebug-agent:{__version__}" and seen["agent"]["profile"] == "auto"
    assert seen["socket_flags"]["processes"] and seen["watch"] is None


def test_a_commands_exit_code_is_passed_through(monkeypatch):
    monkeypatch.setattr(commands, "inspect", lambda *a, **kw: 3)
    assert cli.main(["pod/x"]) == 3


# --- cli.main: usage errors, help, version ------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["pod/api", "--bogus"],
    ["pod/api", "--listen"],  # not a prefix match: click requires the whole name
    ["pod/api", "-o"],
    ["pod/api", "--timeout", "soon"],
    ["triage"],
    ["version", "extra"],
])
def test_usage_errors_are_two_lines_and_exit_2(forbid_cluster, capsys, argv):
    assert cli.main(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 2, captured.err
    assert err[0].startswith("error: ") and len(err[0]) > len("error: ")
    assert err[1] == "hint: see `kubectl sockdebug --help`"
    assert "Traceback" not in captured.err + captured.out
    assert not err[0].startswith("error: unexpected ") and "report" not in err[1]


def test_unknown_option_names_it(capsys):
    assert cli.main(["pod/api", "--bogus"]) == EXIT_USAGE
    assert "--bogus" in capsys.readouterr().err.splitlines()[0]


@pytest.mark.parametrize("argv", [["--help"], ["-h"], [], ["pod/api", "--help"]])
def test_help(forbid_cluster, capsys, argv):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for flag in ("--listening", "--profile", "--namespace", "--output", "--watch", "--routes", "--limits"):
        assert flag in out, flag
    assert "kubectl sockdebug" in out


def test_triage_help(capsys):
    assert cli.main(["triage", "--help"]) == 0
    assert "--fail-on" in capsys.readouterr().out


def test_version(capsys):
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out == f"kubectl-sockdebug {__version__}\n"


def test_typer_exit_from_a_command_is_not_an_error(monkeypatch, capsys):
    def inspect(*a, **kw):
        raise typer.Exit(0)

    monkeypatch.setattr(commands, "inspect", inspect)
    assert cli.main(["pod/x"]) == 0
    assert capsys.readouterr().err == ""


def test_an_unforeseen_exception_is_one_line_not_a_traceback(monkeypatch, capsys):
    def inspect(*a, **kw):
        raise KeyError("boom")

    monkeypatch.setattr(commands, "inspect", inspect)
    assert cli.main(["pod/x"]) == 6
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: unexpected KeyError: 'boom'"
    assert err[1].startswith("hint: please report this")


def test_error_text_is_escaped(monkeypatch, capsys):
    def inspect(*a, **kw):
        raise UsageError("bad \x1b[31mred\x1b[0m\nsecond line", "fix \x07 it")

    monkeypatch.setattr(commands, "inspect", inspect)
    assert cli.main(["pod/x"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert err.splitlines() == ["error: bad \\x1b[31mred\\x1b[0m\\x0asecond line", "hint: fix \\x07 it"]
