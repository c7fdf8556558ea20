#!/usr/bin/env python3
"""Sweep benchmark: wall time and API requests of `kubectl sockdebug sweep` for N pods, this
checkout against an earlier revision, interleaved.

Scenario: a namespace with N pods of sockdebug-testapp (each listening on 0.0.0.0:8080,
declared as `http`, behind one Service), all Running and Ready.  From spawning the plugin
to its exit (Python start-up and every API call included):

- `--via ephemeral`, cold: pods without agents (a fresh namespace for every cold run, so
  agents never pile up), each gains one;
- `--via ephemeral`, warm: the agents of the cold run are reused (both versions reuse the
  same agents, in alternating runs);
- `--via node`: the short-lived node pod (or the node-agent DaemonSet when installed; the
  script says which).

Rounds alternate which version goes first.  Both versions run as a plain install would
(python -S, packages on PYTHONPATH; bench/plugin_bench.py's `install`), through a launcher
that counts every request the transport sends (verb and resource, `retry.kind`), so the
baseline's requests are counted the same way as this checkout's.  Each run also records
the load average and, on the local cluster (whose daemons run on this machine), the CPU
time the cluster spent (API server, etcd, kubelet, containerd and its shims — which run
runc and the agents) per pod.

Usage: bench/sweep_bench.py [--sizes 10 50 100] [--rounds 3] [--warm 3] [--baseline REV]
                            [--modes ephemeral node] [--out FILE]
Needs KUBECONFIG (eval "$(hack/local-cluster env)"), SOCKDEBUG_IMAGE/SOCKDEBUG_TESTAPP_IMAGE
loaded on the node.  Namespaces are named sdbench-sweep-* and deleted (and waited for).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import yaml
from plugin_bench import ROOT, WORK, baseline_source, install
from sockdebug_agent import __version__
from sockdebug_plugin.retry import kind

IMAGE = os.environ.get("SOCKDEBUG_IMAGE", f"sockdebug-agent:{__version__}")
TESTAPP = os.environ.get("SOCKDEBUG_TESTAPP_IMAGE", f"sockdebug-testapp:{__version__}")
DAEMONS = {"kube-apiserver": "apiserver", "kubelet": "kubelet", "etcd": "etcd", "containerd-shim": "shims",
           "containerd": "containerd"}
# Run by the launcher before the plugin: every request the transport sends goes to $SWEEP_BENCH_LOG.
COUNTER = """
import atexit, json, os, sys
from sockdebug_plugin import kubeclient
seen = []
def counting(name):
    real = getattr(kubeclient.ClientTransport, name)
    def call(self, *args, **kw):
        if name == "exec":
            seen.append(("EXEC", args[0], []))
        else:
            seen.append((args[0], args[1], [list(q) for q in kw.get("query") or [] if q[0] == "watch"]))
        return real(self, *args, **kw)
    setattr(kubeclient.ClientTransport, name, call)
counting("request"); counting("exec")
atexit.register(lambda: open(os.environ["SWEEP_BENCH_LOG"], "w").write(json.dumps(seen)))
from sockdebug_plugin.cli import run
try:
    run()
finally:
    open(os.environ["SWEEP_BENCH_LOG"], "w").write(json.dumps(seen))
"""


def kubectl(*args: str, input: str | None = None, timeout: float = 900) -> str:
    return subprocess.run(["kubectl", *args], input=input, text=True, capture_output=True, check=True,
                          timeout=timeout).stdout


def launcher(name: str, src: Path) -> Path:
    """``install``'s plain install of ``src``, started through the request counter."""
    bindir = install(f"sweep-{name}", src)
    script = (bindir / "kubectl-sockdebug").read_text()
    path = script.split("PYTHONPATH=", 1)[1].split(" ", 1)[0]
    (bindir / "counter.py").write_text(COUNTER)
    out = bindir / "counted-sockdebug"
    out.write_text(f"#!/bin/sh\nPYTHONPATH={path} exec {sys.executable} -S {bindir / 'counter.py'} \"$@\"\n")
    out.chmod(0o755)
    return out


def seed(ns: str, n: int) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": ns}}))
    for _ in range(120):
        if subprocess.run(["kubectl", "-n", ns, "get", "sa", "default"], capture_output=True).returncode == 0:
            break
        time.sleep(0.5)
    objs: list[dict] = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench", "namespace": ns},
                         "spec": {"selector": {"app": "bench"}, "ports": [{"port": 80, "targetPort": "http"}]}}]
    for i in range(n):
        objs.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"bench-{i:03d}", "namespace": ns, "labels": {"app": "bench"}},
            "spec": {"terminationGracePeriodSeconds": 0,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
                     "containers": [{"name": "app", "image": TESTAPP, "imagePullPolicy": "IfNotPresent",
                                     "args": ["--listen", "0.0.0.0:8080"],
                                     "ports": [{"name": "http", "containerPort": 8080}],
                                     "resources": {"requests": {"cpu": "1m", "memory": "16Mi"}}}]}})
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
    kubectl("-n", ns, "wait", "--for=condition=Ready", "pods", "--all", "--timeout=900s", timeout=960)


def drop(ns: str) -> None:
    subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=true", "--timeout=600s"], capture_output=True,
                   timeout=660)


def room() -> int:
    """Pods the nodes can still admit."""
    nodes = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
    pods = json.loads(kubectl("get", "pods", "-A", "--field-selector=status.phase!=Succeeded,status.phase!=Failed",
                              "-o", "json"))["items"]
    return sum(int(n["status"]["allocatable"].get("pods", 0)) for n in nodes) - len(pods)


def wait_for_room(n: int, minutes: float = 15) -> bool:
    """Whether N more pods fit, waiting for other tests' pods to go if need be."""
    deadline = time.monotonic() + minutes * 60
    while room() < n + 5:  # + node pods of other tests
        if time.monotonic() > deadline:
            return False
        print(f"waiting for room for {n} pods ({room()} free)", file=sys.stderr)
        time.sleep(20)
    return True


CRICTL = ["crictl", "--config", "/var/lib/sockdebug-cluster/config/crictl.yaml"]


def sandboxes(ns: str) -> Optional[set[str]]:
    """The pod sandbox ids of namespace NS on this machine (crictl), so that only the shims of
    its pods count; None when crictl cannot tell (then every shim counts)."""
    try:
        proc = subprocess.run([*CRICTL, "pods", "--namespace", ns, "-q"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return set(proc.stdout.split()) if proc.returncode == 0 and proc.stdout.strip() else None


def daemon_cpu(shims: Optional[set[str]] = None) -> dict[int, tuple[str, float]]:
    """pid -> (daemon, CPU seconds of it and its reaped children) for the cluster's
    processes on this machine (of the containerd shims only those of the ``shims`` sandbox
    ids, when given: other tests' pods run execs too); empty when the cluster runs elsewhere."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        name = next((v for k, v in DAEMONS.items() if comm.startswith(k[:15])), None)
        if name == "containerd" and b"sockdebug-cluster" not in cmdline:
            continue  # Docker's own containerd
        if name == "shims" and shims is not None:
            args = cmdline.split(b"\0")
            sandbox = args[args.index(b"-id") + 1].decode() if b"-id" in args[:-1] else ""
            if sandbox not in shims:
                continue
        if name:
            out[int(pid)] = (name, sum(int(x) for x in fields[11:15]) / tick)
    return out


def cpu_spent(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by daemon between two snapshots: per process alive at the end (a new one
    from zero); what a process that ended meanwhile spent is lost (other pods' shims)."""
    spent: Counter = Counter()
    for pid, (name, seconds) in after.items():
        old = before.get(pid)
        spent[name] += seconds - (old[1] if old and old[0] == name else 0.0)
    return dict(spent)


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class Run:
    def __init__(self, wall: float, doc: dict, stderr: str, requests: Counter, cpu: dict[str, float], load: float):
        self.wall, self.doc, self.stderr, self.requests, self.cpu, self.load = wall, doc, stderr, requests, cpu, load


FAILURES: list[str] = []  #: runs that failed and were repeated (another test's DaemonSet vanishing, ...)


def sweep(cmd: Path, ns: str, via: str, pods: int) -> Run:
    """One run that inspected every pod, repeating a failed one (at most twice)."""
    for attempt in range(3):
        try:
            run = sweep_once(cmd, ns, via)
            if run.doc["summary"]["inspected"] != pods:
                raise RuntimeError(f"inspected {run.doc['summary']}")
            return run
        except RuntimeError as exc:
            FAILURES.append(f"{cmd.parent.parent.name} --via {via}, {pods} pods: {str(exc)[-300:]}")
            print(f"  failed, {'again' if attempt < 2 else 'giving up'}: {FAILURES[-1]}", file=sys.stderr)
    raise RuntimeError(FAILURES[-1])


def sweep_once(cmd: Path, ns: str, via: str) -> Run:
    log = WORK / f"requests-{secrets.token_hex(4)}.json"
    env = {**os.environ, "SWEEP_BENCH_LOG": str(log)}
    shims = sandboxes(ns)
    before, started_load = daemon_cpu(shims), load()
    t0 = time.perf_counter()
    proc = subprocess.run([str(cmd), "sweep", "-n", ns, "--via", via, "-o", "json", "--image", IMAGE,
                           "--image-pull-policy", "IfNotPresent", "--timeout", "300"],
                          text=True, capture_output=True, timeout=1800, env=env)
    wall = time.perf_counter() - t0
    after = daemon_cpu(shims)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} sweep --via {via} failed ({proc.returncode}): {proc.stderr[-800:]}")
    sent = json.loads(log.read_text())
    log.unlink()
    counts = Counter("create pods/exec" if m == "EXEC" else kind(m, p, [tuple(q) for q in w]) for m, p, w in sent)
    cpu = cpu_spent(before, after)
    return Run(wall, json.loads(proc.stdout), proc.stderr, counts, cpu, started_load)


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def requests_cell(runs: list[Run]) -> str:
    """The request counts of a row (they do not vary between its runs, or the range is shown)."""
    totals = sorted({sum(r.requests.values()) for r in runs})
    c = runs[0].requests
    gets = sum(n for k, n in c.items() if k.startswith("get ") and k != "get pods/log")
    lists = sum(n for k, n in c.items() if k.startswith("list "))
    total = f"{totals[0]}-{totals[-1]}" if len(totals) > 1 else str(totals[0])
    parts = [f"{total} total",
             f"{lists} list", f"{c['watch pods']} watch", f"{gets} get", f"{c['patch pods/ephemeralcontainers']} patch",
             f"{c['create pods/exec']} exec"]
    other = sum(c.values()) - sum(int(p.split()[0]) for p in parts[1:])
    return ", ".join(parts + ([f"{other} other"] if other else []))


def cpu_cell(runs: list[Run], pods: int) -> str:
    if not runs[0].cpu:
        return "-"
    total = statistics.median(sum(r.cpu.values()) for r in runs) / pods * 1000
    parts = {k: statistics.median(r.cpu.get(k, 0) for r in runs) / pods * 1000 for k in runs[0].cpu}
    top = ", ".join(f"{k} {v:.0f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
    return f"{total:.0f} ({top})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--rounds", type=int, default=3, help="cold runs per version and size (a fresh namespace each)")
    ap.add_argument("--warm", type=int, default=3, help="warm runs per version after each cold run")
    ap.add_argument("--baseline", default="ec9adba", help="the revision to compare with (default: before issue 14)")
    ap.add_argument("--modes", nargs="+", default=["ephemeral", "node"], choices=["ephemeral", "node"])
    ap.add_argument("--out", default=str(ROOT / "bench/results/sweep.md"))
    args = ap.parse_args()
    if not os.environ.get("KUBECONFIG"):
        print("set KUBECONFIG (eval \"$(hack/local-cluster env)\")", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # committed code: edits during a long run do not leak in
    versions = {"new": launcher("new", baseline_source(head)),
                "baseline": launcher("baseline", baseline_source(args.baseline))}
    rows: dict[tuple[int, str, str], list[Run]] = {}
    skipped: list[str] = []
    started = datetime.now(timezone.utc)
    for n in args.sizes:
        if not wait_for_room(n):
            skipped.append(f"{n} pods: the node admitted only {room()} more pods for 15 minutes (kubelet maxPods, "
                           "and other tests' pods)")
            print(f"skipping {skipped[-1]}", file=sys.stderr)
            continue
        for r in range(args.rounds):
            order = list(versions) if r % 2 == 0 else list(reversed(versions))
            for cold_version in (order if "ephemeral" in args.modes else order[:1]):
                ns = f"sdbench-sweep-{n}-{secrets.token_hex(2)}"
                t0 = time.perf_counter()
                try:
                    if not wait_for_room(n):
                        raise RuntimeError(f"no room for {n} pods on the node for 15 minutes")
                    seed(ns, n)
                    print(f"{n} pods in {ns}, ready in {time.perf_counter() - t0:.0f}s (load {load():.1f})",
                          file=sys.stderr)
                    if "ephemeral" in args.modes:
                        run = sweep(versions[cold_version], ns, "ephemeral", n)
                        rows.setdefault((n, "cold", cold_version), []).append(run)
                        print(f"  cold {cold_version}: {run.wall:.2f}s {sum(run.requests.values())} requests",
                              file=sys.stderr)
                        for _ in range(args.warm):
                            for v in order:
                                run = sweep(versions[v], ns, "ephemeral", n)
                                rows.setdefault((n, "warm", v), []).append(run)
                                print(f"  warm {v}: {run.wall:.2f}s", file=sys.stderr)
                    if "node" in args.modes and cold_version == order[0]:
                        for v in order:
                            run = sweep(versions[v], ns, "node", n)
                            mode = "ds" if "DaemonSet" in run.stderr else "node"  # another test installed it
                            rows.setdefault((n, mode, v), []).append(run)
                            print(f"  node {v}: {run.wall:.2f}s", file=sys.stderr)
                finally:
                    drop(ns)
    write(args, rows, skipped, started)
    return 0


def write(args: argparse.Namespace, rows: dict, skipped: list[str], started: datetime) -> None:
    version = json.loads(kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"]
    loads = [r.load for runs in rows.values() for r in runs]
    labels = {"cold": "`--via ephemeral`, cold (each pod gains an agent)",
              "warm": "`--via ephemeral`, warm (agents reused)", "node": "`--via node` (short-lived node pod)",
              "ds": "`--via node` (the node-agent DaemonSet another test had installed)"}
    lines = [
        "# `kubectl sockdebug sweep`: time and API requests for N pods",
        "",
        f"`python3 bench/sweep_bench.py --sizes {' '.join(map(str, args.sizes))} --rounds {args.rounds} "
        f"--warm {args.warm} --baseline {args.baseline}` ({started.strftime('%Y-%m-%d %H:%M UTC')}), local "
        f"cluster (`hack/local-cluster`, Kubernetes {version}, one node, {os.cpu_count()} CPUs, "
        f"{platform.machine()}), **shared with other work**: load average {min(loads):.1f}-{max(loads):.1f} "
        f"(median {statistics.median(loads):.1f}) at the starts of the runs. `baseline` is {args.baseline} "
        "(before issue 14: a GET and a watch per pod, 8 pods at a time, no retries); `new` is this checkout.",
        "",
        "Each pod runs sockdebug-testapp listening on 0.0.0.0:8080 (declared `http`, behind one Service): no "
        "findings. Wall time from spawning the plugin to its exit, seconds, median (min-max). Cold runs use a "
        "fresh namespace each, the versions alternate which goes first; warm runs alternate on the agents of "
        "the cold run before. Requests: every request the client's transport sent, by verb (list, watch, get, "
        "patch, exec). Cluster CPU: ms per pod spent by the cluster's processes on this machine (API server, "
        "etcd, kubelet, containerd, and the containerd-shims of the namespace's pods with their children: runc and "
        "the agents), median; the daemons also served other tests meanwhile, and a node pod's shim is gone before "
        "it is counted, so `--via node` misses its agent's CPU.",
        "",
        "| pods | mode | version | runs | seconds | per pod (ms) | requests | cluster CPU ms/pod |",
        "|---:|---|---|---:|---:|---:|---|---|",
    ]
    for (n, mode, v), runs in sorted(rows.items(), key=lambda kv: (kv[0][0], list(labels).index(kv[0][1]),
                                                                   kv[0][2] != "baseline")):
        walls = [r.wall for r in runs]
        lines.append(f"| {n} | {labels[mode]} | {v} | {len(runs)} | {med(walls)} | "
                     f"{statistics.median(walls) / n * 1000:.0f} | {requests_cell(runs)} | {cpu_cell(runs, n)} |")
    ratios = []
    for (n, mode, v), runs in sorted(rows.items()):
        base = rows.get((n, mode, "baseline"))
        if v == "new" and base:
            ratio = statistics.median(r.wall for r in runs) / statistics.median(r.wall for r in base)
            ratios.append(f"{n} pods {mode}: {ratio:.2f}")
    lines += ["", "new / baseline (medians): " + "; ".join(ratios) + "."]
    if skipped:
        lines += ["", "Not measured: " + "; ".join(skipped) + "."]
    if FAILURES:
        lines += ["", "Repeated after a failure: " + "; ".join(FAILURES)]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
