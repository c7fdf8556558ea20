"""``kubectl sockdebug TARGET --events``: follow closed connections in every pod of the
target at once, rows as they arrive, totals at the end; and ``triage --events DURATION``:
the same capture beside the snapshot, judged by the connection rules.

    options -> targets (every running pod of a workload, selector or Service, or node/NAME)
            -> PeerIndex (pods, Services, nodes listed while the agents start)
            -> Follow: one agent stream per target (``events --for D``), records as they arrive
            -> events_view: rows, then per-peer and run totals (or jsonl lines, or one document)

Ctrl-C ends the capture early with the totals (follow.py) and exit code 0, as ``--watch``;
a second Ctrl-C quits at once (130).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Optional

from . import render
from .errors import EXIT_OK, AgentError, SockdebugError
from .events import capture_of, declared_ports
from .events_view import Item, Rows, document, jsonl_record, summary_text
from .follow import Follow, Job
from .kube import Forbidden
from .options import InspectOptions, TriageOptions
from .runner import Runner
from .targets import Target, target_info

#: Warnings kept out of stderr (json and yaml keep them): a capped receive buffer is only a
#: risk; when messages are actually lost, ``events-lost`` says how many.
QUIET = frozenset({"events-rcvbuf-limited"})


class Peers:
    """The pods, Services and nodes the user may list, and their ``PeerIndex``, fetched in
    the background while the agents start."""

    def __init__(self, kube: Any):
        self.pods: list = []
        self.services: list = []
        self.nodes: list = []
        self._index: Any = None
        self._thread = threading.Thread(target=self._build, args=(kube,), daemon=True)
        self._thread.start()

    def _build(self, kube: Any) -> None:
        from .peers import PeerIndex

        ns = kube.namespace
        missing: list[str] = []
        try:
            self.pods = _listed(missing, "pods", lambda: kube.list_pods(None), lambda: kube.list_pods(ns))
            self.services = _listed(missing, "services", lambda: kube.list_services(None),
                                    lambda: kube.list_services(ns))
            self.nodes = _listed(missing, "nodes", kube.list_nodes)
            self._index = PeerIndex(self.pods, self.services, self.nodes)
        except Exception as exc:  # names are a courtesy: never a traceback from this thread
            missing.append(f"peers ({type(exc).__name__}: {str(exc)[:120]})")
        if missing:
            _say(f"note: could not list {', '.join(render.escape(m) for m in missing)}: "
                 "their addresses are shown instead of names (docs/rbac.md)")

    def wait(self) -> Peers:
        self._thread.join()
        return self

    def lookup(self, address: Optional[str], port: Optional[int] = None) -> Any:
        index = self.wait()._index
        return index.lookup(address, port) if index is not None else None


def _listed(missing: list[str], kind: str, *tries: Any) -> list:
    """The first list that may be read (cluster-wide, else the namespace); [] when none,
    and why in ``missing``."""
    why = ""
    for attempt in tries:
        try:
            return attempt()
        except SockdebugError as exc:  # Forbidden, unreachable: peers stay unnamed, the run goes on
            why = "forbidden" if isinstance(exc, Forbidden) else exc.cause[:120]
    missing.append(f"{kind} ({why})")
    return []


def _listening(t: Any) -> frozenset[int]:
    return declared_ports(t.pod) if isinstance(t, Target) else frozenset()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _title(target: dict) -> str:
    if target.get("kind") == "node":
        return f"node/{render.escape(target.get('name'))}"
    return f"pod/{render.escape(target.get('name'))} -n {render.escape(target.get('namespace'))}"


class Out:
    """Where records go as they arrive: table rows (flushed one by one), jsonl lines, or
    nothing until the end (json, yaml)."""

    def __init__(self, output: str, items: list[Item], lookup: Any, out: Any = None):
        self.output, self.items, self.lookup = output, items, lookup
        self.out = out or sys.stdout
        self.rows: Optional[Rows] = None
        if output in ("table", "wide"):
            self.rows = Rows([i.target for i in items], lookup, wide=output == "wide", color=render.use_color(self.out))
        self.headed = False

    def write(self, text: str) -> None:
        self.out.write(text + "\n")  # one write: a Ctrl-C never leaves half a row
        self.out.flush()

    def record(self, i: int, rec: Any) -> None:
        item = self.items[i]
        if rec.type == "warning" and rec.code not in QUIET:
            _say(f"warning: {_title(item.target)}: {render.escape(rec.message)}")
        if self.output == "jsonl":
            import json

            self.write(json.dumps(jsonl_record(item.target, rec, item.listening, self.lookup),
                                  separators=(",", ":")))
        elif self.rows is not None and rec.type == "event":
            if not self.headed:
                self.write(self.rows.header())
                self.headed = True
            self.write(self.rows.line(item.target, rec, item.listening))

    def finish(self, interrupted: bool) -> None:
        if self.output in ("json", "yaml"):
            render.write_doc(document(self.items, self.lookup, interrupted), self.output, self.out)
        elif self.rows is not None:
            if not self.headed:
                self.write("no connections closed")
            self.write("\n" + summary_text(self.items, self.lookup, interrupted))


def run(opts: InspectOptions) -> int:
    """The ``--events`` command: validated options in, exit code out."""
    from .commands import connect, resolve_targets

    kube = connect(opts.conn)
    targets = resolve_targets(kube, opts.target, opts.container, opts.selector, opts.all_namespaces,
                              all_pods=True)  # a workload's connections are spread over its pods
    peers = Peers(kube)
    query = opts.queries()[0]
    where = _title(target_info(targets[0])) if len(targets) == 1 else f"{len(targets)} pods"
    _say(f"following connections closed in {where} for {query.duration}"
         f"{f' or {opts.count} connections' if opts.count else ''}; Ctrl-C ends early with the totals")
    with Runner(kube, opts.agent) as runner:
        return follow(runner, targets, query, opts.output, peers.lookup, opts.count)


def follow(runner: Any, targets: list[Any], query: Any, output: str, lookup: Any, count: Optional[int] = None,
           out: Any = None) -> int:
    """Every target's stream at once: rows (or lines) as they arrive, totals at the end.
    Raises the first stream's failure, after the totals of the others when some worked."""
    items = [Item(target_info(t), _listening(t)) for t in targets]
    printer = Out(output, items, lookup, out)
    streams = Follow(runner, [Job(t, query) for t in targets], _say)
    events = 0
    for i, rec in streams.records():
        items[i].add(rec)
        printer.record(i, rec)
        if rec.type == "event":
            events += 1
            if count and events >= count:
                streams.stop()  # --count is for the whole run: every pod's agent is stopped
    failed = _settle(streams, items)
    if len(failed) == len(items):
        raise failed[0]
    printer.finish(streams.interrupted)
    if failed:
        raise failed[0]
    return EXIT_OK


def _settle(streams: Follow, items: list[Item]) -> list[BaseException]:
    """Mark each item's end (cut, failed) and say so on stderr; the failures, in order."""
    for i in streams.cut():
        items[i].cut = True
        _say(f"warning: {_title(items[i].target)}: the agent did not end within the grace period after the stop; "
             "its totals are those of its last tick")
    failed = []
    for i, exc in sorted(streams.failures.items()):
        cause = exc.cause if isinstance(exc, SockdebugError) else f"{type(exc).__name__}: {exc}"
        if cut_by_stop(streams, exc):
            items[i].cut = True
            _say(f"warning: {_title(items[i].target)}: after the stop: {render.escape(cause)}")
            continue
        items[i].error = cause
        if len(items) > 1:
            _say(f"error: {_title(items[i].target)}: {render.escape(cause)}")
        failed.append(exc)
    return failed


def cut_by_stop(streams: Follow, exc: BaseException) -> bool:
    """A stream that broke off after the user's stop (a node pod deleted before its agent
    started): the stop's doing, not a failure of the run."""
    return streams.stopped and isinstance(exc, AgentError)


# --- triage --events ------------------------------------------------------------------------------

def triage_results(opts: TriageOptions, queries: list[Any]) -> list[render.Result]:
    """Each target's triage records, with the findings of a capture of ``opts.events`` run
    beside the snapshot added to its agent's findings (most severe first)."""
    from sockdebug_agent.query import Query, SocketFlags

    from .commands import connect, resolve_targets

    kube = connect(opts.conn)
    targets = resolve_targets(kube, opts.target, opts.container)
    peers = Peers(kube)
    capture = Query("events", SocketFlags(tcp=True, processes=False), duration=opts.events, tick=0.0)
    jobs = [Job(t, q) for t in targets for q in (*queries, capture)]
    records: list[list[Any]] = [[] for _ in jobs]
    _say(f"capturing closed connections for {opts.events} beside the snapshot; Ctrl-C ends it early")
    per = len(queries) + 1
    with Runner(kube, opts.agent) as runner:
        streams = Follow(runner, jobs, _say)
        for i, rec in streams.records():
            records[i].append(rec)
    for i, exc in sorted(streams.failures.items()):
        if i % per == per - 1 and cut_by_stop(streams, exc):  # the capture, stopped: judge what it saw
            _say(f"warning: {_title(target_info(jobs[i].target))}: the capture ended early: "
                 f"{render.escape(getattr(exc, 'cause', exc))}")
            continue
        raise exc
    results = []
    for n, t in enumerate(targets):
        snapshot = [r for recs in records[n * per:n * per + per - 1] for r in recs]
        found = connection_findings(t, capture_of(records[n * per + per - 1], _listening(t)), peers)
        results.append(render.Result(target_info(t), merge_findings(snapshot, found)))
    return results


def connection_findings(t: Any, capture: Any, peers: Peers) -> list[Any]:
    """The connection rules of the engine over one capture, as agent ``finding`` records."""
    from sockdebug_agent.schema import Finding as Record

    from . import engine, podspec
    from .rules import connections
    from .view import ClusterInput, NodeObservation, PodObservation

    pods, services, nodes = peers.wait().pods, peers.services, peers.nodes
    if isinstance(t, Target):
        data = ClusterInput([t.pod], pods, services, nodes=nodes,
                            observed={podspec.key(t.pod): PodObservation((), capture=capture)})
    else:
        data = ClusterInput([], pods, services, nodes=nodes, scope_nodes=[t.name],
                            node_observed={t.name: NodeObservation(capture=capture)})
    report = engine.analyse(data, rules=connections.IDS)
    return [Record(f.id, f.severity, f.title, f.evidence, f.explanation, f.fix) for f in report.findings]


def merge_findings(records: list[Any], found: list[Any]) -> list[Any]:
    """The agent's findings and ``found`` in one order, most severe first, then the rest."""
    from .findings import RANK

    findings = sorted([r for r in records if r.type == "finding"] + found, key=lambda f: -RANK[f.severity])
    return findings + [r for r in records if r.type != "finding"]
