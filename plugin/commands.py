"""``inspect``: validated options -> targets -> the runner -> the renderers (``triage``
lives in ``triage.py``, ``sweep`` in ``sweep_run.py``).

A pod target whose agents already run is first tried warm (``warm.py``: no API
read, execs through kubectl); otherwise the client connects, the target is resolved,
and the runner reuses or adds agents.  Remote addresses are named (``peers.py``) from
lists started next to the execs, waited for only when a socket has an address to name.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

from . import output, render, warm
from .errors import EXIT_OK, TargetError
from .options import Conn, InspectOptions, Printing
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


def start_lookup(opts: InspectOptions, kube: Any) -> Any:
    """The peer lists (``peers.Lookup``), started now when the query may show connections."""
    if not opts.names_peers():
        return None
    from . import peers

    return peers.through_client(kube, kube.namespace)


def run_full(opts: InspectOptions, queries: list[Any]) -> tuple[list[render.Result], Any]:
    """Connect, resolve, run; a single pod's agents are remembered for the next, warm run.
    Returns the results and the peer lookup started next to the agents (None when the
    query shows no connections)."""
    kube = connect(opts.conn)
    lookup = start_lookup(opts, kube)
    targets = resolve_targets(kube, opts.target, opts.container, opts.selector, opts.all_namespaces, opts.all_pods)
    with Runner(kube, opts.agent) as runner:
        results = collect(runner, targets, queries)
        remember(opts, runner, targets)
    return results, lookup


def stream_lines(opts: InspectOptions, queries: list[Any]) -> Iterator[str]:
    """``run_full`` for ``-o jsonl``: each record's line as it arrives."""
    kube = connect(opts.conn)
    targets = resolve_targets(kube, opts.target, opts.container, opts.selector, opts.all_namespaces, opts.all_pods)
    with Runner(kube, opts.agent) as runner:
        for t in targets:
            for rec in records_of(runner, t, queries):
                yield render.jsonl_line(rec, target_info(t), len(targets) > 1)
        remember(opts, runner, targets)


def remember(opts: Any, runner: Runner, targets: list[Any]) -> None:
    if opts.target is not None and parse_target(opts.target).kind == "pod":
        warm.remember(opts.conn, runner, targets[0])


def warn(results: list[render.Result]) -> None:
    for res in results:
        for w in render.notable_warnings(res):
            print(f"warning: {render.target_title(res)}: {render.escape(w.message)}", file=sys.stderr)


def inspect(opts: InspectOptions, early: Optional[warm.Warm] = None) -> int:
    queries = opts.queries()
    if opts.watch is not None:
        kube = connect(opts.conn)
        lookup = start_lookup(opts, kube)
        targets = resolve_targets(kube, opts.target, opts.container, opts.selector, opts.all_namespaces,
                                  opts.all_pods)
        with Runner(kube, opts.agent) as runner:
            return watch_loop(runner, targets, [q for q in queries if q.command == "sockets"] or queries[:1],
                              opts.watch, opts.printing, lookup)
    results = early.results(opts.agent, queries) if early else None
    lookup = early.lookup if early else None
    if results is None and opts.printing.kind == "jsonl":
        output.emit(opts.printing, output.View(lines=lambda: stream_lines(opts, queries)))  # as records arrive
        return EXIT_OK
    if results is None:
        results, started = run_full(opts, queries)
        lookup = lookup or started
    if opts.printing.kind == "jsonl":  # a stream carries its warnings as records, and names no peers
        output.emit(opts.printing, output.report_view(results))
        return EXIT_OK
    warn(results)
    output.emit(opts.printing, output.report_view(results, peer=namer(lookup, results)))
    return EXIT_OK


def namer(lookup: Any, results: list[render.Result], keep: bool = False) -> Optional[Callable[[Any], Any]]:
    """socket -> ``peers.Peer`` (or None), from the run's lookup: None when nothing is to be
    named.  What could not be listed is said once, on stderr."""
    if lookup is None:
        return None
    said = list(lookup.notes)
    name = lookup.namer((s for r in results for s in r.of("socket")), keep)
    for note in lookup.notes:
        if note not in said:
            print(f"note: {render.escape(note)}", file=sys.stderr)
    return name


def socket_key(target: dict, s: Any) -> tuple:
    return (target.get("namespace"), target.get("name"), s.netid, s.local_address, s.local_port,
            s.peer_address, s.peer_port, s.inode)


def watch_loop(runner: Runner, targets: list[Any], queries: list[Any], interval: float, printing: Printing,
               lookup: Any = None) -> int:
    """Refresh until Ctrl-C; sockets new since the last refresh are marked +, and the
    ones that went away are shown once more, marked -.  Peers are named from lists read
    once, when a round first has an address to name."""
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
            if printing.show_headers:
                print(f"# {time.strftime('%H:%M:%S')}  every {interval:g}s  (+ new, - closed; Ctrl-C to stop)")
            style = output.Style(printing.kind == "wide", render.use_color(sys.stdout), printing.show_headers,
                                 printing.sort)
            peer_dict, peer_name = output.peer_forms(namer(lookup, shown, keep=True))
            print(render.sockets_table(shown, wide=style.wide, color=style.color, marker=mark,
                                       show_headers=style.show_headers, sort=output.sorter(style, peer_dict),
                                       peer=peer_name), flush=True)
            gone_last = {socket_key(r.target, s): s for r in results for s in r.of("socket")}
            previous = current
            time.sleep(interval)
    except KeyboardInterrupt:
        return EXIT_OK
