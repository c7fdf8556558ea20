"""A private network namespace with known sockets, held open by helper processes.

``sock_ns`` (one per test module) runs ``ip netns add sdt-<random>``, brings ``lo``
up, and starts ``helpers/open_sockets.py`` twice inside it (roles ``main`` and
``peer``; see that file for the sockets).  Teardown always kills the helpers'
process groups and deletes the namespace, even when setup failed half-way.
Needs root and ``ip``; skipped with a reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from netns_fixture import TestNamespace

HELPER = Path(__file__).parent / "helpers" / "open_sockets.py"
READY_TIMEOUT = 30.0


def _why_not_runnable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    for tool in ("ip", "ss"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (iproute2)"
    return None


class SockNamespace(TestNamespace):
    def __init__(self) -> None:
        super().__init__("sdt")
        self.workdir = tempfile.mkdtemp(prefix=self.name + "-")
        self.info: dict[str, dict] = {}  #: role -> what the helper reported

    @property
    def pids(self) -> set[int]:
        """Every helper process (the peer's forked child too)."""
        out = {i["pid"] for i in self.info.values()}
        if "peer" in self.info:
            out.add(self.info["peer"]["child_pid"])
        return out

    def ss(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("ss", *args, check=check)

    def start(self, role: str) -> None:
        self.info[role] = self.spawn([sys.executable, str(HELPER), role, self.workdir], READY_TIMEOUT)

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def sock_ns():
    why = _why_not_runnable()
    if why:
        pytest.skip(why)
    ns = SockNamespace()
    try:
        # SYN-SENT clients keep retrying for minutes, not ~2 (per-netns sysctl).
        ns.exec("sysctl", "-qw", "net.ipv4.tcp_syn_retries=9")
        ns.start("main")
        ns.start("peer")
        yield ns
    finally:
        ns.close()
