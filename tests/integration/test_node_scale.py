"""Node mode at scale: a simulated node (bench/node_bench.py: a PID, mount and network
namespace of its own) with 300 pods, each a network namespace with a process in a
``kubepods/besteffort/pod<UID>/<id>`` cgroup, and 100,000 sockets.  The agent runs
inside the node as a node agent does; every socket it lists is in the netns record of
the right pod (compared with ``ss`` run in each pod's namespace), with that pod's
container as owner.  Timings are bench/node_bench.py's business."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.ss_text import parse

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from node_bench import Node

pytestmark = [pytest.mark.root, pytest.mark.slow]
AGENT = [sys.executable, "-m", "sockdebug_agent"]
PODS = 300


@pytest.fixture(scope="module")
def node():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("ss") or not os.path.exists("/usr/bin/time"):
        pytest.skip("needs root, ip, ss and GNU time (scripts/setup)")
    with Node(pods=PODS, sockets=100_000) as node:
        yield node


def run_on(node: Node, *args: str) -> list[dict]:
    with tempfile.NamedTemporaryFile(prefix="sdt-node-") as out:
        reply = node.run([*AGENT, *args], output=out.name)
        assert reply["code"] == 0 and "Traceback" not in reply["stderr"], reply
        records = [json.loads(line) for line in Path(out.name).read_text().splitlines()]
    assert records[0]["type"] == "hello" and records[-1]["type"] == "end"
    return records


def by_netns(records: list[dict]) -> list[tuple[dict, list[dict]]]:
    out: list[tuple[dict, list[dict]]] = []
    for rec in records:
        if rec["type"] == "netns":
            out.append((rec, []))
        elif rec["type"] == "socket":
            out[-1][1].append(rec)
    return out


_SS: dict[str, Counter] = {}


def ss_rows(netns: str, listening: bool = False, tcp_only: bool = False) -> Counter:
    """``ss -tuan`` in ``netns`` (once per namespace), or the listening part of it."""
    if netns not in _SS:
        text = subprocess.run(["ip", "netns", "exec", netns, "ss", "-tuanH"], capture_output=True, text=True,
                              check=True).stdout
        _SS[netns] = Counter((r.netid, r.state, r.local_address, r.local_port, r.peer_address, r.peer_port)
                             for r in parse(text))
    return Counter({row: n for row, n in _SS[netns].items()
                    if (not listening or row[1] in ("LISTEN", "UNCONN")) and (not tcp_only or row[0] == "tcp")})


def rows(socks: list[dict]) -> Counter:
    return Counter((s["netid"], s["state"], s["local_address"], s["local_port"], s["peer_address"],
                    s["peer_port"]) for s in socks)


def test_every_socket_is_in_its_pods_namespace(node):
    groups = by_netns(run_on(node, "pods", "-tua"))
    with ThreadPoolExecutor(4) as pool:  # ss in 301 namespaces: mostly the kernel's table walks
        list(pool.map(ss_rows, [node.node_netns, *(p.netns for p in node.pods)]))
    host = [socks for rec, socks in groups if rec["host"]]
    pods = {rec["pod_uids"][0]: socks for rec, socks in groups if not rec["host"]}
    assert all(rec["error"] is None and len(rec["pod_uids"]) <= 1 for rec, _ in groups)
    assert len(host) == 1 and sorted(pods) == sorted(p.uid for p in node.pods)
    assert rows(host[0]) == ss_rows(node.node_netns)
    for pod in node.pods:
        assert rows(pods[pod.uid]) == ss_rows(pod.netns), pod
    assert sum(map(len, pods.values())) + len(host[0]) >= node.sockets


def test_listeners_with_owners_as_a_sweep_asks(node):
    """`pods -tul -p`, what `sweep --via node` runs: each pod's listeners, owned by its container."""
    groups = by_netns(run_on(node, "pods", "-tul", "-p"))
    containers = {p.uid: p.container for p in node.pods}
    pods = {rec["pod_uids"][0]: socks for rec, socks in groups if rec["pod_uids"]}
    assert len(pods) == PODS
    for pod in node.pods:
        socks = pods[pod.uid]
        assert rows(socks) == ss_rows(pod.netns, listening=True)
        assert len(socks) == 4 and all(
            [(p["container_id"], p["comm"]) for p in s["processes"]] == [(containers[pod.uid], "python3")]
            for s in socks), socks


def test_node_listeners_with_owners(node):
    """`sockets -tl -p` in the node's own namespace, what `node/NAME --listening` runs."""
    records = run_on(node, "sockets", "-tl", "-p")
    socks = [r for r in records if r["type"] == "socket"]
    assert rows(socks) == ss_rows(node.node_netns, listening=True, tcp_only=True) and socks
    assert all(len(s["processes"]) == 1 and "container_id" not in s["processes"][0] for s in socks)
