"""The official Kubernetes client's core, imported without its generated APIs and models.

``import kubernetes`` runs ``kubernetes/client/__init__.py``, which imports every
generated API and model module (~800 files, ~0.2 s here) — more than a warm
``kubectl sockdebug`` query takes in total.  The plugin uses only the client's
core: ``Configuration``, ``ApiClient`` (raw JSON requests, auth, TLS, exec
credential plugins), the kubeconfig and in-cluster loaders and the websocket exec
client.  So the package ``__init__`` files are skipped: their modules are
registered empty (with their real ``__path__``), and only the submodules we need
are imported, by the normal import machinery.

This leans on the client's layout, hence the pinned major version in
pyproject.toml; if anything about it differs, ``load`` falls back to the plain
(slow) import, so a client upgrade costs speed, never correctness.

``ClientTransport`` is the transport ``kube.Kube`` uses in real runs.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import sys
import time
import types
from collections.abc import Iterator
from typing import Any, NamedTuple, Optional

# Packages whose __init__ is skipped; each maps to its folder under kubernetes/.
_SKIPPED = ("", "client", "client.api", "client.models", "config", "stream")


class Client(NamedTuple):
    ApiClient: Any
    Configuration: Any
    ApiException: Any
    ConfigException: Any
    kube_config: Any  #: kubernetes.config.kube_config (list_kube_config_contexts, load_kube_config)
    incluster: Any  #: kubernetes.config.incluster_config
    websocket_call: Any  #: kubernetes.stream.ws_client.websocket_call


def _register_empty_packages() -> None:
    spec = importlib.util.find_spec("kubernetes")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the kubernetes client is not installed (pip install 'sockdebug[plugin]')")
    root = next(iter(spec.submodule_search_locations))
    for sub in _SKIPPED:
        name = "kubernetes" + (f".{sub}" if sub else "")
        module = types.ModuleType(name)
        module.__path__ = [os.path.join(root, *sub.split("."))] if sub else [root]
        module.__package__ = name
        sys.modules[name] = module


def _core() -> Client:
    from kubernetes.client import api_client, configuration, exceptions

    client_pkg = sys.modules["kubernetes.client"]
    # What the loaders import from the (skipped) package __init__.
    client_pkg.ApiClient = api_client.ApiClient  # type: ignore[attr-defined]
    client_pkg.Configuration = configuration.Configuration  # type: ignore[attr-defined]
    from kubernetes.config import config_exception, incluster_config, kube_config
    from kubernetes.stream import ws_client

    return Client(api_client.ApiClient, configuration.Configuration, exceptions.ApiException,
                  config_exception.ConfigException, kube_config, incluster_config, ws_client.websocket_call)


def load() -> Client:
    if "kubernetes" not in sys.modules:
        saved = dict(sys.modules)
        try:
            _register_empty_packages()
            return _core()
        except (ImportError, AttributeError):
            for name in set(sys.modules) - set(saved):  # undo, then import the ordinary way
                del sys.modules[name]
            sys.modules.update(saved)
    import kubernetes  # noqa: F401 - the full package: slow, but complete

    return _core()


# --- the transport kube.Kube uses in real runs ------------------------------------------------

_CONNECT_TIMEOUT = 10.0


class ClientTransport:
    """HTTP requests and WebSocket execs through the official client's ``ApiClient``
    (kubeconfig auth, TLS, exec credential plugins); raw bytes in and out."""

    def __init__(self, k8s: Client, configuration: Any):
        self._k8s = k8s
        self.api = k8s.ApiClient(configuration)
        self.host = configuration.host

    def request(self, method: str, path: str, *, query: list, headers: dict[str, str], body: Any,
                timeout: float, stream: bool) -> Any:
        from urllib3.exceptions import HTTPError

        from .kube import Unreachable

        try:
            resp = self.api.call_api(
                path, method, query_params=query, header_params=headers, body=body,
                auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
                _request_timeout=(_CONNECT_TIMEOUT, timeout))
            if not stream:
                resp.data  # noqa: B018 - read it here, where a connection that breaks mid-body is recognised
                return resp
            return Streamed(resp)
        except self._k8s.ApiException as exc:
            if not exc.status:  # the client's wrapping of a TLS failure
                raise Unreachable(_reason(exc)) from None
            return _Failed(exc.status, exc.body or b"", exc.headers)
        except HTTPError as exc:
            raise Unreachable(_reason(exc), _broke(exc)) from None

    def exec(self, path: str, query: list) -> WebSocketExec:
        from .kube import Refused, Unreachable

        headers: dict[str, str] = {}
        self.api.update_params_for_auth(headers, [], ["BearerToken"])
        try:
            ws = self._k8s.websocket_call(self.api.configuration, "GET", f"{self.host}{path}", query_params=query,
                                          headers=headers, _preload_content=False, binary=True, capture_all=False)
        except self._k8s.ApiException as exc:
            reason = str(exc.reason or "")
            status = re.search(r"[Hh]andshake status (\d{3})", reason)
            if status:
                wait = _RETRY_AFTER.search(reason)
                raise Refused(int(status.group(1)), _handshake_body(reason),
                              {"Retry-After": wait.group(1)} if wait else None) from None
            raise Unreachable(reason.strip()[:300], bool(_BROKE.search(reason))) from None
        return WebSocketExec(ws)


class Streamed:
    """A streamed answer (a watch, logs) whose broken connection mid-stream is an
    ``Unreachable`` (transient), not a urllib3 exception."""

    def __init__(self, resp: Any):
        self._resp = resp
        self.status, self.headers = resp.status, resp.headers

    @property
    def data(self) -> bytes:
        return self._guard(lambda: [self._resp.data])[0]

    def stream(self, amt: int) -> Iterator[bytes]:
        return self._guarded(self._resp.stream(amt))

    def __iter__(self) -> Iterator[bytes]:
        return self._guarded(iter(self._resp))

    def release_conn(self) -> None:
        self._resp.release_conn()

    def shutdown(self) -> None:
        """End the stream from another thread: a blocked read returns (urllib3 >= 2.3
        shuts the socket down; before that, closing is the best there is)."""
        getattr(self._resp, "shutdown", self._resp.close)()

    def _guarded(self, it: Iterator[bytes]) -> Iterator[bytes]:
        while True:
            chunk = self._guard(lambda: list(itertools.islice(it, 1)))
            if not chunk:
                return
            yield chunk[0]

    @staticmethod
    def _guard(read: Any) -> Any:
        from urllib3.exceptions import HTTPError

        from .kube import Unreachable

        try:
            return read()
        except HTTPError as exc:
            raise Unreachable(_reason(exc), True) from None


class _Failed:
    """An HTTP error answer, shaped like the urllib3 response kube.Kube reads."""

    def __init__(self, status: int, body: Any, headers: Any = None):
        self.status = status
        self.data = body.encode() if isinstance(body, str) else bytes(body)
        self.headers = headers or {}

    def release_conn(self) -> None:
        pass


# A websocket handshake that broke after the connection was made (the client flattens
# every failure into text), and the Retry-After header of a refused one.
_BROKE = re.compile(r"reset|broken pipe|timed out|connection (?:is already )?closed|EOF|aborted|"
                    r"remote end closed", re.I)
_RETRY_AFTER = re.compile(r"""['"]retry-after['"]\s*:\s*['"](\d+)['"]""", re.I)


def _broke(exc: Exception) -> bool:
    """urllib3: the connection broke after it was made (reset, closed before the answer,
    read timeout): another attempt may work.  Refused, DNS, TLS and connect timeouts: no."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError

    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    return isinstance(exc, (ProtocolError, ReadTimeoutError)) and not isinstance(exc, NewConnectionError)


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc).split(": ", 1)[-1][:200]


def _handshake_body(reason: str) -> bytes:
    """The body of a refused exec upgrade, from the client's error text: websocket-client's
    ``Handshake status N ... -+-+- HEADERS -+-+- b'BODY'``, where the client may already
    have turned a JSON Status into a Python dict's repr."""
    import ast
    import json

    text = reason.rsplit("-+-+-", 1)[-1].strip()
    try:
        body = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text.encode()
    if isinstance(body, dict):
        return json.dumps(body).encode()
    return body if isinstance(body, bytes) else str(body).encode()


class WebSocketExec:
    """stdout of a WebSocket exec as byte chunks as they arrive; stderr and the exit code after."""

    def __init__(self, ws: Any):
        self._ws = ws
        self.stderr = b""

    def chunks(self, deadline: float) -> Iterator[bytes]:
        from .kube import deadline_error

        ws = self._ws
        while ws.is_open():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ws.close()
                raise deadline_error()
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

    def stop(self) -> None:
        try:
            self._ws.write_stdin(b"\n")  # websocket-client sends under its own lock: safe beside a reader
        except Exception:  # the connection is gone: so is the stream
            pass

    def close(self) -> None:
        try:
            self._ws.close()
        except Exception:  # closing a broken socket: nothing left to save
            pass
