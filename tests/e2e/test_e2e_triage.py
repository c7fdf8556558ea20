"""``kubectl sockdebug triage`` end to end (issue 7): findings first, most severe first, then
the figures behind them; a pod and ``node/NAME``.

The leaky pod makes its own trouble inside its network namespace only: 12 CLOSE-WAIT
sockets from connections to itself over loopback, and a listener on 127.0.0.1 that never
accepts with a queue its own clients fill.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time

import pytest
import yaml
from e2e_util import PULL, TESTAPP, kubectl, plugin, require_plugin_and_cluster

pytestmark = pytest.mark.e2e

RANK = {"critical": 2, "warning": 1, "info": 0}


def triage(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return plugin("triage", *args, timeout=timeout)


@pytest.fixture(scope="module")
def leaky():
    require_plugin_and_cluster()
    ns = f"sde2e-triage-{secrets.token_hex(3)}"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "leaky", "namespace": ns, "labels": {"app": "leaky"}},
           "spec": {"terminationGracePeriodSeconds": 0,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
                    "containers": [{"name": "app", "image": TESTAPP, "imagePullPolicy": PULL,
                                    "args": ["--listen", "0.0.0.0:8080", "--close-wait", "12",
                                             "--backlog-full", "127.0.0.1:7070", "--backlog", "2",
                                             "--backlog-clients", "6"],
                                    "ports": [{"name": "http", "containerPort": 8080}]}]}}
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]))
    try:
        for _ in range(60):
            if kubectl("-n", ns, "get", "sa", "default", check=False).returncode == 0:
                break
            time.sleep(0.5)
        kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
        kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/leaky", "--timeout=180s", timeout=240)
        yield ns
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_pod_triage_shows_close_wait_and_full_backlog_first(leaky):
    proc = triage("pod/leaky", "-n", leaky)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("# pod/leaky"), out[:300]
    findings, _, figures = out.partition("\n\n#")
    tags = re.findall(r"^(CRITICAL|WARNING|INFO)  .*\[([a-z-]+)\]$", findings, re.M)
    ids = [i for _, i in tags]
    assert "accept-queue-full" in ids and "close-wait-leak" in ids, findings
    ranks = [RANK[t.lower()] for t, _ in tags]
    assert ranks == sorted(ranks, reverse=True)  # most severe first
    # the two seeded problems come before anything informational
    assert max(ids.index("accept-queue-full"), ids.index("close-wait-leak")) < len(
        [r for r in ranks if r > 0]), tags
    assert "127.0.0.1:7070" in findings and "12 sockets in CLOSE-WAIT" in findings
    # then the figures
    assert "summary" in figures and "CLOSE-WAIT 12" in figures.replace("  ", " ")


def test_pod_triage_json_and_fail_on(leaky):
    proc = triage("leaky", "-n", leaky, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["kind"] == "TriageReport"
    findings = doc["findings"]
    by_id = {f["id"]: f for f in findings}
    assert by_id["accept-queue-full"]["severity"] == "critical"
    assert by_id["accept-queue-full"]["evidence"]["recv_q"] >= 3
    assert by_id["close-wait-leak"]["evidence"]["close_wait"] == 12
    assert [RANK[f["severity"]] for f in findings] == sorted((RANK[f["severity"]] for f in findings), reverse=True)
    assert doc["items"][0]["summary"]["tcp_states"]["CLOSE-WAIT"] == 12
    proc = triage("pod/leaky", "-n", leaky, "--fail-on", "critical")
    assert proc.returncode == 1 and "at or above critical" in proc.stderr


def test_node_triage(leaky):
    node = kubectl("-n", leaky, "get", "pod", "leaky", "-o", "jsonpath={.spec.nodeName}").stdout
    proc = triage(f"node/{node}", "-n", leaky)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"# node/{node}: findings")
    assert f"# node/{node}: summary" in proc.stdout and f"# node/{node}: limits" in proc.stdout
    proc = triage(f"node/{node}", "-n", leaky, "-o", "yaml")
    doc = yaml.safe_load(proc.stdout)
    assert doc["items"][0]["target"] == {"kind": "node", "name": node}
    assert "summary" in doc["items"][0]
    left = kubectl("-n", leaky, "get", "pods", "-l", "app.kubernetes.io/name=sockdebug-node-agent", "-o",
                   "name").stdout
    assert left.strip() == ""  # the node pod is deleted afterwards
