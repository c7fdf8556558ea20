"""Record the Kubernetes API's answers that tests/unit/kube_double.py replays.

    eval "$(hack/local-cluster env)"      # or any cluster KUBECONFIG points to
    python3 tests/unit/data/api/record.py [--image sockdebug-agent:VERSION] [--testapp IMAGE]

Talks to the cluster through the plugin's own transport (kubeclient.ClientTransport),
so the bytes are exactly what kube.Kube reads: pods, an ephemeral-container patch, the
watch until the agent runs, an exec's stream, a one-shot agent's and an `ids` probe's
logs, a node pod's life, and every refusal it can provoke for real (404, exec into a
missing or an exited container, 403 RBAC and Pod Security, 401, 409, 422, image pull
failures).  429 and 5xx cannot be provoked on demand: their entries are built in the
same Status shape and marked ``"synthetic": true``.  Works in namespaces it creates
(core-rec-*) and deletes them.  Writes recorded.json next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sockdebug_agent import __version__
from sockdebug_plugin import inject, kube, lifecycle, profiles

HERE = Path(__file__).resolve().parent
EXEC_QUERY = [("stdout", "true"), ("stderr", "true"), ("stdin", "false"), ("tty", "false")]


def strip(obj: Any) -> Any:
    """Pods without managedFields (noise, and most of the bytes)."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k != "managedFields"}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def body(data: bytes) -> Any:
    try:
        return strip(json.loads(data))
    except ValueError:
        return data.decode("utf-8", "replace")


class Recorder:
    def __init__(self, image: str, testapp: str):
        self.kube = kube.connect()
        self.t = self.kube.transport
        self.image, self.testapp = image, testapp
        self.out: dict[str, Any] = {}
        suffix = os.urandom(3).hex()
        self.ns, self.rns = f"core-rec-{suffix}", f"core-rec-{suffix}-r"

    def http(self, name: str, method: str, path: str, body_: Any = None, content_type: str = "application/json",
             query: list | None = None, headers: dict | None = None) -> Any:
        hdrs = {"Accept": "application/json", "Content-Type": content_type, **(headers or {})}
        resp = self.t.request(method, path, query=query or [], headers=hdrs, body=body_, timeout=30, stream=False)
        self.out[name] = {"status": resp.status, "body": body(resp.data)}
        return self.out[name]["body"]

    def watch_until(self, name: str, pod: str, done, timeout: float = 90) -> None:
        """The watch lines of ``pod`` from now until ``done(pod)``."""
        current = self.kube.get_pod(self.ns, pod)
        lines = []
        resp = self.t.request("GET", f"/api/v1/namespaces/{self.ns}/pods", query=[
            ("watch", "true"), ("fieldSelector", f"metadata.name={pod}"),
            ("resourceVersion", current["metadata"]["resourceVersion"]), ("timeoutSeconds", str(int(timeout)))],
            headers={"Accept": "application/json"}, body=None, timeout=timeout + 5, stream=True)
        try:
            for line in resp:
                event = json.loads(line)
                lines.append(strip(event))
                if done(event["object"]):
                    break
        finally:
            resp.release_conn()
        self.out[name] = {"status": 200, "events": lines}

    def exec(self, name: str, pod: str, container: str, command: list[str]) -> None:
        query = [("command", c) for c in command] + [("container", container), *EXEC_QUERY]
        try:
            ch = self.t.exec(f"/api/v1/namespaces/{self.ns}/pods/{pod}/exec", query)
        except kube.Refused as exc:
            self.out[name] = {"status": exc.status, "body": body(exc.body)}
            return
        stdout = b"".join(ch.chunks(time.monotonic() + 60))
        self.out[name] = {"status": 101, "stdout": stdout.decode(), "stderr": ch.stderr.decode(),
                          "returncode": ch.returncode}

    def logs(self, name: str, pod: str, container: str) -> None:
        data = b"".join(self.kube.logs(self.ns, pod, container, follow=True, timeout=60))
        self.out[name] = {"status": 200, "body": data.decode()}

    def agent(self, pod: dict, command: list[str], serve: bool, image: str | None = None,
              pull: str = "IfNotPresent") -> dict:
        spec = inject.container_spec(image or self.image, pull, "app", profiles.for_container("general", pod, "app"),
                                     command, serve)
        return spec

    def wait_ephemeral(self, pod: str, name: str, one_shot: bool) -> dict:
        return lifecycle.wait_started(self.kube.watch_pod(self.ns, pod, time.monotonic() + 90), name, 90,
                                      one_shot=one_shot)

    def run(self) -> None:
        for name, level in ((self.ns, "privileged"), (self.rns, "restricted")):
            self.t.request("POST", "/api/v1/namespaces", query=[], headers={"Content-Type": "application/json"},
                                body={"metadata": {"name": name, "labels": {
                                    "pod-security.kubernetes.io/enforce": level}}}, timeout=30, stream=False)
        try:
            self.record_all()
        finally:
            for name in (self.ns, self.rns):
                subprocess.run(["kubectl", "delete", "namespace", name, "--wait=false"], capture_output=True)

    def app_pod(self, ns: str, name: str) -> dict:
        ctx = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"terminationGracePeriodSeconds": 0,
                         "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [
                             {"name": "app", "image": self.testapp, "imagePullPolicy": "IfNotPresent",
                              "args": ["--listen", "127.0.0.1:8080", "--listen", "0.0.0.0:9090"],
                              "securityContext": ctx},
                             {"name": "sidecar", "image": self.testapp, "imagePullPolicy": "IfNotPresent",
                              "args": ["--listen", "0.0.0.0:15000"], "securityContext": ctx}]}}

    def record_all(self) -> None:
        k, ns = self.kube, self.ns
        for _ in range(60):  # pods are Forbidden until the default ServiceAccount exists
            if self.t.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default", query=[], headers={},
                              body=None, timeout=10, stream=False).status == 200:
                break
            time.sleep(0.5)
        self.http("create_pod", "POST", f"/api/v1/namespaces/{ns}/pods", self.app_pod(ns, "api"))
        self.http("create_conflict", "POST", f"/api/v1/namespaces/{ns}/pods", self.app_pod(ns, "api"))
        subprocess.run(["kubectl", "-n", ns, "wait", "--for=condition=Ready", "pod/api", "--timeout=120s"],
                       check=True, capture_output=True)
        pod = self.http("pod", "GET", f"/api/v1/namespaces/{ns}/pods/api")
        self.http("pod_not_found", "GET", f"/api/v1/namespaces/{ns}/pods/nosuch")
        # what a cluster without ephemeral containers answers the patch: an unknown subresource
        self.http("subresource_not_found", "PATCH", f"/api/v1/namespaces/{ns}/pods/api/nosuchsubresource",
                  {"spec": {}}, kube.SMP)
        self.http("namespace", "GET", f"/api/v1/namespaces/{self.rns}")
        self.http("ssar_allowed", "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": "create", "resource": "pods", "subresource": "exec",
                                            "namespace": ns}}})
        # the agent: patch, watch until it runs, exec a query
        serve = self.agent(pod, inject.serve_command(), serve=True)
        self.out["agent_name"] = serve["name"]
        self.http("patch", "PATCH", f"/api/v1/namespaces/{ns}/pods/api/ephemeralcontainers",
                  {"spec": {"ephemeralContainers": [serve]}}, kube.SMP)
        self.watch_until("watch_running", "api", lambda p: "running" in (lifecycle.ephemeral_status(
            p, serve["name"]).get("state") or {}))
        self.exec("exec_sockets", "api", serve["name"], ["sockdebug-agent", "sockets", "-tl", "-p"])
        sidecar = inject.container_spec(self.image, "IfNotPresent", "sidecar", profiles.for_container(
            "general", pod, "sidecar"), inject.serve_command(), serve=True)
        self.out["sidecar_agent_name"] = sidecar["name"]
        k.add_ephemeral_container(ns, "api", sidecar)
        self.wait_ephemeral("api", sidecar["name"], one_shot=False)
        self.exec("exec_sockets_sidecar", "api", sidecar["name"], ["sockdebug-agent", "sockets", "-tl", "-p"])
        self.exec("exec_no_such_container", "api", "nosuch", ["sockdebug-agent", "sockets"])
        # one-shot agents: a query, and the ids probe, read from their logs
        once = self.agent(pod, ["sockdebug-agent", "sockets", "-tl", "-p"], serve=False)
        k.add_ephemeral_container(ns, "api", once)
        self.wait_ephemeral("api", once["name"], one_shot=True)
        self.logs("logs_one_shot", "api", once["name"])
        probe = self.agent(pod, ["sockdebug-agent", "ids"], serve=False)
        k.add_ephemeral_container(ns, "api", probe)
        self.wait_ephemeral("api", probe["name"], one_shot=True)
        self.logs("logs_ids", "api", probe["name"])
        time.sleep(2)
        self.exec("exec_exited_container", "api", probe["name"], ["sockdebug-agent", "ids"])
        # failures to start
        absent = self.agent(pod, inject.serve_command(), serve=True, image="sockdebug-absent:0.0.0", pull="Never")
        k.add_ephemeral_container(ns, "api", absent)
        self.watch_until("watch_image_never_pull", "api", lambda p: (lifecycle.ephemeral_status(
            p, absent["name"]).get("state") or {}).get("waiting", {}).get("reason") == "ErrImageNeverPull")
        unreachable = self.agent(pod, inject.serve_command(), serve=True, image="localhost:1/sockdebug-nosuch:1")
        k.add_ephemeral_container(ns, "api", unreachable)
        self.watch_until("watch_image_pull", "api", lambda p: (lifecycle.ephemeral_status(
            p, unreachable["name"]).get("state") or {}).get("waiting", {}).get("reason") in lifecycle.FATAL_WAITING)
        bad = dict(self.agent(pod, inject.serve_command(), serve=True), name="Not_A_Valid_Name")
        self.http("patch_invalid", "PATCH", f"/api/v1/namespaces/{ns}/pods/api/ephemeralcontainers",
                  {"spec": {"ephemeralContainers": [bad]}}, kube.SMP)
        self.http("patch_pod_not_found", "PATCH", f"/api/v1/namespaces/{ns}/pods/nosuch/ephemeralcontainers",
                  {"spec": {"ephemeralContainers": [serve]}}, kube.SMP)
        # Pod Security: a general-profile agent in a restricted namespace
        self.http("create_restricted_pod", "POST", f"/api/v1/namespaces/{self.rns}/pods",
                  self.app_pod(self.rns, "locked"))
        subprocess.run(["kubectl", "-n", self.rns, "wait", "--for=condition=Ready", "pod/locked",
                        "--timeout=120s"], check=True, capture_output=True)
        self.http("patch_pod_security", "PATCH", f"/api/v1/namespaces/{self.rns}/pods/locked/ephemeralcontainers",
                  {"spec": {"ephemeralContainers": [serve]}}, kube.SMP)
        # a node pod's life: create, watch until it ran, logs, delete
        node = pod["spec"]["nodeName"]
        body_ = profiles.node_pod("sockdebug-node-rec000", node, self.image, "IfNotPresent",
                                  ["sockdebug-agent", "sockets", "-tl"], profiles.for_node("general"), "node")
        self.http("node_pod_create", "POST", f"/api/v1/namespaces/{ns}/pods", body_)
        self.watch_until("node_pod_watch", "sockdebug-node-rec000", lambda p: lifecycle.container_status(
            p, "agent").get("state", {}).get("terminated") is not None)
        self.logs("node_pod_logs", "sockdebug-node-rec000", "agent")
        self.http("node_pod_delete", "DELETE", f"/api/v1/namespaces/{ns}/pods/sockdebug-node-rec000",
                  query=[("gracePeriodSeconds", "0")])
        self.http("delete_not_found", "DELETE", f"/api/v1/namespaces/{ns}/pods/sockdebug-node-rec000",
                  query=[("gracePeriodSeconds", "0")])
        self.record_denied()
        self.synthesise()

    def record_denied(self) -> None:
        """A ServiceAccount with no rights (403s), and a token the API server does not know (401)."""
        ns = self.ns
        self.http("create_sa", "POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "nobody"}})
        token = subprocess.run(["kubectl", "-n", ns, "create", "token", "nobody", "--duration=10m"],
                               capture_output=True, text=True, check=True).stdout.strip()
        import urllib3

        cfg = self.t.api.configuration
        anonymous = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=cfg.ssl_ca_cert)  # no client cert
        for name, bearer in (("forbidden", token), ("unauthorized", "not-a-token")):
            resp = anonymous.request("GET", f"{self.t.host}/api/v1/namespaces/{ns}/pods/api",
                                     headers={"Authorization": f"Bearer {bearer}"})
            self.out[name] = {"status": resp.status, "body": body(resp.data)}
        import copy

        from sockdebug_plugin.kubeclient import ClientTransport, load

        as_nobody = copy.copy(cfg)
        as_nobody.cert_file = as_nobody.key_file = None
        as_nobody.api_key = {"authorization": f"Bearer {token}"}
        try:
            ClientTransport(load(), as_nobody).exec(f"/api/v1/namespaces/{ns}/pods/api/exec", [
                ("command", "true"), ("container", "app"), *EXEC_QUERY])
        except kube.Refused as exc:
            self.out["exec_forbidden"] = {"status": exc.status, "body": body(exc.body)}
        self.http("ssar_denied", "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": "create", "resource": "pods", "subresource": "exec",
                                            "namespace": ns}}},
            headers={"Impersonate-User": f"system:serviceaccount:{ns}:nobody"})

    def synthesise(self) -> None:
        template = self.out["pod_not_found"]["body"]
        for code, reason, message in ((429, "TooManyRequests", "Too many requests, please try again later."),
                                      (500, "InternalError", "Internal error occurred: etcd request timed out"),
                                      (503, "ServiceUnavailable", "the server is currently unable to handle the "
                                                                  "request")):
            self.out[f"status_{code}"] = {"status": code, "synthetic": True, "body": {
                **template, "reason": reason, "code": code, "message": message, "details": {}}}


def record_main(recorder: Any, name: str) -> None:
    """--image/--testapp from the command line, ``recorder(image, testapp).run()``, and its
    answers written to NAME next to this file (record_triage.py records with it too)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default=os.environ.get("SOCKDEBUG_IMAGE", f"sockdebug-agent:{__version__}"))
    ap.add_argument("--testapp", default=os.environ.get("SOCKDEBUG_TESTAPP_IMAGE",
                                                        f"sockdebug-testapp:{__version__}"))
    args = ap.parse_args()
    rec = recorder(args.image, args.testapp)
    rec.run()
    server = json.loads(subprocess.run(["kubectl", "version", "-o", "json"], capture_output=True,
                                       text=True).stdout or "{}").get("serverVersion", {}).get("gitVersion")
    rec.out["_recorded"] = {"server": server, "date": time.strftime("%Y-%m-%d"), "image": args.image}
    path = HERE / name
    path.write_text(json.dumps(rec.out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(rec.out)} entries)", file=sys.stderr)


def main() -> None:
    record_main(Recorder, "recorded.json")


if __name__ == "__main__":
    main()
