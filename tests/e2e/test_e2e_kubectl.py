"""kubectl's output conventions and the agents' lifecycle, end to end (issue 13): -o
jsonpath and custom-columns, --sort-by, --no-headers on a two-container pod; `agents`
lists what the run started; `stop` ends it (Terminated; the next query, warm cache or
not, starts a new agent); --idle-timeout; node pods never outlive a run, even one
interrupted with Ctrl-C (SIGINT to the plugin) before, while and after its node pod
starts, for node/NAME and for sweep --via node."""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

import pytest
from e2e_util import IMAGE, PLUGIN, PULL, TESTAPP, apply, kubectl, require_plugin_and_cluster

pytestmark = pytest.mark.e2e

NODE_PODS = "app.kubernetes.io/name=sockdebug-node-agent"
AGENT = ("--image", IMAGE, "--image-pull-policy", PULL)
PORTS = {8080: "app", 9090: "app", 15000: "sidecar"}  # what the pod below listens on, and where


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def run(*args: str, cache: Optional[str] = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """kubectl-sockdebug with its own cache folder (its warm memory of agents)."""
    env = dict(os.environ)
    if cache:
        env["XDG_CACHE_HOME"] = cache
    proc = subprocess.run([PLUGIN, *args], text=True, capture_output=True, env=env, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def ok(*args: str, **kw) -> str:
    proc = run(*args, **kw)
    assert proc.returncode == 0, f"{args} -> {proc.returncode}\n{proc.stderr}"
    return proc.stdout


def pod_json(ns: str, name: str = "api") -> dict:
    return json.loads(kubectl("-n", ns, "get", "pod", name, "-o", "json").stdout)


def agent_states(ns: str) -> dict[str, str]:
    """agent container -> its state word, from the pod's status."""
    return {s["name"]: next(iter(s.get("state") or {"unknown": 0}))
            for s in pod_json(ns)["status"].get("ephemeralContainerStatuses") or []}


def node_pods(ns: str) -> list[dict]:
    return json.loads(kubectl("-n", ns, "get", "pods", "-l", NODE_PODS, "-o", "json").stdout)["items"]


@pytest.fixture(scope="module")
def ns(cache_dir):
    require_plugin_and_cluster()
    name = f"kubectl-e2e-{secrets.token_hex(3)}"
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    for _ in range(120):
        if kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0:
            break
        time.sleep(0.5)
    ctx = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api", "namespace": name, "labels": {"app": "api"}},
           "spec": {"terminationGracePeriodSeconds": 0,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
                    "containers": [
                        {"name": "app", "image": TESTAPP, "imagePullPolicy": PULL, "securityContext": ctx,
                         "args": ["--listen", "127.0.0.1:8080", "--listen", "0.0.0.0:9090",
                                  "--connect", "127.0.0.1:9090"]},
                        {"name": "sidecar", "image": TESTAPP, "imagePullPolicy": PULL, "securityContext": ctx,
                         "args": ["--listen", "0.0.0.0:15000"]}]}})
    kubectl("-n", name, "wait", "--for=condition=Ready", "pod/api", "--timeout=180s", timeout=240)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


# --- output conventions --------------------------------------------------------------------------

def test_jsonpath_prints_exactly_the_listening_ports(ns, cache_dir):
    out = ok("pod/api", "-n", ns, "--listening", *AGENT, "-o", "jsonpath={.items[*].sockets[*].local_port}",
             cache=cache_dir)
    assert sorted(int(p) for p in out.split(" ")) == sorted(PORTS)  # each exactly once, nothing else
    assert not out.endswith("\n")  # as kubectl: no newline added


def test_custom_columns_sorted_by_port(ns, cache_dir):
    out = ok("pod/api", "-n", ns, "--listening", *AGENT, "-o",
             "custom-columns=PORT:.local_port,CONTAINER:.processes[0].container", "--sort-by=.local_port",
             cache=cache_dir)
    assert out == "PORT    CONTAINER\n8080    app\n9090    app\n15000   sidecar\n"
    bare = ok("pod/api", "-n", ns, "--listening", *AGENT, "-o", "custom-columns=PORT:.local_port",
              "--sort-by=.local_port", "--no-headers", cache=cache_dir)
    assert bare == "8080\n9090\n15000\n"


def test_no_headers_on_the_table(ns, cache_dir):
    table = ok("pod/api", "-n", ns, "--listening", *AGENT, cache=cache_dir).splitlines()
    bare = ok("pod/api", "-n", ns, "--listening", *AGENT, "--no-headers", "--sort-by", ".local_port",
              cache=cache_dir).splitlines()
    assert table[0].startswith("Netid") and len(bare) == len(table) - 1 == len(PORTS)
    assert [line.split()[4].rsplit(":", 1)[1] for line in bare] == [str(p) for p in sorted(PORTS)]


def test_a_bad_template_is_refused_before_any_api_call(ns):
    proc = run("pod/api", "-n", ns, *AGENT, "-o", "jsonpath={.items[*].sockets[?(@.state==}")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: error parsing jsonpath") and "at character" in proc.stderr


# --- agents and stop -------------------------------------------------------------------------------

def test_agents_lists_what_the_run_started_and_stop_ends_them(ns, cache_dir, tmp_path):
    ok("pod/api", "-n", ns, "--listening", *AGENT, cache=cache_dir)  # both containers' agents run
    spec = {c["name"]: c for c in pod_json(ns)["spec"]["ephemeralContainers"]}
    running = {name for name, state in agent_states(ns).items() if state == "running"}
    assert len(running) == 2 and {spec[n]["targetContainerName"] for n in running} == {"app", "sidecar"}

    doc = json.loads(ok("agents", "-A", "-o", "json"))
    mine = {r["container"]: r for r in doc["items"] if r["namespace"] == ns}
    assert set(mine) == set(spec)
    for name in running:
        row = mine[name]
        assert row["state"] == "Running" and row["mode"] == "serve" and row["image"] == IMAGE
        assert row["target"] == spec[name]["targetContainerName"] and row["idle_timeout_s"] == 900
        assert 0 < row["idle_left_min_s"] <= 900 == row["idle_left_max_s"]
    table = ok("agents", "-A").splitlines()
    assert table[0].split() == ["NAMESPACE", "POD", "CONTAINER", "TARGET", "PROFILE", "STATE", "AGE", "IDLE-LEFT"]
    assert sum(1 for line in table if line.split()[0] == ns and "Running" in line) == 2

    # stop from "another machine" (another cache folder): this cache still remembers the agents
    stopped = ok("stop", "pod/api", "-n", ns, cache=str(tmp_path))
    assert sorted(stopped.splitlines()) == sorted(f"pod/api container {n} stopped" for n in running)
    states = agent_states(ns)
    assert all(states[n] == "terminated" for n in running)
    assert set(c["name"] for c in pod_json(ns)["spec"]["ephemeralContainers"]) == set(spec)  # entries stay
    assert ok("stop", "pod/api", "-n", ns) == ""  # nothing left to stop: exit 0

    # the next query, through the stale warm memory, starts new agents and answers
    out = ok("pod/api", "-n", ns, "--listening", *AGENT, "-o", "jsonpath={.items[*].sockets[*].local_port}",
             cache=cache_dir)
    assert sorted(int(p) for p in out.split()) == sorted(PORTS)
    fresh = {n for n, state in agent_states(ns).items() if state == "running"}
    assert len(fresh) == 2 and not fresh & running

    # stop from this machine: it forgets them too, so the next query goes the ordinary way
    ok("stop", "--all", "-n", ns, cache=cache_dir)
    remembered = os.path.join(cache_dir, "sockdebug", "agents.json")
    assert not os.path.exists(remembered) or f'"namespace":"{ns}"' not in Path(remembered).read_text()


def test_idle_timeout_is_recorded_and_kept(ns, cache_dir):
    ok("stop", "--all", "-n", ns, cache=cache_dir)
    ok("pod/api", "-n", ns, "-c", "sidecar", "--listening", *AGENT, "--idle-timeout", "8", cache=cache_dir)
    rows = json.loads(ok("agents", "-n", ns, "-o", "json"))["items"]
    new = [r for r in rows if r["state"] == "Running"]
    assert new and all(r["idle_timeout_s"] == 8 and r["command"][-1] == "8" for r in new)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and any(agent_states(ns)[r["container"]] == "running" for r in new):
        time.sleep(1)
    for r in new:  # it ended by itself, idle, cleanly
        status = next(s for s in pod_json(ns)["status"]["ephemeralContainerStatuses"] if s["name"] == r["container"])
        assert status["state"]["terminated"]["exitCode"] == 0, status


# --- node pods never outlive a run ------------------------------------------------------------------

def node_name(ns: str) -> str:
    return pod_json(ns)["spec"]["nodeName"]


def interrupt(args: list[str], ns: str, when: str, cache: str) -> tuple[int, str, str]:
    """Run the plugin, SIGINT it at ``when`` (``note``: as it says it creates the pod;
    ``pending``: once the pod exists and its agent has not started; ``running``: once the
    agent runs), return (exit code, what was seen at the signal, stderr).  The pod's
    states come from a watch, so the short windows are caught as they open."""
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    watch = subprocess.Popen(["kubectl", "-n", ns, "get", "pods", "-l", NODE_PODS, "--watch", "-o",
                              "jsonpath={.metadata.name} {.status.phase} {.status.containerStatuses[0].state}{'\\n'}"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proc = subprocess.Popen([PLUGIN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    seen = "exited first"
    try:
        assert proc.stderr is not None and watch.stdout is not None
        if when == "note":
            for line in proc.stderr:
                if "creating pod" in line or "short-lived pod" in line:
                    seen = "note"
                    break
        else:
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=lambda: [lines.put(line) for line in watch.stdout], daemon=True).start()
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:  # the run may end first
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if (when == "pending" and "Pending" in line) or (when == "running" and '"running"' in line):
                    seen = line.strip()
                    break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        for p in (proc, watch):
            if p.poll() is None:
                p.kill()
                p.wait()
    return proc.returncode, seen, err


def daemonset_present() -> bool:
    return kubectl("-n", "sockdebug-system", "get", "ds", "sockdebug-node-agent", check=False).returncode == 0


@pytest.mark.parametrize("watch", [False, True])
@pytest.mark.parametrize("when", ["note", "pending", "running"])
def test_ctrl_c_during_node_leaves_no_node_pod(ns, cache_dir, when, watch):
    code, seen, err = interrupt(["node/" + node_name(ns), "-n", ns, "--listening", *AGENT,
                                 *(["--watch=1"] if watch else [])], ns, when, cache_dir)
    assert code == (0 if watch or seen == "exited first" else 130), err  # --watch ends on Ctrl-C with 0
    assert "Traceback" not in err
    print(f"signal at: {seen}; exit {code}")
    assert node_pods(ns) == [], f"a node pod survived (signal at: {seen})\n{err}"


@pytest.mark.parametrize("when", ["note", "pending", "running"])
def test_ctrl_c_during_sweep_via_node_leaves_no_node_pod(ns, cache_dir, when):
    if daemonset_present():
        pytest.skip("the node-agent DaemonSet is installed: sweep --via node execs into it, no pod is made")
    code, seen, err = interrupt(["sweep", "-n", ns, "--via", "node", *AGENT], ns, when, cache_dir)
    assert "Traceback" not in err
    assert code in (0, 130), err  # 0: it finished before the signal came
    print(f"signal at: {seen}; exit {code}")
    assert node_pods(ns) == [], f"a node pod survived (signal at: {seen})\n{err}"


def test_a_finished_node_run_leaves_no_node_pod(ns, cache_dir):
    ok("node/" + node_name(ns), "-n", ns, "--listening", *AGENT, cache=cache_dir)
    assert node_pods(ns) == []
