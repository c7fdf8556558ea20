"""An in-memory Kubernetes API for ``kube.Kube``'s transport seam, replaying answers that
``tests/unit/data/api/record.py`` recorded on the real local cluster.

It keeps pods (the recorded two-container pod is the template), applies
ephemeral-container patches, plays each new container's start as the recorded watch
events did (running, or a recorded kubelet failure), answers execs and logs with the
recorded agent streams, and refuses as the API server did (404, exec into a missing or
exited container, 403 RBAC and Pod Security, 401, 409, 422; 429/5xx in the same Status
shape, with a Retry-After header when asked), or breaks the connection before or after
a request took effect (``reset``).  A watch of a whole namespace streams every pod's
changes until it is shut down, as a real one does.  Every request is logged in ``calls``;
the waits of its ``Kube`` between retries in ``slept`` (nobody really sleeps).  A double
proves error paths, never a feature: the e2e suite does that on the real cluster.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

from sockdebug_plugin.kube import Kube, Refused, Unreachable

RECORDED: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "api" / "recorded.json").read_text())
_TRIAGE_TEXT = (Path(__file__).parent / "data" / "api" / "triage.json").read_text()
#: record_triage.py's answers (redis never Ready, a liveness crash loop, a policy), in namespace "shop"
TRIAGE: dict[str, Any] = json.loads(_TRIAGE_TEXT.replace(json.loads(_TRIAGE_TEXT)["namespace"], "shop"))
#: list paths the double answers from ``objects`` -> the kind
LISTS = {"services": r"/api/v1(?:/namespaces/([^/]+))?/services", "events": r"/api/v1(?:/namespaces/([^/]+))?/events",
         "nodes": r"/api/v1/nodes", "pods": r"/api/v1/pods",
         "endpointslices": r"/apis/discovery\.k8s\.io/v1(?:/namespaces/([^/]+))?/endpointslices",
         "networkpolicies": r"/apis/networking\.k8s\.io/v1(?:/namespaces/([^/]+))?/networkpolicies"}


def entry(name: str) -> tuple[int, bytes]:
    """A recorded answer as (status, body bytes)."""
    e = RECORDED[name]
    body = e["body"]
    return e["status"], (json.dumps(body) if not isinstance(body, str) else body).encode()


def recorded_status(watch: str, image_prefix: str) -> dict:
    """The recorded status of the container whose image starts with ``image_prefix``,
    in the last event of a recorded watch."""
    for event in reversed(RECORDED[watch]["events"]):
        for s in event["object"]["status"].get("ephemeralContainerStatuses") or []:
            if s.get("image", "").startswith(image_prefix):
                return copy.deepcopy(s)
    raise KeyError(f"{watch}: no status for {image_prefix}")


RUNNING = recorded_status("watch_running", "docker.io/library/sockdebug-agent")
NEVER_PULL = recorded_status("watch_image_never_pull", "sockdebug-absent")
PULL_FAILED = recorded_status("watch_image_pull", "localhost:1/")
CREATING = {"name": "", "state": {"waiting": {"reason": "ContainerCreating"}}}
TERMINATED = {"name": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}


class Response:
    """What ``Kube`` reads from a transport's answer."""

    def __init__(self, status: int, data: bytes = b"", lines: Optional[Iterator[bytes]] = None,
                 chunks: Optional[Iterator[bytes]] = None, headers: Optional[dict[str, str]] = None):
        self.status, self.data, self.headers = status, data, headers or {}
        self._lines, self._chunks = lines or iter(()), chunks
        self.released = self.shut = False

    def stream(self, amt: int) -> Iterator[bytes]:
        if self._chunks is not None:
            yield from self._chunks
            return
        for i in range(0, len(self.data), 97):  # small chunks: records arrive split
            yield self.data[i:i + 97]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._lines)

    def release_conn(self) -> None:
        self.released = True

    def shutdown(self) -> None:
        self.shut = True


class Exec:
    """A started exec: stdout in chunks, then stderr and the exit code."""

    def __init__(self, stdout: bytes, stderr: bytes = b"", returncode: Optional[int] = 0):
        self._stdout, self.stderr, self._rc = stdout, stderr, returncode
        self.closed = False

    def chunks(self, deadline: float) -> Iterator[bytes]:
        for i in range(0, len(self._stdout), 61):
            yield self._stdout[i:i + 61]

    @property
    def returncode(self) -> Optional[int]:
        return self._rc

    def close(self) -> None:
        self.closed = True


class ApiDouble:
    """One namespace's worth of API server, plus scripted trouble."""

    host = "https://api-double.invalid"

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict] = {}
        self.plans: dict[tuple[str, str], list[dict]] = {}  #: pod -> states the watch will show, in order
        self.calls: list[tuple[str, str]] = []
        self.labels: dict[str, dict] = {}  #: namespace -> labels (unreadable when missing)
        self.exec_denied = False
        self.exited: set[str] = set()  #: agent containers that exit right after the GET
        self.start: Callable[[dict], list[dict]] = lambda c: [CREATING, RUNNING]  #: a new container's states
        self.reject_patch: Callable[[dict], Optional[str]] = lambda c: None  #: -> a recorded refusal
        self.failures: list[tuple[str, str, Any]] = []  #: (method, path regex, trouble), used once each
        self.slept: list[float] = []  #: what the Kube of ``kube()`` waited between retries
        self.changed = threading.Condition(threading.RLock())  #: pods changed: namespace watches look
        self.on_logs: Callable[[str], None] = lambda container: None
        self.created: list[dict] = []  #: every pod body POSTed
        self.connects = 0  #: kube.connect calls (``patched``)
        self.objects: dict[str, list[dict]] = {kind: [] for kind in LISTS if kind != "pods"}  #: what lists return
        self.denied: set[str] = set()  #: list kinds answered with the recorded 403 (cluster-wide ones too)
        self.denied_wide: set[str] = set()  #: list kinds answered 403 only cluster-wide
        self.previous_logs: dict[tuple[str, str], str] = {}  #: (pod, container) -> its previous run's log

    # --- the fixture ------------------------------------------------------------------------

    def add_pod(self, namespace: str = "shop", name: str = "api") -> dict:
        pod = copy.deepcopy(RECORDED["pod"]["body"])
        pod["metadata"].update(name=name, namespace=namespace, uid=f"uid-{name}", resourceVersion="1")
        self.pods[(namespace, name)] = pod
        return copy.deepcopy(pod)

    def add_triage(self) -> None:
        """The recorded triage scenario: pods redis (never Ready) and liveness (restarting),
        their Service, EndpointSlice, NetworkPolicy, Events, the node, and the previous log."""
        for p in TRIAGE["pods"]["body"]["items"]:
            self.pods[("shop", p["metadata"]["name"])] = copy.deepcopy(p)
        for kind in self.objects:
            self.objects[kind] = copy.deepcopy(TRIAGE[kind]["body"]["items"])
        log = TRIAGE["log_previous"]["body"]
        self.previous_logs[("liveness", "app")] = log if isinstance(log, str) else json.dumps(log) + "\n"

    def kube(self, namespace: str = "shop", **kw: Any) -> Kube:
        k = Kube(self, namespace=namespace, context="double", **kw)
        k.sleep = self.slept.append
        return k

    def fail(self, method: str, path: str, recorded: str, headers: Optional[dict[str, str]] = None,
             times: int = 1, landed: bool = False) -> None:
        """Answer the next ``times`` ``method`` on a path matching ``path`` with a recorded
        refusal (``landed``: after doing what was asked, as a 5xx after the write may do)."""
        self.failures.extend([(method, path, (recorded, headers, landed))] * times)

    def reset(self, method: str, path: str, landed: bool = False, times: int = 1) -> None:
        """Break the connection of the next ``times`` ``method`` on ``path``: before the
        server saw the request, or (``landed``) after it took effect."""
        self.failures.extend([(method, path, "landed" if landed else "reset")] * times)

    def agents(self, namespace: str = "shop", pod: str = "api") -> list[dict]:
        return self.pods[(namespace, pod)]["spec"].get("ephemeralContainers") or []

    # --- the transport ---------------------------------------------------------------------

    def request(self, method: str, path: str, *, query: list, headers: dict[str, str], body: Any,
                timeout: float, stream: bool) -> Response:
        with self.changed:
            self.calls.append((method, path))
            for i, (m, pattern, trouble) in enumerate(self.failures):
                if m == method and re.search(pattern, path):
                    del self.failures[i]
                    if trouble == "reset":
                        raise Unreachable("('Connection aborted.', ConnectionResetError(104, 'reset by peer'))", True)
                    if trouble == "landed":
                        self._answer(method, path, query, body)
                        raise Unreachable("('Connection aborted.', RemoteDisconnected('closed without response'))",
                                          True)
                    recorded, headers, landed = trouble
                    if landed:
                        self._answer(method, path, query, body)
                    return Response(*entry(recorded), headers=headers)
            answer = self._answer(method, path, query, body)
            self.changed.notify_all()
            return answer

    def _answer(self, method: str, path: str, query: list, body: Any) -> Response:
        q = dict(query)
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)", path):
            return self._pod(method, m.group(1), m.group(2))
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/ephemeralcontainers", path):
            return self._patch(m.group(1), m.group(2), body["spec"]["ephemeralContainers"][0])
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", path):
            return self._logs(m.group(1), m.group(2), q["container"], q.get("previous") == "true")
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path):
            if q.get("watch") == "true" and "fieldSelector" not in q:
                watching = Response(200)
                watching._lines = self._namespace_watch(m.group(1), q.get("resourceVersion"), watching)
                return watching
            if q.get("watch") == "true":
                return self._watch(m.group(1), q["fieldSelector"].split("=", 1)[1])
            if method == "POST":
                return self._create(m.group(1), body)
            return self._list("pods", m.group(1), q)
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/services/([^/]+)", path):
            found = [o for o in self.objects["services"] if (o["metadata"].get("namespace"), o["metadata"]["name"])
                     == m.groups()]
            return self._json(200, found[0]) if found else Response(*entry("pod_not_found"))
        for kind, pattern in LISTS.items():
            if m := re.fullmatch(pattern, path):
                return self._list(kind, m.group(1) if m.groups() else None, q)
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)", path):
            if m.group(1) not in self.labels:
                return Response(*entry("forbidden"))
            ns = json.loads(entry("namespace")[1])
            ns["metadata"]["labels"] = self.labels[m.group(1)]
            return self._json(200, ns)
        if m := re.fullmatch(r"/api/v1/nodes/([^/]+)", path):
            return self._json(200, {"kind": "Node", "metadata": {"name": m.group(1)}})
        if path.endswith("/selfsubjectaccessreviews"):
            return Response(*entry("ssar_denied" if self.exec_denied else "ssar_allowed"))
        raise AssertionError(f"the double does not know {method} {path}")

    def exec(self, path: str, query: list) -> Exec:
        self.calls.append(("EXEC", path))
        ns, pod = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec", path).groups()
        container = dict(query)["container"]
        if self.exec_denied:
            raise Refused(*entry("exec_forbidden"))
        spec = next((c for c in self.agents(ns, pod) if c["name"] == container), None)
        if spec is None:
            raise Refused(*entry("exec_no_such_container"))
        if container in self.exited:
            raise Refused(*entry("exec_exited_container"))
        command = [v for k, v in query if k == "command"]
        if command[1:] == ["stop"]:
            return self._stop(ns, pod, container)
        return Exec(self._output(spec, command).encode())

    # --- behaviour ----------------------------------------------------------------------------

    def _json(self, status: int, obj: Any) -> Response:
        return Response(status, json.dumps(obj).encode())

    def _list(self, kind: str, ns: Optional[str], query: dict) -> Response:
        """A list of one namespace or (None) every one, filtered by the field selectors the
        plugin sends (``a.b=value``, comma-separated), refused as recorded when denied."""
        if kind in self.denied or (ns is None and kind in self.denied_wide):
            refusal = TRIAGE[f"forbidden_{kind}"]
            return Response(refusal["status"], json.dumps(refusal["body"]).encode())
        items = list(self.pods.values()) if kind == "pods" else self.objects[kind]
        items = [i for i in items if ns is None or kind == "nodes" or i["metadata"].get("namespace") == ns]
        for term in filter(None, (query.get("fieldSelector") or "").split(",")):
            field, _, value = term.partition("=")
            items = [i for i in items if _field(i, field) == value]
        for term in filter(None, (query.get("labelSelector") or "").split(",")):  # k=v terms only
            label, _, value = term.partition("=")
            items = [i for i in items if (i["metadata"].get("labels") or {}).get(label) == value]
        return self._json(200, {"kind": "List", "items": copy.deepcopy(items)})

    def _pod(self, method: str, ns: str, name: str) -> Response:
        if (ns, name) not in self.pods:
            return Response(*entry("delete_not_found" if method == "DELETE" else "pod_not_found"))
        if method == "DELETE":
            return self._json(200, self.pods.pop((ns, name)))
        return self._json(200, self.pods[(ns, name)])

    def _patch(self, ns: str, name: str, container: dict) -> Response:
        refusal = self.reject_patch(container)
        if refusal:
            return Response(*entry(refusal))
        if (ns, name) not in self.pods:
            return Response(*entry("patch_pod_not_found"))
        pod = self.pods[(ns, name)]
        pod["spec"].setdefault("ephemeralContainers", []).insert(0, container)  # newest first, as the API does
        plan = self.plans.setdefault((ns, name), [])
        for state in self.start(container):
            plan.append(self._with_status(pod, "ephemeralContainerStatuses", container["name"], state))
        return self._json(200, pod)

    def _create(self, ns: str, body: dict) -> Response:
        name = body["metadata"]["name"]
        if (ns, name) in self.pods:
            return Response(*entry("create_conflict"))
        self.created.append(copy.deepcopy(body))
        pod = copy.deepcopy(body)
        pod["metadata"].update(namespace=ns, uid=f"uid-{name}", resourceVersion="1")
        pod["status"] = {"phase": "Pending"}
        self.pods[(ns, name)] = pod
        for state in self.start(pod["spec"]["containers"][0]):
            self.plans.setdefault((ns, name), []).append(
                self._with_status(pod, "containerStatuses", "agent", TERMINATED if state is RUNNING else state))
        return self._json(201, pod)

    def _with_status(self, pod: dict, key: str, name: str, state: dict) -> dict:
        """The pod as it will look once container ``name`` is in ``state``."""
        nxt = copy.deepcopy(pod)
        statuses = [s for s in nxt["status"].get(key) or [] if s["name"] != name]
        nxt["status"][key] = [*statuses, {**copy.deepcopy(state), "name": name}]
        nxt["metadata"]["resourceVersion"] = str(int(pod["metadata"]["resourceVersion"]) + 1)
        return nxt

    def _watch(self, ns: str, name: str) -> Response:
        lines = []
        for state in self.plans.pop((ns, name), []):
            if (ns, name) in self.pods:
                self.pods[(ns, name)] = state
                lines.append(json.dumps({"type": "MODIFIED", "object": state}).encode())
        if not lines:
            time.sleep(0.02)  # a watch that times out without news
        return Response(200, lines=lines)

    def _namespace_watch(self, ns: str, version: Optional[str], response: Response) -> Iterator[bytes]:
        """Every pod first (ADDED) when no ``version`` is given, then each pod's planned
        states as they come, until the watcher shuts the response down (or 5 s of quiet)."""
        with self.changed:
            first = [] if version else [copy.deepcopy(p) for (n, _), p in self.pods.items() if n == ns]
        for pod in first:
            yield json.dumps({"type": "ADDED", "object": pod}).encode() + b"\n"
        quiet = time.monotonic() + 5
        while time.monotonic() < quiet and not response.shut:
            with self.changed:
                lines = []
                for (n, name) in [k for k in self.plans if k[0] == ns]:
                    for state in self.plans.pop((n, name), []):
                        if (n, name) in self.pods:
                            self.pods[(n, name)] = state
                            lines.append(json.dumps({"type": "MODIFIED", "object": state}).encode() + b"\n")
                if not lines:
                    self.changed.wait(0.05)
            yield from lines
            if lines:
                quiet = time.monotonic() + 5

    def _logs(self, ns: str, name: str, container: str, previous: bool = False) -> Response:
        self.on_logs(container)
        pod = self.pods.get((ns, name))
        if pod is None:
            return Response(*entry("pod_not_found"))
        if (name, container) in self.previous_logs:
            return Response(200, self.previous_logs[name, container].encode() if previous else b"")
        spec = next(c for c in [*pod["spec"].get("ephemeralContainers", []), *pod["spec"]["containers"]]
                    if c["name"] == container)
        if "ids" in spec["command"]:
            return Response(200, RECORDED["logs_ids"]["body"].encode())
        if spec["name"] == "agent":  # a node pod
            return Response(200, RECORDED["node_pod_logs"]["body"].encode())
        return Response(200, RECORDED["logs_one_shot"]["body"].encode())

    def _stop(self, ns: str, pod: str, container: str) -> Exec:
        """``sockdebug-agent stop``: a framed stream, then the container ends (as the agent's
        serve process does on SIGTERM); an ended one answers with a not-serving warning."""
        hello = RECORDED["exec_sockets"]["stdout"].splitlines()[0]
        statuses = self.pods[(ns, pod)]["status"].get("ephemeralContainerStatuses") or []
        if any(s["name"] == container and "running" in s.get("state", {}) for s in statuses):
            self.plans.setdefault((ns, pod), []).append(
                self._with_status(self.pods[(ns, pod)], "ephemeralContainerStatuses", container, TERMINATED))
            return Exec(f'{hello}\n{{"type":"end","records":{{"hello":1}},"elapsed_ms":1.0,"exit_code":0}}\n'.encode())
        warning = '{"type":"warning","code":"not-serving","message":"nothing to stop","count":null}'
        return Exec(f'{hello}\n{warning}\n{{"type":"end","records":{{"hello":1,"warning":1}},"elapsed_ms":1.0,'
                    f'"exit_code":0}}\n'.encode())

    def _output(self, spec: dict, command: list[str]) -> str:
        """The recorded stream of an exec'd agent command, in the container its agent targets."""
        if "ids" in command:
            return RECORDED["logs_ids"]["body"]
        if "triage" in command:
            return TRIAGE["exec_triage"]["stdout"]
        if spec.get("targetContainerName") is None:  # no target: the pod's namespace, where nothing runs
            hello = TRIAGE["exec_sockets_all"]["stdout"].splitlines()[0]
            return hello + '\n{"type":"end","records":{"hello":1},"elapsed_ms":1.0,"exit_code":0}\n'
        if spec.get("targetContainerName") == "redis":
            return TRIAGE["exec_sockets_all"]["stdout"]
        if spec.get("targetContainerName") == "sidecar":
            return RECORDED["exec_sockets_sidecar"]["stdout"]
        return RECORDED["exec_sockets"]["stdout"]


def patched(monkeypatch: Any, tmp_path: Path) -> ApiDouble:
    """A double the plugin's ``kube.connect`` returns (``connects`` counts the calls), with
    an empty cache folder, a kubeconfig file and no kubectl on PATH (nothing is warm unless
    a test adds one)."""
    from sockdebug_plugin import kube

    double = ApiDouble()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    double.connects = 0

    def connect(kubeconfig=None, context=None, namespace=None, request_timeout=30.0):
        double.connects += 1
        return double.kube(namespace or "default")

    monkeypatch.setattr(kube, "connect", connect)
    return double


def _field(obj: dict, path: str) -> str:
    """A field selector's value in an object (``involvedObject.uid``, ``spec.nodeName``)."""
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)
