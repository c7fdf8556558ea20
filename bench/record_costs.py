"""Costs behind three choices in docs/design.md, measured in-process on 40,000 socket
records and on a pod list:

- building records: ``tuple.__new__`` on the NamedTuple (what the parser does), the
  NamedTuple's own constructor, and a ``dataclass(slots=True)`` with the same fields;
- serialising them: ``schema.socket_to_json`` against ``json.dumps(schema.to_dict(...))``
  (the same text, asserted here);
- reading Kubernetes API answers: ``json.loads`` against the official client's
  ``V1PodList`` models (needs the plugin extra: ``pip install .[plugin]``).

    python3 bench/record_costs.py

Prints best-of-7 (records) and best-of-5 (pods) timings; results are recorded in
bench/results/record_costs.md.  The import cost of ``dataclasses`` is measured
separately with ``python3 -I -X importtime -c 'import typing, json, dataclasses'``.
"""

from __future__ import annotations

import json
import sys
import time
import timeit
from dataclasses import dataclass
from typing import Any

from sockdebug_agent.schema import Socket, socket_to_json, to_dict

N = 40_000
ROW = (
    "inet",
    "tcp",
    "ESTAB",
    0,
    0,
    "127.0.0.1",
    41836,
    "127.0.0.1",
    8080,
    None,
    11787,
    0,
    15,
    None,
    None,
    None,
    None,
    None,
    None,
)


@dataclass(slots=True)
class SocketDC:
    family: str
    netid: str
    state: str
    recv_q: int
    send_q: int
    local_address: Any
    local_port: int
    peer_address: Any
    peer_port: int
    interface: Any = None
    inode: int = 0
    uid: Any = None
    cookie: Any = None
    v6only: Any = None
    processes: Any = None
    timer: Any = None
    extended: Any = None
    skmem: Any = None
    tcp_info: Any = None


def best_ms(fn, repeat: int = 7, number: int = 1) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1000


def records() -> None:
    new = tuple.__new__
    builds = (
        ("tuple.__new__(Socket, row)", lambda: [new(Socket, ROW) for _ in range(N)]),
        ("Socket(*row)", lambda: [Socket(*ROW) for _ in range(N)]),
        ("dataclass(slots=True)(*row)", lambda: [SocketDC(*ROW) for _ in range(N)]),
    )
    for name, build in builds:
        print(f"build {N} records: {name:28} {best_ms(build):6.1f} ms")
    plain = [new(Socket, ROW)] * N
    owned = [new(Socket, (*ROW[:14], [{"pid": 4242, "comm": "nginx", "fd": 6}], *ROW[15:]))] * N
    dumps = json.dumps
    for name, rows in (("plain inet row", plain), ("with processes (-p)", owned)):
        assert socket_to_json(rows[0]) == dumps(to_dict(rows[0]), separators=(",", ":"))
        hand = best_ms(lambda rows=rows: [socket_to_json(s) for s in rows])
        generic = best_ms(lambda rows=rows: [dumps(to_dict(s), separators=(",", ":")) for s in rows])
        print(
            f"serialise {N}, {name}: socket_to_json {hand:6.1f} ms, json.dumps(to_dict) {generic:6.1f} ms "
            f"({generic / hand:.1f}x)"
        )


def _container(name: str, image: str, port: int) -> dict:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": port, "name": "http", "protocol": "TCP"}],
        "env": [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(8)],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": port, "scheme": "HTTP"}, "periodSeconds": 10},
        "volumeMounts": [
            {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def _status(name: str, image: str, n: int) -> dict:
    return {
        "name": name,
        "image": image,
        "imageID": image + "@sha256:" + "ab" * 32,
        "containerID": f"containerd://{n:064x}",
        "ready": True,
        "restartCount": 0,
        "started": True,
        "state": {"running": {"startedAt": "2026-11-26T06:00:00Z"}},
        "lastState": {},
    }


def _pod(i: int) -> dict:
    """A typical Deployment pod: two containers, probes, env, a projected token volume."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"web-7d9c8b6f5-{i:05d}",
            "namespace": "shop",
            "uid": f"{i:08x}-0000-4000-8000-000000000000",
            "resourceVersion": str(100000 + i),
            "creationTimestamp": "2026-11-26T06:00:00Z",
            "generateName": "web-7d9c8b6f5-",
            "labels": {"app": "web", "pod-template-hash": "7d9c8b6f5"},
            "annotations": {"kubectl.kubernetes.io/default-container": "app"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d9c8b6f5",
                    "uid": "11111111-2222-4333-8444-555555555555",
                    "controller": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-11-26T06:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}},
                }
            ],
        },
        "spec": {
            "containers": [
                _container("app", "registry.example/web:1.2.3", 8080),
                _container("proxy", "registry.example/envoy:1.30", 9901),
            ],
            "volumes": [
                {
                    "name": "kube-api-access",
                    "projected": {
                        "defaultMode": 420,
                        "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}],
                    },
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": "node-1",
            "securityContext": {"runAsUser": 1000},
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            ],
        },
        "status": {
            "phase": "Running",
            "hostIP": "192.0.2.10",
            "podIP": "198.51.100.7",
            "qosClass": "Burstable",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-11-26T06:00:00Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [
                _status("app", "registry.example/web:1.2.3", 2 * i),
                _status("proxy", "registry.example/envoy:1.30", 2 * i + 1),
            ],
        },
    }


class _Response:
    def __init__(self, data: str) -> None:
        self.data = data


def pods() -> None:
    t0 = time.perf_counter()
    try:
        from kubernetes import client
    except ImportError:
        print("pods: skipped (the kubernetes client is not installed)")
        return
    import_ms = (time.perf_counter() - t0) * 1000
    api = client.ApiClient()
    for count in (1, 50):
        body = json.dumps(
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": "1"},
                "items": [_pod(i) for i in range(count)],
            }
        )
        raw = best_ms(lambda body=body: json.loads(body), repeat=5, number=20)
        models = best_ms(lambda body=body: api.deserialize(_Response(body), "V1PodList"), repeat=5, number=20)
        print(
            f"pod list of {count} ({len(body) // 1024} KiB): json.loads {raw:6.2f} ms, "
            f"V1PodList models {models:6.2f} ms ({models / raw:.0f}x)"
        )
    print(f"import kubernetes.client: {import_ms:.0f} ms (first import in this process)")


if __name__ == "__main__":
    print(f"Python {sys.version.split()[0]}")
    records()
    pods()
