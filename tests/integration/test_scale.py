"""The agent at scale against ss: 100,000 TCP sockets (50,000 loopback connections, both
ends, held by several processes: bench/holder.py) in a namespace the test makes.  The
snapshot is the same sockets in the same states as ``ss -tan``, by both the JSON-lines
path (``-ta``) and the record path (``-tao``), with no socket twice; with ``-p`` every
socket has its one holder.  Timings are the benches' business (bench/), not asserted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers.ss_text import parse

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from holder import loopback_connections

pytestmark = [pytest.mark.root, pytest.mark.slow]
CONNECTIONS = 50_000
AGENT = [sys.executable, "-m", "sockdebug_agent"]


@pytest.fixture(scope="module")
def big_ns():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("ss"):
        pytest.skip("needs root, ip and ss")
    with loopback_connections(CONNECTIONS, prefix="sdt-scale") as ns:
        yield ns


def agent_sockets(ns: str, *flags: str) -> list[dict]:
    out = subprocess.run([*AGENT, "--netns", ns, "sockets", *flags], capture_output=True, check=True,
                         timeout=300).stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["type"] == "hello" and records[-1]["type"] == "end"
    # a static fixture: the kernel has no reason to list a socket twice (other warnings are the
    # machine's own, such as a process even root may not read)
    assert not [r for r in records if r["type"] == "warning" and r["code"] == "dump-interrupted"]
    return [r for r in records if r["type"] == "socket"]


def key(rec: dict) -> tuple:
    return rec["state"], rec["local_address"], rec["local_port"], rec["peer_address"], rec["peer_port"]


def test_100k_sockets_equal_ss_by_both_paths(big_ns):
    ss = subprocess.run(["ip", "netns", "exec", big_ns, "ss", "-tanH"], capture_output=True, text=True,
                        check=True).stdout
    want = Counter((r.state, r.local_address, r.local_port, r.peer_address, r.peer_port)
                   for r in parse(ss, "tcp"))
    assert sum(want.values()) >= 2 * CONNECTIONS
    for flags in (["-ta"], ["-tao"]):
        socks = agent_sockets(big_ns, *flags)
        got = Counter(map(key, socks))
        assert got == want, (flags, sorted(want - got)[:5], sorted(got - want)[:5])
        cookies = Counter(s["cookie"] for s in socks)
        assert len(cookies) == len(socks), cookies.most_common(3)


def test_100k_sockets_each_have_their_holder(big_ns):
    holders = {int(pid) for pid in subprocess.run(["ip", "netns", "pids", big_ns], capture_output=True, text=True,
                                                  check=True).stdout.split()}
    socks = agent_sockets(big_ns, "-tap")
    assert len(socks) >= 2 * CONNECTIONS
    fds = Counter()
    for sock in socks:
        assert len(sock["processes"]) == 1, sock
        owner = sock["processes"][0]
        assert owner["pid"] in holders and owner["comm"].startswith("python")
        fds[owner["pid"], owner["fd"]] += 1
    assert max(fds.values()) == 1  # one socket per (pid, fd)
