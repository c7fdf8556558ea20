"""The plugin's one exception hierarchy; the CLI edge maps each to a cause line, a hint
line and an exit code (the same codes as the agent's, see docs/exit-codes.md)."""

from __future__ import annotations

from typing import Optional

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_ACCESS = 3
EXIT_TARGET = 4
EXIT_INJECT = 5
EXIT_AGENT = 6


class SockdebugError(Exception):
    """A failure with a one-line cause and a one-line fix."""

    exit_code = EXIT_AGENT

    def __init__(self, cause: str, hint: Optional[str] = None):
        super().__init__(cause)
        self.cause, self.hint = cause, hint


class UsageError(SockdebugError):
    exit_code = EXIT_USAGE


class AccessError(SockdebugError):
    """No kubeconfig or context, API server unreachable, Forbidden."""

    exit_code = EXIT_ACCESS


class TargetError(SockdebugError):
    """Pod, workload or container not found, or not running."""

    exit_code = EXIT_TARGET


class InjectError(SockdebugError):
    """The agent container could not be started: Pod Security, image pull, timeout."""

    exit_code = EXIT_INJECT


class AgentError(SockdebugError):
    """The agent failed, or its stream broke."""

    exit_code = EXIT_AGENT


class FindingsError(SockdebugError):
    """Findings at or above --fail-on (sweep, triage)."""

    exit_code = EXIT_FINDINGS
