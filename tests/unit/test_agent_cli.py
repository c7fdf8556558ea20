"""The command line as a user (or the plugin) meets it: bad flags and bad filters exit 2
with a framed stream (hello, error, end) and a message on stderr, never a traceback."""

from __future__ import annotations

import os

import pytest

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="reads sock_diag of the host namespace")


@pytest.mark.parametrize("argv, says", [
    (["sockets", "-q"], "-q"),
    (["sockets", "--nosuch"], "--nosuch"),
    (["nosuch-command"], "nosuch-command"),
    ([], "COMMAND"),
    (["--target-pid", "abc", "sockets"], "abc"),
    (["--netns", "a", "--target-pid", "1", "sockets"], "not allowed"),
])
def test_bad_arguments(run_agent, argv, says):
    run = run_agent(*argv)
    assert run.returncode == 2
    (error,) = run.of_type("error")
    assert error["code"] == "usage" and says in error["message"]
    assert says in run.stderr and "usage:" in run.stderr


@pytest.mark.parametrize("words, offending", [
    (["sport", "=", ":8080", "and"], "and"),
    (["(", "sport", "=", ":1"], "("),
    (["bogus"], "bogus"),
    (["state", "nosuch"], "nosuch"),
    (["state", "established", "dport", "=", ":http", "or", "frob"], "frob"),
])
def test_bad_filters(run_agent, words, offending):
    run = run_agent("sockets", "-t", *words)
    assert run.returncode == 2 and not run.sockets
    (error,) = run.of_type("error")
    assert error["code"] == "usage" and offending in error["message"]
    assert "sockdebug-agent: invalid filter" in run.stderr and offending in run.stderr
    assert run.records[-1]["records"]["error"] == 1


def test_missing_namespace(run_agent):
    run = run_agent("--netns", "sdt-does-not-exist", "sockets")
    assert run.returncode == 6
    (error,) = run.of_type("error")
    assert error["code"] == "namespace" and "sdt-does-not-exist" in error["message"]


def test_version_and_help(run_agent):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "sockdebug_agent", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("sockdebug-agent ")
    out = subprocess.run([sys.executable, "-m", "sockdebug_agent", "sockets", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "state" in out.stdout


@NEEDS_ROOT
def test_combined_short_flags_equal_separate_ones(run_agent):
    """ss habits: -tuaxp is -t -u -a -x -p; -n and -H are accepted."""
    joined = run_agent("sockets", "-tlnH")
    separate = run_agent("sockets", "-t", "-l", "-n", "-H")
    assert joined.returncode == separate.returncode == 0
    key = lambda r: (r["local_address"], r["local_port"])  # noqa: E731
    assert sorted(map(key, joined.sockets)) == sorted(map(key, separate.sockets))
    assert all(r["state"] == "LISTEN" and r["netid"] == "tcp" for r in joined.sockets)
