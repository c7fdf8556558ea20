"""Shared parts of the fault-injection tests (tests/integration/test_faults_*.py): the
real agent run under a fault, the checks every case makes on what it wrote, and the
namespaces and processes the faults need.

Every case asserts the same contract: no traceback on stderr, only whole JSON lines on
stdout, ``hello`` first, ``end`` last (when stdout still works) with the process's exit
code and the count of every record before it, and the documented exit code.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_fixture import TestNamespace

AGENT = [sys.executable, "-m", "sockdebug_agent"]
HOSTILE = Path(__file__).parent / "helpers" / "hostile.py"
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
DEBIAN_PYTHON = "/usr/bin/python3"  # python3-minimal: where a root-only interpreter cannot be used


def _usable_by_others(path: str) -> bool:
    """Every directory above ``path`` searchable by other users, and ``path`` executable."""
    real = Path(os.path.realpath(path))
    return all(p.stat().st_mode & 0o001 for p in real.parents) and bool(real.stat().st_mode & 0o001)


@functools.cache  # one staging folder per run, removed at exit
def as_nobody_python() -> list[str]:
    """An interpreter and import path that uid 65534 can use, then ``-m sockdebug_agent``.

    CI's Python may live under root's 0700 home (pyenv), and the editable install's
    path hook with it: the agent then runs under Debian's python3 with PYTHONPATH
    pointing at a world-readable link to this checkout's agent package."""
    import sockdebug_agent

    python = sys.executable if _usable_by_others(sys.executable) else DEBIAN_PYTHON
    if not _usable_by_others(python):
        pytest.skip(f"no interpreter uid 65534 may run ({sys.executable}, {DEBIAN_PYTHON})")
    stage = Path(tempfile.mkdtemp(prefix="sdf-path-"))
    atexit.register(shutil.rmtree, stage, True)
    stage.chmod(0o755)
    (stage / "sockdebug_agent").symlink_to(Path(sockdebug_agent.__file__).parent)
    return ["env", f"PYTHONPATH={stage}", python, "-m", "sockdebug_agent"]
PER_HOLDER = 7000  # connections per holder process: 14,001 fds, under the 20,000 a process may hold


def needs(*tools: str):
    """Skip unless root and every tool is installed (scripts/setup installs them)."""
    missing = [t for t in tools if shutil.which(t) is None]
    why = f"needs root and {', '.join(tools)}" + (f" (missing: {missing})" if missing else "")
    return pytest.mark.skipif(os.geteuid() != 0 or bool(missing), reason=why)


class Run:
    """One finished run: its exit code, its records (also by type) and its stderr."""

    def __init__(self, returncode: int, records: list[dict], stderr: str) -> None:
        self.returncode, self.records, self.stderr = returncode, records, stderr
        self.by_type: dict[str, list[dict]] = {}
        for record in records:
            self.by_type.setdefault(record["type"], []).append(record)

    def of_type(self, kind: str) -> list[dict]:
        return self.by_type.get(kind, [])

    def codes(self, kind: str = "warning") -> list[str]:
        return [r["code"] for r in self.of_type(kind)]

    @property
    def error(self) -> dict:
        (error,) = self.of_type("error")
        return error


def check(stdout: bytes, stderr: bytes, returncode: int, *, framed: bool = True) -> Run:
    """The contract above; ``framed``: stdout worked to the end, so ``end`` must be there."""
    err = stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    records: list[dict] = []
    if stdout:
        assert stdout.endswith(b"\n"), f"a partial line at the end: {stdout[-300:]!r}"
        records = [json.loads(line) for line in stdout.split(b"\n")[:-1]]
        assert records[0]["type"] == "hello", records[0]
    if framed:
        assert records and records[-1]["type"] == "end", records[-1:] or err
        end = records[-1]
        assert end["exit_code"] == returncode, (end, err)
        assert end["records"] == dict(Counter(r["type"] for r in records[:-1])), end
        assert all(isinstance(r, dict) and r.get("type") for r in records)
    return Run(returncode, records, err)


def run(*args: str, prefix: tuple[str, ...] = (), env: dict | None = None, timeout: float = 120,
        framed: bool = True, **popen) -> Run:
    """``sockdebug-agent ARGS`` (after ``prefix``, e.g. prlimit or unshare) to completion."""
    full_env = {**os.environ, **(env or {})}
    popen.setdefault("stdout", subprocess.PIPE)
    agent = as_nobody_python() if "--reuid" in prefix else AGENT
    proc = subprocess.run([*prefix, *agent, *args], stderr=subprocess.PIPE, timeout=timeout, env=full_env, **popen)
    return check(proc.stdout or b"", proc.stderr, proc.returncode, framed=framed)


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sockdebug-agent: "), stderr
    return lines[0]


@contextlib.contextmanager
def many_sockets(holders: int = 3, prefix: str = "sdf") -> Iterator[TestNamespace]:
    """A namespace holding ``holders`` * 14,001 TCP sockets (loopback connections)."""
    ns = TestNamespace(prefix)
    try:
        for i in range(holders):
            ns.spawn([sys.executable, str(HOSTILE), "many", str(9000 + i), str(PER_HOLDER)], 120)
        yield ns
    finally:
        ns.close()


def many_count(holders: int = 3) -> int:
    return holders * (2 * PER_HOLDER + 1)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sdf-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


NETLINK_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

/* socket(AF_NETLINK, ...) fails, as under a seccomp profile or LSM that denies it. */
int socket(int domain, int type, int protocol) {
    static int (*real)(int, int, int);
    if (domain == AF_NETLINK) {
        const char *e = getenv("SOCKDEBUG_TEST_NETLINK_ERRNO");
        errno = e ? atoi(e) : EACCES;
        return -1;
    }
    if (!real)
        real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    return real(domain, type, protocol);
}
"""


def build_netlink_shim(into: Path) -> Path:
    """The LD_PRELOAD library above, compiled with gcc."""
    source, library = into / "no_netlink.c", into / "no_netlink.so"
    source.write_text(NETLINK_SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"], check=True,
                   capture_output=True, timeout=120)
    return library
