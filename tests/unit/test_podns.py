"""agent/inspectors/podns.py: pod UIDs from cgroup paths, and processes grouped by network
namespace on a constructed /proc (hard links share an inode, as nsfs files of one
namespace do)."""

from __future__ import annotations

import json
import os

from sockdebug_agent.inspectors import podns
from sockdebug_agent.schema import NetNs, from_dict, to_json

UID = "0b6c4f0e-5a1f-4c57-9c55-2d1e6a7b8c9d"
CID = "a" * 64


def test_pod_uid_cgroupfs_v1_and_v2():
    v1 = (f"12:memory:/kubepods/besteffort/pod{UID}/{CID}\n"
          f"11:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{CID}\n1:name=systemd:/\n")
    assert podns.parse_pod_uid(v1) == UID
    assert podns.parse_pod_uid(f"0::/kubepods/pod{UID}/{CID}\n") == UID  # Guaranteed QoS: no class segment
    assert podns.parse_pod_uid(f"0::/kubepods/burstable/pod{UID}\n") == UID  # the pod cgroup itself


def test_pod_uid_systemd_driver():
    under = UID.replace("-", "_")
    text = (f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/"
            f"cri-containerd-{CID}.scope\n")
    assert podns.parse_pod_uid(text) == UID
    assert podns.parse_pod_uid(f"0::/kubepods.slice/kubepods-pod{under}.slice/docker-{CID}.scope") == UID


def test_pod_uid_relative_paths_inside_a_cgroup_namespace():
    assert podns.parse_pod_uid(f"0::/../../pod{UID}/{CID}\n") == UID
    under = UID.replace("-", "_")
    assert podns.parse_pod_uid(f"0::/../kubepods-burstable-pod{under}.slice/cri-containerd-{CID}.scope") == UID


def test_no_pod_uid():
    assert podns.parse_pod_uid("0::/system.slice/containerd.service\n") is None
    assert podns.parse_pod_uid(f"0::/user.slice/mypod{UID}\n") is None  # not a whole path component
    assert podns.parse_pod_uid("") is None


def _proc(tmp_path, layout: dict[int, tuple[str, str]]) -> str:
    """layout: pid -> (namespace name, cgroup text); one file per namespace name, hard-linked."""
    proc = tmp_path / "proc"
    proc.mkdir()
    nsfiles = {}
    for pid, (ns, cgroup) in layout.items():
        d = proc / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "cgroup").write_text(cgroup)
        (d / "comm").write_text("x\n")
        if ns not in nsfiles:
            nsfiles[ns] = tmp_path / f"ns-{ns}"
            nsfiles[ns].write_text("")
        os.link(nsfiles[ns], d / "ns" / "net")
    (proc / "self").mkdir()
    return str(proc)


def test_scan_groups_processes_by_namespace_host_first(tmp_path):
    other = "11111111-2222-3333-4444-555555555555"
    proc = _proc(tmp_path, {
        1: ("host", "0::/init.scope\n"),
        50: ("host", "0::/system.slice/kubelet.service\n"),
        60: ("host", f"0::/kubepods/besteffort/pod{other}/{CID}\n"),  # a hostNetwork pod
        100: ("pod-a", f"0::/kubepods/besteffort/pod{UID}/{'b' * 64}\n"),  # its pause container
        101: ("pod-a", f"0::/kubepods/besteffort/pod{UID}/{CID}\n"),
        200: ("stray", "0::/user.slice\n"),  # a namespace without pods: not inspected
    })
    groups, denied = podns.scan(proc)
    assert denied == []
    assert [(g.host, g.pod_uids, g.pids) for g in groups] == [(True, [other], [1, 50, 60]), (False, [UID], [100, 101])]


def test_netns_record_round_trip():
    rec = NetNs(netns_inode=4026532000, host=False, pod_uids=[UID], pids=2)
    line = to_json(rec)
    assert line.startswith('{"type":"netns"')
    assert from_dict(json.loads(line)) == rec
