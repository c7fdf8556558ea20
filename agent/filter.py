"""ss's socket selection: tables, state groups and the filter expression language.

Behaviour follows iproute2 6.1 (``misc/ss.c``, ``misc/ssfilter.y``): the default
states per table, ``-a``/``-l``, ``state``/``exclude`` words, and expressions
evaluated strictly left to right (``A or B and C`` is ``(A or B) and C``).
Expressions are parsed once into a tree of predicates evaluated per Socket.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import NamedTuple, Optional

from .schema import Socket

# State bits use the kernel's TCP numbering, as ss does.
ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT = 1, 2, 3, 4, 5, 6
CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING, NEW_SYN_RECV = 7, 8, 9, 10, 11, 12
ALL = 0xFFE  # bits 1..11 (0 is unused)
CONNECTED = ALL & ~(1 << CLOSE | 1 << LISTEN)
SS_CONN = ALL & ~(1 << LISTEN | 1 << CLOSE | 1 << TIME_WAIT | 1 << SYN_RECV)

STATE_WORDS = {
    "established": 1 << ESTABLISHED, "syn-sent": 1 << SYN_SENT, "syn-recv": 1 << SYN_RECV,
    "syn-rcv": 1 << SYN_RECV, "fin-wait-1": 1 << FIN_WAIT1, "fin-wait-2": 1 << FIN_WAIT2,
    "time-wait": 1 << TIME_WAIT, "closed": 1 << CLOSE, "close": 1 << CLOSE, "unconnected": 1 << CLOSE,
    "close-wait": 1 << CLOSE_WAIT, "last-ack": 1 << LAST_ACK, "listening": 1 << LISTEN,
    "closing": 1 << CLOSING,
    "all": ALL, "connected": CONNECTED, "synchronized": CONNECTED & ~(1 << SYN_SENT),
    "bucket": 1 << SYN_RECV | 1 << TIME_WAIT, "big": ALL & ~(1 << SYN_RECV | 1 << TIME_WAIT),
}
# Record state name -> bit (SYN-RECV covers the kernel's NEW_SYN_RECV request socks).
STATE_BITS = {
    "ESTAB": 1 << ESTABLISHED, "SYN-SENT": 1 << SYN_SENT, "SYN-RECV": 1 << SYN_RECV,
    "FIN-WAIT-1": 1 << FIN_WAIT1, "FIN-WAIT-2": 1 << FIN_WAIT2, "TIME-WAIT": 1 << TIME_WAIT,
    "UNCONN": 1 << CLOSE, "CLOSE-WAIT": 1 << CLOSE_WAIT, "LAST-ACK": 1 << LAST_ACK,
    "LISTEN": 1 << LISTEN, "CLOSING": 1 << CLOSING,
}

TABLES = ("unix", "raw", "udp", "tcp")  # ss's output order
# Default states a table adds when it is selected explicitly (ss's default_dbs).
TABLE_DEFAULT_STATES = {"tcp": SS_CONN, "udp": 1 << ESTABLISHED, "raw": 1 << ESTABLISHED,
                        "u_str": SS_CONN, "u_seq": SS_CONN, "u_dgr": 1 << CLOSE}
UNIX_NETIDS = ("u_str", "u_dgr", "u_seq")


class FilterError(ValueError):
    """An invalid state word or expression; ``word`` is the offending argument."""

    def __init__(self, message: str, word: Optional[str] = None, position: Optional[int] = None):
        super().__init__(message)
        self.word, self.position = word, position


class Selection(NamedTuple):
    """Which tables, families and states to dump, and the expression to apply."""

    netids: frozenset[str]  #: tcp udp raw u_str u_dgr u_seq
    families: frozenset[str]  #: inet inet6 unix
    states: int
    expr: Optional[Callable[[Socket], bool]] = None

    def tables(self) -> list[str]:
        want = {"unix" if n in UNIX_NETIDS else n for n in self.netids}
        return [t for t in TABLES if t in want]

    def matches(self, sock: Socket) -> bool:
        return bool(STATE_BITS.get(sock.state, 0) & self.states) and (
            self.expr is None or self.expr(sock))


def select(*, tcp: bool = False, udp: bool = False, raw: bool = False, unix: bool = False,
           ipv4: bool = False, ipv6: bool = False, all_states: bool = False, listening: bool = False,
           words: Sequence[str] = (), local_port_range: tuple[int, int] = (32768, 60999)) -> Selection:
    """ss's option semantics: tables and their default states, then -a/-l, then
    ``state``/``exclude`` words, then the expression (the remaining words)."""
    netids: set[str] = set()
    states = 0
    explicit = {"tcp": tcp, "udp": udp, "raw": raw, "u_str": unix, "u_dgr": unix, "u_seq": unix}
    if any(explicit.values()):
        for netid, on in explicit.items():
            if on:
                netids.add(netid)
                states |= TABLE_DEFAULT_STATES[netid]
    else:
        netids.update(explicit)
        states = SS_CONN
    if all_states:
        states = ALL
    elif listening:
        states = 1 << LISTEN | 1 << CLOSE
    families = {"inet", "inet6", "unix"}
    if ipv4 or ipv6:
        families = ({"inet"} if ipv4 else set()) | ({"inet6"} if ipv6 else set())
        netids -= set(UNIX_NETIDS)
    words = list(words)
    saw_states = False
    while words and words[0] in ("state", "exclude"):
        verb = words.pop(0)
        if not words:
            raise FilterError(f"'{verb}' needs a state name", verb)
        name = words.pop(0)
        bits = STATE_WORDS.get(name.lower())
        if bits is None:
            raise FilterError(f"wrong state name '{name}' (see `ss --help`: established, "
                              "listening, time-wait, connected, bucket, big, ...)", name)
        if verb == "state":
            states = (states if saw_states else 0) | bits
        else:
            states = (states if saw_states else ALL) & ~bits
        saw_states = True
    expr = parse_expression(words, local_port_range) if words else None
    return Selection(frozenset(netids), frozenset(families), states, expr)


# --- expressions --------------------------------------------------------------------

Pred = Callable[[Socket], bool]
_EQ, _NE, _GT, _LT, _GE, _LE = "eq", "ne", "gt", "lt", "ge", "le"
PORT_OPS = {
    "=": _EQ, "==": _EQ, "eq": _EQ, "!=": _NE, "ne": _NE, "neq": _NE, ">": _GT, "gt": _GT,
    "<": _LT, "lt": _LT, ">=": _GE, "ge": _GE, "geq": _GE, "<=": _LE, "le": _LE, "leq": _LE,
}
_OR, _AND, _NOT = ("or", "|", "||"), ("and", "&", "&&"), ("not", "!")


class _Parser:
    def __init__(self, words: Sequence[str], local_port_range: tuple[int, int]):
        self.words = list(words)
        self.pos = 0
        self.port_range = local_port_range

    def peek(self) -> Optional[str]:
        return self.words[self.pos] if self.pos < len(self.words) else None

    def take(self, what: str) -> str:
        word = self.peek()
        if word is None:
            raise FilterError(f"unexpected end of expression: expected {what}", None, self.pos)
        self.pos += 1
        return word

    def fail(self, message: str, back: int = 1) -> FilterError:
        i = max(self.pos - back, 0)
        return FilterError(message, self.words[i] if i < len(self.words) else None, i)

    def exprlist(self, depth: int) -> Pred:
        left = self.expr(depth)
        while True:
            word = self.peek()
            if word is None or word == ")":
                return left
            if word in _OR:
                self.pos += 1
                left = _or(left, self.expr(depth))
            else:
                if word in _AND:
                    self.pos += 1
                left = _and(left, self.expr(depth))

    def expr(self, depth: int) -> Pred:
        word = self.take("a condition (src, dst, sport, dport, dev, autobound, not, '(')")
        low = word.lower()
        if word == "(":
            inner = self.exprlist(depth + 1)
            if self.peek() != ")":
                raise self.fail("missing ')'", 0)
            self.pos += 1
            return inner
        if low in _NOT:
            return _not(self.expr(depth))
        if low in ("src", "dst"):
            if self.peek() in ("=", "==", "eq"):
                self.pos += 1
            return _host_pred(low == "src", self.take("an address"), self)
        if low in ("sport", "dport"):
            op = PORT_OPS.get(self.peek() or "")
            if op is not None:
                self.pos += 1
            else:
                op = _EQ
            return _port_pred(low == "sport", op, self.take("a port"), self)
        if low == "dev":
            negate = False
            if self.peek() in ("=", "==", "eq"):
                self.pos += 1
            elif self.peek() in ("!=", "ne", "neq"):
                self.pos += 1
                negate = True
            pred = _dev_pred(self.take("an interface name or index"))
            return _not(pred) if negate else pred
        if low == "autobound":
            return _autobound(self.port_range)
        if word == ")":
            raise self.fail("unbalanced ')'")
        raise self.fail(f"unknown condition '{word}' (expected src, dst, sport, dport, dev, "
                        "autobound, and/or/not, parentheses)")


def parse_expression(words: Sequence[str], local_port_range: tuple[int, int] = (32768, 60999)) -> Pred:
    parser = _Parser(words, local_port_range)
    pred = parser.exprlist(0)
    if parser.peek() is not None:
        raise parser.fail("unbalanced ')'", 0)
    return pred


def _or(a: Pred, b: Pred) -> Pred:
    return lambda s: a(s) or b(s)


def _and(a: Pred, b: Pred) -> Pred:
    return lambda s: a(s) and b(s)


def _not(a: Pred) -> Pred:
    return lambda s: not a(s)


def _split_host(text: str) -> tuple[str, Optional[str], Optional[str]]:
    """HOST -> (family prefix or "", address part, port part)."""
    fam = ""
    for prefix in ("unix:", "inet:", "inet6:", "link:", "netlink:", "vsock:"):
        if text.startswith(prefix):
            fam, text = prefix[:-1], text[len(prefix):]
            break
    if fam == "unix":
        return fam, text, None
    if text.startswith("["):  # [v6]:port or [v6]/plen:port
        close = text.find("]")
        if close < 0:
            return fam, None, None
        addr, rest = text[1:close], text[close + 1:]
        if rest.startswith("/"):
            plen, _, port = rest[1:].partition(":")
            return fam, f"{addr}/{plen}", port or None
        return fam, addr, rest[1:] if rest.startswith(":") else None
    if (":" in text and text.count(":") == 1) or text.startswith(":"):
        addr, _, port = text.rpartition(":")
        return fam, addr, port
    if "/" in text and ":" in text.split("/", 1)[1]:
        addr, _, port = text.rpartition(":")
        return fam, addr, port
    return fam, text, None


def _resolve_port(text: str, parser: _Parser) -> Optional[int]:
    if text in ("*", ""):
        return None
    if text.isdigit():
        return int(text)
    ports = set()
    for proto in ("tcp", "udp"):
        try:
            ports.add(socket.getservbyname(text, proto))
        except OSError:
            pass
    if len(ports) == 1:
        return ports.pop()
    raise parser.fail("ambiguous port '%s'" % text if ports else f"wrong port '{text}'")


def _host_pred(is_src: bool, text: str, parser: _Parser) -> Pred:
    import ipaddress

    fam, addr, port_text = _split_host(text)
    port = _resolve_port(port_text, parser) if port_text is not None else None
    if fam == "unix" or (addr and addr.startswith("/")) or (addr and addr.startswith("@")):
        import fnmatch  # imported here, like ipaddress below: only expressions need them

        pattern = addr or "*"

        def unix_match(s: Socket) -> bool:
            if s.family != "unix":
                return False
            name = s.local_address if is_src else s.peer_address
            return fnmatch.fnmatch((name or "").lower(), pattern.lower())
        return unix_match
    net = None
    if addr not in (None, "", "*"):
        try:
            net = ipaddress.ip_network(addr, strict=False)
        except ValueError:
            try:  # a host name: all of its addresses, OR-ed
                infos = socket.getaddrinfo(addr, None)
            except OSError:
                raise parser.fail(f"invalid address '{text}'") from None
            nets = [ipaddress.ip_network(i[4][0]) for i in infos]
            preds = [_inet_pred(is_src, n, port, fam) for n in nets]
            return lambda s: any(p(s) for p in preds)
    return _inet_pred(is_src, net, port, fam)


def _inet_pred(is_src: bool, net, port: Optional[int], fam: str) -> Pred:
    import ipaddress

    v4 = net is not None and net.version == 4
    mapped_v4 = None
    if v4:  # an IPv4 rule also matches v4-mapped IPv6 sockets
        mapped_v4 = ipaddress.ip_network(f"::ffff:{net.network_address}/{96 + net.prefixlen}")

    def match(s: Socket) -> bool:
        if s.family == "unix":
            return False
        if (fam == "inet" and s.family != "inet") or (fam == "inet6" and s.family != "inet6"):
            return False
        if port is not None and (s.local_port if is_src else s.peer_port) != port:
            return False
        if net is None:
            return True
        ip = ipaddress.ip_address(s.local_address if is_src else s.peer_address)
        if ip.version == net.version:
            return ip in net
        return mapped_v4 is not None and ip in mapped_v4
    return match


def _port_pred(is_src: bool, op: str, text: str, parser: _Parser) -> Pred:
    if text.startswith(":"):
        text = text[1:]
    elif ":" in text:
        text = text.rpartition(":")[2]
    port = _resolve_port(text, parser)
    if port is None:
        return lambda s: True

    def value(s: Socket) -> int:
        return s.local_port if is_src else s.peer_port
    return {
        _EQ: lambda s: value(s) == port, _NE: lambda s: value(s) != port,
        _GE: lambda s: value(s) >= port, _LE: lambda s: value(s) <= port,
        _GT: lambda s: value(s) > port, _LT: lambda s: value(s) < port,
    }[op]


def _dev_pred(text: str) -> Pred:
    if text.isdigit():
        index = int(text)
        try:
            name: Optional[str] = socket.if_indextoname(index)
        except OSError:
            name = None
    else:
        name = text
    return lambda s: s.family != "unix" and s.interface is not None and s.interface == name


def _autobound(port_range: tuple[int, int]) -> Pred:
    low, high = port_range

    def match(s: Socket) -> bool:
        if s.family == "unix":
            name = s.local_address
            return name is None or (len(name) == 6 and name[0] == "@"
                                    and all(c in "0123456789abcdef" for c in name[1:]))
        return low <= s.local_port <= high
    return match
