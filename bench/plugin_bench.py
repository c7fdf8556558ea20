"""End-to-end time of `kubectl sockdebug` against `kubectl debug` on the same cluster.

    python3 bench/plugin_bench.py [--runs 7]        (KUBECONFIG must point at a cluster
                                                     that has the agent and testapp images)

- cold: a pod that has no agent yet (`kubectl sockdebug` adds one: patch, wait, exec);
- warm: the same pod again (exec into the running agent);
- kubectl debug: `kubectl debug --image=<agent> --target=app -- sockdebug-agent sockets -tlp`
  on a pod of the same kind (a new ephemeral container each time, as kubectl does);
- kubectl exec: a raw exec into the running agent, the floor for a warm query.
Whole processes, wall clock, medians; results in bench/results/plugin.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sockdebug_agent import __version__

HERE = Path(__file__).resolve().parent
IMAGE = os.environ.get("SOCKDEBUG_IMAGE", f"sockdebug-agent:{__version__}")
TESTAPP = os.environ.get("SOCKDEBUG_TESTAPP_IMAGE", f"sockdebug-testapp:{__version__}")


def run(cmd: list[str], check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    if check and proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed, proc


def pod(name: str, ns: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "app", "image": TESTAPP, "imagePullPolicy": "IfNotPresent",
                                     "args": ["--listen", "127.0.0.1:8080", "--listen", "0.0.0.0:9090"]}]}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "results" / "plugin.md"))
    args = ap.parse_args()
    plugin = shutil.which("kubectl-sockdebug") or sys.exit("kubectl-sockdebug is not on PATH")
    ns = f"sdbench-{secrets.token_hex(3)}"
    run(["kubectl", "create", "namespace", ns])
    try:
        for _ in range(60):
            if run(["kubectl", "-n", ns, "get", "serviceaccount", "default"], check=False)[1].returncode == 0:
                break
            time.sleep(0.5)
        names = [f"p{i}" for i in range(2 * args.runs)]
        docs = "\n".join(json.dumps(pod(n, ns)) for n in names)
        subprocess.run(["kubectl", "apply", "-f", "-"], input=docs, text=True, check=True, capture_output=True)
        run(["kubectl", "-n", ns, "wait", "--for=condition=Ready", "pods", "--all", "--timeout=180s"])
        common = ["--image", IMAGE, "--image-pull-policy", "IfNotPresent", "-n", ns]
        cold, warm, debug, exec_ = [], [], [], []
        for i in range(args.runs):  # interleaved: cold sockdebug, kubectl debug, warm sockdebug, raw exec
            t, _ = run([plugin, f"pod/{names[i]}", "--listening", "-t", *common])
            cold.append(t)
            t, proc = run(["kubectl", "debug", f"pod/{names[args.runs + i]}", "-n", ns, f"--image={IMAGE}",
                           "--image-pull-policy=IfNotPresent", "--target=app", "--profile=general", "-c", "dbg",
                           "--attach=true", "--quiet", "--", "sockdebug-agent", "sockets", "-tlp"])
            if '"type":"end"' not in proc.stdout:  # attach can miss a fast container: kubectl says so
                sys.exit(f"kubectl debug returned no complete stream: {proc.stdout[-300:]} {proc.stderr[-300:]}")
            debug.append(t)
            t, _ = run([plugin, f"pod/{names[0]}", "--listening", "-t", *common])
            warm.append(t)
            agent = run(["kubectl", "-n", ns, "get", "pod", names[0], "-o",
                         "jsonpath={.spec.ephemeralContainers[0].name}"])[1].stdout.strip()
            t, _ = run(["kubectl", "-n", ns, "exec", names[0], "-c", agent, "--", "sockdebug-agent", "sockets",
                        "-tlp"])
            exec_.append(t)
    finally:
        subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"], capture_output=True)

    def row(name: str, values: list[float]) -> str:
        return f"| {name} | {statistics.median(values) * 1000:.0f} | {min(values) * 1000:.0f} | " \
               f"{max(values) * 1000:.0f} |"

    med = {k: statistics.median(v) for k, v in
           {"cold": cold, "warm": warm, "debug": debug, "exec": exec_}.items()}
    server = run(["kubectl", "version", "-o", "json"])[1].stdout
    version = json.loads(server).get("serverVersion", {}).get("gitVersion", "?")
    text = "\n".join([
        "# kubectl sockdebug vs kubectl debug (end to end)",
        "",
        f"`python3 bench/plugin_bench.py --runs {args.runs}` on Kubernetes {version} "
        f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs); whole processes, wall clock, "
        f"{args.runs} interleaved runs each, listening TCP sockets of a one-container pod.",
        "",
        "| command | median ms | min ms | max ms |",
        "|---|---|---|---|",
        row("`kubectl sockdebug POD --listening -t` cold (adds the agent)", cold),
        row("`kubectl debug POD --image=agent --target=app -- sockdebug-agent sockets -tlp`", debug),
        row("`kubectl sockdebug POD --listening -t` warm (reuses the agent)", warm),
        row("`kubectl exec POD -c <agent> -- sockdebug-agent sockets -tlp` (floor)", exec_),
        "",
        f"Cold / kubectl debug: {med['cold'] / med['debug']:.2f} (target ≤ 1.0).  "
        f"Warm: {med['warm'] * 1000:.0f} ms (target < 500 ms).",
        "",
    ])
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
