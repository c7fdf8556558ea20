"""The one agent runner: ``Runner.run(target, query)`` for every way the agent runs.

- ``Target`` (a container of a pod): exec into a running ``serve`` agent next to it;
  else add one as an ephemeral container and exec into it; without ``pods/exec``, add
  a one-shot agent whose command is the query and follow its logs.  Under
  baseline/restricted, when the pod spec does not give the target's uid and gid, a
  one-shot ``ids`` probe learns them first, so the agent can share them (owners).
- ``NodeTarget``: a short-lived node pod shaped by ``--profile`` (lifecycle.NodePods).
- ``AgentPod``: exec into a running agent pod (the node-agent DaemonSet).

``run_pod`` adds what one pod needs: the owners held by sibling containers (their
agents are asked at the same time when they already run) and container names.

The runner needs the API only through ``kube`` (``kube.Kube``) and starts execs
through ``execer`` (``Kube`` itself, or ``kubectl.KubectlExec``); waiting goes
through ``watch`` (per pod by default), so a caller may share one watch between
many pods.  Without ``kube`` it is *offline*: it can only exec into the agents the
pod dict shows, and raises ``Stale`` whenever it would need the API.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Optional, Union

from . import inject, profiles
from .kube import Forbidden, NotFound, PodSecurityRejected
from .lifecycle import NodePods, deadline, read_stream, wait_started
from .options import AgentOptions
from .profiles import Ids
from .targets import AgentPod, NodeTarget, Target, container_ids

AnyTarget = Union[Target, NodeTarget, AgentPod]
IDS_QUERY = ["ids"]  # Query("ids").to_argv(), without importing the query module here


class Stale(Exception):
    """An offline runner needs the API (an agent is gone, a container is unknown)."""


def as_argv(query: Any) -> list[str]:
    """The agent's command line for a query (a ``Query``, or already an argv list)."""
    to_argv = getattr(query, "to_argv", None)
    return list(to_argv()) if to_argv else list(query)


FOLLOW_COMMANDS = ("events",)  #: queries that stream until stopped, --for or --count
FOLLOW_GRACE = 10.0  #: s a stopped follow stream gets to write its last records (the agent drains up to 2 s)


def follows(argv: list[str]) -> bool:
    return bool(argv) and argv[0] in FOLLOW_COMMANDS


def stream_seconds(argv: list[str]) -> float:
    """How long the agent of ``argv`` is expected to stream, beyond --timeout: a follow
    query's ``--for`` and its drain (inf without one: it runs until stopped)."""
    if not follows(argv):
        return 0.0
    options = argv[:argv.index("--")] if "--" in argv else argv
    if "--for" not in options[:-1]:
        return float("inf")
    from sockdebug_agent.query import parse_duration

    return parse_duration(options[options.index("--for") + 1]) + FOLLOW_GRACE


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


class Runner:
    """Agents used during one plugin run; use as a context manager (node pods are deleted
    on the way out, also on Ctrl-C)."""

    def __init__(self, kube: Any, opts: AgentOptions, *, execer: Any = None,
                 note: Callable[[str], None] = _stderr,
                 watch: Optional[Callable[[str, str, float], Iterable[dict]]] = None, node_fallback: str = ""):
        self.kube, self.opts, self.note = kube, opts, note
        self.execer = execer or kube
        self.watch = watch or (kube.watch_pod if kube is not None else None)
        self.node_pods = NodePods(kube, self.watch) if kube is not None else None
        self.node_fallback = node_fallback or "or use a namespace whose Pod Security level is privileged"
        self.notes: list[str] = []  #: what the chosen profiles cost, said once per run
        self._agents: dict[tuple[str, str, str], str] = {}
        self._pods: dict[tuple[str, str], dict] = {}  #: the latest state of each pod an agent was added to
        self._can_exec: dict[str, bool] = {}
        self._learned: dict[tuple[str, str, str], Optional[Ids]] = {}
        self._pending: dict[tuple[str, str, str], str] = {}  #: agents added (prepare) but not waited for yet
        self._labels: dict[str, Optional[dict]] = {}  #: namespace -> its labels (profile auto), read once
        self._stops: dict[int, Callable[[], None]] = {}  #: live follow streams' stop, by channel id
        self._stopping = False
        self._add_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._once = threading.Lock()  #: per-namespace reads (access reviews, labels): once, however many ask

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.node_pods is not None:
            self.node_pods.close()

    def stop(self) -> None:
        """Ask every follow stream of this run (``events``) to end the agent's own way: a
        byte on an exec's stdin (``--stdin-stop``), a graceful delete of a node pod
        (SIGTERM).  Each agent then writes what is queued, a final tick and ``end``, so the
        streams still end framed; a one-shot agent read from its logs cannot be reached and
        runs on until its ``--for``.  Streams started afterwards are stopped at once."""
        with self._lock:
            self._stopping = True
            stops = list(self._stops.values())
        for stop in stops:
            stop()
        if self.node_pods is not None:
            self.node_pods.stop()

    def pod(self, target: Target) -> dict:
        """The latest state of the target's pod this run has seen (with the agents it added)."""
        return self._pods.get((target.namespace, target.pod_name), target.pod)

    def agent_of(self, target: Target) -> Optional[str]:
        """The agent container this run used (or would reuse) for ``target``."""
        key = (target.namespace, target.pod_name, target.container)
        return self._agents.get(key) or self.running_agent(target)

    # --- one target -----------------------------------------------------------------------

    def run(self, target: AnyTarget, query: Any) -> Iterator[Any]:
        """The agent's records for ``query`` run in ``target``, as they arrive."""
        argv = as_argv(query)
        if isinstance(target, NodeTarget):
            return self._run_node(target, argv)
        if isinstance(target, AgentPod):
            return self._exec(target.namespace, target.pod, target.container, argv,
                              f"node agent {target.pod} on {target.node}")
        return self._run_container(target, argv)

    def prepare(self, target: Target) -> None:
        """Add the agent a later ``run(target, ...)`` will use, without waiting for it to
        start: a sweep adds every pod's agent first, then waits for them all through one
        watch.  Nothing to do when an agent runs there already, or when queries will be
        one-shot agents (no ``pods/exec``: their command is the query)."""
        key = (target.namespace, target.pod_name, target.container)
        if (self.kube is None or key in self._agents or key in self._pending or self.running_agent(target)
                or not self._exec_allowed(target.namespace)):
            return
        self._pending[key] = self._inject(target, inject.serve_command(self.opts.idle_timeout), serve=True,
                                          wait=False)

    def ready(self, target: Target) -> None:
        """Wait until the agent ``prepare`` added for ``target`` runs (nothing if none)."""
        key = (target.namespace, target.pod_name, target.container)
        name = self._pending.pop(key, None)
        if name is not None:
            self._wait(target, name, one_shot=False)
            self._agents[key] = name

    def running_agent(self, target: Target) -> Optional[str]:
        """A running agent a query to ``target`` would reuse (None: one would be added)."""
        return inject.reusable_agent(self.pod(target), target.container, self.opts.image, self.opts.profile)

    def _run_container(self, target: Target, argv: list[str]) -> Iterator[Any]:
        key = (target.namespace, target.pod_name, target.container)
        self.ready(target)
        name = self._agents.get(key) or self.running_agent(target)
        source = f"agent {{}} in pod/{target.pod_name}"
        if name is not None:
            try:
                yield from self._exec(target.namespace, target.pod_name, name, argv, source.format(name))
                self._agents[key] = name
                return
            except Forbidden as exc:
                if self.kube is None:  # without pods/exec: the one-shot way needs the API
                    raise Stale(f"exec into {name} refused") from None
                if exc.resource != "pods/exec":
                    raise
                self._can_exec[target.namespace] = False
            except NotFound:
                if self.kube is None:
                    raise Stale(f"agent {name} is gone") from None
                # the agent exited (idle) between our GET and the exec: start another
        if self.kube is None:
            raise Stale(f"no running agent next to {target.container}")
        if self._exec_allowed(target.namespace):
            with self._adding(key):  # two queries of one container at once (triage --events) add one agent
                name = self._agents.get(key)
                if name is None:
                    name = self._agents[key] = self._inject(target, inject.serve_command(self.opts.idle_timeout),
                                                            serve=True)
            yield from self._exec(target.namespace, target.pod_name, name, argv, source.format(name))
        else:
            if follows(argv):
                self.note(f"note: without pods/exec the agent in pod/{target.pod_name} cannot be stopped early: "
                          "it runs until --for ends")
            name = self._inject(target, ["sockdebug-agent", *argv], serve=False)
            yield from read_stream(source.format(name), self.kube.logs(
                target.namespace, target.pod_name, name, follow=True, timeout=self.opts.timeout))

    def _exec(self, namespace: str, pod: str, container: str, argv: list[str], source: str) -> Iterator[Any]:
        follow = follows(argv)
        until = deadline(self.opts.timeout + stream_seconds(argv))
        if not follow:
            channel = self.execer.exec(namespace, pod, container, ["sockdebug-agent", *argv])
        else:  # an exec has no signals: the agent is stopped through its stdin (Runner.stop)
            channel = self.execer.exec(namespace, pod, container,
                                       ["sockdebug-agent", argv[0], "--stdin-stop", *argv[1:]], stdin=True)
            with self._lock:
                self._stops[id(channel)] = channel.stop
                stopping = self._stopping
            if stopping:
                channel.stop()
        try:
            yield from read_stream(source, channel.chunks(until), lambda: channel.returncode,
                                   lambda: channel.stderr)
        finally:
            with self._lock:
                self._stops.pop(id(channel), None)
            channel.close()

    def _adding(self, key: tuple[str, str, str]) -> threading.Lock:
        """The lock held while an agent is added next to one container."""
        with self._lock:
            return self._add_locks.setdefault(key, threading.Lock())

    def _exec_allowed(self, namespace: str) -> bool:
        with self._once:
            if namespace not in self._can_exec:
                # A WebSocket exec is a GET upgrade: both verbs are checked (see manifests/rbac.yaml).
                self._can_exec[namespace] = all(self.kube.can_i(verb, "pods", "exec", namespace)
                                                for verb in ("get", "create"))
                if not self._can_exec[namespace]:
                    self.note("note: no pods/exec permission: using a one-shot agent container per query "
                              "(each one stays in the pod spec)")
            return self._can_exec[namespace]

    def _inject(self, target: Target, command: list[str], serve: bool, wait: bool = True) -> str:
        opts = self.opts
        name = profiles.choose(opts.profile, self._namespace_labels(target.namespace)
                               if opts.profile == "auto" else None)
        while True:
            try:
                pod = self.pod(target)
                learned, marker = None, None
                if profiles.needs_ids(name, pod, target.container):
                    learned = self._learn_ids(target, name)
                    marker = f"{learned[0]}:{learned[1]}" if learned else "unknown"
                profile = profiles.for_container(name, pod, target.container, learned)
                spec = inject.container_spec(opts.image, opts.pull_policy, target.container, profile, command,
                                             serve, target_ids=marker)
                self._add(target, spec, profile)
                break
            except PodSecurityRejected:
                lower = profiles.STEP_DOWN.get(name)
                if opts.profile != "auto" or lower is None:
                    raise
                self.note(f"note: Pod Security rejected the {name} profile; trying {lower}")
                name = lower
        if profile.cost and profile.cost not in self.notes:
            self.notes.append(profile.cost)
            self.note("note: " + profile.cost)
        if wait:
            self._wait(target, spec["name"], one_shot=not serve)
        return spec["name"]

    def _namespace_labels(self, namespace: str) -> Optional[dict]:
        with self._once:
            if namespace not in self._labels:
                self._labels[namespace] = self.kube.namespace_labels(namespace)
            return self._labels[namespace]

    def _add(self, target: Target, spec: dict, profile: profiles.Profile) -> None:
        self.note(f"adding ephemeral container {spec['name']} (profile {profile.name}) to pod/"
                  f"{target.pod_name} in {target.namespace}; it stays in the pod spec")
        self.kube.add_ephemeral_container(target.namespace, target.pod_name, spec)

    def _wait(self, target: Target, name: str, one_shot: bool) -> None:
        pod = wait_started(self.watch(target.namespace, target.pod_name, deadline(self.opts.timeout)), name,
                           self.opts.timeout, one_shot=one_shot)
        with self._lock:
            self._pods[(target.namespace, target.pod_name)] = pod

    def _learn_ids(self, target: Target, profile_name: str) -> Optional[Ids]:
        """The target's real (uid, gid), from a one-shot ``ids`` agent in its PID namespace
        (/proc/PID/status needs no privilege); None when they cannot be shared."""
        key = (target.namespace, target.pod_name, target.container)
        if key in self._learned:
            return self._learned[key]
        probe = profiles.for_container(profile_name, self.pod(target), target.container)
        spec = inject.container_spec(self.opts.image, self.opts.pull_policy, target.container, probe,
                                     ["sockdebug-agent", *IDS_QUERY], serve=False)
        self.note(f"adding ephemeral container {spec['name']} (profile {probe.name}) to pod/{target.pod_name} in "
                  f"{target.namespace} to learn the uid/gid of {target.container}; it stays in the pod spec")
        self.kube.add_ephemeral_container(target.namespace, target.pod_name, spec)
        self._wait(target, spec["name"], one_shot=True)
        try:
            records = list(read_stream(f"agent {spec['name']} in pod/{target.pod_name}", self.kube.logs(
                target.namespace, target.pod_name, spec["name"], follow=True, timeout=self.opts.timeout)))
            learned = shared_ids(records, container_ids(self.pod(target)), target.container)
        except Exception as exc:  # an older agent image without `ids`: owners as before
            self.note(f"note: could not learn the uid/gid of {target.container}: {exc}")
            learned = None
        self._learned[key] = learned
        return learned

    # --- nodes ----------------------------------------------------------------------------

    def _run_node(self, target: NodeTarget, argv: list[str]) -> Iterator[Any]:
        if self.kube is None:
            raise Stale("node targets need the API")
        if target.purpose == "node":
            self.kube.get_node(target.name)  # "node x not found" before creating anything
        profile = profiles.for_node(self.opts.profile)
        name = f"sockdebug-{target.purpose}-{inject.random_suffix()}"
        body = profiles.node_pod(name, target.name, self.opts.image, self.opts.pull_policy,
                                 ["sockdebug-agent", *argv], profile, target.purpose)
        if target.purpose == "node":
            self.note(f"creating pod {name} on node {target.name} (host network and PID namespaces); "
                      "it is deleted afterwards")
        if profile.cost and profile.cost not in self.notes:
            self.notes.append(profile.cost)
            self.note("note: " + profile.cost)
        yield from self.node_pods.run(self.kube.namespace, body, self.opts.timeout,
                                      f"node agent {name} on {target.name}", self.node_fallback)

    # --- one pod, every container that holds its sockets ------------------------------------

    def run_pod(self, target: Target, query: Any) -> Iterator[Any]:
        """``run(target, query)``, plus owners held by sibling containers' processes (from the
        target's PID namespace they are invisible): their running agents are asked at the same
        time; a sibling without one gains one only when sockets are left without owners.
        Every owner is tagged with its container's name.  Streams when no sibling is involved."""
        argv = as_argv(query)
        siblings = target.owner_siblings(argv)
        if not siblings:
            return self._named(target, self.run(target, argv))
        together = target.asked_together(argv, lambda c: self.agent_of(target._replace(container=c)) is not None)
        answers = dict(zip(together, at_once([lambda c=c: list(self.run(target._replace(container=c), argv))
                                              for c in together])))
        records = answers.pop(target.container)
        unowned = {r.inode for r in records if r.type == "socket" and r.inode and not r.processes}
        owners: dict[int, list] = {}
        for sibling in siblings:
            if not unowned - owners.keys():
                break
            answer = answers.get(sibling)
            if answer is None:
                answer = list(self.run(target._replace(container=sibling), argv))
            for rec in answer:
                if rec.type == "socket" and rec.processes and rec.inode in unowned:
                    owners.setdefault(rec.inode, rec.processes)
        return self._named(target, (r._replace(processes=owners[r.inode])
                                    if r.type == "socket" and r.inode in owners else r for r in records))

    def _named(self, target: Target, records: Iterable[Any]) -> Iterator[Any]:
        """Each socket owner tagged with its container's name (container ids from the pod)."""
        ids = container_ids(self.pod(target))
        for rec in records:
            if rec.type in ("socket", "event") and rec.processes:
                for p in rec.processes:
                    cid = p.get("container_id") or ""
                    if cid and cid not in ids and self.kube is None:
                        raise Stale(f"container {cid[:12]} is not in the remembered pod")  # restarted since
                    p["container"] = ids.get(cid)
            yield rec


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Each call's result, the calls run in threads at the same time (the first failure is
    raised once all have ended).  Plain threads: concurrent.futures would import logging,
    a visible share of a warm query."""
    if len(calls) == 1:
        return [calls[0]()]
    results: list[Any] = [None] * len(calls)
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # handed to the caller below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return results


def shared_ids(records: list[Any], ids_by_container: dict[str, str], container: str) -> Optional[Ids]:
    """The (uid, gid) an agent must run as to read the target container's /proc/PID/fd:
    the ids of its processes whose real, effective and saved ids agree (what the kernel's
    ptrace check compares), the most common pair, preferring non-root; None if none."""
    procs = [r for r in records if r.type == "process_ids"]
    mine = [p for p in procs if ids_by_container.get(p.container_id or "") == container]
    if not mine and not any(p.container_id for p in procs):
        mine = [p for p in procs if p.pid == 1]  # no cgroup paths: PID 1 is the target's init
    pairs = Counter((p.uids[0], p.gids[0]) for p in mine
                    if len(set(p.uids[:3])) == 1 and len(set(p.gids[:3])) == 1)
    if not pairs:
        return None
    return max(pairs, key=lambda pair: (pair[0] != 0, pairs[pair]))
