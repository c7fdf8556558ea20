"""The kernel's socket-destroy messages (``sock_diag_broadcast_destroy``): bytes -> ``event`` records.

One message per full TCP or UDP socket freed: an inet_diag_msg whose uid and inode are
zero, then INET_DIAG_PROTOCOL (u8) and, for TCP, INET_DIAG_INFO (the final tcp_info).
The message body is read by the dump's own ``inet_parser``; what is added here is the
protocol dispatch, a one-unpack read of the tcp_info fields an event shows, and the two
judgements an event carries (how the connection ended, how long it lived at least).
All pure, tested on captured bytes (tests/unit/data/capture_events.py).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

from ..netlink import ProtocolError, parse_attrs
from ..schema import Event, Seen, Socket
from .sockdiag import INET_DIAG_INFO, IPPROTO_TCP, IPPROTO_UDP, inet_parser, parse_tcp_info

INET_DIAG_PROTOCOL = 10  # the u8 the destroy message adds (a dump's messages lack it)
_INET_MSG_LEN = 72
CLOSE_KINDS = ("closed", "reset", "failed", "timeout", "unconnected")  #: Event.close, TCP only
_ANY = ("0.0.0.0", "::")


class Destroyed(NamedTuple):
    """One parsed destroy message: the socket as a dump row would show it, and its final
    tcp_info (None for UDP) with ``tcpi_retransmits``, which ``parse_tcp_info`` leaves out."""

    sock: Socket
    tcp_info: Optional[dict[str, Any]]
    retransmits: Optional[int]


# The tcp_info fields an event shows, read in one unpack (``parse_tcp_info`` reads all
# ~50, three times the cost of the rest of an event): tcpi_retransmits, lost, last_data_sent,
# last_data_recv, rtt, total_retrans, bytes_acked, bytes_received, segs_out, segs_in,
# bytes_sent, snd_wnd (struct tcp_info of Linux >= 5.4; shorter ones take the full parse).
_TCP_FIGURES = struct.Struct("=2xB29xI8xI4xI12xI28xI16xQQII56xQ20xI")
_FIGURE_NAMES = ("lost", "last_data_sent_ms", "last_data_recv_ms", "rtt_us", "total_retrans", "bytes_acked",
                 "bytes_received", "segs_out", "segs_in", "bytes_sent", "snd_wnd")


def tcp_figures(data: Any) -> tuple[dict[str, Any], int]:
    """The final tcp_info fields events use, by ``parse_tcp_info``'s names, and tcpi_retransmits."""
    if len(data) < _TCP_FIGURES.size:
        return parse_tcp_info(data), data[2] if len(data) > 2 else 0
    retransmits, *values = _TCP_FIGURES.unpack_from(data)
    figures = dict(zip(_FIGURE_NAMES, values))
    figures["rtt_ms"] = figures.pop("rtt_us") / 1000.0
    return figures, retransmits


def destroy_parser(ifname: Callable[[int], Optional[str]] = lambda i: None, info: bool = False
                   ) -> Callable[[Any, int, int], Optional[Destroyed]]:
    """A parser of destroy messages (``parse_datagram``'s ``parse``).  The protocol comes
    from INET_DIAG_PROTOCOL, then the dump's own ``inet_parser`` reads the message.  With
    ``info`` the whole tcp_info is parsed (``-i``), else only the fields an event shows."""
    parsers: dict[tuple[int, int], Callable[[Any, int, int], Socket]] = {}

    def parse(buf: Any, start: int, end: int) -> Optional[Destroyed]:
        if end - start < _INET_MSG_LEN:
            raise ProtocolError(f"inet_diag_msg of {end - start} bytes (need {_INET_MSG_LEN})")
        family = buf[start]
        if family not in (socket.AF_INET, socket.AF_INET6):
            return None
        attrs = parse_attrs(buf, start + _INET_MSG_LEN, end)
        raw_info = attrs.get(INET_DIAG_INFO)
        raw_proto = attrs.get(INET_DIAG_PROTOCOL)
        if raw_proto is not None and len(raw_proto):
            protocol = raw_proto[0]
        else:  # only TCP's destroy message carries tcp_info
            protocol = IPPROTO_TCP if raw_info is not None else IPPROTO_UDP
        if protocol not in (IPPROTO_TCP, IPPROTO_UDP):
            return None
        parser = parsers.get((family, protocol))
        if parser is None:
            parser = parsers[family, protocol] = inet_parser(family, protocol, ifname=ifname)
        sock = parser(buf, start, end)
        if raw_info is None:
            return Destroyed(sock, None, None)
        if info:
            return Destroyed(sock, parse_tcp_info(raw_info), raw_info[2] if len(raw_info) > 2 else None)
        return Destroyed(sock, *tcp_figures(raw_info))

    return parse


def classify(sock: Socket, tcp_info: Optional[dict[str, Any]], retransmits: Optional[int],
             last_state: Optional[str] = None) -> Optional[str]:
    """How a TCP connection ended, judged from its final figures (docs/schema.md, ``close``):

    - ``unconnected``: it had no peer (a listener, or a socket that never connected);
    - ``failed`` / ``reset``: the kernel had already torn it down (``tcp_disconnect``
      keeps the peer address, zeroes the peer port and the counters): a connect that
      failed (no send window ever) / an abort of an established one (SO_LINGER 0);
    - ``timeout``: retransmissions were still unanswered (a SYN never answered, a peer gone);
    - ``failed``: no handshake ever completed (no send window, no RTT sample) but the peer
      port is kept: a non-blocking connect refused by an RST or an ICMP error (kube-proxy's
      reject of a Service without endpoints), whose error the application read with
      SO_ERROR, so ``tcp_disconnect`` never ran;
    - ``reset``: data was still unread at close, so the kernel answered with an RST;
    - ``closed``: none of these (an orderly close, or a reset *received*: they look alike).
    """
    if sock.netid != "tcp" or tcp_info is None:
        return None
    if sock.peer_port == 0:
        if sock.peer_address in _ANY:
            return "unconnected"
        window = tcp_info.get("snd_wnd")
        if window is not None:
            return "reset" if window else "failed"
        return "failed" if last_state == "SYN-SENT" else "reset"
    if retransmits:
        return "timeout"
    window = tcp_info.get("snd_wnd")
    if not tcp_info.get("rtt_ms") and (window == 0 or (window is None and last_state == "SYN-SENT")):
        return "failed"
    if sock.recv_q > 1:  # rcv_nxt - copied_seq counts the FIN too: > 1 means unread data
        return "reset"
    return "closed"


def lifetime_ms(tcp_info: Optional[dict[str, Any]], seen_age_ms: Optional[float]) -> Optional[float]:
    """A lower bound of how long the connection lived: the time since the agent first saw
    it, and tcp_info's ``last_data_sent``/``last_data_recv`` of an established connection
    (the kernel starts both clocks at the handshake; before one, they hold garbage)."""
    best = seen_age_ms
    if tcp_info and tcp_info.get("segs_in") and tcp_info.get("rtt_ms"):
        for key in ("last_data_sent_ms", "last_data_recv_ms"):
            value = tcp_info.get(key)
            if value is not None and (best is None or value > best):
                best = float(value)
    return None if best is None else round(best, 3)


def _signed(value: int) -> int:
    """A queue the kernel sends as u32, as ss prints it (UDP's send queue reads -1)."""
    return value - (1 << 32) if value >= 1 << 31 else value


def to_event(d: Destroyed, now: float, seen: Optional[Seen] = None, processes: Optional[list] = None,
             keep_info: bool = False) -> Event:
    """The ``event`` record of one destroyed socket."""
    s, info = d.sock, d.tcp_info
    last_state = seen["state"] if seen else None
    figures: tuple = (None,) * 8
    if info is not None:
        figures = (info.get("bytes_sent"), info.get("bytes_received"), info.get("bytes_acked"),
                   info.get("total_retrans"), info.get("lost"), info.get("rtt_ms") or None, info.get("segs_in"),
                   info.get("segs_out"))
    return Event(
        round(now, 3), s.family, s.netid, s.state, _signed(s.recv_q), _signed(s.send_q), s.local_address,
        s.local_port, s.peer_address, s.peer_port, s.interface, s.cookie,
        classify(s, info, d.retransmits, last_state), lifetime_ms(info, seen["age_ms"] if seen else None),
        *figures, seen, processes, info if keep_info else None)
