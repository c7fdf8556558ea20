"""The shell scripts stay shellcheck-clean (scripts/setup installs shellcheck)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from test_setup_commands import REPO, shell_scripts


def test_scripts_are_found():
    names = {p.relative_to(REPO).as_posix() for p in shell_scripts()}
    assert {"hack/local-cluster", "scripts/setup", "scripts/test", "scripts/lib.sh", ".ci/run"} <= names, names


@pytest.mark.parametrize("script", [p.relative_to(REPO).as_posix() for p in shell_scripts()])
def test_shellcheck_clean(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/setup installs it)")
    proc = subprocess.run(["shellcheck", "-x", "-f", "gcc", script], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
