"""The sweep's socket collection: every running pod's listening sockets, read by agents.

``sockets(kube, opts, pods, context, progress)`` is the entry the sweep command calls; it
returns a ``Collected`` (sockets per pod, pods not inspected and why, the node's own
listeners, the agents' warnings).  Two ways:

``--via ephemeral`` (default)
    per pod, the agent of the runner (a running ``serve`` agent is reused, else one is
    added as an ephemeral container: each pod keeps it in its spec), a few pods at a
    time.  hostNetwork pods are asked from each running container, because only the
    sockets their own processes hold are theirs (the node's namespace is shared).
``--via node``
    one agent per node instead of one per pod: ``sockdebug-agent pods -tul -p`` in the
    node-agent DaemonSet (manifests/node-agent.yaml) when it runs there, else in a
    short-lived node pod (host PID and network namespaces, profiles.NODE_CAPABILITIES) that
    the runner deletes afterwards.  It enters each pod's network namespace itself; nothing is
    added to the pods.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from sockdebug_agent.query import Query, SocketFlags

from . import podspec, profiles
from .errors import SockdebugError
from .lifecycle import SharedWatch
from .options import SweepOptions
from .podspec import is_running
from .runner import Runner
from .targets import AgentPod, NodeTarget, Target, container_ids, pick_container

PARALLEL = 8
MAX_THREADS = 256  #: pods handled at once by --via ephemeral (most of them only wait)
# what sweep reads: listening TCP and UDP sockets with owners, per pod / per node
AGENT_QUERY = Query("sockets", SocketFlags(listening=True, tcp=True, udp=True, processes=True))
NODE_QUERY = Query("pods", SocketFlags(listening=True, tcp=True, udp=True, processes=True))
NODE_AGENT_NAMESPACE = "sockdebug-system"
NODE_AGENT_SELECTOR = "app.kubernetes.io/name=sockdebug-node-agent,app.kubernetes.io/component=daemonset"
NODE_AGENT_CONTAINER = "agent"
NODE_FALLBACK = "or install the node-agent DaemonSet (manifests/node-agent.yaml), or use --via ephemeral"


class Progress:
    """``[#####.....] 12/50 pods 3.1s`` on stderr, redrawn with ``\\r`` when stderr is a
    terminal; silent otherwise.  ``note`` prints a line without tearing the bar."""

    def __init__(self, total: int, what: str, stream=None, tty: Optional[bool] = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total, self.what, self.done = total, what, 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def _bar(self) -> str:
        width = 30
        filled = width * self.done // self.total if self.total else width
        return (f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.what} "
                f"{time.monotonic() - self.started:.1f}s")

    def tick(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if self.tty:
                self.stream.write(self._bar())
                self.stream.flush()

    def note(self, text: str) -> None:
        with self._lock:
            if text in self._seen:
                return
            self._seen.add(text)
            if self.tty:
                self.stream.write("\r\x1b[K")
            self.stream.write(text + "\n")
            if self.tty and self.done:
                self.stream.write(self._bar())
            self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self.tty:
                self.stream.write("\r\x1b[K")
                self.stream.flush()


class Collected:
    """What the collection learned: the sweep turns it into the engine's ``ClusterInput``."""

    def __init__(self) -> None:
        self.sockets: dict[podspec.PodKey, list[Any]] = {}
        self.uninspected: dict[podspec.PodKey, str] = {}
        self.host: dict[str, dict[int, Any]] = defaultdict(dict)  #: node -> inode -> unattributed host socket
        self.host_owned: dict[str, set[int]] = defaultdict(set)  #: node -> inodes some pod owns
        self.warnings: list[str] = []
        self.first_error: Optional[SockdebugError] = None  #: re-raised when no pod at all could be read

    def failed(self, key: podspec.PodKey, exc: SockdebugError, reason: Optional[str] = None) -> None:
        self.uninspected.setdefault(key, reason or exc.cause)
        if self.first_error is None:
            self.first_error = exc

    def host_listeners(self) -> dict[str, list[Any]]:
        return {node: [s for inode, s in socks.items() if inode not in self.host_owned[node]]
                for node, socks in self.host.items()}


def tag_containers(sockets: list[Any], ids: dict[str, str]) -> list[Any]:
    for s in sockets:
        for p in s.processes or []:
            p["container"] = ids.get(p.get("container_id") or "")
    return sockets


def why_not_running(pod: dict) -> str:
    states = []
    for s in pod.get("status", {}).get("containerStatuses") or []:
        state = s.get("state") or {}
        kind = next(iter(state), "unknown")
        t = podspec.trouble(pod, s["name"])
        states.append(f"{s['name']}: {t['state'] if t else (state.get(kind) or {}).get('reason') or kind}"
                      + (f", {t['restarts']} restarts" if t else ""))
    return "no steadily running container" + (f" ({', '.join(states)})" if states else "")


def each(fn: Callable[[Any], None], items: list, workers: int) -> None:
    """``fn`` of every item, ``workers`` at a time.  On the way out (Ctrl-C too) nothing
    waits: items not started are dropped, and the threads still running are left to end."""
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# --- --via ephemeral -------------------------------------------------------------------------

def agent_targets(pod: dict, runner: Optional[Runner] = None) -> list[str]:
    """The containers to run the agent next to.  One per pod: a container whose agent is
    already running (reuse), else the default container, else another running one —
    preferring containers that are not crash-looping (a container that runs for a moment
    between restarts would get an agent that dies with it).  hostNetwork pods: every
    running container, because only sockets their own processes hold are theirs."""
    running = podspec.running_containers(pod)
    names = [c["name"] for c in podspec.containers(pod) if c["name"] in running]
    steady = [n for n in names if not podspec.trouble(pod, n)]
    spec = pod.get("spec", {})
    if spec.get("hostNetwork") and not spec.get("shareProcessNamespace"):
        return steady
    if runner is not None:
        ns = pod["metadata"].get("namespace", "")
        served = [n for n in names if runner.running_agent(Target(ns, pod, n))]
        if served:
            return served[:1]
    default = pick_container(pod, None) if spec.get("containers") else None
    if default in steady:
        return [default]
    return steady[:1]


def collect_ephemeral(runner: Runner, pods: list[dict], progress: Progress, parallel: int = PARALLEL) -> Collected:
    """Every pod at once, each in three steps: add its agent (``Runner.prepare``: the
    PATCH, ``parallel`` at a time), wait until it runs (``Runner.ready``: the runner's
    watch, which a sweep shares between all pods of a namespace, so waiting costs no
    request and holds no slot), then query it (``parallel`` execs at a time).  So all
    patches go out first, the kubelet starts the agents together, and each pod's exec
    starts as soon as its agent runs."""
    got = Collected()
    jobs: list[tuple[dict, list[str]]] = []
    for pod in pods:
        if not is_running(pod):
            continue
        names = agent_targets(pod, runner)
        if not names:
            got.uninspected[podspec.key(pod)] = why_not_running(pod)
            continue
        jobs.append((pod, names))
    progress.total = len(jobs)
    lock = threading.Lock()
    writes, execs = threading.BoundedSemaphore(parallel), threading.BoundedSemaphore(parallel)

    def one(job: tuple[dict, list[str]]) -> None:
        pod, names = job
        k = podspec.key(pod)
        ids = container_ids(pod)
        node = pod.get("spec", {}).get("nodeName") or ""
        host_network = bool(pod.get("spec", {}).get("hostNetwork"))
        targets = [Target(k[0], pod, name) for name in names]
        try:
            with writes:
                for t in targets:
                    runner.prepare(t)
            for t in targets:
                runner.ready(t)
            seen: dict[int, Any] = {}
            with execs:
                records = [rec for t in targets for rec in runner.run(t, AGENT_QUERY)]
            for rec in records:
                if rec.type == "socket":
                    ident = rec.inode or id(rec)
                    prev = seen.get(ident)
                    if prev is None or (rec.processes and not prev.processes):
                        seen[ident] = rec
                elif rec.type == "warning" and rec.code not in ("process-attribution-denied",):
                    with lock:
                        got.warnings.append(f"pod/{k[1]} -n {k[0]}: {rec.message}")
            socks = tag_containers(list(seen.values()), ids)
            with lock:
                if host_network:
                    mine = [s for s in socks if any(p.get("container") for p in s.processes or [])]
                    got.sockets[k] = mine
                    got.host_owned[node].update(s.inode for s in mine)
                    for s in socks:
                        got.host[node].setdefault(s.inode, s._replace(processes=[
                            p for p in s.processes or [] if not p.get("container")]))
                else:
                    got.sockets[k] = socks
        except SockdebugError as exc:
            with lock:
                got.failed(k, exc)
        finally:
            progress.tick()

    if jobs:  # on Ctrl-C, pods still waiting for their agents are not waited for: the caller closes the watch
        each(one, jobs, min(MAX_THREADS, len(jobs)))
    return got


# --- --via node ---------------------------------------------------------------------------------

def run_on_node(runner: Runner, node: str, daemon_pod: Optional[str]) -> list[Any]:
    """The ``pods`` records of one node, from the DaemonSet's agent or a short-lived node pod."""
    target = (AgentPod(NODE_AGENT_NAMESPACE, daemon_pod, NODE_AGENT_CONTAINER, node) if daemon_pod
              else NodeTarget(node, purpose="sweep"))
    return list(runner.run(target, NODE_QUERY))


def daemonset_agents(kube) -> dict[str, str]:
    """node -> running pod of the node-agent DaemonSet (empty when it is not installed, or
    we may not see it)."""
    try:
        pods = kube.list_pods(NODE_AGENT_NAMESPACE, NODE_AGENT_SELECTOR)
    except SockdebugError:
        return {}
    out = {}
    for p in pods:
        node = p.get("spec", {}).get("nodeName")
        statuses = p.get("status", {}).get("containerStatuses") or []
        if node and is_running(p) and any(s["name"] == NODE_AGENT_CONTAINER and "running" in (s.get("state") or {})
                                        for s in statuses):
            out[node] = p["metadata"]["name"]
    return out


def attribute_node(records: list[Any], node: str, pods_by_uid: dict[str, dict], in_scope: set, got: Collected
                   ) -> None:
    """Sort one node's ``netns`` + ``socket`` stream into per-pod sockets and the node's own
    (unattributed) listeners."""
    on_node = [p for p in pods_by_uid.values() if p.get("spec", {}).get("nodeName") == node]
    owner_of: dict[str, tuple[dict, str]] = {}  # container id -> (pod, container name)
    for p in on_node:
        for cid, name in container_ids(p).items():
            owner_of[cid] = (p, name)
    current = None
    groups: list[tuple[Any, list[Any]]] = []
    for rec in records:
        if rec.type == "netns":
            current = (rec, [])
            groups.append(current)
        elif rec.type == "socket" and current is not None:
            current[1].append(rec)
        elif rec.type == "warning":
            got.warnings.append(f"node/{node}: {rec.message}")
    for ns, socks in groups:
        pods = [pods_by_uid[u] for u in ns.pod_uids if u in pods_by_uid]
        if ns.error:
            for p in pods:
                got.uninspected.setdefault(podspec.key(p), f"the node agent could not enter its network "
                                                            f"namespace: {ns.error}")
            continue
        if not ns.host:
            for p in pods:
                got.sockets[podspec.key(p)] = tag_containers([s._replace(processes=[dict(x) for x in
                                                                                     s.processes or []])
                                                                for s in socks], container_ids(p))
            continue
        mine: dict[podspec.PodKey, list[Any]] = {podspec.key(p): [] for p in pods
                                                  if p.get("spec", {}).get("hostNetwork")}
        for s in socks:
            holders = {}
            procs = []
            for proc in s.processes or []:
                owner = owner_of.get(proc.get("container_id") or "")
                if owner:
                    holders[podspec.key(owner[0])] = owner[0]
                    procs.append({**proc, "container": owner[1]})
                else:
                    procs.append(dict(proc))
            if holders:
                for k in holders:
                    own = [p for p in procs if p.get("container")
                           and podspec.key(owner_of[p.get("container_id") or ""][0]) == k]
                    mine.setdefault(k, []).append(s._replace(processes=own))
                got.host_owned[node].add(s.inode)
            else:
                got.host[node][s.inode] = s._replace(processes=procs)
        for k, lst in mine.items():
            got.sockets[k] = lst


def collect_node(runner: Runner, pods: list[dict], all_pods: list[dict], progress: Progress,
                 parallel: int = PARALLEL) -> Collected:
    got = Collected()
    scope = {podspec.key(p) for p in pods}
    running = [p for p in pods if is_running(p)]
    nodes = sorted({p["spec"]["nodeName"] for p in running if p.get("spec", {}).get("nodeName")})
    daemons = daemonset_agents(runner.kube)
    progress.total = len(nodes)
    if nodes:
        with_ds = [n for n in nodes if n in daemons]
        if with_ds:
            progress.note(f"sweep --via node: using the node-agent DaemonSet in {NODE_AGENT_NAMESPACE} on "
                          f"{len(with_ds)} node(s)")
        if len(with_ds) < len(nodes):
            caps = "+".join(profiles.for_node(runner.opts.profile).security_context.get("capabilities", {})
                            .get("add", []))
            progress.note(f"sweep --via node: creating one short-lived pod per node in namespace "
                          f"{runner.kube.namespace} (host PID and network namespaces, CAP_{caps}) on "
                          f"{len(nodes) - len(with_ds)} node(s); they are deleted afterwards")
    by_uid = {p["metadata"].get("uid"): p for p in [*all_pods, *pods] if p["metadata"].get("uid")}
    lock = threading.Lock()

    def one(node: str) -> None:
        try:
            records = run_on_node(runner, node, daemons.get(node))
            with lock:
                attribute_node(records, node, by_uid, scope, got)
        except SockdebugError as exc:
            with lock:
                for p in running:
                    if p["spec"].get("nodeName") == node:
                        got.failed(podspec.key(p), exc, f"node agent on {node} failed: {exc.cause}")
        finally:
            progress.tick()

    if nodes:  # on Ctrl-C, the runner deletes the node pods in flight
        each(one, nodes, min(parallel, len(nodes)))
    for p in running:
        k = podspec.key(p)
        if k not in got.sockets and k not in got.uninspected:
            got.uninspected[k] = (f"no process of this pod was found on node {p['spec'].get('nodeName')}"
                                  if podspec.running_containers(p) else why_not_running(p))
    # only pods in scope are reported as inspected
    got.sockets = {k: v for k, v in got.sockets.items() if k in scope}
    return got


# --- the entry -------------------------------------------------------------------------------

def sockets(kube: Any, opts: SweepOptions, pods: list[dict], context: list[dict], progress: Progress) -> Collected:
    """The listening sockets of every running pod of ``pods`` (``context``: every other pod
    known, for attributing a node's sockets), read ``--via`` ephemeral agents or node agents.
    Ephemeral agents are waited for through one watch per namespace (``SharedWatch``)."""
    running = [p for p in pods if is_running(p)]
    if opts.via == "node":
        with Runner(kube, opts.agent, note=quiet_note(progress), node_fallback=NODE_FALLBACK) as runner:
            return collect_node(runner, pods, context, progress, opts.parallel)
    watch = SharedWatch(kube, opts.selector)
    try:
        with Runner(kube, opts.agent, note=quiet_note(progress), watch=watch) as runner:
            fresh = [p for p in running if not has_agent(p, runner)]
            if fresh:
                reuse = (f" (the other {len(running) - len(fresh)} have a running agent, which is reused)"
                         if len(fresh) < len(running) else "")
                progress.note(f"sweep --via ephemeral: each of {len(fresh)} pod(s){reuse} gains an ephemeral "
                              "agent container, which stays in the pod spec; --via node adds nothing to the pods.")
                for namespace in sorted({podspec.key(p)[0] for p in fresh}):
                    watch.start(namespace)  # its first answer (every pod) arrives while the patches go out
            return collect_ephemeral(runner, pods, progress, opts.parallel)
    finally:
        watch.close()


def has_agent(pod: dict, runner: Runner) -> bool:
    """A running sockdebug agent that a query to this pod would reuse."""
    running = podspec.running_containers(pod)
    ns = pod["metadata"].get("namespace", "")
    return any(runner.running_agent(Target(ns, pod, c["name"]))
               for c in podspec.containers(pod) if c["name"] in running)


def quiet_note(progress: Progress) -> Callable[[str], None]:
    """Per-pod injection lines are the up-front note's business; other notes once each."""
    def note(text: str) -> None:
        if text.startswith("adding ephemeral container "):
            return
        progress.note(text)
    return note
