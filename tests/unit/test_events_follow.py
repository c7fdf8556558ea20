"""Following several agent streams at once and ending them with Ctrl-C (follow.py,
events_run.follow), with a runner double whose streams are the agent's JSON Lines read by
the plugin's own stream reader: rows are whole lines as they arrive, a first SIGINT asks
every stream to stop and the totals follow (exit 0), a second quits at once, a stream that
ignores the stop is given up after the grace period, --count stops them all, and a failed
stream is reported after the others' totals.  The real streams and Ctrl-C are proven in
tests/e2e/test_e2e_events.py."""

from __future__ import annotations

import io
import json
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from sockdebug_agent.inspectors.destroy import destroy_parser, to_event
from sockdebug_agent.netlink import parse_datagram
from sockdebug_agent.schema import SCHEMA_VERSION, End, Hello, Tick, to_json
from sockdebug_plugin import events_run, follow, options
from sockdebug_plugin.errors import AgentError, TargetError
from sockdebug_plugin.lifecycle import read_stream
from sockdebug_plugin.options import Printing
from sockdebug_plugin.targets import Target

DATA = Path(__file__).parent / "data"


def kernel_events() -> list:
    data = (DATA / "events.bin").read_bytes()
    items, _, _ = parse_datagram(data, len(data), 0, destroy_parser())
    return [to_event(d, 1796116914.25) for d in items if to_event(d, 0).netid == "tcp"]


EVENTS = kernel_events()


def pod(name: str) -> Target:
    return Target("shop", {"metadata": {"name": name, "namespace": "shop"},
                           "spec": {"nodeName": "n1", "containers": [{"name": "app", "ports": [
                               {"containerPort": 7000}]}]}}, "app")


def line(rec) -> bytes:
    return (to_json(rec) + "\n").encode()


def final(n: int, ended_by: str) -> Tick:
    total = {"events": n, "unmatched": 0, "lost": 0, "resets": 0, "by_netid": {"tcp": n}, "by_state": {},
             "by_close": {}, "kernel": {"estab_resets": 0}}
    return Tick(1000.0, total, total, True, ended_by)


RELEASE = threading.Event()  #: set after each test: no stream thread outlives it (later tests count threads)
LIVE: list = []


class Agent:
    """One agent stream: ``events`` records, then (at once, or when stopped) a final tick and end."""

    def __init__(self, events: list, runs_until_stopped: bool = True, obeys: bool = True,
                 fails: BaseException | None = None):
        self.events, self.until_stopped, self.obeys, self.fails = events, runs_until_stopped, obeys, fails
        self.stopped = threading.Event()
        LIVE.append(self)

    def chunks(self):
        yield line(Hello(SCHEMA_VERSION, "0.1.0", ["sockdebug-agent", "events"], "6.18", "node", "linux", 1, 1, 0))
        for e in self.events:
            data = line(e)
            yield data[:17]  # records arrive split across chunks
            yield data[17:]
        if self.until_stopped:
            self.stopped.wait(30)
            if not self.obeys:
                RELEASE.wait(30)
        if self.fails is not None:
            raise self.fails
        yield line(final(len(self.events), "stdin" if self.until_stopped else "for"))
        yield line(End({"event": len(self.events)}, 1.0, 0))


class Runner:
    """The runner's two methods a follow uses; ``stop`` is what Ctrl-C calls."""

    def __init__(self, agents: dict[str, Agent]):
        self.agents, self.stops = agents, 0

    def run_pod(self, target, query):
        return read_stream(f"agent in pod/{target.pod_name}", self.agents[target.pod_name].chunks())

    def stop(self):
        self.stops += 1
        for a in self.agents.values():
            a.stopped.set()


def follow_out(runner: Runner, output: str | Printing = "table", count: int | None = None) -> tuple[int, str]:
    out = io.StringIO()
    printing = output if isinstance(output, Printing) else Printing(output)
    code = events_run.follow(runner, [pod(n) for n in runner.agents], "QUERY", printing, None, count, out)
    return code, out.getvalue()


def sigint_after(seconds: float, times: int = 1) -> threading.Thread:
    def send():
        for _ in range(times):
            time.sleep(seconds)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    return t


@pytest.fixture(autouse=True)
def python_sigint():
    """Python's own SIGINT handler, whatever an earlier test left (SIG_IGN is respected)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
    RELEASE.set()
    for a in LIVE:
        a.stopped.set()
    for t in threading.enumerate():
        if t.name.startswith("follow-"):
            t.join(timeout=10)
    LIVE.clear()
    RELEASE.clear()


def test_streams_that_end_by_themselves_give_rows_then_totals():
    runner = Runner({"a": Agent(EVENTS[:3], runs_until_stopped=False), "b": Agent(EVENTS[3:5], False)})
    code, text = follow_out(runner)
    assert code == 0 and runner.stops == 0
    rows, _, totals = text.partition("\n\n# totals per peer")
    assert rows.splitlines()[0].split()[:3] == ["Time", "Namespace", "Pod"]
    assert len(rows.splitlines()) == 1 + 5
    assert {r.split()[2] for r in rows.splitlines()[1:]} == {"a", "b"}  # each row tagged with its pod
    assert "# run totals" in totals and totals.count(" for") == 2


def inspect_printing(*args: str) -> Printing:
    opts = options.build(options.flags.parse(["pod/a", "--events", *args]))
    opts.validate()
    return opts.printing


def test_no_headers_drops_the_header_lines_of_the_rows_and_of_the_totals():
    runner = Runner({"a": Agent(EVENTS[:3], runs_until_stopped=False)})
    code, text = follow_out(runner, inspect_printing("--no-headers"))
    lines = text.splitlines()
    rows = [x for x in lines if re.match(r"\d\d:\d\d:\d\d\.\d{3} ", x)]
    assert code == 0 and lines[:3] == rows and len(rows) == 3
    assert "Time" not in text and "# totals" not in text and "Peer" not in text and lines[-1].split()[-1] == "for"


def test_custom_columns_and_jsonpath_read_the_document_through_the_output_function():
    runner = Runner({"a": Agent(EVENTS[:3], False), "b": Agent(EVENTS[3:5], False)})
    code, text = follow_out(runner, inspect_printing("-o", "custom-columns=POD:.target.name,CLOSE:.close",
                                                     "--sort-by=.target.name"))
    lines = text.splitlines()
    assert code == 0 and lines[0].split() == ["POD", "CLOSE"] and len(lines) == 1 + 5
    assert [x.split()[0] for x in lines[1:]] == ["a", "a", "a", "b", "b"]
    runner = Runner({"a": Agent(EVENTS[:3], False)})
    code, text = follow_out(runner, inspect_printing("-o", "jsonpath={.items[*].ended_by}"))
    assert code == 0 and text == "for"


def test_first_ctrl_c_stops_every_stream_and_prints_the_totals_without_half_lines():
    runner = Runner({"a": Agent(EVENTS[:4]), "b": Agent(EVENTS[4:6])})
    sigint_after(0.5)
    started = time.monotonic()
    code, text = follow_out(runner)
    assert code == 0 and runner.stops == 1 and time.monotonic() - started < 20  # not the 30 s wait
    assert text.endswith("\n") and "\x00" not in text
    body = text.splitlines()
    assert len([r for r in body if r[:2].isdigit()]) == 6  # every event row, whole
    run_rows = body[body.index(next(b for b in body if b.startswith("# run totals"))) + 2:]
    assert [r.split()[-1] for r in run_rows] == ["Ctrl-C", "Ctrl-C"]


def test_second_ctrl_c_quits_at_once():
    runner = Runner({"a": Agent(EVENTS[:2], obeys=False)})
    sigint_after(0.4, times=2)
    with pytest.raises(KeyboardInterrupt):
        follow_out(runner)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the follow's handler is gone


def test_a_stream_that_ignores_the_stop_is_given_up_after_the_grace(monkeypatch, capsys):
    monkeypatch.setattr(follow, "FOLLOW_GRACE", 0.5)
    runner = Runner({"a": Agent(EVENTS[:2]), "b": Agent(EVENTS[2:3], obeys=False)})
    sigint_after(0.3)
    code, text = follow_out(runner)
    assert code == 0
    assert "pod/b -n shop: the agent did not end" in capsys.readouterr().err
    ends = [r.split()[-1] for r in text.splitlines()[-2:]]
    assert ends == ["Ctrl-C", "cut"]


def test_count_stops_every_stream_once_reached():
    runner = Runner({"a": Agent(EVENTS[:5]), "b": Agent([])})
    code, text = follow_out(runner, "jsonl", count=3)
    assert code == 0 and runner.stops == 1
    recs = [json.loads(x) for x in text.splitlines()]
    assert len([r for r in recs if r["type"] == "event"]) == 5  # what the agent had sent is kept
    assert all(r["target"]["name"] in ("a", "b") for r in recs)
    assert {r["peer"]["name"] for r in recs if r["type"] == "event" and r["peer"]} <= {"a"}


def test_json_after_ctrl_c_is_one_document():
    runner = Runner({"a": Agent(EVENTS[:2])})
    sigint_after(0.3)
    code, text = follow_out(runner, "json")
    doc = json.loads(text)
    assert code == 0 and doc["interrupted"] is True and doc["items"][0]["ended_by"] == "stdin"
    assert len(doc["items"][0]["events"]) == 2


def test_one_failed_stream_is_reported_after_the_others_totals(capsys):
    runner = Runner({"a": Agent(EVENTS[:2], False), "b": Agent([], False, fails=TargetError("pod b is gone", "x"))})
    out = io.StringIO()
    with pytest.raises(TargetError):
        events_run.follow(runner, [pod("a"), pod("b")], "Q", Printing("table"), None, None, out)
    assert "# run totals" in out.getvalue() and "failed" in out.getvalue()
    assert "error: pod/b -n shop: pod b is gone" in capsys.readouterr().err


def test_every_stream_failed_raises_without_totals():
    runner = Runner({"a": Agent([], False, fails=AgentError("broke", "x"))})
    out = io.StringIO()
    with pytest.raises(AgentError):
        events_run.follow(runner, [pod("a")], "Q", Printing("table"), None, None, out)
    assert out.getvalue() == ""


def test_a_stream_cut_after_the_stop_is_a_warning_not_a_failure(capsys):
    runner = Runner({"a": Agent(EVENTS[:1]), "b": Agent([], fails=AgentError("broke off before its end", "x"))})
    sigint_after(0.3)
    code, _ = follow_out(runner)
    assert code == 0 and "pod/b -n shop: after the stop: broke off" in capsys.readouterr().err


def test_peers_name_addresses_through_the_runs_lookup_and_say_what_was_not_listed(capsys):
    from sockdebug_plugin.peers import Listed, Lookup

    server = {"metadata": {"name": "server", "namespace": "shop"}, "spec": {"nodeName": "n1"},
              "status": {"phase": "Running", "podIP": "10.0.0.7"}}
    peers = events_run.Peers(Lookup(lambda: Listed([server], [], [], ["services: not listed (no permission)"])))
    assert peers.lookup("127.0.0.1") is None  # loopback is the pod itself: the lists are not even waited for
    assert str(peers.lookup("10.0.0.7", 8080)) == "pod/shop/server" and peers.lookup("10.0.0.8") is None
    assert capsys.readouterr().err.count("note: services: not listed") == 1
