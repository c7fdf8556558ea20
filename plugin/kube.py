"""The only module that talks to the Kubernetes API through the official client
(``kubectl.py`` is the other door, through the user's kubectl: a warm query's execs,
completion's names).

``Kube`` speaks the API in plain dicts and turns every HTTP failure into a
``SockdebugError`` subclass that names the cause and the fix.  Below it sits a
*transport* (``request`` and ``exec``): ``kubeclient.ClientTransport`` in real runs
(the official client's ``ApiClient``: kubeconfig, auth, TLS, exec credential plugins),
an in-memory double built from recorded answers in unit tests.  Everything above
``Kube`` (runner, targets, commands) never sees HTTP.  Retries and request counting
belong here too, when they come.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any, Optional, Protocol

from .errors import AccessError, AgentError, InjectError, SockdebugError, TargetError

# (resource path segment, API prefix) per workload kind accepted in TARGET.
WORKLOADS = {
    "deployments": "/apis/apps/v1", "statefulsets": "/apis/apps/v1", "daemonsets": "/apis/apps/v1",
    "replicasets": "/apis/apps/v1", "jobs": "/apis/batch/v1",
}
SMP = "application/strategic-merge-patch+json"


# --- the transport boundary ------------------------------------------------------------

class Unreachable(Exception):
    """The API server could not be reached at all (DNS, TCP, TLS)."""


class Refused(Exception):
    """An exec upgrade the API server answered with an HTTP error instead."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"{status}: {body[:200]!r}")
        self.status, self.body = status, body


class Response(Protocol):
    status: int
    data: bytes  #: the whole body (reading it consumes the stream)

    def stream(self, amt: int) -> Iterator[bytes]: ...
    def __iter__(self) -> Iterator[bytes]: ...  # lines, as a watch sends them
    def release_conn(self) -> None: ...


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


def _status(body: bytes) -> dict[str, Any]:
    try:
        status = json.loads(body)
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def _message(body: bytes) -> str:
    return _status(body).get("message", "") or body.decode("utf-8", "replace")[:300]


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
        missing.details = _status(body).get("details") or {}
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
                 request_timeout: float = 30.0):
        self.transport = transport
        self.namespace, self.context = namespace, context
        self.host = transport.host
        self._timeout = request_timeout

    def _request(self, method: str, path: str, *, query: Optional[list] = None, body: Any = None,
                 content_type: Optional[str] = None, stream: bool = False, timeout: Optional[float] = None,
                 what: tuple[str, str, Optional[str]] = ("get", "", None)) -> Any:
        """One API call: the decoded JSON, or the open response with ``stream``."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            resp = self.transport.request(method, path, query=query or [], headers=headers, body=body,
                                          timeout=self._timeout if timeout is None else timeout, stream=stream)
        except Unreachable as exc:
            raise AccessError(f"the API server at {self.host} is unreachable ({str(exc)[:200]})",
                              "check the cluster is up and the kubeconfig's server address "
                              "(`kubectl cluster-info`)") from None
        if not 200 <= resp.status <= 299:
            try:
                raise api_error(resp.status, resp.data, what) from None
            finally:
                resp.release_conn()
        if stream:
            return resp
        return json.loads(resp.data)

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
        ``ephemeralContainers`` merges by name, so this only adds ours."""
        try:
            return self._request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{pod}/ephemeralcontainers",
                                 body={"spec": {"ephemeralContainers": [container]}}, content_type=SMP,
                                 what=("patch", "pods/ephemeralcontainers", namespace))
        except NotFound as exc:
            if exc.details.get("name") == pod:  # the pod itself went away
                raise TargetError(f"pod {pod} not found in namespace {namespace} (it went away)",
                                  "run again once the pod is back") from None
            # kubectl's reading: a 404 without details on the subresource = the feature is off
            raise InjectError("this cluster does not support ephemeral containers (404 on the "
                              "ephemeralcontainers subresource)", "ephemeral containers need Kubernetes "
                              ">= 1.23 with the feature enabled") from None

    def create_pod(self, namespace: str, body: dict) -> dict:
        return self._request("POST", f"/api/v1/namespaces/{namespace}/pods", body=body,
                             content_type="application/json", what=("create", "pods", namespace))

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
            resp = self._request(
                "GET", f"/api/v1/namespaces/{namespace}/pods",
                query=[("watch", "true"), ("fieldSelector", f"metadata.name={name}"),
                       ("resourceVersion", version), ("timeoutSeconds", str(remaining)),
                       ("allowWatchBookmarks", "false")],
                stream=True, timeout=remaining + 5, what=("watch", "pods", namespace))
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
            finally:
                resp.release_conn()

    def exec(self, namespace: str, pod: str, container: str, command: list[str], stdin: bool = False
             ) -> ExecChannel:
        """``stdin``: keep the process's stdin open (``ExecChannel.stop`` writes to it)."""
        query = [("command", c) for c in command] + [
            ("container", container), ("stdout", "true"), ("stderr", "true"),
            ("stdin", "true" if stdin else "false"), ("tty", "false")]
        try:
            return self.transport.exec(f"/api/v1/namespaces/{namespace}/pods/{pod}/exec", query)
        except Refused as exc:
            if _gone(exc.status, _message(exc.body)):
                raise NotFound(f"pod {pod} or its agent container {container} is gone ({_message(exc.body)})",
                               "run again: a new agent container will be added") from None
            raise api_error(exc.status, exc.body, ("create", "pods/exec", namespace)) from None
        except Unreachable as exc:
            raise AccessError(f"exec into {pod} failed: {str(exc)[:300]}",
                              "check that the API server can reach the node's kubelet (`kubectl logs` works?)"
                              ) from None

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
