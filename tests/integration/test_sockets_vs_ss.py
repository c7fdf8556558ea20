"""The agent's socket records against ``ss`` on the same namespace (ss is the oracle).

The fixture (conftest.py, helpers/open_sockets.py) holds every state the issue
names; each test takes ss's view and the agent's back to back and compares them
as multisets, since dump order is not stable.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
from helpers.ss_text import Row, agent_row, bare, parse, snapshot

pytestmark = pytest.mark.root

SHUTDOWN = ("<->", "-->", "<--", "---")


def compare(ns, run_agent, ss_flags: str, agent_flags: list[str], netid=None):
    """ss rows and agent rows (in ss's terms), taken back to back."""
    rows, run = snapshot(lambda: parse(ns.ss(ss_flags).stdout, netid),
                         lambda: run_agent("--netns", ns.name, "sockets", *agent_flags))
    assert run.returncode == 0, run.stderr
    return rows, run


def by_key(rows):
    out = {}
    for row in rows:
        assert row.key not in out, f"two rows for {row.key}"
        out[row.key] = row
    return out


def test_fixture_holds_every_state(sock_ns):
    """The namespace really has what the comparisons below are meant to cover."""
    rows = parse(sock_ns.ss("-tuxwapnH").stdout)
    states = Counter((r.netid, r.state) for r in rows)
    for want in [("tcp", "LISTEN"), ("tcp", "ESTAB"), ("tcp", "CLOSE-WAIT"), ("tcp", "FIN-WAIT-2"),
                 ("tcp", "TIME-WAIT"), ("tcp", "SYN-SENT"), ("udp", "UNCONN"), ("udp", "ESTAB"),
                 ("raw", "UNCONN"), ("u_str", "LISTEN"), ("u_str", "ESTAB"), ("u_dgr", "UNCONN"),
                 ("u_dgr", "ESTAB"), ("u_seq", "LISTEN"), ("u_seq", "ESTAB")]:
        assert states[want], f"fixture lacks {want}: {sorted(states)}"
    assert states[("tcp", "FIN-WAIT-2")] == 2  # one with its fd, one orphaned (a timewait sock)
    assert states[("tcp", "SYN-SENT")] == 2
    text = sock_ns.ss("-tuanH").stdout
    assert "*:8443" in text and "[::]:9444" in text and "[::1]:9443" in text and "0.0.0.0%lo:6000" in text
    assert "[::ffff:127.0.0.1]:8443" in text
    listeners = {(r.local_address, r.local_port): r for r in rows if r.state == "LISTEN"}
    assert (listeners[("127.0.0.1", 8080)].recv_q, listeners[("127.0.0.1", 8080)].send_q) == (1, 16)
    assert (listeners[("0.0.0.0", 9090)].recv_q, listeners[("0.0.0.0", 9090)].send_q) == (3, 8)
    assert (listeners[("127.0.0.1", 7000)].recv_q, listeners[("127.0.0.1", 7000)].send_q) == (1, 0)


@pytest.mark.parametrize("ss_flags, agent_flags", [
    ("-tuxapnH", ["-tuxap"]),
    ("-tuxwapnH", ["-t", "-u", "-x", "-w", "-a", "-p"]),
])
def test_sockets_equal_ss(sock_ns, run_agent, ss_flags, agent_flags):
    """netid, state, queues, addresses, ports, device and owners (comm, pid, fd) of every
    socket, as multisets."""
    rows, run = compare(sock_ns, run_agent, ss_flags, agent_flags)
    mine = [agent_row(r) for r in run.sockets]
    want = Counter(map(bare, rows))
    got = Counter(mine)
    assert got == want, (f"only ss: {sorted(map(repr, want - got))}\n"
                         f"only agent: {sorted(map(repr, got - want))}")
    assert len(mine) >= 50


def test_owners_are_the_helper_processes(sock_ns, run_agent):
    run = run_agent("--netns", sock_ns.name, "sockets", "-tuxap")
    owner_pids = {p["pid"] for r in run.sockets for p in r.get("processes") or ()}
    assert owner_pids == sock_ns.pids  # nothing else has sockets in this namespace
    peer = sock_ns.info["peer"]
    shared = [r for r in run.sockets if r["netid"] == "tcp" and r["local_port"] == peer["shared_port"]]
    assert len(shared) == 1
    holders = sorted((p["pid"], p["comm"]) for p in shared[0]["processes"])
    # The full comm; ss's scanf("%[^)]") shows it cut at the ')' ("we ird").
    assert holders == sorted([(peer["pid"], "we ird)nm"), (peer["child_pid"], "we ird)nm")])
    for rec in run.sockets:
        if rec["inode"] == 0:  # TIME-WAIT, orphans, not yet accepted: no owner, as in ss
            assert rec["processes"] == []
        else:
            assert rec["processes"], rec


def test_unix_fields(sock_ns, run_agent):
    run = run_agent("--netns", sock_ns.name, "sockets", "-xa")
    unix = run.sockets
    info = sock_ns.info["main"]
    names = {r["local_address"] for r in unix}
    assert {info["abstract"], info["autobind"], info["stream_path"], info["dgram_path"],
            info["seq_path"], None} <= names
    assert re.fullmatch(r"@[0-9a-f]{5}", info["autobind"])
    by_inode = {r["local_port"]: r for r in unix}
    for rec in unix:
        assert rec["family"] == "unix" and rec["peer_address"] is None
        assert rec["local_port"] == rec["inode"] > 0
        if rec["peer_port"] and rec["netid"] != "u_dgr":  # stream pairs point at each other
            assert by_inode[rec["peer_port"]]["peer_port"] == rec["local_port"]
    pair = [r for r in unix if r["netid"] == "u_str" and r["local_address"] is None and r["peer_port"]]
    assert len(pair) >= 2


def test_v6only_and_dual_stack(sock_ns, run_agent):
    run = run_agent("--netns", sock_ns.name, "sockets", "-tul")
    v6 = {(r["netid"], r["local_port"]): r for r in run.sockets if r["family"] == "inet6"}
    assert v6[("tcp", 8443)]["v6only"] is False and v6[("tcp", 8443)]["local_address"] == "::"
    assert v6[("tcp", 9444)]["v6only"] is True and v6[("tcp", 9444)]["local_address"] == "::"
    assert v6[("udp", 5355)]["v6only"] is False
    assert v6[("tcp", 9443)]["local_address"] == "::1"
    bound = [r for r in run.sockets if r["local_port"] == 6000]
    assert [(b["local_address"], b["interface"]) for b in bound] == [("0.0.0.0", "lo")]


def _timer(extra: str):
    m = re.search(r"timer:\((\w+),([^,]*),(\d+)\)", extra)
    return (m.group(1), int(m.group(3))) if m else None


def test_timers_match_ss(sock_ns, run_agent):
    """-o: the same sockets have the same timer, with a count of retransmits."""
    rows, run = compare(sock_ns, run_agent, "-tuaonH", ["-tuao"])
    ss_rows = by_key(rows)
    seen = Counter()
    for rec in run.sockets:
        row = ss_rows[agent_row(rec).key]
        want = _timer(row.extra)
        timer = rec.get("timer")
        if want is None:
            assert timer is None, (rec, row)
            continue
        assert timer is not None, (rec, row)
        assert set(timer) == {"name", "expires_ms", "retrans"}
        assert timer["name"] == want[0]
        assert isinstance(timer["expires_ms"], int) and timer["expires_ms"] >= 0
        assert isinstance(timer["retrans"], int)
        if timer["name"] != "on":  # a SYN may be retransmitted between the two reads
            assert timer["retrans"] == want[1]
        seen[(rec["state"], timer["name"])] += 1
    assert seen[("SYN-SENT", "on")] == 2
    assert seen[("ESTAB", "keepalive")] == 1
    assert seen[("TIME-WAIT", "timewait")] == 2
    assert seen[("FIN-WAIT-2", "timewait")] == 1  # the orphan
    for rec in run.sockets:
        if rec["state"] in ("TIME-WAIT", "FIN-WAIT-2") and rec.get("timer"):
            assert rec["timer"]["expires_ms"] <= 60_000 and rec["timer"]["retrans"] == 0
        if rec["state"] == "SYN-SENT":  # the SYN retransmit timer: seconds, not minutes
            assert rec["timer"]["expires_ms"] <= 130_000


def test_extended_matches_ss(sock_ns, run_agent):
    """-e: shutdown state, inode, cookie (ss's sk:), uid, v6only; for unix the VFS inode
    and ss's dev:MAJ/MIN and a listener's pending peers."""
    rows, run = compare(sock_ns, run_agent, "-tuxaenH", ["-tuxae"])
    ss_rows = by_key(rows)
    shut = Counter()
    for rec in run.sockets:
        row = ss_rows[agent_row(rec).key]
        ext = rec["extended"]
        words = row.extra.split()
        # ss prints the shutdown state only when the kernel sent it (not for TIME-WAIT)
        want = [w for w in words if w in SHUTDOWN]
        assert ext.get("shutdown") == (want[0] if want else None), (rec, row)
        shut[(rec["netid"], rec["state"], ext.get("shutdown"))] += 1
        assert isinstance(rec["uid"], int) and isinstance(rec["cookie"], int)
        # -e implies -o
        assert (rec.get("timer") or {}).get("name") == (_timer(row.extra) or (None,))[0]
        if rec["family"] == "unix":
            vfs = re.search(r"ino:(\d+) dev:(\d+/\d+)", row.extra)
            if vfs:
                assert (ext["vfs_inode"], ext["vfs_dev"]) == (int(vfs.group(1)), vfs.group(2))
            else:
                assert "vfs_inode" not in ext
            peers = re.search(r"peers:((?: \d+)*)", row.extra)
            if peers:
                assert ext["peers"] == [int(p) for p in peers.group(1).split()]
            continue
        assert f"ino:{rec['inode']}" in words
        assert f"sk:{rec['cookie']:x}" in words
        if rec["uid"]:
            assert f"uid:{rec['uid']}" in words
        v6only = re.search(r"v6only:(\d)", row.extra)
        assert rec["v6only"] == (bool(int(v6only.group(1))) if v6only else None)
    assert shut[("tcp", "CLOSE-WAIT", "-->")] == 2  # peer closed: no more to receive
    assert shut[("tcp", "FIN-WAIT-2", "<--")] == 1  # shutdown(SHUT_WR) with the fd kept
    assert shut[("tcp", "ESTAB", "<->")] >= 5
    assert shut[("tcp", "TIME-WAIT", None)] == 2
    listener = [r for r in run.sockets if r["local_address"] == sock_ns.info["main"]["stream_path"]
                and r["state"] == "LISTEN"]
    assert len(listener[0]["extended"]["peers"]) == 1  # the connection never accepted


_SKMEM = re.compile(r"skmem:\(r(\d+),rb(\d+),t(\d+),tb(\d+),f(\d+),w(\d+),o(\d+),bl(\d+),d(\d+)\)")
_SKMEM_FIELDS = ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc", "wmem_queued", "optmem",
                 "backlog", "drops")


def test_memory_matches_ss(sock_ns, run_agent):
    """-m: the nine SK_MEMINFO counters, as ss's skmem:(...)."""
    rows, run = compare(sock_ns, run_agent, "-tuxamnH", ["-tuxam"])
    ss_rows = by_key(rows)
    checked = 0
    for rec in run.sockets:
        row = ss_rows[agent_row(rec).key]
        m = _SKMEM.search(row.extra)
        if m is None:  # TIME-WAIT and request socks have no memory info
            assert rec.get("skmem") is None, rec
            continue
        skmem = rec["skmem"]
        assert tuple(skmem) == _SKMEM_FIELDS
        assert all(isinstance(v, int) for v in skmem.values())
        assert skmem["rcvbuf"] > 0 and skmem["sndbuf"] > 0
        # Buffer sizes and queued memory of these idle sockets do not move.
        assert (skmem["rcvbuf"], skmem["sndbuf"], skmem["rmem_alloc"]) == (
            int(m.group(2)), int(m.group(4)), int(m.group(1))), (rec, row)
        checked += 1
    assert checked >= 40
    udp = [r for r in run.sockets if r["netid"] == "udp" and r["local_port"] == 5353]
    assert udp[0]["skmem"]["rmem_alloc"] == udp[0]["recv_q"] > 0  # UDP Recv-Q is memory


def test_tcp_info_matches_ss(sock_ns, run_agent):
    """-i: tcp_info with the congestion algorithm, rtt, cwnd and mss as ss prints them."""
    rows, run = compare(sock_ns, run_agent, "-tuaienH", ["-tuaie"])
    ss_rows = by_key(rows)
    established = 0
    for rec in run.sockets:
        info = rec.get("tcp_info")
        if rec["netid"] != "tcp":
            assert info is None  # ss skips -i for UDP
            continue
        row = ss_rows[agent_row(rec).key]
        cwnd = re.search(r"\bcwnd:(\d+)", row.extra)
        if cwnd is None:  # TIME-WAIT / request socks
            assert info is None, rec
            continue
        assert isinstance(info["congestion"], str) and info["congestion"]
        assert info["congestion"] in row.extra.split()
        assert info["cwnd"] == int(cwnd.group(1)) > 0
        mss = re.search(r"\bmss:(\d+)", row.extra)  # ss leaves out zeros (listeners)
        assert info["mss"] == (int(mss.group(1)) if mss else 0)
        assert isinstance(info["rto_ms"], float) and info["rto_ms"] >= 0
        for key in ("bytes_acked", "bytes_received", "segs_out", "segs_in", "delivered"):
            assert isinstance(info[key], int) and info[key] >= 0
        assert isinstance(info["options"], list)
        if rec["state"] == "ESTAB" and rec["inode"]:
            established += 1
            assert isinstance(info["rtt_ms"], float) and info["rtt_ms"] > 0 and info["rto_ms"] > 0
            assert info["rttvar_ms"] >= 0 and info["min_rtt_ms"] > 0
            assert "sack" in info["options"] and "ts" in info["options"]
    assert established >= 5
    sender = [r for r in run.sockets if r["netid"] == "tcp" and r.get("timer", {}).get("name") == "keepalive"]
    assert sender[0]["tcp_info"]["bytes_acked"] >= 100  # it sent 100 bytes


def _ss_summary(text: str) -> dict:
    out = {"total": int(re.search(r"^Total: (\d+)", text, re.M).group(1))}
    tcp = re.search(r"^TCP:\s+(\d+) \(estab (\d+), closed (-?\d+), orphaned (\d+), timewait (\d+)\)", text,
                    re.M)
    out.update(zip(("tcp_total", "estab", "closed", "orphaned", "timewait"), map(int, tcp.groups())))
    for name in ("RAW", "UDP", "TCP", "INET", "FRAG"):
        m = re.search(rf"^{name}\t\s*(\d+)\s+(\d+)\s+(\d+)", text, re.M)
        out[name] = {"total": int(m.group(1)), "ipv4": int(m.group(2)), "ipv6": int(m.group(3))}
    return out


def test_summary_matches_ss_s(sock_ns, run_agent):
    """``summary`` against ``ss -s`` for the per-namespace figures (TCP alloc, and so
    "closed", are global and move with the rest of the machine), and its TCP state
    counts against ``ss -ta``.  "sockets: used" also counts netlink sockets that ss and
    the agent closed moments ago (freed after an RCU grace period), and "orphaned" is
    the whole machine's (other tests' connections closing), so the pair is read again
    until two ss readings around the agent's agree and the agent saw the same."""
    for _ in range(10):
        want = _ss_summary(sock_ns.ss("-s").stdout)
        run = run_agent("--netns", sock_ns.name, "summary")
        again = _ss_summary(sock_ns.ss("-s").stdout)
        (summary,) = run.of_type("summary")
        if want == again and (summary["sockets_used"], summary["tcp_orphaned"]) == (want["total"],
                                                                                   want["orphaned"]):
            break
        time.sleep(0.2)
    assert run.returncode == 0
    states = Counter(r.state for r in parse(sock_ns.ss("-tanH").stdout, "tcp"))
    assert summary["sockets_used"] == want["total"]
    assert summary["tcp_estab"] == want["estab"]
    assert summary["tcp_orphaned"] == want["orphaned"]
    assert summary["tcp_timewait"] == want["timewait"] == states["TIME-WAIT"] + states["FIN-WAIT-2"] - 1
    for name in ("RAW", "UDP", "TCP", "INET", "FRAG"):
        assert summary["transports"][name] == want[name], name
    assert summary["tcp_states"] == dict(states)
    assert summary["tcp_states"]["LISTEN"] == 8 and summary["tcp_states"]["SYN-SENT"] == 2
    assert summary["udp_sockets"] == 6
    assert isinstance(summary["tcp_total"], int) and isinstance(summary["tcp_closed"], int)


def test_row_parser_reads_ss_spellings():
    """The normalisation the comparisons rely on (no namespace needed)."""
    from helpers.ss_text import parse_line
    row = parse_line("tcp LISTEN 1 10 *:8443 *:* users:((\"we ird\",pid=7,fd=5),(\"x\",pid=3,fd=4))")
    assert (row.local_address, row.local_port, row.peer_address, row.peer_port) == ("::", 8443, "::", 0)
    assert row.users == (("we ird", 7, 5), ("x", 3, 4))
    row = parse_line("LISTEN 0 3 0.0.0.0%lo:6000 0.0.0.0:*", netid="tcp")
    assert (row.netid, row.local_address, row.interface) == ("tcp", "0.0.0.0", "lo")
    row = parse_line("tcp ESTAB 0 0 [::ffff:127.0.0.1]:8443 [::ffff:127.0.0.1]:35492")
    assert row.local_address == "::ffff:127.0.0.1" and row.peer_port == 35492
    row = parse_line("u_str ESTAB 5 0 @sdt-abstract-1 352772 * 352771")
    assert (row.local_address, row.local_port, row.peer_address, row.peer_port) == (
        "@sdt-abstract-1", 352772, None, 352771)
    assert isinstance(row, Row)
