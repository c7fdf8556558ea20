"""plugin/gather.py without a cluster: how the node agent's netns/socket stream and the
per-pod agents' answers are attributed to pods, the progress bar, and the node pod spec."""

from __future__ import annotations

import io
from typing import Optional

from sockdebug_agent.schema import NetNs, Socket, Warning
from sockdebug_plugin import gather, profiles
from sockdebug_plugin.errors import InjectError
from sockdebug_plugin.options import AgentOptions
from sockdebug_plugin.runner import Runner, as_argv

NODE = "node-1"


def cid(n: int) -> str:
    return f"{n:064x}"


def pod(name: str, uid: str, containers: dict[str, int], host_network: bool = False, ns: str = "shop",
        running: bool = True) -> dict:
    statuses = [{"name": c, "containerID": f"containerd://{cid(n)}", "restartCount": 0,
                 "state": {"running": {}} if running else {"waiting": {"reason": "CrashLoopBackOff"}}}
                for c, n in containers.items()]
    spec = {"nodeName": NODE, "containers": [{"name": c} for c in containers]}
    if host_network:
        spec["hostNetwork"] = True
    return {"metadata": {"name": name, "namespace": ns, "uid": uid}, "spec": spec,
            "status": {"phase": "Running", "containerStatuses": statuses}}


def sock(port: int, inode: int, owners=(), addr: str = "0.0.0.0") -> Socket:
    procs = [{"pid": pid, "comm": comm, "fd": 3, **({"container_id": c} if c else {})} for pid, comm, c in owners]
    return Socket("inet", "tcp", "LISTEN", 0, 128, addr, port, "0.0.0.0", 0, inode=inode, processes=procs)


def test_attribute_node_splits_pods_host_network_pods_and_the_node():
    web = pod("web", "u-web", {"app": 1, "side": 2})
    hostnet = pod("hostnet", "u-host", {"app": 3}, host_network=True)
    records = [
        NetNs(1, True, ["u-host", "u-agent"], 80),
        sock(10250, 11, [(5, "kubelet", None)], "127.0.0.1"),
        sock(24711, 12, [(40, "python3", cid(3))], "127.0.0.1"),
        Warning("no-pods", "whatever"),
        NetNs(2, False, ["u-web"], 3),
        sock(8080, 21, [(100, "python3", cid(1))]),
        sock(15000, 22, [(101, "envoy", cid(2))]),
        sock(9000, 23, []),
    ]
    got = gather.Collected()
    gather.attribute_node(records, NODE, {"u-web": web, "u-host": hostnet}, set(), got)
    assert sorted(got.sockets) == [("shop", "hostnet"), ("shop", "web")]
    web_socks = got.sockets["shop", "web"]
    assert [(s.local_port, [p.get("container") for p in s.processes]) for s in web_socks] == [
        (8080, ["app"]), (15000, ["side"]), (9000, [])]
    assert [(s.local_port, s.processes[0]["container"]) for s in got.sockets["shop", "hostnet"]] == [(24711, "app")]
    host = got.host_listeners()[NODE]
    assert [(s.local_port, s.processes[0]["comm"]) for s in host] == [(10250, "kubelet")]
    assert got.warnings == ["node/node-1: whatever"]  # agent warnings are passed on


def test_attribute_node_namespace_that_could_not_be_entered():
    web = pod("web", "u-web", {"app": 1})
    got = gather.Collected()
    gather.attribute_node([NetNs(2, False, ["u-web"], 1, error="no process left in it")], NODE,
                             {"u-web": web}, set(), got)
    assert got.sockets == {} and "no process left" in got.uninspected["shop", "web"]


class FakeRunner:
    """What collect_ephemeral asks of the runner: run a query in a container."""

    def __init__(self, answers: dict, fail: Optional[dict] = None):
        self.answers, self.fail, self.asked = answers, fail or {}, []

    def running_agent(self, target):
        return None

    def prepare(self, target):
        pass

    def ready(self, target):
        pass

    def run(self, target, args):
        self.asked.append((target.pod_name, target.container, tuple(as_argv(args))))
        if target.pod_name in self.fail:
            raise InjectError(self.fail[target.pod_name], "hint")
        yield from self.answers.get((target.pod_name, target.container), [])


def test_collect_ephemeral_one_agent_per_pod_and_each_container_of_host_network_pods():
    web = pod("web", "u-web", {"app": 1, "side": 2})
    hostnet = pod("hostnet", "u-host", {"a": 3, "b": 4}, host_network=True)
    broken = pod("broken", "u-b", {"app": 5})
    crashing = pod("crashing", "u-c", {"app": 6}, running=False)
    answers = {
        ("web", "app"): [sock(8080, 21, [(100, "python3", cid(1))]), sock(15000, 22, [])],
        ("hostnet", "a"): [sock(10250, 11, []), sock(24711, 12, [(40, "python3", cid(3))]), sock(24712, 13, [])],
        ("hostnet", "b"): [sock(10250, 11, []), sock(24711, 12, []), sock(24712, 13, [(41, "python3", cid(4))])],
    }
    session = FakeRunner(answers, fail={"broken": "Pod Security admission rejected the agent container"})
    progress = gather.Progress(0, "pods", io.StringIO(), tty=False)
    got = gather.collect_ephemeral(session, [web, hostnet, broken, crashing], progress, parallel=2)
    assert sorted((p, c) for p, c, _ in session.asked) == [("broken", "app"), ("hostnet", "a"), ("hostnet", "b"),
                                                          ("web", "app")]
    assert all(args == ("sockets", "-l", "-t", "-u", "-p") for _, _, args in session.asked)
    assert [s.local_port for s in got.sockets["shop", "web"]] == [8080, 15000]
    assert sorted((s.local_port, s.processes[0]["container"]) for s in got.sockets["shop", "hostnet"]) == [
        (24711, "a"), (24712, "b")]
    assert [s.local_port for s in got.host_listeners()[NODE]] == [10250]
    assert got.uninspected["shop", "broken"] == "Pod Security admission rejected the agent container"
    assert got.uninspected["shop", "crashing"] == "no steadily running container (app: CrashLoopBackOff, 0 restarts)"
    assert progress.done == 3 and progress.total == 3


def test_progress_bar_only_on_a_terminal():
    tty = io.StringIO()
    p = gather.Progress(4, "pods", tty, tty=True)
    p.tick()
    p.note("hello")
    p.note("hello")  # said once
    p.tick()
    p.close()
    text = tty.getvalue()
    assert "\r[#######.......................] 1/4 pods" in text and text.count("hello") == 1
    assert text.endswith("\r\x1b[K")
    plain = io.StringIO()
    p = gather.Progress(4, "pods", plain, tty=False)
    p.tick()
    p.note("hello")
    p.close()
    assert plain.getvalue() == "hello\n"


def test_node_agent_pod_spec():
    spec = profiles.node_pod("x", NODE, "img:1", "Never", ["sockdebug-agent", "pods", "-tul", "-p"],
                             profiles.for_node("auto"), "sweep")["spec"]
    assert spec["hostPID"] and spec["hostNetwork"] and spec["nodeName"] == NODE and spec["restartPolicy"] == "Never"
    ctx = spec["containers"][0]["securityContext"]
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_READ_SEARCH", "SYS_ADMIN"]}
    assert "privileged" not in ctx


def test_agent_targets_prefer_a_running_agent_then_a_steady_default():
    img, other = Runner(None, AgentOptions("img")), Runner(None, AgentOptions("other-image"))
    p = pod("dup", "u", {"a": 1, "b": 2})
    p["status"]["containerStatuses"][0].update(restartCount=3, lastState={"terminated": {"exitCode": 1}})
    assert gather.agent_targets(p, img) == ["b"]  # a is flapping: it runs between crashes
    p["status"]["containerStatuses"][0].update(restartCount=0, lastState={})
    assert gather.agent_targets(p, img) == ["a"]  # the default container
    p["spec"]["ephemeralContainers"] = [{"name": "sockdebug-abc", "image": "img", "targetContainerName": "b",
                                         "command": ["sockdebug-agent", "serve"]}]
    p["status"]["ephemeralContainerStatuses"] = [{"name": "sockdebug-abc", "state": {"running": {}}}]
    assert gather.agent_targets(p, img) == ["b"]  # reuse beats the default
    assert gather.agent_targets(p, other) == ["a"]
    host = pod("h", "u2", {"a": 3, "b": 4}, host_network=True)
    assert gather.agent_targets(host, img) == ["a", "b"]
    host["status"]["containerStatuses"][1].update(restartCount=2, lastState={"terminated": {"exitCode": 1}})
    assert gather.agent_targets(host, img) == ["a"]  # b only runs between crashes
    lone = pod("lone", "u3", {"a": 5})
    lone["status"]["containerStatuses"][0].update(restartCount=5, lastState={"terminated": {"exitCode": 1}})
    assert gather.agent_targets(lone, img) == []
    assert gather.why_not_running(lone) == ("no steadily running container (a: Running between restarts, "
                                                "5 restarts)")


def test_ctrl_c_does_not_wait_for_pods_still_waiting_for_their_agents():
    import os
    import signal
    import threading
    import time

    import pytest

    release = threading.Event()

    class Waiting(FakeRunner):
        def ready(self, target):
            release.wait(30)

    pods = [pod(f"p{i}", f"u{i}", {"app": i}) for i in range(5)]
    # Python's own Ctrl-C, whatever handler an in-process agent run left behind
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C while they all wait
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            gather.collect_ephemeral(Waiting({}), pods, gather.Progress(0, "pods", io.StringIO(), tty=False))
        assert time.monotonic() - started < 5
    finally:
        release.set()
        signal.signal(signal.SIGINT, before)
