"""The agent's exceptions, each with the exit code the CLI maps it to.

Exit codes are shared with the plugin: 2 usage or filter syntax, 6 agent failure.
"""

from __future__ import annotations

from typing import Optional

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_AGENT = 6


class AgentError(Exception):
    """A failure that ends the run with a cause and a hint, never a traceback."""

    code = "agent-error"
    exit_code = EXIT_AGENT

    def __init__(self, message: str, hint: Optional[str] = None):
        super().__init__(message)
        self.message, self.hint = message, hint


class UsageError(AgentError):
    code = "usage"
    exit_code = EXIT_USAGE


class NamespaceError(AgentError):
    code = "namespace"


class KernelError(AgentError):
    """Netlink or /proc answered something we cannot use."""

    code = "kernel"


class PermissionDenied(AgentError):
    """The kernel refused something the command needs; the message names the capability."""

    code = "permission"
