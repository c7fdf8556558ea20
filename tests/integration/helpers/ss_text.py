"""Read ``ss -nH`` text into the agent's canonical form, so rows can be compared.

ss prints ``[::1]``, ``*`` for a dual-stack ``::``, ``0.0.0.0%lo`` for a bound device,
``*`` for a unix socket without a name or peer, and hides the Netid column when
exactly one table is selected and the State column when exactly one state is; the
agent says ``::1``, ``::``, ``interface: "lo"`` and ``null``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

NETIDS = {"tcp", "udp", "raw", "u_str", "u_dgr", "u_seq", "nl", "p_raw", "p_dgr", "v_str", "v_dgr",
          "icmp6", "mptcp", "sctp", "dccp", "xdp", "tipc", "???"}
AGENT_NETIDS = {"tcp", "udp", "raw", "u_str", "u_dgr", "u_seq"}
STATES = {"ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "UNCONN",
          "CLOSE-WAIT", "LAST-ACK", "LISTEN", "CLOSING", "UNKNOWN"}
_USER = re.compile(r'\("([^"]*)",pid=(\d+),fd=(\d+)\)')


@dataclass(frozen=True)
class Row:
    netid: Optional[str]
    state: Optional[str]
    recv_q: int
    send_q: int
    local_address: Optional[str]
    local_port: int
    peer_address: Optional[str]
    peer_port: int
    interface: Optional[str]
    users: tuple[tuple[str, int, int], ...]  #: (comm, pid, fd), sorted
    extra: str  #: whatever follows the columns (timers, -e fields, skmem, ...)

    @property
    def key(self) -> tuple:
        """What identifies a socket: netid and both endpoints."""
        return (self.netid, self.local_address, self.local_port, self.peer_address, self.peer_port)


def inet_endpoint(text: str) -> tuple[str, int, Optional[str]]:
    """``[::1]:22`` / ``*:8443`` / ``0.0.0.0%lo:6000`` -> (address, port, device)."""
    host, _, port = text.rpartition(":")
    dev = None
    if host.startswith("["):
        close = host.index("]")
        host, rest = host[1:close], host[close + 1:]
        if rest.startswith("%"):
            dev = rest[1:]
    elif "%" in host:
        host, _, dev = host.partition("%")
    if host == "*":  # a dual-stack (not v6only) ::
        host = "::"
    return host, 0 if port == "*" else int(port), dev


def parse_line(line: str, netid: Optional[str] = None, state: Optional[str] = None) -> Row:
    users: list[tuple[str, int, int]] = []
    extra = ""
    at = line.find(" users:((")
    if at >= 0:
        end = line.find("))", at) + 2
        users = [(c, int(p), int(f)) for c, p, f in _USER.findall(line[at:end])]
        line, extra = line[:at], line[end:]
    words = line.split()
    if words[0] in NETIDS:
        netid = words.pop(0)
    if words[0] in STATES:
        state = words.pop(0)
    recv_q, send_q = int(words[0]), int(words[1])
    if netid is not None and netid.startswith("u_"):
        local, lport, peer, pport = words[2:6]
        rest = words[6:]
        row_local: Optional[str] = None if local == "*" else local
        row_peer: Optional[str] = None if peer == "*" else peer
        lp, pp, dev = int(lport), int(pport), None
    else:
        row_local, lp, dev = inet_endpoint(words[2])
        row_peer, pp, _ = inet_endpoint(words[3])
        rest = words[4:]
    if rest:
        extra = " ".join(rest) + extra
    return Row(netid, state, recv_q, send_q, row_local, lp, row_peer, pp, dev, tuple(sorted(users)),
               extra.strip())


def parse(text: str, netid: Optional[str] = None, state: Optional[str] = None) -> list[Row]:
    """Rows of ``ss -nH`` output.  ``netid``/``state`` fill in a hidden column.  Rows of
    tables the agent does not dump (netlink, packet, ...) are dropped."""
    lines: list[str] = []
    for line in text.splitlines():
        if line[:1].isspace() and lines:  # -m/-i data of inet rows: "\n\t skmem:(...)"
            lines[-1] += " " + line.strip()
        elif line.strip():
            lines.append(line)
    rows = [parse_line(line, netid, state) for line in lines]
    return [r for r in rows if r.netid is None or r.netid in AGENT_NETIDS]


def agent_row(rec: dict, *, cut_comm: bool = True) -> Row:
    """An agent socket record in ss's terms.  ss reads comm up to the first ')'
    (``%[^)]``): ``cut_comm`` applies that to the agent's (complete) comm."""
    users = tuple(sorted(
        (p["comm"].split(")", 1)[0] if cut_comm else p["comm"], p["pid"], p["fd"])
        for p in rec.get("processes") or ()))
    return Row(rec["netid"], rec["state"], rec["recv_q"], rec["send_q"], rec["local_address"],
               rec["local_port"], rec["peer_address"], rec["peer_port"], rec["interface"], users, "")


def bare(row: Row) -> Row:
    """The row without its trailing extras (timers, details, memory), for equality."""
    return Row(*(getattr(row, f) for f in Row.__dataclass_fields__ if f != "extra"), "")


def snapshot(run_ss, run_agent, tries: int = 3):
    """``(ss rows, agent run)`` taken back to back.  ss runs before and after the
    agent; if those two differ, the table changed under us (a timer fired) and the
    pair is taken again, so a difference that remains is the agent's."""
    for _ in range(tries):
        before = run_ss()
        run = run_agent()
        after = run_ss()
        if sorted(map(repr, map(bare, before))) == sorted(map(repr, map(bare, after))):
            break
    return after, run
