"""`interfaces` against `ip -j -d addr` / `ip -s -j link`, `limits` against /proc,
`prlimit` and `ss`, and the psutil path (`--psutil`) against the netlink path.

One private namespace holds: veth pairs (both ends inside), a bridge, a link left
down, primary/secondary/IPv6 addresses, distinctive per-namespace sysctls, and a
helper process that lowers its own fd limit, opens files and holds TCP and UDP
sockets.  Everything is torn down even when setup fails half-way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from netns_fixture import TestNamespace

pytestmark = pytest.mark.root

HELPER = textwrap.dedent("""
    import json, os, resource, signal, socket, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (300, 600))
    files = [open("/dev/null") for _ in range(40)]
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 5000)); srv.listen(16)
    clients = [socket.create_connection(("127.0.0.1", 5000)) for _ in range(3)]
    accepted = [srv.accept()[0] for _ in range(3)]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 40050))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(5):
        sender.sendto(b"x" * 100, ("127.0.0.1", 40050))
    for _ in range(5):
        udp.recv(200)
    print("ready " + json.dumps({"pid": os.getpid(),
                                 "client_ports": [c.getsockname()[1] for c in clients]}), flush=True)
    signal.pause()
""")

SYSCTLS = {
    "net.core.somaxconn": "1234",
    "net.ipv4.ip_local_port_range": "40000 40099",
    "net.ipv4.tcp_fin_timeout": "17",
    "net.ipv4.tcp_max_tw_buckets": "555",
    "net.ipv4.tcp_max_syn_backlog": "321",
    "net.ipv4.tcp_syncookies": "2",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}
SETUP = [
    "link set lo up",
    "link add va type veth peer name vb",
    "link add vx type veth peer name vy",
    "link add br0 type bridge",
    "link set va mtu 1400",
    "link set vb master br0",
    "addr add 10.10.0.1/24 dev va", "addr add 10.10.0.5/24 dev va", "addr add 10.11.0.1/24 dev br0",
    "-6 addr add fd00:10::1/64 dev va nodad",
    "link set va up", "link set vb up", "link set br0 up",
]


class Namespace(TestNamespace):
    def __init__(self) -> None:
        super().__init__("sdlim", loopback_up=False)
        self.workdir = tempfile.mkdtemp(prefix=self.name)

    def start(self, script: str) -> dict:
        path = Path(self.workdir, f"helper{len(self.procs)}.py")
        path.write_text(script)
        return self.spawn([sys.executable, str(path)])

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def ns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip (creates a network namespace)")
    space = Namespace()
    try:
        for key, value in SYSCTLS.items():
            space.exec("sysctl", "-qw", f"{key}={value}")
        for line in SETUP:
            space.ip(*line.split())
        space.helper = space.start(HELPER)
        yield space
    finally:
        space.close()


# --- interfaces -----------------------------------------------------------------------

def test_interfaces_match_ip_addr(ns, run_agent):
    run = run_agent("--netns", ns.name, "interfaces")
    assert run.returncode == 0, run.stderr
    got = {i["name"]: i for i in run.of_type("interface")}
    want = {i["ifname"]: i for i in json.loads(ns.ip("-j", "-d", "addr"))}
    assert set(got) == set(want) == {"lo", "va", "vb", "vx", "vy", "br0"}
    for name, link in want.items():
        mine = got[name]
        assert mine["index"] == link["ifindex"], name
        assert mine["state"] == link["operstate"], name
        assert mine["mtu"] == link["mtu"], name
        assert mine["mac"] == link.get("address"), name
        assert mine["flags"] == link["flags"], name
        assert mine["kind"] == link.get("linkinfo", {}).get("info_kind"), name
        assert mine["master"] == link.get("master"), name
        assert mine["link_type"] == link["link_type"], name
        assert [(a["family"], a["address"], a["prefixlen"], a["scope"], a.get("broadcast"), a.get("label"))
                for a in mine["addresses"]] == [
            (a["family"], a["local"], a["prefixlen"], a["scope"], a.get("broadcast"), a.get("label"))
            for a in link["addr_info"]], name


def test_interface_details(ns, run_agent):
    got = {i["name"]: i for i in run_agent("--netns", ns.name, "interfaces").of_type("interface")}
    va = got["va"]
    assert (va["kind"], va["mtu"], va["state"]) == ("veth", 1400, "UP")
    v4 = [a for a in va["addresses"] if a["family"] == "inet"]
    assert [(a["address"], a["flags"]) for a in v4] == [("10.10.0.1", []), ("10.10.0.5", ["secondary"])]
    assert got["vb"]["master"] == "br0" and got["br0"]["kind"] == "bridge"
    assert got["vx"]["state"] == "DOWN" and "UP" not in got["vx"]["flags"]
    assert got["vy"]["flags"][-1] == "M-DOWN"  # its veth peer vx is down
    assert got["lo"]["link_type"] == "loopback" and got["lo"]["state"] == "UNKNOWN"


def test_loopback_counters_match_ip_s_link(ns, run_agent):
    # The helper's traffic went over lo and nothing else uses this namespace's lo.
    want = json.loads(ns.ip("-s", "-j", "link", "show", "lo"))[0]["stats64"]
    stats = next(i for i in run_agent("--netns", ns.name, "interfaces").of_type("interface")
                 if i["name"] == "lo")["stats"]
    assert stats["rx_packets"] > 0
    for direction in ("rx", "tx"):
        for key in ("packets", "bytes", "errors", "dropped"):
            assert stats[f"{direction}_{key}"] == want[direction][key], (direction, key)


# --- limits ---------------------------------------------------------------------------

def _limits(run):
    (lim,) = run.of_type("limits")
    return lim


def test_netns_sysctls_are_those_of_the_namespace(ns, run_agent):
    lim = _limits(run_agent("--netns", ns.name, "limits"))
    net = lim["netns"]
    assert (net["somaxconn"], net["tcp_fin_timeout"], net["tcp_max_tw_buckets"], net["tcp_max_syn_backlog"],
            net["tcp_syncookies"]) == (1234, 17, 555, 321, 2)
    assert net["ip_local_port_range"] == [40000, 40099]
    host = _limits(run_agent("limits"))["netns"]
    assert host["somaxconn"] == int(Path("/proc/sys/net/core/somaxconn").read_text())
    for key, path in (("conntrack_count", "nf_conntrack_count"), ("conntrack_max", "nf_conntrack_max")):
        proc = Path("/proc/sys/net/netfilter", path)
        text = ns.exec("cat", str(proc)) if proc.exists() else None
        assert net[key] == (int(text) if text else None), key  # absent module -> null, never 0


def test_system_figures_match_proc(ns, run_agent):
    system = _limits(run_agent("--netns", ns.name, "limits"))["system"]
    assert system["file_max"] == int(Path("/proc/sys/fs/file-max").read_text())
    assert system["nr_open"] == int(Path("/proc/sys/fs/nr_open").read_text())
    assert 0 < system["file_handles_allocated"] <= system["file_max"]


def test_local_ports_in_use_match_ss(ns, run_agent):
    lim = _limits(run_agent("--netns", ns.name, "limits"))
    want = {}
    for proto in ("t", "u"):
        out = ns.exec("ss", f"-{proto}anH")
        ports = {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}
        want["tcp" if proto == "t" else "udp"] = len({p for p in ports if 40000 <= p <= 40099})
    # The helper's three client ports; its UDP socket and the sender's automatically bound port.
    assert want == {"tcp": 3, "udp": 2}
    assert lim["netns"]["local_ports_in_use"] == want


def _counters_from_proc(text: str) -> dict:
    lines = text.splitlines()
    out = {}
    for header, values in zip(lines[::2], lines[1::2]):
        group, names = header.split(":", 1)
        out[group] = dict(zip(names.split(), map(int, values.split(":", 1)[1].split())))
    return out


def test_counters_match_proc_net(ns, run_agent):
    counters = _limits(run_agent("--netns", ns.name, "limits"))["counters"]
    snmp = _counters_from_proc(ns.exec("cat", "/proc/net/snmp"))
    netstat = _counters_from_proc(ns.exec("cat", "/proc/net/netstat"))
    assert counters["Tcp"]["ActiveOpens"] == snmp["Tcp"]["ActiveOpens"] == 3
    assert counters["Tcp"]["PassiveOpens"] == snmp["Tcp"]["PassiveOpens"] == 3
    assert counters["Tcp"]["CurrEstab"] == snmp["Tcp"]["CurrEstab"] == 6
    assert counters["Udp"]["InDatagrams"] == snmp["Udp"]["InDatagrams"] == 5
    assert counters["TcpExt"]["ListenOverflows"] == netstat["TcpExt"]["ListenOverflows"] == 0
    for group, names in counters.items():
        source = netstat if group == "TcpExt" else snmp
        for name, value in names.items():
            assert value == source[group].get(name), (group, name)  # absent in the kernel -> null


def test_process_limits_match_proc_and_prlimit(ns, run_agent):
    pid = ns.helper["pid"]
    run = run_agent("--netns", ns.name, "limits")
    records = {r["pid"]: r for r in run.of_type("process_limits")}
    assert pid in records
    assert os.getpid() not in records  # only processes of the inspected network namespace
    mine = records[pid]
    soft, hard = subprocess.run(["prlimit", "--pid", str(pid), "--nofile", "--output", "SOFT,HARD", "--noheadings",
                                 "--raw"], check=True, capture_output=True, text=True).stdout.split()
    assert (mine["fd_soft_limit"], mine["fd_hard_limit"]) == (int(soft), int(hard)) == (300, 600)
    open_fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert mine["open_fds"] == open_fds and open_fds >= 40 + 3 + 3 + 1 + 2
    assert mine["percent_used"] == round(open_fds * 100 / 300, 1)
    assert mine["comm"] == Path(f"/proc/{pid}/comm").read_text().strip()
    everyone = {r["pid"] for r in run_agent("--netns", ns.name, "limits", "--all-processes").of_type("process_limits")}
    assert os.getpid() in everyone and pid in everyone


# --- the psutil path -------------------------------------------------------------------

def test_psutil_limits_match_the_proc_path(ns, run_agent):
    pid = ns.helper["pid"]
    proc = {r["pid"]: r for r in run_agent("--netns", ns.name, "limits").of_type("process_limits")}[pid]
    run = run_agent("--netns", ns.name, "--psutil", "limits")
    assert run.returncode == 0, run.stderr
    (warning,) = [w for w in run.of_type("warning") if w["code"] == "psutil-fallback"]
    assert "system.file_max" in warning["message"] and "counters" in warning["message"]
    portable = {r["pid"]: r for r in run.of_type("process_limits")}[pid]
    for key in ("open_fds", "fd_soft_limit", "fd_hard_limit", "percent_used"):
        assert portable[key] == proc[key], key
    lim = _limits(run)
    assert all(v is None for v in lim["system"].values()) and all(v is None for v in lim["netns"].values())


def _listeners(run) -> set:
    return {(s["local_address"], s["local_port"], frozenset(p["pid"] for p in s["processes"]))
            for s in run.sockets}


def test_psutil_sockets_match_netlink_in_the_namespace(ns, run_agent):
    pid = ns.helper["pid"]
    for flags in ("-tlp", "-tanp", "-uanp"):
        netlink = run_agent("--netns", ns.name, "sockets", flags)
        portable = run_agent("--netns", ns.name, "--psutil", "sockets", flags)
        assert [w["code"] for w in portable.of_type("warning")] == ["psutil-fallback"]
        assert "recv_q" in portable.of_type("warning")[0]["message"]
        as_set = lambda run: {(s["netid"], s["state"], s["local_address"], s["local_port"], s["peer_address"],  # noqa: E731
                               s["peer_port"], frozenset(p["pid"] for p in s["processes"])) for s in run.sockets}
        assert as_set(portable) == as_set(netlink), flags
    listeners = _listeners(run_agent("--netns", ns.name, "--psutil", "sockets", "-tlp"))
    assert ("0.0.0.0", 5000, frozenset({pid})) in listeners


def test_psutil_listeners_and_pids_match_netlink_on_the_host(run_agent):
    # Host listeners may come and go while the two runs happen: compare up to three times.
    for _attempt in range(3):
        netlink = _listeners(run_agent("sockets", "-tlp"))
        portable = _listeners(run_agent("--psutil", "sockets", "-tlp"))
        if netlink == portable:
            break
    assert portable == netlink
    assert netlink  # the host has listeners (the test would prove nothing otherwise)


def test_commands_that_need_rtnetlink_refuse_the_psutil_path(run_agent):
    run = run_agent("--psutil", "routes")
    assert run.returncode == 2 and run.of_type("error")[0]["code"] == "usage"
