"""Command line to agent queries, and the CLI edge: kubectl conventions vs ss letters,
usage errors as one ``error:`` line and one ``hint:`` line, never a traceback.

No cluster: KUBECONFIG points at a file that does not exist, so anything that tried to
reach one would fail with an access error (exit 3) instead of the usage error expected.
"""

from __future__ import annotations

import sys

import pytest
from sockdebug_agent import __version__
from sockdebug_plugin import cli, commands, flags, kube, options
from sockdebug_plugin.errors import EXIT_USAGE, UsageError
from sockdebug_plugin.options import InspectOptions, SocketFlags, SweepOptions, TriageOptions, Views


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def forbid_cluster(monkeypatch):
    """Fail the test if a command gets as far as connecting to a cluster."""
    def connect(*a, **kw):
        raise AssertionError(f"connected to a cluster with {a} {kw}")

    monkeypatch.setattr(kube, "connect", connect)


def opts(*argv: str) -> options.Options:
    return options.build(flags.parse(list(argv)))


def queries(*argv: str) -> list[list[str]]:
    """The agent command lines ``kubectl sockdebug pod/x ARGV`` asks for."""
    o = opts("pod/x", *argv)
    o.validate()
    return [q.to_argv() for q in o.queries()]


# --- queries: flag mapping ----------------------------------------------------------------

def test_default_query_is_sockets_with_processes():
    assert queries() == [["sockets", "-p"]]


def test_no_processes():
    assert queries("-P") == [["sockets"]]
    assert queries("--no-processes") == [["sockets"]]


@pytest.mark.parametrize(("flag", "letter"), [
    ("--listening", "-l"), ("-a", "-a"), ("-t", "-t"), ("-u", "-u"), ("-x", "-x"), ("-w", "-w"),
    ("-4", "-4"), ("-6", "-6"), ("--timers", "-o"), ("-e", "-e"), ("-m", "-m"), ("-i", "-i"),
])
def test_each_socket_flag_maps_to_its_ss_letter(flag, letter):
    assert queries(flag, "-P") == [["sockets", letter]]


def test_letters_come_in_a_stable_order_before_the_words():
    q = queries("-i", "-t", "--listening", "-4", "state", "established", "dport", "=", ":443")
    assert q == [["sockets", "-l", "-t", "-4", "-p", "-i", "state", "established", "dport", "=", ":443"]]


def test_short_options_bundle_and_take_attached_values_as_click_does():
    assert opts("pod/x", "-tu4").sockets == SocketFlags(tcp=True, udp=True, ipv4=True, last_family="ipv4")
    assert opts("pod/x", "-tP").sockets == SocketFlags(tcp=True, processes=False)
    assert opts("pod/x", "-nprod").conn.namespace == "prod"
    assert opts("pod/x", "-tn", "prod").conn.namespace == "prod"
    assert opts("pod/x", "--namespace=prod").conn.namespace == "prod"
    # -l is kubectl's --selector, so in a bundle the rest is its value (click's rule too)
    got = opts("-tlapp=web")
    assert got.sockets.tcp and got.selector == "app=web"


def test_the_family_switch_given_last_decides_how_the_filter_reads_as_in_ss():
    assert opts("pod/x", "-4", "-x").sockets.last_family == "unix"
    assert queries("-4", "-x") == [["sockets", "-4", "-p", "-x"]]  # -x given last: the agent hears it last
    assert queries("-x", "-4") == [["sockets", "-x", "-4", "-p"]]
    assert opts("pod/x", "-x", "-4").sockets.last_family == "ipv4"
    assert opts("pod/x", "-4x").sockets.last_family == "unix"
    assert opts("pod/x", "-4", "-x").sockets.query_flags().preferred_family == "unix"
    assert opts("pod/x", "-x", "-4").sockets.query_flags().preferred_family is None  # -4 is last in ss's order too
    assert opts("pod/x", "-x", "-4", "-x").sockets.query_flags().preferred_family == "unix"
    assert opts("pod/x", "-6", "-4").sockets.query_flags().preferred_family == "inet"


def test_double_dash_ends_the_options():
    got = opts("pod/x", "--", "-t")
    assert got.words == ("-t",) and not got.sockets.tcp
    assert isinstance(flags.parse(["pod/x", "--", "--help"]), flags.Parsed)


def test_kubectl_letters_never_reach_the_agent_as_ss_options():
    # -o is --output here and -n/-c/-l are kubectl's: only --timers means ss -o
    assert queries("-o", "json") == [["sockets", "-p"]]


def test_wide_adds_timers_and_info_once():
    assert queries("-o", "wide") == [["sockets", "-p", "-o", "-i"]]
    assert queries("-o", "wide", "--timers", "-i") == [["sockets", "-p", "-o", "-i"]]
    assert queries("-o", "wide", "-i") == [["sockets", "-p", "-o", "-i"]]


@pytest.mark.parametrize("view", ["summary", "routes", "interfaces", "limits"])
def test_a_view_flag_alone_shows_just_that_view(view):
    assert queries(f"--{view}") == [[view]]
    # -p is on by default, so it does not count as asking for sockets; wide neither
    assert queries(f"--{view}", "-o", "wide") == [[view]]


def test_several_views_in_a_fixed_order():
    assert queries("--limits", "--interfaces", "-s", "--routes") == [["summary"], ["routes"], ["interfaces"],
                                                                       ["limits"]]


def test_views_with_socket_flags_add_the_socket_list_first():
    assert queries("--listening", "--summary", "--limits") == [["sockets", "-l", "-p"], ["summary"], ["limits"]]


def test_views_with_filter_words_add_the_socket_list():
    assert queries("--routes", "state", "listening") == [["sockets", "-p", "state", "listening"], ["routes"]]


def test_views_with_no_processes_only():
    assert queries("--summary", "-P") == [["summary"]]


@pytest.mark.parametrize(("words", "where"), [
    (["bogus"], "(word 1: >>bogus<<)"),
    (["state", "nosuch"], "(word 2: state >>nosuch<<)"),
    (["dport", "=", ":\u0661\u0662\u0663"], "(word 3: dport = >>:\u0661\u0662\u0663<<)"),  # Arabic-Indic digits
    (["sport", "=", ":80", "and"], "(after the last word: sport = :80 and >><<)"),
    (["(", "dport", "=", ":443"], "(after the last word: ( dport = :443 >><<)"),
])
def test_invalid_filter_is_a_usage_error_naming_the_word(words, where):
    with pytest.raises(UsageError) as err:
        queries(*words)
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


# --- flags.normalise ---------------------------------------------------------------------------

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
    assert flags.normalise(argv) == expected


def seen_options(monkeypatch, command: str = "inspect") -> dict:
    seen: dict = {}

    def run(o, early=None):
        seen["opts"] = o
        return 0

    if command == "triage":
        from sockdebug_plugin import triage

        monkeypatch.setattr(triage, "run", run)
    else:
        monkeypatch.setattr(commands, command, run)
    return seen


def test_bare_watch_becomes_two_seconds_when_parsed(monkeypatch):
    seen = seen_options(monkeypatch)
    assert cli.main(["pod/x", "--watch", "state", "established"]) == 0
    o = seen["opts"]
    assert o.watch == 2.0 and o.target == "pod/x" and o.words == ("state", "established")
    assert cli.main(["pod/x", "--watch", "5"]) == 0
    assert seen["opts"].watch == 5.0 and seen["opts"].words == ()


def test_flags_reach_the_command_as_one_options_object(monkeypatch):
    seen = seen_options(monkeypatch)
    argv = ["deploy/api", "-n", "prod", "-c", "app", "-o", "wide", "--listening", "-t", "--summary", "-P",
            "--profile", "restricted", "--image", "reg/agent:1", "--image-pull-policy", "Never", "--timeout", "9",
            "state", "established"]
    assert cli.main(argv) == 0
    o = seen["opts"]
    assert isinstance(o, InspectOptions)
    assert o.target == "deploy/api" and o.words == ("state", "established")
    assert o.conn == options.Conn(namespace="prod")
    assert o.agent == options.AgentOptions("reg/agent:1", "Never", "restricted", 9.0)
    assert o.container == "app" and o.output == "wide"
    assert o.sockets == SocketFlags(listening=True, tcp=True, processes=False)
    assert o.views == Views(summary=True)
    assert cli.main(["pod/x"]) == 0
    o = seen["opts"]
    assert o.agent.image == f"sockdebug-agent:{__version__}" and o.agent.profile == "auto"
    assert o.sockets.processes and o.watch is None


def test_sweep_and_triage_get_their_options(monkeypatch):
    from sockdebug_plugin import sweep_run

    seen = seen_options(monkeypatch, "triage")
    assert cli.main(["triage", "node/n1", "--fail-on", "warning", "-o", "yaml"]) == 0
    assert seen["opts"] == TriageOptions("node/n1", options.Conn(), seen["opts"].agent, None, "yaml", "warning",
                                         options.Printing("yaml"))
    monkeypatch.setattr(sweep_run, "run", lambda o: seen.update(opts=o) or 0)
    assert cli.main(["sweep", "-A", "--via", "node", "--parallel", "3"]) == 0
    got = seen["opts"]
    assert isinstance(got, SweepOptions) and got.all_namespaces and got.via == "node" and got.parallel == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["sweep", "--via", "boat"], "unknown --via 'boat'"),
    (["sweep", "-o", "wide"], "unknown output format 'wide'"),
    (["sweep", "--parallel", "0"], "--parallel must be at least 1"),
    (["sweep", "--via", "node", "--profile", "restricted"], "--via node cannot run with --profile restricted"),
    (["triage", "pod/x", "--fail-on", "fatal"], "unknown --fail-on 'fatal'"),
    (["triage", "pod/x", "-o", "wide"], "unknown output format 'wide'"),
    (["pod/x", "--profile", "sysadmin"], "unknown --profile 'sysadmin'"),
    (["pod/x", "--image-pull-policy", "Sometimes"], "unknown --image-pull-policy 'Sometimes'"),
    (["pod/x", "--timeout", "0"], "--timeout must be positive"),
    (["-n", "prod"], "no target given"),
])
def test_every_choice_and_combination_is_validated_before_any_cluster_call(forbid_cluster, capsys, argv, message):
    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {message}" or err[0].startswith(f"error: {message}")
    assert err[1].startswith("hint: ")


def test_validation_imports_no_client():
    """Parsing and validating every command never imports the Kubernetes client."""
    import subprocess

    code = ("import sys; from sockdebug_plugin import flags, options\n"
            "for argv in (['pod/x', '-tl', 'x', 'dport', '=', ':443'], ['sweep', '-A'], ['triage', 'node/n']):\n"
            "    options.build(flags.parse(argv)).validate()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'typer', 'urllib3', 'yaml')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_commands_exit_code_is_passed_through(monkeypatch):
    monkeypatch.setattr(commands, "inspect", lambda o, early=None: 3)
    assert cli.main(["pod/x"]) == 3


# --- cli.main: usage errors, help, version ------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["pod/api", "--bogus"],
    ["pod/api", "--listen"],  # not a prefix match: click requires the whole name
    ["pod/api", "-o"],
    ["pod/api", "--timeout", "soon"],
    ["pod/api", "--listening=yes"],
    ["pod/api", "-Z"],
    ["sweep", "--parallel", "many"],
    ["sweep", "pod/x"],
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
    assert cli.main(["pod/api", "--listen"]) == EXIT_USAGE
    assert capsys.readouterr().err.splitlines()[0] == "error: No such option: --listen Did you mean --listening?"


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


def test_help_after_double_dash_is_a_filter_word(forbid_cluster, capsys):
    # `--` ends the options: --help there is an (invalid) ss word, not a request for help
    assert cli.main(["pod/x", "--", "--help"]) == EXIT_USAGE


def test_version(capsys):
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out == f"kubectl-sockdebug {__version__}\n"


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
