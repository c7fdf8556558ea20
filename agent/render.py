"""Tables for people: ss-like socket lists, ``ss -s`` summaries, routes, interfaces,
limits and findings.  One renderer for the plugin (which re-exports it from
``plugin/render.py``) and for the agent alone on a terminal (``TableWriter``).

Standard library only and cheap to import: the agent loads it at start-up when its
stdout is a terminal.  Tables are hand-formatted (tens of thousands of rows in
milliseconds).

Every value that reaches a terminal goes through ``escape``, whatever its column:
names, states, addresses, timer names, route and interface fields, finding ids and
texts, limits keys and values, namespace and pod names.  One rule (docs/schema.md,
Conventions): control characters, DEL, C1 controls, bidi overrides, zero-width and
other non-printable characters become ``\\xNN`` (below U+0080) or ``\\uNNNN``; a byte
that was not valid UTF-8 (kept by Python as a lone surrogate) becomes ``\\xNN``, the
four characters the agent's records use for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Optional, TextIO

from .schema import escape, escape_char  # noqa: F401 - the one rule lives with text(); re-exported
from .stream import Writer

_STATE_COLORS = {
    "LISTEN": "32", "ESTAB": "0", "CLOSE-WAIT": "31;1", "SYN-SENT": "33", "SYN-RECV": "33",
    "TIME-WAIT": "2", "FIN-WAIT-1": "35", "FIN-WAIT-2": "35", "LAST-ACK": "35", "CLOSING": "35",
    "UNCONN": "36",
}
_SEVERITY_COLORS = {"critical": "31;1", "warning": "33;1", "info": "36"}

Pair = tuple[dict, Any]
"""One row of a table view: (the target it came from, the record)."""
Sorter = Callable[[list[Pair]], list[Pair]]
"""Reorders the rows of a table (``--sort-by``); the plugin builds one from a jsonpath."""


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def width(cell: str) -> int:
    """Terminal columns of an (escaped) cell: East Asian wide characters take two,
    combining marks none."""
    if cell.isascii():
        return len(cell)
    from unicodedata import combining, east_asian_width

    return sum(0 if combining(c) else 2 if east_asian_width(c) in "WF" else 1 for c in cell)


class Result(NamedTuple):
    """Everything one target answered, grouped for rendering."""

    target: dict[str, Any]  #: kind, namespace, pod/node, container ({} for the agent alone)
    records: list[Any]

    def of(self, kind: str) -> list[Any]:
        return [r for r in self.records if r.type == kind]


# --- text helpers ---------------------------------------------------------------------

def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: frozenset[int] = frozenset(),
                 colors: Optional[list[Optional[str]]] = None, show_headers: bool = True) -> str:
    """Columns padded to their widest cell; ``right`` aligns columns right; ``colors``
    (one ANSI code per row, or None) is applied after padding so widths stay right.
    Cells must be escaped already."""
    rows = list(rows)
    if "".join(map("".join, rows)).isascii():  # the usual table: str's own padding, in C
        size, ljust, rjust = len, str.ljust, str.rjust
    else:
        size = width

        def ljust(cell: str, n: int) -> str:
            return cell + " " * (n - width(cell))

        def rjust(cell: str, n: int) -> str:
            return " " * (n - width(cell)) + cell
    widths = [len(h) for h in headers]
    for i, column in enumerate(zip(*rows)):
        widths[i] = max(widths[i], max(map(size, column)))
    last = len(headers) - 1

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            if i in right:  # before the last-column case: a right-aligned last column needs its padding
                parts.append(rjust(cell, widths[i]))
            elif i == last:
                parts.append(cell)
            else:
                parts.append(ljust(cell, widths[i]))
        return " ".join(parts).rstrip()

    out = [line(headers)] if show_headers else []
    for n, row in enumerate(rows):
        text = line(row)
        color = colors[n] if colors else None
        out.append(f"\x1b[{color}m{text}\x1b[0m" if color and color != "0" else text)
    return "\n".join(out)


def address(addr: Optional[str], port: Any, family: str, v6only: Optional[bool], interface: Optional[str],
            local: bool) -> str:
    """ss's Address:Port text: ``[::1]:80``, ``*:80`` for a dual-stack ``::``, ``%dev``."""
    if family == "unix":
        return escape(f"{addr or '*'} {port}")
    if family == "inet6":
        host = "*" if addr == "::" and not v6only else f"[{addr}]"
    else:
        host = addr or "*"
    if local and interface:
        host += f"%{interface}"
    return escape(f"{host}:{port or '*'}")


def process_text(processes: Optional[list[dict]]) -> tuple[str, str]:
    """(``comm/pid`` list, container names) for the Process and Container columns."""
    if not processes:
        return "", ""
    procs, containers = [], []
    for p in processes:
        text = escape(f"{p.get('comm')}/{p.get('pid')}")
        if text not in procs:
            procs.append(text)
        c = escape(p.get("container"))
        if c and c not in containers:
            containers.append(c)
    return ",".join(procs), ",".join(containers)


def timer_text(timer: Optional[dict]) -> str:
    if not timer:
        return ""
    expires = timer.get("expires_ms")
    return escape(f"{timer.get('name')},{ms_text(expires) if type(expires) is int else expires},"
                  f"{timer.get('retrans')}")


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
        parts.append(escape(info["congestion"]))
    if info.get("rtt_ms") is not None:
        parts.append(f"rtt:{_g(info['rtt_ms'])}/{_g(info.get('rttvar_ms', 0))}")
    for key, label in (("cwnd", "cwnd"), ("total_retrans", "retrans"), ("lost", "lost")):
        if info.get(key):
            parts.append(f"{label}:{escape(info[key])}")
    return " ".join(parts)


def _g(v: Any) -> str:
    return format(v, "g") if type(v) in (int, float) else escape(v)


def value_text(v: Any) -> str:
    """A JSON value in one cell: strings as they are, anything else as JSON; escaped."""
    return escape(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))


# --- per-record-type tables -------------------------------------------------------------

def sockets_table(results: Sequence[Result], *, wide: bool, color: bool,
                  marker: Optional[Callable[[dict, Any], str]] = None, show_headers: bool = True,
                  sort: Optional[Sorter] = None, peer: Optional[Callable[[Any], Optional[str]]] = None) -> str:
    """ss's columns plus the owning container (when any owner has one); ``marker`` adds a
    leading mark column (--watch: + new, - closed); ``sort`` reorders the rows; ``peer``
    names a remote address (``pod/NS/NAME``, ``svc/NS/NAME``, ``node/NAME``; None when
    unknown): in the table the name stands for the address (``svc/shop/web:80``, column
    Peer), wide keeps Peer Address:Port and adds a Peer column."""
    pairs = [(res.target, s) for res in results for s in res.of("socket")]
    if not pairs:
        return "no sockets matched"
    if sort is not None:
        pairs = sort(pairs)
    names = [peer(s) for _, s in pairs] if peer is not None else []
    named = any(names)
    multi = len(results) > 1
    containers = any(p.get("container") for _, s in pairs for p in s.processes or ())
    group = ["Netns", "Pods"] if results[0].target.get("kind") == "netns" else ["Namespace", "Pod"]
    headers = ([""] if marker else []) + (group if multi else []) + [
        "Netid", "State", "Recv-Q", "Send-Q", "Local Address:Port",
        "Peer" if named and not wide else "Peer Address:Port"] + (["Peer"] if named and wide else []) + [
        "Process"] + (["Container"] if containers else [])
    if wide:
        headers += ["Timer", "Uid", "Inode", "Info"]
    rows, colors = [], []
    for i, (target, s) in enumerate(pairs):
        row = [marker(target, s)] if marker else []
        if multi:
            row += [str(target.get("namespace", "")), str(target.get("name", ""))]
        procs, owners = process_text(s.processes)
        name = names[i] if named else None
        remote = address(s.peer_address, s.peer_port, s.family, s.v6only, None, False)
        row += [str(s.netid), str(s.state), str(s.recv_q), str(s.send_q),
                address(s.local_address, s.local_port, s.family, s.v6only, s.interface, True),
                f"{escape(name)}:{s.peer_port}" if name and not wide else remote]
        if named and wide:
            row.append(escape(name) if name else "")
        row.append(procs)
        if containers:
            row.append(owners)
        if wide:
            row += [timer_text(s.timer), "" if s.uid is None else str(s.uid), str(s.inode), info_text(s.tcp_info)]
        rows.append(row if "".join(row).isprintable() else [escape(c) for c in row])  # one check a row
        colors.append(_STATE_COLORS.get(s.state) if color else None)
    first = (2 if multi else 0) + (1 if marker else 0)
    return format_table(headers, rows, right=frozenset({first + 2, first + 3}), colors=colors,
                        show_headers=show_headers)


def summary_text(res: Result, show_headers: bool = True) -> str:
    out = []
    for s in res.of("summary"):
        tcp = (f"TCP:   {escape(s.tcp_total)} (estab {escape(s.tcp_estab)}, closed {escape(s.tcp_closed)}, "
               f"orphaned {escape(s.tcp_orphaned)}, timewait {escape(s.tcp_timewait)})")
        rows = [[escape(k), escape(v.get("total")), escape(v.get("ipv4")), escape(v.get("ipv6"))]
                for k, v in s.transports.items()]
        states = "  ".join(f"{escape(k)} {escape(v)}" for k, v in sorted(s.tcp_states.items(), key=_by_count))
        out += [f"Total: {escape(s.sockets_used)}", tcp, "",
                format_table(["Transport", "Total", "IP", "IPv6"], rows, right=frozenset({1, 2, 3}),
                             show_headers=show_headers),
                "", f"TCP states: {states or 'none'}",
                f"UDP sockets: {escape(s.udp_sockets)}   unix sockets: {escape(s.unix_sockets)}"]
    return "\n".join(out)


def _by_count(kv: tuple[str, Any]) -> Any:
    return -kv[1] if type(kv[1]) is int else 0


def routes_table(res: Result, show_headers: bool = True) -> str:
    rows = [[escape(r.dst), escape(r.gateway), escape(r.dev), escape(r.prefsrc), escape(r.protocol),
             escape(r.scope), escape(r.table), escape(r.route_type), escape(r.metric)] for r in res.of("route")]
    return format_table(["Dst", "Gateway", "Dev", "Prefsrc", "Protocol", "Scope", "Table", "Type", "Metric"], rows,
                        show_headers=show_headers)


def interfaces_table(res: Result, show_headers: bool = True) -> str:
    rows = [[escape(i.name), escape(i.state), escape(i.mtu), escape(i.mac),
             " ".join(f"{escape(a.get('address'))}/{escape(a.get('prefixlen'))}" for a in i.addresses)]
            for i in res.of("interface")]
    return format_table(["Interface", "State", "MTU", "MAC", "Addresses"], rows, show_headers=show_headers)


def limits_text(res: Result, show_headers: bool = True) -> str:
    rows = []
    for p in res.of("process_limits"):
        pct = (f"{p.percent_used:.1f}%" if type(p.percent_used) in (int, float) else escape(p.percent_used))
        rows.append([escape(p.pid), escape(p.comm), _num(p.open_fds), _num(p.fd_soft_limit), _num(p.fd_hard_limit),
                     pct])
    out = [format_table(["Pid", "Process", "Open fds", "Soft limit", "Hard limit", "Used"], rows,
                        right=frozenset({0, 2, 3, 4, 5}), show_headers=show_headers)] if rows else []
    for lim in res.of("limits"):
        for title, figures in (("system", lim.system), ("network namespace", lim.netns)):
            out.append(f"{title}: " + "  ".join(f"{escape(k)}={_figure(v)}" for k, v in figures.items()))
        for group, counters in lim.counters.items():
            nonzero = {k: v for k, v in counters.items() if v}
            if nonzero:
                out.append(f"{escape(group)}: " + "  ".join(f"{escape(k)}={escape(v)}" for k, v in nonzero.items()))
    return "\n".join(out)


def severity_tag(severity: Any, color: bool) -> str:
    """``CRITICAL`` / ``WARNING`` / ``INFO``, escaped, in its colour on a terminal (the
    plugin's findings renderer uses it too)."""
    tag = escape(str(severity).upper())
    return f"\x1b[{_SEVERITY_COLORS.get(severity, '0')}m{tag}\x1b[0m" if color else tag


def findings_text(res: Result, color: bool, sort: Optional[Sorter] = None) -> str:
    findings = res.of("finding")
    if sort is not None and findings:
        findings = [f for _, f in sort([(res.target, f) for f in findings])]
    out = []
    for f in findings:
        tag = severity_tag(f.severity, color)
        out += [f"{tag}  {escape(f.title)}  [{escape(f.id)}]", f"    {escape(f.explanation)}",
                f"    next: {escape(f.next_step)}"]
        evidence = ", ".join(f"{escape(k)}={value_text(v)}" for k, v in f.evidence.items())
        if evidence:
            out.append(f"    evidence: {evidence}")
    return "\n".join(out) if out else "no findings"


def _num(v: Any) -> str:
    return "-" if v is None else escape(v)


def _figure(v: Any) -> str:
    if v is None:
        return "absent"
    if isinstance(v, (list, tuple)):
        return "-".join(escape(x) for x in v)
    return escape(v)


def target_title(res: Result) -> str:
    """``pod/NAME -n NS (container C)``, ``node/NAME``; empty for the agent alone."""
    t = res.target
    if t.get("kind") == "node":
        return f"node/{escape(t.get('name'))}"
    if t.get("kind") == "netns":
        return f"netns {escape(t.get('namespace'))} ({escape(t.get('name'))})"
    if not t:
        return ""
    where = f"container {escape(t['container'])}" if t.get("container") else "no container: its network namespace"
    return f"pod/{escape(t.get('name'))} -n {escape(t.get('namespace'))} ({where})"


def notable_warnings(res: Result) -> list[Any]:
    """The warnings worth a person's line on stderr: a /proc fallback only matters when
    that table has rows here (raw_diag is missing on many kernels, and ss falls back
    silently)."""
    sockets = res.of("socket")
    netids = {s.netid for s in sockets} | ({"unix"} if any(s.family == "unix" for s in sockets) else set())
    return [w for w in res.of("warning")
            if w.code != "proc-fallback" or any(f"{n} sockets" in w.message for n in netids)]


_SECTIONS: list[tuple[str, Callable[..., str]]] = [
    ("summary", summary_text), ("route", routes_table), ("interface", interfaces_table), ("limits", limits_text)]


def report_text(results: Sequence[Result], *, wide: bool = False, color: bool = False, show_headers: bool = True,
                sockets: Optional[bool] = None, findings: bool = False, sort: Optional[Sorter] = None,
                peer: Optional[Callable[[Any], Optional[str]]] = None) -> str:
    """Everything the targets answered, as the table views: findings (``findings``),
    the sockets table (``sockets``; by default when there are sockets, or no records at
    all), then a section per target for each of summary, routes, interfaces and
    limits.  Sections are titled ``# TARGET: KIND`` where a target or several
    sections need telling apart; ``show_headers=False`` (--no-headers, ss -H) drops
    titles and column headers; ``peer`` names remote addresses (``sockets_table``)."""
    parts: list[tuple[Optional[Result], str, str]] = []
    if findings:
        parts += [(res, "findings", findings_text(res, color, sort)) for res in results]
    if sockets is None:
        sockets = any(r.of("socket") for r in results) or not any(r.records for r in results)
    if sockets:
        parts.append((None, "socket", sockets_table(results, wide=wide, color=color, show_headers=show_headers,
                                                    sort=sort, peer=peer)))
    for kind, fn in _SECTIONS:
        for res in results:
            if res.of(kind) or (kind == "limits" and res.of("process_limits")):
                parts.append((res, kind, fn(res, show_headers=show_headers)))
    titled = show_headers and len(parts) > 1
    out = []
    for res, kind, body in parts:
        title = target_title(res) if res is not None else ""
        if res is not None and show_headers and (title or titled):
            body = f"# {title + ': ' if title else ''}{kind}\n{body}"
        out.append(body)
    return "\n\n".join(out)


# --- the agent alone, on a terminal ---------------------------------------------------------

class TableWriter(Writer):
    """``stream.Writer``'s API for a person: records are kept and printed as the plugin's
    tables when ``end`` comes (a column's width needs every row).  The notable warnings
    go to stderr first, as ``warning: MESSAGE``; hello, error and end print nothing (the
    CLI writes an error's two lines on stderr itself).  ``counts`` and exit codes are as
    for JSON Lines."""

    def __init__(self, argv: Sequence[str] = (), *, fd: int = 1, err: Optional[TextIO] = None) -> None:
        super().__init__(fd)
        self.argv = list(argv)
        self.err = err
        self.results: list[Result] = [Result({}, [])]
        self.warnings: list[Any] = []
        self.failed = False

    def view(self) -> dict[str, Any]:
        """The table the command line asks for (read when the run succeeded, so it
        parses): its command, ss's -o/-e/-m/-i for the wide columns, -H for no headers."""
        from .cli import build_parser

        args = build_parser().parse_args(self.argv)

        def flag(name: str) -> bool:
            return bool(getattr(args, name, False))

        command = args.command
        return {"command": command, "wide": any(map(flag, ("options", "extended", "memory", "info"))),
                "show_headers": not flag("no_header"),
                "sockets": command in ("sockets", "pods") or (command == "triage" and flag("sockets"))}

    def _say(self, line: str) -> None:
        try:
            print(line, file=self.err or sys.stderr, flush=True)
        except (OSError, ValueError):  # stderr closed: the exit code still tells
            pass

    def emit(self, record: Any) -> None:
        kind = record.type
        self.counts[kind] += 1
        if kind == "warning":
            self.warnings.append(record)
        elif kind == "error":
            self.failed = True
        elif kind == "netns":
            self._netns(record)
        elif kind == "end":
            self._render()
        elif kind != "hello":
            self.results[-1].records.append(record)

    def emit_batch(self, records: list) -> None:
        self.counts[records[0].type] += len(records)
        self.results[-1].records.extend(records)

    def _netns(self, ns: Any) -> None:
        """``pods``: the sockets that follow belong to this namespace."""
        pods = "host" if ns.host else ",".join(ns.pod_uids) or "-"
        if ns.error:
            self._say(f"warning: netns {escape(ns.netns_inode)} ({escape(pods)}): {escape(ns.error)}")
        target = {"kind": "netns", "namespace": str(ns.netns_inode), "name": pods}
        if not self.results[-1].target and not self.results[-1].records:
            self.results[-1] = Result(target, [])
        else:
            self.results.append(Result(target, []))

    def _render(self) -> None:
        every = Result({}, [*self.warnings, *(s for r in self.results for s in r.of("socket"))])
        for w in notable_warnings(every):
            self._say(f"warning: {escape(w.message)}")
        if self.failed:  # the error's lines on stderr say why; half a table would mislead
            return
        view = self.view()
        pods = view["command"] == "pods"
        text = report_text(self.results if pods else self.results[:1], wide=view["wide"],
                           color=use_color(sys.stdout), show_headers=view["show_headers"],
                           sockets=view["sockets"], findings=view["command"] == "triage")
        if pods and len(self.results) == 1 and self.results[0].target and view["show_headers"]:
            text = f"# {target_title(self.results[0])}\n{text}"  # one namespace still says which one it is
        if text:
            self._write((text + "\n").encode())
