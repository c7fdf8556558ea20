"""A private network namespace with known sockets, held open by helper processes.

``sock_ns`` (one per test module) runs ``ip netns add sdt-<random>``, brings ``lo``
up, and starts ``helpers/open_sockets.py`` twice inside it (roles ``main`` and
``peer``; see that file for the sockets).  Teardown always kills the helpers'
process groups and deletes the namespace, even when setup failed half-way.
Needs root and ``ip``; skipped with a reason otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HELPER = Path(__file__).parent / "helpers" / "open_sockets.py"
READY_TIMEOUT = 30.0


def _why_not_runnable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    for tool in ("ip", "ss"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (iproute2)"
    return None


@dataclass
class SockNamespace:
    name: str
    workdir: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    info: dict[str, dict] = field(default_factory=dict)  #: role -> what the helper reported
    created: float = field(default_factory=time.monotonic)

    @property
    def pids(self) -> set[int]:
        """Every helper process (the peer's forked child too)."""
        out = {i["pid"] for i in self.info.values()}
        if "peer" in self.info:
            out.add(self.info["peer"]["child_pid"])
        return out

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True,
                              check=check, timeout=60)

    def ss(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.exec("ss", *args, check=check)

    def start(self, role: str) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, str(HELPER), role, self.workdir],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            proc.kill()
            raise RuntimeError(f"helper {role} did not start: {line!r} {proc.stderr.read()[-2000:]}")
        self.info[role] = json.loads(line[len("ready "):])

    def close(self) -> None:
        for proc in self.procs:
            try:  # the helper's own group: it and any child it forked
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            finally:
                for stream in (proc.stdout, proc.stderr):
                    if stream:
                        stream.close()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def sock_ns():
    why = _why_not_runnable()
    if why:
        pytest.skip(why)
    name = "sdt-" + secrets.token_hex(4)
    ns = SockNamespace(name, tempfile.mkdtemp(prefix=name + "-"))
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True,
                       timeout=30)
        # SYN-SENT clients keep retrying for minutes, not ~2 (per-netns sysctl).
        ns.exec("sysctl", "-qw", "net.ipv4.tcp_syn_retries=9")
        ns.start("main")
        ns.start("peer")
        yield ns
    finally:
        ns.close()
