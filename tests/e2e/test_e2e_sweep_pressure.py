"""``kubectl sockdebug sweep`` under API pressure, end to end (issue 14, goal 5): 100 pods
swept ``--via ephemeral`` by the user API Priority and Fairness throttles
(manifests/testing/apf-throttle.yaml: 1 nominal seat, a queue of one, so a burst gets 429
with Retry-After).  Every pod must be inspected, no pod may gain two agent containers from
the run (a retried patch that had landed is checked, not repeated), and the sweep must
report that it retried.

The user is given the plugin's Role (manifests/rbac.yaml) and `list services` in the test
namespace only.  SOCKDEBUG_SCALE_PODS changes the number of pods (default 100; the local
node admits 110 pods, shared with whatever else runs).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from e2e_util import IMAGE, TESTAPP, apply, kubectl, plugin, require_plugin_and_cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
APF = REPO / "manifests" / "testing" / "apf-throttle.yaml"
RBAC = REPO / "manifests" / "rbac.yaml"
PODS = int(os.environ.get("SOCKDEBUG_SCALE_PODS", "100"))


def throttled_kubeconfig(tmp: Path) -> str:
    """The local cluster's certificate user sockdebug-throttled, else a token of the
    manifest's ServiceAccount (any cluster)."""
    path = os.environ.get("SOCKDEBUG_THROTTLED_KUBECONFIG")
    if path and Path(path).is_file():
        return path
    token = kubectl("-n", "sockdebug-apf", "create", "token", "sockdebug-throttled", "--duration=30m").stdout.strip()
    raw = json.loads(kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout)
    cfg = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": raw["clusters"][0]["cluster"]}],
           "users": [{"name": "t", "user": {"token": token}}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "t"}}], "current-context": "c"}
    out = tmp / "throttled"
    out.write_text(json.dumps(cfg))
    out.chmod(0o600)
    return str(out)


def free_pod_slots() -> int:
    """Pods the node(s) can still admit."""
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    room = sum(int(n["status"]["allocatable"].get("pods", 0)) for n in nodes)
    pods = json.loads(kubectl("get", "pods", "-A", "--field-selector=status.phase!=Succeeded,status.phase!=Failed",
                              "-o", "json", timeout=120).stdout)["items"]
    return room - len(pods)


def wait_for_room(n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while free_pod_slots() < n + 2:  # + the node pods other tests may create meanwhile
        if time.monotonic() > deadline:
            pytest.skip(f"the cluster cannot admit {n} more pods now (SOCKDEBUG_SCALE_PODS lowers it)")
        time.sleep(10)


def seed(ns: str, n: int) -> None:
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    deadline = time.monotonic() + 60
    while kubectl("-n", ns, "get", "sa", "default", check=False).returncode != 0:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.5)
    objs = [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"p-{i:03d}", "namespace": ns, "labels": {"app": "pressure"}},
             "spec": {"terminationGracePeriodSeconds": 0,
                      "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
                      "containers": [{"name": "app", "image": TESTAPP, "imagePullPolicy": "IfNotPresent",
                                      "args": ["--listen", "0.0.0.0:8080"],
                                      "resources": {"requests": {"cpu": "1m", "memory": "16Mi"}}}]}}
            for i in range(n)]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs), timeout=300)
    kubectl("-n", ns, "wait", "--for=condition=Ready", "pods", "--all", "--timeout=600s", timeout=660)


def grant(ns: str, user: str) -> None:
    kubectl("-n", ns, "apply", "-f", str(RBAC))
    kubectl("-n", ns, "create", "rolebinding", "pressure-debugger", "--role=sockdebug-debugger", f"--user={user}")
    kubectl("-n", ns, "create", "role", "pressure-services", "--verb=list", "--resource=services")
    kubectl("-n", ns, "create", "rolebinding", "pressure-services", "--role=pressure-services", f"--user={user}")


def test_sweeping_100_pods_as_a_throttled_user_inspects_each_once_and_reports_retries():
    require_plugin_and_cluster()
    kubectl("apply", "-f", str(APF))  # API Priority and Fairness picks it up without a restart
    wait_for_room(PODS)
    ns = f"sde2e-pressure-{secrets.token_hex(3)}"
    try:
        seed(ns, PODS)
        with tempfile.TemporaryDirectory() as tmp:
            path = throttled_kubeconfig(Path(tmp))
            user = json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=path).stdout)[
                "status"]["userInfo"]["username"]
            grant(ns, user)
            proc = plugin("sweep", "-n", ns, "--via", "ephemeral", "-o", "json", "-v", "--timeout", "300",
                          kubeconfig=path, timeout=1500)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["summary"]["inspected"] == PODS, doc["uninspected"][:5]
        requests = doc["scope"]["requests"]
        print(f"swept {PODS} pods as {user} in {doc['scope']['elapsed_s']}s: {json.dumps(requests)}")  # for -s
        assert requests["retried"] > 0 and requests["retries"]["429"] > 0, requests
        assert "api: retry " in proc.stderr and "429 Too Many Requests" in proc.stderr
        assert requests["by_kind"]["create pods/exec"] >= PODS
        # a GET of a pod only checks whether a patch that failed with 5xx or a reset had landed
        checks = requests["landed_after_failure"] + requests["retries"]["5xx"] + requests["retries"]["reset"]
        assert requests["by_kind"].get("get pods", 0) <= checks, requests
        pods = json.loads(kubectl("-n", ns, "get", "pods", "-o", "json", timeout=120).stdout)["items"]
        agents = {p["metadata"]["name"]: [c["name"] for c in p["spec"].get("ephemeralContainers") or []
                                          if c.get("image") == IMAGE] for p in pods}
        twice = {name: names for name, names in agents.items() if len(names) != 1}
        assert not twice, f"pods without exactly one agent of this run: {twice}"
    finally:
        subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=true", "--timeout=600s"], capture_output=True,
                       timeout=660)
