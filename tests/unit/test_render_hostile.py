"""Hostile values in every column of every table view: one escaping rule for all of them.

A target controls process names, unix paths, interface names (also after ``%`` in an
address), and a hostile or older agent can put anything in any field (states, timer
names, route and interface fields, finding ids, limits keys and values); the plugin's
own titles carry namespace and pod names.  Whatever they hold, what reaches the terminal
is printable text on the lines the table means to print, and the golden files show the
escapes a person sees.  Regenerate with SOCKDEBUG_UPDATE_GOLDEN=1 (see test_render.py).
"""

from __future__ import annotations

import io
import json
import re

import yaml
from sockdebug_agent import render as agent_render
from sockdebug_agent.schema import Finding, Interface, Limits, ProcessLimits, Route, Summary, Warning
from sockdebug_plugin import render
from sockdebug_plugin.render import Result
from test_render import API, END, HELLO, golden, proc, sock

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# ESC sequences (title, clear, colour), CR/LF/TAB, NUL, DEL, C1 CSI, a bidi override, a
# zero-width space, a paragraph separator, an undecodable byte two ways (as Python keeps
# it, and as the agent writes it), and a lone surrogate that is no byte.
EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\n\t\x00\x7f\x9b\u202eevil\u200b\u2029\udcff\\xff\ud800"
EVIL_ESCAPED = ("\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\x0d\\x0a\\x09\\x00\\x7f\\u009b\\u202eevil\\u200b\\u2029"
                "\\xff\\xff\\ud800")


def records():
    """One record of every type, every text field hostile (and a few numeric ones too)."""
    evil_sock = sock("inet", "tcp", "ESTAB", "10.0.0.5", 8080, "10.0.0.9", 40000, procs=[proc(1, EVIL, EVIL)],
                     interface=EVIL, inode=7, timer={"name": EVIL, "expires_ms": 1688, "retrans": 2},
                     info={"congestion": EVIL, "rtt_ms": 1.5, "cwnd": 10})._replace(state=EVIL, netid=EVIL)
    return [
        evil_sock,
        sock("unix", "u_str", "LISTEN", f"/run/{EVIL}.sock", 4242, None, 0, procs=[proc(2, "ok\nfake row")],
             inode=4242),
        sock("inet6", "udp", "UNCONN", EVIL, 53, "::", 0, v6only=True, inode=9)._replace(recv_q=EVIL),
        Summary(sockets_used=1, tcp_total=1, tcp_estab=1, tcp_closed=0, tcp_orphaned=0, tcp_timewait=0,
                transports={EVIL: {"total": 1, "ipv4": 1, "ipv6": 0}}, tcp_states={EVIL: 1}),
        Route("inet", EVIL, EVIL, EVIL, EVIL, EVIL, EVIL, 7, EVIL, EVIL),
        Interface(2, EVIL, EVIL, 1500, EVIL, [EVIL], EVIL, [{"family": "inet", "address": EVIL, "prefixlen": 24}]),
        ProcessLimits(1, EVIL, 3, 1024, 4096, 0.3),
        Limits(system={EVIL: 1}, netns={"ip_local_port_range": [EVIL, 2], EVIL: EVIL},
               counters={EVIL: {EVIL: 3}}),
        Finding(EVIL, "critical", EVIL, {EVIL: EVIL, "list": [EVIL], "flag": True}, EVIL, EVIL),
        Warning("proc-fallback", f"udp sockets {EVIL}"),
    ]


EVIL_TARGET = {"kind": "pod", "namespace": EVIL, "name": EVIL, "container": EVIL}


def results():
    return [Result(EVIL_TARGET, [HELLO, *records(), END]), Result(dict(API), [HELLO, *records()[:2], END])]


def clean(text: str) -> None:
    """Only printable characters and the table's own line breaks."""
    bad = [c for c in text if not c.isprintable() and c != "\n"]
    assert bad == [], bad


def test_every_view_escapes_every_column():
    res = results()
    texts = {
        "sockets": render.sockets_table(res, wide=True, color=False),
        "report": render.report_text(res[:1], wide=True, findings=True),
        "titles": "\n".join(render.target_title(r) for r in res),
    }
    for name, text in texts.items():
        clean(text)
        assert EVIL_ESCAPED in text, name
    sockets = texts["sockets"].splitlines()
    assert len(sockets) == 1 + 3 + 2  # header, three sockets of the evil target, two of the other: no fake rows
    # the device after % and every other part of an address: escaped, not dropped
    assert f"10.0.0.5%{EVIL_ESCAPED}:8080" in texts["sockets"]
    assert f"[{EVIL_ESCAPED}]:53" in texts["sockets"]
    golden("hostile_sockets.txt", texts["sockets"] + "\n")
    golden("hostile_report.txt", texts["report"] + "\n")


def test_colour_is_the_only_escape_sequence():
    text = render.sockets_table(results(), wide=True, color=True)
    assert ANSI.sub("", text) == render.sockets_table(results(), wide=True, color=False)
    for line in text.splitlines():
        assert "\x1b" not in ANSI.sub("", line)


def test_no_headers_drops_headers_and_titles():
    res = results()[:1]
    full = render.report_text(res, wide=True, findings=True)
    bare = render.report_text(res, wide=True, findings=True, show_headers=False)
    assert "Netid" in full and "# pod/" in full
    assert "Netid" not in bare and "# " not in bare and "Dst" not in bare and "Transport" not in bare
    assert len(bare.splitlines()) < len(full.splitlines())


def test_wide_east_asian_cells_keep_columns():
    socks = [sock("inet", "tcp", "LISTEN", "0.0.0.0", 80, "0.0.0.0", 0, procs=[proc(1, "服务器")], uid=1),
             sock("inet", "tcp", "LISTEN", "0.0.0.0", 81, "0.0.0.0", 0, procs=[proc(2, "nginx")], uid=1)]
    lines = render.sockets_table([Result(API, socks)], wide=True, color=False).splitlines()
    uid_column = [agent_render.width(line[:line.index(" 1 ")]) for line in lines[1:]]
    assert uid_column[0] == uid_column[1]  # two columns per CJK character


def test_yaml_and_json_documents_survive_lone_surrogates():
    res = results()
    out = io.StringIO()
    render.write_document(res, "yaml", out)
    doc = yaml.safe_load(out.getvalue())
    sock0 = doc["items"][0]["sockets"][0]
    assert sock0["interface"].endswith("\\xff\\xff\\ud800")  # as the schema spells undecodable bytes
    assert sock0["interface"].startswith("\x1b]0;pwned")  # YAML's own quoting keeps the rest exact
    assert doc["items"][0]["target"]["name"] == sock0["interface"]
    out = io.StringIO()
    render.write_document(res, "json", out)
    assert json.loads(out.getvalue())["items"][0]["sockets"][0]["interface"] == EVIL  # JSON escapes it
    assert out.getvalue().isascii()


def test_without_surrogates_leaves_other_text_alone():
    assert render.without_surrogates({"a\udcff": ["x\ud800", 1, None, "plain \x1b"]}) == \
        {"a\\xff": ["x\\ud800", 1, None, "plain \x1b"]}
