"""The agent alone on a terminal answers like ``ss -tlnp``: the table it prints on a
pseudo-terminal, read back column by column, holds the same sockets and owners as ss
on the same namespace (conftest.py's ``sock_ns``: listeners on 127.0.0.1, 0.0.0.0, a
dual-stack ``::``, ``::1``, a v6only ``::``, one bound to ``lo``, queues filled, and an
owner whose comm holds a space and a parenthesis).  The psutil path renders too, and
``-o jsonl`` still gives records on a terminal.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from helpers.ss_text import inet_endpoint, parse

pytestmark = pytest.mark.root

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def table_rows(text: str) -> list[tuple]:
    """(state, recv_q, send_q, local, peer, owners) of each row of the agent's table,
    cut at the header's column starts (a comm may hold spaces); addresses as ss prints
    them, owners as (comm, pid) text."""
    lines = [ANSI.sub("", line) for line in text.splitlines() if line.strip()]
    header = lines[0]
    assert header.split()[:2] == ["Netid", "State"], header
    local, peer, process = (header.index(h) for h in ("Local Address:Port", "Peer Address:Port", "Process"))
    rows = []
    for line in lines[1:]:
        netid, state, recv_q, send_q = line[:local].split()
        assert netid == "tcp"
        owners = frozenset(tuple(o.rsplit("/", 1)) for o in line[process:].strip().split(",") if o)
        rows.append((state, int(recv_q), int(send_q), line[local:peer].strip(), line[peer:process].strip(), owners))
    return rows


def canonical(row: tuple) -> tuple:
    """A table row with its addresses read back as ss_text reads ss's (address, port, device)."""
    state, recv_q, send_q, local, peer, owners = row
    return state, recv_q, send_q, inet_endpoint(local), inet_endpoint(peer)[:2], owners


def ss_rows(text: str) -> list[tuple]:
    """The same tuple from ``ss -tlnpH`` (read by helpers/ss_text.py)."""
    return [(r.state, r.recv_q, r.send_q, (r.local_address, r.local_port, r.interface), (r.peer_address, r.peer_port),
             frozenset((comm, str(pid)) for comm, pid, _ in r.users)) for r in parse(text, "tcp")]


def compare(ns, agent_tty, ss_args: list[str], agent_args: list[str]):
    """ss before and after the agent's table (a timer may change the table between)."""
    for _ in range(3):
        before = ss_rows(ns.ss("-tlnpH", *ss_args).stdout)
        code, text, err = agent_tty("--netns", ns.name, "sockets", *agent_args)
        after = ss_rows(ns.ss("-tlnpH", *ss_args).stdout)
        if Counter(before) == Counter(after):
            break
    assert code == 0, err
    return Counter(after), Counter(map(canonical, table_rows(text))), text


def test_listeners_table_equals_ss_tlnp(sock_ns, agent_tty):
    want, got, text = compare(sock_ns, agent_tty, [], ["-tlp"])
    assert got == want, f"only ss: {want - got}\nonly agent: {got - want}\n{text}"
    assert len(got) >= 6
    assert "\x1b[" in text  # a terminal gets colours (NO_COLOR unset)
    addresses = {row[3] for row in table_rows(text)}  # as ss prints them
    assert {"*:8443", "[::1]:9443", "[::]:9444", "127.0.0.1:8080", "0.0.0.0%lo:6000"} <= addresses


def test_who_holds_port_8080(sock_ns, agent_tty):
    """`sockdebug-agent sockets -tlp 'sport = :8080'` answers like `ss -tlnp 'sport = :8080'`."""
    want, got, text = compare(sock_ns, agent_tty, ["sport = :8080"], ["-tlp", "sport = :8080"])
    assert got == want and len(got) == 1, text
    ((state, recv_q, send_q, local, _, owners),) = got
    assert (state, local) == ("LISTEN", ("127.0.0.1", 8080, None)) and (recv_q, send_q) == (1, 16)
    assert owners == {("python3", str(sock_ns.info["main"]["pid"]))}


def test_psutil_path_renders_the_same_listeners(sock_ns, agent_tty):
    """psutil has no queues: the rest of each row is ss's."""
    code, text, err = agent_tty("--psutil", "--netns", sock_ns.name, "sockets", "-tlp")
    assert code == 0, err
    assert "warning: sockets read through psutil" in err
    # psutil has no queues and no bound device, and cannot tell a dual-stack :: from a v6only one
    def loose(rows):
        return Counter((state, local[:2], peer, owners) for state, _, _, local, peer, owners in rows)

    want = loose(ss_rows(sock_ns.ss("-tlnpH").stdout))
    assert loose(map(canonical, table_rows(text))) == want and len(want) >= 6, text


def test_jsonl_on_a_terminal_on_request(sock_ns, agent_tty):
    code, text, _ = agent_tty("-o", "jsonl", "--netns", sock_ns.name, "sockets", "-tlp", "sport = :8080")
    records = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and [r["type"] for r in records if r["type"] != "warning"] == ["hello", "socket", "end"]
    assert [r["local_port"] for r in records if r["type"] == "socket"] == [8080]
