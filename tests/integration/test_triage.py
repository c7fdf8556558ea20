"""`sockdebug-agent triage` on real fixtures: each finding is reproduced by processes
that really misbehave, inside namespaces this module creates, and must appear with
the right evidence (checked against `ss`, /proc and `prlimit`).  A clean namespace
with ordinary traffic must yield no warning or critical finding.

Namespaces (all deleted in teardown, helpers killed by process group):

- ``bad``: a CLOSE-WAIT leaker, a listen(1) server nobody accepts from with six
  clients (full accept queue, ListenOverflows, SYN-SENT clients), a process that
  lowers its fd limit to 100 and opens 85, a loopback-only listener, UDP sockets
  whose routes were then removed or blackholed, a UDP socket flooded past its
  receive buffer; a veth with an address and no default route.
- ``pressure``: ip_local_port_range of 20 ports, 12 connections to one
  destination; a bulk transfer through an nftables input rule dropping 20% of its
  segments (lo's MTU lowered to 1500 so there are many).
- ``tw``: tcp_max_tw_buckets=20 and 40 connections closed by the client.
- ``clean``: a default route, an echo server on 0.0.0.0, a kept-alive connection,
  a few short ones and UDP request/response.

conntrack-near-max and file-max-near need node-wide tables lowered, which a test
must not do to the host: they are covered by the unit tests only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from netns_fixture import TestNamespace

pytestmark = pytest.mark.root

HELPER = r'''
import json, os, resource, signal, socket, sys, threading

def ready(**info):
    print("ready " + json.dumps({"pid": os.getpid(), **info}), flush=True)
    signal.pause()

def server(port, backlog=64, host="0.0.0.0"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    return s

role, args = sys.argv[1], sys.argv[2:]
if role == "closewait":  # accepts connections, never closes them after the peer did
    port, n = int(args[0]), int(args[1])
    srv = server(port)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    held = [srv.accept()[0] for _ in range(n)]
    for c in clients:
        c.close()
    for h in held:
        assert h.recv(1) == b""  # the peer's FIN arrived: this end is in CLOSE-WAIT now
    ready()
elif role == "backlog":  # listen(1), never accept; clients connect without waiting
    port, n = int(args[0]), int(args[1])
    srv = server(port, backlog=1)
    clients = []
    for _ in range(n):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        clients.append(c)
    ready()
elif role == "fdhog":  # lowers its own soft limit, then opens files up to PERCENT of it
    limit, percent = int(args[0]), int(args[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    files = []
    while len(os.listdir("/proc/self/fd")) - 1 < limit * percent // 100:  # -1: listdir's own fd
        files.append(open("/dev/null"))
    ready(open_fds=len(os.listdir("/proc/self/fd")) - 1)
elif role == "loopback":
    srv = server(int(args[0]), host="127.0.0.1")
    ready()
elif role == "udpconnect":  # connected UDP sockets (ss: ESTAB) to each ADDR
    socks = []
    for addr in args:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((addr, 9))
        socks.append(s)
    ready()
elif role == "udpflood":  # a small receive buffer nobody reads, and more datagrams than fit
    port, n = int(args[0]), int(args[1])
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    r.bind(("0.0.0.0", port))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(n):
        s.sendto(b"x" * 1000, ("127.0.0.1", port))
    ready()
elif role == "ephemeral":  # N connections to one destination, all kept open
    port, n = int(args[0]), int(args[1])
    srv = server(port, backlog=128)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    accepted = [srv.accept()[0] for _ in range(n)]
    ready(ports=[c.getsockname()[1] for c in clients])
elif role == "timewait":  # N connections, each closed by the client first
    port, n = int(args[0]), int(args[1])
    srv = server(port)
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        a = srv.accept()[0]
        c.close()
        assert a.recv(1) == b""
        a.close()
    ready()
elif role == "bulk":  # send SIZE bytes one way and keep the connection open afterwards
    port, size = int(args[0]), int(args[1])
    srv = server(port)
    c = socket.create_connection(("127.0.0.1", port))
    a = srv.accept()[0]
    def drain():
        got = 0
        while got < size:
            got += len(a.recv(1 << 20))
    reader = threading.Thread(target=drain)
    reader.start()
    c.sendall(b"x" * size)
    reader.join()
    ready(client_port=c.getsockname()[1])
elif role == "clean":  # ordinary traffic, everything closed properly
    port = int(args[0])
    srv = server(port)
    keep = socket.create_connection(("127.0.0.1", port))
    peer = srv.accept()[0]
    keep.sendall(b"ping"); peer.recv(4); peer.sendall(b"pong"); keep.recv(4)
    for _ in range(3):
        c = socket.create_connection(("127.0.0.1", port))
        a = srv.accept()[0]
        c.sendall(b"hi"); a.recv(2); a.sendall(b"ok"); c.recv(2)
        c.close(); a.recv(1); a.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port + 1))
    cu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); cu.connect(("127.0.0.1", port + 1))
    for _ in range(3):
        cu.send(b"q"); data, addr = u.recvfrom(10); u.sendto(b"a", addr); cu.recv(10)
    ready()
else:
    raise SystemExit(f"unknown role {role}")
'''


class Namespace(TestNamespace):
    """A triage fixture namespace: helpers from the shared helper.py, by role."""

    def __init__(self, role: str, workdir: str) -> None:
        super().__init__(f"sdtri-{role}")
        self.workdir = workdir
        self.info: dict[str, dict] = {}

    def sysctl(self, **values: str) -> None:
        for key, value in values.items():
            self.exec("sysctl", "-qw", f"{key.replace('__', '.')}={value}")

    def start(self, key: str, *args: str) -> dict:
        self.info[key] = self.spawn([sys.executable, str(Path(self.workdir, "helper.py")), *args], 60)
        return self.info[key]

    def pid(self, key: str) -> int:
        return self.info[key]["pid"]

    def counters(self, path: str) -> dict[str, dict[str, int]]:
        lines = self.exec("cat", path).splitlines()
        out = {}
        for header, values in zip(lines[::2], lines[1::2]):
            group, names = header.split(":", 1)
            out[group] = dict(zip(names.split(), map(int, values.split(":", 1)[1].split())))
        return out

    def wait_for(self, what: str, check, timeout: float = 30.0) -> None:
        """Poll ``check()`` until true (setup only: tests assert on what is then observed)."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {what} did not happen within {timeout} s")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def spaces():
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("ss") is None:
        pytest.skip("needs root, ip and ss (creates network namespaces)")
    workdir = tempfile.mkdtemp(prefix="sdtri-")
    Path(workdir, "helper.py").write_text(HELPER)
    made: dict[str, Namespace] = {}
    try:
        bad = made["bad"] = Namespace("bad", workdir)
        for cmd in (["link", "add", "va", "type", "veth", "peer", "name", "vb"],
                    ["addr", "add", "10.77.0.1/24", "dev", "va"], ["addr", "add", "10.77.0.2/24", "dev", "vb"],
                    ["link", "set", "va", "up"], ["link", "set", "vb", "up"],
                    ["route", "add", "10.88.0.0/24", "via", "10.77.0.254"],
                    ["route", "add", "10.89.0.0/24", "via", "10.77.0.254"]):
            bad.ip(*cmd)
        bad.sysctl(net__ipv4__tcp_syn_retries="8")  # SYN-SENT clients keep trying for minutes
        bad.start("closewait", "closewait", "7100", "12")
        bad.start("backlog", "backlog", "7200", "6")
        bad.start("fdhog", "fdhog", "100", "85")
        bad.start("loopback", "loopback", "7400")
        bad.start("udpconnect", "udpconnect", "10.88.0.5", "10.89.0.5")
        bad.start("udpflood", "udpflood", "7500", "200")
        bad.ip("route", "del", "10.88.0.0/24")
        bad.ip("route", "replace", "blackhole", "10.89.0.0/24")
        bad.wait_for("a retransmitted SYN toward the full listener", lambda: re.search(
            r"timer:\(on,[^,]+,[1-9]", bad.exec("ss", "-tnoH", "state", "syn-sent", "dport = :7200")))

        pressure = made["pressure"] = Namespace("pressure", workdir)
        pressure.sysctl(net__ipv4__ip_local_port_range="40000 40019")
        pressure.ip("link", "set", "lo", "mtu", "1500")  # many segments per transfer, so losses are repaired fast
        pressure.exec("nft", "add", "table", "inet", "sdtri")
        # Dropped on input, so the sender really loses them (an output drop is only a local send failure).
        pressure.exec("nft", "add", "chain", "inet", "sdtri", "in", "{ type filter hook input priority 0; }")
        pressure.exec("nft", "add", "rule", "inet", "sdtri", "in", "tcp", "dport", "7800", "numgen", "random",
                      "mod", "10", "<", "2", "drop")
        pressure.start("ephemeral", "ephemeral", "7600", "12")
        pressure.start("bulk", "bulk", "7800", str(2 << 20))

        tw = made["tw"] = Namespace("tw", workdir)
        tw.sysctl(net__ipv4__tcp_max_tw_buckets="20")
        tw.start("timewait", "timewait", "7700", "40")

        clean = made["clean"] = Namespace("clean", workdir)
        for cmd in (["link", "add", "va", "type", "veth", "peer", "name", "vb"],
                    ["addr", "add", "10.66.0.1/24", "dev", "va"], ["addr", "add", "10.66.0.2/24", "dev", "vb"],
                    ["link", "set", "va", "up"], ["link", "set", "vb", "up"],
                    ["route", "add", "default", "via", "10.66.0.2", "dev", "va"]):
            clean.ip(*cmd)
        clean.start("clean", "clean", "8000")
        yield made
    finally:
        for space in made.values():
            space.close()
        shutil.rmtree(workdir, ignore_errors=True)


class Run:
    def __init__(self, returncode: int, records: list[dict], stderr: str) -> None:
        self.returncode, self.records, self.stderr = returncode, records, stderr

    def of_type(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["type"] == kind]

    @property
    def sockets(self) -> list[dict]:
        return self.of_type("socket")


def agent(*args: str) -> Run:
    """tests/conftest.py's agent_run, usable from module-scoped fixtures: a framed stream
    (hello first, end last with the exit code) and no traceback."""
    proc = subprocess.run([sys.executable, "-m", "sockdebug_agent", *args], capture_output=True, text=True,
                          timeout=120)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert records and records[0]["type"] == "hello" and records[-1]["type"] == "end", proc.stdout[-500:]
    assert records[-1]["exit_code"] == proc.returncode
    return Run(proc.returncode, records, proc.stderr)


def triage(space: Namespace, *extra: str) -> Run:
    run = agent("--netns", space.name, "triage", *extra)
    assert run.returncode in (0, 1), run.stderr
    return run


def findings(run, finding_id: str | None = None) -> list[dict]:
    return [f for f in run.of_type("finding") if finding_id is None or f["id"] == finding_id]


def procs(*pids: int) -> list[dict]:
    return [{"pid": pid, "comm": Path(f"/proc/{pid}/comm").read_text().strip()} for pid in sorted(pids)]


# --- the bad namespace ------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_run(spaces):
    bad = spaces["bad"]
    before = bad.counters("/proc/net/netstat")["TcpExt"]
    run = triage(bad)
    after = bad.counters("/proc/net/netstat")["TcpExt"]
    return run, before, after


def test_findings_come_first_and_most_severe_first(bad_run):
    run, _, _ = bad_run
    kinds = [r["type"] for r in run.records[1:-1] if r["type"] != "warning"]
    first_other = next(i for i, k in enumerate(kinds) if k != "finding")
    assert set(kinds[:first_other]) == {"finding"} and "finding" not in kinds[first_other:]
    order = {"critical": 0, "warning": 1, "info": 2}
    ranks = [order[f["severity"]] for f in findings(run)]
    assert ranks == sorted(ranks)
    assert {"summary", "limits", "process_limits", "route", "interface"} <= set(kinds)
    assert "socket" not in kinds  # only with --sockets


def test_close_wait_leak(spaces, bad_run):
    bad = spaces["bad"]
    pid = bad.pid("closewait")
    (f,) = [f for f in findings(bad_run[0], "close-wait-leak") if f["evidence"]["pid"] == pid]
    listed = bad.exec("ss", "-tanpH")
    ss_count = sum(f"pid={pid}," in line for line in listed.splitlines() if line.startswith("CLOSE-WAIT"))
    assert f["evidence"]["close_wait"] == ss_count == 12, listed
    assert f["severity"] == "warning"
    assert f["evidence"]["comm"] == procs(pid)[0]["comm"]
    assert f["evidence"]["local_ports"] == [7100]
    assert f["evidence"]["distinct_peers"] == 12 and len(f["evidence"]["peers"]) == 10  # the 10 busiest


def test_accept_queue_full(spaces, bad_run):
    bad = spaces["bad"]
    (f,) = findings(bad_run[0], "accept-queue-full")
    assert f["severity"] == "critical"
    (line,) = bad.exec("ss", "-ltnH", "sport = :7200").splitlines()
    recv_q, send_q = map(int, line.split()[1:3])
    ev = f["evidence"]
    assert (ev["listener"], ev["recv_q"], ev["backlog"]) == ("0.0.0.0:7200", recv_q, send_q)
    assert ev["backlog"] == 1 and ev["recv_q"] >= 1
    assert ev["processes"] == procs(bad.pid("backlog"))
    assert ev["somaxconn"] == int(bad.exec("cat", "/proc/sys/net/core/somaxconn"))


def test_listen_overflows(bad_run):
    run, before, after = bad_run
    (f,) = findings(run, "listen-overflows")
    ev = f["evidence"]
    assert 0 < before["ListenOverflows"] <= ev["ListenOverflows"] <= after["ListenOverflows"]
    assert before["ListenDrops"] <= ev["ListenDrops"] <= after["ListenDrops"]
    assert [q["listener"] for q in ev["listeners_with_queued_connections"]] == ["0.0.0.0:7200"]


def test_syn_sent_stuck(spaces, bad_run):
    bad = spaces["bad"]
    (f,) = findings(bad_run[0], "syn-sent-stuck")
    ev = f["evidence"]
    assert ev["destination"] == "127.0.0.1:7200"
    assert 1 <= ev["sockets"] <= 6 and ev["max_syn_retransmits"] >= 1
    assert ev["processes"] == procs(bad.pid("backlog"))


def test_fd_limit_near(spaces, bad_run):
    bad = spaces["bad"]
    pid = bad.pid("fdhog")
    (f,) = [f for f in findings(bad_run[0], "fd-limit-near") if f["evidence"]["pid"] == pid]
    soft, hard = subprocess.run(["prlimit", "--pid", str(pid), "--nofile", "--output", "SOFT,HARD", "--noheadings",
                                 "--raw"], check=True, capture_output=True, text=True).stdout.split()
    ev = f["evidence"]
    assert (ev["open_fds"], ev["fd_soft_limit"], ev["fd_hard_limit"]) == (85, int(soft), int(hard))
    assert ev["fd_soft_limit"] == 100 and ev["percent_used"] == 85.0
    assert len(os.listdir(f"/proc/{pid}/fd")) == 85
    assert f["severity"] == "warning"


def test_loopback_only_listener(spaces, bad_run):
    bad = spaces["bad"]
    found = findings(bad_run[0], "loopback-only-listener")
    assert [f["evidence"]["port"] for f in found] == [7400]  # 7100, 7200, 7500 listen on 0.0.0.0
    ev = found[0]["evidence"]
    assert found[0]["severity"] == "warning"
    assert ev["addresses"] == ["127.0.0.1"] and ev["processes"] == procs(bad.pid("loopback"))


def test_no_default_route(bad_run):
    (f,) = findings(bad_run[0], "no-default-route")
    assert f["severity"] == "warning" and f["evidence"]["family"] == "inet"
    assert {"interface": "va", "addresses": ["10.77.0.1/24"]} in f["evidence"]["interfaces"]


def test_no_route_to_peer(spaces, bad_run):
    bad = spaces["bad"]
    found = {f["evidence"]["peer"]: f for f in findings(bad_run[0], "no-route-to-peer")}
    assert set(found) == {"10.88.0.5", "10.89.0.5"}
    assert found["10.88.0.5"]["evidence"]["matched_route"] is None
    assert found["10.89.0.5"]["evidence"]["matched_route"] == {"dst": "10.89.0.0/24", "table": "main",
                                                               "route_type": "blackhole"}
    for f in found.values():
        assert f["severity"] == "critical"
        assert f["evidence"]["processes"] == procs(bad.pid("udpconnect"))
        assert f["evidence"]["states"] == {"ESTAB": 1}
    # The oracle: the kernel agrees there is no way there.
    no_route = subprocess.run(["ip", "-n", bad.name, "route", "get", "10.88.0.5"], capture_output=True, text=True)
    assert no_route.returncode != 0 and "unreachable" in no_route.stderr.lower()


def test_udp_rcvbuf_errors(spaces, bad_run):
    bad = spaces["bad"]
    (f,) = findings(bad_run[0], "udp-rcvbuf-errors")
    errors = bad.counters("/proc/net/snmp")["Udp"]["RcvbufErrors"]
    assert f["evidence"]["RcvbufErrors"] == errors > 0
    (flooded,) = [s for s in f["evidence"]["sockets"] if s["local"] == "0.0.0.0:7500"]
    assert flooded["drops"] == errors and flooded["recv_q"] > 0
    assert flooded["processes"] == procs(bad.pid("udpflood"))


def test_fail_on(spaces, bad_run):
    bad = spaces["bad"]
    assert bad_run[0].returncode == 0  # default: findings do not change the exit code
    assert triage(bad, "--fail-on", "critical").returncode == 1
    with_sockets = triage(bad, "--sockets")
    assert with_sockets.returncode == 0 and len(with_sockets.sockets) > 30


# --- pressure and TIME-WAIT -----------------------------------------------------------

@pytest.fixture(scope="module")
def pressure_run(spaces):
    return triage(spaces["pressure"])


def test_ephemeral_ports_exhaustion(spaces, pressure_run):
    space = spaces["pressure"]
    (f,) = findings(pressure_run, "ephemeral-ports-exhaustion")
    ev = f["evidence"]
    ports = space.info["ephemeral"]["ports"]
    assert all(40000 <= p <= 40019 for p in ports)
    assert (ev["destination"], ev["ports_in_use"], ev["range_size"], ev["ip_local_port_range"]) == (
        "127.0.0.1:7600", 12, 20, [40000, 40019])
    assert ev["percent"] == 60.0 and f["severity"] == "warning"
    assert ev["states"] == {"ESTAB": 12}
    assert ev["processes"] == procs(space.pid("ephemeral"))


def test_retransmissions_high(spaces, pressure_run):
    space = spaces["pressure"]
    (f,) = findings(pressure_run, "retransmissions-high")
    port = space.info["bulk"]["client_port"]
    (conn,) = [c for c in f["evidence"]["connections"] if c["local"] == f"127.0.0.1:{port}"]
    line = space.exec("ss", "-tniH", "dport = :7800")  # one connection: its row, then its tcp_info line
    total = int(re.search(r"retrans:\d+/(\d+)", line).group(1))
    segs_out = int(re.search(r"segs_out:(\d+)", line).group(1))
    assert (conn["total_retrans"], conn["segs_out"]) == (total, segs_out)
    assert conn["total_retrans"] >= 10 and conn["percent"] >= 5.0
    assert conn["peer"] == "127.0.0.1:7800" and conn["processes"] == procs(space.pid("bulk"))
    assert f["severity"] in ("warning", "critical")


def test_time_wait_pressure(spaces):
    space = spaces["tw"]
    before = space.counters("/proc/net/netstat")["TcpExt"]["TCPTimeWaitOverflow"]
    (f,) = findings(triage(space), "time-wait-pressure")
    ev = f["evidence"]
    assert f["severity"] == "critical"
    assert ev["tcp_max_tw_buckets"] == 20
    assert 0 < before <= ev["TCPTimeWaitOverflow"]
    tw_now = len(space.exec("ss", "-tanH", "state", "time-wait").splitlines())
    assert ev["time_wait"] <= 20 and ev["time_wait"] >= tw_now  # TIME-WAIT only ever expires
    assert ev["top_destinations"][0]["peer"] == "127.0.0.1:7700"


# --- the clean namespace ----------------------------------------------------------------

def test_clean_namespace_has_no_warning_or_critical(spaces):
    clean = spaces["clean"]
    run = triage(clean, "--fail-on", "warning")
    serious = [(f["id"], f["title"]) for f in findings(run) if f["severity"] in ("critical", "warning")]
    assert serious == []
    assert run.returncode == 0
    # ... while there was traffic to judge: connections, a listener and TIME-WAITs from the short ones.
    (summary,) = run.of_type("summary")
    assert summary["tcp_states"].get("ESTAB", 0) >= 2 and summary["tcp_states"].get("LISTEN", 0) == 1
    assert summary["tcp_states"].get("TIME-WAIT", 0) >= 1
