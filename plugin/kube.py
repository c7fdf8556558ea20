"""The only module that talks to the Kubernetes API.

Built on the official client's ``ApiClient`` (kubeconfig loading, auth, TLS,
exec credential plugins) but requests raw JSON and returns plain dicts: model
deserialisation costs more than the requests themselves, and the rest of the
plugin only needs a few fields.  Every API failure becomes a ``SockdebugError``
subclass that names the cause and the fix.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any, Optional

from .errors import AccessError, AgentError, InjectError, SockdebugError, TargetError

# (resource path segment, API prefix) per workload kind accepted in TARGET.
WORKLOADS = {
    "deployments": "/apis/apps/v1", "statefulsets": "/apis/apps/v1", "daemonsets": "/apis/apps/v1",
    "replicasets": "/apis/apps/v1", "jobs": "/apis/batch/v1",
}
_SMP = "application/strategic-merge-patch+json"
_CONNECT_TIMEOUT = 10.0


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
    """Pod Security admission refused the ephemeral container's security context."""


def _message(body: bytes) -> str:
    try:
        return json.loads(body).get("message", "") or body.decode("utf-8", "replace")[:300]
    except ValueError:
        return body.decode("utf-8", "replace")[:300]


class Kube:
    """A client for one kubeconfig context."""

    def __init__(self, kubeconfig: Optional[str] = None, context: Optional[str] = None,
                 namespace: Optional[str] = None, request_timeout: float = 30.0):
        from .kubeclient import load  # the client's core only: see kubeclient.py

        k8s = self._k8s = load()
        self._timeout = request_timeout
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
                self.context = active["name"]
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                k8s.incluster.load_incluster_config(client_configuration=cfg)
                default_ns = _incluster_namespace() or "default"
                self.context = "in-cluster"
            else:
                raise AccessError("no kubeconfig found (KUBECONFIG is unset and ~/.kube/config does not exist)",
                                  "pass --kubeconfig PATH or set KUBECONFIG to your cluster's kubeconfig")
        except k8s.ConfigException as exc:
            raise AccessError(f"cannot use the kubeconfig: {exc}",
                              "check `kubectl config view`; pass --kubeconfig/--context") from None
        except OSError as exc:
            raise AccessError(f"cannot read the kubeconfig: {exc}", "pass --kubeconfig PATH") from None
        self.namespace = namespace or default_ns
        self.host = cfg.host
        self.api = k8s.ApiClient(cfg)

    # --- plumbing ---------------------------------------------------------------------

    def _request(self, method: str, path: str, *, query: Optional[list] = None, body: Any = None,
                 content_type: Optional[str] = None, stream: bool = False,
                 timeout: Optional[float] = None, what: tuple[str, str, Optional[str]] = ("get", "", None)):
        """One API call; returns the decoded JSON (or the raw response with ``stream``)."""
        from urllib3.exceptions import HTTPError

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        read_timeout = self._timeout if timeout is None else timeout
        try:
            resp = self.api.call_api(
                path, method, query_params=query or [], header_params=headers, body=body,
                auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
                _request_timeout=(_CONNECT_TIMEOUT, read_timeout))
        except self._k8s.ApiException as exc:
            raise self._api_error(exc.status, exc.body or b"", what) from None
        except HTTPError as exc:
            raise AccessError(f"the API server at {self.host} is unreachable ({_reason(exc)})",
                              "check the cluster is up and the kubeconfig's server address "
                              "(`kubectl cluster-info`)") from None
        if stream:
            return resp
        return json.loads(resp.data)

    def _api_error(self, status: int, body: bytes | str, what: tuple[str, str, Optional[str]]) -> SockdebugError:
        if isinstance(body, str):
            body = body.encode()
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
            return TargetError(f"{resource} not found{where}",
                               "check the name and the namespace (-n NAMESPACE)")
        if status == 422:
            return InjectError(f"the API server refused the request: {message}",
                               "this is likely a bug in sockdebug; please report it with -v output")
        return AccessError(f"the API server answered {status} to {verb} {resource}: {message}",
                           "retry; if it persists, check the API server's health")

    # --- reads ---------------------------------------------------------------------------

    def get_pod(self, namespace: str, name: str) -> dict:
        return self._request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}",
                             what=("get", f"pod {name}", namespace))

    def list_pods(self, namespace: Optional[str], selector: Optional[str] = None,
                  field_selector: Optional[str] = None) -> list[dict]:
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        query = [("labelSelector", selector)] if selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        return self._request("GET", path, query=query, what=("list", "pods", namespace))["items"]

    def get_workload(self, namespace: str, plural: str, name: str) -> dict:
        return self._request("GET", f"{WORKLOADS[plural]}/namespaces/{namespace}/{plural}/{name}",
                             what=("get", f"{plural[:-1]} {name}", namespace))

    def get_service(self, namespace: str, name: str) -> dict:
        return self._request("GET", f"/api/v1/namespaces/{namespace}/services/{name}",
                             what=("get", f"service {name}", namespace))

    def list_services(self, namespace: Optional[str]) -> list[dict]:
        path = f"/api/v1/namespaces/{namespace}/services" if namespace else "/api/v1/services"
        return self._request("GET", path, what=("list", "services", namespace))["items"]

    def list_namespaces(self) -> list[dict]:
        return self._request("GET", "/api/v1/namespaces", what=("list", "namespaces", None))["items"]

    def list_nodes(self) -> list[dict]:
        return self._request("GET", "/api/v1/nodes", what=("list", "nodes", None))["items"]

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
                                 body={"spec": {"ephemeralContainers": [container]}}, content_type=_SMP,
                                 what=("patch", "pods/ephemeralcontainers", namespace))
        except TargetError as exc:
            if f"pod {pod}" in exc.cause or "ephemeralcontainers" not in exc.cause:
                raise
            raise InjectError("this cluster does not support ephemeral containers (404 on the "
                              "ephemeralcontainers subresource)",
                              "ephemeral containers need Kubernetes >= 1.23 with the feature enabled") from None

    def create_pod(self, namespace: str, body: dict) -> dict:
        return self._request("POST", f"/api/v1/namespaces/{namespace}/pods", body=body,
                             content_type="application/json", what=("create", "pods", namespace))

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self._request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                          query=[("gracePeriodSeconds", "0")], what=("delete", f"pod {name}", namespace))
        except TargetError:
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

    def exec(self, namespace: str, pod: str, container: str, command: list[str]) -> ExecStream:
        headers: dict[str, str] = {}
        self.api.update_params_for_auth(headers, [], ["BearerToken"])
        query = [("command", c) for c in command] + [
            ("container", container), ("stdout", "true"), ("stderr", "true"), ("stdin", "false"),
            ("tty", "false")]
        url = f"{self.host}/api/v1/namespaces/{namespace}/pods/{pod}/exec"
        try:
            ws = self._k8s.websocket_call(self.api.configuration, "GET", url, query_params=query, headers=headers,
                                _preload_content=False, binary=True, capture_all=False)
        except self._k8s.ApiException as exc:
            raise _exec_error(exc.reason or "", namespace, pod) from None
        return ExecStream(ws)

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


def _exec_error(reason: str, namespace: str, pod: str) -> SockdebugError:
    if "403" in reason or "Forbidden" in reason:
        return Forbidden("create", "pods/exec", namespace, reason.strip()[:200])
    if "404" in reason:
        return TargetError(f"pod {pod} or its agent container is gone ({reason.strip()[:200]})",
                           "run again: a new agent container will be added")
    return AccessError(f"exec into {pod} failed: {reason.strip()[:300]}",
                       "check that the API server can reach the node's kubelet (`kubectl logs` works?)")


class ExecStream:
    """stdout of an exec as byte chunks as they arrive; stderr and the exit code after."""

    def __init__(self, ws: Any):
        self._ws = ws
        self.stderr = b""

    def chunks(self, deadline: float) -> Iterator[bytes]:
        ws = self._ws
        while ws.is_open():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ws.close()
                raise AgentError("the agent did not finish within --timeout",
                                 "raise --timeout, or narrow the query")
            ws.update(timeout=min(remaining, 5.0))
            data = ws.read_channel(1)
            if data:
                yield data
            err = ws.read_channel(2)
            if err:
                self.stderr += err
        data = ws.read_channel(1)
        if data:
            yield data
        self.stderr += ws.read_channel(2) or b""

    @property
    def returncode(self) -> Optional[int]:
        try:
            return self._ws.returncode
        except Exception:  # the status channel may be missing when the connection broke
            return None


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


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc).split(": ", 1)[-1][:200]
