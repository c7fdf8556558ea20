"""``kubectl sockdebug stop``: end the agents sockdebug started.

``plan`` (pure, from the pods in scope) finds every running ``serve`` agent container
and every node pod left behind (the node-agent DaemonSet's pods are the DaemonSet's
business and are only mentioned).  ``run`` then, a few at a time:

- execs ``sockdebug-agent stop`` into each agent container (``pods/exec``): the agent
  ends its own container's ``serve`` process (agent/serve.py), so the image needs no
  shell or ``kill``; then waits until the container's status shows Terminated (pods
  get/watch).  The entry stays in the pod spec: Kubernetes cannot remove an ephemeral
  container.  The warm cache forgets the pod, so the next query goes the ordinary way
  and starts a new agent.
- deletes each node pod (pods delete).

One line per agent on stdout, kubectl-style (``pod/api container sockdebug-1a2b3c
stopped``, ``pod/sockdebug-node-4d5e6f deleted``); nothing to stop is exit 0 with a
line on stderr, as ``kubectl delete`` says "No resources found".
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Optional

from .agents import COMPONENT_LABEL, NODE_POD_SELECTOR
from .errors import AgentError, SockdebugError
from .inject import NAME_PREFIX
from .kube import NotFound
from .lifecycle import deadline, ephemeral_status, read_stream
from .options import StopOptions
from .profiles import NODE_POD_LABEL, NODE_POD_NAME
from .render import escape
from .stream import AgentFailed
from .targets import parse_target, selector_string, workload_selector

PARALLEL = 8
STOP_COMMAND = ["sockdebug-agent", "stop"]
SPEC_NOTE = ("note: a stopped agent container stays in its pod's spec, as Terminated: Kubernetes cannot remove an "
             "ephemeral container; the next query adds a new one")


class Action(NamedTuple):
    """``stop`` an agent container, or ``delete`` a node pod."""

    verb: str
    namespace: str
    pod: str
    container: Optional[str] = None

    def name(self, namespaces: bool) -> str:
        where = f" -n {self.namespace}" if namespaces else ""
        return f"pod/{self.pod}{where}" + (f" container {self.container}" if self.container else "")


def serving(pod: dict) -> list[str]:
    """The agent containers of ``pod`` that run ``serve`` now."""
    running = {s.get("name") for s in (pod.get("status") or {}).get("ephemeralContainerStatuses") or []
               if "running" in (s.get("state") or {})}
    return [c["name"] for c in (pod.get("spec") or {}).get("ephemeralContainers") or []
            if c.get("name", "").startswith(NAME_PREFIX) and c["name"] in running
            and "serve" in (c.get("command") or [])]


def plan(pods: list[dict]) -> tuple[list[Action], list[str]]:
    """(what to do, the node-agent DaemonSet's pods in scope, which are left alone)."""
    actions, daemons = [], []
    for pod in pods:
        meta = pod.get("metadata") or {}
        ns, name, labels = meta.get("namespace", ""), meta.get("name", ""), meta.get("labels") or {}
        if labels.get(NODE_POD_LABEL) == NODE_POD_NAME:
            if labels.get(COMPONENT_LABEL) == "daemonset":
                daemons.append(f"pod/{name} -n {ns}")
            elif not meta.get("deletionTimestamp"):
                actions.append(Action("delete", ns, name))
            continue
        actions += [Action("stop", ns, name, c) for c in serving(pod)]
    return actions, daemons


def pods_in_scope(kube: Any, opts: StopOptions) -> list[dict]:
    """The pods ``stop`` looks at: TARGET's (a workload's or Service's: all of them; a
    node's: the node pods there), or those of -l / --all in the namespace (-A: every one)."""
    if opts.target is None:
        return kube.list_pods(None if opts.all_namespaces else kube.namespace, opts.selector)
    ref, ns = parse_target(opts.target), kube.namespace
    if ref.kind == "pod":
        return [kube.get_pod(ns, ref.name)]
    if ref.kind == "node":
        return [p for p in kube.list_pods(ns, NODE_POD_SELECTOR) if (p.get("spec") or {}).get("nodeName") == ref.name]
    if ref.kind == "service":
        selector = ((kube.get_service(ns, ref.name).get("spec") or {}).get("selector")) or {}
        return kube.list_pods(ns, selector_string(selector)) if selector else []
    return kube.list_pods(ns, workload_selector(kube.get_workload(ns, ref.kind, ref.name)))


def stop_agent(kube: Any, action: Action, timeout: float) -> str:
    """Exec ``sockdebug-agent stop`` into the agent, wait for Terminated: what happened."""
    source = f"agent {action.container} in pod/{action.pod}"
    try:
        channel = kube.exec(action.namespace, action.pod, action.container, STOP_COMMAND)
    except NotFound:
        return "had already ended"
    try:
        records = list(read_stream(source, channel.chunks(deadline(timeout)), lambda: channel.returncode,
                                   lambda: channel.stderr))
        if any(r.type == "warning" and r.code == "not-serving" for r in records):
            return "had already ended"
    except AgentFailed as exc:
        if "invalid choice: 'stop'" in exc.cause:
            raise AgentError(f"{source}: its image predates `sockdebug-agent stop`",
                             "it ends by itself after its idle timeout (`kubectl sockdebug agents` shows when)"
                             ) from None
        raise
    except AgentError:
        pass  # the exec may end with the container, before its last line: the status says
    finally:
        channel.close()
    wait_terminated(kube, action, timeout)
    return "stopped"


def wait_terminated(kube: Any, action: Action, timeout: float) -> None:
    for pod in kube.watch_pod(action.namespace, action.pod, deadline(timeout)):
        if "terminated" in (ephemeral_status(pod, action.container or "").get("state") or {}):
            return
    raise AgentError(f"{action.name(True)} was told to stop but still runs after {timeout:g}s",
                     "look at `kubectl describe pod`; raise --timeout")


def execute(kube: Any, action: Action, timeout: float) -> str:
    if action.verb == "delete":
        kube.delete_pod(action.namespace, action.pod)
        return "deleted"
    return stop_agent(kube, action, timeout)


def run(opts: StopOptions, out=None, err=None) -> int:
    from . import warm
    from .kube import connect

    out, err = out or sys.stdout, err or sys.stderr
    kube = connect(opts.conn.kubeconfig, opts.conn.context, opts.conn.namespace)
    actions, daemons = plan(pods_in_scope(kube, opts))
    for d in daemons:
        print(f"note: {escape(d)} belongs to the node-agent DaemonSet and is left running "
              "(remove it with kubectl delete -f manifests/node-agent.yaml)", file=err)
    if not actions:
        where = "any namespace" if opts.all_namespaces else f"namespace {kube.namespace}"
        print(f"No running sockdebug agents found in {where}.", file=err)
        return 0
    lock = threading.Lock()
    failures: list[tuple[Action, SockdebugError]] = []
    stopped: list[Action] = []

    def one(action: Action) -> None:
        try:
            what = execute(kube, action, opts.timeout)
        except SockdebugError as exc:
            with lock:
                failures.append((action, exc))
            return
        with lock:
            print(f"{escape(action.name(opts.all_namespaces))} {what}", file=out, flush=True)
            if what == "stopped":
                stopped.append(action)

    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(actions))) as pool:
        list(pool.map(one, actions))
    for action in stopped:
        warm.forget_pod(action.namespace, action.pod)
    if stopped:
        print(SPEC_NOTE, file=err)
    if failures:
        for action, exc in failures[1:]:
            print(f"error: {escape(action.name(True))}: {escape(exc.cause)}", file=err)
        raise failures[0][1]
    return 0
