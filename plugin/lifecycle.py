"""Waiting for an agent container to start, and the life of a short-lived node pod.

``wait_started`` follows any stream of pod states (a watch, or a list in tests) until
one container runs, and fails fast with the kubelet's reason when it cannot: the same
function for ephemeral agent containers and node pods.  ``NodePods`` creates a node
pod, waits for it, streams its agent's records from the logs and deletes it in
``finally``; it also remembers every pod it made, so ``close()`` (called when a run
ends, also on Ctrl-C) deletes whatever a worker thread could not, and refuses to create
any more (a worker still running after Ctrl-C): node pods never survive a run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Optional

from .errors import AccessError, InjectError, Interrupted
from .kube import Forbidden, PodSecurityRejected
from .stream import StreamReader, finish

# Waiting reasons that will not resolve by waiting longer.
FATAL_WAITING = {
    "ErrImagePull": "the agent image could not be pulled",
    "ImagePullBackOff": "the agent image could not be pulled",
    "ErrImageNeverPull": "the agent image is not on the node and --image-pull-policy is Never",
    "InvalidImageName": "the agent image name is invalid",
    "CreateContainerConfigError": "the kubelet could not configure the agent container",
    "CreateContainerError": "the container runtime could not create the agent container",
    "RunContainerError": "the container runtime could not start the agent container",
}
_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")


def deadline(timeout: float) -> float:
    return time.monotonic() + timeout


def pull_hint(reason: str) -> str:
    if reason in _PULL_REASONS:
        return ("check --image and --image-pull-policy; on kind: `kind load docker-image IMAGE`; "
                "offline: import the image into the node's runtime (docs/image.md)")
    return "see `kubectl describe pod` for the kubelet's events"


def ephemeral_status(pod: dict, name: str) -> dict:
    return _status(pod, "ephemeralContainerStatuses", name)


def container_status(pod: dict, name: str) -> dict:
    return _status(pod, "containerStatuses", name)


def _status(pod: dict, key: str, name: str) -> dict:
    for s in pod.get("status", {}).get(key) or []:
        if s.get("name") == name:
            return s
    return {}


def wait_started(watch: Iterable[dict], name: str, timeout: float, *, one_shot: bool,
                 status_of: Callable[[dict, str], dict] = ephemeral_status, what: str = "agent container") -> dict:
    """Follow the pod until container ``name`` runs (or, for a one-shot agent, has run);
    fail fast with the kubelet's reason when it cannot start.  Returns the last pod state."""
    last = "not created yet"
    for pod in watch:
        state = status_of(pod, name).get("state") or {}
        if "running" in state:
            return pod
        if "terminated" in state:
            term = state["terminated"]
            if one_shot:
                return pod
            raise InjectError(f"the {what} exited at once ({term.get('reason')}, exit code "
                              f"{term.get('exitCode')}): {(term.get('message') or '').strip()[:300]}",
                              "look at `kubectl logs POD -c " + name + "`")
        waiting = state.get("waiting")
        if waiting:
            reason = waiting.get("reason", "")
            last = f"waiting: {reason} {waiting.get('message', '')}".strip()
            if reason in FATAL_WAITING:
                raise InjectError(f"{FATAL_WAITING[reason]} ({reason}: {waiting.get('message', '').strip()})",
                                  pull_hint(reason))
    raise InjectError(f"the {what} did not start within {timeout:g}s ({last})",
                      "raise --timeout; check `kubectl describe pod` for events (image pulls, node pressure)")


def read_stream(source: str, chunks: Iterable[bytes], returncode: Callable[[], Optional[int]] = lambda: None,
                stderr: Callable[[], bytes] = lambda: b"") -> Iterator[Any]:
    """The records of one agent stream, checked for framing and errors at the end."""
    reader = StreamReader(source)
    for chunk in chunks:
        yield from reader.feed(chunk)
    finish(reader, returncode(), stderr())


class NodePods:
    """Short-lived node pods of one run: create, wait, stream, delete."""

    CONTAINER = "agent"
    STOP_GRACE = 10  #: s between SIGTERM and SIGKILL when stopped: the agent drains up to 2 s

    def __init__(self, kube: Any, watch: Optional[Callable[[str, str, float], Iterable[dict]]] = None):
        self.kube = kube
        self.watch = watch or kube.watch_pod
        self._live: dict[str, str] = {}  #: pod name -> namespace, until deleted
        self._creating = 0  #: POSTs in flight
        self._stopping = False  #: stop() was called: a pod that starts afterwards is stopped at once
        self._closed = False  #: the run is ending: no more pods
        self._changed = threading.Condition()

    def run(self, namespace: str, body: dict, timeout: float, source: str, fallback: str) -> Iterator[Any]:
        """The agent's records from the node pod ``body`` (its command is the query).
        ``fallback`` is what to suggest when the namespace may not have such a pod."""
        name = body["metadata"]["name"]
        with self._changed:
            if self._closed:
                raise Interrupted("the run is ending: no node pod is created any more", None)
            self._live[name] = namespace  # before the POST: an interrupt during it still cleans up
            self._creating += 1
        try:
            try:
                self.kube.create_pod(namespace, body)
            except Forbidden as exc:
                raise AccessError(exc.cause, f"node pods need create/get/watch/delete on pods and get on pods/log "
                                  f"in namespace {namespace} (-n); {fallback}") from None
            except PodSecurityRejected as exc:
                raise InjectError(exc.cause, "a node pod needs hostPID, hostNetwork and added capabilities: run "
                                  f"with -n NAMESPACE where Pod Security admits privileged pods; {fallback}"
                                  ) from None
            finally:
                with self._changed:
                    self._creating -= 1
                    self._changed.notify_all()
            wait_started(self.watch(namespace, name, deadline(timeout)), self.CONTAINER, timeout, one_shot=True,
                         status_of=container_status, what="node agent pod")
            if self._stopping:
                self.kube.delete_pod(namespace, name, grace=self.STOP_GRACE)
            yield from read_stream(source, self.kube.logs(namespace, name, self.CONTAINER, follow=True,
                                                          timeout=timeout))
        finally:
            self._delete(namespace, name)

    def _delete(self, namespace: str, name: str) -> None:
        self.kube.delete_pod(namespace, name)  # a second delete of the same pod is a harmless 404
        with self._changed:
            self._live.pop(name, None)

    def stop(self) -> None:
        """Ask the agents of the live node pods to end: a graceful delete, so the kubelet sends
        SIGTERM and a follow stream (``events``) writes its final tick and ``end`` into the
        logs being read; ``run`` deletes the pod for good afterwards."""
        with self._changed:
            self._stopping = True
            live = list(self._live.items())
        for name, namespace in live:
            try:
                self.kube.delete_pod(namespace, name, grace=self.STOP_GRACE)
            except Exception:  # best effort: the next pod must still be asked
                continue

    def close(self, grace: float = 5.0) -> None:
        """Delete every node pod still alive (a worker was interrupted mid-way); a POST
        still in flight is waited for (up to ``grace`` s), or its pod would appear after."""
        with self._changed:
            self._closed = True
            self._changed.wait_for(lambda: self._creating == 0, timeout=grace)
            live = list(self._live.items())
        for name, namespace in live:
            try:
                self._delete(namespace, name)
            except Exception:  # best effort: the next pod must still be tried
                continue
