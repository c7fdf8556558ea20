"""NETLINK_SOCK_DIAG: inet_diag (TCP, UDP, RAW over IPv4/IPv6) and unix_diag, as ``ss`` uses them.

``parse_inet`` / ``parse_unix`` turn one reply payload into a ``Socket``; they do no
I/O and are fed captured bytes in the unit tests.  Layouts: ``include/uapi/linux/
inet_diag.h``, ``unix_diag.h``, ``tcp.h`` (offsets in ../shared/reference/ss.md).
"""

from __future__ import annotations

import _socket
import operator
import struct
import sys
from collections.abc import Callable
from typing import Any, Optional

from ..netlink import ProtocolError, Split, parse_attrs, parse_datagram
from ..schema import (
    STATE_NAMES,
    Extended,
    SkMem,
    Socket,
    Timer,
    json_string,
    socket_to_json,
    text,
)
from .processes import Owners

SOCK_DIAG_BY_FAMILY = 20

IPPROTO_TCP, IPPROTO_UDP, IPPROTO_RAW = 6, 17, 255

# inet_diag_req_v2 (56 bytes): family, protocol, ext, raw-protocol pad, states, zeroed sockid.
_INET_REQ = struct.Struct("=BBBBI48x")
# unix_diag_req (24 bytes): family, protocol, pad, states, ino, show, cookie[2].
_UNIX_REQ = struct.Struct("=BBHIIIII")

# inet_diag_msg (72 bytes), one layout per family so IPv4 reads its address as one int.
# Ports are big-endian, read in host order here and swapped by the parser.
_INET_MSG_V4 = struct.Struct("=BBBBHHI12xI12xIIIIIIII")
_INET_MSG_V6 = struct.Struct("=BBBBHH16s16sIIIIIIII")
_INET_MSG_LEN = 72
# nlmsghdr + inet_diag_msg in one read, for the line-writing loop (``inet_lines``): length,
# then type+flags+seq as one u64 (compared whole), state, ports, addresses, ifindex, cookie
# (a u64 on little-endian hosts), queues, uid, inode.
_INET_LINE_V4 = struct.Struct("=IQ4xxBxxHHI12xI12xIQ4xIIII")
_INET_LINE_V6 = struct.Struct("=IQ4xxBxxHH16s16sIQ4xIIII")
_INET_LINE_LEN = 16 + _INET_MSG_LEN
_KIND_FLAGS_SEQ = struct.Struct("=HHI")
_LITTLE_ENDIAN = sys.byteorder == "little"
NLM_F_MULTI = 0x2
_UNIX_MSG = struct.Struct("=BBBBIII")
_UNIX_MSG_LEN = 16
_U8 = struct.Struct("=B")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_U32X2 = struct.Struct("=II")

# inet_diag attribute types
INET_DIAG_MEMINFO, INET_DIAG_INFO, INET_DIAG_VEGASINFO, INET_DIAG_CONG = 1, 2, 3, 4
INET_DIAG_SKMEMINFO, INET_DIAG_SHUTDOWN = 7, 8
INET_DIAG_SKV6ONLY, INET_DIAG_MARK, INET_DIAG_CGROUP_ID = 11, 15, 21
# idiag_ext request bits (1 << (attribute - 1)), as ss sends them for -m and -i.
EXT_MEMORY = 0x41
EXT_INFO = 0x0E

# unix_diag show flags and attribute types
UDIAG_SHOW_NAME, UDIAG_SHOW_VFS, UDIAG_SHOW_PEER, UDIAG_SHOW_ICONS = 0x1, 0x2, 0x4, 0x8
UDIAG_SHOW_RQLEN, UDIAG_SHOW_MEMINFO, UDIAG_SHOW_UID = 0x10, 0x20, 0x40
UNIX_DIAG_NAME, UNIX_DIAG_VFS, UNIX_DIAG_PEER, UNIX_DIAG_ICONS = 0, 1, 2, 3
UNIX_DIAG_RQLEN, UNIX_DIAG_MEMINFO, UNIX_DIAG_SHUTDOWN, UNIX_DIAG_UID = 4, 5, 6, 7

UNIX_NETIDS = {_socket.SOCK_STREAM: "u_str", _socket.SOCK_DGRAM: "u_dgr", _socket.SOCK_SEQPACKET: "u_seq"}
INET_NETIDS = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_RAW: "raw"}
TIMER_NAMES = {1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}
SHUTDOWN_TEXT = ("<->", "-->", "<--", "---")
SKMEM_FIELDS = ("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc", "wmem_queued",
                "optmem", "backlog", "drops")
ST_LISTEN, ST_CLOSE = 10, 7
_V6ONLY_STATES = (ST_LISTEN, ST_CLOSE)  # the kernel sends INET_DIAG_SKV6ONLY for these only
# NamedTuple's generated __new__ is a Python function; the C constructor with all
# fields in order is several times cheaper in the per-socket loop.
_new_socket = tuple.__new__
# State text by kernel state number, padded so any byte indexes it.
_STATE_TEXT = tuple(STATE_NAMES) + ("UNKNOWN",) * (256 - len(STATE_NAMES))


def inet_request(family: int, protocol: int, states: int, ext: int = 0) -> bytes:
    """The inet_diag_req_v2 payload of a dump of one family and protocol."""
    raw_protocol = protocol if protocol == IPPROTO_RAW else 0
    return _INET_REQ.pack(family, protocol, ext, raw_protocol, states)


# INET_DIAG_REQ_BYTECODE holding one inet_diag_bc_op {INET_DIAG_BC_AUTO, yes 4, no 8}: the
# kernel keeps sockets without SOCK_BINDPORT_LOCK, its meaning of ss's `autobound`.
AUTOBOUND_BYTECODE = struct.pack("=HHBBH", 8, 1, 6, 4, 8)
_COOKIE = struct.Struct("=II")


def inet_cookie(buf: memoryview | bytes, start: int, end: int) -> int:
    """Only the cookie of an inet_diag_msg (sockid.cookie at offset 44)."""
    if end - start < _INET_MSG_LEN:
        raise ProtocolError(f"inet_diag_msg of {end - start} bytes (need {_INET_MSG_LEN})")
    low, high = _COOKIE.unpack_from(buf, start + 44)
    return high << 32 | low


def unix_request(states: int, show: int) -> bytes:
    return _UNIX_REQ.pack(_socket.AF_UNIX, 0, 0, states, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)


# --- tcp_info --------------------------------------------------------------------------

# (name, offset, struct, divisor): times the kernel gives in microseconds are turned
# into milliseconds (as ss prints them); rates (bytes/s) into bits/s.
_U32_AT = struct.Struct("=I")
_TCP_INFO_FIELDS: tuple[tuple[str, int, struct.Struct, float], ...] = tuple(
    (name, off, _U64 if wide else _U32_AT, div)
    for name, off, wide, div in (
        ("rto_ms", 8, False, 1000.0), ("ato_ms", 12, False, 1000.0), ("mss", 16, False, 0),
        ("rcv_mss", 20, False, 0), ("unacked", 24, False, 0), ("sacked", 28, False, 0),
        ("lost", 32, False, 0), ("retrans", 36, False, 0), ("fackets", 40, False, 0),
        ("last_data_sent_ms", 44, False, 0), ("last_ack_sent_ms", 48, False, 0),
        ("last_data_recv_ms", 52, False, 0), ("last_ack_recv_ms", 56, False, 0),
        ("pmtu", 60, False, 0), ("rcv_ssthresh", 64, False, 0), ("rtt_ms", 68, False, 1000.0),
        ("rttvar_ms", 72, False, 1000.0), ("ssthresh", 76, False, 0), ("cwnd", 80, False, 0),
        ("advmss", 84, False, 0), ("reordering", 88, False, 0), ("rcv_rtt_ms", 92, False, 1000.0),
        ("rcv_space", 96, False, 0), ("total_retrans", 100, False, 0),
        ("pacing_rate_bps", 104, True, 0.125), ("max_pacing_rate_bps", 112, True, 0.125),
        ("bytes_acked", 120, True, 0), ("bytes_received", 128, True, 0), ("segs_out", 136, False, 0),
        ("segs_in", 140, False, 0), ("notsent_bytes", 144, False, 0), ("min_rtt_ms", 148, False, 1000.0),
        ("data_segs_in", 152, False, 0), ("data_segs_out", 156, False, 0),
        ("delivery_rate_bps", 160, True, 0.125), ("busy_ms", 168, True, 1000.0),
        ("rwnd_limited_ms", 176, True, 1000.0), ("sndbuf_limited_ms", 184, True, 1000.0),
        ("delivered", 192, False, 0), ("delivered_ce", 196, False, 0), ("bytes_sent", 200, True, 0),
        ("bytes_retrans", 208, True, 0), ("dsack_dups", 216, False, 0), ("reord_seen", 220, False, 0),
        ("rcv_ooopack", 224, False, 0), ("snd_wnd", 228, False, 0),
    )
)
_TCPI_OPTIONS = ((1, "ts"), (2, "sack"), (4, "wscale"), (8, "ecn"), (16, "ecnseen"), (32, "fastopen"))
_CA_STATES = ("open", "disorder", "cwr", "recovery", "loss")
_U32_MAX, _U64_MAX = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


def parse_tcp_info(data: bytes | memoryview, congestion: Optional[str] = None) -> dict[str, Any]:
    """struct tcp_info (any length the kernel sends) to named fields."""
    size = len(data)
    if size < 8:
        raise ProtocolError(f"tcp_info of {size} bytes")
    _state, ca_state, _retransmits, probes, backoff, options, wscale, flags = struct.unpack_from("=8B", data)
    info: dict[str, Any] = {
        "congestion": congestion,
        "ca_state": _CA_STATES[ca_state] if ca_state < len(_CA_STATES) else str(ca_state),
        "probes": probes,
        "backoff": backoff,
        "options": [name for bit, name in _TCPI_OPTIONS if options & bit],
        "app_limited": bool(flags & 1),
    }
    if options & 4:
        info["snd_wscale"], info["rcv_wscale"] = wscale & 0xF, wscale >> 4
    for name, off, fmt, div in _TCP_INFO_FIELDS:
        if off + fmt.size > size:
            break
        value = fmt.unpack_from(data, off)[0]
        if div:
            if value in (_U32_MAX, _U64_MAX):  # "unset" (e.g. min_rtt, pacing_rate)
                value = None
            else:
                value = value / div
                if div == 0.125:
                    value = int(value)
        info[name] = value
    rtt, cwnd, mss = info.get("rtt_ms"), info.get("cwnd"), info.get("mss")
    if rtt and cwnd and mss:  # ss's "send" estimate: cwnd * mss over one rtt
        info["send_bps"] = int(cwnd * mss * 8000 / rtt)
    return info


# --- inet ------------------------------------------------------------------------------

class AddressText(dict):
    """Raw address -> text, each address converted once: an IPv4 address as the int the
    message layouts read (host order of the wire bytes), an IPv6 one as its 16 bytes."""

    def __init__(self, family: int) -> None:
        super().__init__()
        self.family = family

    def __missing__(self, raw: Any) -> str:
        text = self[raw] = _socket.inet_ntop(self.family, _U32.pack(raw) if self.family == _socket.AF_INET else raw)
        return text


class InterfaceJson(dict):
    """ifindex -> the interface's name as JSON text (``null`` for 0), each looked up once."""

    def __init__(self, ifname: Callable[[int], Optional[str]]) -> None:
        super().__init__()
        self.ifname = ifname

    def __missing__(self, index: int) -> str:
        text = self[index] = json_string(self.ifname(index) if index else None)
        return text


def v6only_of(attrs: dict[int, Any]) -> Optional[bool]:
    """INET_DIAG_SKV6ONLY, which the kernel sends for IPv6 LISTEN and CLOSE sockets only."""
    raw = attrs.get(INET_DIAG_SKV6ONLY)
    return bool(raw[0]) if raw is not None else None


def inet_parser(family: int, protocol: int, *, timers: bool = False, extended: bool = False,
                memory: bool = False, info: bool = False,
                ifname: Callable[[int], Optional[str]] = lambda i: None,
                owners: Optional[Owners] = None, marks: bool = False) -> Callable[[Any, int, int], Socket]:
    """A parser of inet_diag replies of one (family, protocol) dump into Socket records.

    A closure rather than a class: this runs once per socket (tens of thousands per
    run) and local variables are the cheapest lookups Python has.  It caches address
    text by raw address; ``owners`` (socket inode -> processes) fills ``processes`` for
    ss -p.  ``marks`` fills ``extended`` with ``fwmark`` and ``cgroup_id`` even without
    ``extended`` (the filter's fwmark/cgroup conditions read them).
    """
    family_name = "inet" if family == _socket.AF_INET else "inet6"
    netid = INET_NETIDS[protocol]
    unpack = (_INET_MSG_V4 if family == _socket.AF_INET else _INET_MSG_V6).unpack_from
    addrs = AddressText(family)
    want_attrs = extended or memory or info or marks
    v6 = family == _socket.AF_INET6
    states = _STATE_TEXT
    new = _new_socket

    def attrs_of(buf: Any, start: int, end: int) -> tuple:
        try:
            return _inet_attrs(parse_attrs(buf, start, end))
        except (struct.error, IndexError) as exc:  # an attribute shorter than its type
            raise ProtocolError(f"malformed inet_diag attribute: {exc}") from None

    def _inet_attrs(attrs: dict[int, Any]) -> tuple:
        ext = skmem = tcp_info = None
        if extended or marks:
            ext = Extended()
            shutdown = attrs.get(INET_DIAG_SHUTDOWN) if extended else None
            if shutdown:  # not sent for TIME-WAIT and request socks: ss then prints none either
                ext["shutdown"] = SHUTDOWN_TEXT[shutdown[0] & 3]
            if INET_DIAG_MARK in attrs:
                ext["fwmark"] = _U32.unpack_from(attrs[INET_DIAG_MARK])[0]
            if INET_DIAG_CGROUP_ID in attrs:
                ext["cgroup_id"] = _U64.unpack_from(attrs[INET_DIAG_CGROUP_ID])[0]
        if memory and INET_DIAG_SKMEMINFO in attrs:
            skmem = parse_skmem(attrs[INET_DIAG_SKMEMINFO])
        if info and INET_DIAG_INFO in attrs:
            cong = attrs.get(INET_DIAG_CONG)
            name = bytes(cong).split(b"\0", 1)[0].decode("ascii", "replace") if cong is not None else None
            tcp_info = parse_tcp_info(attrs[INET_DIAG_INFO], name)
        return v6only_of(attrs), ext, skmem, tcp_info

    def parse(buf: Any, start: int, end: int) -> Socket:
        if end - start < _INET_MSG_LEN:
            raise ProtocolError(f"inet_diag_msg of {end - start} bytes (need {_INET_MSG_LEN})")
        (_family, state, timer, retrans, sport, dport, src, dst, ifindex, cookie0, cookie1,
         expires, rqueue, wqueue, uid, inode) = unpack(buf, start)
        processes = None
        if owners is not None:  # inode 0 (TIME-WAIT, request socks) never has owners
            processes = owners.get(inode, []) if inode else []
        timer_rec = None
        if timers and timer:
            timer_rec = Timer(name=TIMER_NAMES.get(timer, "unknown"), expires_ms=expires,
                              retrans=retrans if timer != 3 else 0)
        v6only = ext = skmem = tcp_info = None
        # ss: the v6only flag is only sent for LISTEN and CLOSE sockets.
        if want_attrs or (v6 and state in _V6ONLY_STATES):
            v6only, ext, skmem, tcp_info = attrs_of(buf, start + _INET_MSG_LEN, end)
        # Ports are big-endian on the wire, read in host order with the rest: swap here.
        return new(Socket, (
            family_name, netid, states[state], rqueue, wqueue,
            addrs[src], (sport >> 8) | (sport & 0xFF) << 8, addrs[dst], (dport >> 8) | (dport & 0xFF) << 8,
            ifname(ifindex) if ifindex else None, inode, uid, cookie1 << 32 | cookie0,
            v6only, processes, timer_rec, ext, skmem, tcp_info,
        ))

    return parse


class CookieWindow:
    """Drops a socket the kernel lists twice in one dump (same cookie).

    A dump resumes each datagram at (hash bucket, position in its chain); a socket
    added to the head of that chain meanwhile (or a TIME-WAIT sock that took its
    place) shifts the chain, and the kernel lists the one before the resume point
    again, first thing in the next datagram or chunk.  So a twice-listed socket is
    always one listed in the same or the previous datagram, and remembering those
    cookies finds every such repeat at a flat cost (a set of every cookie of a dump
    would cost more memory than the rest of the run).  ``dropped`` counts them.
    """

    __slots__ = ("current", "dropped", "previous")

    def __init__(self) -> None:
        self.current: set[int] = set()
        self.previous: set[int] = set()
        self.dropped = 0

    def next_datagram(self) -> None:
        self.previous, self.current = self.current, set()

    def first(self, cookie: Optional[int]) -> bool:
        """True the first time a cookie is seen (and for a socket without one)."""
        if cookie is None:
            return True
        if cookie in self.current or cookie in self.previous:
            self.dropped += 1
            return False
        self.current.add(cookie)
        return True

    def unique(self, socks: list[Socket]) -> list[Socket]:
        """One datagram's sockets without repeats (checked as a whole: repeats are rare)."""
        self.next_datagram()
        cookies = set(map(_COOKIE_OF, socks))
        if len(cookies) == len(socks) and self.previous.isdisjoint(cookies):
            self.current = cookies
            return socks
        return [s for s in socks if self.first(s.cookie)]


_COOKIE_OF = operator.attrgetter("cookie")


def unique(parse: Callable[[Any, int, int], Socket], window: CookieWindow) -> Split:
    """A datagram splitter that parses each message with ``parse`` and drops repeats."""

    def split(buf: Any, size: int, seq: int) -> tuple[list[Socket], bool, bool]:
        socks, done, interrupted = parse_datagram(buf, size, seq, parse)
        return window.unique(socks), done, interrupted

    return split


def _kept(sock: Socket, window: CookieWindow) -> Optional[Socket]:
    return sock if window.first(sock.cookie) else None


def inet_lines(family: int, protocol: int, window: CookieWindow, *,
               ifname: Callable[[int], Optional[str]] = lambda i: None,
               owners: Optional[Owners] = None) -> Split:
    """A datagram splitter that turns plain inet_diag replies (no timers, attributes or
    filter) straight into JSON lines, without building Socket records: the hot path of
    ``sockets -t``/``-u`` (with or without ``-p``).

    Each line is byte for byte ``socket_to_json`` of the record ``inet_parser`` would
    build (tests/unit/test_sockdiag_lines.py); this is the one place besides that
    function that writes socket JSON, because a record per socket cost a third of the
    run.  The loop reads a datagram's messages while they are ordinary (data, this
    request, flags NLM_F_MULTI only, a cookie not seen in this or the previous
    datagram, no v6only attribute to read); from the first that is not, the rest goes
    through ``parse_datagram`` and the record parser, so errors, the end of the reply,
    attributes and repeats are handled in one place.  Repeats are dropped through
    ``window``.
    """
    parse = inet_parser(family, protocol, ifname=ifname, owners=owners)
    v6 = family == _socket.AF_INET6
    unpack = (_INET_LINE_V6 if v6 else _INET_LINE_V4).unpack_from
    addrs = AddressText(family)
    ifaces = InterfaceJson(ifname)
    prefix = '{"type":"socket","family":"%s","netid":"%s","state":"%%s","recv_q":' % (
        "inet6" if v6 else "inet", INET_NETIDS[protocol])
    heads = [prefix % name for name in _STATE_TEXT]
    owner_json = owners.json if owners is not None else None
    full = _INET_LINE_LEN

    def rest(buf: Any, start: int, end: int) -> Optional[str]:
        sock = _kept(parse(buf, start, end), window)
        return None if sock is None else socket_to_json(sock)

    def split(buf: Any, size: int, seq: int) -> tuple[list[str], bool, bool]:
        window.next_datagram()
        current, previous = window.current, window.previous
        seen = current.add
        # type, flags and sequence number of an ordinary message, as the u64 the layout reads
        expect = _U64.unpack(_KIND_FLAGS_SEQ.pack(SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, seq))[0]
        lines: list[str] = []
        append = lines.append
        off = 0
        last = size - full if _LITTLE_ENDIAN else -1  # the cookie is read as one u64: little-endian only
        while off <= last:
            (length, kind_flags_seq, state, sport, dport, src, dst, ifindex, cookie, rq, wq, uid,
             inode) = unpack(buf, off)
            end = off + length
            if (kind_flags_seq != expect or length < full or end > size
                    or cookie in current or cookie in previous or (v6 and state in _V6ONLY_STATES)):
                break
            seen(cookie)
            tail = "}" if owner_json is None else f',"processes":{owner_json(inode) if inode else "[]"}}}'
            append(f'{heads[state]}{rq},"send_q":{wq},"local_address":"{addrs[src]}",'
                   f'"local_port":{(sport >> 8) | (sport & 0xFF) << 8},"peer_address":"{addrs[dst]}",'
                   f'"peer_port":{(dport >> 8) | (dport & 0xFF) << 8},"interface":{ifaces[ifindex]},'
                   f'"inode":{inode},"uid":{uid},"cookie":{cookie},"v6only":null{tail}')
            off = (end + 3) & ~3
        more, done, interrupted = parse_datagram(buf, size, seq, rest, off)
        return lines + more if more else lines, done, interrupted

    return split


def parse_skmem(data: bytes | memoryview) -> SkMem:
    count = min(len(data) // 4, len(SKMEM_FIELDS))
    values = struct.unpack_from("=%dI" % count, data)
    return SkMem(**dict(zip(SKMEM_FIELDS, values)))  # type: ignore[typeddict-item]


# --- unix ------------------------------------------------------------------------------

def unix_name(raw: bytes | memoryview) -> str:
    """ss's text for a unix socket name: ``@`` for abstract names (every NUL shown as
    ``@``), a path cut at its first NUL; undecodable bytes kept as ``\\xNN``."""
    data = bytes(raw)
    if data[:1] == b"\0":
        data = data.replace(b"\0", b"@")
    else:
        data = data.split(b"\0", 1)[0]
    return text(data)


def parse_unix(buf: memoryview | bytes, start: int, end: int, *, extended: bool = False,
               memory: bool = False, owners: Optional[Owners] = None) -> Socket:
    """One unix_diag_msg and its attributes."""
    try:
        return _parse_unix(buf, start, end, extended, memory, owners)
    except (struct.error, IndexError) as exc:  # an attribute shorter than its type
        raise ProtocolError(f"malformed unix_diag attribute: {exc}") from None


def _parse_unix(buf: memoryview | bytes, start: int, end: int, extended: bool, memory: bool,
                owners: Optional[Owners]) -> Socket:
    if end - start < _UNIX_MSG_LEN:
        raise ProtocolError(f"unix_diag_msg of {end - start} bytes (need {_UNIX_MSG_LEN})")
    _family, kind, state, _pad, inode, cookie0, cookie1 = _UNIX_MSG.unpack_from(buf, start)
    attrs = parse_attrs(buf, start + _UNIX_MSG_LEN, end)
    name = attrs.get(UNIX_DIAG_NAME)
    peer = attrs.get(UNIX_DIAG_PEER)
    rq, wq = _U32X2.unpack_from(attrs[UNIX_DIAG_RQLEN]) if UNIX_DIAG_RQLEN in attrs else (0, 0)
    uid = attrs.get(UNIX_DIAG_UID)
    ext = skmem = None
    if extended:
        shutdown = attrs.get(UNIX_DIAG_SHUTDOWN)
        ext = Extended()
        if shutdown:  # always sent by unix_diag; left out (as ss does) if it ever is not
            ext["shutdown"] = SHUTDOWN_TEXT[shutdown[0] & 3]
        vfs = attrs.get(UNIX_DIAG_VFS)
        if vfs is not None:
            vfs_ino, dev = _U32X2.unpack_from(vfs)
            # ss applies glibc major()/minor() to the kernel's encoding; so do we.
            ext["vfs_inode"] = vfs_ino
            ext["vfs_dev"] = "%d/%d" % ((dev >> 8) & 0xFFF, (dev & 0xFF) | ((dev >> 12) & ~0xFF))
        icons = attrs.get(UNIX_DIAG_ICONS)
        if icons is not None:
            ext["peers"] = list(struct.unpack_from("=%dI" % (len(icons) // 4), icons))
    if memory and UNIX_DIAG_MEMINFO in attrs:
        skmem = parse_skmem(attrs[UNIX_DIAG_MEMINFO])
    return Socket(
        "unix", UNIX_NETIDS.get(kind, f"u_{kind}"), STATE_NAMES[state] if state < 13 else "UNKNOWN",
        rq, wq, unix_name(name) if name is not None else None, inode,
        None, _U32.unpack_from(peer)[0] if peer is not None else 0,
        None, inode, _U32.unpack_from(uid)[0] if uid is not None else None, cookie1 << 32 | cookie0,
        None, owners.get(inode, []) if owners is not None else None, None, ext, skmem,
    )


def unix_show_flags(extended: bool, memory: bool) -> int:
    show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID
    if extended:
        show |= UDIAG_SHOW_VFS | UDIAG_SHOW_ICONS
    if memory:
        show |= UDIAG_SHOW_MEMINFO
    return show

