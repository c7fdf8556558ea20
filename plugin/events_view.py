"""What ``kubectl sockdebug TARGET --events`` prints: one row per closed connection as it
arrives, then per-peer totals and each target's run totals; the jsonl lines and the
json/yaml document.  Pure: ``events_run.py`` feeds it records.

Rows are printed before the next one is known, so their columns have fixed widths
(``kubectl get -w`` does the same); a longer cell pushes the rest of its row.  The
tables at the end are measured as every other table is (``render.format_table``).  Every
string from a target or the API is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Optional

from sockdebug_agent.schema import to_dict

from .events import CLOSES, NONE, Capture, Namer, PeerKey, Totals, host_text, peer_key, peer_of, peer_port, peer_text
from .render import address, escape, format_table, process_text

_CLOSE_COLORS = {"reset": "31;1", "failed": "33", "timeout": "33", "unconnected": "2"}
_WIDTHS = {"Time": 12, "Netid": 5, "Close": 11, "Local Address:Port": 21, "Peer": 30, "Duration": 8,
           "Sent": 7, "Recv": 7, "Retrans": 7, "Process": 16, "State": 11, "RTT": 7, "Segs": 9}
_RIGHT = frozenset({"Duration", "Sent", "Recv", "Retrans", "RTT", "Segs"})
_KERNEL_SHOWN = ("active_opens", "passive_opens", "attempt_fails", "estab_resets")


def duration_text(ms: Optional[float]) -> str:
    """``-`` (unknown), ``12ms``, ``1.5s``, ``2m03s``: the agent's lower bound, rounded."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60000:
        return f"{ms / 1000:.1f}s"
    return f"{int(ms // 60000)}m{int(ms % 60000 // 1000):02d}s"


def time_text(unix: float) -> str:
    """The local wall time of an event, to the millisecond: ``14:03:07.250``."""
    return time.strftime("%H:%M:%S", time.localtime(unix)) + f".{int(unix * 1000) % 1000:03d}"


def _num(v: Any) -> str:
    return "-" if v is None else escape(v)


class Rows:
    """The streaming table: ``header()`` once, then ``line(target, event, listening)`` per
    event (``listening``: the target's listening ports, ``events.direction``'s rule 3)."""

    def __init__(self, targets: Sequence[dict], lookup: Optional[Namer], *, wide: bool = False,
                 color: bool = False):
        self.lookup, self.wide, self.color = lookup, wide, color
        self.multi = len(targets) > 1
        self.containers = any(t.get("kind") == "pod" for t in targets)
        self.columns = ["Time"]
        self.widths = dict(_WIDTHS)
        if self.multi:
            self.columns += ["Namespace", "Pod"]
            self.widths["Namespace"] = max(len(escape(t.get("namespace") or "")) for t in targets)
            self.widths["Pod"] = max(len(escape(t.get("name") or "")) for t in targets)
        self.columns += ["Netid", "Close", "Local Address:Port", "Peer", "Duration", "Sent", "Recv", "Retrans"]
        if wide:
            self.columns += ["State", "RTT", "Segs"]
        self.columns += ["Process"] + (["Container"] if self.containers else [])

    def _join(self, cells: Sequence[str]) -> str:
        parts = []
        last = len(cells) - 1
        for i, (name, cell) in enumerate(zip(self.columns, cells)):
            width = self.widths.get(name, 0)
            if name in _RIGHT:
                parts.append(cell.rjust(width))
            elif i == last:
                parts.append(cell)
            else:
                parts.append(cell.ljust(width))
        return " ".join(parts).rstrip()

    def header(self) -> str:
        return self._join(self.columns)

    def cells(self, target: dict, e: Any, listening: frozenset[int] = frozenset()) -> list[str]:
        key = peer_key(e, listening)
        cells = [time_text(e.time)]
        if self.multi:
            cells += [escape(target.get("namespace") or ""), escape(target.get("name") or "")]
        cells += [escape(e.netid), escape(e.close or "-"),
                  address(e.local_address, e.local_port, e.family, None, e.interface, True),
                  escape(_peer_cell(e, key, peer_of(key, self.lookup))), duration_text(e.duration_ms),
                  _num(e.bytes_sent), _num(e.bytes_received), _num(e.retrans)]
        if self.wide:
            seen = e.seen or {}
            segs = "-" if e.segs_in is None else f"{e.segs_in}/{e.segs_out}"
            cells += [escape(seen.get("state") or "-"), _num(e.rtt_ms), escape(segs)]
        procs, containers = process_text(e.processes)
        cells.append(procs or "-")
        if self.containers:
            cells.append(containers or "-")
        return cells

    def line(self, target: dict, e: Any, listening: frozenset[int] = frozenset()) -> str:
        text = self._join(self.cells(target, e, listening))
        color = _CLOSE_COLORS.get(e.close or "") if self.color else None
        return f"\x1b[{color}m{text}\x1b[0m" if color else text


def _peer_cell(e: Any, key: PeerKey, peer: Optional[Any]) -> str:
    """The remote end of one connection: its name (or address) and its real remote port."""
    if key.direction == NONE:
        return "-"
    return f"{host_text(key.address, peer)}:{peer_port(e) or '*'}"


# --- the tables at the end -----------------------------------------------------------------------

class Item:
    """One target's stream, as the run collected it."""

    def __init__(self, target: dict, listening: frozenset[int] = frozenset()):
        self.target = target
        self.listening = listening
        self.events: list[Any] = []
        self.ticks: list[Any] = []
        self.warnings: list[Any] = []
        self.error: Optional[str] = None  #: why the stream failed, when it did
        self.cut = False  #: it did not end with its final tick (abandoned after a stop, or broken)

    def add(self, rec: Any) -> None:
        kind = rec.type
        if kind == "event":
            self.events.append(rec)
        elif kind == "tick":
            self.ticks.append(rec)
        elif kind == "warning":
            self.warnings.append(rec)

    def capture(self) -> Capture:
        return Capture(self.events, self.ticks, self.listening)

    def final(self) -> Optional[Any]:
        return self.ticks[-1] if self.ticks and self.ticks[-1].final else None


def target_cells(t: dict, multi: bool) -> list[str]:
    return [escape(t.get("namespace") or ""), escape(t.get("name") or "")] if multi else []


def peers_table(items: Sequence[Item], lookup: Optional[Namer], show_headers: bool = True) -> str:
    """Per-peer totals, most connections first (per target when there are several).  Port is
    the listening side's: the peer's for ``out``, this side's for ``in``."""
    multi = len(items) > 1
    rows: list[tuple[int, list[str]]] = []
    for item in items:
        for key, tot in item.capture().peers().items():
            peer = peer_text(key, peer_of(key, lookup)) if key.direction == NONE else host_text(
                key.address, peer_of(key, lookup))
            figures = [tot.connections, *(tot.count(c) for c in CLOSES[:4]), tot.udp]
            rows.append((tot.connections, [
                *target_cells(item.target, multi), escape(peer), key.direction or "-", str(key.port or "-"),
                *map(str, figures), duration_text(tot.mean_duration_ms),
                *map(str, (tot.bytes_sent, tot.bytes_received, tot.retrans))]))
    if not rows:
        return "no connections closed"
    rows.sort(key=lambda r: -r[0])
    headers = (["Namespace", "Pod"] if multi else []) + [
        "Peer", "Dir", "Port", "Conns", "Closed", "Reset", "Failed", "Timeout", "UDP", "Mean duration", "Sent",
        "Received", "Retrans"]
    first = 2 if multi else 0
    return format_table(headers, [r for _, r in rows], right=frozenset(range(first + 2, first + 13)),
                        show_headers=show_headers)


def run_table(items: Sequence[Item], interrupted: bool, show_headers: bool = True) -> str:
    """Each target's run totals: its final tick (the last tick, marked, when it had none)."""
    multi = len(items) > 1
    rows = []
    for item in items:
        tick = item.ticks[-1] if item.ticks else None
        total = tick.total if tick is not None else {}
        by_close, kernel = total.get("by_close") or {}, total.get("kernel") or {}
        if item.error is not None:
            ended = "failed"
        elif tick is None or not tick.final:
            ended = "cut (last tick)" if tick is not None else "cut"
        else:
            ended = "Ctrl-C" if interrupted and tick.ended_by in ("stdin", "SIGTERM") else escape(tick.ended_by)
        seconds = f"{tick.elapsed_ms / 1000:.1f}" if tick is not None else "-"
        closes = [by_close.get(c, 0) if total else None for c in (*CLOSES[:4], "none")]
        figures = [total.get("events"), *closes, total.get("unmatched"), total.get("lost"),
                   *(kernel.get(k) for k in _KERNEL_SHOWN)]
        rows.append([*target_cells(item.target, multi), seconds, *map(_num, figures), ended])
    headers = (["Namespace", "Pod"] if multi else []) + [
        "Seconds", "Events", "Closed", "Reset", "Failed", "Timeout", "UDP", "Unmatched", "Lost", "Active opens",
        "Passive opens", "Attempt fails", "Estab resets", "Ended"]
    first = 2 if multi else 0
    return format_table(headers, rows, right=frozenset(range(first, first + 13)), show_headers=show_headers)


def summary_text(items: Sequence[Item], lookup: Optional[Namer], interrupted: bool,
                 show_headers: bool = True) -> str:
    """The two tables at the end; ``--no-headers`` drops their titles and header lines."""
    peers, run = peers_table(items, lookup, show_headers), run_table(items, interrupted, show_headers)
    if not show_headers:
        return f"{peers}\n\n{run}"
    return (f"# totals per peer (Dir: out = this side connected, in = it accepted; Port: the listening side's)\n"
            f"{peers}\n\n# run totals (the agents' final ticks)\n{run}")


# --- machine-readable forms -------------------------------------------------------------------------

def event_dict(e: Any, listening: frozenset[int], lookup: Optional[Namer]) -> dict[str, Any]:
    """An event as the agent sent it, plus ``direction`` and ``peer`` ({kind, namespace?,
    name} of the pod, Service or node it is; null when nothing listed owns the address)."""
    data = to_dict(e)
    key = peer_key(e, listening)
    peer = peer_of(key, lookup)
    data["direction"] = key.direction or None
    data["peer"] = peer.as_dict() if peer is not None else None
    return data


def jsonl_record(target: dict, rec: Any, listening: frozenset[int], lookup: Optional[Namer]) -> dict[str, Any]:
    data = event_dict(rec, listening, lookup) if rec.type == "event" else to_dict(rec)
    data["target"] = target
    return data


def peer_dict(key: PeerKey, tot: Totals, lookup: Optional[Namer]) -> dict[str, Any]:
    peer = peer_of(key, lookup)
    return {"peer": peer.as_dict() if peer is not None else None, "address": key.address or None,
            "direction": key.direction or None, "port": key.port or None, **tot.as_dict()}


def document(items: Sequence[Item], lookup: Optional[Namer], interrupted: bool) -> dict[str, Any]:
    """The json/yaml document: per target its events, ticks, warnings, per-peer totals and
    run totals (the final tick's ``total``; null when the stream had none)."""
    out = []
    for item in items:
        final = item.final()
        entry: dict[str, Any] = {
            "target": item.target,
            "ended_by": final.ended_by if final is not None else None,
            "totals": final.total if final is not None else None,
            "peers": [peer_dict(k, t, lookup) for k, t in
                      sorted(item.capture().peers().items(), key=lambda kv: -kv[1].connections)],
            "events": [event_dict(e, item.listening, lookup) for e in item.events],
            "ticks": [_plain(t) for t in item.ticks],
            "warnings": [_plain(w) for w in item.warnings],
        }
        if item.error is not None:
            entry["error"] = item.error
        out.append(entry)
    return {"apiVersion": "sockdebug.io/v1", "kind": "ConnectionEvents", "interrupted": interrupted, "items": out}


def _plain(rec: Any) -> dict[str, Any]:
    data = to_dict(rec)
    del data["type"]
    return data
