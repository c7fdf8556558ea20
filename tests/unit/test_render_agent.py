"""The agent alone speaks to people: on a terminal (or with -o table) its records become
the plugin's tables, through the same renderer; JSON Lines otherwise (or with -o jsonl).

``TableWriter`` is checked against the JSON Lines ``Writer`` fed the same records (same
counts, tables equal to the renderer's), and the real agent is run with its stdout on a
pseudo-terminal (``pty``), on a pipe, and with -o either way.  The integration test
tests/integration/test_agent_tables.py compares the table with ``ss -tlnp``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from sockdebug_agent import cli
from sockdebug_agent.render import Result, TableWriter, report_text
from sockdebug_agent.schema import NetNs, Warning
from sockdebug_agent.stream import Writer
from test_render import FINDINGS, LIMITS, PROCESS_LIMITS, ROUTES, SOCKETS, SUMMARY

AGENT = [sys.executable, "-m", "sockdebug_agent"]


def feed(writer: Writer, records, end_code: int = 0) -> None:
    """What agent/cli.py does with a writer: hello, the records (consecutive sockets in
    one batch, as a netlink datagram's), end."""
    writer.hello(["sockdebug-agent", "test"])
    batch: list = []
    for r in records:
        if r.type == "socket":
            batch.append(r)
            continue
        if batch:
            writer.emit_batch(batch)
            batch = []
        writer.emit(r)
    if batch:
        writer.emit_batch(batch)
    writer.end(end_code)


def run_table(records, *argv: str) -> tuple[str, str, TableWriter]:
    """``records`` through a TableWriter for the command line ``argv``: (stdout, stderr, writer)."""
    read, write = os.pipe()
    err = io.StringIO()
    writer = TableWriter(argv, fd=write, err=err)
    feed(writer, records)
    os.close(write)
    with os.fdopen(read) as f:
        return f.read(), err.getvalue(), writer


def test_table_writer_prints_the_renderers_table_and_counts_like_jsonl():
    records = [*SOCKETS, Warning("process-attribution-denied", "2 processes hidden", 2)]
    text, err, writer = run_table(records, "sockets", "-tl")
    assert text == report_text([Result({}, SOCKETS)], sockets=True) + "\n"
    assert text.startswith("Netid State") and len(text.splitlines()) == 1 + len(SOCKETS)
    assert err == "warning: 2 processes hidden\n"
    read, write = os.pipe()
    jsonl = Writer(write)
    feed(jsonl, records)
    os.close(write)
    os.close(read)
    assert writer.counts == jsonl.counts and writer.counts["socket"] == len(SOCKETS)


def test_table_writer_wide_no_headers_and_empty():
    text, _, _ = run_table(SOCKETS, "sockets", "-toH")
    assert "Netid" not in text and "keepalive,068ms,0" in text and len(text.splitlines()) == len(SOCKETS)
    text, _, _ = run_table([], "sockets")
    assert text == "no sockets matched\n"
    text, _, _ = run_table([], "routes")
    assert text == ""  # an empty table view prints nothing, as `ip route` does


def test_table_writer_triage_puts_findings_first():
    text, _, _ = run_table([*FINDINGS, SUMMARY, LIMITS, *PROCESS_LIMITS, *ROUTES], "triage")
    titles = [line for line in text.splitlines() if line.startswith("# ")]
    assert titles == ["# findings", "# summary", "# route", "# limits"]
    assert text.index("CRITICAL") < text.index("Total:")


def test_table_writer_single_sections_have_no_title():
    text, _, _ = run_table([SUMMARY], "summary")
    assert text.startswith("Total: 123\n") and "#" not in text


def test_table_writer_groups_pods_by_network_namespace():
    host = NetNs(4026531833, True, [], 80)
    pod = NetNs(4026532179, False, ["3f2a-uid"], 2)
    broken = NetNs(4026532200, False, ["dead-uid"], 1, error="gone")
    text, err, _ = run_table([host, SOCKETS[0], pod, SOCKETS[1], SOCKETS[2], broken], "pods", "-tl")
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["Netns", "Pods", "Netid"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["4026531833", "host"], ["4026532179", "3f2a-uid"], ["4026532179", "3f2a-uid"]]
    assert err == "warning: netns 4026532200 (dead-uid): gone\n"


def test_proc_fallback_warning_only_when_its_table_has_rows():
    raw = Warning("proc-fallback", "the kernel has no raw_diag: raw sockets are read from /proc/net/raw")
    _, err, _ = run_table([SOCKETS[0], raw], "sockets", "-tw")
    assert err == ""


def test_a_failed_run_prints_no_table():
    read, write = os.pipe()
    writer = TableWriter(["sockets"], fd=write, err=io.StringIO())
    writer.hello(["sockdebug-agent"])
    writer.error("namespace", "cannot enter", "hint")
    writer.end(6)
    os.close(write)
    with os.fdopen(read) as f:
        assert f.read() == ""


@pytest.mark.parametrize("argv, choice", [
    (["-o", "table", "sockets", "-tl"], "table"),
    (["-ojsonl", "sockets", "-tl"], "jsonl"),
    (["--output=table", "routes"], "table"),
    (["--netns", "-o", "sockets"], None),  # a namespace named -o
    (["sockets", "-tl", "--output", "table"], "table"),
    (["sockets", "-to", "state", "listening"], None),  # -o after the command: ss's timers
    (["sockets", "-o", "table"], None),  # ... and `table` a filter word (argparse says it is wrong)
    (["routes", "--output", "jsonl"], "jsonl"),
    (["-o", "xml", "routes"], None),  # not a choice: argparse says so
])
def test_output_choice(argv, choice):
    assert cli.output_choice(argv) == choice
    if choice == "table":
        assert isinstance(cli.writer(argv), TableWriter)
    elif choice == "jsonl":
        assert type(cli.writer(argv)) is Writer
    if choice is not None:  # the parser agrees
        assert cli.build_parser().parse_args(argv).output == choice


def test_ss_flags_shape_the_table():
    args = cli.build_parser().parse_args(["sockets", "-to"])
    assert args.options and getattr(args, "output", None) is None
    assert TableWriter(["sockets", "-toH"]).view() == {"command": "sockets", "wide": True, "show_headers": False,
                                                       "sockets": True}
    assert TableWriter(["triage", "--sockets"]).view()["sockets"]
    assert not TableWriter(["-o", "table", "limits"]).view()["sockets"]


def test_on_a_terminal_the_agent_prints_tables(agent_tty):
    code, text, _ = agent_tty("interfaces")
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split() == ["Interface", "State", "MTU", "MAC", "Addresses"]
    assert any(line.startswith("lo ") for line in lines[1:])
    assert "{" not in text


def test_on_a_terminal_jsonl_on_request(agent_tty):
    code, text, _ = agent_tty("-o", "jsonl", "interfaces")
    records = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and records[0]["type"] == "hello" and records[-1]["type"] == "end"
    assert any(r["type"] == "interface" and r["name"] == "lo" for r in records)


def test_on_a_pipe_jsonl_by_default_and_tables_on_request():
    proc = subprocess.run([*AGENT, "interfaces"], capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout.splitlines()[0])["type"] == "hello"
    proc = subprocess.run([*AGENT, "-o", "table", "interfaces"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("Interface ")


def test_on_a_terminal_errors_and_exit_codes_are_unchanged(agent_tty):
    code, text, err = agent_tty("sockets", "-t", "bogus")
    assert code == 2 and text == ""  # the error is on stderr; no JSON on the terminal
    assert err.count("invalid filter") == 1 and "hint: " in err
    proc = subprocess.run([*AGENT, "-o", "table", "sockets", "-t", "bogus"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("invalid filter") == 1 and "hint: " in proc.stderr
    code, text, err = agent_tty("-o", "table", "sockets", "--nosuch")
    assert code == 2 and text == "" and "--nosuch" in err  # argparse's usage is on stderr
