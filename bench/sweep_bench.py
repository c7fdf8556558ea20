#!/usr/bin/env python3
"""Sweep benchmark: wall time of `kubectl sockdebug sweep` for 10, 50 and 100 pods, both modes.

Scenario: a namespace with N pods of sockdebug-testapp (each listening on 0.0.0.0:8080,
declared as `http`, behind one Service), all Running and Ready.  Then, from spawning the
plugin to its exit (so Python start-up and the API calls are included):

- `--via node`: RUNS sweeps; each one creates the short-lived node agent pod, reads every
  pod's network namespace, and deletes the pod (or execs into the node-agent DaemonSet
  when it is installed; this script says which).
- `--via node` with manifests/node-agent.yaml installed (exec into it, no pod to start),
  and that agent's own time for `pods -tul -p` (its end record);
- `--via ephemeral`, cold: the first sweep, which adds an agent container to every pod;
- `--via ephemeral`, warm: RUNS more sweeps, which exec into the agents already running.

Medians (and min-max) go to bench/results/sweep.md; a per-pod cost column shows whether
the time grows linearly.  The namespace is deleted (and waited for) between sizes so the
node stays under its pod limit.

Usage: bench/sweep_bench.py [--sizes 10 50 100] [--runs 3] [--out FILE] [--image IMG] [--testapp IMG]
Needs KUBECONFIG (eval "$(hack/local-cluster env)") and the images loaded on the node.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = shutil.which("kubectl-sockdebug") or "kubectl-sockdebug"
LABELS = {"node": "node (short-lived pod)", "ds": "node (DaemonSet)", "agent": "node agent alone",
          "cold": "ephemeral cold", "warm": "ephemeral warm"}


def kubectl(*args: str, input: str | None = None, timeout: float = 900) -> str:
    return subprocess.run(["kubectl", *args], input=input, text=True, capture_output=True, check=True,
                          timeout=timeout).stdout


def seed(ns: str, n: int, testapp: str) -> None:
    objs: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
    for _ in range(120):
        if subprocess.run(["kubectl", "-n", ns, "get", "sa", "default"], capture_output=True).returncode == 0:
            break
        time.sleep(0.5)
    objs = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench", "namespace": ns},
             "spec": {"selector": {"app": "bench"}, "ports": [{"port": 80, "targetPort": "http"}]}}]
    for i in range(n):
        objs.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"bench-{i:03d}", "namespace": ns, "labels": {"app": "bench"}},
            "spec": {"terminationGracePeriodSeconds": 0,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
                     "containers": [{"name": "app", "image": testapp, "imagePullPolicy": "IfNotPresent",
                                     "args": ["--listen", "0.0.0.0:8080"],
                                     "ports": [{"name": "http", "containerPort": 8080}],
                                     "resources": {"requests": {"cpu": "1m", "memory": "16Mi"}}}]}})
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
    kubectl("-n", ns, "wait", "--for=condition=Ready", "pods", "--all", "--timeout=900s", timeout=960)


def install_daemonset(image: str) -> str:
    """Apply manifests/node-agent.yaml (with IMAGE) unless it is there; the text to delete it
    afterwards, or "" when it was already installed."""
    if subprocess.run(["kubectl", "-n", "sockdebug-system", "get", "ds", "sockdebug-node-agent"],
                      capture_output=True).returncode == 0:
        return ""
    text = (ROOT / "manifests/node-agent.yaml").read_text().replace("image: sockdebug-agent:0.1.0", f"image: {image}")
    kubectl("apply", "-f", "-", input=text)
    kubectl("-n", "sockdebug-system", "rollout", "status", "ds/sockdebug-node-agent", "--timeout=300s")
    return text


def agent_ms() -> float:
    """The node agent's own time for `pods -tul -p` (its end record), exec'd in the DaemonSet."""
    pod = kubectl("-n", "sockdebug-system", "get", "pods", "-l", "app.kubernetes.io/name=sockdebug-node-agent",
                  "-o", "jsonpath={.items[0].metadata.name}")
    out = kubectl("-n", "sockdebug-system", "exec", pod, "-c", "agent", "--", "sockdebug-agent", "pods", "-tul", "-p")
    end = json.loads(out.strip().splitlines()[-1])
    return float(end["elapsed_ms"])


def sweep(ns: str, via: str, image: str) -> tuple[float, dict, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([PLUGIN, "sweep", "-n", ns, "--via", via, "-o", "json", "--image", image,
                           "--image-pull-policy", "IfNotPresent", "--timeout", "120"],
                          text=True, capture_output=True, timeout=1800)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sweep --via {via} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return took, json.loads(proc.stdout), proc.stderr


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["node", "daemonset", "ephemeral"],
                    choices=["node", "daemonset", "ephemeral"],
                    help="daemonset: --via node with manifests/node-agent.yaml installed (exec, no pod start)")
    ap.add_argument("--image", default="sockdebug-agent:0.1.0")
    ap.add_argument("--testapp", default="sockdebug-testapp:0.1.0")
    ap.add_argument("--out", default=str(ROOT / "bench/results/sweep.md"))
    args = ap.parse_args()
    if not os.environ.get("KUBECONFIG"):
        print("set KUBECONFIG (eval \"$(hack/local-cluster env)\")", file=sys.stderr)
        return 2
    rows = []
    for n in args.sizes:
        ns = f"sdbench-sweep-{n}-{secrets.token_hex(2)}"
        print(f"seeding {n} pods in {ns}", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            seed(ns, n, args.testapp)
            print(f"  ready in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
            row: dict = {"pods": n}
            if "node" in args.modes:
                times = []
                for _ in range(args.runs):
                    took, doc, err = sweep(ns, "node", args.image)
                    assert doc["summary"]["inspected"] == n, doc["summary"]
                    times.append(took)
                assert "DaemonSet" not in err, "uninstall manifests/node-agent.yaml to time the short-lived pods"
                row["node"] = times
                print(f"  node: {med(times)} s", file=sys.stderr)
            if "daemonset" in args.modes:
                created = install_daemonset(args.image)
                try:
                    times = []
                    for _ in range(args.runs):
                        took, doc, err = sweep(ns, "node", args.image)
                        assert doc["summary"]["inspected"] == n and "DaemonSet" in err, (doc["summary"], err)
                        times.append(took)
                    row["ds"] = times
                    row["agent"] = [agent_ms() / 1000 for _ in range(args.runs)]
                    print(f"  node (DaemonSet): {med(times)} s", file=sys.stderr)
                finally:
                    if created:
                        kubectl("delete", "-f", "-", "--wait=true", input=created, timeout=300)
            if "ephemeral" in args.modes:
                cold, doc, _ = sweep(ns, "ephemeral", args.image)
                assert doc["summary"]["inspected"] == n, doc["summary"]
                warm = [sweep(ns, "ephemeral", args.image)[0] for _ in range(args.runs)]
                row["cold"], row["warm"] = [cold], warm
                print(f"  ephemeral: cold {cold:.2f} s, warm {med(warm)} s", file=sys.stderr)
            rows.append(row)
        finally:
            subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=true", "--timeout=600s"],
                           capture_output=True, timeout=660)
    version = json.loads(kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"]
    lines = [
        "# `kubectl sockdebug sweep`: time for 10, 50 and 100 pods",
        "",
        f"Measured {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `bench/sweep_bench.py` on the "
        f"local cluster (`hack/local-cluster`, Kubernetes {version}, one node, {os.cpu_count()} CPUs, "
        f"{platform.machine()}).",
        "Each pod runs sockdebug-testapp listening on 0.0.0.0:8080 (declared `http`, behind one Service): "
        "no findings. Wall time from spawning the plugin to its exit, in seconds; median of "
        f"{args.runs} runs (min-max).",
        "",
        "| pods | --via node (short-lived pod) | per pod (ms) | --via node (DaemonSet installed) | per pod (ms) "
        "| node agent alone (`pods -tul -p`) | per pod (ms) "
        "| --via ephemeral, cold (adds an agent to each pod) | per pod (ms) "
        "| --via ephemeral, warm (agents reused) | per pod (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [str(r["pods"])]
        for k in ("node", "ds", "agent", "cold", "warm"):
            if k in r:
                cells += [med(r[k]), f"{statistics.median(r[k]) / r['pods'] * 1000:.0f}"]
            else:
                cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        def slope(k: str) -> float:
            return (statistics.median(b[k]) - statistics.median(a[k])) / (b["pods"] - a["pods"]) * 1000

        lines += ["", "Marginal cost per extra pod between the smallest and largest run: "
                  + ", ".join(f"{LABELS[k]} {slope(k):.0f} ms" for k in LABELS if k in a and k in b) + "."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
