"""Record the API answers that the triage/sweep collection reads, for tests/unit/kube_double.py.

    eval "$(hack/local-cluster env)"
    python3 tests/unit/data/api/record_triage.py [--image sockdebug-agent:VERSION] [--testapp IMAGE]

On the real local cluster, in a namespace it creates (triage-rec-*) and deletes: Debian's
redis with a tcpSocket readiness probe on 6379 (it binds loopback: never Ready), a Service
selecting it, a NetworkPolicy, and a pod whose httpGet liveness probe targets a port
nothing serves (it restarts).  Recorded through the plugin's own transport, so the bytes
are what kube.Kube reads: the lists the engine needs (Services, EndpointSlices,
NetworkPolicies, the pods' Events, nodes, pods), the restarted container's previous log,
the agent's ``triage`` and ``sockets -tuap`` streams in the redis pod, and each list
refused (403) to a ServiceAccount without rights.  Writes triage.json next to this file.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from record import EXEC_QUERY, body, record_main, strip  # the recorder of recorded.json, next to this file
from sockdebug_plugin import inject, kube, lifecycle, profiles

LISTS = {
    "services": "/api/v1/namespaces/{ns}/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
    "networkpolicies": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "events": "/api/v1/namespaces/{ns}/events",
    "pods": "/api/v1/namespaces/{ns}/pods",
    "nodes": "/api/v1/nodes",
}


def kubectl(*args: str, input: str | None = None) -> str:
    return subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, check=True).stdout


def objects(ns: str, testapp: str) -> list[dict[str, Any]]:
    ctx = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "redis", "namespace": ns, "labels": {"app": "redis"}},
         "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
             "name": "redis", "image": "sockdebug-redis:0.1.0", "imagePullPolicy": "IfNotPresent",
             "ports": [{"name": "redis", "containerPort": 6379}], "securityContext": ctx,
             "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 2, "failureThreshold": 1}}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis", "namespace": ns},
         "spec": {"selector": {"app": "redis"}, "ports": [{"name": "redis", "port": 6379, "targetPort": "redis"}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "redis-only", "namespace": ns},
         "spec": {"podSelector": {"matchLabels": {"app": "redis"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"ports": [{"port": 6379}]}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "liveness", "namespace": ns,
                                                        "labels": {"app": "liveness"}},
         "spec": {"terminationGracePeriodSeconds": 0,
                  "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
                  "containers": [{
                      "name": "app", "image": testapp, "imagePullPolicy": "IfNotPresent", "securityContext": ctx,
                      "args": ["--listen", "0.0.0.0:8080"], "ports": [{"name": "http", "containerPort": 8080}],
                      "livenessProbe": {"httpGet": {"port": 9999, "path": "/healthz"}, "periodSeconds": 2,
                                        "failureThreshold": 1}}]}},
    ]


class Recorder:
    def __init__(self, image: str, testapp: str):
        self.kube = kube.connect()
        self.t = self.kube.transport
        self.image, self.testapp = image, testapp
        self.ns = f"triage-rec-{os.urandom(3).hex()}"
        self.out: dict[str, Any] = {"namespace": self.ns}

    def get(self, name: str, path: str, query: list | None = None, headers: dict | None = None) -> Any:
        resp = self.t.request("GET", path, query=query or [], headers={"Accept": "application/json", **(headers or {})},
                              body=None, timeout=30, stream=False)
        self.out[name] = {"status": resp.status, "body": body(resp.data)}
        return self.out[name]["body"]

    def exec(self, name: str, pod: str, container: str, command: list[str]) -> None:
        query = [("command", c) for c in command] + [("container", container), *EXEC_QUERY]
        ch = self.t.exec(f"/api/v1/namespaces/{self.ns}/pods/{pod}/exec", query)
        stdout = b"".join(ch.chunks(time.monotonic() + 60))
        self.out[name] = {"status": 101, "stdout": stdout.decode(), "stderr": ch.stderr.decode(),
                          "returncode": ch.returncode}

    def run(self) -> None:
        kubectl("create", "namespace", self.ns)
        try:
            self.record()
        finally:
            subprocess.run(["kubectl", "delete", "namespace", self.ns, "--wait=false"], capture_output=True)

    def record(self) -> None:
        ns = self.ns
        for _ in range(60):
            if subprocess.run(["kubectl", "-n", ns, "get", "sa", "default"], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                       "items": objects(ns, self.testapp)}))
        self.wait("redis", lambda p: p["status"].get("phase") == "Running" and any(
            "running" in (s.get("state") or {}) for s in p["status"].get("containerStatuses") or []))
        self.wait("liveness", lambda p: any(s.get("restartCount", 0) >= 2 for s in p["status"].get(
            "containerStatuses") or []), timeout=180)
        time.sleep(4)  # a few failed readiness probes: their Events
        pod = self.kube.get_pod(ns, "redis")
        serve = inject.container_spec(self.image, "IfNotPresent", "redis", profiles.for_container(
            "general", pod, "redis"), inject.serve_command(), serve=True)
        self.kube.add_ephemeral_container(ns, "redis", serve)
        lifecycle.wait_started(self.kube.watch_pod(ns, "redis", time.monotonic() + 90), serve["name"], 90,
                               one_shot=False)
        self.exec("exec_triage", "redis", serve["name"], ["sockdebug-agent", "triage"])
        self.exec("exec_sockets_all", "redis", serve["name"], ["sockdebug-agent", "sockets", "-tua", "-p"])
        for kind, path in LISTS.items():
            query = [("fieldSelector", "involvedObject.kind=Pod")] if kind == "events" else []
            self.get(kind, path.format(ns=ns), query)
        self.out["pods"]["body"]["items"] = [p for p in self.out["pods"]["body"]["items"]
                                             if p["metadata"]["name"] in ("redis", "liveness")]
        self.get("log_previous", f"/api/v1/namespaces/{ns}/pods/liveness/log",
                 [("container", "app"), ("tailLines", "30"), ("previous", "true")])
        self.record_denied()

    def wait(self, pod: str, done, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = strip(self.kube.get_pod(self.ns, pod))
            if done(p):
                return p
            time.sleep(1)
        raise SystemExit(f"pod {pod} did not get there in {timeout}s")

    def record_denied(self) -> None:
        """Every list, as a ServiceAccount without rights (impersonated)."""
        kubectl("-n", self.ns, "create", "serviceaccount", "nobody")
        who = {"Impersonate-User": f"system:serviceaccount:{self.ns}:nobody"}
        for kind, path in LISTS.items():
            self.get(f"forbidden_{kind}", path.format(ns=self.ns), headers=who)


def main() -> None:
    record_main(Recorder, "triage.json")


if __name__ == "__main__":
    main()
