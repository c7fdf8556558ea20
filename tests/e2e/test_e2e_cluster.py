"""The cluster contract the plugin stands on, proven with kubectl itself (issue 5).

Against whatever KUBECONFIG points to (the local cluster of hack/local-cluster, or kind):
  1. a non-root app listening on 127.0.0.1:8080 and 0.0.0.0:9090 reaches Running;
  2. `kubectl debug --target --profile=general` with the agent image returns JSON Lines
     naming both listeners with the app's pid and comm (ephemeral containers, PID-namespace
     targeting, output streamed back through apiserver -> kubelet -> containerd);
  3. a namespace enforcing Pod Security `restricted` rejects a general-profile debug
     container and admits a restricted-profile one;
  4. manifests/rbac.yaml's Role is enough to add an ephemeral container and read its output,
     and the same Role without pods/ephemeralcontainers gets Forbidden.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "manifests" / "rbac.yaml"
FALLBACK_APP_IMAGE = os.environ.get("SOCKDEBUG_TEST_IMAGE", "sockdebug.local/busybox:1.35")
APP_UID = 1000


# ---------------------------------------------------------------------------------------
# the workload
# ---------------------------------------------------------------------------------------
class App:
    """Which image plays the app, how it is told to listen, and what the agent should see."""

    def __init__(self, kube, testapp_image: str):
        if kube.has_image(testapp_image):
            self.image, self.comm = testapp_image, "python3"
            self.command: list[str] | None = None
            self.args = ["--listen", "127.0.0.1:8080", "--listen", "0.0.0.0:9090"]
        elif kube.has_image(FALLBACK_APP_IMAGE):
            # busybox httpd: one daemonised instance on 8080, the foreground one on 9090
            self.image, self.comm = FALLBACK_APP_IMAGE, "httpd"
            self.command = ["/bin/sh", "-c", "httpd -p 127.0.0.1:8080 -h / && exec httpd -f -p 0.0.0.0:9090 -h /"]
            self.args = []
        else:
            pytest.skip(f"neither {testapp_image} nor {FALLBACK_APP_IMAGE} is on the cluster's nodes "
                        "(scripts/build-images; hack/local-cluster load-images, or kind load docker-image)")

    def pod(self, name: str, ns: str, *, pod_level_user: bool) -> dict:
        """Restricted-compliant either way. pod_level_user=False puts the uid on the app
        container only, so a general-profile debug container runs as the image's user (root)
        with SYS_PTRACE; True makes every container, ephemeral ones too, run as APP_UID."""
        pod_sc: dict = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        ctr_sc: dict = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        ids = {"runAsUser": APP_UID, "runAsGroup": APP_UID}
        (pod_sc if pod_level_user else ctr_sc).update(ids)
        if not pod_level_user:
            pod_sc.pop("runAsNonRoot")
            ctr_sc["runAsNonRoot"] = True
        container: dict = {
            "name": "app", "image": self.image, "imagePullPolicy": "Never", "securityContext": ctr_sc,
            "ports": [{"name": "local", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
            # the kubelet probes 9090 from the host: Ready proves the wildcard listener is up
            "readinessProbe": {"tcpSocket": {"port": 9090}, "periodSeconds": 1},
        }
        if self.command:
            container["command"] = self.command
        if self.args:
            container["args"] = self.args
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
                "spec": {"securityContext": pod_sc, "containers": [container],
                         "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False}}


def start_app(kube, app: App, ns: str, name: str = "app", *, pod_level_user: bool) -> dict:
    kube.apply(app.pod(name, ns, pod_level_user=pod_level_user))
    proc = kube.run("-n", ns, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s", check=False,
                    timeout=150)
    if proc.returncode != 0:
        pod = kube.json("-n", ns, "get", "pod", name)
        raise AssertionError(f"pod {ns}/{name} not Ready: {json.dumps(pod.get('status'), indent=1)}")
    return kube.json("-n", ns, "get", "pod", name)


def debug(kube, ns: str, pod: str, image: str, profile: str, name: str, command: list[str],
          kubeconfig: str | None = None):
    """`kubectl debug` exactly as a user types it (no attach: the output is read with logs)."""
    return kube.run("-n", ns, "debug", f"pod/{pod}", f"--image={image}", "--image-pull-policy=Never",
                    "--target=app", f"--profile={profile}", "-c", name, "--", *command,
                    check=False, kubeconfig=kubeconfig)


def jsonl(text: str) -> list[dict]:
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records, "no output"
    assert records[0]["type"] == "hello", records[0]
    assert records[-1]["type"] == "end", records[-1]
    return records


def listeners(records: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["local_address"], r["local_port"]): r for r in records
            if r["type"] == "socket" and r.get("state") == "LISTEN"}


def app_pid(kube, ns: str, pod: str) -> int | None:
    """The test app announces its pid in its first line; busybox does not."""
    for line in kube.run("-n", ns, "logs", pod, "-c", "app", check=False).stdout.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("type") == "ready":
            return int(doc["pid"])
    return None


@pytest.fixture
def app(kube, testapp_image) -> App:
    return App(kube, testapp_image)


@pytest.fixture
def need_agent(kube, agent_image) -> str:
    if not kube.has_image(agent_image):
        pytest.skip(f"{agent_image} is not on the cluster's nodes (scripts/build-images agent; "
                    "hack/local-cluster load-images, or kind load docker-image)")
    return agent_image


def assert_listeners_with_owner(records: list[dict], app: App, pid: int | None) -> None:
    found = listeners(records)
    for key in (("127.0.0.1", 8080), ("0.0.0.0", 9090)):
        assert key in found, f"{key} not in {sorted(found)}"
        procs = found[key].get("processes") or []
        assert procs, f"no owning process for {key}: {found[key]}"
        assert any(p["comm"] == app.comm for p in procs), procs
        assert all(isinstance(p["pid"], int) and p["pid"] > 0 for p in procs), procs
        if pid is not None:
            assert pid in {p["pid"] for p in procs}, (pid, procs)


# ---------------------------------------------------------------------------------------
# 1 + 2
# ---------------------------------------------------------------------------------------
def test_nonroot_app_listening_on_loopback_and_wildcard_reaches_running(kube, make_namespace, app):
    ns = make_namespace()
    pod = start_app(kube, app, ns, pod_level_user=False)
    (status,) = pod["status"]["containerStatuses"]
    assert "running" in status["state"], status
    assert status["ready"] is True
    assert pod["spec"]["containers"][0]["securityContext"]["runAsUser"] == APP_UID
    assert pod["status"].get("podIP"), "no pod IP from CNI"


def test_kubectl_debug_general_profile_sees_both_listeners_with_pid_and_comm(kube, make_namespace, app,
                                                                            need_agent):
    ns = make_namespace()
    start_app(kube, app, ns, pod_level_user=False)
    name = f"agent-{secrets.token_hex(2)}"
    proc = debug(kube, ns, "app", need_agent, "general", name, ["sockdebug-agent", "sockets", "-tlp"])
    assert proc.returncode == 0, proc.stderr
    done = kube.wait_ephemeral_done(ns, "app", name)
    logs = kube.run("-n", ns, "logs", "app", "-c", name).stdout
    assert done["exitCode"] == 0, (done, logs)
    records = jsonl(logs)
    assert records[-1]["exit_code"] == 0
    assert_listeners_with_owner(records, app, app_pid(kube, ns, "app"))
    # the ephemeral container really shared the app's PID namespace, not just the network one
    spec = {c["name"]: c for c in kube.json("-n", ns, "get", "pod", "app")["spec"]["ephemeralContainers"]}
    assert spec[name]["targetContainerName"] == "app"
    assert "SYS_PTRACE" in spec[name]["securityContext"]["capabilities"]["add"]


# ---------------------------------------------------------------------------------------
# 3
# ---------------------------------------------------------------------------------------
def test_restricted_namespace_rejects_general_and_admits_restricted_profile(kube, make_namespace, app,
                                                                           agent_image):
    ns = make_namespace(enforce="restricted")
    start_app(kube, app, ns, pod_level_user=True)
    image = agent_image if kube.has_image(agent_image) else app.image
    command = ["sockdebug-agent", "sockets", "-tlp"] if image == agent_image else ["/bin/sh", "-c", "echo ok"]

    rejected = debug(kube, ns, "app", image, "general", "dbg-general", command)
    assert rejected.returncode != 0, rejected.stdout
    assert "violates PodSecurity" in rejected.stderr and "restricted" in rejected.stderr, rejected.stderr
    assert "dbg-general" not in json.dumps(kube.json("-n", ns, "get", "pod", "app")["spec"])

    admitted = debug(kube, ns, "app", image, "restricted", "dbg-restricted", command)
    assert admitted.returncode == 0, admitted.stderr
    spec = {c["name"]: c for c in kube.json("-n", ns, "get", "pod", "app")["spec"]["ephemeralContainers"]}
    sc = spec["dbg-restricted"]["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["allowPrivilegeEscalation"] is False
    # admitted and actually runs (as the pod's non-root uid) with its output readable
    done = kube.wait_ephemeral_done(ns, "app", "dbg-restricted")
    logs = kube.run("-n", ns, "logs", "app", "-c", "dbg-restricted").stdout
    assert done["exitCode"] == 0, (done, logs)
    if image == agent_image:
        records = jsonl(logs)
        assert ("0.0.0.0", 9090) in listeners(records)
    else:
        assert logs.strip() == "ok"


# ---------------------------------------------------------------------------------------
# 4
# ---------------------------------------------------------------------------------------
def rbac_role(without_ephemeral: bool = False) -> dict:
    (role,) = [d for d in yaml.safe_load_all(RBAC.read_text()) if d and d["kind"] == "Role"]
    if without_ephemeral:
        role = json.loads(json.dumps(role))
        role["metadata"]["name"] = "sockdebug-no-ephemeral"
        role["rules"] = [r for r in role["rules"] if "pods/ephemeralcontainers" not in r["resources"]]
    return role


def token_kubeconfig(kube, ns: str, sa: str, path: Path) -> str:
    """A kubeconfig for ServiceAccount SA: the admin's cluster entry plus a short-lived token."""
    token = kube.run("-n", ns, "create", "token", sa, "--duration=20m").stdout.strip()
    raw = kube.json("config", "view", "--raw", "--minify", "--flatten")
    cluster = raw["clusters"][0]["cluster"]
    cfg = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "c", "cluster": cluster}],
           "users": [{"name": sa, "user": {"token": token}}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa, "namespace": ns}}],
           "current-context": "c"}
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return str(path)


def whoami(kube, kubeconfig: str) -> str:
    review = kube.json("auth", "whoami", kubeconfig=kubeconfig)
    return review["status"]["userInfo"]["username"]


def least_privilege_flow(kube, ns: str, app: App, image: str, kubeconfig: str) -> None:
    name = f"lp-{secrets.token_hex(2)}"
    agent = image != app.image
    command = ["sockdebug-agent", "sockets", "-tlp"] if agent else ["/bin/sh", "-c", "echo ok"]
    proc = debug(kube, ns, "app", image, "general", name, command, kubeconfig=kubeconfig)
    assert proc.returncode == 0, proc.stderr
    done = kube.wait_ephemeral_done(ns, "app", name, kubeconfig=kubeconfig)
    logs = kube.run("-n", ns, "logs", "app", "-c", name, kubeconfig=kubeconfig).stdout
    assert done["exitCode"] == 0, (done, logs)
    if agent:
        assert_listeners_with_owner(jsonl(logs), app, None)
    else:
        assert logs.strip() == "ok"
    # ... and nothing beyond the Role
    # (`kubectl auth can-i get pods/x` means the pod named x: subresources need --subresource)
    for verb, what, sub, want in (("list", "pods", "", "yes"), ("patch", "pods", "ephemeralcontainers", "yes"),
                                  ("create", "pods", "exec", "yes"), ("get", "pods", "exec", "yes"),
                                  ("get", "pods", "log", "yes"),
                                  ("create", "pods", "", "no"), ("delete", "pods", "", "no"),
                                  ("patch", "pods", "", "no"), ("get", "secrets", "", "no"),
                                  ("create", "pods", "attach", "no"), ("create", "pods", "portforward", "no"),
                                  ("update", "pods", "ephemeralcontainers", "no")):
        args = ["-n", ns, "auth", "can-i", verb, what] + ([f"--subresource={sub}"] if sub else [])
        answer = kube.run(*args, check=False, kubeconfig=kubeconfig).stdout.strip()
        assert answer == want, (verb, what, sub, answer)
    other = kube.run("-n", "kube-system", "auth", "can-i", "list", "pods", check=False,
                     kubeconfig=kubeconfig).stdout.strip()
    assert other == "no", "the Role must not reach other namespaces"


def test_least_privilege_role_can_debug_and_missing_ephemeral_permission_is_forbidden(
        kube, make_namespace, app, agent_image):
    ns = make_namespace()
    start_app(kube, app, ns, pod_level_user=False)
    image = agent_image if kube.has_image(agent_image) else app.image
    kube.run("-n", ns, "apply", "-f", str(RBAC))
    no_eph = rbac_role(without_ephemeral=True)
    no_eph["metadata"]["namespace"] = ns
    kube.apply(no_eph)
    for sa, role in (("sd-debugger", "sockdebug-debugger"), ("sd-no-ephemeral", "sockdebug-no-ephemeral")):
        kube.run("-n", ns, "create", "serviceaccount", sa)
        kube.run("-n", ns, "create", "rolebinding", sa, f"--role={role}", f"--serviceaccount={ns}:{sa}")

    with tempfile.TemporaryDirectory() as tmp:
        allowed = token_kubeconfig(kube, ns, "sd-debugger", Path(tmp) / "debugger")
        denied = token_kubeconfig(kube, ns, "sd-no-ephemeral", Path(tmp) / "no-ephemeral")
        least_privilege_flow(kube, ns, app, image, allowed)

        proc = debug(kube, ns, "app", image, "general", "forbidden", ["true"], kubeconfig=denied)
        assert proc.returncode != 0
        assert "forbidden" in proc.stderr.lower(), proc.stderr
        assert "pods/ephemeralcontainers" in proc.stderr, proc.stderr
        assert "forbidden" not in json.dumps(kube.json("-n", ns, "get", "pod", "app")["spec"])


def test_local_cluster_least_privilege_kubeconfig(kube, make_namespace, app, agent_image):
    """The kubeconfig `hack/local-cluster` writes (a client certificate for user
    sockdebug-user) works once the Role is bound in a namespace, and only there."""
    path = os.environ.get("SOCKDEBUG_USER_KUBECONFIG")
    if not path or not Path(path).is_file():
        pytest.skip("SOCKDEBUG_USER_KUBECONFIG not set (eval \"$(hack/local-cluster env)\")")
    user = whoami(kube, path)
    ns = make_namespace()
    start_app(kube, app, ns, pod_level_user=False)
    image = agent_image if kube.has_image(agent_image) else app.image
    # before the binding: nothing
    proc = debug(kube, ns, "app", image, "general", "too-early", ["true"], kubeconfig=path)
    assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), proc.stderr
    kube.run("-n", ns, "apply", "-f", str(RBAC))
    kube.run("-n", ns, "create", "rolebinding", "sd-user", "--role=sockdebug-debugger", f"--user={user}")
    least_privilege_flow(kube, ns, app, image, path)


def test_rbac_manifest_grants_exactly_the_plugins_verbs():
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    assert {d["kind"] for d in docs} == {"Role", "ClusterRole"}
    want = {("pods", "get"), ("pods", "list"), ("pods", "watch"), ("pods/ephemeralcontainers", "patch"),
            ("pods/exec", "get"), ("pods/exec", "create"), ("pods/log", "get")}
    for doc in docs:
        got = {(res, verb) for rule in doc["rules"] for res in rule["resources"] for verb in rule["verbs"]}
        assert got == want, doc["kind"]
        assert all(rule["apiGroups"] == [""] for rule in doc["rules"])
        assert "namespace" not in doc["metadata"]

