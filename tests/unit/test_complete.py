"""``kubectl_complete-sockdebug``: candidates for flags and fixed values, and what is
offered without a cluster (KUBECONFIG points at a file that does not exist, so nothing
here can reach one)."""

from __future__ import annotations

import pytest
import typer
from sockdebug_plugin import cli, complete
from sockdebug_plugin.complete import FLAGS, KIND_PREFIXES, NO_FILE_COMP, SUBCOMMANDS, candidates

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


# --- flags and fixed values --------------------------------------------------------------------

@pytest.mark.parametrize(("words", "expected"), [
    (["--li"], ["--listening", "--limits"]),
    (["pod/x", "--no"], ["--no-processes"]),
    (["pod/x", "--image"], ["--image", "--image-pull-policy"]),
    (["--all"], ["--all-namespaces", "--all-pods", "--all"]),
    (["--zzz"], []),
])
def test_flags(words, expected):
    assert sorted(candidates(words)) == sorted(expected)


def test_every_flag_on_a_dash():
    assert candidates(["-"]) == list(FLAGS)
    assert candidates(["pod/x", "--"]) == list(FLAGS)


def test_flags_match_the_cli():
    """Every long option of `kubectl sockdebug` is completed, and nothing that is not one."""
    command = typer.main.get_command(cli.app).commands["inspect"]
    cli_flags = {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
    assert set(FLAGS) - {"--help"} == cli_flags


@pytest.mark.parametrize(("words", "expected"), [
    (["-o", ""], ["table", "wide", "json", "yaml", "jsonl"]),
    (["pod/x", "--output", "j"], ["json", "jsonl"]),
    (["pod/x", "-o", "w"], ["wide"]),
    (["--profile", ""], ["auto", "general", "baseline", "restricted", "netadmin"]),
    (["pod/x", "--profile", "re"], ["restricted"]),
    (["--image-pull-policy", ""], ["Always", "IfNotPresent", "Never"]),
    (["pod/x", "--image-pull-policy", "If"], ["IfNotPresent"]),
    (["triage", "pod/x", "--fail-on", ""], ["warning", "critical"]),
    (["-o", "xml"], []),
])
def test_fixed_values(words, expected):
    assert candidates(words) == expected


def test_fixed_values_match_the_cli():
    from sockdebug_plugin import inject, render

    assert complete.FIXED_VALUES["-o"] == render.OUTPUTS
    assert complete.FIXED_VALUES["--profile"] == inject.PROFILES


# --- targets without a cluster -----------------------------------------------------------------

def test_first_word_without_a_cluster_offers_subcommands_and_kinds():
    assert candidates([""]) == [*SUBCOMMANDS, *KIND_PREFIXES]
    assert candidates([]) == [*SUBCOMMANDS, *KIND_PREFIXES]


@pytest.mark.parametrize(("partial", "expected"), [
    ("d", ["deploy/", "ds/"]),
    ("s", ["sweep", "sts/", "svc/"]),
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
