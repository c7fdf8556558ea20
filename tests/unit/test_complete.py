"""``kubectl_complete-sockdebug``: candidates for flags and fixed values, and what is
offered without a cluster (KUBECONFIG points at a file that does not exist, so nothing
here can reach one)."""

from __future__ import annotations

import pytest
from sockdebug_plugin import choices, complete, flags, options
from sockdebug_plugin.choices import KIND_PREFIXES, SUBCOMMANDS
from sockdebug_plugin.complete import NO_FILE_COMP, candidates
from sockdebug_plugin.errors import UsageError

FLAGS = complete.long_flags(flags.INSPECT)

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: "not-a-real-token"}
contexts:
- name: prod
  context: {cluster: c, user: u, namespace: shop}
- name: staging
  context: {cluster: c, user: u}
- name: kind-local
  context: {cluster: c, user: u}
current-context: prod
"""


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no kubectl, unless a test puts one there


def fake_kubectl(tmp_path, answers: dict[str, str]) -> None:
    """A kubectl that logs its arguments and prints the answer for the first matching word."""
    import stat
    import sys

    path = tmp_path / "bin" / "kubectl"
    path.write_text(f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\n"
                    f"open({str(tmp_path / 'kubectl.log')!r}, 'a').write(' '.join(args) + '\\n')\n"
                    f"answers = {answers!r}\n"
                    "for word, out in answers.items():\n"
                    "    if word in args:\n"
                    "        print(out)\n"
                    "        sys.exit(0)\n"
                    "sys.exit(1)\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


# --- flags and fixed values --------------------------------------------------------------------

@pytest.mark.parametrize(("words", "expected"), [
    (["--li"], ["--listening", "--limits"]),
    (["pod/x", "--no"], ["--no-peers", "--no-processes", "--no-headers"]),
    (["agents", "--no"], ["--no-headers"]),
    (["stop", "--a"], ["--all-namespaces", "--all"]),
    (["pod/x", "--image"], ["--image", "--image-pull-policy"]),
    (["--all"], ["--all-namespaces", "--all-pods", "--all"]),
    (["--zzz"], []),
])
def test_flags(words, expected):
    assert sorted(candidates(words)) == sorted(expected)


def test_every_flag_on_a_dash():
    assert candidates(["-"]) == list(FLAGS)
    assert candidates(["pod/x", "--"]) == list(FLAGS)


@pytest.mark.parametrize("command", list(flags.COMMANDS))
def test_flags_match_the_parser(command):
    """Every long option completion offers is one the parser accepts, and every one it accepts is offered."""
    cmd = flags.COMMANDS[command]
    offered = set(complete.long_flags(cmd)) - {"--help"}
    accepted = {n for f in cmd.flags for n in (*f.names, *f.off) if n.startswith("--")}
    assert offered == accepted
    words = [] if command == "inspect" else [command]
    for name in offered:
        flag = next(f for f in cmd.flags if name in (*f.names, *f.off))
        value = [] if flag.type is bool else [flag.choices[0] if flag.choices else "1"]
        assert isinstance(flags.parse([*words, name, *value, *(["pod/x"] if command == "triage" else [])]),
                          flags.Parsed)


def test_subcommand_flags_are_completed_for_that_command():
    assert candidates(["sweep", "--vi"]) == ["--via"]
    assert candidates(["--vi"]) == []  # inspect has no --via
    assert candidates(["triage", "pod/x", "--fail"]) == ["--fail-on"]


@pytest.mark.parametrize(("command", "flag"), [(c.name, f) for c in flags.COMMANDS.values() for f in c.flags
                                               if f.choices])
def test_completion_and_validation_agree(command, flag, tmp_path):
    """Each choice set is declared once: completion offers exactly what validation accepts
    (-o: the plain formats, and kubectl's templates once given one)."""
    words = [] if command == "inspect" else [command]
    (tmp_path / "t").write_text("{.a}" if flag.dest == "output" else "")
    (tmp_path / "c").write_text("A B\n.a .b\n")
    examples = {"jsonpath=": "{.a}", "custom-columns=": "A:.a", "jsonpath-file=": str(tmp_path / "t"),
                "custom-columns-file=": str(tmp_path / "c")}
    for name in flag.names:
        offered = candidates([*words, name, ""])
        if flag.dest == "output":
            assert offered == choices.output_names(flag.choices)
            for value in offered:
                options.printing(flag, value + examples.get(value, ""))
            with pytest.raises(UsageError):
                options.printing(flag, "not-a-output")
            continue
        assert offered == list(flag.choices)
        for value in offered:
            flags.check_choice(flag, value)
        with pytest.raises(UsageError):
            flags.check_choice(flag, "not-a-" + flag.dest)


def test_validation_rejects_what_completion_never_offers():
    base = options.build(flags.parse(["pod/x"]))
    for value in choices.PROFILES:
        base._replace(agent=base.agent._replace(profile=value)).validate()
    with pytest.raises(UsageError, match="unknown --profile 'sysadmin'"):
        base._replace(agent=base.agent._replace(profile="sysadmin")).validate()


@pytest.mark.parametrize(("words", "expected"), [
    (["-o", ""], ["table", "wide", "json", "yaml", "jsonl", "jsonpath=", "jsonpath-file=", "custom-columns=",
                  "custom-columns-file="]),
    (["pod/x", "--output", "j"], ["json", "jsonl", "jsonpath=", "jsonpath-file="]),
    (["pod/x", "-o", "w"], ["wide"]),
    (["--profile", ""], ["auto", "general", "baseline", "restricted", "netadmin"]),
    (["pod/x", "--profile", "re"], ["restricted"]),
    (["--image-pull-policy", ""], ["Always", "IfNotPresent", "Never"]),
    (["pod/x", "--image-pull-policy", "If"], ["IfNotPresent"]),
    (["triage", "pod/x", "--fail-on", ""], ["info", "warning", "critical"]),
    (["sweep", "-o", "t"], ["table"]),
    (["agents", "-o", "w"], ["wide"]),
    (["sweep", "--via", "n"], ["node"]),
    (["-o", "xml"], []),
])
def test_fixed_values(words, expected):
    assert candidates(words) == expected


# --- targets without a cluster -----------------------------------------------------------------

def test_first_word_without_a_cluster_offers_subcommands_and_kinds():
    assert candidates([""]) == [*SUBCOMMANDS, *KIND_PREFIXES]
    assert candidates([]) == [*SUBCOMMANDS, *KIND_PREFIXES]


@pytest.mark.parametrize(("partial", "expected"), [
    ("d", ["deploy/", "ds/"]),
    ("s", ["sweep", "stop", "sts/", "svc/"]),
    ("t", ["triage"]),
    ("po", ["pod/"]),
    ("pod/", ["pod/"]),
    ("deploy/a", []),
    ("zzz", []),
])
def test_kind_prefixes_without_a_cluster(partial, expected):
    assert candidates([partial]) == expected


def test_kind_prefixes_after_options_without_a_cluster():
    assert candidates(["-n", "prod", ""]) == list(KIND_PREFIXES)
    assert candidates(["--listening", "sv"]) == ["svc/"]


@pytest.mark.parametrize("words", [
    ["-n", ""], ["--namespace", "pr"], ["pod/x", "-n", ""],
    ["--context", ""], ["pod/x", "-c", ""], ["x", "--container", "a"],
    ["--kubeconfig", ""], ["-l", ""], ["--image", ""], ["--timeout", ""], ["--selector", "app="],
])
def test_a_flag_value_is_never_offered_a_target_prefix(words):
    assert candidates(words) == []


def test_after_the_target_come_ss_words_not_names():
    assert candidates(["pod/x", ""]) == []
    assert candidates(["pod/x", "-n", "prod", "st"]) == []
    assert candidates(["x", "state", ""]) == []


def test_contexts_come_from_the_kubeconfig_file(tmp_path):
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    assert candidates(["--kubeconfig", str(path), "--context", ""]) == ["prod", "staging", "kind-local"]
    assert candidates(["pod/x", f"--kubeconfig={path}", "--context", "k"]) == ["kind-local"]


# --- main -------------------------------------------------------------------------------------

def test_main_prints_candidates_then_the_directive(capsys):
    assert complete.main(["--pro"]) == 0
    assert capsys.readouterr().out == "--processes\n--profile\n:4\n"


def test_main_without_candidates_still_prints_the_directive(capsys):
    assert complete.main(["-n", ""]) == 0
    out = capsys.readouterr().out
    assert out == f":{NO_FILE_COMP}\n"


def test_main_without_a_cluster(capsys):
    assert complete.main([""]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[-1] == ":4" and lines[:-1] == [*SUBCOMMANDS, *KIND_PREFIXES]
    assert captured.err == ""  # completion never fails loudly


# --- names, from kubectl (which runs completion) ------------------------------------------------

def test_pod_names_come_from_kubectl_with_the_connection_flags_typed(tmp_path):
    fake_kubectl(tmp_path, {"pods": "api\nweb-1\nworker"})
    assert candidates(["--context", "prod", "-n", "shop", "w"]) == ["web-1", "worker"]
    log = (tmp_path / "kubectl.log").read_text().splitlines()
    assert log == ["--context=prod --namespace=shop get pods -o custom-columns=:metadata.name --no-headers "
                   "--request-timeout=5s"]
    assert candidates([""]) == [*SUBCOMMANDS, "api", "web-1", "worker", *KIND_PREFIXES]


def test_kind_names_namespaces_and_containers_come_from_kubectl(tmp_path):
    fake_kubectl(tmp_path, {"deployments": "api\nweb", "namespaces": "default\nshop", "pod": "app sidecar"})
    assert candidates(["deploy/w"]) == ["deploy/web"]
    assert candidates(["deployment/"]) == ["deployment/api", "deployment/web"]
    assert candidates(["-n", "s"]) == ["shop"]
    assert candidates(["pod/api", "-c", ""]) == ["app", "sidecar"]
    assert "get pod api -o jsonpath={.spec.containers[*].name}" in (tmp_path / "kubectl.log").read_text()


def test_a_failing_kubectl_offers_what_completion_knows(tmp_path):
    fake_kubectl(tmp_path, {})
    assert candidates(["s"]) == ["sweep", "stop", "sts/", "svc/"]
    assert candidates(["-n", ""]) == []
