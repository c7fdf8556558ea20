"""The runner's side of a follow stream (``events``), against the API double: the exec keeps
stdin open and the agent is told ``--stdin-stop``; ``Runner.stop`` writes to every live
stream's stdin and gracefully deletes node pods; a stream started after the stop is stopped
at once; ``--for`` lengthens the exec's deadline; two queries of one container at once
add one agent, not two."""

from __future__ import annotations

import threading
import time

from kube_double import RECORDED, ApiDouble, Exec
from sockdebug_plugin import lifecycle
from sockdebug_plugin.options import AgentOptions
from sockdebug_plugin.runner import FOLLOW_GRACE, Runner, stream_seconds
from sockdebug_plugin.targets import NodeTarget, Target

IMAGE = "sockdebug-agent:core"
HELLO = RECORDED["exec_sockets"]["stdout"].splitlines()[0]
END = '{"type":"end","records":{},"elapsed_ms":1.0,"exit_code":0}'


class Held(Exec):
    """An exec whose agent streams until a byte arrives on its stdin."""

    def __init__(self, command: list[str], stdin: bool):
        super().__init__(b"")
        self.command, self.stdin = command, stdin
        self.stopped = threading.Event()
        self.deadline = 0.0

    def chunks(self, deadline: float):
        self.deadline = deadline
        yield (HELLO + "\n").encode()
        self.stopped.wait(10)
        yield (END + "\n").encode()

    def stop(self) -> None:
        self.stopped.set()


class Double(ApiDouble):
    def __init__(self):
        super().__init__()
        self.execs: list[Held] = []

    def exec(self, path, query):
        command, stdin = [v for k, v in query if k == "command"], dict(query)["stdin"] == "true"
        if "events" not in command:
            assert not stdin
            return super().exec(path, query)
        self.calls.append(("EXEC", path))
        held = Held(command, stdin)
        self.execs.append(held)
        return held


def setup() -> tuple[Double, Runner, Target]:
    api = Double()
    api.add_pod()
    return api, Runner(api.kube(), AgentOptions(IMAGE, timeout=5.0), note=lambda _: None), \
        Target("shop", api.kube().get_pod("shop", "api"), "app")


def drain(runner: Runner, t, argv, into: list) -> threading.Thread:
    th = threading.Thread(target=lambda: into.extend(runner.run(t, argv)), daemon=True)
    th.start()
    return th


def wait_for(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end
        time.sleep(0.01)


def test_stop_reaches_every_live_stream_through_stdin():
    api, runner, t = setup()
    got: list = []
    threads = [drain(runner, t, ["events", "-t", "--for", "30s"], got) for _ in range(2)]
    wait_for(lambda: len(api.execs) == 2)
    assert len(api.agents()) == 1  # two queries at once: one agent added
    for held in api.execs:
        assert held.stdin and held.command[:3] == ["sockdebug-agent", "events", "--stdin-stop"]
        assert held.command[3:] == ["-t", "--for", "30s"]
        assert held.deadline - time.monotonic() > 30  # --for and the grace on top of --timeout
    runner.stop()
    for th in threads:
        th.join(5)
    assert not any(th.is_alive() for th in threads)
    assert [r.type for r in got].count("end") == 2


def test_a_stream_started_after_the_stop_is_stopped_at_once():
    api, runner, t = setup()
    runner.stop()
    got: list = []
    drain(runner, t, ["events"], got).join(5)
    assert api.execs[0].stopped.is_set() and got[-1].type == "end"


def test_ordinary_queries_keep_stdin_closed_and_their_deadline():
    api, runner, t = setup()
    assert [r.type for r in runner.run(t, ["sockets", "-tl"])][-1] == "end" and api.execs == []
    assert stream_seconds(["sockets", "-tl"]) == 0.0
    assert stream_seconds(["events", "--for", "2m"]) == 120 + FOLLOW_GRACE
    assert stream_seconds(["events", "--", "--for", "2m"]) == float("inf")  # filter words, not options
    assert stream_seconds(["events"]) == float("inf")


def test_stop_deletes_node_pods_gracefully_so_their_agents_end_their_streams():
    api = ApiDouble()
    kube = api.kube()
    graces: list = []
    real = kube.delete_pod

    def delete(ns, name, grace=0):
        graces.append(grace)
        real(ns, name, grace)
    kube.delete_pod = delete  # type: ignore[method-assign]
    runner = Runner(kube, AgentOptions(IMAGE, timeout=5.0), note=lambda _: None)
    stream = runner.run(NodeTarget("n1"), ["events", "--for", "1s"])
    assert next(stream).type == "hello"  # the node pod is running and its logs are being read
    runner.stop()
    assert graces == [lifecycle.NodePods.STOP_GRACE]
    assert [r.type for r in stream][-1] == "end"
    assert graces == [lifecycle.NodePods.STOP_GRACE, 0]  # and deleted for good once its stream ended
    command = api.created[0]["spec"]["containers"][0]["command"]
    assert "--stdin-stop" not in command  # a pod's stdin is empty: the flag would end it at once


def test_kubectl_exec_keeps_stdin_for_a_follow_and_stop_reaches_it(tmp_path):
    """The warm door (kubectl exec) can follow too: ``-i``, stdin a pipe, a session of its
    own (the terminal's Ctrl-C is the plugin's), and ``stop`` writes the byte."""
    import sys

    from sockdebug_plugin.kubectl import KubectlExec

    fake = tmp_path / "kubectl"
    fake.write_text(f"#!{sys.executable}\n"
                    "import os, sys\n"
                    "print(' '.join(sys.argv[1:]), os.getsid(0) == os.getpid(), flush=True)\n"
                    "sys.stdin.readline()\n"
                    "print('stopped', flush=True)\n")
    fake.chmod(0o755)
    channel = KubectlExec(str(fake)).exec("shop", "api", "agent", ["sockdebug-agent", "events"], stdin=True)
    chunks = channel.chunks(time.monotonic() + 10)
    first = b""
    while not first.endswith(b"\n"):
        first += next(chunks)
    assert first.decode() == "-n shop exec -i api -c agent -- sockdebug-agent events True\n", channel.stderr
    channel.stop()
    assert b"stopped" in b"".join(chunks) and channel.returncode == 0
    channel.close()
