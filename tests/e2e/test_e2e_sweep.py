"""``kubectl sockdebug sweep`` end to end (issue 7): 25 pods in three namespaces, seeded with
every conflict kind plus clean pods, swept with both ``--via`` modes.

Network rule: the pods only listen (nothing connects to them); the hostNetwork pods bind
127.0.0.1 of the node only, on unusual ports checked to be free first, and the node daemon
port is only *declared*, never bound.
"""

from __future__ import annotations

import json
import random
import secrets
import socket
import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from e2e_util import IMAGE, PULL, TESTAPP, apply, kubectl, plugin, require_plugin_and_cluster, wait_for

pytestmark = pytest.mark.e2e

DAEMON_PORT = 10259  # kube-scheduler's: declared by a test pod, never bound
NODEPORT_RANGE_PORT = 31999


def sweep(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return plugin("sweep", *args, timeout=timeout)



def free_local_ports(count: int, low: int = 21000, high: int = 29000) -> list[int]:
    """Unusual ports nothing on this machine uses (on the local cluster the node is this
    machine: hostNetwork pods bind its loopback)."""
    out: list[int] = []
    for port in random.sample(range(low, high), 200):
        if len(out) == count:
            break
        if _free(port):
            out.append(port)
    return out


def _free(port: int) -> bool:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# --- the seeded cluster ----------------------------------------------------------------

class Seed:
    def __init__(self, run: str, ports: list[int]):
        self.run = run
        self.a, self.b, self.c = (f"sde2e-sweep-{x}-{run}" for x in "abc")
        self.p_hostnet, self.p_hostport = ports
        self.node: Optional[str] = None

    def labels(self, app: str, **extra: str) -> dict:
        return {"app": app, "sockdebug-e2e": self.run, **extra}


def container(name: str, args: list[str], ports: tuple = ()) -> dict:
    c: dict[str, Any] = {"name": name, "image": TESTAPP, "imagePullPolicy": PULL, "args": args,
                         "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    if ports:
        c["ports"] = [p if isinstance(p, dict) else {"containerPort": p} for p in ports]
    return c


def pod(seed: Seed, ns: str, name: str, *containers: dict, host_network: bool = False, app: str = "",
        **labels: str) -> dict:
    spec: dict[str, Any] = {"containers": list(containers), "terminationGracePeriodSeconds": 0,
                            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000}}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": seed.labels(app or name, **labels)},
            "spec": spec}


def service(ns: str, name: str, selector: dict, *ports: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ports": list(ports)}}


def http(port: int = 8080, name: str = "http") -> dict:
    return {"name": name, "containerPort": port}


def seeded_objects(s: Seed) -> tuple[list[dict], list[dict]]:
    """(objects created first, objects created once those run)."""
    a, b, c = s.a, s.b, s.c
    first = [
        # namespace a: Services and declarations
        pod(s, a, "orphan", container("app", ["--listen", "0.0.0.0:8080"], (http(),))),
        service(a, "orphan", {"app": "orphan"}, {"port": 80, "targetPort": 8081}),
        pod(s, a, "loopback", container("app", ["--listen", "127.0.0.1:8080"], (http(),))),
        service(a, "loopback", {"app": "loopback"}, {"port": 80, "targetPort": "http"}),
        pod(s, a, "web-v1", container("app", ["--listen", "0.0.0.0:8080"], (http(8080, "web"),)), app="web"),
        pod(s, a, "web-v2", container("app", ["--listen", "0.0.0.0:8081"], (http(8081, "web"),)), app="web"),
        service(a, "web", {"app": "web"}, {"port": 80, "targetPort": "web"}),
        pod(s, a, "declared", container("app", ["--listen", "0.0.0.0:8080"], (http(), http(9000, "admin")))),
        pod(s, a, "undeclared", container("app", ["--listen", "0.0.0.0:8080", "--listen", "0.0.0.0:7000"],
                                          (http(),))),
        *[pod(s, a, f"clean-a-{i}", container("app", ["--listen", "0.0.0.0:8080", "--listen", "127.0.0.1:9901"],
                                              (http(),)), app="clean-a") for i in (1, 2)],
        service(a, "clean-a", {"app": "clean-a"}, {"port": 80, "targetPort": "http"}),
        # namespace b: containers of one pod, hostNetwork and host ports, node daemons
        pod(s, b, "dup", container("a", ["--listen", "0.0.0.0:8080"], (8080,)),
            container("b", ["--listen", "0.0.0.0:8080"], (8080,))),
        pod(s, b, "dup-undeclared", container("a", ["--listen", "0.0.0.0:8090"], (8090,)),
            container("b", ["--listen", "0.0.0.0:8090"])),
        pod(s, b, "hostnet-a", container("app", ["--listen", f"127.0.0.1:{s.p_hostnet}"], (s.p_hostnet,)),
            host_network=True),
        pod(s, b, "hostport-a", container("app", ["--listen", f"127.0.0.1:{s.p_hostport}"], (s.p_hostport,)),
            host_network=True),
        pod(s, b, "daemon-port", container("app", ["--connect-timeout", "1"], (DAEMON_PORT,)), host_network=True),
        pod(s, b, "nodeport", container("app", ["--listen", f"127.0.0.1:{NODEPORT_RANGE_PORT}"],
                                        (NODEPORT_RANGE_PORT,)), host_network=True),
        pod(s, b, "clean-b", container("app", ["--listen", "0.0.0.0:8080"], (http(),))),
        # namespace c: clean pods only
        *[pod(s, c, f"clean-web-{i}", container("app", ["--listen", "0.0.0.0:8080", "--listen", "127.0.0.1:9901"],
                                                (http(),)), app="clean-web") for i in range(6)],
        service(c, "clean-web", {"app": "clean-web"}, {"port": 80, "targetPort": "http"}),
        pod(s, c, "clean-udp", container("app", ["--udp", "0.0.0.0:5353"],
                                         ({"name": "dns", "containerPort": 5353, "protocol": "UDP"},))),
        service(c, "clean-udp", {"app": "clean-udp"}, {"port": 53, "targetPort": "dns", "protocol": "UDP"}),
        pod(s, c, "clean-sidecar", container("app", ["--listen", "0.0.0.0:8080"], (http(),)),
            container("sidecar", ["--listen", "0.0.0.0:15000"], (http(15000, "admin"),))),
        service(c, "clean-sidecar", {"app": "clean-sidecar"}, {"port": 80, "targetPort": 8080}),
    ]
    then = [  # each needs hostnet-a / hostport-a to hold its port first
        pod(s, b, "hostnet-c", container("app", ["--listen", f"127.0.0.1:{s.p_hostnet}"]), host_network=True),
        pod(s, b, "hostport-b", container("app", ["--listen", f"127.0.0.1:{s.p_hostport}"], (s.p_hostport,)),
            host_network=True),
    ]
    return first, then


def get(ns: str, name: str) -> dict:
    return json.loads(kubectl("-n", ns, "get", "pod", name, "-o", "json").stdout)


def statuses(p: dict) -> dict[str, dict]:
    return {s["name"]: s for s in p.get("status", {}).get("containerStatuses") or []}


def crash_looping_twice(ns: str, name: str) -> bool:
    """One container restarted at least twice with an error (CrashLoopBackOff)."""
    return any(s.get("restartCount", 0) >= 2 and "running" not in (s.get("state") or {})
               for s in statuses(get(ns, name)).values())


@pytest.fixture(scope="module")
def seeded():
    require_plugin_and_cluster()
    ports = free_local_ports(2)
    wait_for(f"port {NODEPORT_RANGE_PORT} to be free on this machine (a previous run's pod?)",
             lambda: _free(NODEPORT_RANGE_PORT), 90)
    s = Seed(secrets.token_hex(3), ports)
    for ns in (s.a, s.b, s.c):
        apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"sockdebug-e2e": s.run}}})
    try:
        for ns in (s.a, s.b, s.c):
            wait_for(f"serviceaccount in {ns}",
                     lambda ns=ns: kubectl("-n", ns, "get", "sa", "default", check=False).returncode == 0, 60)
        first, then = seeded_objects(s)
        apply(*first)
        for ns in (s.a, s.c):
            kubectl("-n", ns, "wait", "--for=condition=Ready", "pods", "--all", "--timeout=240s", timeout=300)
        for name in ("hostnet-a", "hostport-a", "daemon-port", "nodeport", "clean-b"):
            kubectl("-n", s.b, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=240s", timeout=300)
        s.node = get(s.b, "hostnet-a")["spec"]["nodeName"]
        apply(*then)
        for name in ("dup", "dup-undeclared", "hostnet-c"):
            wait_for(f"{name} to crash-loop", lambda name=name: crash_looping_twice(s.b, name), 240)
        wait_for("hostport-b to be unschedulable", lambda: any(
            "free ports" in (c.get("message") or "") for c in get(s.b, "hostport-b")["status"].get("conditions") or []),
            120)
        yield s
    finally:  # waited for: the hostNetwork pods hold ports on the node until they are gone
        kubectl("delete", "namespace", s.a, s.b, s.c, "--wait=true", "--timeout=180s", check=False, timeout=240)


def run_sweep(seed: Seed, via: str, *extra: str) -> tuple[dict, subprocess.CompletedProcess]:
    proc = sweep("-A", "-l", f"sockdebug-e2e={seed.run}", "--via", via, "-o", "json", *extra)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout), proc


@pytest.fixture(scope="module")
def swept(seeded):
    return {via: run_sweep(seeded, via) for via in ("ephemeral", "node")}


def names(f: dict, kind: str = "Pod") -> set[tuple[str, str]]:
    return {(o.get("namespace", ""), o["name"]) for o in f["objects"] if o["kind"] == kind}


def expected(s: Seed) -> list[tuple[str, str, set, set]]:
    """(id, severity, pods, services) of every seeded conflict."""
    return [
        ("service-port-not-listening", "critical", {(s.a, "orphan")}, {(s.a, "orphan")}),
        ("loopback-only-listener", "critical", {(s.a, "loopback")}, {(s.a, "loopback")}),
        ("named-port-mismatch", "warning", {(s.a, "web-v1"), (s.a, "web-v2")}, {(s.a, "web")}),
        ("declared-port-not-listening", "warning", {(s.a, "declared")}, set()),
        ("undeclared-listener", "info", {(s.a, "undeclared")}, set()),
        ("container-port-conflict", "critical", {(s.b, "dup")}, set()),
        ("container-port-conflict", "critical", {(s.b, "dup-undeclared")}, set()),
        ("hostnetwork-port-conflict", "critical", {(s.b, "hostnet-c"), (s.b, "hostnet-a")}, set()),
        ("hostport-conflict", "critical", {(s.b, "hostport-b"), (s.b, "hostport-a")}, set()),
        ("node-daemon-port", "critical", {(s.b, "daemon-port")}, set()),
        ("nodeport-range", "warning", {(s.b, "nodeport")}, set()),
        # hostNetwork pods holding declared ports on the node's loopback: worth knowing only
        ("loopback-only-listener", "info", {(s.b, "hostnet-a")}, set()),
        ("loopback-only-listener", "info", {(s.b, "hostport-a")}, set()),
        ("loopback-only-listener", "info", {(s.b, "nodeport")}, set()),
    ]


def summary(doc: dict) -> list[tuple[str, str, frozenset, frozenset]]:
    return sorted((f["id"], f["severity"], frozenset(names(f)), frozenset(names(f, "Service")))
                  for f in doc["findings"])


@pytest.mark.parametrize("via", ["ephemeral", "node"])
def test_every_seeded_conflict_is_found_and_nothing_else(seeded, swept, via):
    doc, _ = swept[via]
    want = sorted((i, sev, frozenset(p), frozenset(sv)) for i, sev, p, sv in expected(seeded))
    assert summary(doc) == want, json.dumps(doc["findings"], indent=1)[:6000]


@pytest.mark.parametrize("via", ["ephemeral", "node"])
def test_clean_pods_have_no_findings(seeded, swept, via):
    doc, _ = swept[via]
    clean = {(o["namespace"], o["name"]) for f in doc["findings"] for o in f["objects"]
             if o["kind"] == "Pod" and o["name"].startswith("clean")}
    assert clean == set()
    assert doc["summary"]["pods"] == 25


def test_both_modes_report_the_same_findings(swept):
    def exact(doc: dict) -> list:
        return sorted((f["id"], f["severity"], json.dumps(f["objects"], sort_keys=True)) for f in doc["findings"])

    assert exact(swept["ephemeral"][0]) == exact(swept["node"][0])


def test_the_crash_looping_container_is_named(seeded, swept):
    for via in ("ephemeral", "node"):
        doc, _ = swept[via]
        for name in ("dup", "dup-undeclared"):
            loser = [n for n, st in statuses(get(seeded.b, name)).items() if st.get("restartCount", 0) >= 2]
            f = next(f for f in doc["findings"] if f["id"] == "container-port-conflict"
                     and names(f) == {(seeded.b, name)})
            assert [o["container"] for o in f["objects"] if o.get("role") == "crash-looping"] == loser, via
            assert f["evidence"]["port"] == (8080 if name == "dup" else 8090)
            assert "in use" in (f["evidence"]["crash_looping"][loser[0]].get("log") or "").lower()
        f = next(f for f in doc["findings"] if f["id"] == "hostnetwork-port-conflict")
        roles = {o["name"]: o.get("role") for o in f["objects"] if o["kind"] == "Pod"}
        assert roles == {"hostnet-c": "crash-looping", "hostnet-a": "holds the port"}
        assert f["evidence"]["ports"] == [seeded.p_hostnet]


def test_node_daemon_port_names_the_daemon_and_node_mode_sees_its_listener(seeded, swept):
    for via in ("ephemeral", "node"):
        f = next(f for f in swept[via][0]["findings"] if f["id"] == "node-daemon-port")
        assert f["evidence"]["daemon"] == "kube-scheduler" and f["evidence"]["port"] == DAEMON_PORT
    listeners = next(f for f in swept["node"][0]["findings"] if f["id"] == "node-daemon-port")["evidence"][
        "node_listener"]
    if listeners:  # a node whose scheduler runs elsewhere has none
        assert any(p.startswith("kube-schedule") for x in listeners for p in x["processes"])


def test_uninspected_pods_are_listed_with_the_reason(seeded, swept):
    for via in ("ephemeral", "node"):
        doc, _ = swept[via]
        reasons = {(u["namespace"], u["name"]): u["reason"] for u in doc["uninspected"]}
        assert "free ports" in reasons[(seeded.b, "hostport-b")]
        assert set(reasons) <= {(seeded.b, "hostport-b"), (seeded.b, "hostnet-c")}, reasons


def test_ephemeral_says_pods_gain_a_container_and_node_mode_adds_none(seeded, swept):
    _, eph = swept["ephemeral"]
    assert "gains an ephemeral agent container" in eph.stderr
    before = kubectl("get", "pods", "-A", "-l", f"sockdebug-e2e={seeded.run}", "-o",
                     "jsonpath={range .items[*]}{.metadata.name}={.spec.ephemeralContainers[*].name};{end}").stdout
    _, node = run_sweep(seeded, "node")
    after = kubectl("get", "pods", "-A", "-l", f"sockdebug-e2e={seeded.run}", "-o",
                    "jsonpath={range .items[*]}{.metadata.name}={.spec.ephemeralContainers[*].name};{end}").stdout
    assert before == after
    assert "deleted afterwards" in node.stderr or "DaemonSet" in node.stderr
    leftovers = kubectl("get", "pods", "-A", "-l", "app.kubernetes.io/component=sweep", "-o", "name").stdout
    assert leftovers.strip() == ""


def agents_by_pod(seed: Seed) -> dict[str, list]:
    pods = json.loads(kubectl("get", "pods", "-A", "-l", f"sockdebug-e2e={seed.run}", "-o", "json").stdout)
    return {p["metadata"]["name"]: [(c["name"], c.get("targetContainerName")) for c in
                                    p["spec"].get("ephemeralContainers") or []] for p in pods["items"]}


def test_second_ephemeral_sweep_reuses_the_agents(seeded, swept):
    before = agents_by_pod(seeded)
    doc, _ = run_sweep(seeded, "ephemeral")
    after = agents_by_pod(seeded)
    grew = {name: (before[name], after[name]) for name in after if after[name] != before.get(name)}
    if grew:
        raise AssertionError(f"pods gained agents: {grew}\n" + json.dumps(
            {n: statuses(get(seeded.b if n in ('dup', 'dup-undeclared') else seeded.a, n)) for n in grew
             if n in ('dup', 'dup-undeclared')}, indent=1)[:3000])
    assert summary(doc) == summary(swept["ephemeral"][0])


def test_table_output_fail_on_and_scope(seeded, swept):
    proc = sweep("-A", "-l", f"sockdebug-e2e={seeded.run}", "--via", "node", "--fail-on", "critical")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert out.index("CRITICAL") < out.index("WARNING") < out.index("INFO")
    assert "not inspected" in out and "pods inspected via node" in out
    # one clean namespace: exit 0 even with --fail-on warning
    proc = sweep("-n", seeded.c, "--via", "node", "--fail-on", "warning", "-o", "yaml")
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    assert doc["findings"] == [] and doc["summary"]["inspected"] == 8


def test_node_agent_daemonset_is_used_when_installed(seeded, swept):
    """manifests/node-agent.yaml: sweep execs into it instead of creating pods; same findings."""
    manifest = Path(__file__).resolve().parents[2] / "manifests" / "node-agent.yaml"
    existed = kubectl("get", "namespace", "sockdebug-system", check=False).returncode == 0
    if existed and kubectl("-n", "sockdebug-system", "get", "ds", "sockdebug-node-agent", check=False).returncode:
        pytest.skip("namespace sockdebug-system exists without the node agent: not touching it")
    text = manifest.read_text().replace("image: sockdebug-agent:0.1.0", f"image: {IMAGE}").replace(
        "imagePullPolicy: IfNotPresent", f"imagePullPolicy: {PULL}")
    kubectl("apply", "-f", "-", input=text)
    try:
        kubectl("-n", "sockdebug-system", "rollout", "status", "ds/sockdebug-node-agent", "--timeout=180s",
                timeout=240)
        doc, proc = run_sweep(seeded, "node")
        assert "using the node-agent DaemonSet" in proc.stderr and "short-lived" not in proc.stderr
        assert summary(doc) == summary(swept["node"][0])
        leftovers = kubectl("get", "pods", "-A", "-l", "app.kubernetes.io/component=sweep", "-o", "name").stdout
        assert leftovers.strip() == ""
    finally:
        if not existed:
            kubectl("delete", "-f", "-", "--wait=false", input=text, check=False)
