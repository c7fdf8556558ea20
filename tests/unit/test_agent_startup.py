"""The agent's start-up budget (bench/results/startup.md): what a `sockets` run imports and
builds before its first socket.  Asserted on modules and objects, never on time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from sockdebug_agent import cli

# Imported only by the commands, flags or fallbacks that need them (lazily, in the function
# that does): a `sockets` run of a Linux kernel with sock_diag must not pay for them.
NOT_FOR_SOCKETS = (
    "psutil",  # --psutil and off Linux (inspectors/portable.py)
    "shutil",  # argparse's help width (cli._HelpFormatter)
    "ctypes",  # --netns / --target-pid on Python < 3.12 (namespaces.enter)
    "dataclasses", "inspect",  # limits, triage
    "ipaddress",  # triage
    "signal",  # `_signal` (cli.py, serve.py): the same functions without their enums
    "socket", "selectors",  # `_socket` where only its constants and functions are needed; name look-ups (filter.py)
    "unicodedata",  # tables on a terminal (render.py)
    "sockdebug_agent.render",
    "sockdebug_agent.triage",
    "sockdebug_agent.inspectors.procnet",  # /proc fallback, when a diag module is missing
    "sockdebug_agent.inspectors.events",
    "sockdebug_agent.inspectors.limits",
    "sockdebug_agent.inspectors.portable",
)

RUN = """
import gc, json, os, sys
before = set(sys.modules)  # site's (an editable install's finder imports pathlib, ipaddress, ...)
from sockdebug_agent import start  # the console script's entry
collector_off = not gc.isenabled()
from sockdebug_agent import cli
argv = sys.argv[1:]
fd = os.dup(1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the stream itself is not what is checked
code = cli.main(argv)
os.dup2(fd, 1)
print(json.dumps({"code": code, "modules": sorted(set(sys.modules) - before), "collector_off": collector_off}))
"""


def _run(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-I", "-c", RUN, *argv], capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("argv", [["sockets", "-ta"], ["sockets", "-tap"], ["sockets", "-tn", "state", "listening"]])
def test_a_sockets_run_imports_only_what_it_uses(argv):
    result = _run(*argv)
    assert result["code"] == 0
    assert not [m for m in NOT_FOR_SOCKETS if m in result["modules"]]
    assert result["collector_off"]  # start.py: before the agent's modules are imported


def test_the_lazy_modules_are_still_imported_when_needed():
    """The check above would pass for modules no command imported any more: `triage` does
    import its own (``before`` hides those an editable install's site imports, ipaddress)."""
    result = _run("triage")
    assert {"sockdebug_agent.triage", "sockdebug_agent.inspectors.limits", "dataclasses"} <= set(result["modules"])


def test_importing_the_schema_keeps_the_collector_on():
    """The plugin imports sockdebug_agent.schema: only the agent's entry switches GC off."""
    code = "import gc; import sockdebug_agent.schema, sockdebug_agent.cli; print(gc.isenabled())"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True"


def test_only_the_command_run_gets_a_parser():
    """A command's parser is made when first used (cli._CommandParser): parsing `sockets -ta`
    makes the sockets parser only, and --help lists every command without making theirs."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert not [name for name, p in sub.choices.items() if p.made is not None]
    assert all(name in parser.format_help() for name in sub.choices)
    assert not [name for name, p in sub.choices.items() if p.made is not None]
    parser.parse_args(["sockets", "-ta"])
    assert [name for name, p in sub.choices.items() if p.made is not None] == ["sockets"]
    with pytest.raises(cli._UsageExit):  # an unknown command is still named against every choice
        parser.parse_args(["socket"])


def test_only_the_command_run_gets_its_arguments():
    """A command's arguments are added when its parser is first used (cli._ArgumentParser.later)."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert all(len(p._actions) == 1 for p in sub.choices.values())  # -h only
    args = parser.parse_args(["sockets", "-ta"])
    assert args.all and args.tcp
    filled = [name for name, p in sub.choices.items() if len(p._actions) > 1]
    assert filled == ["sockets"]
    assert "--output" not in sub.choices["limits"].format_help()  # --help fills it too
    assert len(sub.choices["limits"]._actions) == 3  # -h, --all-processes, --output (hidden)


@pytest.mark.parametrize("columns", ["57", "200", "", "x"])
def test_the_help_width_is_shutils(monkeypatch, columns):
    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    else:
        monkeypatch.delenv("COLUMNS", raising=False)
    assert cli._HelpFormatter("p")._width == shutil.get_terminal_size().columns - 2


def test_python_m_runs_the_same_entry():
    out = subprocess.run([sys.executable, "-m", "sockdebug_agent", "--version"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert out.returncode == 0 and out.stdout.startswith("sockdebug-agent ")
