"""Warm queries at ``kubectl exec`` speed: remembered agents, exec'd through kubectl.

A query of a pod whose agents already run needs no API read at all: the pod as the
last run saw it (its containers, their ids, our agent containers) is remembered in
``agents.json`` in the plugin's cache folder, keyed by the kubeconfig (paths, mtimes,
sizes: switching context or namespace rewrites it), ``--context``, ``-n`` and the
pod's name.  The same ``Runner`` then runs offline, exec'ing through ``kubectl
exec`` (on PATH under ``kubectl sockdebug``, with every auth plugin the user has) so
the Python client is never imported; without kubectl on PATH, through the client's own
exec (``kubectl.ClientExec``), which still reads no pod.

Correct when the agent has gone: a remembered agent that exited, a pod that was
replaced, or a container that restarted (an owner's container id the pod did not
have) makes the offline runner raise ``Stale`` before anything is printed, and the
caller runs the ordinary path (GET, reuse or inject, exec), which remembers anew.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

from . import cache
from .errors import SockdebugError
from .inject import NAME_PREFIX, reusable_agent
from .kubectl import ClientExec, KubectlExec, find_kubectl
from .options import AgentOptions, Conn, InspectOptions
from .targets import DEFAULT_CONTAINER_ANNOTATION, Target, check_running, parse_target, pick_container, target_info

CACHE_NAME = "agents.json"
MAX_PODS = 64


def _kubeconfig_stamp(conn: Conn) -> list[Any]:
    if conn.kubeconfig:
        paths = [conn.kubeconfig]
    elif os.environ.get("KUBECONFIG"):
        paths = [p for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
    else:
        paths = ["~/.kube/config"]
    stamp: list[Any] = []
    for path in paths:
        try:
            st = os.stat(os.path.expanduser(path))
            stamp.append([path, st.st_mtime_ns, st.st_size])
        except OSError:
            stamp.append([path, None, None])
    return stamp


def key(conn: Conn, pod: str) -> str:
    return json.dumps([_kubeconfig_stamp(conn), conn.context, conn.namespace, pod])


def _state(status: dict) -> dict:
    state = status.get("state") or {}
    return {"name": status.get("name"), "containerID": status.get("containerID"),
            "state": {k: {"startedAt": v.get("startedAt")} if k == "running" and isinstance(v, dict) else {}
                      for k, v in state.items()}}


def trim(pod: dict) -> dict:
    """What a warm query needs of a pod: names, ids, states and our agent containers."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    annotations = meta.get("annotations") or {}
    return {
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                     "annotations": {k: v for k, v in annotations.items() if k == DEFAULT_CONTAINER_ANNOTATION}},
        "spec": {"nodeName": spec.get("nodeName"), "shareProcessNamespace": spec.get("shareProcessNamespace"),
                 "securityContext": spec.get("securityContext"),
                 "containers": [{"name": c.get("name"), "securityContext": c.get("securityContext")}
                                for c in spec.get("containers") or []],
                 "ephemeralContainers": [c for c in spec.get("ephemeralContainers") or []
                                         if c.get("name", "").startswith(NAME_PREFIX)]},
        "status": {"phase": status.get("phase"),
                   **{k: [_state(s) for s in status.get(k) or []]
                      for k in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")}},
    }


def remember(conn: Conn, runner: Any, target: Target) -> None:
    """Keep the pod as this run left it, when an agent runs next to the target."""
    if runner.agent_of(target) is None:
        return
    pods = cache.read(CACHE_NAME)
    pods = pods if isinstance(pods, dict) else {}
    pods[key(conn, target.pod_name)] = {"namespace": target.namespace, "pod": trim(runner.pod(target)),
                                        "at": time.time()}
    if len(pods) > MAX_PODS:
        for old in sorted(pods, key=lambda k: pods[k].get("at", 0))[:len(pods) - MAX_PODS]:
            del pods[old]
    cache.write(CACHE_NAME, pods)


def forget(conn: Conn, pod: str) -> None:
    pods = cache.read(CACHE_NAME)
    if isinstance(pods, dict) and pods.pop(key(conn, pod), None) is not None:
        cache.write(CACHE_NAME, pods)


def forget_pod(namespace: str, pod: str) -> None:
    """Drop every remembered entry of this pod, however it was reached (``stop`` ended
    its agents: a warm query would only find them gone and fall back)."""
    pods = cache.read(CACHE_NAME)
    if not isinstance(pods, dict):
        return
    def of_pod(entry: Any) -> bool:
        return (isinstance(entry, dict) and entry.get("namespace") == namespace
                and ((entry.get("pod") or {}).get("metadata") or {}).get("name") == pod)

    kept = {k: v for k, v in pods.items() if not of_pod(v)}
    if len(kept) != len(pods):
        cache.write(CACHE_NAME, kept)


class Warm:
    """A warm query in flight: its kubectl execs were started by ``prestart`` (and the
    lists that name peers, ``lookup``, when the query may show connections)."""

    def __init__(self, conn: Conn, target: Target, execer: Any, lookup: Any = None):
        self.conn, self.target, self.execer, self.lookup = conn, target, execer, lookup

    def results(self, agent: AgentOptions, queries: list[Any]) -> Optional[list[Any]]:
        """The records of ``queries`` (``render.Result`` s), or None when the ordinary path
        must run: an agent is gone, a container restarted, ..."""
        from .render import Result
        from .runner import Runner, Stale

        runner = Runner(None, agent, execer=self.execer)
        try:
            records = [r for q in queries for r in runner.run_pod(self.target, q)]
        except Stale:
            forget(self.conn, self.target.pod_name)
            return None
        finally:
            self.execer.close()
        return [Result(target_info(self.target), records)]


def prestart(opts: Any) -> Optional[Warm]:
    """For a query of one pod whose agents were remembered: start every exec it needs
    now (before the rest of the plugin is even imported).  None: not a warm case."""
    target_word = opts.target
    if (target_word is None or getattr(opts, "watch", None) is not None or getattr(opts, "selector", None)
            or getattr(opts, "events", None)):  # a capture streams, and stops through stdin: the ordinary path
        return None
    ref = parse_target(target_word)
    entry = (cache.read(CACHE_NAME) or {}).get(key(opts.conn, ref.name)) if ref.kind == "pod" else None
    if not isinstance(entry, dict):
        return None
    agent = opts.agent
    try:
        pod = entry["pod"]
        target = Target(entry["namespace"], pod, pick_container(pod, opts.container))
        check_running(pod, target.container)
    except (KeyError, TypeError, AttributeError, SockdebugError):  # not running, no such container: ask the API
        return None

    def agent_of(container: str) -> Optional[str]:
        return reusable_agent(pod, container, agent.image, agent.profile)

    if agent_of(target.container) is None:
        return None
    conn = opts.conn
    kubectl = find_kubectl()
    execer: Any = (KubectlExec(kubectl, conn.kubeconfig, conn.context) if kubectl
                   else ClientExec(conn.kubeconfig, conn.context, conn.namespace))
    queries = opts.queries()
    for query in queries:
        argv = query.to_argv()
        for container in target.asked_together(argv, lambda c: agent_of(c) is not None):
            execer.prestart(target.namespace, target.pod_name, agent_of(container), ["sockdebug-agent", *argv])
    return Warm(opts.conn, target, execer, lookup(opts, kubectl, execer, target.namespace))


def lookup(opts: Any, kubectl: Optional[str], execer: Any, namespace: str) -> Any:
    """The peer lists, started next to the execs when the query may show connections."""
    if not isinstance(opts, InspectOptions) or not opts.names_peers():
        return None
    from . import peers  # after the execs have started: its imports overlap with them

    if kubectl:
        return peers.through_kubectl(kubectl, opts.conn.kubeconfig, opts.conn.context, namespace)
    return peers.Lookup(lambda: peers.read_lists(execer.kube(), namespace))
