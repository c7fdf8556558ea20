"""Shared test helpers: run the agent as a user would and read its JSON Lines."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from dataclasses import dataclass

import pytest

AGENT = [sys.executable, "-m", "sockdebug_agent"]


@dataclass
class AgentRun:
    returncode: int
    records: list[dict]
    stderr: str

    def of_type(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["type"] == kind]

    @property
    def sockets(self) -> list[dict]:
        return self.of_type("socket")


def agent_run(*args: str, timeout: float = 60) -> AgentRun:
    """Run ``sockdebug-agent ARGS`` and check the stream is framed: every line is one
    JSON object, ``hello`` first, ``end`` last with the process's exit code."""
    proc = subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=timeout)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert records and records[0]["type"] == "hello", proc.stdout[:500]
    assert records[-1]["type"] == "end" and records[-1]["exit_code"] == proc.returncode, records[-1]
    return AgentRun(proc.returncode, records, proc.stderr)


@pytest.fixture
def run_agent():
    return agent_run


def agent_on_terminal(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run ``sockdebug-agent ARGS`` with its stdout on a pseudo-terminal, as a person at a
    shell would (stderr stays a pipe): (exit code, what the terminal showed, stderr)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*AGENT, *args], stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(follower)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"sockdebug-agent {args} wrote nothing for {timeout}s")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the agent closed its end
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert "Traceback" not in stderr, stderr
    return proc.wait(timeout), out.decode().replace("\r\n", "\n"), stderr


@pytest.fixture
def agent_tty():
    return agent_on_terminal
