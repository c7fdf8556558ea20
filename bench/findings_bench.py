"""The findings engine at scale: synthetic clusters of 1k, 3k and 10k pods (with Services,
EndpointSlices, NetworkPolicies, nodes, Events and agent sockets in fixed proportion to the
pods: 10k pods come with 3,000 Services, 500 NetworkPolicies and 200 nodes), analysed by
``engine.analyse``; and the peer index built from the same lists, naming every connection's
remote address.

    python3 bench/findings_bench.py [--repeat 5] [--sizes 1000,3000,10000]

Sizes are measured interleaved (1k, 3k, 10k, 1k, ...), median of the repeats.  Both the
process's CPU time and the wall time are shown: on a shared machine the wall time also
counts the time other processes had the CPU, so linearity is judged on CPU time.  Builds its input in memory: no
cluster, no network.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from typing import Any

from sockdebug_agent.schema import Limits, Socket
from sockdebug_plugin import engine
from sockdebug_plugin.peers import PeerIndex
from sockdebug_plugin.view import ClusterInput, PodObservation

NAMESPACES_PER_1K = 10
PODS_PER_SERVICE = 10 / 3  # 3,000 Services for 10,000 pods
PODS_PER_POLICY = 20  # 500 NetworkPolicies for 10,000 pods
PODS_PER_NODE = 50  # 200 nodes for 10,000 pods
FAULTY = 20  # every 20th pod has a problem of some kind


def _ip(i: int, base: int = 10) -> str:
    return f"{base}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def _sock(state: str, local: str, lport: int, peer: str, pport: int, container: str, pid: int,
          netid: str = "tcp") -> Socket:
    return Socket("inet", netid, state, 0, 128 if state == "LISTEN" else 0, local, lport, peer, pport,
                  inode=pid * 100 + lport % 97, processes=[{"pid": pid, "comm": container, "fd": 3,
                                                             "container": container}])


def _pod(i: int, ns: str, node: int, app: str, fault: int) -> tuple[dict, list[Socket]]:
    """An app container (two ports, readiness and liveness probes) with a mesh-style sidecar
    (an admin port on loopback, a health port); ``fault``: 1 binds loopback, 2 serves metrics
    on the wrong port, 3 crash-loops."""
    ip, ready = _ip(i), fault not in (1, 3)
    app_c = {"name": "app", "image": "app", "args": ["--listen", ":8080"],
             "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
             "readinessProbe": {"httpGet": {"port": "http", "path": "/ready"}},
             "livenessProbe": {"tcpSocket": {"port": 8080}}}
    side = {"name": "proxy", "image": "proxy", "ports": [{"name": "http-health", "containerPort": 15021}],
            "readinessProbe": {"httpGet": {"port": 15021, "path": "/healthz/ready"}}}
    statuses = [{"name": "app", "ready": ready, "started": True, "restartCount": 5 if fault == 3 else 0,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}} if fault == 3 else {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}} if fault == 3 else {}},
                {"name": "proxy", "ready": True, "started": True, "restartCount": 0, "state": {"running": {}}}]
    pod = {"metadata": {"name": f"pod-{i}", "namespace": ns, "uid": f"u{i}",
                        "labels": {"app": app, "tier": "web" if i % 3 else "api", "version": f"v{i % 2}"}},
           "spec": {"nodeName": f"node-{node}", "containers": [app_c, side]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": _ip(node, 192),
                      "containerStatuses": statuses,
                      "conditions": [{"type": "Ready", "status": str(ready)},
                                     {"type": "ContainersReady", "status": str(ready)}]}}
    socks = [_sock("LISTEN", "127.0.0.1" if fault == 1 else "0.0.0.0", 8080, "0.0.0.0", 0, "app", 10),
             _sock("LISTEN", "0.0.0.0", 9091 if fault == 2 else 9090, "0.0.0.0", 0, "app", 10),
             _sock("LISTEN", "127.0.0.1", 15000, "0.0.0.0", 0, "proxy", 20),
             _sock("LISTEN", "0.0.0.0", 15021, "0.0.0.0", 0, "proxy", 20),
             _sock("UNCONN", "0.0.0.0", 40000 + i % 20000, "0.0.0.0", 0, "app", 10, "udp")]
    return pod, socks


def _exporter(i: int, node: int) -> tuple[dict, list[Socket]]:
    """A DaemonSet's hostNetwork pod (node-exporter style): one per node."""
    ip = _ip(node, 192)
    c = {"name": "exporter", "image": "exporter", "ports": [{"name": "metrics", "containerPort": 9100}],
         "readinessProbe": {"httpGet": {"port": 9100, "path": "/"}}}
    pod = {"metadata": {"name": f"exporter-{node}", "namespace": "monitoring", "uid": f"u{i}",
                        "labels": {"app": "node-exporter"}},
           "spec": {"nodeName": f"node-{node}", "hostNetwork": True, "containers": [c]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": ip,
                      "containerStatuses": [{"name": "exporter", "ready": True, "restartCount": 0,
                                             "state": {"running": {}}}],
                      "conditions": [{"type": "Ready", "status": "True"}]}}
    return pod, [_sock("LISTEN", "0.0.0.0", 9100, "0.0.0.0", 0, "exporter", 30)]


def cluster(n: int) -> tuple[ClusterInput, list[tuple[str, int]]]:
    """A cluster of ``n`` pods and everything in proportion; also the remote (address, port)
    of every connection, for the peer index."""
    namespaces = max(1, n * NAMESPACES_PER_1K // 1000)
    services_n, policies_n, nodes_n = int(n / PODS_PER_SERVICE), n // PODS_PER_POLICY, max(1, n // PODS_PER_NODE)
    nodes = [{"metadata": {"name": f"node-{j}"}, "status": {"addresses": [
        {"type": "InternalIP", "address": _ip(j, 192)}]}} for j in range(nodes_n)]
    pods, observed, events, logs, remotes = [], {}, [], {}, []
    for i in range(n):
        ns, node = f"ns-{i % namespaces}", i // PODS_PER_NODE
        fault = (i // FAULTY) % 4 if i % FAULTY == 0 else 0
        if i % PODS_PER_NODE == 1:
            pod, socks = _exporter(i, node)
        else:
            pod, socks = _pod(i, ns, node, f"app-{i % services_n}", fault)
        pods.append(pod)
        k = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        for c in range(3):
            peer = (_ip((i + c * 7919) % n), 8080) if c < 2 else (_ip(i % services_n, 96), 80)
            socks.append(_sock("ESTAB", pod["status"]["podIP"], 50000 + c, peer[0], peer[1],
                               pod["spec"]["containers"][0]["name"], 10))
            remotes.append(peer)
        if fault != 3:
            observed[k] = PodObservation(socks, Limits({}, {}, {"Tcp": {"OutRsts": i % 50}}))
        if fault in (1, 3):
            events.append({"involvedObject": {"kind": "Pod", "namespace": k[0], "name": k[1],
                                              "fieldPath": "spec.containers{app}"},
                           "reason": "Unhealthy", "type": "Warning", "count": 12,
                           "lastTimestamp": "2025-01-01T00:00:00Z",
                           "message": f"Readiness probe failed: dial tcp {pod['status']['podIP']}:8080: connect: "
                                      "connection refused"})
        if fault == 3:
            logs[(*k, "app")] = "panic: cannot read config\n"
    services, slices = [], []
    by_app: dict[str, list[dict]] = {}
    for p in pods:
        by_app.setdefault(p["metadata"]["labels"]["app"], []).append(p)
    for j in range(services_n):
        members = by_app.get(f"app-{j}", [])
        ns = members[0]["metadata"]["namespace"] if members else "ns-0"
        services.append({"metadata": {"name": f"svc-{j}", "namespace": ns},
                         "spec": {"selector": {"app": f"app-{j}"}, "clusterIP": _ip(j, 96), "clusterIPs": [_ip(j, 96)],
                                  "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                                            {"name": "metrics", "port": 9090, "targetPort": 9090}]}})
        slices.append({"metadata": {"name": f"svc-{j}-x", "namespace": ns,
                                    "labels": {"kubernetes.io/service-name": f"svc-{j}"}},
                       "endpoints": [{"addresses": [p["status"]["podIP"]],
                                      "conditions": {"ready": p["status"]["conditions"][0]["status"] == "True"},
                                      "targetRef": {"kind": "Pod", "name": p["metadata"]["name"], "namespace": ns}}
                                     for p in members if p["metadata"]["namespace"] == ns]})
    policies = []
    for j in range(policies_n):
        ns, kind = f"ns-{j % namespaces}", j // namespaces % 5
        name, selector, types, ingress = [
            ("default-deny", {}, ["Ingress"], []),
            ("allow-web", {}, ["Ingress"], [{"from": [{"namespaceSelector": {}}],
                                             "ports": [{"port": "http"}, {"port": 15021}]}]),
            ("allow-metrics", {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]},
             ["Ingress"], [{"from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                            "ports": [{"port": 9000, "endPort": 9100}]}]),
            ("allow-app", {"matchLabels": {"app": f"app-{j}"}}, None, [{"ports": [{"port": 8080}]}]),
            ("egress", {}, ["Egress"], []),
        ][kind]
        policies.append({"metadata": {"name": f"{name}-{j}", "namespace": ns},
                         "spec": {"podSelector": selector, **({"policyTypes": types} if types else {}),
                                  "ingress": ingress}})
    return ClusterInput(pods=pods, services=services, endpoint_slices=slices, network_policies=policies,
                        nodes=nodes, events=events, logs=logs, observed=observed), remotes


def measure(data: ClusterInput, remotes: list[tuple[str, int]]) -> dict[str, Any]:
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    report = engine.analyse(data)
    analysed, cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    index = PeerIndex(data.pods, data.services, data.nodes)
    built = time.perf_counter() - start
    start = time.perf_counter()
    named = sum(1 for addr, port in remotes if index.lookup(addr, port) is not None)
    looked = time.perf_counter() - start
    return {"analyse": analysed, "cpu": cpu, "findings": len(report.findings), "index": built, "lookups": len(remotes),
            "lookup": looked, "named": named}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sizes", default="1000,3000,10000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    inputs = {n: cluster(n) for n in sizes}
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for _ in range(args.repeat):
        for n in sizes:  # interleaved, so a load spike hits every size alike
            runs[n].append(measure(*inputs[n]))
    base = sizes[0]

    def med(n: int, field: str) -> float:
        return statistics.median(r[field] for r in runs[n])

    print("| pods | Services | NetworkPolicies | nodes | findings | analyse CPU | analyse wall | CPU per pod | "
          f"CPU vs linear from {base} | peer index build | lookups | per lookup | named |")
    print("|---" * 13 + "|")
    for n in sizes:
        data, r0 = inputs[n][0], runs[n][0]
        linear = med(n, "cpu") / med(base, "cpu") / (n / base)
        print(f"| {n} | {len(data.services)} | {len(data.network_policies)} | {len(data.nodes)} | {r0['findings']} | "
              f"{med(n, 'cpu'):.2f} s | {med(n, 'analyse'):.2f} s | {med(n, 'cpu') / n * 1e6:.0f} µs | {linear:.2f} | "
              f"{med(n, 'index') * 1000:.0f} ms | {r0['lookups']} | {med(n, 'lookup') / r0['lookups'] * 1e9:.0f} ns | "
              f"{r0['named']} |")
    load = os.getloadavg()
    print(f"\nmedian of {args.repeat} interleaved runs; load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
