"""``kubectl sockdebug TARGET --events``: follow closed connections in every pod of the
target at once, rows as they arrive, totals at the end (``triage --events`` runs the same
capture beside its snapshot: triage.py).

    options -> targets (every running pod of a workload, selector or Service, or node/NAME)
            -> peers.Lookup (pods, Services, nodes listed while the agents start)
            -> Follow: one agent stream per target (``events --for D``), records as they arrive
            -> events_view: rows, then per-peer and run totals (or jsonl lines, or one document)

Ctrl-C ends the capture early with the totals (follow.py) and exit code 0, as ``--watch``;
a second Ctrl-C quits at once (130).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Optional

from . import output, render
from .errors import EXIT_OK, AgentError, SockdebugError
from .events import declared_ports
from .events_view import Item, Rows, document, jsonl_record, summary_text
from .follow import Follow, Job
from .options import InspectOptions, Printing
from .peers import through_client
from .runner import Runner
from .targets import Target, target_info

#: Warnings kept out of stderr (json and yaml keep them): a capped receive buffer is only a
#: risk; when messages are actually lost, ``events-lost`` says how many.
QUIET = frozenset({"events-rcvbuf-limited"})


class Remote(NamedTuple):
    """A peer as ``peers.Lookup``'s namer reads a socket."""

    family: str
    peer_address: str
    peer_port: int


class Peers:
    """The run's peer lists (``peers.Lookup``: pods, Services and nodes, listed in a thread
    while the agents start) as the (address, remote port) lookup the events need.  What
    could not be listed is said once, on stderr."""

    def __init__(self, lookup: Any):
        self._lookup = lookup
        self._namer: Optional[Callable[[Any], Any]] = None
        self._lock = threading.Lock()

    def lookup(self, address: Optional[str], port: Optional[int] = None) -> Any:
        if not address:
            return None
        remote = Remote("inet6" if ":" in address else "inet", address, port or 0)
        with self._lock:
            if self._namer is None:
                self._namer = self._lookup.namer([remote], keep=True)  # waits for the lists once
                for note in self._lookup.notes:
                    _say(f"note: {render.escape(note)}")
        return self._namer(remote) if self._namer is not None else None


def _listening(t: Any) -> frozenset[int]:
    return declared_ports(t.pod) if isinstance(t, Target) else frozenset()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _title(target: dict) -> str:
    if target.get("kind") == "node":
        return f"node/{render.escape(target.get('name'))}"
    return f"pod/{render.escape(target.get('name'))} -n {render.escape(target.get('namespace'))}"


class Out:
    """Where records go as they arrive: table rows (flushed one by one); jsonl lines, which
    ``output.emit`` prints as the stream yields them; or nothing until the end, when json,
    yaml, jsonpath and custom-columns print the whole document through ``output.emit``
    (custom-columns' and --sort-by's rows: the events, with their target)."""

    def __init__(self, printing: Printing, items: list[Item], lookup: Any, out: Any = None):
        self.printing, self.items, self.lookup = printing, items, lookup
        self.out = out or sys.stdout
        self.rows: Optional[Rows] = None
        if printing.kind in ("table", "wide"):
            self.rows = Rows([i.target for i in items], lookup, wide=printing.kind == "wide",
                             color=render.use_color(self.out))
        self.headed = not printing.show_headers

    def write(self, text: str) -> None:
        self.out.write(text + "\n")  # one write: a Ctrl-C never leaves half a row
        self.out.flush()

    def print(self, records: Iterator[tuple[int, Any]]) -> None:
        """Read the run's records to their end, printing each as it arrives."""
        if self.printing.kind == "jsonl":
            output.emit(self.printing, output.View(lines=lambda: (self.line(i, rec) for i, rec in records)), self.out)
            return
        for i, rec in records:
            self.record(i, rec)

    def line(self, i: int, rec: Any) -> str:
        import json

        self.warn(i, rec)
        item = self.items[i]
        return json.dumps(jsonl_record(item.target, rec, item.listening, self.lookup), separators=(",", ":"))

    def warn(self, i: int, rec: Any) -> None:
        if rec.type == "warning" and rec.code not in QUIET:
            _say(f"warning: {_title(self.items[i].target)}: {render.escape(rec.message)}")

    def record(self, i: int, rec: Any) -> None:
        self.warn(i, rec)
        if self.rows is not None and rec.type == "event":
            item = self.items[i]
            if not self.headed:
                self.write(self.rows.header())
                self.headed = True
            self.write(self.rows.line(item.target, rec, item.listening))

    def finish(self, interrupted: bool) -> None:
        if self.rows is not None:
            if not any(i.events for i in self.items):
                self.write("no connections closed")
            self.write("\n" + summary_text(self.items, self.lookup, interrupted, self.printing.show_headers))
        elif self.printing.kind != "jsonl":
            doc = document(self.items, self.lookup, interrupted)
            output.emit(self.printing, output.View(document=lambda: doc, rows=output.item_rows("events")),
                        self.out)


def run(opts: InspectOptions) -> int:
    """The ``--events`` command: validated options in, exit code out."""
    from .commands import connect, resolve_targets

    kube = connect(opts.conn)
    peers = Peers(through_client(kube, kube.namespace)) if opts.peers else None
    targets = resolve_targets(kube, opts.target, opts.container, opts.selector, opts.all_namespaces,
                              all_pods=True)  # a workload's connections are spread over its pods
    query = opts.queries()[0]
    where = _title(target_info(targets[0])) if len(targets) == 1 else f"{len(targets)} pods"
    _say(f"following connections closed in {where} for {query.duration}"
         f"{f' or {opts.count} connections' if opts.count else ''}; Ctrl-C ends early with the totals")
    with Runner(kube, opts.agent) as runner:
        return follow(runner, targets, query, opts.printing, peers.lookup if peers else None, opts.count)


def follow(runner: Any, targets: list[Any], query: Any, printing: Printing, lookup: Any,
           count: Optional[int] = None, out: Any = None) -> int:
    """Every target's stream at once: rows (or lines) as they arrive, totals at the end.
    Raises the first stream's failure, after the totals of the others when some worked."""
    items = [Item(target_info(t), _listening(t)) for t in targets]
    printer = Out(printing, items, lookup, out)
    streams = Follow(runner, [Job(t, query) for t in targets], _say)

    def records() -> Iterator[tuple[int, Any]]:
        events = 0
        for i, rec in streams.records():
            items[i].add(rec)
            yield i, rec
            if rec.type == "event":
                events += 1
                if count and events >= count:
                    streams.stop()  # --count is for the whole run: every pod's agent is stopped

    printer.print(records())
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
