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
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Any, NamedTuple

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
