"""Running an agent query in a target and streaming its records back.

Per target container: exec into a running ``serve`` agent if there is one (warm:
one exec round trip); otherwise add one as an ephemeral container and exec into
it; without ``pods/exec``, add a one-shot agent whose command is the query and
follow its logs.  Node targets get a short-lived host-PID pod that is deleted
afterwards.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Optional

from . import inject
from .errors import AgentError, SockdebugError, TargetError
from .kube import Forbidden, Kube, PodSecurityRejected
from .stream import StreamReader
from .targets import Target


class Options(NamedTuple):
    image: str
    pull_policy: str = "IfNotPresent"
    profile: str = "auto"
    timeout: float = 60.0
    note: Callable[[str], None] = lambda text: print(text, file=sys.stderr)


class AgentSession:
    """Agent containers used during one plugin run, so several queries to one target
    share an agent."""

    def __init__(self, kube: Kube, opts: Options):
        self.kube, self.opts = kube, opts
        self._agents: dict[tuple[str, str, str], str] = {}
        self._can_exec: dict[str, bool] = {}
        self.notes: list[str] = []  #: what the chosen profiles cost, said once per run

    def query(self, target: Target, agent_args: list[str]) -> Iterator[Any]:
        """The agent's records for ``sockdebug-agent AGENT_ARGS`` run in ``target``."""
        key = (target.namespace, target.pod_name, target.container)
        name = self._agents.get(key)
        if name is None:
            name = self._running_agent(target)
        if name is not None:
            try:
                yield from self._exec(target, name, agent_args)
                self._agents[key] = name
                return
            except Forbidden as exc:
                if exc.resource != "pods/exec":
                    raise
                self._can_exec[target.namespace] = False
            except TargetError:
                pass  # the agent exited (idle) between our GET and the exec: start another
        if self._exec_allowed(target.namespace):
            name, _pod = self._inject(target, inject.serve_command(), serve=True)
            self._agents[key] = name
            yield from self._exec(target, name, agent_args)
        else:
            name, _pod = self._inject(target, ["sockdebug-agent", *agent_args], serve=False)
            yield from self._logs(target.namespace, target.pod_name, name, f"agent {name}")

    def _running_agent(self, target: Target) -> Optional[str]:
        profile = None if self.opts.profile == "auto" else self.opts.profile
        return inject.find_running_agent(target.pod, target.container, self.opts.image, profile)

    def _exec_allowed(self, namespace: str) -> bool:
        if namespace not in self._can_exec:
            # A WebSocket exec is a GET upgrade: both verbs are checked (see manifests/rbac.yaml).
            self._can_exec[namespace] = all(self.kube.can_i(verb, "pods", "exec", namespace)
                                            for verb in ("get", "create"))
            if not self._can_exec[namespace]:
                self.opts.note("note: no pods/exec permission: using a one-shot agent container per query "
                               "(each one stays in the pod spec)")
        return self._can_exec[namespace]

    def _inject(self, target: Target, command: list[str], serve: bool) -> tuple[str, dict]:
        opts, kube = self.opts, self.kube
        profile_name = inject.choose_profile(
            opts.profile, kube.namespace_labels(target.namespace) if opts.profile == "auto" else None)
        while True:
            profile = inject.build_profile(profile_name, target.pod, target.container)
            spec = inject.container_spec(opts.image, opts.pull_policy, target.container, profile, command, serve)
            opts.note(f"adding ephemeral container {spec['name']} (profile {profile.name}) to pod/"
                      f"{target.pod_name} in {target.namespace}; it stays in the pod spec")
            try:
                kube.add_ephemeral_container(target.namespace, target.pod_name, spec)
                break
            except PodSecurityRejected:
                lower = inject.STEP_DOWN.get(profile_name)
                if opts.profile != "auto" or lower is None:
                    raise
                opts.note(f"note: Pod Security rejected the {profile_name} profile; trying {lower}")
                profile_name = lower
        if profile.cost and profile.cost not in self.notes:
            self.notes.append(profile.cost)
            opts.note("note: " + profile.cost)
        pod = inject.wait_started(
            kube.watch_pod(target.namespace, target.pod_name, inject.deadline(opts.timeout)),
            spec["name"], opts.timeout, one_shot=not serve)
        return spec["name"], pod

    def _exec(self, target: Target, container: str, agent_args: list[str]) -> Iterator[Any]:
        reader = StreamReader(f"agent {container} in pod/{target.pod_name}")
        stream = self.kube.exec(target.namespace, target.pod_name, container, ["sockdebug-agent", *agent_args])
        for chunk in stream.chunks(inject.deadline(self.opts.timeout)):
            yield from reader.feed(chunk)
        _finish(reader, stream.returncode, stream.stderr)

    def _logs(self, namespace: str, pod: str, container: str, source: str) -> Iterator[Any]:
        reader = StreamReader(source)
        for chunk in self.kube.logs(namespace, pod, container, follow=True, timeout=self.opts.timeout):
            yield from reader.feed(chunk)
        _finish(reader, None, b"")

    def query_node(self, node: str, namespace: str, agent_args: list[str]) -> Iterator[Any]:
        """Run the agent in the node's own network and PID namespaces from a short-lived pod
        (as ``kubectl debug node/`` does); the pod is deleted afterwards."""
        kube, opts = self.kube, self.opts
        kube.get_node(node)
        name = f"sockdebug-node-{secrets.token_hex(3)}"
        body = node_pod(name, node, opts.image, opts.pull_policy, ["sockdebug-agent", *agent_args])
        opts.note(f"creating pod {name} on node {node} (host network and PID namespaces); "
                  "it is deleted afterwards")
        kube.create_pod(namespace, body)
        try:
            deadline = inject.deadline(opts.timeout)
            inject_pod = None
            for pod in kube.watch_pod(namespace, name, deadline):
                phase = pod.get("status", {}).get("phase")
                inject_pod = pod
                if phase in ("Running", "Succeeded", "Failed"):
                    break
                for s in pod.get("status", {}).get("containerStatuses") or []:
                    waiting = (s.get("state") or {}).get("waiting") or {}
                    if waiting.get("reason") in inject.FATAL_WAITING:
                        raise inject.InjectError(
                            f"{inject.FATAL_WAITING[waiting['reason']]} ({waiting['reason']}: "
                            f"{waiting.get('message', '').strip()})", inject._pull_hint(waiting["reason"]))
            if inject_pod is None or inject_pod.get("status", {}).get("phase") not in (
                    "Running", "Succeeded", "Failed"):
                raise inject.InjectError(f"the node agent pod did not start within {opts.timeout:g}s",
                                         "check `kubectl describe pod` events; raise --timeout")
            yield from self._logs(namespace, name, "agent", f"node agent {name} on {node}")
        finally:
            kube.delete_pod(namespace, name)


def node_pod(name: str, node: str, image: str, pull_policy: str, command: list[str]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "sockdebug-node-agent"}},
        "spec": {
            "nodeName": node, "hostNetwork": True, "hostPID": True, "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "agent", "image": image, "imagePullPolicy": pull_policy, "command": command,
                "securityContext": {"runAsUser": 0, "capabilities": {"add": ["SYS_PTRACE"]}},
            }],
        },
    }


def _finish(reader: StreamReader, returncode: Optional[int], stderr: bytes) -> None:
    try:
        reader.close()
    except AgentError as exc:
        detail = stderr.decode("utf-8", "replace").strip().splitlines()
        if detail:
            exc.cause += f"; the agent said: {detail[-1][:200]}"
        raise
    if reader.error is not None:
        raise AgentFailed(reader.error.message, reader.error.hint, reader.end.exit_code if reader.end else 6)
    if returncode not in (None, 0):
        raise AgentError(f"the agent exited with code {returncode}",
                         (stderr.decode("utf-8", "replace").strip()[:300] or "see the agent's stderr"))


class AgentFailed(SockdebugError):
    """The agent reported an error record; its exit code is passed through."""

    def __init__(self, message: str, hint: Optional[str], exit_code: int):
        super().__init__(f"the agent failed: {message}", hint)
        self.exit_code = exit_code


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
