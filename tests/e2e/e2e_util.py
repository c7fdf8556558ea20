"""What the plugin's e2e tests share: the images, `kubectl`, the plugin runner, `apply`.

The cluster is whatever KUBECONFIG points to (conftest.py skips e2e when none answers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Optional

import pytest
import yaml
from sockdebug_agent import __version__

IMAGE = os.environ.get("SOCKDEBUG_IMAGE", f"sockdebug-agent:{__version__}")
TESTAPP = os.environ.get("SOCKDEBUG_TESTAPP_IMAGE", f"sockdebug-testapp:{__version__}")
PULL = os.environ.get("SOCKDEBUG_PULL_POLICY", "IfNotPresent")
PLUGIN = shutil.which("kubectl-sockdebug")


def _env(kubeconfig: Optional[str]) -> dict[str, str]:
    env = dict(os.environ)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return env


def kubectl(*args: str, input: Optional[str] = None, check: bool = True, kubeconfig: Optional[str] = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", *args], input=input, text=True, capture_output=True, check=check,
                          env=_env(kubeconfig), timeout=timeout)


def plugin(*args: str, kubeconfig: Optional[str] = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """kubectl-sockdebug with the test images."""
    return subprocess.run([PLUGIN, *args, "--image", IMAGE, "--image-pull-policy", PULL], text=True,
                          capture_output=True, env=_env(kubeconfig), timeout=timeout)


def apply(*objs: dict) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))


def require_plugin_and_cluster() -> None:
    if PLUGIN is None:
        pytest.skip("kubectl-sockdebug is not on PATH (pip install -e '.[plugin]')")
    if kubectl("version", "--request-timeout=5s", check=False).returncode != 0:
        pytest.skip("no Kubernetes cluster answers at KUBECONFIG")


def wait_for(what: str, check: Callable[[], bool], timeout: float = 180) -> None:
    """Poll ``check`` every second until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")
