"""``inspect`` and ``triage``: validated options -> targets -> the runner -> the renderers.

A pod target whose agents already run is first tried warm (``warm.py``: no API
read, execs through kubectl); otherwise the client connects, the target is resolved,
and the runner reuses or adds agents.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

from . import choices, render, warm
from .errors import EXIT_OK, FindingsError, TargetError
from .options import Conn, InspectOptions, TriageOptions
from .runner import Runner
from .targets import NodeTarget, Target, parse_target, pick_container, resolve, running_pods, target_info

_MAX_PARALLEL = 4


def connect(conn: Conn):
    from .kube import connect as connect_to  # the Kubernetes client is imported here, not at start-up

    return connect_to(conn.kubeconfig, conn.context, conn.namespace)


def resolve_targets(kube, target: Optional[str], container: Optional[str], selector: Optional[str] = None,
                    all_namespaces: bool = False, all_pods: bool = False) -> list[Any]:
    """Targets to query: ``Target`` s, or a ``NodeTarget`` for node/NAME."""
    if target is None:
        pods = running_pods(kube.list_pods(None if all_namespaces else kube.namespace, selector))
        if not pods:
            where = "any namespace" if all_namespaces else f"namespace {kube.namespace}"
            raise TargetError(f"no running pods match {selector!r} in {where}", "check `kubectl get pods -l ...`")
        return [Target(p["metadata"]["namespace"], p, pick_container(p, container)) for p in pods]
    ref = parse_target(target)
    if ref.kind == "node":
        return [NodeTarget(ref.name)]
    return resolve(kube, ref, kube.namespace, container, all_pods=all_pods)


def records_of(runner: Runner, t: Any, queries: list[Any]) -> Iterator[Any]:
    """Records of every query in one target, each owner tagged with its container."""
    for query in queries:
        yield from runner.run(t, query) if isinstance(t, NodeTarget) else runner.run_pod(t, query)


def collect(runner: Runner, targets: list[Any], queries: list[Any]) -> list[render.Result]:
    """Run the queries in every target (a few at a time) and keep the records."""
    def one(t: Any) -> render.Result:
        return render.Result(target_info(t), list(records_of(runner, t, queries)))

    if len(targets) == 1:
        return [one(targets[0])]
    from concurrent.futures import ThreadPoolExecutor  # imports logging: only where several targets need it

    with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL, len(targets))) as pool:
        return list(pool.map(one, targets))


def run_full(opts: Any, queries: list[Any], sink: Optional[Callable[[dict, Any, bool], None]] = None
             ) -> list[render.Result]:
    """Connect, resolve, run (``opts``: inspect's or triage's); a single pod's agents are
    remembered for the next, warm run.  With ``sink``, records go there as they arrive."""
    kube = connect(opts.conn)
    targets = resolve_targets(kube, opts.target, opts.container, getattr(opts, "selector", None),
                              getattr(opts, "all_namespaces", False), getattr(opts, "all_pods", False))
    with Runner(kube, opts.agent) as runner:
        if sink is None:
            results = collect(runner, targets, queries)
        else:
            for t in targets:
                for rec in records_of(runner, t, queries):
                    sink(target_info(t), rec, len(targets) > 1)
            results = []
        if opts.target is not None and parse_target(opts.target).kind == "pod":
            warm.remember(opts.conn, runner, targets[0])
    return results


def print_jsonl(target: dict, rec: Any, tag: bool) -> None:
    print(render.jsonl_line(rec, target, tag), flush=True)


def warn(results: list[render.Result]) -> None:
    for res in results:
        for w in render.notable_warnings(res):
            print(f"warning: {render.target_title(res)}: {render.escape(w.message)}", file=sys.stderr)


def inspect(opts: InspectOptions, early: Optional[warm.Warm] = None) -> int:
    queries = opts.queries()
    if opts.watch is not None:
        kube = connect(opts.conn)
        targets = resolve_targets(kube, opts.target, opts.container, opts.selector, opts.all_namespaces,
                                  opts.all_pods)
        with Runner(kube, opts.agent) as runner:
            return watch_loop(runner, targets, [q for q in queries if q.command == "sockets"] or queries[:1],
                              opts.watch, opts.output)
    results = early.results(opts.agent, queries) if early else None
    if opts.output == "jsonl":
        if results is None:
            run_full(opts, queries, sink=print_jsonl)  # streamed as the records arrive
        for res in results or []:
            for rec in res.records:
                print_jsonl(res.target, rec, len(results) > 1)
        return EXIT_OK
    if results is None:
        results = run_full(opts, queries)
    warn(results)
    show(results, opts.output, sys.stdout)
    return EXIT_OK


def show(results: list[render.Result], output: str, out) -> None:
    if output in ("json", "yaml"):
        render.write_document(results, output, out)
        return
    out.write(render.report_text(results, wide=output == "wide", color=render.use_color(out)) + "\n")


def socket_key(target: dict, s: Any) -> tuple:
    return (target.get("namespace"), target.get("name"), s.netid, s.local_address, s.local_port,
            s.peer_address, s.peer_port, s.inode)


def watch_loop(runner: Runner, targets: list[Any], queries: list[Any], interval: float, output: str) -> int:
    """Refresh until Ctrl-C; sockets new since the last refresh are marked +, and the
    ones that went away are shown once more, marked -."""
    previous: Optional[set[tuple]] = None
    gone_last: dict[tuple, Any] = {}
    try:
        while True:
            results = collect(runner, targets, queries)
            current = {socket_key(r.target, s) for r in results for s in r.of("socket")}
            gone = {k: s for k, s in gone_last.items() if k not in current}
            shown = [r._replace(records=r.of("socket") + [s for k, s in gone.items() if k[:2] == (
                r.target.get("namespace"), r.target.get("name"))]) for r in results]

            def mark(target: dict, s: Any, previous=previous, gone=gone) -> str:
                key = socket_key(target, s)
                if key in gone:
                    return "-"
                return "+" if previous is not None and key not in previous else ""

            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(f"# {time.strftime('%H:%M:%S')}  every {interval:g}s  (+ new, - closed; Ctrl-C to stop)")
            print(render.sockets_table(shown, wide=output == "wide", color=render.use_color(sys.stdout),
                                       marker=mark), flush=True)
            gone_last = {socket_key(r.target, s): s for r in results for s in r.of("socket")}
            previous = current
            time.sleep(interval)
    except KeyboardInterrupt:
        return EXIT_OK


def triage(opts: TriageOptions, early: Optional[warm.Warm] = None) -> int:
    queries = opts.queries()
    if opts.events:
        from .events_run import triage_results  # a capture of closed connections beside the snapshot

        results = triage_results(opts, queries)
    else:
        results = early.results(opts.agent, queries) if early else None
    if results is None:
        results = run_full(opts, queries)
    warn(results)
    if opts.output == "jsonl":
        for res in results:
            for rec in res.records:
                print_jsonl(res.target, rec, len(results) > 1)
    elif opts.output in ("json", "yaml"):
        render.write_document(results, opts.output, sys.stdout)
    else:
        color = render.use_color(sys.stdout)
        for res in results:
            print(f"# {render.target_title(res)}: findings")
            print(render.findings_text(res, color))
            print()
        show(results, "table", sys.stdout)
    if opts.fail_on:
        floor = choices.SEVERITIES.index(opts.fail_on)
        worst = [f for r in results for f in r.of("finding") if choices.SEVERITIES.index(f.severity) >= floor]
        if worst:
            raise FindingsError(f"{len(worst)} finding(s) at or above {opts.fail_on}", "see the findings above")
    return EXIT_OK
