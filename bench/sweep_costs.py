#!/usr/bin/env python3
"""Where a `sweep --via ephemeral` spends its time: the cluster's CPU per pod for each step,
measured apart on the local cluster (whose daemons run on this machine).

With N fresh pods (sockdebug-testapp), through the plugin's own code (kube.Kube, Runner,
lifecycle.SharedWatch):

1. start: add an agent to every pod and wait until it runs (one PATCH each, 8 at a time,
   one watch for all), no exec — what a cold sweep pays before it can query;
2. exec: one exec per pod into the running agents, 8 at a time, of
   - the sweep's query (`sockdebug-agent sockets -l -t -u -p`),
   - `sockdebug-agent --version` (the agent's start-up without a query),
   - `python3 -I -S -c pass` (an exec that runs almost nothing: runc, kubelet, API server);
3. the timeline of one cold collection of N other fresh pods: when the patches were
   done, when the agents ran, when the execs ended.

CPU is per pod (ms) by daemon: API server, etcd, kubelet, containerd, the containerd-shims
of the namespace's pods with their children (runc and the processes it starts: the
agents), and this process (the plugin's side).  The daemons serve other tests meanwhile:
their figures are upper bounds.  Results: bench/results/sweep.md (appended under "Where the time goes").

Usage: bench/sweep_costs.py [--pods 50] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sockdebug_plugin import gather, inject
from sockdebug_plugin import runner as runner_module
from sockdebug_plugin.kube import connect
from sockdebug_plugin.lifecycle import SharedWatch
from sockdebug_plugin.options import AgentOptions, Conn, SweepOptions
from sockdebug_plugin.runner import Runner
from sockdebug_plugin.targets import Target
from sweep_bench import IMAGE, cpu_spent, daemon_cpu, drop, load, sandboxes, seed, wait_for_room

PARALLEL = 8
ROOT = Path(__file__).resolve().parents[1]


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(ns: str, pods: int, step) -> tuple[float, dict[str, float]]:
    """(wall seconds, ms per pod by daemon) of ``step()`` (only the shims of NS's pods count)."""
    shims = sandboxes(ns)
    before, mine, t0 = daemon_cpu(shims), own_cpu(), time.monotonic()
    step()
    wall = time.monotonic() - t0
    spent = cpu_spent(before, daemon_cpu(shims))
    spent["plugin"] = own_cpu() - mine
    return wall, {k: v / pods * 1000 for k, v in spent.items()}


def start_agents(kube, ns: str, pods: list[dict]) -> None:
    watch = SharedWatch(kube)
    gate = threading.BoundedSemaphore(PARALLEL)
    try:
        with Runner(kube, AgentOptions(IMAGE, "IfNotPresent", "auto", 300.0), watch=watch, note=lambda _: None) as r:
            watch.start(ns)

            def one(pod: dict) -> None:
                target = Target(ns, pod, "app")
                with gate:
                    r.prepare(target)
                r.ready(target)

            with ThreadPoolExecutor(len(pods)) as pool:
                list(pool.map(one, pods))
    finally:
        watch.close()


def exec_all(kube, ns: str, command: list[str]) -> None:
    pods = kube.list_pods(ns)

    def one(pod: dict) -> None:
        agent = inject.reusable_agent(pod, "app", IMAGE, "auto")
        channel = kube.exec(ns, pod["metadata"]["name"], agent, command)
        try:
            for _ in channel.chunks(time.monotonic() + 120):
                pass
        finally:
            channel.close()

    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, pods))


def timeline(kube, ns: str, pods: list[dict]) -> dict[str, list[float]]:
    """Seconds from the start at which each pod's patch, agent start and exec ended."""
    ends: dict[str, list[float]] = {"prepare": [], "ready": [], "run": []}
    t0 = time.monotonic()
    real = {step: getattr(Runner, step) for step in ends}

    def timed(step):
        def call(self, target, *args):
            result = real[step](self, target, *args)
            if step == "run":
                result = list(result)
            ends[step].append(time.monotonic() - t0)
            return result
        return call

    for step in ends:
        setattr(runner_module.Runner, step, timed(step))
    try:
        opts = SweepOptions(Conn(ns), AgentOptions(IMAGE, "IfNotPresent", "auto", 300.0), parallel=PARALLEL)
        got = gather.sockets(kube, opts, pods, [], gather.Progress(0, "pods", io.StringIO(), tty=False))
        assert len(got.sockets) == len(pods), got.uninspected
    finally:
        for step, fn in real.items():
            setattr(runner_module.Runner, step, fn)
    return ends


@contextlib.contextmanager
def fresh(n: int) -> Iterator[tuple[Any, str]]:
    """A new namespace of N ready pods and a Kube for it; deleted afterwards."""
    ns = f"sdbench-costs-{secrets.token_hex(2)}"
    try:
        if not wait_for_room(n):
            sys.exit("no room on the node")
        seed(ns, n)
        yield connect(namespace=ns), ns
    finally:
        drop(ns)


def row(name: str, pods: int, wall: float, cpu: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.5)
    return f"| {name} | {pods} | {wall:.2f} | {sum(cpu.values()):.0f} | {parts} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "bench/results/sweep.md"))
    args = ap.parse_args()
    n = args.pods
    rows, loads = [], []
    with fresh(n) as (kube, ns):
        pods = kube.list_pods(ns)
        loads.append(load())
        rows.append(row("start: add an agent, wait until it runs (no exec)", n,
                        *measured(ns, n, lambda: start_agents(kube, ns, pods))))
        for name, command in (("exec: the sweep's query", ["sockdebug-agent", "sockets", "-l", "-t", "-u", "-p"]),
                              ("exec: `sockdebug-agent --version`", ["sockdebug-agent", "--version"]),
                              ("exec: `python3 -I -S -c pass`", ["/usr/bin/python3", "-I", "-S", "-c", "pass"])):
            loads.append(load())
            rows.append(row(name, n, *measured(ns, n, lambda command=command: exec_all(kube, ns, command))))
    with fresh(n) as (kube, ns):
        loads.append(load())
        ends = timeline(kube, ns, kube.list_pods(ns))

    def spread(step: str) -> str:
        xs = sorted(ends[step])
        return f"{xs[0]:.1f} / {statistics.median(xs):.1f} / {xs[-1]:.1f}"

    lines = [
        "",
        "## Where the time goes",
        "",
        f"`python3 bench/sweep_costs.py --pods {n}`: the cluster's CPU per pod for each step of a cold "
        f"`--via ephemeral` sweep, measured apart (2 CPUs shared with other work, load average "
        f"{min(loads):.1f}-{max(loads):.1f}). Columns: wall seconds for all {n} pods, then CPU ms per pod in "
        "total and by process (shims: containerd-shim and its children — runc and the processes it starts, the "
        "agents; plugin: this process's Python side).",
        "",
        "| step | pods | seconds | CPU ms/pod | by process (ms/pod) |",
        "|---|---:|---:|---:|---|",
        *rows,
        "",
        f"A cold collection of {n} fresh pods, seconds from its start at which the first / median / last pod "
        f"had its patch answered: {spread('prepare')}; its agent running: {spread('ready')}; its exec done: "
        f"{spread('run')}.",
    ]
    text = "\n".join(lines) + "\n"
    with open(args.out, "a") as out:
        out.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
