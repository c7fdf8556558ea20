"""Waiting for an agent container to start, and the life of a short-lived node pod.

``wait_started`` follows any stream of pod states (a watch, or a list in tests) until
one container runs, and fails fast with the kubelet's reason when it cannot: the same
function for ephemeral agent containers and node pods.  ``NodePods`` creates a node
pod, waits for it, streams its agent's records from the logs and deletes it in
``finally``; it also remembers every pod it made, so ``close()`` (called when a run
ends, also on Ctrl-C) deletes whatever a worker thread could not, and refuses to create
any more (a worker still running after Ctrl-C): node pods never survive a run.
``SharedWatch`` is the pod-state stream for many waiters at once: one watch per
namespace (an informer's cache) instead of a GET and a watch per pod.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Optional

from .errors import AccessError, InjectError, Interrupted, SockdebugError, TargetError
from .kube import Forbidden, PodSecurityRejected, Unreachable
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


# --- one watch per namespace, for every waiter --------------------------------------------------

WATCH_SECONDS = 60  #: one watch request's life; it is resumed from its last resourceVersion


class NamespaceWatch:
    """The pods of one namespace as one watch sees them, for any number of waiters.

    As client-go's reflector: the first watch has no resourceVersion, so the server sends
    every pod (ADDED) and then each change; when a watch ends or its connection breaks it
    resumes from the last resourceVersion seen, and after ``410 Gone`` (too old) starts
    over.  ``states(name, deadline)`` yields the pod's latest state, then each newer one."""

    def __init__(self, kube: Any, namespace: str, selector: Optional[str] = None):
        self.kube, self.namespace, self.selector = kube, namespace, selector
        self._lock = threading.Lock()
        self._pods: dict[str, dict] = {}
        self._seen: dict[str, int] = {}  #: name -> changes seen (waiters compare it)
        self._gone: set[str] = set()
        self._waiting: dict[str, threading.Condition] = {}  #: per pod: an event wakes only its waiters
        self._error: Optional[SockdebugError] = None
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{namespace}", daemon=True)
        self._thread.start()

    def states(self, name: str, deadline: float) -> Iterator[dict]:
        seen = 0
        while True:
            with self._lock:
                cond = self._waiting.setdefault(name, threading.Condition(self._lock))
                while self._seen.get(name, 0) == seen and self._error is None and not self._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    cond.wait(left)
                if self._error is not None:
                    raise self._error
                if name in self._gone:
                    raise TargetError(f"pod {name} in namespace {self.namespace} was deleted while the agent started",
                                      "run again")
                if self._stop.is_set():
                    return
                seen, pod = self._seen[name], self._pods[name]
            yield pod

    def close(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:  # interrupt the blocked read of the stream
            resp.shutdown()
        with self._lock:
            for cond in self._waiting.values():
                cond.notify_all()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        version: Optional[str] = None
        while not self._stop.is_set():
            try:
                self._resp = resp = self.kube.watch_pods(self.namespace, version, WATCH_SECONDS, self.selector)
            except SockdebugError as exc:  # the retries gave up, or we may not watch
                self._fail(exc)
                return
            try:
                for line in resp:
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":  # 410 Gone: start over with every pod
                        version = None
                        break
                    version = obj["metadata"]["resourceVersion"]
                    self._update(event.get("type"), obj)
            except Unreachable:  # the stream broke: resume from the last version seen, after a moment
                if not self._stop.is_set():
                    self.kube.requests.retried("reset")
                    self._stop.wait(0.5)
            except Exception as exc:  # given to every waiter, not lost in this thread
                if not self._stop.is_set():  # (closing interrupts the read any way it can)
                    self._fail(AccessError(f"the watch of pods in {self.namespace} failed: {exc}", "run again"))
                return
            finally:
                self._resp = None
                resp.release_conn()

    def _update(self, kind: Optional[str], pod: dict) -> None:
        name = pod["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self._gone.add(name)
            else:
                self._gone.discard(name)
            self._pods[name] = pod
            self._seen[name] = self._seen.get(name, 0) + 1
            cond = self._waiting.get(name)
            if cond is not None:
                cond.notify_all()

    def _fail(self, exc: SockdebugError) -> None:
        with self._lock:
            self._error = exc
            for cond in self._waiting.values():
                cond.notify_all()


class SharedWatch:
    """``watch(namespace, name, deadline)`` for ``Runner`` and ``NodePods``: one
    ``NamespaceWatch`` per namespace (started by ``start`` or on first use) instead of a
    GET and a watch per pod.  ``selector`` narrows it to the pods a sweep inspects."""

    def __init__(self, kube: Any, selector: Optional[str] = None):
        self.kube, self.selector = kube, selector
        self._watches: dict[str, NamespaceWatch] = {}
        self._lock = threading.Lock()

    def start(self, namespace: str) -> NamespaceWatch:
        with self._lock:
            if namespace not in self._watches:
                self._watches[namespace] = NamespaceWatch(self.kube, namespace, self.selector)
            return self._watches[namespace]

    def __call__(self, namespace: str, name: str, deadline: float) -> Iterator[dict]:
        return self.start(namespace).states(name, deadline)

    def close(self) -> None:
        with self._lock:
            watches, self._watches = list(self._watches.values()), {}
        for w in watches:
            w.close()
