"""A network namespace made by a test, the helper processes it runs there, and one
``close`` that undoes both (shared by the namespace fixtures of tests/integration)."""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess


class TestNamespace:
    """``ip netns add PREFIX-<random>``; helpers started with ``spawn`` run in their own
    process group and are killed with it by ``close``, which also deletes the namespace."""

    __test__ = False  # not a test class, whatever pytest's name pattern says

    def __init__(self, prefix: str, loopback_up: bool = True) -> None:
        self.name = f"{prefix}-{secrets.token_hex(3)}"
        self.procs: list[subprocess.Popen] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, timeout=30)
        if loopback_up:
            try:
                self.ip("link", "set", "lo", "up")
            except BaseException:
                self.close()
                raise

    def ip(self, *args: str) -> str:
        return subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True, text=True,
                              timeout=30).stdout

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True,
                              check=check, timeout=60)

    def exec(self, *cmd: str) -> str:
        return self.run(*cmd).stdout

    def spawn(self, argv: list[str], timeout: float = 30.0, enter: list[str] | None = None) -> dict:
        """Start ``argv`` in the namespace and return what it reports on its
        ``ready {json}`` line.  ``enter`` is the command that runs argv there (default
        ``ip netns exec NAME``, which also remounts /sys)."""
        enter = ["ip", "netns", "exec", self.name] if enter is None else enter
        proc = subprocess.Popen([*enter, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            proc.kill()
            raise RuntimeError(f"helper {argv[1:]} did not start: {line!r} {proc.stderr.read()[-2000:]}")
        return json.loads(line[len("ready "):])

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
