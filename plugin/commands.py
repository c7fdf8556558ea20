"""What each CLI command does, once its flags are parsed: complete -> validate -> run.

The query is validated locally (the agent's Query.check: flags and filter syntax) before any API call,
targets are resolved, the agent runs in each, and the records are rendered.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from sockdebug_agent.query import Query, SocketFlags

from . import render
from .errors import EXIT_OK, TargetError, UsageError
from .targets import NodeTarget, Target, container_ids, parse_target, pick_container, resolve, running_pods

_SOCKET_LETTERS = (("listening", "-l"), ("all_states", "-a"), ("tcp", "-t"), ("udp", "-u"), ("unix", "-x"),
                   ("raw", "-w"), ("ipv4", "-4"), ("ipv6", "-6"), ("processes", "-p"), ("timers", "-o"),
                   ("extended", "-e"), ("memory", "-m"), ("info", "-i"))
_MAX_PARALLEL = 4


def agent_queries(words: list[str], socket_flags: dict[str, bool], views: dict[str, bool],
                  output: str = "table") -> list[list[str]]:
    """The agent command lines for the requested views.  Like ``ss -s``, a view flag
    alone shows just that view; socket flags or filter words add the socket list."""
    args = [letter for name, letter in _SOCKET_LETTERS if socket_flags.get(name)]
    if output == "wide":
        args += [a for a in ("-o", "-i") if a not in args]
    # Validate here, before touching the cluster: syntax only, as names (hosts, devices,
    # services, cgroups) mean something only inside the pod, where the agent resolves them.
    flags = SocketFlags(**{("all" if k == "all_states" else k): bool(v) for k, v in socket_flags.items()})
    Query("sockets", flags, tuple(words)).check()
    queries = [[name] for name in ("summary", "routes", "interfaces", "limits") if views.get(name)]
    selection_given = any(v for k, v in socket_flags.items() if k != "processes") or words
    if not queries or selection_given:
        queries.insert(0, ["sockets", *args, *words])
    return queries


def connect(conn: dict[str, Optional[str]]):
    from .kube import Kube  # the Kubernetes client is imported here, not at start-up

    return Kube(kubeconfig=conn.get("kubeconfig"), context=conn.get("context"), namespace=conn.get("namespace"))


def check_agent_options(agent: dict[str, Any]) -> None:
    """Validate the agent options before any API call."""
    if agent["profile"] not in ("auto", "general", "baseline", "restricted", "netadmin"):
        raise UsageError(f"unknown --profile {agent['profile']!r}", "use auto, general, baseline, restricted "
                         "or netadmin")
    if agent["pull_policy"] not in ("Always", "IfNotPresent", "Never"):
        raise UsageError(f"unknown --image-pull-policy {agent['pull_policy']!r}", "use Always, IfNotPresent or Never")
    if agent["timeout"] <= 0:
        raise UsageError("--timeout must be positive", "e.g. --timeout 60")


def _session(kube, agent: dict[str, Any]):
    from .transport import AgentSession, Options

    return AgentSession(kube, Options(image=agent["image"], pull_policy=agent["pull_policy"],
                                      profile=agent["profile"], timeout=agent["timeout"]))


def resolve_targets(kube, target: Optional[str], namespace: str, container: Optional[str], selector: Optional[str],
                    all_namespaces: bool, all_pods: bool) -> list[Any]:
    """Targets to query: ``Target`` s, or a ``NodeTarget`` for node/NAME."""
    if target is None:
        if not selector:
            raise UsageError("no target given", "usage: kubectl sockdebug pod/NAME [options]  "
                             "(or -l SELECTOR [-A] for every matching pod)")
        pods = running_pods(kube.list_pods(None if all_namespaces else namespace, selector))
        if not pods:
            where = "any namespace" if all_namespaces else f"namespace {namespace}"
            raise TargetError(f"no running pods match {selector!r} in {where}", "check `kubectl get pods -l ...`")
        return [Target(p["metadata"]["namespace"], p, pick_container(p, container)) for p in pods]
    ref = parse_target(target)
    if ref.kind == "node":
        return [NodeTarget(ref.name)]
    return resolve(kube, ref, namespace, container, all_pods=all_pods)


def target_info(t: Any) -> dict[str, Any]:
    if isinstance(t, NodeTarget):
        return {"kind": "node", "name": t.name}
    return {"kind": "pod", "namespace": t.namespace, "name": t.pod_name, "container": t.container,
            "node": t.pod.get("spec", {}).get("nodeName")}


def run_queries(session, t: Any, queries: list[list[str]], namespace: str) -> Iterator[Any]:
    """Records of every query in one target, each owner tagged with its container."""
    if isinstance(t, NodeTarget):
        for query in queries:
            yield from session.query_node(t.name, namespace, query)
        return
    ids = container_ids(t.pod)
    for query in queries:
        records = session.query(t, query)
        if query[0] == "sockets" and "-p" in query and t.siblings():
            records = _with_sibling_owners(session, t, query, list(records))
        for rec in records:
            if rec.type == "socket" and rec.processes:
                for p in rec.processes:
                    p["container"] = ids.get(p.get("container_id", ""))
            yield rec


def _with_sibling_owners(session, t: Any, query: list[str], records: list[Any]) -> list[Any]:
    """Sockets held by another container's processes show no owner from the target
    container's PID namespace: ask that container's agent too, only when such sockets
    exist (each container asked gains an agent container once)."""
    unowned = {r.inode for r in records if r.type == "socket" and r.inode and not r.processes}
    owners: dict[int, list] = {}
    for sibling in t.siblings():
        if not unowned - owners.keys():
            break
        for rec in session.query(t._replace(container=sibling), query):
            if rec.type == "socket" and rec.processes and rec.inode in unowned:
                owners[rec.inode] = rec.processes
    return [r._replace(processes=owners[r.inode]) if r.type == "socket" and r.inode in owners else r
            for r in records]


def collect(session, targets: list[Any], queries: list[list[str]], namespace: str) -> list[render.Result]:
    """Run the queries in every target (a few at a time) and keep the records."""
    def one(t: Any) -> render.Result:
        return render.Result(target_info(t), list(run_queries(session, t, queries, namespace)))

    if len(targets) == 1:
        return [one(targets[0])]
    with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL, len(targets))) as pool:
        return list(pool.map(one, targets))


def warn(results: list[render.Result]) -> None:
    for res in results:
        netids = {s.netid for s in res.of("socket")} | ({"unix"} if any(s.family == "unix" for s in res.of("socket"))
                                                          else set())
        for w in res.of("warning"):
            # A /proc fallback only matters when that table has rows here (raw_diag is
            # missing on many kernels, and ss falls back silently).
            if w.code == "proc-fallback" and not any(f"{n} sockets" in w.message for n in netids):
                continue
            print(f"warning: {render.target_title(res)}: {render.escape(w.message)}", file=sys.stderr)


def inspect(target: Optional[str], words: list[str], *, conn: dict, agent: dict, container: Optional[str],
            selector: Optional[str], all_namespaces: bool, all_pods: bool, output: str,
            socket_flags: dict[str, bool], views: dict[str, bool], watch: Optional[float]) -> int:
    if output not in render.OUTPUTS:
        raise UsageError(f"unknown output format {output!r}", f"use one of: {', '.join(render.OUTPUTS)}")
    if watch is not None and watch <= 0:
        raise UsageError("--watch needs a positive interval", "e.g. --watch=2")
    queries = agent_queries(words, socket_flags, views, output)
    check_agent_options(agent)
    kube = connect(conn)
    targets = resolve_targets(kube, target, kube.namespace, container, selector, all_namespaces, all_pods)
    session = _session(kube, agent)
    if watch is not None:
        return watch_loop(session, targets, [q for q in queries if q[0] == "sockets"] or queries[:1],
                          kube.namespace, watch, output)
    if output == "jsonl":
        tag = len(targets) > 1
        for t in targets:
            info = target_info(t)
            for rec in run_queries(session, t, queries, kube.namespace):
                print(render.jsonl_line(rec, info, tag), flush=True)
        return EXIT_OK
    results = collect(session, targets, queries, kube.namespace)
    warn(results)
    show(results, output, sys.stdout)
    return EXIT_OK


def show(results: list[render.Result], output: str, out) -> None:
    if output in ("json", "yaml"):
        render.write_document(results, output, out)
        return
    color = render.use_color(out)
    parts = []
    if any(r.of("socket") for r in results) or not any(r.records for r in results):
        parts.append(render.sockets_table(results, wide=output == "wide", color=color))
    sections: list[tuple[str, Callable[[render.Result], str]]] = [
        ("summary", render.summary_text), ("route", render.routes_table),
        ("interface", render.interfaces_table), ("limits", render.limits_text)]
    for kind, fn in sections:
        for res in results:
            if res.of(kind) or (kind == "limits" and res.of("process_limits")):
                parts.append(f"# {render.target_title(res)}: {kind}\n{fn(res)}")
    out.write("\n\n".join(parts) + "\n")


def socket_key(target: dict, s: Any) -> tuple:
    return (target.get("namespace"), target.get("name"), s.netid, s.local_address, s.local_port,
            s.peer_address, s.peer_port, s.inode)


def watch_loop(session, targets: list[Any], queries: list[list[str]], namespace: str, interval: float,
               output: str) -> int:
    """Refresh until Ctrl-C; sockets new since the last refresh are marked +, and the
    ones that went away are shown once more, marked -."""
    previous: Optional[set[tuple]] = None
    gone_last: dict[tuple, Any] = {}
    try:
        while True:
            results = collect(session, targets, queries, namespace)
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


def triage(target: str, *, conn: dict, agent: dict, container: Optional[str], output: str,
           fail_on: Optional[str]) -> int:
    from .errors import FindingsError

    if output not in ("table", "json", "yaml", "jsonl"):
        raise UsageError(f"unknown output format {output!r}", "use table, json, yaml or jsonl")
    if fail_on not in (None, "info", "warning", "critical"):
        raise UsageError(f"unknown --fail-on {fail_on!r}", "use info, warning or critical")
    check_agent_options(agent)
    kube = connect(conn)
    targets = resolve_targets(kube, target, kube.namespace, container, None, False, False)
    session = _session(kube, agent)
    query = ["triage", "--host"] if isinstance(targets[0], NodeTarget) else ["triage"]
    results = collect(session, targets, [query], kube.namespace)
    warn(results)
    if output == "jsonl":
        for res in results:
            for rec in res.records:
                print(render.jsonl_line(rec, res.target, len(results) > 1))
    elif output in ("json", "yaml"):
        render.write_document(results, output, sys.stdout)
    else:
        color = render.use_color(sys.stdout)
        for res in results:
            print(f"# {render.target_title(res)}: findings")
            print(render.findings_text(res, color))
            print()
        show(results, "table", sys.stdout)
    ranks = {"critical": 2, "warning": 1, "info": 0}
    if fail_on:
        worst = [f for r in results for f in r.of("finding") if ranks[f.severity] >= ranks[fail_on]]
        if worst:
            raise FindingsError(f"{len(worst)} finding(s) at or above {fail_on}", "see the findings above")
    return EXIT_OK
