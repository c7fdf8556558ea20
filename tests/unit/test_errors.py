"""One exception hierarchy and one set of exit codes for the agent and the plugin."""

from __future__ import annotations

import pytest
from sockdebug_agent import errors as agent_errors
from sockdebug_plugin import errors as plugin_errors

EXPECTED = {  # class -> (exit code, agent error.code slug, parent)
    "SockdebugError": (6, "error", Exception),
    "FindingsError": (1, "findings", "SockdebugError"),
    "UsageError": (2, "usage", "SockdebugError"),
    "AccessError": (3, "access", "SockdebugError"),
    "TargetError": (4, "target", "SockdebugError"),
    "InjectError": (5, "inject", "SockdebugError"),
    "AgentError": (6, "agent-error", "SockdebugError"),
    "NamespaceError": (6, "namespace", "AgentError"),
    "KernelError": (6, "kernel", "AgentError"),
    "ResourceError": (6, "resource", "AgentError"),
    "OutputError": (7, "output", "SockdebugError"),
    "Interrupted": (130, "interrupted", "SockdebugError"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classes_codes_and_parents(name):
    exit_code, slug, parent = EXPECTED[name]
    cls = getattr(agent_errors, name)
    assert (cls.exit_code, cls.code) == (exit_code, slug)
    assert cls.__bases__ == ((getattr(agent_errors, parent),) if isinstance(parent, str) else (parent,))
    exc = cls("it broke", "do this")
    assert (exc.cause, exc.message, exc.hint, str(exc)) == ("it broke", "it broke", "do this", "it broke")
    assert cls("no hint").hint is None


def test_the_plugin_re_exports_the_same_objects():
    for name in plugin_errors.__all__:
        assert getattr(plugin_errors, name) is getattr(agent_errors, name), name
    assert {n for n in plugin_errors.__all__ if not n.startswith("EXIT_")} >= {
        "SockdebugError", "UsageError", "AccessError", "TargetError", "InjectError", "AgentError", "FindingsError"}


def test_exit_codes():
    codes = {n: getattr(agent_errors, n) for n in dir(agent_errors) if n.startswith("EXIT_")}
    assert codes == {"EXIT_OK": 0, "EXIT_FINDINGS": 1, "EXIT_USAGE": 2, "EXIT_ACCESS": 3, "EXIT_TARGET": 4,
                     "EXIT_INJECT": 5, "EXIT_AGENT": 6, "EXIT_OUTPUT": 7, "EXIT_INTERRUPTED": 130}


def test_the_agent_maps_any_sockdebug_error_to_its_record(monkeypatch, capfd):
    """A UsageError is no longer an AgentError: the agent's edge still frames it."""
    import json

    from sockdebug_agent import cli

    def boom(args, out, backend):
        raise agent_errors.ResourceError("cannot start a thread", "raise ulimit -u")

    monkeypatch.setitem(cli.COMMANDS, "summary", boom)
    assert cli.main(["summary"]) == 6
    captured = capfd.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["type"] for r in records] == ["hello", "error", "end"]
    assert records[1]["code"] == "resource" and records[1]["message"] == "cannot start a thread"
    assert captured.err.splitlines() == ["sockdebug-agent: cannot start a thread", "hint: raise ulimit -u"]
