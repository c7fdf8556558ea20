"""sockdebug's one exception hierarchy and its exit codes, for the agent and the plugin.

Every failure is a ``SockdebugError`` with a one-line ``cause`` and a one-line ``hint``
(what to do); each program maps it to its ``exit_code`` at its edge and prints the two
lines, never a traceback.  ``code`` is the slug the agent writes in its ``error`` record.
The plugin re-exports these names (``sockdebug_plugin.errors``); the codes are listed in
docs/exit-codes.md.  Standard library only: the agent imports it at start-up.
"""

from __future__ import annotations

from typing import Optional

EXIT_OK = 0
EXIT_FINDINGS = 1  #: findings at or above --fail-on
EXIT_USAGE = 2  #: usage, filter syntax
EXIT_ACCESS = 3  #: cluster access (plugin)
EXIT_TARGET = 4  #: Kubernetes target not found or not running (plugin)
EXIT_INJECT = 5  #: the agent container could not be started (plugin)
EXIT_AGENT = 6  #: the agent failed, or its stream broke
EXIT_OUTPUT = 7  #: stdout could not be written: closed, full, broken pipe
EXIT_INTERRUPTED = 130  #: Ctrl-C / SIGINT (the shell's convention, 128 + 2)


class SockdebugError(Exception):
    """A failure with a one-line cause and a one-line fix."""

    code = "error"  #: the agent's ``error.code`` slug
    exit_code = EXIT_AGENT

    def __init__(self, cause: str, hint: Optional[str] = None):
        super().__init__(cause)
        self.cause, self.hint = cause, hint

    @property
    def message(self) -> str:
        """The cause (the agent's records call it ``message``)."""
        return self.cause


class FindingsError(SockdebugError):
    """Findings at or above --fail-on (sweep, triage)."""

    code = "findings"
    exit_code = EXIT_FINDINGS


class UsageError(SockdebugError):
    """A bad flag, option value or filter: fixable on the command line."""

    code = "usage"
    exit_code = EXIT_USAGE


class AccessError(SockdebugError):
    """No kubeconfig or context, API server unreachable, Forbidden."""

    code = "access"
    exit_code = EXIT_ACCESS


class TargetError(SockdebugError):
    """Pod, workload or container not found, or not running."""

    code = "target"
    exit_code = EXIT_TARGET


class InjectError(SockdebugError):
    """The agent container could not be started: Pod Security, image pull, timeout."""

    code = "inject"
    exit_code = EXIT_INJECT


class AgentError(SockdebugError):
    """The agent failed (raised by the agent itself), or its stream broke (plugin)."""

    code = "agent-error"
    exit_code = EXIT_AGENT


class NamespaceError(AgentError):
    """--netns / --target-pid: no such namespace, not allowed, or setns failed."""

    code = "namespace"


class KernelError(AgentError):
    """Netlink or /proc answered something the agent cannot use."""

    code = "kernel"


class PermissionDenied(AgentError):
    """The kernel refused something the command needs; the message names the capability."""

    code = "permission"


class ResourceError(AgentError):
    """A process limit was reached (memory, threads, file descriptors)."""

    code = "resource"


class OutputError(SockdebugError):
    """stdout could not be written: closed, full, or a broken pipe."""

    code = "output"
    exit_code = EXIT_OUTPUT


class Interrupted(SockdebugError):
    """SIGINT (Ctrl-C)."""

    code = "interrupted"
    exit_code = EXIT_INTERRUPTED
