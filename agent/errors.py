"""The agent's exceptions, each with the exit code the CLI maps it to.

Exit codes are shared with the plugin (docs/exit-codes.md): 2 usage or filter syntax,
6 agent failure, 7 stdout unusable, 130 interrupted.
"""

from __future__ import annotations

from typing import Optional

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_ACCESS = 3
EXIT_TARGET = 4
EXIT_INJECT = 5
EXIT_AGENT = 6
EXIT_OUTPUT = 7
EXIT_INTERRUPTED = 130


class SockdebugError(Exception):
    """A failure that ends the run with a cause and a hint, never a traceback."""

    code = "agent-error"
    exit_code = EXIT_AGENT

    def __init__(self, cause: str, hint: Optional[str] = None):
        super().__init__(cause)
        self.cause, self.hint = cause, hint

    @property
    def message(self) -> str:
        return self.cause


class AgentError(SockdebugError):
    """The agent itself could not do its work (psutil missing on the psutil path)."""


class UsageError(SockdebugError):
    code = "usage"
    exit_code = EXIT_USAGE


class NamespaceError(SockdebugError):
    code = "namespace"
    exit_code = EXIT_AGENT


class KernelError(SockdebugError):
    """Netlink or /proc answered something we cannot use, or is not there."""

    code = "kernel"
    exit_code = EXIT_AGENT


class ResourceError(SockdebugError):
    """A limit of this process (RLIMIT_AS, RLIMIT_NPROC, RLIMIT_NOFILE) or of the machine ran out."""

    code = "resource"
    exit_code = EXIT_AGENT


class OutputError(SockdebugError):
    """stdout is closed, full or a broken pipe: no record can be written any more."""

    code = "output"
    exit_code = EXIT_OUTPUT


class Interrupted(SockdebugError):
    """SIGINT (Ctrl-C): the stream ends after the last whole line."""

    code = "interrupted"
    exit_code = EXIT_INTERRUPTED
