"""The plugin's exceptions and exit codes: the one hierarchy shared with the agent
(``sockdebug_agent.errors``), re-exported so the plugin imports them from here.  The CLI
edge maps each to a cause line, a hint line and its exit code (docs/exit-codes.md)."""

from __future__ import annotations

from sockdebug_agent.errors import (
    EXIT_ACCESS,
    EXIT_AGENT,
    EXIT_FINDINGS,
    EXIT_INJECT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_TARGET,
    EXIT_USAGE,
    AccessError,
    AgentError,
    FindingsError,
    InjectError,
    Interrupted,
    OutputError,
    SockdebugError,
    TargetError,
    UsageError,
)

__all__ = [
    "EXIT_ACCESS", "EXIT_AGENT", "EXIT_FINDINGS", "EXIT_INJECT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_OUTPUT",
    "EXIT_TARGET", "EXIT_USAGE", "AccessError", "AgentError", "FindingsError", "InjectError", "Interrupted",
    "OutputError", "SockdebugError", "TargetError", "UsageError",
]
