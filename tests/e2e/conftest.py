"""End-to-end tests: a real API server and kubelet, whichever cluster KUBECONFIG points to.

Every test collected under tests/e2e is marked ``e2e`` (select or deselect with
``-m e2e`` / ``-m "not e2e"``) and is skipped, with the reason, when no cluster answers.
The check runs once, lazily, when the first e2e test is set up.

Clusters: ``hack/local-cluster up`` then ``eval "$(hack/local-cluster env)"`` here;
kind for users (see docs/local-cluster.md).

Environment:
  KUBECONFIG                 the cluster (kubectl's usual rules)
  SOCKDEBUG_KUBECTL          the kubectl client to run (default: kubectl on PATH)
  SOCKDEBUG_IMAGE            agent image (default sockdebug-agent:VERSION)
  SOCKDEBUG_TESTAPP_IMAGE    test workload image (default sockdebug-testapp:VERSION)
  SOCKDEBUG_TEST_IMAGE       fallback workload image when the test app is absent
                             (the local cluster's busybox, sockdebug.local/busybox:1.35)
  SOCKDEBUG_USER_KUBECONFIG  optional extra least-privilege kubeconfig to prove
                             (hack/local-cluster env sets it)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent
KUBECTL = os.environ.get("SOCKDEBUG_KUBECTL", "kubectl")

_cluster_state: dict[str, object] = {}


def _cluster_reachable() -> tuple[bool, str]:
    if "ok" not in _cluster_state:
        ok, why = False, ""
        if shutil.which(KUBECTL) is None:
            why = f"{KUBECTL!r} is not on PATH"
        else:
            try:
                proc = subprocess.run([KUBECTL, "version", "-o", "json", "--request-timeout=5s"],
                                      capture_output=True, text=True, timeout=30)
                ok = proc.returncode == 0 and "serverVersion" in proc.stdout
                if not ok:
                    last = (proc.stderr.strip().splitlines() or ["no server version"])[-1]
                    where = os.environ.get("KUBECONFIG", "~/.kube/config")
                    why = f"no Kubernetes cluster answers at KUBECONFIG={where}: {last}"
            except subprocess.TimeoutExpired:
                why = "kubectl version timed out"
        _cluster_state.update(ok=ok, why=why + " (hack/local-cluster up; eval \"$(hack/local-cluster env)\")")
    return bool(_cluster_state["ok"]), str(_cluster_state["why"])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # tryfirst: the marker must exist before `-m` deselection looks at it.
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def pytest_runtest_setup(item):
    if item.get_closest_marker("e2e") is None or E2E_DIR not in Path(str(item.fspath)).resolve().parents:
        return
    ok, why = _cluster_reachable()
    if not ok:
        pytest.skip(why)


# ---------------------------------------------------------------------------------------
# helpers shared by the e2e modules (fixtures below hand them out)
# ---------------------------------------------------------------------------------------
def _default_version() -> str:
    try:
        from sockdebug_agent import __version__
    except ImportError:
        return "0.1.0"
    return __version__


@dataclass
class Kube:
    """kubectl as a user runs it: text in, text out, exit code kept."""

    kubeconfig: str | None = None

    def run(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120,
            kubeconfig: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        if kubeconfig or self.kubeconfig:
            env["KUBECONFIG"] = kubeconfig or self.kubeconfig or ""
        proc = subprocess.run([KUBECTL, *args], input=input, text=True, capture_output=True, env=env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} -> {proc.returncode}\n{proc.stderr}{proc.stdout}")
        return proc

    def json(self, *args: str, **kw) -> dict:
        return json.loads(self.run(*args, "-o", "json", **kw).stdout)

    def apply(self, manifest: str | dict | list, **kw) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": manifest} if isinstance(manifest, list) else manifest)
        self.run("apply", "-f", "-", input=text, **kw)

    def node_images(self) -> set[str]:
        names: set[str] = set()
        for node in self.json("get", "nodes")["items"]:
            for image in node.get("status", {}).get("images", []):
                names.update(image.get("names") or [])
        return names

    def has_image(self, ref: str) -> bool:
        return bool({ref, normalize_image(ref)} & self.node_images())

    def wait_ephemeral_done(self, ns: str, pod: str, name: str, timeout: float = 120,
                            kubeconfig: str | None = None) -> dict:
        """Wait until ephemeral container NAME terminated; fail with the kubelet's reason if it
        stays waiting (kubectl itself would wait forever, kubernetes/kubernetes#108135)."""
        deadline = time.monotonic() + timeout
        state: dict = {}
        while time.monotonic() < deadline:
            status = self.json("-n", ns, "get", "pod", pod, kubeconfig=kubeconfig).get("status", {})
            for st in status.get("ephemeralContainerStatuses", []):
                if st["name"] == name:
                    state = st.get("state", {})
            if "terminated" in state:
                return state["terminated"]
            time.sleep(0.5)
        raise AssertionError(f"ephemeral container {name} of {ns}/{pod} did not finish in {timeout}s: {state}")


def normalize_image(ref: str) -> str:
    """docker.io normalisation the way the node reports image names."""
    first, _, rest = ref.partition("/")
    if not rest:
        return f"docker.io/library/{ref}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{ref}"
    return ref


@pytest.fixture(scope="session")
def kube() -> Kube:
    return Kube()


@pytest.fixture(scope="session")
def agent_image() -> str:
    return os.environ.get("SOCKDEBUG_IMAGE", f"sockdebug-agent:{_default_version()}")


@pytest.fixture(scope="session")
def testapp_image() -> str:
    return os.environ.get("SOCKDEBUG_TESTAPP_IMAGE", f"sockdebug-testapp:{_default_version()}")


@pytest.fixture
def make_namespace(kube: Kube):
    """Create namespaces (optionally with a Pod Security enforce level) and delete them,
    waiting for the deletion, when the test ends."""
    made: list[str] = []

    def make(enforce: str | None = None) -> str:
        name = f"sde2e-{secrets.token_hex(3)}"
        labels = {"sockdebug.dev/e2e": "true"}
        if enforce:
            labels.update({"pod-security.kubernetes.io/enforce": enforce,
                           "pod-security.kubernetes.io/enforce-version": "latest"})
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
        made.append(name)
        deadline = time.monotonic() + 60  # pods are Forbidden until the "default" ServiceAccount exists
        while kube.run("-n", name, "get", "serviceaccount", "default", check=False).returncode != 0:
            assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
            time.sleep(0.5)
        return name

    yield make
    for name in made:
        kube.run("delete", "namespace", name, "--ignore-not-found", "--timeout=180s", check=False, timeout=240)
