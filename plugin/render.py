"""Renderers: ss-like tables (hand-formatted: tens of thousands of rows in milliseconds),
wide, json, yaml and jsonl.

Every string that comes from a target (process names, unix socket paths, interface
names, messages) goes through ``escape`` before it reaches a terminal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Optional, TextIO

from sockdebug_agent.schema import to_dict

OUTPUTS = ("table", "wide", "json", "yaml", "jsonl")

_STATE_COLORS = {
    "LISTEN": "32", "ESTAB": "0", "CLOSE-WAIT": "31;1", "SYN-SENT": "33", "SYN-RECV": "33",
    "TIME-WAIT": "2", "FIN-WAIT-1": "35", "FIN-WAIT-2": "35", "LAST-ACK": "35", "CLOSING": "35",
    "UNCONN": "36",
}
_SEVERITY_COLORS = {"critical": "31;1", "warning": "33;1", "info": "36"}


def escape(text: Any) -> str:
    """Target-supplied text made safe for a terminal: control and other non-printable
    characters become ``\\xNN`` / ``\\uNNNN``."""
    if text is None:
        return ""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
                   for c in text)


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


class Result(NamedTuple):
    """Everything one target answered, grouped for rendering."""

    target: dict[str, Any]  #: kind, namespace, pod/node, container
    records: list[Any]

    def of(self, kind: str) -> list[Any]:
        return [r for r in self.records if r.type == kind]


# --- text helpers ---------------------------------------------------------------------

def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: frozenset[int] = frozenset(),
                 colors: Optional[list[Optional[str]]] = None) -> str:
    """Columns padded to their widest cell; ``right`` aligns columns right; ``colors``
    (one ANSI code per row, or None) is applied after padding so widths stay right."""
    rows = list(rows)
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    last = len(headers) - 1

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            if i in right:  # before the last-column case: a right-aligned last column needs its padding
                parts.append(cell.rjust(widths[i]))
            elif i == last:
                parts.append(cell)
            else:
                parts.append(cell.ljust(widths[i]))
        return " ".join(parts).rstrip()

    out = [line(headers)]
    for n, row in enumerate(rows):
        text = line(row)
        color = colors[n] if colors else None
        out.append(f"\x1b[{color}m{text}\x1b[0m" if color and color != "0" else text)
    return "\n".join(out)


def address(addr: Optional[str], port: int, family: str, v6only: Optional[bool], interface: Optional[str],
            local: bool) -> str:
    """ss's Address:Port text: ``[::1]:80``, ``*:80`` for a dual-stack ``::``, ``%dev``."""
    if family == "unix":
        return f"{escape(addr) if addr else '*'} {port}"
    if family == "inet6":
        host = "*" if addr == "::" and not v6only else f"[{addr}]"
    else:
        host = addr or "*"
    if local and interface:
        host += "%" + escape(interface)
    return f"{host}:{port if port else '*'}"


def process_text(processes: Optional[list[dict]]) -> tuple[str, str]:
    """(``comm/pid`` list, container names) for the Process and Container columns."""
    if not processes:
        return "", ""
    procs, containers = [], []
    for p in processes:
        text = f"{escape(p.get('comm'))}/{p.get('pid')}"
        if text not in procs:
            procs.append(text)
        c = escape(p.get("container"))
        if c and c not in containers:
            containers.append(c)
    return ",".join(procs), ",".join(containers)


def timer_text(timer: Optional[dict]) -> str:
    if not timer:
        return ""
    return f"{timer['name']},{ms_text(timer['expires_ms'])},{timer['retrans']}"


def ms_text(ms: int) -> str:
    """ss's timer format (the 6.11+ spelling, without 6.1's 1.688ms bug), digit for digit:
    ``068ms``, ``1.688sec``, ``13sec`` (no ms from 10 s on), ``1min30sec``, ``10min`` (no
    sec from 10 min on).  An expired timer is ``0ms``, where ss prints an empty field."""
    if ms <= 0:
        return "0ms"
    minutes, secs, rest = ms // 60000, (ms // 1000) % 60, ms % 1000
    if minutes:
        return f"{minutes}min" + (f"{secs}sec" if secs and minutes < 10 else "")
    if secs:
        return f"{secs}.{rest:03d}sec" if rest and secs < 10 else f"{secs}sec"
    return f"{rest:03d}ms"


def info_text(info: Optional[dict]) -> str:
    if not info:
        return ""
    parts = []
    if info.get("congestion"):
        parts.append(info["congestion"])
    if info.get("rtt_ms") is not None:
        parts.append(f"rtt:{info['rtt_ms']:g}/{info.get('rttvar_ms', 0):g}")
    for key, label in (("cwnd", "cwnd"), ("total_retrans", "retrans"), ("lost", "lost")):
        if info.get(key):
            parts.append(f"{label}:{info[key]}")
    return " ".join(parts)


# --- per-record-type tables -------------------------------------------------------------

def sockets_table(results: Sequence[Result], *, wide: bool, color: bool,
                  marker: Optional[Callable[[dict, Any], str]] = None) -> str:
    """ss's columns plus the owning container; ``marker`` adds a leading mark column
    (--watch: + new, - closed)."""
    multi = len(results) > 1
    headers = ([""] if marker else []) + (["Namespace", "Pod"] if multi else []) + [
        "Netid", "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Process", "Container"]
    if wide:
        headers += ["Timer", "Uid", "Inode", "Info"]
    rows, colors = [], []
    for res in results:
        prefix = [res.target.get("namespace", ""), res.target.get("name", "")] if multi else []
        for s in res.of("socket"):
            if marker:
                prefix_row = [marker(res.target, s), *prefix]
            else:
                prefix_row = prefix
            procs, containers = process_text(s.processes)
            row = [
                *prefix_row, s.netid, s.state, str(s.recv_q), str(s.send_q),
                address(s.local_address, s.local_port, s.family, s.v6only, s.interface, True),
                address(s.peer_address, s.peer_port, s.family, s.v6only, None, False),
                procs, containers,
            ]
            if wide:
                row += [timer_text(s.timer), "" if s.uid is None else str(s.uid), str(s.inode),
                        info_text(s.tcp_info)]
            rows.append(row)
            colors.append(_STATE_COLORS.get(s.state) if color else None)
    if not rows:
        return "no sockets matched"
    first = (2 if multi else 0) + (1 if marker else 0)
    return format_table(headers, rows, right=frozenset({first + 2, first + 3}), colors=colors)


def summary_text(res: Result) -> str:
    out = []
    for s in res.of("summary"):
        tcp = (f"TCP:   {s.tcp_total} (estab {s.tcp_estab}, closed {s.tcp_closed}, orphaned {s.tcp_orphaned}, "
               f"timewait {s.tcp_timewait})")
        rows = [[k, str(v["total"]), str(v["ipv4"]), str(v["ipv6"])] for k, v in s.transports.items()]
        states = "  ".join(f"{k} {v}" for k, v in sorted(s.tcp_states.items(), key=lambda kv: -kv[1]))
        out += [f"Total: {s.sockets_used}", tcp, "",
                format_table(["Transport", "Total", "IP", "IPv6"], rows, right=frozenset({1, 2, 3})),
                "", f"TCP states: {states or 'none'}", f"UDP sockets: {s.udp_sockets}   "
                f"unix sockets: {s.unix_sockets}"]
    return "\n".join(out)


def routes_table(res: Result) -> str:
    rows = [[r.dst, r.gateway or "", escape(r.dev), r.prefsrc or "", r.protocol, r.scope, r.table,
             r.route_type, "" if r.metric is None else str(r.metric)] for r in res.of("route")]
    return format_table(["Dst", "Gateway", "Dev", "Prefsrc", "Protocol", "Scope", "Table", "Type", "Metric"], rows)


def interfaces_table(res: Result) -> str:
    rows = [[escape(i.name), i.state, "" if i.mtu is None else str(i.mtu), i.mac or "",
             " ".join(f"{a['address']}/{a['prefixlen']}" for a in i.addresses)] for i in res.of("interface")]
    return format_table(["Interface", "State", "MTU", "MAC", "Addresses"], rows)


def limits_text(res: Result) -> str:
    rows = []
    for p in res.of("process_limits"):
        pct = "" if p.percent_used is None else f"{p.percent_used:.1f}%"
        rows.append([str(p.pid), escape(p.comm), _num(p.open_fds), _num(p.fd_soft_limit), _num(p.fd_hard_limit),
                     pct])
    out = [format_table(["Pid", "Process", "Open fds", "Soft limit", "Hard limit", "Used"], rows,
                        right=frozenset({0, 2, 3, 4, 5}))] if rows else []
    for lim in res.of("limits"):
        for title, figures in (("system", lim.system), ("network namespace", lim.netns)):
            out.append(f"{title}: " + "  ".join(f"{k}={_figure(v)}" for k, v in figures.items()))
        for group, counters in lim.counters.items():
            nonzero = {k: v for k, v in counters.items() if v}
            if nonzero:
                out.append(f"{group}: " + "  ".join(f"{k}={v}" for k, v in nonzero.items()))
    return "\n".join(out)


def findings_text(res: Result, color: bool) -> str:
    out = []
    for f in res.of("finding"):
        tag = f.severity.upper()
        if color:
            tag = f"\x1b[{_SEVERITY_COLORS.get(f.severity, '0')}m{tag}\x1b[0m"
        out += [f"{tag}  {escape(f.title)}  [{f.id}]", f"    {escape(f.explanation)}",
                f"    next: {escape(f.next_step)}"]
        evidence = ", ".join(f"{k}={escape(json.dumps(v) if isinstance(v, (dict, list)) else v)}"
                             for k, v in f.evidence.items())
        if evidence:
            out.append(f"    evidence: {evidence}")
    return "\n".join(out) if out else "no findings"


def _num(v: Optional[int]) -> str:
    return "-" if v is None else str(v)


def _figure(v: Any) -> str:
    if v is None:
        return "absent"
    if isinstance(v, (list, tuple)):
        return "-".join(str(x) for x in v)
    return str(v)


def target_title(res: Result) -> str:
    t = res.target
    if t.get("kind") == "node":
        return f"node/{escape(t['name'])}"
    return f"pod/{escape(t['name'])} -n {escape(t['namespace'])} (container {escape(t.get('container'))})"


# --- documents ----------------------------------------------------------------------------

def document(results: Sequence[Result]) -> dict[str, Any]:
    """The json/yaml document: one item per target, records grouped by type."""
    items = []
    for res in results:
        item: dict[str, Any] = {"target": res.target}
        for rec in res.records:
            if rec.type in ("hello", "end"):
                item.setdefault("agent", {})[rec.type] = to_dict(rec)
                continue
            data = to_dict(rec)
            del data["type"]
            if rec.type in ("summary", "limits"):
                item[rec.type] = data
            else:
                item.setdefault(_PLURALS.get(rec.type, rec.type + "s"), []).append(data)
        items.append(item)
    return {"apiVersion": "sockdebug.io/v1", "kind": "SocketReport", "items": items}


_PLURALS = {"process_limits": "process_limits"}


def write_document(results: Sequence[Result], output: str, out: TextIO) -> None:
    doc = document(results)
    if output == "json":
        json.dump(doc, out, indent=2)
        out.write("\n")
        return
    import yaml  # only for -o yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    yaml.dump(doc, out, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=False)


def jsonl_line(record: Any, target: dict[str, Any], tag: bool) -> str:
    """A record as the agent sent it, plus the target when several are streamed together."""
    data = to_dict(record)
    if tag:
        data["target"] = target
    return json.dumps(data, separators=(",", ":"))
