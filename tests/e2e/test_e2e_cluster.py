"""The cluster contract the plugin stands on, proven with kubectl itself (issue 5).

Against whatever KUBECONFIG points to (the local cluster of hack/local-cluster, or kind):
  1. a non-root app listening on 127.0.0.1:8080 and 0.0.0.0:9090 reaches Running;
  2. `kubectl debug --target --profile=general` with the agent image returns JSON Lines
     naming both listeners with the app's pid and comm (ephemeral containers, PID-namespace
     targeting, output streamed back through apiserver -> kubelet -> containerd);
  3. a namespace enforcing Pod Security `restricted` rejects a general-profile debug
     container and admits a restricted-profile one;
  4. manifests/rbac.yaml's Role is enough to add an ephemeral container and read its output,
     and the same Role without pods/ephemeralcontainers gets Forbidden;
  5. Services route: a client pod's connection through a ClusterIP shows the ClusterIP as its
     peer (ss in the client's network namespace) while the server sees the client's pod IP,
     and pods still have no default route;
  6. the server images (Debian's redis, nginx, memcached with their packaged defaults) start
     and listen exactly where Debian's configuration says;
  7. manifests/testing/apf-throttle.yaml makes the API server answer a burst of requests by
     the throttled test user with some 429s carrying Retry-After, and none for the admin.
Steps 5 and 6 look into pod network namespaces from the node (root, nsenter, ss): they skip
where the pods do not run on this host (kind).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "manifests" / "rbac.yaml"
APF = REPO / "manifests" / "testing" / "apf-throttle.yaml"
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



# ---------------------------------------------------------------------------------------
# 5 + 6: inside the pods' network namespaces, from the node
# ---------------------------------------------------------------------------------------
def pod_pid(kube, ns: str, pod: str) -> int:
    """A host pid of one of POD's processes (they all share its network namespace), found by
    the pod UID in kubelet's cgroup paths (cgroupfs or systemd spelling)."""
    if os.geteuid() != 0 or not shutil.which("nsenter") or not shutil.which("ss"):
        pytest.skip("needs root, nsenter and ss on the node")
    uid = kube.json("-n", ns, "get", "pod", pod)["metadata"]["uid"]
    keys = (f"pod{uid}", f"pod{uid.replace('-', '_')}")
    for cgroup in Path("/proc").glob("[0-9]*/cgroup"):
        try:
            if any(key in cgroup.read_text() for key in keys):
                return int(cgroup.parent.name)
        except OSError:
            continue
    pytest.skip(f"no process of pod {ns}/{pod} on this host (pods run elsewhere, e.g. kind)")


def in_netns(pid: int, *cmd: str) -> str:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "--", *cmd], check=True, capture_output=True,
                          text=True, timeout=30).stdout


def established(pid: int) -> list[tuple[str, str]]:
    """(local, peer) of every established TCP connection in the network namespace of PID."""
    rows = (line.split() for line in in_netns(pid, "ss", "-Htn").splitlines())
    return [(f[3], f[4]) for f in rows if f[0] == "ESTAB"]


def wait_running(kube, ns: str, pod: str) -> dict:
    kube.run("-n", ns, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=120s", timeout=150)
    return kube.json("-n", ns, "get", "pod", pod)


def simple_pod(name: str, ns: str, image: str, args: list[str] | None = None, labels: dict | None = None) -> dict:
    container: dict = {"name": "app", "image": image, "imagePullPolicy": "Never"}
    if args:
        container["args"] = args
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 1,
                     "automountServiceAccountToken": False}}


def test_clusterip_connection_is_routed_and_each_side_sees_the_right_peer(kube, make_namespace, testapp_image):
    if not kube.has_image(testapp_image):
        pytest.skip(f"{testapp_image} is not on the cluster's nodes")
    ns = make_namespace()
    kube.apply([simple_pod("server", ns, testapp_image, ["--listen", "0.0.0.0:9090"], {"app": "server"}),
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "server", "namespace": ns},
                 "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 9090}]}}])
    server = wait_running(kube, ns, "server")
    cluster_ip = kube.json("-n", ns, "get", "service", "server")["spec"]["clusterIP"]
    # the client retries its connect for 30 s (kube-proxy may program the Service after the
    # client starts) and says "ready" once connected
    kube.apply(simple_pod("client", ns, testapp_image, ["--connect", f"{cluster_ip}:80"]))
    client = wait_running(kube, ns, "client")
    client_ip, server_ip = client["status"]["podIP"], server["status"]["podIP"]
    deadline = time.monotonic() + 45
    while app_pid(kube, ns, "client") is None:
        assert time.monotonic() < deadline, kube.run("-n", ns, "logs", "client", check=False).stdout[-2000:]
        time.sleep(0.5)

    client_pid = pod_pid(kube, ns, "client")
    (conn,) = established(client_pid)
    assert conn[1] == f"{cluster_ip}:80", conn  # the Service's address, as in real clusters
    assert conn[0].startswith(f"{client_ip}:"), conn
    client_port = conn[0].rsplit(":", 1)[1]
    # ... and the server sees the client pod itself: no masquerade on the way
    served = established(pod_pid(kube, ns, "server"))
    assert served == [(f"{server_ip}:9090", f"{client_ip}:{client_port}")], served
    routes = in_netns(client_pid, "ip", "-4", "route", "show")
    assert "default" not in routes, routes
    assert any(line.startswith(f"{cluster_ip.rsplit('.', 1)[0]}.0/") and " via " in line
               for line in routes.splitlines()), routes


# Debian bookworm's packaged defaults (what the images run unchanged):
#   /etc/redis/redis.conf    bind 127.0.0.1 -::1   (port 6379; ::1 when the pod has IPv6 on lo)
#   sites-enabled/default    listen 80 default_server; listen [::]:80 default_server
#   /etc/memcached.conf      -l 127.0.0.1 -p 11211 -u memcache
SERVERS = {
    "redis": ({("127.0.0.1", 6379)}, {("::1", 6379)}, {"redis-server"}),
    "nginx": ({("0.0.0.0", 80)}, {("::", 80)}, {"nginx"}),
    "memcached": ({("127.0.0.1", 11211)}, set(), {"memcached"}),
}


def listeners_in(pid: int) -> tuple[set[tuple[str, int]], set[int]]:
    """Listening (address, port) in PID's netns and the host pids owning them."""
    found, pids = set(), set()
    for line in in_netns(pid, "ss", "-Htlnp").splitlines():
        fields = line.split()
        host, _, port = fields[3].rpartition(":")
        found.add((host.strip("[]"), int(port)))
        pids |= {int(p) for p in re.findall(r"pid=(\d+)", line)}
    return found, pids


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_server_image_listens_where_debians_default_config_says(kube, make_namespace, server):
    from sockdebug_agent import __version__

    image = f"sockdebug-{server}:{__version__}"
    if not kube.has_image(image):
        pytest.skip(f"{image} is not on the cluster's nodes (scripts/build-images servers; "
                    "hack/local-cluster load-images)")
    v4, v6, comms = SERVERS[server]
    ns = make_namespace()
    kube.apply(simple_pod(server, ns, image))
    wait_running(kube, ns, server)
    pid = pod_pid(kube, ns, server)
    want = v4 | (v6 if "::1" in in_netns(pid, "ip", "-6", "addr", "show", "dev", "lo") else set())
    deadline = time.monotonic() + 30
    while (got := listeners_in(pid))[0] != want and time.monotonic() < deadline:
        time.sleep(0.5)
    found, owners = got
    assert found == want, (found, kube.run("-n", ns, "logs", server, check=False).stdout[-2000:])
    names = {Path(f"/proc/{p}/comm").read_text().strip() for p in owners}
    assert names == comms, names
    uids = {int(Path(f"/proc/{p}/status").read_text().split("Uid:")[1].split()[0]) for p in owners}
    if server == "nginx":  # master as root (binds port 80), workers as www-data, as packaged
        assert 0 in uids and len(uids) == 2, uids
    else:
        assert 0 not in uids, uids  # the package's own user


# ---------------------------------------------------------------------------------------
# 7: API Priority and Fairness throttles the test user, not the admin
# ---------------------------------------------------------------------------------------
class RawClient:
    """A kubeconfig's API server and credentials for plain HTTPS requests: no client-side rate
    limit or retry between the test and the server's answer."""

    def __init__(self, config: dict, tmp: Path):
        ctx_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        host, _, port = cluster["server"].removeprefix("https://").partition(":")
        self.host, self.port = host, int(port or 443)
        self.ssl = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        self.headers = {"Accept": "application/json"}
        if "token" in user:
            self.headers["Authorization"] = f"Bearer {user['token']}"
        else:
            cert, key = tmp / f"{id(self)}.crt", tmp / f"{id(self)}.key"
            cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            key.chmod(0o600)
            self.ssl.load_cert_chain(cert, key)

    def burst(self, path: str, n: int) -> list[tuple[int, dict[str, str]]]:
        """N GETs at once: every connection is set up first, then all requests leave together."""
        conns = [http.client.HTTPSConnection(self.host, self.port, context=self.ssl, timeout=60) for _ in range(n)]
        for conn in conns:
            conn.connect()
        gate, results = threading.Barrier(n), [None] * n

        def one(i: int) -> None:
            gate.wait()
            conns[i].request("GET", path, headers=self.headers)
            resp = conns[i].getresponse()
            resp.read()
            results[i] = (resp.status, {k.lower(): v for k, v in resp.getheaders()})
            conns[i].close()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert all(results), "some requests got no answer"
        return results


def throttled_kubeconfig(kube, tmp: Path) -> str:
    """The local cluster's client certificate for user sockdebug-throttled, else a token for
    the ServiceAccount the manifest makes (any cluster)."""
    path = os.environ.get("SOCKDEBUG_THROTTLED_KUBECONFIG")
    if path and Path(path).is_file():
        return path
    return token_kubeconfig(kube, "sockdebug-apf", "sockdebug-throttled", tmp / "throttled")


def test_apf_answers_the_throttled_user_429_with_retry_after_and_not_the_admin(kube, make_namespace):
    kube.run("apply", "-f", str(APF))  # no restart: API Priority and Fairness picks it up at once
    level_uid = kube.json("get", "prioritylevelconfiguration", "sockdebug-throttled")["metadata"]["uid"]
    ns = make_namespace()
    with tempfile.TemporaryDirectory() as tmp:
        path = throttled_kubeconfig(kube, Path(tmp))
        user = whoami(kube, path)
        kube.run("-n", ns, "create", "role", "read-cm", "--verb=get", "--resource=configmaps")
        kube.run("-n", ns, "create", "rolebinding", "read-cm", "--role=read-cm", f"--user={user}")
        url = f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt"
        throttled = RawClient(json.loads(json.dumps(yaml.safe_load(Path(path).read_text()))), Path(tmp))
        admin = RawClient(kube.json("config", "view", "--raw", "--minify", "--flatten"), Path(tmp))

        answers = throttled.burst(url, 100)
        codes = [status for status, _ in answers]
        assert set(codes) <= {200, 429}, codes
        rejected = [headers for status, headers in answers if status == 429]
        assert rejected, "no 429 in a burst of 100 (is the FlowSchema matching?)"
        assert all(h.get("retry-after", "").isdigit() for h in rejected), rejected[:3]
        assert codes.count(200) >= 1, "the throttled level must still serve some requests"
        assert {h.get("x-kubernetes-pf-prioritylevel-uid") for _, h in answers} == {level_uid}

        admin_codes = [status for status, _ in admin.burst(url, 100)]
        assert admin_codes == [200] * 100, sorted(set(admin_codes))
