"""``events`` against ``ss -E`` in a namespace the test makes (ss is the oracle).

Each test subscribes ss and the agent side by side (waiting until both have joined the
destroy groups, as /proc/net/netlink shows), ends connections in every way the agent
tells apart (helpers/close_sockets.py: clean close, RST by SO_LINGER 0, RST for unread
data, refused, a SYN to a blackholed address that times out, UDP), then stops both and
compares: every destroyed socket appears once, with the addresses, ports, queues and
state ss printed for the same cookie.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers.close_sockets import BLACKHOLE, blackhole
from helpers.ss_text import parse as parse_ss
from netns_fixture import TestNamespace
from sockdebug_agent.inspectors.events import pids_in_this_netns
from sockdebug_agent.inspectors.processes import scan_owners

pytestmark = pytest.mark.root

AGENT = [sys.executable, "-m", "sockdebug_agent"]
HELPERS = Path(__file__).parent / "helpers"
ALL = ("clean", "linger0", "unread", "refused", "unused", "udp", "v6")
UDP_BURST = ("import socket\nfor _ in range(%d):\n"
             "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 0)); s.close()")


def why_not_runnable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    missing = [tool for tool in ("ip", "ss", "stdbuf") if shutil.which(tool) is None]
    return f"needs {', '.join(missing)}" if missing else None


class EventsNamespace(TestNamespace):
    """A namespace with a blackholed prefix, and watchers (ss -E, agents) started in it."""

    def __init__(self, tmp: Path) -> None:
        super().__init__("sdtev")
        self.tmp = tmp
        self.watchers: list[tuple[subprocess.Popen, Path]] = []
        try:
            blackhole(self.name)
        except BaseException:
            self.close()
            raise

    def subscribers(self) -> int:
        rows = [line.split() for line in self.exec("cat", "/proc/net/netlink").splitlines()[1:]]
        return sum(1 for r in rows if r[1] == "4" and int(r[3], 16))

    def watch(self, argv: list[str], name: str) -> tuple[subprocess.Popen, Path]:
        path = self.tmp / name
        with open(path, "w") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True)
        self.watchers.append((proc, path))
        return proc, path

    def ss(self, args: list[str], name: str):
        return self.watch(["ip", "netns", "exec", self.name, "stdbuf", "-oL", "ss", "-E", "-n", "-e", "-H", *args],
                          name)

    def agent(self, args: list[str], name: str):
        return self.watch([*AGENT, "--netns", self.name, "events", *args], name)

    def wait_subscribed(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.subscribers() < count:
            assert time.monotonic() < deadline, "the watchers did not subscribe"
            for proc, _ in self.watchers:
                assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)

    def close_sockets(self, *scenarios: str) -> list[dict]:
        out = self.exec(sys.executable, str(HELPERS / "close_sockets.py"), *scenarios)
        return [json.loads(line) for line in out.splitlines()]

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGINT) -> int:
        proc.send_signal(sig)
        return proc.wait(timeout=30)

    def close(self) -> None:
        for proc, _ in self.watchers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()
        super().close()


@pytest.fixture
def ev_ns(tmp_path):
    why = why_not_runnable()
    if why:
        pytest.skip(why)
    ns = EventsNamespace(tmp_path)
    try:
        yield ns
    finally:
        ns.close()


def records(path: Path, code: int) -> list[dict]:
    """The agent's stream, checked to be framed: hello first, end last with its exit code."""
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert recs and recs[0]["type"] == "hello" and recs[-1]["type"] == "end", recs[-3:]
    assert recs[-1]["exit_code"] == code
    final = [r for r in recs if r["type"] == "tick" and r["final"]]
    assert len(final) == 1 and recs[-2] is final[0]
    return recs


def ss_rows(path: Path, netid: str | None = None) -> dict[int, object]:
    """ss's rows by cookie; ``netid`` fills the Netid column ss hides when one table is shown."""
    rows = {}
    for row in parse_ss(path.read_text(), netid):
        cookie = int(re.search(r"\bsk:([0-9a-f]+)", row.extra).group(1), 16)
        assert cookie not in rows, f"ss printed sk:{cookie:x} twice"
        rows[cookie] = row
    return rows


def key(r) -> tuple:
    get = r.get if isinstance(r, dict) else lambda k: getattr(r, k)
    return tuple(get(k) for k in ("netid", "state", "recv_q", "send_q", "local_address", "local_port",
                                  "peer_address", "peer_port"))


def same_as_ss(recs: list[dict], ss_path: Path, netid: str | None = None) -> list[dict]:
    events = [r for r in recs if r["type"] == "event"]
    cookies = Counter(e["cookie"] for e in events)
    assert not [c for c, n in cookies.items() if n > 1], "an event came twice"
    rows = ss_rows(ss_path, netid)
    assert set(cookies) == set(rows), (sorted(set(rows) - set(cookies)), sorted(set(cookies) - set(rows)))
    for e in events:
        row = rows[e["cookie"]]
        if row.state is None:  # ss hides the State column when one state is asked for
            row = dataclasses.replace(row, state=e["state"])
        assert key(e) == key(row), (e, row)
    return events


def test_every_closed_socket_once_as_ss_reports_it(ev_ns):
    ss, ss_out = ev_ns.ss(["-t", "-u", "-i"], "ss.txt")
    agent, agent_out = ev_ns.agent(["-p", "-i", "--tick", "1"], "agent.jsonl")
    ev_ns.wait_subscribed(2)
    # Meanwhile a SYN that times out (3 s), and a connection held past a table dump and an owner
    # scan: the agent runs each at most every 1 s, or 10x its cost (slow on a loaded machine).
    began = time.monotonic()
    scan_owners(pids=pids_in_this_netns())
    hold = max(6.0, 12 * (time.monotonic() - began) + 1)
    slow = subprocess.Popen(["ip", "netns", "exec", ev_ns.name, sys.executable, str(HELPERS / "close_sockets.py"),
                             "syn-timeout", "held"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HOLD_SECONDS": str(hold)})
    done = {d["scenario"]: d for d in ev_ns.close_sockets(*ALL)}
    done.update({d["scenario"]: d for d in map(json.loads, slow.communicate(timeout=60)[0].splitlines())})
    assert done["syn-timeout"]["error"] == 110 and done["refused"]["refused"]  # ETIMEDOUT: the blackhole held
    time.sleep(0.5)
    assert ev_ns.stop(agent) == 0
    ev_ns.stop(ss, signal.SIGTERM)
    recs = records(agent_out, 0)
    events = same_as_ss(recs, ss_out)

    def one(**match):
        (found,) = [e for e in events if all(e[k] == v for k, v in match.items())]
        return found

    assert one(local_port=done["clean"]["client_port"], peer_port=7000)["close"] == "closed"
    assert one(local_port=7000, peer_port=done["clean"]["client_port"])["close"] == "closed"
    assert one(local_port=done["linger0"]["client_port"], peer_port=0)["close"] == "reset"  # ss: 127.0.0.1:*
    assert one(local_port=7002, peer_port=done["unread"]["client_port"])["close"] == "reset"
    assert one(peer_port=0, peer_address="127.0.0.1", close="failed")["netid"] == "tcp"  # refused
    syn = one(peer_address=BLACKHOLE)
    assert syn["close"] == "timeout" and syn["retrans"] >= 1 and syn["seen"]["state"] == "SYN-SENT"
    assert syn["duration_ms"] >= 1000  # at least from the first dump that saw it connecting
    held = one(local_port=done["held"]["client_port"], peer_port=7007)
    assert held["seen"]["state"] == "ESTAB" and held["seen"]["inode"] > 0 and held["duration_ms"] >= 1000
    assert {"pid": done["held"]["pid"], "fd": done["held"]["fd"]}.items() <= held["processes"][0].items()
    assert held["tcp_info"]["bytes_acked"] == held["bytes_acked"]
    assert {e["close"] for e in events if e["netid"] == "udp"} == {None} and len(
        [e for e in events if e["netid"] == "udp"]) == 3
    final = recs[-2]
    assert final["ended_by"] == "SIGINT" and final["total"]["events"] == len(events)
    assert final["total"]["resets"] == 2 and final["total"]["lost"] == 0
    kernel = final["total"]["kernel"]
    assert kernel["estab_resets"] >= 2 and kernel["out_rsts"] >= 2 and kernel["attempt_fails"] >= 2
    ticks = [r for r in recs if r["type"] == "tick" and not r["final"]]
    assert ticks and sum(t["interval"]["events"] for t in ticks) + final["interval"]["events"] == len(events)


# ss flags and the agent's, given side by side; they must select the same events.
FILTERS = [
    ("t", ["-t"]), ("u", ["-u"]), ("4", ["-4"]), ("6", ["-6"]), ("t-dport", ["-t", "dport = :7000"]),
    ("tu-port", ["-t", "-u", "( sport = :7001 or dport = :7001 or sport = :5353 )"]),
    ("4-src", ["-4", "src", "127.0.0.1", "and", "not", "sport", "=", ":7000"]),
    ("dst-v6", ["dst", "[::1]"]), ("state-ignored", ["-t", "state", "established"]),
]


@pytest.fixture(scope="module")
def filtered(tmp_path_factory):
    """One namespace, one round of closes, a pair (ss, agent) per filter."""
    why = why_not_runnable()
    if why:
        pytest.skip(why)
    ns = EventsNamespace(tmp_path_factory.mktemp("events-filters"))
    try:
        pairs = {}
        for name, args in FILTERS:
            pairs[name] = (ns.ss(args, f"{name}.ss"), ns.agent(["--tick", "0", *args], f"{name}.jsonl"))
        ns.wait_subscribed(2 * len(FILTERS))
        ns.close_sockets(*ALL)
        time.sleep(0.5)
        out = {}
        for name, ((ss, ss_path), (agent, agent_path)) in pairs.items():
            assert ns.stop(agent) == 0
            ns.stop(ss, signal.SIGTERM)
            out[name] = (records(agent_path, 0), ss_path)
        yield out
    finally:
        ns.close()


@pytest.mark.parametrize("name", [n for n, _ in FILTERS])
def test_filters_and_family_flags_select_what_ss_selects(filtered, name):
    recs, ss_path = filtered[name]
    args = dict(FILTERS)[name]
    tables = [t for flag, t in (("-t", "tcp"), ("-u", "udp")) if flag in args]
    events = same_as_ss(recs, ss_path, tables[0] if len(tables) == 1 else None)
    assert events, "the filter should keep some of the closes"
    final = recs[-2]
    assert final["total"]["events"] == len(events)
    assert final["total"]["events"] + final["total"]["unmatched"] >= len(events)
    warned = [r["code"] for r in recs if r["type"] == "warning"]
    assert ("events-state-ignored" in warned) == (name == "state-ignored")


def test_count_ends_the_stream_by_itself(ev_ns, tmp_path):
    agent, path = ev_ns.agent(["--count", "3"], "count.jsonl")
    ev_ns.wait_subscribed(1)
    ev_ns.close_sockets("clean", "unread")
    assert agent.wait(timeout=30) == 0
    recs = records(path, 0)
    assert len([r for r in recs if r["type"] == "event"]) == 3
    assert recs[-2]["ended_by"] == "count" and recs[-2]["total"]["events"] == 3


def test_for_ends_the_stream_with_ticks_on_the_way(ev_ns):
    agent, path = ev_ns.agent(["--for", "1.5s", "--tick", "0.5"], "for.jsonl")
    assert agent.wait(timeout=30) == 0
    recs = records(path, 0)
    ticks = [r for r in recs if r["type"] == "tick"]
    assert len(ticks) >= 3 and ticks[-1]["ended_by"] == "for" and ticks[-1]["elapsed_ms"] >= 1500


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_stream_cleanly(ev_ns, sig):
    agent, path = ev_ns.agent(["--tick", "0"], "sig.jsonl")
    ev_ns.wait_subscribed(1)
    ev_ns.close_sockets("udp")
    time.sleep(0.3)
    assert ev_ns.stop(agent, sig) == 0
    recs = records(path, 0)
    assert recs[-2]["ended_by"] == signal.Signals(sig).name and recs[-2]["total"]["events"] == 3


def test_a_nonblocking_connect_refused_is_failed_with_its_port(ev_ns):
    """Most clients connect non-blocking and read the error with SO_ERROR: the kernel keeps
    the peer port, and the connect still counts as failed."""
    agent, path = ev_ns.agent(["-t", "--count", "1"], "nb.jsonl")
    ev_ns.wait_subscribed(1)
    assert ev_ns.close_sockets("refused-nonblocking")[0]["refused"]
    assert agent.wait(timeout=30) == 0
    (event,) = [r for r in records(path, 0) if r["type"] == "event"]
    assert (event["close"], event["peer_address"], event["peer_port"]) == ("failed", "127.0.0.1", 7008)
    assert event["duration_ms"] is None


@pytest.mark.parametrize("how", ["byte", "eof"])
def test_stdin_ends_the_stream_cleanly(ev_ns, tmp_path, how):
    """--stdin-stop: what the plugin does on Ctrl-C (a byte), and what an exec whose client
    went away does (EOF): the same clean end as a signal, with the closes before it."""
    path = tmp_path / f"stdin-{how}.jsonl"
    with open(path, "w") as out:
        agent = subprocess.Popen([*AGENT, "--netns", ev_ns.name, "events", "--tick", "0", "--stdin-stop"],
                                 stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
    ev_ns.watchers.append((agent, path))
    ev_ns.wait_subscribed(1)
    ev_ns.close_sockets("udp")
    time.sleep(0.3)
    assert agent.poll() is None  # an open, quiet stdin does not end it
    if how == "byte":
        agent.stdin.write(b"\n")
        agent.stdin.flush()
    else:
        agent.stdin.close()
    assert agent.wait(timeout=30) == 0
    recs = records(path, 0)
    assert recs[-2]["ended_by"] == "stdin" and recs[-2]["total"]["events"] == 3


def test_a_full_buffer_is_counted_not_fatal(ev_ns):
    """A stopped reader and a tiny buffer: the kernel drops messages (ENOBUFS); the agent says
    how many in a warning and in its ticks, and every close is either an event or lost."""
    agent, path = ev_ns.agent(["-u", "--rcvbuf", "4096", "--tick", "0"], "lost.jsonl")
    ev_ns.wait_subscribed(1)
    time.sleep(0.5)  # past the first table dump
    agent.send_signal(signal.SIGSTOP)
    try:
        ev_ns.exec(sys.executable, "-c", UDP_BURST % 2000)
    finally:
        agent.send_signal(signal.SIGCONT)
    time.sleep(0.5)
    assert ev_ns.stop(agent) == 0
    recs = records(path, 0)
    lost = [r["count"] for r in recs if r["type"] == "warning" and r["code"] == "events-lost"]
    total = recs[-2]["total"]
    assert lost and sum(lost) == total["lost"] > 0
    assert total["events"] + total["lost"] == 2000
    assert len([r for r in recs if r["type"] == "event"]) == total["events"]


def test_a_stop_still_writes_the_closes_queued_before_it(ev_ns):
    """SIGINT right after a burst the agent has not read yet: the final tick counts them all."""
    agent, path = ev_ns.agent(["-u", "--tick", "0"], "drain.jsonl")
    ev_ns.wait_subscribed(1)
    time.sleep(0.5)  # past the first table dump
    agent.send_signal(signal.SIGSTOP)
    try:
        ev_ns.exec(sys.executable, "-c", UDP_BURST % 2000)
        agent.send_signal(signal.SIGINT)  # delivered when it runs again, before it read the burst
    finally:
        agent.send_signal(signal.SIGCONT)
    assert agent.wait(timeout=30) == 0
    recs = records(path, 0)
    total = recs[-2]["total"]
    assert recs[-2]["ended_by"] == "SIGINT" and total["lost"] == 0 and total["events"] == 2000
