"""Renderers against golden output (tests/unit/golden/), plus the properties goldens
cannot show: escaping of target-supplied text, colour not shifting columns, json/yaml
documents parsing back, ss's timer spelling, and a 20,000-row table.

Regenerate the goldens after an intended change with

    SOCKDEBUG_UPDATE_GOLDEN=1 python3 -m pytest tests/unit/test_render.py

and review the diff (``git diff tests/unit/golden``) before committing it.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from sockdebug_agent.schema import (
    End,
    Finding,
    Hello,
    Interface,
    Limits,
    ProcessLimits,
    Route,
    Socket,
    Summary,
    Warning,
    from_dict,
    to_dict,
    to_json,
)
from sockdebug_plugin import render
from sockdebug_plugin.render import Result

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("SOCKDEBUG_UPDATE_GOLDEN") == "1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def golden(name: str, text: str) -> None:
    """``text`` must equal tests/unit/golden/NAME (or becomes it with SOCKDEBUG_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if not path.exists():
        pytest.fail(f"{path} is missing: run with SOCKDEBUG_UPDATE_GOLDEN=1 and review it")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{name} differs from the golden file (SOCKDEBUG_UPDATE_GOLDEN=1 to accept)"


# --- records ----------------------------------------------------------------------------------

API = {"kind": "pod", "namespace": "prod", "name": "api-7d9f8-abcde", "container": "app", "node": "worker-1"}
API2 = {"kind": "pod", "namespace": "prod", "name": "api-7d9f8-fghij", "container": "app", "node": "worker-2"}
NODE = {"kind": "node", "name": "worker-1"}


def proc(pid, comm, container="app", fd=3):
    return {"pid": pid, "comm": comm, "fd": fd, "container_id": "c" * 64, "container": container}


def sock(family, netid, state, local, lport, peer, pport, *, rq=0, wq=0, procs=None, v6only=None, interface=None,
         inode=0, uid=1000, timer=None, info=None):
    return Socket(family, netid, state, rq, wq, local, lport, peer, pport, interface, inode, uid, inode + 1, v6only,
                  procs, timer, None, None, info)


HELLO = Hello(1, "0.1.0", ["sockets", "-p"], "6.1.0", "api-7d9f8-abcde", "linux", 4026532000, 4026532001, 0)
END = End({"socket": 12}, 3.5, 0)

SOCKETS = [
    sock("inet", "tcp", "LISTEN", "127.0.0.1", 8080, "0.0.0.0", 0, wq=128, procs=[proc(1, "server")], inode=100),
    sock("inet", "tcp", "LISTEN", "0.0.0.0", 9090, "0.0.0.0", 0, wq=4096, procs=[proc(1, "server")], inode=101),
    # dual-stack listener: ss shows "*", both sides
    sock("inet6", "tcp", "LISTEN", "::", 8443, "::", 0, wq=511, v6only=False,
         procs=[proc(22, "envoy", "sidecar", 5), proc(23, "envoy", "sidecar", 5)], inode=102),
    # v6only listener: bracketed
    sock("inet6", "tcp", "LISTEN", "::", 15000, "::", 0, wq=128, v6only=True, procs=[proc(22, "envoy", "sidecar")],
         inode=103),
    sock("inet6", "tcp", "ESTAB", "::1", 8080, "::1", 51234, procs=[proc(1, "server")], v6only=False, inode=104,
         timer={"name": "keepalive", "expires_ms": 68, "retrans": 0},
         info={"congestion": "cubic", "rtt_ms": 0.052, "rttvar_ms": 0.026, "cwnd": 10}),
    sock("inet", "tcp", "ESTAB", "10.0.0.5", 8080, "10.0.0.9", 40000, rq=17, wq=1234,
         procs=[proc(1, "server"), proc(7, "worker")], inode=105,
         timer={"name": "on", "expires_ms": 1688, "retrans": 2},
         info={"congestion": "bbr", "rtt_ms": 12.5, "rttvar_ms": 3.25, "cwnd": 42, "total_retrans": 3, "lost": 1}),
    sock("inet", "tcp", "CLOSE-WAIT", "10.0.0.5", 43210, "10.0.0.20", 5432, rq=1, inode=106, uid=None),
    sock("inet", "tcp", "TIME-WAIT", "10.0.0.5", 43211, "10.0.0.20", 5432, inode=0, uid=0,
         timer={"name": "timewait", "expires_ms": 59_000, "retrans": 0}),
    sock("inet", "udp", "UNCONN", "127.0.0.53", 53, "0.0.0.0", 0, interface="lo", procs=[proc(40, "resolved")],
         inode=107),
    sock("inet6", "udp", "UNCONN", "fe80::1", 546, "::", 0, interface="eth0", v6only=True, inode=108),
    sock("unix", "u_str", "LISTEN", "/run/app.sock", 4242, None, 0, wq=128, procs=[proc(1, "server")], inode=4242),
    sock("unix", "u_str", "ESTAB", None, 4243, None, 4244, procs=[proc(7, "worker")], inode=4243),
    sock("unix", "u_dgr", "UNCONN", "@metrics", 4250, None, 0, procs=[proc(22, "envoy", "sidecar")], inode=4250),
]

SUMMARY = Summary(
    sockets_used=123, tcp_total=11, tcp_estab=2, tcp_closed=3, tcp_orphaned=0, tcp_timewait=1,
    transports={"RAW": {"total": 0, "ipv4": 0, "ipv6": 0}, "UDP": {"total": 2, "ipv4": 1, "ipv6": 1},
                "TCP": {"total": 18, "ipv4": 5, "ipv6": 13}, "INET": {"total": 20, "ipv4": 6, "ipv6": 14},
                "FRAG": {"total": 0, "ipv4": 0, "ipv6": 0}},
    tcp_states={"ESTAB": 2, "LISTEN": 4, "TIME-WAIT": 1, "CLOSE-WAIT": 1}, udp_sockets=2, unix_sockets=3)

ROUTES = [
    Route("inet", "main", "unicast", "default", "10.0.0.1", "eth0", None, None, "boot", "global"),
    Route("inet", "main", "unicast", "10.0.0.0/24", None, "eth0", "10.0.0.5", None, "kernel", "link"),
    Route("inet", "local", "local", "10.0.0.5", None, "eth0", "10.0.0.5", None, "kernel", "host"),
    Route("inet", "100", "blackhole", "192.0.2.0/24", None, None, None, 10, "static", "global"),
    Route("inet6", "main", "unicast", "fe80::/64", None, "eth0", None, 256, "kernel", "global", pref="medium"),
]

INTERFACES = [
    Interface(1, "lo", "UNKNOWN", 65536, "00:00:00:00:00:00", ["LOOPBACK", "UP", "LOWER_UP"], None,
              [{"family": "inet", "address": "127.0.0.1", "prefixlen": 8, "scope": "host"},
               {"family": "inet6", "address": "::1", "prefixlen": 128, "scope": "host"}], "loopback"),
    Interface(2, "eth0", "UP", 1450, "0a:58:0a:00:00:05", ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "veth",
              [{"family": "inet", "address": "10.0.0.5", "prefixlen": 24, "scope": "global"},
               {"family": "inet6", "address": "fe80::1", "prefixlen": 64, "scope": "link"}], "ether"),
    Interface(3, "tunl0", "DOWN", None, None, ["NOARP"], "ipip", [], "none"),
]

PROCESS_LIMITS = [
    ProcessLimits(1, "server", 912, 1024, 524288, 89.0625, "c" * 64),
    ProcessLimits(22, "envoy", 40, 1048576, 1048576, 0.0038, "d" * 64),
    ProcessLimits(99, "secret", None, None, None, None),
]

LIMITS = Limits(
    system={"file_handles_allocated": 3072, "file_handles_free": 0, "file_max": 9223372036854775807,
            "nr_open": 1048576},
    netns={"somaxconn": 4096, "tcp_max_syn_backlog": 1024, "tcp_fin_timeout": 60, "conntrack_max": None,
           "ip_local_port_range": [32768, 60999], "local_ports_in_use": 2},
    counters={"TcpExt": {"ListenOverflows": 3, "ListenDrops": 3, "TCPBacklogDrop": 0, "TW": None},
              "Tcp": {"CurrEstab": 2, "ActiveOpens": 10, "RetransSegs": 0},
              "Udp": {"InDatagrams": 0, "RcvbufErrors": None}})

FINDINGS = [
    Finding("listen-overflow", "critical", "Listen queue of 0.0.0.0:9090 overflowed 3 times",
            {"socket": "0.0.0.0:9090", "ListenOverflows": 3, "backlog": 4096, "processes": ["server/1"]},
            "The accept queue was full, so the kernel dropped new connections.",
            "Accept faster, or raise the backlog and net.core.somaxconn."),
    Finding("close-wait", "warning", "1 socket in CLOSE-WAIT", {"count": 1},
            "The peer closed, the application has not.", "Find the code path that forgets close()."),
    Finding("info-only", "info", "fd use is 89% of the soft limit", {},
            "Close to RLIMIT_NOFILE.", "Raise the limit."),
]


def result(records, target=API) -> Result:
    """What the plugin holds after reading the agent's stream: fresh records, nothing shared."""
    return Result(dict(target), [from_dict(json.loads(to_json(r))) for r in (HELLO, *records, END)])


# --- sockets table ----------------------------------------------------------------------------

def test_sockets_single_pod():
    golden("sockets_single.txt", render.sockets_table([result(SOCKETS)], wide=False, color=False) + "\n")


def test_sockets_multi_pod():
    results = [result(SOCKETS[:3]), result(SOCKETS[5:7], API2)]
    golden("sockets_multi.txt", render.sockets_table(results, wide=False, color=False) + "\n")


def test_sockets_wide():
    golden("sockets_wide.txt", render.sockets_table([result(SOCKETS)], wide=True, color=False) + "\n")


def test_sockets_marker_column():
    def mark(target, s):
        return {8080: "+", 43210: "-"}.get(s.local_port, "")

    results = [result(SOCKETS[:8]), result(SOCKETS[:2], API2)]
    golden("sockets_marker.txt", render.sockets_table(results, wide=False, color=False, marker=mark) + "\n")


def test_sockets_address_forms():
    text = render.sockets_table([result(SOCKETS)], wide=False, color=False)
    rows = text.splitlines()[1:]
    assert len(rows) == len(SOCKETS)
    expected = [
        ("127.0.0.1:8080", "0.0.0.0:*"), ("0.0.0.0:9090", "0.0.0.0:*"),
        ("*:8443", "*:*"),  # dual-stack :: as ss shows it
        ("[::]:15000", "[::]:*"),  # v6only ::
        ("[::1]:8080", "[::1]:51234"),
        ("10.0.0.5:8080", "10.0.0.9:40000"), ("10.0.0.5:43210", "10.0.0.20:5432"), ("10.0.0.5:43211", "10.0.0.20:5432"),
        ("127.0.0.53%lo:53", "0.0.0.0:*"),  # the bound device, local side only
        ("[fe80::1]%eth0:546", "[::]:*"),
        ("/run/app.sock 4242", "* 0"), ("* 4243", "* 4244"), ("@metrics 4250", "* 0"),
    ]
    for row, (local, peer) in zip(rows, expected):
        assert f" {local} " in row and f" {peer} " in row + " ", (row, local, peer)


def test_sockets_processes_and_containers():
    text = render.sockets_table([result(SOCKETS)], wide=False, color=False)
    rows = text.splitlines()
    assert rows[0].split() == ["Netid", "State", "Recv-Q", "Send-Q", "Local", "Address:Port", "Peer", "Address:Port",
                               "Process", "Container"]
    assert rows[3].endswith("envoy/22,envoy/23 sidecar")  # two owners, one container, named once
    assert rows[6].endswith("server/1,worker/7 app")
    assert rows[7].endswith("10.0.0.20:5432")  # no owner visible: empty Process and Container cells


def test_sockets_queues_right_aligned():
    rows = render.sockets_table([result(SOCKETS)], wide=False, color=False).splitlines()
    send_q_end = rows[0].index("Send-Q") + len("Send-Q")
    assert rows[6][send_q_end - 4:send_q_end] == "1234"
    assert rows[1][send_q_end - 3:send_q_end] == "128"


def test_no_sockets():
    assert render.sockets_table([result([])], wide=False, color=False) == "no sockets matched"
    assert render.sockets_table([result([]), result([], API2)], wide=True, color=False) == "no sockets matched"


def test_color_wraps_whole_rows_without_moving_columns():
    plain = render.sockets_table([result(SOCKETS)], wide=True, color=False)
    colored = render.sockets_table([result(SOCKETS)], wide=True, color=True)
    assert colored != plain
    assert ANSI.sub("", colored) == plain
    lines = colored.splitlines()
    assert "\x1b" not in lines[0]
    assert lines[1].startswith("\x1b[32m") and lines[1].endswith("\x1b[0m")  # LISTEN green
    assert "\x1b" not in lines[5]  # ESTAB: the terminal's colour
    assert lines[7].startswith("\x1b[31;1m")  # CLOSE-WAIT stands out


# --- other tables -----------------------------------------------------------------------------

def test_summary_text():
    golden("summary.txt", render.summary_text(result([SUMMARY])) + "\n")


def test_summary_without_tcp_states():
    text = render.summary_text(result([SUMMARY._replace(tcp_states={})]))
    assert "TCP states: none" in text


def test_routes_table():
    golden("routes.txt", render.routes_table(result(ROUTES)) + "\n")


def test_interfaces_table():
    golden("interfaces.txt", render.interfaces_table(result(INTERFACES)) + "\n")


def test_limits_text():
    golden("limits.txt", render.limits_text(result([*PROCESS_LIMITS, LIMITS])) + "\n")


def test_limits_text_shows_absent_and_unknown_figures():
    text = render.limits_text(result([*PROCESS_LIMITS, LIMITS]))
    assert "conntrack_max=absent" in text and "ip_local_port_range=32768-60999" in text
    assert "RcvbufErrors" not in text and "TW=" not in text  # zero and null counters are left out
    row = next(line for line in text.splitlines() if "secret" in line)
    assert row.split() == ["99", "secret", "-", "-", "-"]


def test_findings_text():
    golden("findings.txt", render.findings_text(result(FINDINGS), color=False) + "\n")


def test_findings_colour_and_none():
    colored = render.findings_text(result(FINDINGS), color=True)
    assert colored.startswith("\x1b[31;1mCRITICAL\x1b[0m  ")
    assert ANSI.sub("", colored) == render.findings_text(result(FINDINGS), color=False)
    assert render.findings_text(result([]), color=False) == "no findings"


def test_target_titles():
    assert render.target_title(result([])) == "pod/api-7d9f8-abcde -n prod (container app)"
    assert render.target_title(result([], NODE)) == "node/worker-1"


def test_the_report_puts_sections_together():
    out = io.StringIO()
    from sockdebug_plugin import output
    from sockdebug_plugin.options import Printing

    output.emit(Printing(), output.report_view([result([*SOCKETS[:2], SUMMARY, *ROUTES[:1], *PROCESS_LIMITS[:1],
                                                        LIMITS])]), out)
    text = out.getvalue()
    assert text.index("Netid") < text.index("# pod/api-7d9f8-abcde -n prod (container app): summary")
    assert "# pod/api-7d9f8-abcde -n prod (container app): route\nDst" in text
    assert "# pod/api-7d9f8-abcde -n prod (container app): limits\nPid" in text
    assert "interface" not in text and text.endswith("\n")


# --- documents --------------------------------------------------------------------------------

ALL_RECORDS = [*SOCKETS[:3], SUMMARY, ROUTES[0], INTERFACES[1], PROCESS_LIMITS[0], LIMITS, FINDINGS[1],
               Warning("proc_unreadable", "pid 99: permission denied", 1)]


def doc_results():
    return [result(ALL_RECORDS), result([SOCKETS[8]], NODE)]


def test_document_shape():
    doc = render.document(doc_results())
    assert doc["apiVersion"] == "sockdebug.io/v1" and doc["kind"] == "SocketReport"
    pod_item, node_item = doc["items"]
    assert pod_item["target"] == API and node_item["target"] == NODE
    assert set(pod_item) == {"target", "agent", "sockets", "summary", "routes", "interfaces", "process_limits",
                             "limits", "findings", "warnings"}
    assert pod_item["agent"]["hello"]["agent_version"] == "0.1.0" and pod_item["agent"]["end"]["exit_code"] == 0
    assert len(pod_item["sockets"]) == 3 and "type" not in pod_item["sockets"][0]
    assert pod_item["sockets"][2]["processes"][0]["container"] == "sidecar"
    assert pod_item["summary"]["tcp_states"]["LISTEN"] == 4
    assert isinstance(pod_item["process_limits"], list) and isinstance(pod_item["limits"], dict)
    assert node_item["sockets"][0]["interface"] == "lo"
    # every record comes back whole
    back = from_dict({"type": "socket", **pod_item["sockets"][0]})
    assert back == SOCKETS[0]


def test_document_json_parses_back():
    out = io.StringIO()
    render.write_document(doc_results(), "json", out)
    text = out.getvalue()
    assert text.endswith("}\n")
    assert json.loads(text) == json.loads(json.dumps(render.document(doc_results())))
    golden("document.json", text)


def test_document_yaml_parses_back():
    out = io.StringIO()
    render.write_document(doc_results(), "yaml", out)
    text = out.getvalue()
    assert yaml.safe_load(text) == json.loads(json.dumps(render.document(doc_results())))
    assert not text.startswith("!!") and "!!python" not in text and "&id" not in text
    golden("document.yaml", text)


def test_jsonl_line():
    line = render.jsonl_line(SOCKETS[0], API, tag=False)
    assert json.loads(line) == to_dict(SOCKETS[0]) and "\n" not in line
    tagged = json.loads(render.jsonl_line(SOCKETS[0], API, tag=True))
    assert tagged["target"] == API and tagged["type"] == "socket"


# --- escaping ---------------------------------------------------------------------------------

EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m\r\n\t\x00\x7f\x9b\u202e"


@pytest.mark.parametrize(("text", "expected"), [
    ("plain text, spaces & ünïcödé ok", "plain text, spaces & ünïcödé ok"),
    ("a\x1b[31mb", "a\\x1b[31mb"),
    ("tab\there\nnl\rcr", "tab\\x09here\\x0anl\\x0dcr"),
    ("\x00\x7f", "\\x00\\x7f"),  # NUL, DEL
    ("\x9b\x85\xa0", "\\u009b\\u0085\\u00a0"),  # C1 CSI and NEL, NBSP: characters, not bytes
    ("rtl\u202eoverride\u200bzw\u2066", "rtl\\u202eoverride\\u200bzw\\u2066"),  # bidi, zero-width
    ("bad\udcffbyte", "bad\\xffbyte"),  # an undecodable byte (surrogateescape): as the records spell it
    ("lone\ud800", "lone\\ud800"),  # a surrogate that is no byte
    ("line\u2028para\u2029", "line\\u2028para\\u2029"),
    ("astral \U000e0001 tag", "astral \\U000e0001 tag"),
    ("emoji \U0001f600 ok", "emoji \U0001f600 ok"),
    (None, ""),
    (8080, "8080"),
])
def test_escape(text, expected):
    assert render.escape(text) == expected


def raw_controls(text: str) -> list[str]:
    return [c for c in text if not c.isprintable() and c != "\n"]


def test_target_text_never_reaches_the_terminal_raw():
    socks = [sock("unix", "u_str", "LISTEN", f"/tmp/{EVIL}.sock", 1, None, 0, procs=[proc(5, EVIL, EVIL)]),
             sock("inet", "tcp", "LISTEN", "0.0.0.0", 80, "0.0.0.0", 0, interface=EVIL, procs=[proc(6, "ok\nfake")])]
    evil_target = {"kind": "pod", "namespace": "prod", "name": "api", "container": f"app{EVIL}"}
    texts = [
        render.sockets_table([result(socks)], wide=True, color=False),
        render.sockets_table([result(socks), result(socks, API2)], wide=False, color=False),
        render.routes_table(result([ROUTES[0]._replace(dev=EVIL)])),
        render.interfaces_table(result([INTERFACES[0]._replace(name=EVIL)])),
        render.limits_text(result([PROCESS_LIMITS[0]._replace(comm=EVIL)])),
        render.findings_text(result([FINDINGS[0]._replace(title=EVIL, explanation=EVIL, next_step=EVIL,
                                                          evidence={"comm": EVIL, "list": [EVIL]})]), color=False),
        render.target_title(Result(evil_target, [])),
    ]
    for text in texts:
        assert raw_controls(text) == [], text
        assert "\\x1b]0;pwned\\x07" in text, text
    assert "\\x1b" in texts[0] and len(texts[0].splitlines()) == 3  # "ok\nfake" did not add a line


def test_escaped_cells_keep_columns_aligned_with_colour():
    socks = [sock("inet", "tcp", "LISTEN", "0.0.0.0", 80, "0.0.0.0", 0, procs=[proc(5, EVIL)]),
             sock("inet", "tcp", "LISTEN", "0.0.0.0", 81, "0.0.0.0", 0, procs=[proc(6, "nginx")])]
    colored = render.sockets_table([result(socks)], wide=False, color=True)
    assert ANSI.sub("", colored) == render.sockets_table([result(socks)], wide=False, color=False)
    # the only escape sequences left are the table's own colours, whole-row
    for line in colored.splitlines()[1:]:
        assert ANSI.sub("", line).count("\x1b") == 0


# --- timers -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("ms", "text"), [
    # ss (iproute2 print_ms_timer, with the 2024 fix of "1.688ms"): milliseconds are
    # printed with three digits, as "%03d"; seconds under 10 keep them.
    (0, "0ms"),  # ss prints an empty field for an expired timer; "0ms" reads better in a column
    (1, "001ms"),
    (68, "068ms"),
    (999, "999ms"),
    (1000, "1sec"),
    (1688, "1.688sec"),
    (1005, "1.005sec"),
    (9501, "9.501sec"),
    (10_000, "10sec"),
    (13_500, "13sec"),  # from 10 s on, no milliseconds
    (59_999, "59sec"),
    (60_000, "1min"),
    (61_500, "1min1sec"),  # with minutes, no milliseconds
    (90_000, "1min30sec"),
    (599_999, "9min59sec"),
    (600_000, "10min"),
    (630_000, "10min"),  # from 10 min on, no seconds
    (7_200_000, "120min"),
])
def test_ms_text_spells_like_ss(ms, text):
    assert render.ms_text(ms) == text


def test_timer_and_info_text():
    assert render.timer_text(None) == ""
    assert render.timer_text({"name": "keepalive", "expires_ms": 68, "retrans": 0}) == "keepalive,068ms,0"
    assert render.timer_text({"name": "on", "expires_ms": 1688, "retrans": 2}) == "on,1.688sec,2"
    assert render.info_text(None) == "" and render.info_text({}) == ""
    assert render.info_text({"congestion": "cubic", "rtt_ms": 0.052, "rttvar_ms": 0.026, "cwnd": 10}) == \
        "cubic rtt:0.052/0.026 cwnd:10"
    assert render.info_text({"rtt_ms": 12.5, "total_retrans": 3, "lost": 1}) == "rtt:12.5/0 retrans:3 lost:1"


# --- size -------------------------------------------------------------------------------------

def test_twenty_thousand_rows_render():
    """A sanity check that the hand-formatted table copes with a busy pod (no timing assert)."""
    socks = [sock("inet", "tcp", "ESTAB", "10.0.0.5", 8080, f"10.1.{i // 250}.{i % 250}", 1024 + i % 60000,
                  procs=[proc(1, "server")], inode=10_000 + i) for i in range(20_000)]
    text = render.sockets_table([result(socks)], wide=True, color=False)
    lines = text.splitlines()
    assert len(lines) == 20_001
    assert lines[-1].split()[4:6] == ["10.0.0.5:8080", "10.1.79.249:21023"]
    assert len({len(line.split()) for line in lines[1:]}) == 1
