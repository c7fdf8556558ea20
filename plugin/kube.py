"""The only module that talks to the Kubernetes API through the official client
(``kubectl.py`` is the other door, through the user's kubectl: a warm query's execs,
completion's names).

``Kube`` speaks the API in plain dicts and turns every HTTP failure into a
``SockdebugError`` subclass that names the cause and the fix.  Below it sits a
*transport* (``request`` and ``exec``): ``kubeclient.ClientTransport`` in real runs
(the official client's ``ApiClient``: kubeconfig, auth, TLS, exec credential plugins),
an in-memory double built from recorded answers in unit tests.  Everything above
``Kube`` (runner, targets, commands) never sees HTTP.

Every request is counted (``Kube.requests``, a ``retry.Requests``) and retried under
pressure as ``retry.py`` describes: 429 for any verb, transient 5xx and broken
connections for idempotent calls; a write that may have landed is checked first
(``add_ephemeral_container``: is our container in the pod's spec?  ``create_pod``: does
the pod exist?) and sent again only when it did not land.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional, Protocol

from . import retry
from .errors import AccessError, AgentError, InjectError, SockdebugError, TargetError

# (resource path segment, API prefix) per workload kind accepted in TARGET.
WORKLOADS = {
    "deployments": "/apis/apps/v1", "statefulsets": "/apis/apps/v1", "daemonsets": "/apis/apps/v1",
    "replicasets": "/apis/apps/v1", "jobs": "/apis/batch/v1",
}
SMP = "application/strategic-merge-patch+json"


# --- the transport boundary ------------------------------------------------------------

class Unreachable(Exception):
    """The API server could not be reached (DNS, TCP, TLS), or the connection broke.
    ``transient``: it broke after it was made (a reset, closed before the answer, a read
    timeout), so another attempt may work; the request may have reached the server."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class Refused(Exception):
    """An exec upgrade the API server answered with an HTTP error instead."""

    def __init__(self, status: int, body: bytes, headers: Optional[Mapping[str, str]] = None):
        super().__init__(f"{status}: {body[:200]!r}")
        self.status, self.body, self.headers = status, body, headers or {}


class Response(Protocol):
    status: int
    data: bytes  #: the whole body (reading it consumes the stream)
    headers: Mapping[str, str]

    def stream(self, amt: int) -> Iterator[bytes]: ...
    def __iter__(self) -> Iterator[bytes]: ...  # lines, as a watch sends them
    def release_conn(self) -> None: ...
    def shutdown(self) -> None: ...  # streams only: ends a blocked read from another thread


class ExecChannel(Protocol):
    """One exec's stdout as byte chunks as they arrive; stderr and the exit code after."""

    stderr: bytes

    def chunks(self, deadline: float) -> Iterator[bytes]: ...
    @property
    def returncode(self) -> Optional[int]: ...
    def stop(self) -> None:
        """Write a byte to the process's stdin (an exec started with ``stdin``): how a
        follow stream (``events --stdin-stop``) is asked to end, as an exec has no signals."""
    def close(self) -> None: ...


class Transport(Protocol):
    host: str

    def request(self, method: str, path: str, *, query: list, headers: dict[str, str], body: Any,
                timeout: float, stream: bool) -> Response:
        """Any HTTP status comes back as a Response; only an unreachable server raises."""

    def exec(self, path: str, query: list) -> ExecChannel:
        """Start an exec (WebSocket); raises ``Refused`` when the upgrade is answered with an error."""


# --- errors ---------------------------------------------------------------------------------

class Forbidden(AccessError):
    """RBAC said no; ``verb`` and ``resource`` say to what."""

    def __init__(self, verb: str, resource: str, namespace: Optional[str], message: str):
        where = f" in namespace {namespace}" if namespace else ""
        super().__init__(
            f"forbidden: you may not {verb} {resource}{where} ({message})",
            "grant the Role in manifests/rbac.yaml: kubectl apply -f manifests/rbac.yaml, then bind it "
            "(see docs/rbac.md)")
        self.verb, self.resource = verb, resource


class PodSecurityRejected(InjectError):
    """Pod Security admission refused the agent's security context."""


class NotFound(TargetError):
    """404: the object (or the subresource) does not exist."""

    details: dict[str, Any] = {}  #: the Status body's ``details`` (kind, name), empty for an unknown path


def _message(body: bytes) -> str:
    return retry.status_body(body).get("message", "") or body.decode("utf-8", "replace")[:300]


def api_error(status: int, body: bytes, what: tuple[str, str, Optional[str]]) -> SockdebugError:
    """The error for an HTTP failure of ``what`` = (verb, resource, namespace)."""
    message = _message(body)
    verb, resource, namespace = what
    if status == 401:
        return AccessError(f"the API server rejected the credentials ({message})",
                           "log in again or refresh the kubeconfig's credentials")
    if status == 403:
        if "PodSecurity" in message:
            return PodSecurityRejected(
                f"Pod Security admission rejected the agent container: {message}",
                "use a weaker profile the namespace admits: --profile restricted (no process owners), "
                "or --profile auto")
        return Forbidden(verb, resource, namespace, message)
    if status == 404:
        where = f" in namespace {namespace}" if namespace else ""
        missing = NotFound(f"{resource} not found{where}", "check the name and the namespace (-n NAMESPACE)")
        missing.details = retry.status_body(body).get("details") or {}
        return missing
    if status == 409:
        return AccessError(f"conflict on {verb} {resource}: {message}",
                           "something changed it at the same time; run again")
    if status == 422:
        return InjectError(f"the API server refused the request: {message}",
                           "this is likely a bug in sockdebug; please report it with the command line")
    if status == 429:
        return AccessError(f"the API server is throttling requests (429 Too Many Requests) to {verb} {resource}",
                           "run again in a moment; with sweep, lower --parallel")
    if status >= 500:
        return AccessError(f"the API server failed ({status}) to {verb} {resource}: {message}",
                           "retry; if it persists, check the API server's health")
    return AccessError(f"the API server answered {status} to {verb} {resource}: {message}",
                       "retry; if it persists, check the API server's health")


# --- the client -----------------------------------------------------------------------------

class Kube:
    """The API of one cluster, as seen through one kubeconfig context."""

    def __init__(self, transport: Transport, namespace: str = "default", context: str = "",
                 request_timeout: float = 30.0, policy: retry.Retry = retry.DEFAULT):
        self.transport = transport
        self.namespace, self.context = namespace, context
        self.host = transport.host
        self._timeout = request_timeout
        self.policy = policy
        self.requests = retry.Requests()  #: every request of this run, and its retries
        self.trace: Optional[Callable[[str], None]] = None  #: told about each retry (``-v``)
        self.sleep: Callable[[float], None] = time.sleep
        self.rng = random.Random()

    def _request(self, method: str, path: str, *, query: Optional[list] = None, body: Any = None,
                 content_type: Optional[str] = None, stream: bool = False, timeout: Optional[float] = None,
                 what: tuple[str, str, Optional[str]] = ("get", "", None),
                 landed: Optional[Callable[[], Any]] = None) -> Any:
        """One API call: the decoded JSON, or the open response with ``stream``; retried as
        ``retry.py`` says.  ``landed`` makes a write retriable after a 5xx or a broken
        connection: it returns what the call would have (the object) when the write took
        effect, else None, and only then is the write sent again."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        idempotent = method in ("GET", "DELETE") or path.endswith("accessreviews")
        kind = retry.kind(method, path, query or [])
        attempt = retry.Attempts(self, kind, what, api_error)
        while True:
            self.requests.sent(kind)
            try:
                resp = self.transport.request(method, path, query=query or [], headers=headers, body=body,
                                              timeout=self._timeout if timeout is None else timeout, stream=stream)
            except Unreachable as exc:
                if not exc.transient:
                    raise self.unreachable(exc) from None
                failure: tuple[str, Any] = ("reset", exc)
                wait = None
            else:
                if 200 <= resp.status <= 299:
                    return resp if stream else json.loads(resp.data)
                try:
                    data = resp.data
                finally:
                    resp.release_conn()
                reason = retry.why_retry(resp.status, resp.headers, data)
                if reason is None:
                    raise api_error(resp.status, data, what) from None
                failure, wait = (reason, (resp.status, data)), retry.retry_after(resp.headers, data)
            if failure[0] != "429" and not idempotent:  # it may have run: check, never resend blindly
                if landed is None:
                    raise attempt.error(failure) from None
                got = landed()
                if got is not None:
                    self.requests.found_landed()
                    if self.trace is not None:
                        self.trace(f"api: {kind} ({what[1]}) failed but had taken effect: not sent again")
                    return got
            attempt.wait(failure, wait)

    def unreachable(self, exc: Unreachable) -> AccessError:
        return AccessError(f"the API server at {self.host} is unreachable ({str(exc)[:200]})",
                           "check the cluster is up and the kubeconfig's server address (`kubectl cluster-info`)")

    # --- reads ---------------------------------------------------------------------------

    def get_pod(self, namespace: str, name: str) -> dict:
        return self._request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}",
                             what=("get", f"pod {name}", namespace))

    def list_pods(self, namespace: Optional[str], selector: Optional[str] = None,
                  field_selector: Optional[str] = None, cached: bool = False) -> list[dict]:
        query = [("labelSelector", selector)] if selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        return self._list("/api/v1", "pods", namespace, query, cached)

    def get_workload(self, namespace: str, plural: str, name: str) -> dict:
        return self._request("GET", f"{WORKLOADS[plural]}/namespaces/{namespace}/{plural}/{name}",
                             what=("get", f"{plural[:-1]} {name}", namespace))

    def get_service(self, namespace: str, name: str) -> dict:
        return self._request("GET", f"/api/v1/namespaces/{namespace}/services/{name}",
                             what=("get", f"service {name}", namespace))

    def list_services(self, namespace: Optional[str], cached: bool = False) -> list[dict]:
        return self._list("/api/v1", "services", namespace, cached=cached)

    def list_nodes(self, cached: bool = False) -> list[dict]:
        return self._list("/api/v1", "nodes", None, cached=cached)

    def list_endpoint_slices(self, namespace: Optional[str]) -> list[dict]:
        return self._list("/apis/discovery.k8s.io/v1", "endpointslices", namespace)

    def list_network_policies(self, namespace: Optional[str]) -> list[dict]:
        return self._list("/apis/networking.k8s.io/v1", "networkpolicies", namespace)

    def list_events(self, namespace: Optional[str], field_selector: Optional[str] = None) -> list[dict]:
        """core/v1 Events (``field_selector``: ``involvedObject.uid=UID``, ``involvedObject.kind=Pod``)."""
        return self._list("/api/v1", "events", namespace, [("fieldSelector", field_selector)] if field_selector
                          else [])

    def _list(self, prefix: str, plural: str, namespace: Optional[str], query: Optional[list] = None,
              cached: bool = False) -> list[dict]:
        """The items of one list, of a namespace or (None) every namespace; ``cached``:
        served from the API server's watch cache (resourceVersion=0), for reads that
        tolerate a moment's staleness (naming peers) and should cost the server little."""
        path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
        query = [*(query or []), *([("resourceVersion", "0")] if cached else [])]
        return self._request("GET", path, query=query, what=("list", plural, namespace))["items"]

    def get_node(self, name: str) -> dict:
        return self._request("GET", f"/api/v1/nodes/{name}", what=("get", f"node {name}", None))

    def namespace_labels(self, namespace: str) -> Optional[dict]:
        """The namespace's labels, or None when we may not read namespaces (the plugin's
        Role does not need to)."""
        try:
            ns = self._request("GET", f"/api/v1/namespaces/{namespace}",
                               what=("get", f"namespace {namespace}", None))
        except (Forbidden, TargetError):
            return None
        return ns.get("metadata", {}).get("labels") or {}

    def can_i(self, verb: str, resource: str, subresource: str, namespace: str) -> bool:
        """SelfSubjectAccessReview (every authenticated user may ask)."""
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"verb": verb, "resource": resource,
                                                  "subresource": subresource, "namespace": namespace}}}
        try:
            out = self._request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review,
                                content_type="application/json",
                                what=("create", "selfsubjectaccessreviews", None))
        except AccessError:
            return True  # cannot tell: try, and report the real Forbidden if it comes
        return bool(out.get("status", {}).get("allowed"))

    # --- writes ----------------------------------------------------------------------------

    def add_ephemeral_container(self, namespace: str, pod: str, container: dict) -> dict:
        """Strategic merge patch on pods/ephemeralcontainers (as kubectl debug does):
        ``ephemeralContainers`` merges by name, so this only adds ours.  After a 5xx or a
        broken connection the patch may have landed: the pod is read, and the patch is sent
        again only when our container is not in its spec (a second one would stay forever)."""
        def landed() -> Optional[dict]:
            current = self.get_pod(namespace, pod)
            names = {c.get("name") for c in current.get("spec", {}).get("ephemeralContainers") or []}
            return current if container["name"] in names else None

        try:
            return self._request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{pod}/ephemeralcontainers",
                                 body={"spec": {"ephemeralContainers": [container]}}, content_type=SMP,
                                 what=("patch", "pods/ephemeralcontainers", namespace), landed=landed)
        except NotFound as exc:
            if exc.details.get("name") == pod:  # the pod itself went away
                raise TargetError(f"pod {pod} not found in namespace {namespace} (it went away)",
                                  "run again once the pod is back") from None
            # kubectl's reading: a 404 without details on the subresource = the feature is off
            raise InjectError("this cluster does not support ephemeral containers (404 on the "
                              "ephemeralcontainers subresource)", "ephemeral containers need Kubernetes "
                              ">= 1.23 with the feature enabled") from None

    def create_pod(self, namespace: str, body: dict) -> dict:
        """After a 5xx or a broken connection the pod may exist already (its name is ours
        alone: a random suffix): it is read, and created again only when it does not."""
        name = body["metadata"]["name"]

        def landed() -> Optional[dict]:
            try:
                return self.get_pod(namespace, name)
            except NotFound:
                return None

        return self._request("POST", f"/api/v1/namespaces/{namespace}/pods", body=body,
                             content_type="application/json", what=("create", "pods", namespace), landed=landed)

    def delete_pod(self, namespace: str, name: str, grace: int = 0) -> None:
        """``grace`` > 0: the kubelet sends SIGTERM and waits that long (a node pod's agent
        then ends its stream itself)."""
        try:
            self._request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                          query=[("gracePeriodSeconds", str(grace))], what=("delete", f"pod {name}", namespace))
        except NotFound:
            pass  # already gone

    # --- streams ---------------------------------------------------------------------------

    def watch_pod(self, namespace: str, name: str, deadline: float) -> Iterator[dict]:
        """The pod now, then every change until ``deadline`` (time.monotonic())."""
        pod = self.get_pod(namespace, name)
        yield pod
        version = pod["metadata"]["resourceVersion"]
        while time.monotonic() < deadline:
            remaining = max(1, int(deadline - time.monotonic()) + 1)
            resp = self.watch_pods(namespace, version, remaining, field_selector=f"metadata.name={name}")
            try:
                for line in resp:
                    event = json.loads(line)
                    if event.get("type") == "ERROR":  # e.g. 410 Gone: start again from a fresh GET
                        pod = self.get_pod(namespace, name)
                        version = pod["metadata"]["resourceVersion"]
                        yield pod
                        break
                    pod = event["object"]
                    version = pod["metadata"]["resourceVersion"]
                    yield pod
                    if time.monotonic() >= deadline:
                        return
            except Unreachable:  # the stream broke: resume from the last version seen
                self.requests.retried("reset")
            finally:
                resp.release_conn()

    def watch_pods(self, namespace: str, version: Optional[str], seconds: int, selector: Optional[str] = None,
                   field_selector: Optional[str] = None) -> Response:
        """One watch of the pods of ``namespace`` (open, one JSON event per line) from
        ``version``, or, without one, starting with every pod as ADDED; the server ends
        it after ``seconds``."""
        query = [("watch", "true"), ("timeoutSeconds", str(seconds)), ("allowWatchBookmarks", "false")]
        if version:
            query.append(("resourceVersion", version))
        if selector:
            query.append(("labelSelector", selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        return self._request("GET", f"/api/v1/namespaces/{namespace}/pods", query=query, stream=True,
                             timeout=seconds + 5, what=("watch", "pods", namespace))

    def exec(self, namespace: str, pod: str, container: str, command: list[str], stdin: bool = False
             ) -> ExecChannel:
        """Start an exec.  Retried like a GET (429, transient 5xx, a broken handshake): the
        agent's queries only read, so running one again is harmless.  ``stdin``: keep the
        process's stdin open (``ExecChannel.stop`` writes to it)."""
        query = [("command", c) for c in command] + [
            ("container", container), ("stdout", "true"), ("stderr", "true"),
            ("stdin", "true" if stdin else "false"), ("tty", "false")]
        attempt = retry.Attempts(self, "create pods/exec", ("create", "pods/exec", namespace), api_error)
        while True:
            self.requests.sent("create pods/exec")
            try:
                return self.transport.exec(f"/api/v1/namespaces/{namespace}/pods/{pod}/exec", query)
            except Refused as exc:
                if _gone(exc.status, _message(exc.body)):
                    raise NotFound(f"pod {pod} or its agent container {container} is gone ({_message(exc.body)})",
                                   "run again: a new agent container will be added") from None
                reason = retry.why_retry(exc.status, exc.headers, exc.body)
                if reason is None:
                    raise api_error(exc.status, exc.body, ("create", "pods/exec", namespace)) from None
                failure: tuple[str, Any] = (reason, (exc.status, exc.body))
                wait = retry.retry_after(exc.headers, exc.body)
            except Unreachable as exc:
                if not exc.transient:
                    raise AccessError(f"exec into {pod} failed: {str(exc)[:300]}",
                                      "check that the API server can reach the node's kubelet (`kubectl logs` "
                                      "works?)") from None
                failure, wait = ("reset", exc), None
            attempt.wait(failure, wait)

    def logs(self, namespace: str, pod: str, container: str, *, follow: bool, timeout: float) -> Iterator[bytes]:
        resp = self._request(
            "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
            query=[("container", container), ("follow", "true" if follow else "false")],
            stream=True, timeout=timeout, what=("get", "pods/log", namespace))
        try:
            yield from resp.stream(64 * 1024)
        finally:
            resp.release_conn()

    def log_tail(self, namespace: str, pod: str, container: str, *, lines: int = 20, previous: bool = False) -> str:
        """The last ``lines`` a container wrote (``previous``: in its last terminated run)."""
        resp = self._request(
            "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
            query=[("container", container), ("tailLines", str(lines)), ("previous", "true" if previous else "false")],
            stream=True, what=("get", "pods/log", namespace))
        try:
            return resp.data.decode("utf-8", "replace")
        finally:
            resp.release_conn()


def _gone(status: int, message: str) -> bool:
    """An exec refused because the container is not there (any more), in the API server's
    words (recorded on a real cluster): 404; 400 "container X is not valid for pod Y" (no
    such container); 500 "container not found" (an ephemeral container that exited)."""
    return (status == 404 or (status == 400 and "is not valid for pod" in message)
            or (status >= 500 and "container not found" in message))


def deadline_error() -> AgentError:
    """What every exec channel raises when the agent runs past --timeout."""
    return AgentError("the agent did not finish within --timeout", "raise --timeout, or narrow the query")


# --- connecting --------------------------------------------------------------------------------

def connect(kubeconfig: Optional[str] = None, context: Optional[str] = None, namespace: Optional[str] = None,
            request_timeout: float = 30.0) -> Kube:
    """A ``Kube`` for the kubeconfig's context, resolved as kubectl does (``--kubeconfig``,
    ``$KUBECONFIG`` merged, ``~/.kube/config``, in-cluster), on the official client."""
    from .kubeclient import ClientTransport, load  # the client's core only: see kubeclient.py

    k8s = load()
    cfg = k8s.Configuration()
    cfg.retries = False  # Kube._request retries, counts and reports; urllib3 would do it silently
    cfg.connection_pool_maxsize = 64  # a sweep's threads share it; a full pool reconnects (TLS) each time
    default_ns = "default"
    try:
        if kubeconfig or context or _kubeconfig_present():
            contexts, active = k8s.kube_config.list_kube_config_contexts(kubeconfig)
            if context is not None:
                names = [c["name"] for c in contexts]
                if context not in names:
                    raise AccessError(f"context {context!r} is not in the kubeconfig",
                                      f"contexts there: {', '.join(names) or 'none'}")
                active = next(c for c in contexts if c["name"] == context)
            if active is None:
                raise AccessError("the kubeconfig has no current context",
                                  "pass --context, or run `kubectl config use-context NAME`")
            default_ns = active.get("context", {}).get("namespace") or "default"
            k8s.kube_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg,
                                             persist_config=False)
            context_name = active["name"]
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s.incluster.load_incluster_config(client_configuration=cfg)
            default_ns = _incluster_namespace() or "default"
            context_name = "in-cluster"
        else:
            raise AccessError("no kubeconfig found (KUBECONFIG is unset and ~/.kube/config does not exist)",
                              "pass --kubeconfig PATH or set KUBECONFIG to your cluster's kubeconfig")
    except k8s.ConfigException as exc:
        raise AccessError(f"cannot use the kubeconfig: {exc}",
                          "check `kubectl config view`; pass --kubeconfig/--context") from None
    except OSError as exc:
        raise AccessError(f"cannot read the kubeconfig: {exc}", "pass --kubeconfig PATH") from None
    return Kube(ClientTransport(k8s, cfg), namespace or default_ns, context_name, request_timeout)


def _kubeconfig_present() -> bool:
    paths = os.environ.get("KUBECONFIG", "")
    if paths:
        return any(os.path.exists(os.path.expanduser(p)) for p in paths.split(os.pathsep) if p)
    return os.path.exists(os.path.expanduser("~/.kube/config"))


def _incluster_namespace() -> Optional[str]:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip()
    except OSError:
        return None
