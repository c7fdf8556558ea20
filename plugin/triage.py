"""``kubectl sockdebug triage TARGET``: why is this pod (each pod of a workload or Service,
or this node) not working?  The pod's Kubernetes state joined with what the kernel shows
in its network namespace, judged by the findings engine (``engine.analyse``: the rules,
order, renderer and ``--fail-on`` that ``sweep`` uses too).

For the pods in scope, all at the same time:

- from the API (``collect.read``): the namespace's Services, EndpointSlices and
  NetworkPolicies, the pods' Events, every pod, Service and node (context for the rules,
  and the names of peers), and the last log lines of each failing container;
- from an agent in each running pod: ``triage`` (its netns findings and figures:
  summary, limits with the kernel's counters, routes, interfaces) and ``sockets -tua -p``
  with every container's owners (``Runner.run_pod``, as ``--listening`` names them).

With ``--events DURATION`` each agent also captures the closed connections for that long
(``events``, beside the two queries; for a node, a second node pod); the capture is the
observation's ``capture``, judged by the connection rules.  Ctrl-C then ends the capture
early (``follow.CtrlC``) and the triage goes on with what it saw.

A pod that is down still gets an answer: a crash-looping or waiting container is judged
from spec, status, Events and its failed run's log, and the pod's network namespace is
read through an agent next to a container that runs steadily, else one that targets no
container (``targets.agent_container``); whatever could not be seen is said.  A node
target runs ``triage --host --sockets`` in a node pod and adds the hostNetwork/hostPort
rules for the pods on that node.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple, Optional

from . import collect, engine, findings, output, peers, podspec, render, warm
from .errors import EXIT_OK, SockdebugError
from .events import capture_of, declared_ports
from .findings import Report
from .options import Printing, TriageOptions, triage_queries
from .runner import Runner, at_once
from .targets import (
    NodeTarget,
    Target,
    agent_container,
    container_ids,
    get_pod,
    parse_target,
    pick_container,
    selected_pods,
)
from .targets import target_info as info_of
from .view import ClusterInput, NodeObservation, PodObservation

#: the agent's netns findings and figures; every TCP and UDP socket with owners (the warm
#: path starts the same ones); a node's (``triage --host --sockets``: one node pod)
TRIAGE, SOCKETS = triage_queries(node=False)
(NODE,) = triage_queries(node=True)
PARALLEL = 8
FIGURES = ("summary", "limits", "process_limits", "route", "interface", "warning", "hello", "end")


class Seen(NamedTuple):
    """One pod's (or node's) agent answer."""

    target: dict  #: target_info
    records: list[Any]


class Outcome(NamedTuple):
    """A triage's report and what renders it."""

    title: str
    report: Report
    scope: dict[str, Any]
    seen: list[Seen]
    namer: Optional[Callable[[Any], Optional[peers.Peer]]]
    failure: Optional[SockdebugError]  #: the first agent failure, when no namespace could be read


def run(opts: TriageOptions, early: Any = None) -> int:
    from .kube import connect

    started = time.monotonic()
    kube = connect(opts.conn.kubeconfig, opts.conn.context, opts.conn.namespace)
    ref = parse_target(opts.target)
    with Runner(kube, opts.agent) as runner, ThreadPoolExecutor(max_workers=PARALLEL) as pool, \
            capturing(runner, opts):
        if ref.kind == "node":
            outcome = node(kube, runner, pool, ref.name, opts.capture())
        else:
            outcome = pods(kube, runner, pool, opts, early)
    outcome.scope["elapsed_s"] = round(time.monotonic() - started, 2)
    show(outcome, opts.printing, sys.stdout)
    if outcome.failure is not None:
        raise outcome.failure  # nothing could be read at all: a setup problem, said after what is known
    findings.fail_on(outcome.report.findings, opts.fail_on)
    return EXIT_OK


def capturing(runner: Runner, opts: TriageOptions) -> Any:
    """With ``--events``: the first Ctrl-C ends the captures early (the rest of the triage
    goes on), a second quits."""
    if opts.events is None:
        return contextlib.nullcontext()
    from .follow import CtrlC

    return CtrlC(runner.stop, "stopping the capture of closed connections (Ctrl-C again to quit at once)")


def answers(runner: Runner, target: Any, queries: list[Any], capture: Any) -> list[Any]:
    """The records of ``queries`` in ``target``, and with a ``capture`` query its events and
    ticks, all run at the same time (the runner adds one agent for them)."""
    run = runner.run if isinstance(target, NodeTarget) else runner.run_pod
    calls = [lambda q=q: list(run(target, q)) for q in queries]
    if capture is not None:
        calls.append(lambda: [r for r in run(target, capture) if r.type in ("event", "tick")])
    return [r for answer in at_once(calls) for r in answer]


# --- pods --------------------------------------------------------------------------------------

def scope_pods(kube: Any, opts: TriageOptions) -> tuple[str, list[dict]]:
    """(title, the pods of the target in every phase but deleted): a pod, or each pod of a
    workload or Service."""
    ref = parse_target(opts.target)
    ns = kube.namespace
    if ref.kind == "pod":
        title, live = f"pod/{ref.name} -n {ns}", [get_pod(kube, ns, ref.name)]
    else:
        what, selector, found = selected_pods(kube, ref, ns)
        live = sorted((p for p in found if not p["metadata"].get("deletionTimestamp")),
                      key=lambda p: p["metadata"]["name"])
        if not live:
            from .errors import TargetError

            raise TargetError(f"{what} has no pods (selector {selector})",
                              f"check `kubectl get pods -n {ns} -l {selector}`")
        title = f"{opts.target} -n {ns} ({len(live)} pod{'s' if len(live) > 1 else ''})"
    if opts.container is not None:
        for p in live:
            pick_container(p, opts.container)  # a -c the pods do not have: said before anything runs
    return title, live


def observe(runner: Runner, pod: dict, opts: TriageOptions, early: Any, remember: bool) -> Seen:
    """The agent's answer about one running pod: ``triage`` and ``sockets -tua -p``; a
    single pod's agent is remembered for the next, warm run."""
    ns = pod["metadata"]["namespace"]
    if early is not None and early.target.pod_name == pod["metadata"]["name"]:
        got = early.results(opts.agent, [TRIAGE, SOCKETS])
        if got is not None:
            return Seen(got[0].target, got[0].records)
    container = agent_container(pod, opts.container, lambda c: runner.running_agent(Target(ns, pod, c)) is not None)
    target = Target(ns, pod, container)
    records = answers(runner, target, [TRIAGE, SOCKETS], opts.capture())
    if remember:
        warm.remember(opts.conn, runner, target)
    return Seen(info_of(target), records)


def pods(kube: Any, runner: Runner, pool: ThreadPoolExecutor, opts: TriageOptions, early: Any) -> Outcome:
    title, scope = scope_pods(kube, opts)
    ns = kube.namespace
    selector = (f"involvedObject.uid={scope[0]['metadata'].get('uid')}" if len(scope) == 1
                and scope[0]["metadata"].get("uid") else collect.POD_EVENTS)
    reads = pool.submit(collect.read, kube, [ns], event_selector=selector)
    logs = pool.submit(collect.failed_run_logs, kube, scope)
    running = [p for p in scope if podspec.is_running(p)]
    single = parse_target(opts.target).kind == "pod"
    futures: dict[tuple[str, str], Future] = {
        podspec.key(p): pool.submit(observe, runner, p, opts, early, single) for p in running}
    observed: dict[tuple[str, str], PodObservation] = {}
    uninspected: dict[tuple[str, str], str] = {}
    seen: list[Seen] = []
    notes: list[str] = []
    failure: Optional[SockdebugError] = None
    for p in running:
        k = podspec.key(p)
        try:
            got = futures[k].result()
        except SockdebugError as exc:
            uninspected[k] = f"the agent could not read its network namespace: {exc.cause}"
            failure = failure or exc
            continue
        seen.append(got)
        observed[k] = observation(p, got.records, opts.events is not None)
        if got.target.get("container") is None:
            notes.append(f"pod/{k[1]}: no container runs steadily, so its network namespace was read by an agent "
                         "that targets none: the sockets' owners are not shown")
    r = reads.result()
    data = ClusterInput(
        pods=scope, context_pods=r.pods, services=r.services, endpoint_slices=r.endpoint_slices,
        network_policies=r.network_policies, nodes=r.nodes, events=r.events, logs=logs.result(), observed=observed,
        uninspected=uninspected, not_listed=r.not_listed, not_seen=[*r.notes, *notes])
    index = peers.PeerIndex([*r.pods, *scope], r.services, r.nodes)
    return Outcome(title, engine.analyse(data), {"target": opts.target, "namespace": ns, "via": "ephemeral"},
                   seen, lambda s: index.lookup(s.peer_address, s.peer_port) if peers.nameable(s) else None,
                   failure if running and not observed else None)


def observation(pod: dict, records: list[Any], captured: bool = False) -> PodObservation:
    """The agent's records as the engine reads them; a hostNetwork pod's sockets are the
    node's, and only those its own containers hold are its own.  ``captured``: the records
    hold a capture's events and ticks (``--events``)."""
    sockets = [r for r in records if r.type == "socket"]
    if podspec.host_network(pod):
        sockets = [s for s in sockets if any(p.get("container") for p in s.processes or ())]
    return PodObservation(sockets, next((r for r in records if r.type == "limits"), None),
                          [r for r in records if r.type == "finding"],
                          capture_of(records, declared_ports(pod)) if captured else None)


# --- a node --------------------------------------------------------------------------------------

def node(kube: Any, runner: Runner, pool: ThreadPoolExecutor, name: str, capture: Any = None) -> Outcome:
    """The node's own findings (the agent's ``triage --host``) and the hostNetwork/hostPort
    rules over the pods on it; its sockets, split between those pods and the node."""
    reads = pool.submit(collect.read, kube, [kube.namespace], kinds=("services", "nodes", "pods"),
                        pod_selector=f"spec.nodeName={name}")
    target = NodeTarget(name)
    records = answers(runner, target, [NODE], capture)
    r = reads.result()
    on_node = [p for p in r.pods if (p.get("spec") or {}).get("nodeName") == name]
    sockets = [rec for rec in records if rec.type == "socket"]
    mine, host = collect.split_host_sockets(sockets, [p for p in on_node if podspec.host_network(p)],
                                            container_ids)
    data = ClusterInput(
        pods=[], context_pods=on_node, services=r.services, nodes=r.nodes,
        observed={k: PodObservation(v) for k, v in mine.items()},
        node_observed={name: NodeObservation(host, next((x for x in records if x.type == "limits"), None),
                                             [x for x in records if x.type == "finding"],
                                             capture_of(records) if capture is not None else None)},
        scope_nodes=[name], not_listed=r.not_listed, not_seen=r.notes)
    index = peers.PeerIndex(r.pods, r.services, r.nodes)
    return Outcome(f"node/{name}", engine.analyse(data), {"nodes": [name], "via": "a node pod"},
                   [Seen(info_of(target), records)],
                   lambda s: index.lookup(s.peer_address, s.peer_port) if peers.nameable(s) else None, None)


# --- output --------------------------------------------------------------------------------------

def figures(outcome: Outcome) -> list[render.Result]:
    """What each agent reported besides findings and sockets, for the figures' sections."""
    return [render.Result(s.target, [r for r in s.records if r.type in FIGURES]) for s in outcome.seen]


def connection_rows(outcome: Outcome) -> list[tuple[dict, list[dict[str, Any]]]]:
    return [(s.target, peers.connections((r for r in s.records if r.type == "socket"), outcome.namer))
            for s in outcome.seen]


def document(outcome: Outcome) -> dict[str, Any]:
    """The TriageReport: the findings report, then per agent target its figures and
    connections (each with its ``peer``)."""
    doc = findings.document(outcome.report, outcome.scope, "TriageReport")
    items = render.items(figures(outcome))
    for item, (_, rows) in zip(items, connection_rows(outcome)):
        item["connections"] = [{k: v for k, v in row.items() if k != "name"} for row in rows]
    doc["items"] = items
    return doc


def text(outcome: Outcome, color: bool) -> str:
    out = [f"# {render.escape(outcome.title)}: findings", findings.text(outcome.report, outcome.scope, color)]
    for target, rows in connection_rows(outcome):
        out += ["", f"# {render.target_title(render.Result(target, []))}: connections", peers.connections_table(rows)]
    shown = render.report_text(figures(outcome), color=color, sockets=False)
    if shown:
        out += ["", shown]
    return "\n".join(out)


def view(outcome: Outcome) -> output.View:
    """The triage's answer for ``output.emit``: the TriageReport, its findings as rows, the
    text (findings in --sort-by order), and the findings as JSON lines."""
    def table(style: output.Style) -> str:
        shown = outcome
        if style.sort is not None:
            from . import printers

            shown = outcome._replace(report=outcome.report._replace(
                findings=printers.sort_rows(outcome.report.findings, style.sort, findings.finding_dict)))
        return text(shown, style.color)

    def lines() -> Iterator[str]:
        for f in outcome.report.findings:
            yield json.dumps({"type": "finding", **findings.finding_dict(f)}, separators=(",", ":"))

    return output.View(lambda: document(outcome), output.top_rows("findings"), table, lines)


def show(outcome: Outcome, printing: Printing, out: Any) -> None:
    for res in figures(outcome):
        for w in render.notable_warnings(res):
            print(f"warning: {render.target_title(res)}: {render.escape(w.message)}", file=sys.stderr)
    output.emit(printing, view(outcome), out)
