"""kubectl-sockdebug end to end on a real API server and kubelet (issue 6).

Runs against the cluster KUBECONFIG points to (the local cluster of
hack/local-cluster in CI, kind for users) with the agent image
``sockdebug-agent:VERSION`` and the test workload ``sockdebug-testapp:VERSION``
present on the node.  Each test module works in namespaces it creates and deletes.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time

import pytest
import yaml
from e2e_util import IMAGE, PLUGIN, PULL, TESTAPP, apply, kubectl, plugin, require_plugin_and_cluster

pytestmark = pytest.mark.e2e



def report(args: list[str], **kw) -> dict:
    """`-o json` of the plugin, parsed; fails the test with stderr on a non-zero exit."""
    proc = plugin(*args, "-o", "json", **kw)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def listeners(doc: dict) -> dict[tuple[str, int], dict]:
    return {(s["local_address"], s["local_port"]): s for item in doc["items"] for s in item.get("sockets", [])
            if s["state"] == "LISTEN"}


def ephemeral_names(ns: str, pod: str) -> list[str]:
    out = kubectl("-n", ns, "get", "pod", pod, "-o", "jsonpath={.spec.ephemeralContainers[*].name}").stdout
    return out.split()


def app_pod(name: str, ns: str, args: list[str], *, sidecar: list[str] | None = None, labels: dict | None = None,
            ids: bool = True) -> dict:
    security = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if ids:
        security.update(runAsUser=1000, runAsGroup=1000)
    ctx = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    containers = [{"name": "app", "image": TESTAPP, "imagePullPolicy": PULL, "args": args, "securityContext": ctx,
                   "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}]}]
    if sidecar:
        containers.append({"name": "sidecar", "image": TESTAPP, "imagePullPolicy": PULL, "args": sidecar,
                           "securityContext": ctx})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
            "spec": {"securityContext": security, "containers": containers, "terminationGracePeriodSeconds": 0}}


def wait_ready(ns: str, selector: str = "", name: str = "", timeout: int = 120) -> None:
    what = [f"pod/{name}"] if name else ["pods", "-l", selector]
    kubectl("-n", ns, "wait", "--for=condition=Ready", *what, f"--timeout={timeout}s", timeout=timeout + 30)


@pytest.fixture(scope="module")
def cluster():
    require_plugin_and_cluster()
    return os.environ.get("KUBECONFIG")


@pytest.fixture(scope="module")
def namespaces(cluster):
    made: list[str] = []

    def make(level: str | None = None) -> str:
        name = f"sde2e-{secrets.token_hex(3)}"
        labels = {"pod-security.kubernetes.io/enforce": level} if level else {}
        apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
        for _ in range(60):  # the ServiceAccount controller must create "default" first
            if kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0:
                break
            time.sleep(0.5)
        made.append(name)
        return name

    yield make
    for name in made:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def app(namespaces):
    """One namespace with the classic pod: 127.0.0.1:8080, 0.0.0.0:9090, a connection, a
    sidecar on 15000; a Deployment and a Service in front of it."""
    ns = namespaces()
    apply(app_pod("api", ns, ["--listen", "127.0.0.1:8080", "--listen", "0.0.0.0:9090", "--connect",
                              "127.0.0.1:9090"], sidecar=["--listen", "0.0.0.0:15000"]),
          {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": ns},
           "spec": {"selector": {"app": "api"}, "ports": [{"port": 80, "targetPort": "metrics"}]}},
          {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": app_pod("x", ns, ["--listen", "0.0.0.0:7000"])["spec"]}}})
    wait_ready(ns, name="api")
    wait_ready(ns, selector="app=web")
    return ns


def test_listening_shows_bind_addresses_pids_processes_and_containers(app):
    doc = report(["pod/api", "-n", app, "--listening"])
    found = listeners(doc)
    assert ("127.0.0.1", 8080) in found and ("0.0.0.0", 9090) in found
    for key in (("127.0.0.1", 8080), ("0.0.0.0", 9090)):
        owners = found[key]["processes"]
        assert owners, f"{key} has no owner"
        assert owners[0]["comm"].startswith("python") and owners[0]["container"] == "app"
        assert owners[0]["pid"] >= 1
    table = plugin("pod/api", "-n", app, "--listening")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert any("127.0.0.1:8080" in line and "app" in line for line in lines), table.stdout
    assert any("0.0.0.0:9090" in line and "python" in line for line in lines), table.stdout


def test_two_containers_each_listener_attributed_to_its_container(app):
    found = listeners(report(["pod/api", "-n", app, "--listening"]))
    assert found[("0.0.0.0", 15000)]["processes"][0]["container"] == "sidecar"
    assert found[("0.0.0.0", 9090)]["processes"][0]["container"] == "app"


def test_second_run_reuses_the_agent_and_is_faster(app):
    before = ephemeral_names(app, "api")
    assert before, "the earlier tests added agents"
    t0 = time.monotonic()
    proc = plugin("pod/api", "-n", app, "-c", "app", "-t", "--listening")
    warm = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert ephemeral_names(app, "api") == before
    assert "adding ephemeral container" not in proc.stderr
    # A new pod pays for the injection: compare with a cold run (not a timed assert on
    # absolute numbers, only that reuse is the cheaper path).
    apply(app_pod("cold", app, ["--listen", "0.0.0.0:9090"]))
    wait_ready(app, name="cold")
    t0 = time.monotonic()
    cold_proc = plugin("pod/cold", "-n", app, "--listening")
    cold = time.monotonic() - t0
    assert cold_proc.returncode == 0, cold_proc.stderr
    assert "adding ephemeral container" in cold_proc.stderr
    assert warm < cold


def test_outputs_parse_and_views_render(app):
    doc = report(["svc/api", "-n", app, "--listening"])
    assert {item["target"]["name"] for item in doc["items"]} == {"api"}
    deploy = report(["deploy/web", "-n", app, "--listening", "--all-pods"])
    assert len(deploy["items"]) == 2
    assert all(("0.0.0.0", 7000) in listeners({"items": [i]}) for i in deploy["items"])
    y = plugin("pod/api", "-n", app, "--listening", "-o", "yaml")
    assert y.returncode == 0, y.stderr
    assert yaml.safe_load(y.stdout)["kind"] == "SocketReport"
    jl = plugin("pod/api", "-n", app, "-t", "--listening", "-o", "jsonl")
    records = [json.loads(line) for line in jl.stdout.splitlines()]
    assert records[0]["type"] == "hello" and records[-1]["type"] == "end"
    summary = plugin("pod/api", "-n", app, "--summary")
    assert summary.returncode == 0 and "TCP states:" in summary.stdout, summary.stderr
    routes = plugin("pod/api", "-n", app, "--routes")
    assert routes.returncode == 0 and "Dst" in routes.stdout and "local" in routes.stdout, routes.stderr
    limits = plugin("pod/api", "-n", app, "--limits")
    assert limits.returncode == 0 and "Open fds" in limits.stdout, limits.stderr
    wide = plugin("pod/api", "-n", app, "-t", "-a", "-o", "wide")
    assert wide.returncode == 0 and "Timer" in wide.stdout, wide.stderr


def test_filter_errors_fail_before_touching_the_cluster(app):
    proc = plugin("pod/api", "-n", app, "sport", "=", ":80", "and")
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_pod_and_container_name_what_exists(app):
    proc = plugin("pod/nope", "-n", app)
    assert proc.returncode == 4 and "not found" in proc.stderr
    proc = plugin("pod/api", "-n", app, "-c", "nope")
    assert proc.returncode == 4 and "app" in proc.stderr and "sidecar" in proc.stderr


def ephemeral_specs(ns: str, pod: str) -> list[dict]:
    return json.loads(kubectl("-n", ns, "get", "pod", pod, "-o", "json").stdout)["spec"].get(
        "ephemeralContainers") or []


@pytest.mark.parametrize("spec_ids", ["none", "uid-only"])
def test_restricted_namespace_learns_the_targets_ids_and_shows_owners(namespaces, spec_ids):
    """The image runs as 1000:1000; the spec says nothing, or only runAsUser: 1000. A
    one-shot `ids` probe learns the rest, and the agent shares the target's ids: owners
    without any capability.  One probe and one agent, then reused."""
    ns = namespaces("restricted")
    pod = app_pod("locked", ns, ["--listen", "127.0.0.1:8080", "--listen", "0.0.0.0:9090"], ids=False)
    if spec_ids == "uid-only":
        pod["spec"]["securityContext"]["runAsUser"] = 1000
    apply(pod)
    wait_ready(ns, name="locked")
    proc = plugin("pod/locked", "-n", ns, "--listening", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    found = listeners(json.loads(proc.stdout))
    for key in (("127.0.0.1", 8080), ("0.0.0.0", 9090)):
        owners = found[key]["processes"]
        assert owners and owners[0]["container"] == "app" and owners[0]["comm"].startswith("python"), proc.stderr
    assert "to learn the uid/gid of app" in proc.stderr and "owners" not in proc.stderr
    specs = ephemeral_specs(ns, "locked")
    assert len(specs) == 2  # the probe and the agent
    probe, agent = sorted(specs, key=lambda c: "serve" in c["command"])
    assert probe["command"] == ["sockdebug-agent", "ids"]
    assert agent["securityContext"]["runAsUser"] == 1000 and agent["securityContext"]["runAsGroup"] == 1000
    assert {"name": "SOCKDEBUG_TARGET_IDS", "value": "1000:1000"} in agent["env"]
    again = plugin("pod/locked", "-n", ns, "--listening", "-o", "json")
    assert again.returncode == 0, again.stderr
    assert "adding ephemeral container" not in again.stderr
    assert sorted(c["name"] for c in ephemeral_specs(ns, "locked")) == sorted([probe["name"], agent["name"]])
    assert listeners(json.loads(again.stdout))[("0.0.0.0", 9090)]["processes"][0]["container"] == "app"


def test_restricted_namespace_with_ids_in_the_spec_needs_no_probe(namespaces):
    ns = namespaces("restricted")
    apply(app_pod("known", ns, ["--listen", "0.0.0.0:9090"], ids=True))
    wait_ready(ns, name="known")
    proc = plugin("pod/known", "-n", ns, "--listening", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert listeners(json.loads(proc.stdout))[("0.0.0.0", 9090)]["processes"][0]["container"] == "app"
    assert len(ephemeral_specs(ns, "known")) == 1


def test_general_profile_rejected_by_restricted_namespace_names_the_cause(namespaces):
    ns = namespaces("restricted")
    apply(app_pod("p", ns, ["--listen", "0.0.0.0:9090"]))
    wait_ready(ns, name="p")
    proc = plugin("pod/p", "-n", ns, "--listening", "--profile", "general")
    assert proc.returncode == 5
    assert "Pod Security" in proc.stderr and "--profile" in proc.stderr


def test_missing_image_fails_within_the_timeout_with_the_kubelets_reason(app):
    t0 = time.monotonic()
    proc = subprocess.run([PLUGIN, "pod/api", "-n", app, "-c", "sidecar", "--image", "sockdebug-absent:0.0.0",
                           "--image-pull-policy", "Never", "--timeout", "60"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 5, proc.stderr
    assert "ErrImageNeverPull" in proc.stderr
    assert time.monotonic() - t0 < 90


def _kubeconfig_for(ns: str, rules: list[dict], tmp_path) -> str:
    """A kubeconfig of a fresh ServiceAccount bound to a Role with ``rules``."""
    sa = f"sa-{secrets.token_hex(3)}"
    apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}},
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": sa, "namespace": ns},
           "rules": rules},
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": sa, "namespace": ns},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
           "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]})
    token = kubectl("-n", ns, "create", "token", sa, "--duration=1h").stdout.strip()
    view = yaml.safe_load(kubectl("config", "view", "--minify", "--raw").stdout)
    cluster = view["clusters"][0]
    config = {"apiVersion": "v1", "kind": "Config", "clusters": [cluster],
              "users": [{"name": sa, "user": {"token": token}}],
              "contexts": [{"name": sa, "context": {"cluster": cluster["name"], "user": sa, "namespace": ns}}],
              "current-context": sa}
    path = tmp_path / f"{sa}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _rbac_rules() -> list[dict]:
    path = os.path.join(os.path.dirname(__file__), "..", "..", "manifests", "rbac.yaml")
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    role = next(d for d in docs if d["kind"] in ("Role", "ClusterRole"))
    return role["rules"]


def test_least_privilege_role_works_and_missing_ephemeral_permission_is_named(app, tmp_path):
    rules = _rbac_rules()
    config = _kubeconfig_for(app, rules, tmp_path)
    apply(app_pod("lp", app, ["--listen", "0.0.0.0:9090"]))
    wait_ready(app, name="lp")
    found = listeners(report(["pod/lp", "--listening"], kubeconfig=config))
    assert ("0.0.0.0", 9090) in found
    without = [r for r in rules if "pods/ephemeralcontainers" not in r.get("resources", [])]
    assert len(without) < len(rules)
    config2 = _kubeconfig_for(app, without, tmp_path)
    apply(app_pod("lp2", app, ["--listen", "0.0.0.0:9090"]))
    wait_ready(app, name="lp2")
    proc = plugin("pod/lp2", "--listening", kubeconfig=config2)
    assert proc.returncode == 3, proc.stderr
    assert "pods/ephemeralcontainers" in proc.stderr and "rbac.yaml" in proc.stderr


def test_kubectl_finds_and_runs_the_plugin(app):
    listed = kubectl("plugin", "list", check=False)
    assert "kubectl-sockdebug" in listed.stdout
    proc = kubectl("sockdebug", "pod/api", "-n", app, "-t", "--listening", "--image", IMAGE,
                   "--image-pull-policy", PULL)
    assert "9090" in proc.stdout
