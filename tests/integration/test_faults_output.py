"""The real agent when its stdout fails or it is interrupted, dumping tens of thousands of
sockets in a namespace the test makes: closed, full and broken-pipe stdout, SIGPIPE
blocked, ignored or default, and SIGINT at random points (also against a slow reader,
so that it lands inside partial writes).  Only whole lines ever reach the reader."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

import pytest
from faultkit import AGENT, check, many_count, many_sockets, needs, one_line, run

pytestmark = [pytest.mark.root, needs("ip")]
SIGINT_RUNS = int(os.environ.get("SOCKDEBUG_SIGINT_RUNS", "24"))


@pytest.fixture(scope="module")
def big():
    with many_sockets() as ns:
        yield ns


def _start(*args: str, preexec=None) -> subprocess.Popen:
    return subprocess.Popen([*AGENT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec)


def test_the_fixture_is_big(big):
    r = run("--netns", big.name, "sockets", "-ta")
    assert len(r.of_type("socket")) == many_count()


def test_stdout_closed(big):
    r = run("--netns", big.name, "sockets", "-ta", framed=False, preexec_fn=lambda: os.close(1))
    assert r.returncode == 7 and not r.records
    assert "stdout is closed" in one_line(r.stderr)


def test_stdout_full(big):
    with open("/dev/full", "wb") as full:
        r = run("--netns", big.name, "sockets", "-ta", framed=False, stdout=full)
    assert r.returncode == 7
    assert "stdout is full" in one_line(r.stderr)


def test_help_to_a_full_stdout():
    with open("/dev/full", "wb") as full:
        r = run("--help", framed=False, stdout=full)
    assert r.returncode == 7 and "stdout is full" in one_line(r.stderr)


def _read_some_then_close(proc: subprocess.Popen, size: int = 100) -> bytes:
    head = proc.stdout.read(size)
    proc.stdout.close()  # the reader goes away, like `| head -c 100`
    proc.wait(timeout=60)
    return head


def _block_sigpipe() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})


def _ignore_sigpipe() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


@pytest.mark.parametrize("command", [("sockets", "-ta"), ("serve", "--idle-timeout", "0.2")])
def test_broken_pipe_with_sigpipe_blocked(big, command):
    """EPIPE instead of the signal: exit 7 and one line, for a dump and for serve (whose
    end record finds the pipe gone)."""
    proc = _start("--netns", big.name, *command, preexec=_block_sigpipe)
    head = _read_some_then_close(proc, 100 if command[0] == "sockets" else 10)
    stderr = proc.stderr.read().decode()
    assert head and proc.returncode == 7, (proc.returncode, stderr)
    assert "broken pipe" in one_line(stderr)


@pytest.mark.parametrize("preexec", [None, _ignore_sigpipe], ids=["default", "inherited-SIG_IGN"])
def test_broken_pipe_dies_quietly_as_ss_does(big, preexec):
    """Python ignores SIGPIPE at start whatever it inherited; the agent restores the
    default, so both cases die by the signal, silently (documented in docs/schema.md)."""
    proc = _start("--netns", big.name, "sockets", "-ta", preexec=preexec)
    _read_some_then_close(proc)
    assert proc.returncode == -signal.SIGPIPE and proc.stderr.read() == b""


def _drain(proc: subprocess.Popen, slow: bool, rng: random.Random, into: list[bytes]) -> None:
    while True:
        chunk = proc.stdout.read1(rng.choice((1, 37, 4096, 65536)) if slow else 1 << 20)
        if not chunk:
            return
        into.append(chunk)
        if slow:
            time.sleep(0.0005)  # the pipe stays nearly full: writes are partial


def test_sigint_at_random_points_leaves_only_whole_lines(big):
    """Many runs, SIGINT after a random delay, half of them against a slow reader: every
    byte read parses as whole records, and an interrupted run ends with an
    ``interrupted`` error and ``end`` (exit 130)."""
    rng = random.Random(int(os.environ.get("SOCKDEBUG_SIGINT_SEED", "10")))
    outcomes: dict[tuple[bool, int], int] = {}
    for i in range(SIGINT_RUNS):
        slow = i % 2 == 1
        proc = _start("--netns", big.name, "sockets", "-tap")
        chunks = [proc.stdout.readline()]  # hello: the agent is running its command
        reader = threading.Thread(target=_drain, args=(proc, slow, rng, chunks))
        reader.start()
        time.sleep(rng.uniform(0, 1.5 if slow else 0.35))
        proc.send_signal(signal.SIGINT)
        reader.join(timeout=120)
        proc.wait(timeout=60)
        r = check(b"".join(chunks), proc.stderr.read(), proc.returncode)
        outcomes[slow, r.returncode] = outcomes.get((slow, r.returncode), 0) + 1
        if r.returncode == 130:
            assert r.error["code"] == "interrupted" and r.records[-2] is r.error
            assert r.stderr.startswith("sockdebug-agent: interrupted")
        else:  # the signal came after the end record
            assert r.returncode == 0 and len(r.of_type("socket")) == many_count()
    assert outcomes.get((True, 130)) and outcomes.get((False, 130)), outcomes


def test_sigint_ends_serve_framed():
    proc = _start("serve", "--idle-timeout", "60")
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    proc.wait(timeout=30)
    r = check(first + rest, proc.stderr.read(), proc.returncode)
    assert r.returncode == 130 and r.error["code"] == "interrupted"
    assert [x["type"] for x in r.records] == ["hello", "error", "end"]
