"""Dumps racing with churn: the kernel lists a socket twice when a hash chain changes
between two datagrams of a dump (ss prints it twice); the agent lists it once and says
so in a ``dump-interrupted`` warning with the count.  The namespace's established
table has 128 buckets (``tcp_child_ehash_entries`` of its parent), so its chains are
long and connections opened and closed in a loop shift them all the time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from netns_fixture import TestNamespace

pytestmark = [pytest.mark.root, pytest.mark.slow]
CHURN = Path(__file__).parent / "helpers" / "churn.py"


@pytest.fixture(scope="module")
def churning():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and ip")
    if not os.path.exists("/proc/sys/net/ipv4/tcp_child_ehash_entries"):
        pytest.skip("the kernel has no per-namespace TCP hash tables (Linux < 6.1)")
    parent = TestNamespace("sdt-churn")
    try:
        parent.exec("sysctl", "-qw", "net.ipv4.tcp_child_ehash_entries=128")
        proc = subprocess.Popen(["ip", "netns", "exec", parent.name, sys.executable, str(CHURN), "3000"],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        parent.procs.append(proc)  # killed (with its process group) by close()
        assert proc.stdout.readline().strip() == "ready"
        yield proc.pid  # `ip netns exec` execs: this is the churning process, in the child namespace
    finally:
        parent.close()


def test_no_socket_twice_under_churn(churning, run_agent):
    dropped = runs = 0
    deadline = time.monotonic() + 60
    while runs < 6 or (not dropped and time.monotonic() < deadline):
        for flags in ("-ta", "-tao"):  # the JSON-lines path and the record path
            run = run_agent("--target-pid", str(churning), "sockets", flags)
            cookies = Counter(s["cookie"] for s in run.sockets)
            assert len(run.sockets) > 6000 and cookies.most_common(1)[0][1] == 1
            dropped += sum(w["count"] or 0 for w in run.of_type("warning") if w["code"] == "dump-interrupted")
        runs += 1
    assert dropped, f"in {runs} rounds the kernel never listed a socket twice: the fixture did not race"
