"""``sockdebug-agent ids`` (the target's uid/gid, readable without privilege) and how the
plugin picks the ids its agent runs as from those records."""

from __future__ import annotations

import os
from pathlib import Path

from sockdebug_agent.inspectors.processes import parse_ids, scan_ids
from sockdebug_agent.schema import ProcessIds, from_dict, to_dict
from sockdebug_plugin.runner import shared_ids

APP = "a" * 64
SIDE = "b" * 64
AGENT = "c" * 64


def status(uid: tuple, gid: tuple) -> str:
    return (f"Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t{uid[0]}\t{uid[1]}\t{uid[2]}\t{uid[3]}\n"
            f"Gid:\t{gid[0]}\t{gid[1]}\t{gid[2]}\t{gid[3]}\nFDSize:\t64\n")


def fake_proc(tmp_path: Path, procs: dict[int, tuple]) -> str:
    for pid, (comm, uid, gid, cid) in procs.items():
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "status").write_text(status(uid, gid))
        (d / "stat").write_text(f"{pid} ({comm}) S 0 0 0")
        (d / "cgroup").write_text(f"0::/kubepods/pod1234/{cid}\n" if cid else "0::/\n")
    (tmp_path / "self").mkdir()  # not a pid: skipped
    return str(tmp_path)


def test_parse_ids_reads_all_four_ids():
    assert parse_ids(status((1000, 1001, 1002, 1003), (5, 6, 7, 8))) == ([1000, 1001, 1002, 1003], [5, 6, 7, 8])
    assert parse_ids("Name:\tx\n") == ([], [])


def test_scan_ids_lists_every_other_process_with_its_container(tmp_path):
    proc = fake_proc(tmp_path, {1: ("python3", (1000,) * 4, (0,) * 4, APP), 7: ("sh) x", (0,) * 4, (0,) * 4, None),
                                os.getpid(): ("me", (0,) * 4, (0,) * 4, AGENT)})
    got = scan_ids(proc)
    assert [p.pid for p in got] == [1, 7]  # not the agent itself
    assert got[0] == ProcessIds(1, "python3", [1000] * 4, [0] * 4, APP)
    assert got[1].comm == "sh) x" and got[1].container_id is None
    assert from_dict(to_dict(got[0])) == got[0]  # a schema record, round trip


def rec(pid: int, uid: int, gid: int, cid, euid=None) -> ProcessIds:
    return ProcessIds(pid, "x", [uid, euid if euid is not None else uid, uid, uid], [gid] * 4, cid)


IDS = {APP: "app", SIDE: "sidecar", AGENT: "sockdebug-abc"}


def test_shared_ids_are_the_target_containers():
    records = [rec(1, 1000, 3000, APP), rec(9, 1000, 3000, APP), rec(20, 0, 0, AGENT), rec(30, 7, 7, SIDE)]
    assert shared_ids(records, IDS, "app") == (1000, 3000)
    assert shared_ids(records, IDS, "sidecar") == (7, 7)


def test_shared_ids_prefer_non_root_then_the_most_common():
    records = [rec(1, 0, 0, APP), rec(2, 101, 101, APP), rec(3, 101, 101, APP), rec(4, 102, 102, APP)]
    assert shared_ids(records, IDS, "app") == (101, 101)
    assert shared_ids([rec(1, 0, 0, APP)], IDS, "app") == (0, 0)


def test_shared_ids_skip_processes_whose_ids_disagree():
    # a setuid program: real 1000, effective 0 -> no single uid passes the kernel's check
    assert shared_ids([rec(1, 1000, 1000, APP, euid=0)], IDS, "app") is None
    assert shared_ids([], IDS, "app") is None


def test_without_container_ids_pid_1_is_the_target():
    records = [rec(1, 1000, 1000, None), rec(50, 65534, 65534, None)]
    assert shared_ids(records, {}, "app") == (1000, 1000)
