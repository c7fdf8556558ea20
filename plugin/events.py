"""Closed connections, from the agent's ``event`` and ``tick`` records (``events``): which
peer and which side each one was, per-peer totals, and what one capture saw.  Pure: the
``--events`` view (``events_view.py``) and the connection rules (``rules/connections.py``)
read the same answers.

**Which side.**  A per-peer total keys on the peer's address and on the *service* port
(the port that was listened on), so that a server's thousand clients' ephemeral ports do
not make a thousand peers.  Whether this side connected (``out``) or accepted (``in``)
is judged per event, first match wins:

1. no peer (``close: unconnected``), or an unconnected UDP socket: none (``""``);
2. a failed or timed-out connect, or a socket last seen in SYN-SENT: ``out``;
3. the local port is one this namespace listens on (the target pod's declared ports): ``in``;
4. exactly one of the two ports is in the ephemeral range (32768-60999, the kernel's
   default ``ip_local_port_range``): that one is the client's side;
5. else the lower port is the service's.

The peer port of an aborted connection was zeroed by the kernel; ``seen.peer_port`` (the
agent's last sight of it) gives it back when the agent saw the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Optional

from .view import EPHEMERAL_RANGE

CLOSES = ("closed", "reset", "failed", "timeout", "unconnected")  #: the agent's ``close`` values (docs/schema.md)
OUT, IN, NONE = "out", "in", ""


class PeerKey(NamedTuple):
    """One peer of a capture: which side connected, the peer's address, the service port."""

    direction: str  #: out (this side connected) | in (this side accepted) | "" (no peer)
    address: str
    port: int  #: the listening side's port: the peer's (out), ours (in); 0 when unknown


def peer_port(e: Any) -> int:
    """The connection's remote port: the kernel's, or after an abort (which zeroed it) the
    agent's last sight of it; 0 when neither knows."""
    if e.peer_port:
        return e.peer_port
    seen = e.seen or {}
    return (seen.get("peer_port") or 0) if seen.get("peer_address") == e.peer_address else 0


def _ephemeral(port: int) -> bool:
    return EPHEMERAL_RANGE[0] <= port <= EPHEMERAL_RANGE[1]


def direction(e: Any, listening: frozenset[int] = frozenset()) -> str:
    """``out``, ``in`` or ``""`` (no peer): the rules of the module's docstring."""
    if e.close == "unconnected" or (e.netid == "udp" and e.state != "ESTAB") or not e.peer_address:
        return NONE
    if e.netid == "udp":
        return OUT  # a connected UDP socket: connect() is a client's call
    seen_state = (e.seen or {}).get("state")
    if e.close in ("failed", "timeout") or seen_state == "SYN-SENT":
        return OUT
    local, remote = e.local_port, peer_port(e)
    if local in listening:
        return IN
    if not remote:
        return OUT if _ephemeral(local) else IN
    if _ephemeral(local) != _ephemeral(remote):
        return OUT if _ephemeral(local) else IN
    return OUT if remote <= local else IN


def peer_key(e: Any, listening: frozenset[int] = frozenset()) -> PeerKey:
    side = direction(e, listening)
    if side == NONE:
        return PeerKey(NONE, "", 0)
    return PeerKey(side, e.peer_address, peer_port(e) if side == OUT else e.local_port)


class Totals:
    """The connections of one peer (or of anything grouped): counts by close, durations, bytes."""

    __slots__ = ("by_close", "bytes_received", "bytes_sent", "connections", "duration_ms", "durations",
                 "retrans", "udp")

    def __init__(self) -> None:
        self.connections = self.udp = self.durations = 0
        self.duration_ms = 0.0  #: sum over the events whose duration is known (lower bounds)
        self.bytes_sent = self.bytes_received = self.retrans = 0
        self.by_close: dict[str, int] = dict.fromkeys(CLOSES, 0)

    def add(self, e: Any) -> None:
        self.connections += 1
        if e.close is None:
            self.udp += 1
        else:
            self.by_close[e.close] = self.by_close.get(e.close, 0) + 1
        if e.duration_ms is not None:
            self.durations += 1
            self.duration_ms += e.duration_ms
        self.bytes_sent += e.bytes_sent or 0
        self.bytes_received += e.bytes_received or 0
        self.retrans += e.retrans or 0

    def count(self, close: str) -> int:
        return self.by_close.get(close, 0)

    @property
    def mean_duration_ms(self) -> Optional[float]:
        return round(self.duration_ms / self.durations, 3) if self.durations else None

    def as_dict(self) -> dict[str, Any]:
        return {"connections": self.connections, **{c: self.count(c) for c in CLOSES}, "udp": self.udp,
                "mean_duration_ms": self.mean_duration_ms, "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received, "retrans": self.retrans}


def by_peer(events: Iterable[Any], listening: frozenset[int] = frozenset()) -> dict[PeerKey, Totals]:
    """Per-peer totals, in the order the peers first closed a connection."""
    out: dict[PeerKey, Totals] = {}
    for e in events:
        key = peer_key(e, listening)
        totals = out.get(key)
        if totals is None:
            totals = out[key] = Totals()
        totals.add(e)
    return out


class Capture(NamedTuple):
    """What one ``events`` run saw in one network namespace (``triage --events``, the view)."""

    events: Sequence[Any]  #: Event records
    ticks: Sequence[Any] = ()  #: Tick records; the last one ``final`` when the agent ended cleanly
    listening: frozenset[int] = frozenset()  #: local ports known to listen (the pod's declared ports)
    seconds: Optional[float] = None  #: how long it ran, when no tick says

    def last_tick(self) -> Optional[Any]:
        return self.ticks[-1] if self.ticks else None

    def span_s(self) -> float:
        """How long the capture ran: the last tick's ``elapsed_ms``, else ``seconds``."""
        tick = self.last_tick()
        if tick is not None and (tick.final or self.seconds is None):
            return tick.elapsed_ms / 1000
        return self.seconds or 0.0

    def kernel(self, name: str) -> Optional[int]:
        """A namespace TCP counter's change over the capture (the final tick's; None unknown)."""
        tick = self.last_tick()
        return (tick.total.get("kernel") or {}).get(name) if tick is not None else None

    def peers(self) -> dict[PeerKey, Totals]:
        return by_peer(self.events, self.listening)


def capture_of(records: Iterable[Any], listening: frozenset[int] = frozenset(),
               seconds: Optional[float] = None) -> Capture:
    records = list(records)
    return Capture([r for r in records if r.type == "event"], [r for r in records if r.type == "tick"],
                   listening, seconds)


def declared_ports(pod: Optional[Mapping]) -> frozenset[int]:
    """The TCP ports a pod's containers declare: where it listens (rule 3 of ``direction``)."""
    if not pod:
        return frozenset()
    from .podspec import container_ports

    return frozenset(p.port for p in container_ports(pod) if p.protocol == "TCP")


# --- names ------------------------------------------------------------------------------------

Namer = Callable[[Optional[str], Optional[int]], Optional[Any]]
"""``PeerIndex.lookup``: (address, remote port) -> a ``peers.Peer`` or None."""


def peer_of(key: PeerKey, lookup: Optional[Namer]) -> Optional[Any]:
    """The pod, Service or node a peer is (its remote port helps name hostNetwork pods and
    NodePorts only when this side connected to it)."""
    if lookup is None or not key.address:
        return None
    return lookup(key.address, key.port if key.direction == OUT else None)


def host_text(address: str, peer: Optional[Any]) -> str:
    """The peer's name, else its address as ss prints it (``[::1]``)."""
    if peer is not None:
        return str(peer)
    return f"[{address}]" if ":" in address else address


def peer_text(key: PeerKey, peer: Optional[Any]) -> str:
    """``svc/NS/NAME:80`` (out), ``pod/NS/NAME`` (in: the client's ports say nothing),
    ``(no peer)`` for listeners and unconnected sockets."""
    if key.direction == NONE:
        return "(no peer)"
    host = host_text(key.address, peer)
    return f"{host}:{key.port or '*'}" if key.direction == OUT else host
