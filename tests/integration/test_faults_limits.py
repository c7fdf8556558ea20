"""The real agent under process limits, on 42,003 sockets in a namespace the test makes:
RLIMIT_NOFILE at the least Python starts with and lowered mid-run (prlimit --pid),
RLIMIT_AS (ulimit -v), RLIMIT_NPROC (no thread for the netlink prefetch), and
process-limits-denied without kernel threads."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from faultkit import AGENT, NOBODY, as_nobody_python, check, many_count, many_sockets, needs, run

pytestmark = [pytest.mark.root, needs("ip", "prlimit", "setpriv")]


@pytest.fixture(scope="module")
def big():
    with many_sockets() as ns:
        yield ns


def test_the_fewest_fds_python_starts_with_are_enough(big):
    """5 fds: Python itself fails below that; the agent needs no more (netlink socket and
    the prefetch socket), and owners are still read one fd directory at a time."""
    r = run("--netns", big.name, "sockets", "-tap", prefix=("prlimit", "--nofile=5"))
    assert r.returncode == 0 and len(r.of_type("socket")) == many_count()
    assert all(s["processes"] for s in r.of_type("socket") if s["state"] == "ESTAB")


def test_fds_running_out_mid_run_name_rlimit_nofile(big):
    proc = subprocess.Popen([*AGENT, "--netns", big.name, "sockets", "-ta"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    time.sleep(1.0)  # the agent is blocked writing its IPv4 dump into the full pipe
    subprocess.run(["prlimit", "--pid", str(proc.pid), "--nofile=3:3"], check=True, timeout=30)
    rest = proc.stdout.read()
    proc.wait(timeout=60)
    r = check(first + rest, proc.stderr.read(), proc.returncode)
    assert r.returncode == 6 and r.error["code"] == "resource"
    assert "RLIMIT_NOFILE = 3" in r.error["message"] and "ulimit -n" in r.stderr


def test_memory_running_out_names_rlimit_as(big):
    """triage keeps every socket with its tcp_info: 160 MiB of address space is not enough."""
    r = run("--netns", big.name, "triage", "--sockets", prefix=("prlimit", f"--as={160 << 20}"), timeout=300)
    assert r.returncode == 6 and r.error["code"] == "resource"
    assert "RLIMIT_AS = 160 MiB" in r.error["message"] and r.error["hint"]


def test_no_thread_left_reads_without_the_prefetch_thread(big):
    """RLIMIT_NPROC 1 for an unprivileged agent: the prefetch thread cannot start, every
    socket is still read (root ignores the limit, hence nobody)."""
    prefix = ("ip", "netns", "exec", big.name, "prlimit", "--nproc=1", *NOBODY)
    probe = subprocess.run([*prefix, *as_nobody_python()[:3], "-c",
                            "import threading; threading.Thread(target=print).start()"],
                           capture_output=True, text=True, timeout=60)
    assert "can't start new thread" in probe.stderr  # the limit really bites
    r = run("sockets", "-ta", prefix=prefix)
    assert r.returncode == 0 and len(r.of_type("socket")) == many_count()


def _kernel_threads() -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2:].split()[6]) & 0x00200000:
                out.add(int(entry))
    return out


def test_kernel_threads_are_not_denied_processes():
    kthreads = _kernel_threads()
    assert 2 in kthreads  # kthreadd
    r = run("limits", prefix=tuple(NOBODY))
    (warning,) = [w for w in r.of_type("warning") if w["code"] == "process-limits-denied"]
    listed = {int(p) for p in warning["message"].split("(pids ")[1].split(")")[0].replace(", ...", "").split(", ")}
    assert not listed & kthreads
    assert warning["count"] <= len([e for e in os.listdir("/proc") if e.isdigit()]) - len(kthreads)
