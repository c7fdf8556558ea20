"""The agent runner on a real cluster: warm queries through kubectl without the Python
client, their fallback when the agent has exited, --profile on node targets, and node
pods that never survive a run, even when it is interrupted (Ctrl-C)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from e2e_util import IMAGE, PLUGIN, PULL, apply, kubectl, plugin, require_plugin_and_cluster
from test_e2e_plugin import app_pod, ephemeral_names, listeners, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ns():
    require_plugin_and_cluster()
    name = f"sde2e-run-{os.urandom(3).hex()}"
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    for _ in range(60):  # pods are Forbidden until the default ServiceAccount exists
        if kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0:
            break
        time.sleep(0.5)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def api(ns):
    apply(app_pod("api", ns, ["--listen", "127.0.0.1:8080", "--listen", "0.0.0.0:9090"],
                  sidecar=["--listen", "0.0.0.0:15000"]))
    wait_ready(ns, name="api")
    return "api"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "sockdebug"


def no_client(tmp_path) -> dict:
    """An environment where importing the Kubernetes client fails, and where every
    kubectl the plugin starts is logged."""
    fake = tmp_path / "noclient" / "kubernetes"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('the warm path must not import the client')\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = shutil.which("kubectl")
    (bindir / "kubectl").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {tmp_path}/kubectl.log\n"
                                    f"exec {real} \"$@\"\n")
    (bindir / "kubectl").chmod(0o755)
    return {**os.environ, "PYTHONPATH": str(tmp_path / "noclient"), "PATH": f"{bindir}:{os.environ['PATH']}"}


def run_plugin(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([PLUGIN, *args, "--image", IMAGE, "--image-pull-policy", PULL], text=True,
                          capture_output=True, env=env, timeout=180)


def test_a_warm_query_reads_no_api_and_imports_no_client(ns, api, cache, tmp_path):
    cold = plugin("pod/api", "-n", ns, "--listening", "-o", "json")
    assert cold.returncode == 0, cold.stderr
    assert (cache / "agents.json").stat().st_mode & 0o777 == 0o600
    env = no_client(tmp_path)
    warm = run_plugin("pod/api", "-n", ns, "--listening", "-o", "json", env=env)
    assert warm.returncode == 0, warm.stderr
    assert warm.stderr == ""
    assert listeners(json.loads(warm.stdout)) == listeners(json.loads(cold.stdout))
    found = listeners(json.loads(warm.stdout))
    assert found[("0.0.0.0", 15000)]["processes"][0]["container"] == "sidecar"
    execs = (tmp_path / "kubectl.log").read_text().splitlines()
    assert len(execs) == 2 and all(f"-n {ns} exec api -c sockdebug-" in e for e in execs)


def test_a_warm_query_after_the_agent_exited_adds_a_new_one(ns, api, cache):
    assert plugin("pod/api", "-n", ns, "--listening").returncode == 0
    before = ephemeral_names(ns, api)
    pod = json.loads(kubectl("-n", ns, "get", "pod", api, "-o", "json").stdout)
    app_agents = [c["name"] for c in pod["spec"]["ephemeralContainers"] if c["targetContainerName"] == "app"]
    for agent in app_agents:  # end the agents of `app` as an idle timeout would (serve exits on SIGTERM);
        # only `sockdebug-agent serve`: the app's own process shares this PID namespace
        kubectl("-n", ns, "exec", api, "-c", agent, "--", "python3", "-c",
                "import os, signal\n"
                "for p in filter(str.isdigit, os.listdir('/proc')):\n"
                "    try:\n"
                "        if b'sockdebug-agent\\0serve' in open(f'/proc/{p}/cmdline', 'rb').read():\n"
                "            os.kill(int(p), signal.SIGTERM)\n"
                "    except OSError:\n"
                "        pass\n", check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        statuses = json.loads(kubectl("-n", ns, "get", "pod", api, "-o", "json").stdout)["status"]
        running = {s["name"] for s in statuses.get("ephemeralContainerStatuses", []) if "running" in s["state"]}
        if not running & set(app_agents):
            break
        time.sleep(1)
    proc = plugin("pod/api", "-n", ns, "--listening", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert "adding ephemeral container" in proc.stderr
    assert len(ephemeral_names(ns, api)) == len(before) + 1
    assert listeners(json.loads(proc.stdout))[("0.0.0.0", 9090)]["processes"][0]["container"] == "app"


def node_name() -> str:
    return kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout.strip()


def leftover_node_pods(ns: str) -> list[str]:
    return kubectl("-n", ns, "get", "pods", "-l", "app.kubernetes.io/name=sockdebug-node-agent", "-o",
                   "name").stdout.split()


def test_profile_shapes_node_pods(ns):
    node = node_name()
    full = plugin(f"node/{node}", "-n", ns, "-t", "--listening", "-o", "json")
    assert full.returncode == 0, full.stderr
    owned = [s for s in listeners(json.loads(full.stdout)).values() if s["processes"]]
    assert owned, "the general node pod sees the node daemons' processes"
    weak = plugin(f"node/{node}", "-n", ns, "-t", "--listening", "-o", "json", "--profile", "restricted")
    assert weak.returncode == 0, weak.stderr
    assert "the restricted profile runs the node agent as nobody" in weak.stderr
    assert not any(s["processes"] for s in listeners(json.loads(weak.stdout)).values())
    assert leftover_node_pods(ns) == []


@pytest.mark.parametrize("command", [["node/{node}", "-t", "--listening"], ["sweep", "--via", "node"]])
def test_ctrl_c_leaves_no_node_pod(ns, api, command):
    if command[0] == "sweep" and kubectl("-n", "sockdebug-system", "get", "ds", "sockdebug-node-agent",
                                         check=False).returncode == 0:
        pytest.skip("the node-agent DaemonSet is installed: sweep --via node creates no node pod")
    args = [a.format(node=node_name()) for a in command]
    proc = subprocess.Popen([PLUGIN, *args, "-n", ns, "--image", IMAGE, "--image-pull-policy", PULL],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not leftover_node_pods(ns) and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    for _ in range(30):  # the delete was sent; the pod may take a moment to go
        if not leftover_node_pods(ns):
            break
        time.sleep(1)
    assert leftover_node_pods(ns) == [], err
