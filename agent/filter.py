"""ss's socket selection: tables, state groups and the filter expression language.

Behaviour follows iproute2 6.1 (``misc/ss.c``, ``misc/ssfilter.y``): the default
states per table and per family flag, ``-a``/``-l``, ``state``/``exclude`` words, and
expressions evaluated strictly left to right (``A or B and C`` is ``(A or B) and C``).
Expressions are parsed once into a tree of predicates evaluated per Socket.

ss evaluates an expression twice: the kernel runs it as inet_diag bytecode over TCP
and UDP dumps, and ss runs it again over every row (``run_ssfilter``); a socket is
shown when both say yes.  The two disagree in places (``autobound``: the kernel tests
SOCK_BINDPORT_LOCK, ss the ephemeral range; address rules: the kernel checks the
family, ss compares raw bits), so the parser builds both trees and
``Selection.matches`` applies the kernel one to netlink TCP/UDP rows too.
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
# Default states a table flag adds (ss's default_dbs): -t, -u, -w.
TABLE_DEFAULT_STATES = {"tcp": SS_CONN, "udp": 1 << ESTABLISHED, "raw": 1 << ESTABLISHED}
# -x, -4 and -6 are family flags (ss's filter_af_set): each adds SS_CONN, its family, and
# (via filter_merge_defaults) its tables when no table of that family was asked for.
FAMILY_TABLES = {"unix": {"unix"}, "inet": {"tcp", "udp", "raw"}, "inet6": {"tcp", "udp", "raw"}}
TABLE_FAMILIES = {"unix": {"unix"}, "tcp": {"inet", "inet6"}, "udp": {"inet", "inet6"},
                  "raw": {"inet", "inet6"}}
UNIX_NETIDS = ("u_str", "u_dgr", "u_seq")


class FilterError(ValueError):
    """An invalid state word or expression; ``word`` is the offending word and
    ``position`` its index among the words given to ``select``."""

    def __init__(self, message: str, word: Optional[str] = None, position: Optional[int] = None):
        super().__init__(message)
        self.word, self.position = word, position


class Unlocked(set):
    """Cookies of inet sockets without SOCK_BINDPORT_LOCK (what the kernel calls
    autobound); ``known`` is False when the kernel would not say."""

    known = True


class Selection(NamedTuple):
    """Which tables, families and states to dump, and the expression to apply."""

    netids: frozenset[str]  #: tcp udp raw u_str u_dgr u_seq
    families: frozenset[str]  #: inet inet6 unix
    states: int
    expr: Optional[Callable[[Socket], bool]] = None  #: ss's userspace evaluation (every row)
    #: the kernel's bytecode evaluation, for TCP/UDP rows from netlink (None: same answer)
    kernel_expr: Optional[Callable[[Socket], bool]] = None
    #: cookies of sockets without SOCK_BINDPORT_LOCK, which the kernel calls autobound;
    #: filled by the dump (an extra bytecode request) when ``autobound`` is used
    unlocked: Optional[Unlocked] = None
    #: ss's preferred family when it is inet or inet6 (-4/-6 last, or an inet:/inet6: host):
    #: ss then sends only that family's netlink dump (/proc fallbacks still read both)
    netlink_family: Optional[str] = None

    def tables(self) -> list[str]:
        want = {"unix" if n in UNIX_NETIDS else n for n in self.netids}
        return [t for t in TABLES if t in want]

    def matches(self, sock: Socket) -> bool:
        if not STATE_BITS.get(sock.state, 0) & self.states:
            return False
        expr = self.expr
        if expr is None:
            return True
        if not expr(sock):
            return False
        kernel = self.kernel_expr  # /proc rows (no cookie) and unix sockets get no bytecode
        return kernel is None or sock.cookie is None or sock.family == "unix" or kernel(sock)


def split_words(words: Sequence[str], first: int = 0) -> list[tuple[str, int]]:
    """ss's lexer: each argument is split at spaces and tabs (so ``'( dport = :22 )'`` is
    five tokens), a backslash escapes the next character.  Returns (token, argument index)."""
    out = []
    for index, word in enumerate(words, first):
        token, escaped, started = [], False, False
        for ch in word:
            if escaped:
                token.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = started = True
            elif ch in " \t":
                if started:
                    out.append(("".join(token), index))
                token, started = [], False
            else:
                token.append(ch)
                started = True
        if started:
            out.append(("".join(token), index))
    return out


def select(*, tcp: bool = False, udp: bool = False, raw: bool = False, unix: bool = False,
           ipv4: bool = False, ipv6: bool = False, all_states: bool = False, listening: bool = False,
           words: Sequence[str] = (), local_port_range: tuple[int, int] = (32768, 60999),
           preferred_family: Optional[str] = None) -> Selection:
    """ss's option semantics: table and family flags with their default states, then
    -a/-l, then ``state``/``exclude`` words, then the expression (the remaining words).

    ``preferred_family`` is the last of -x/-4/-6 on the command line (unix, inet or
    inet6); ss parses every address and port of the expression in that family (so with
    -x, ``sport = :22`` is a unix name pattern).  When not given, it is derived from the
    flags in the order -x, -4, -6.
    """
    dbs: set[str] = set()
    families: set[str] = set()
    states = 0
    for table, on in (("tcp", tcp), ("udp", udp), ("raw", raw)):
        if on:
            dbs.add(table)
            states |= TABLE_DEFAULT_STATES[table]
    flags = [family for family, on in (("unix", unix), ("inet", ipv4), ("inet6", ipv6)) if on]
    for family in flags:
        families.add(family)
        states |= SS_CONN
    preferred = preferred_family if preferred_family in flags else (flags[-1] if flags else None)
    do_default = not (dbs or families)
    state_filter = ALL if all_states else (1 << LISTEN | 1 << CLOSE if listening else 0)
    words = list(words)
    i, saw_states = 0, False
    while i < len(words) and words[i] in ("state", "exclude", "excl"):
        if i + 1 >= len(words):
            raise FilterError(f"'{words[i]}' needs a state name", words[i], i)
        name = words[i + 1]
        bits = STATE_WORDS.get(name.lower())
        if bits is None:
            raise FilterError(f"wrong state name '{name}' (see `ss --help`: established, "
                              "listening, time-wait, connected, bucket, big, ...)", name, i + 1)
        if words[i] == "state":
            state_filter = (state_filter if saw_states else 0) | bits
        else:
            state_filter = (state_filter if saw_states else ALL) & ~bits
        saw_states = True
        i += 2
    if do_default:
        state_filter = state_filter or SS_CONN
        dbs = set(TABLES)
    if state_filter:  # ss: filter_states_set ignores 0 (e.g. "exclude all")
        states = state_filter
    for table in list(dbs):  # filter_merge_defaults
        if not TABLE_FAMILIES[table] & families:
            families |= TABLE_FAMILIES[table]
    for family in list(families):
        if not FAMILY_TABLES[family] & dbs:
            dbs |= FAMILY_TABLES[family]
    expr = kernel = unlocked = None
    tokens = split_words(words[i:], i)
    if tokens:
        unlocked = Unlocked()
        parser = _Parser(tokens, local_port_range, preferred, frozenset(dbs), unlocked)
        expr, kernel = parser.parse()
        if parser.family is not None:  # ss: a host condition's family replaces the selected ones
            families = {parser.family}
        preferred = parser.preferred
        if parser.has_dev:  # ss cannot compile `dev` to bytecode and then sends none at all
            kernel = None
        if not parser.has_autobound:
            unlocked = None
    netids = (dbs - {"unix"}) | (set(UNIX_NETIDS) if "unix" in dbs else set())
    return Selection(frozenset(netids), frozenset(families), states, expr, kernel, unlocked,
                     preferred if preferred in ("inet", "inet6") else None)


# --- expressions --------------------------------------------------------------------

Pred = Callable[[Socket], bool]
Pair = tuple[Pred, Pred]  # (ss's userspace predicate, the kernel bytecode's)
_EQ, _NE, _GT, _LT, _GE, _LE = "eq", "ne", "gt", "lt", "ge", "le"
PORT_OPS = {
    "=": _EQ, "==": _EQ, "eq": _EQ, "!=": _NE, "ne": _NE, "neq": _NE, ">": _GT, "gt": _GT,
    "<": _LT, "lt": _LT, ">=": _GE, "ge": _GE, "geq": _GE, "<=": _LE, "le": _LE, "leq": _LE,
}
_OR, _AND, _NOT, _EQUALS = ("or", "|", "||"), ("and", "&", "&&"), ("not", "!"), ("=", "==", "eq")
_FAMILY_PREFIXES = (("unix:", "unix"), ("link:", "link"), ("netlink:", "netlink"), ("vsock:", "vsock"),
                    ("inet:", "inet"), ("inet6:", "inet6"))
_KEYWORDS = "src, dst, sport, dport, dev, autobound, not/!, '('"


def _true(s: Socket) -> bool:
    return True


def _false(s: Socket) -> bool:
    return False


class _Host(NamedTuple):
    """A parsed HOST (ss's struct aafilter)."""

    kind: str  #: "inet", "unix" (a name pattern) or "other" (families the agent has no table for)
    port: int  #: -1: any
    pattern: Optional[str] = None  #: unix: fnmatch pattern
    #: inet: (version 4/6 or 0, address as an int of its own width, prefix length); the
    #: first is what the kernel sees (ss compiles only it), ss itself tries them all
    addrs: tuple[tuple[int, int, int], ...] = ()


class _Parser:
    def __init__(self, tokens: list[tuple[str, int]], local_port_range: tuple[int, int],
                 preferred: Optional[str], dbs: frozenset[str], unlocked: Unlocked):
        self.words = [t for t, _ in tokens]
        self.where = [w for _, w in tokens]
        self.pos = 0
        self.port_range = local_port_range
        self.preferred = preferred
        self.dbs = dbs
        self.unlocked = unlocked
        self.family: Optional[str] = None
        self.has_dev = self.has_autobound = False
        self._addr_cache: dict[Optional[str], tuple[int, int]] = {}

    # -- tokens
    def peek(self) -> Optional[str]:
        return self.words[self.pos] if self.pos < len(self.words) else None

    def take(self, what: str) -> str:
        word = self.peek()
        if word is None:
            raise self.fail(f"unexpected end of expression: expected {what}", 0)
        self.pos += 1
        return word

    def fail(self, message: str, back: int = 1) -> FilterError:
        i = self.pos - back
        if 0 <= i < len(self.words):
            return FilterError(message, self.words[i], self.where[i])
        return FilterError(message, None, (self.where[-1] + 1) if self.where else 0)

    # -- grammar (ssfilter.y: no precedence, left to right)
    def parse(self) -> Pair:
        pair = self.exprlist()
        if self.peek() is not None:
            raise self.fail("unbalanced ')'", 0)
        return pair

    def exprlist(self) -> Pair:
        left = self.expr()
        while True:
            word = self.peek()
            if word is None or word == ")":
                return left
            if word in _OR:
                self.pos += 1
                left = _or(left, self.expr())
            else:
                if word in _AND:
                    self.pos += 1
                left = _and(left, self.expr())

    def expr(self) -> Pair:
        word = self.take(f"a condition ({_KEYWORDS})")
        if word == "(":
            inner = self.exprlist()
            if self.peek() != ")":
                raise self.fail("missing ')'", 0)
            self.pos += 1
            return inner
        if word in _NOT:
            return _not(self.expr())
        if word in ("src", "dst"):
            if self.peek() in _EQUALS:
                self.pos += 1
            host = self.host(self.take("an address"), is_port=False)
            return self.cond(host, word == "src")
        if word in ("sport", "dport"):
            op = PORT_OPS.get(self.peek() or "")
            if op is not None:
                self.pos += 1
            host = self.host(self.take("a port"), is_port=True)
            return self.port_cond(host, word == "sport", op or _EQ)
        if word == "dev":
            negate = False
            if self.peek() in _EQUALS:
                self.pos += 1
            elif self.peek() in ("!=", "ne", "neq"):
                self.pos += 1
                negate = True
            pair = self.dev(self.take("an interface name or index"))
            return _not(pair) if negate else pair
        if word == "autobound":
            self.has_autobound = True
            return self.autobound()
        if word in ("fwmark", "cgroup"):
            raise self.fail(f"'{word}' conditions are not supported by the agent")
        if word == ")":
            raise self.fail("unbalanced ')'")
        if word in ("state", "exclude", "excl"):
            raise self.fail(f"'{word}' must come before the expression")
        raise self.fail(f"unknown condition '{word}' (expected {_KEYWORDS})")

    # -- HOST (ss's parse_hostcond)
    def host(self, text: str, is_port: bool) -> _Host:
        word = text
        fam = self.preferred
        for prefix, name in _FAMILY_PREFIXES:
            if word.startswith(prefix):
                fam, word = name, word[len(prefix):]
                break
        # Not ss: ss takes "/path" or "@name" without -x or unix: for an inet host and
        # fails; the agent reads it as the unix name pattern that was meant.
        if fam is None and not is_port and word[:1] in ("/", "@"):
            fam = "unix"
        if fam is not None:  # ss: filter_af_set(fam) after each host condition
            self.family = self.preferred = fam
        if fam == "unix":
            return _Host("unix", -1, pattern=word)
        if fam in ("link", "netlink", "vsock"):
            return _Host("other", -1)
        version = {"inet": 4, "inet6": 6}.get(fam or "", 0)
        addr, port_text = word, None
        if word.startswith("["):
            close = word.find("]")
            if close < 0:
                raise self.fail(f"missing ']' in '{text}'")
            addr, port_text = word[1:close], word[close + 1:]
        elif word.startswith("*"):
            port_text = word[1:]
        else:
            colon = word.rfind(":", max(word.find("/"), 0))
            if colon >= 0:
                addr, port_text = word[:colon], word[colon:]
        if is_port:  # the whole word (inside the brackets, if any) is the port
            port_text = addr if word.startswith("[") else word
        port = -1
        if port_text:
            if port_text[0] == ":":
                port_text = port_text[1:]
            if port_text and port_text[0] != "*":
                port = self.port_number(port_text)
        addrs: tuple[tuple[int, int, int], ...] = ()
        if not is_port and addr and addr[0] != "*":
            prefix = _prefix(addr, version)
            if prefix is None:
                addrs = _resolve(addr, version)
                if not addrs:
                    raise self.fail(f"an inet prefix is expected rather than '{addr}' "
                                    "(IPv6 addresses go in brackets: [::1]:22)")
            else:
                addrs = (prefix,)
        return _Host("inet", port, addrs=addrs)

    def port_number(self, text: str) -> int:
        number = _c_integer(text)
        if number is not None:
            return number
        ports = set()
        for proto in ("udp", "tcp"):  # ss looks a name up only for the tables it shows
            if proto in self.dbs:
                try:
                    ports.add(socket.getservbyname(text, proto))
                except OSError:
                    pass
        if len(ports) > 1:
            raise self.fail(f"ambiguous port '{text}'")
        if not ports:
            raise self.fail(f"'{text}' does not look like a port")
        return ports.pop()

    # -- leaves: (userspace, kernel) predicate pairs
    def address(self, text: Optional[str]) -> tuple[int, int]:
        """Socket address text -> (version, value); (0, 0) for unix names."""
        found = self._addr_cache.get(text)
        if found is None:
            if text is None or text[:1] in ("/", "@"):
                found = (0, 0)
            elif ":" in text:
                found = (6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big"))
            else:
                found = (4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big"))
            self._addr_cache[text] = found
        return found

    def cond(self, host: _Host, is_src: bool) -> Pair:
        """src/dst HOST and sport/dport [=] PORT (ss's SSF_SCOND / SSF_DCOND)."""
        if host.kind == "unix":
            import fnmatch  # only unix patterns need it

            pattern = host.pattern or ""

            def unix_match(s: Socket) -> bool:
                if s.family != "unix":
                    return False
                name = s.local_address if is_src else s.peer_address
                return fnmatch.fnmatchcase((name or "").lower(), pattern.lower())
            return unix_match, unix_match
        if host.kind == "other":
            return _false, _false
        port, addrs, address = host.port, host.addrs, self.address
        bitlen = addrs[0][2] if addrs else 0

        def user(s: Socket) -> bool:  # run_ssfilter
            if port != -1 and port != (s.local_port if is_src else s.peer_port):
                return False
            if not bitlen:
                return True
            if s.family == "unix":  # ss compares a name pointer's bytes: no match
                return False
            version, value = address(s.local_address if is_src else s.peer_address)
            return any(_user_addr_match(version, value, *a) for a in addrs)

        k_version, k_value, k_plen = addrs[0] if addrs else (0, 0, 0)

        def kernel(s: Socket) -> bool:  # inet_diag_bc_run, INET_DIAG_BC_S_COND / D_COND
            if port != -1 and port != (s.local_port if is_src else s.peer_port):
                return False
            if not k_version and not k_plen:
                return True
            version, value = address(s.local_address if is_src else s.peer_address)
            if k_version and k_version != version:
                return (version == 6 and k_version == 4 and value >> 32 == 0xFFFF
                        and _bits_match(value & 0xFFFFFFFF, k_value, k_plen, 32))
            return not k_plen or _bits_match(value, k_value, k_plen, 32 if version == 4 else 128)
        return user, kernel

    def port_cond(self, host: _Host, is_src: bool, op: str) -> Pair:
        if op == _EQ:
            return self.cond(host, is_src)
        if op == _NE:
            return _not(self.cond(host, is_src))
        # >= and <= compare numbers (for unix sockets: inode numbers); > is NOT <=, < is NOT >=.
        port = host.port
        kport = port & 0xFFFF  # the bytecode carries the port as a u16
        if op in (_GE, _LT):
            if is_src:
                pair: Pair = (lambda s: s.local_port >= port, lambda s: s.local_port >= kport)
            else:
                pair = (lambda s: s.peer_port >= port, lambda s: s.peer_port >= kport)
        elif is_src:
            pair = (lambda s: s.local_port <= port, lambda s: s.local_port <= kport)
        else:
            pair = (lambda s: s.peer_port <= port, lambda s: s.peer_port <= kport)
        return _not(pair) if op in (_GT, _LT) else pair

    def dev(self, text: str) -> Pair:
        self.has_dev = True
        try:
            index = socket.if_nametoindex(text)
        except OSError:
            index = _c_integer(text, unsigned=True)
            if index is None or index > 0xFFFFFFFF:
                raise self.fail(f"cannot parse device '{text}' (no such interface)") from None
        if index == 0:  # unbound sockets (and unix, which have no device)
            pred: Pred = lambda s: s.interface is None  # noqa: E731
        else:
            try:
                name = socket.if_indextoname(index)
            except OSError:
                name = str(index)  # how the dump names an index it cannot resolve
            pred = lambda s: s.family != "unix" and s.interface == name  # noqa: E731
        return pred, pred

    def autobound(self) -> Pair:
        low, high = self.port_range
        unlocked = self.unlocked

        def user(s: Socket) -> bool:
            if s.family == "unix":
                name = s.local_address
                return name is None or (len(name) == 6 and name[0] == "@"
                                        and all(c in "0123456789abcdef" for c in name[1:]))
            return low <= s.local_port <= high

        def kernel(s: Socket) -> bool:  # INET_DIAG_BC_AUTO: !(userlocks & SOCK_BINDPORT_LOCK)
            return s.cookie in unlocked or not unlocked.known
        return user, kernel


def parse_expression(words: Sequence[str], local_port_range: tuple[int, int] = (32768, 60999),
                     preferred_family: Optional[str] = None,
                     tables: Sequence[str] = ("tcp", "udp")) -> Pred:
    """ss's userspace evaluation of an expression, as one predicate (tests, tools)."""
    parser = _Parser(split_words(words), local_port_range, preferred_family, frozenset(tables), Unlocked())
    return parser.parse()[0]


def _or(a: Pair, b: Pair) -> Pair:
    au, ak = a
    bu, bk = b
    return (lambda s: au(s) or bu(s)), (lambda s: ak(s) or bk(s))


def _and(a: Pair, b: Pair) -> Pair:
    au, ak = a
    bu, bk = b
    return (lambda s: au(s) and bu(s)), (lambda s: ak(s) and bk(s))


def _not(a: Pair) -> Pair:
    au, ak = a
    return (lambda s: not au(s)), (lambda s: not ak(s))


def _bits_match(a: int, b: int, bits: int, width: int) -> bool:
    """The first ``bits`` bits of two ``width``-bit values are equal."""
    shift = width - bits
    return a >> shift == b >> shift


def _user_addr_match(version: int, value: int, r_version: int, r_value: int, plen: int) -> bool:
    """ss's inet2_addr_match: raw bits compared (addresses left-aligned in 16 bytes,
    whatever their families), then an IPv4 rule tried on the IPv4 part of a v4-mapped
    socket address."""
    if not version:
        return False
    left = value << 96 if version == 4 else value
    r_left = r_value << 96 if r_version == 4 else r_value
    if _bits_match(left, r_left, plen, 128):
        return True
    if r_version == 4 and version == 6 and value >> 32 == 0xFFFF:
        return _bits_match(value & 0xFFFFFFFF, r_value, plen, 32)
    return False


def _c_integer(text: str, unsigned: bool = False) -> Optional[int]:
    """strtol(text, base 0) over the whole text, as iproute2's get_integer: 0x hex,
    leading-0 octal, decimal."""
    body = text.lstrip(" \t\n")
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    try:
        if body[:2].lower() == "0x" and len(body) > 2:
            value = int(body[2:], 16)
        elif body[:1] == "0" and len(body) > 1:
            value = int(body[1:], 8)
        else:
            value = int(body, 10) if body.isdigit() else None
    except ValueError:
        return None
    if value is None or (unsigned and sign < 0):
        return None
    value *= sign
    return value if -2**31 <= value < 2**31 or unsigned else None


def _ipv4(text: str) -> Optional[int]:
    """iproute2's get_addr_ipv4: up to four parts, each a C integer <= 255 ("127.1" is
    127.1.0.0)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    value = 0
    for i, part in enumerate(parts):
        n = _c_integer(part, unsigned=True) if part and part[0] not in "+- \t" else None
        if n is None or n > 255:
            return None
        value |= n << (24 - 8 * i)
    return value


def _prefix(text: str, version: int) -> Optional[tuple[int, int, int]]:
    """iproute2's get_prefix_1: ADDR[/LEN] in the given family (0: either) ->
    (version, value, prefix length), None if it is not one."""
    addr, slash, plen_text = text.partition("/")
    if addr in ("default", "any", "all"):
        if slash:
            return None
        return (version or (4 if addr == "default" else 0), 0, 0)
    if ":" in addr:
        if version == 4:
            return None
        try:
            value, found = int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big"), 6
        except OSError:
            return None
    else:
        if version == 6:
            return None
        ipv4 = _ipv4(addr)
        if ipv4 is None:
            return None
        value, found = ipv4, 4
    width = 32 if found == 4 else 128
    if not slash:
        return found, value, width
    plen = _c_integer(plen_text, unsigned=True)
    if plen is None and found == 4:  # a dotted netmask: 255.255.0.0
        mask = _ipv4(plen_text)
        inverted = (~mask & 0xFFFFFFFF) if mask is not None else 1
        if mask is not None and inverted & (inverted + 1) == 0:
            plen = 32 - inverted.bit_length()
    if plen is None or plen > width:
        return None
    return found, value, plen


def _resolve(name: str, version: int) -> tuple[tuple[int, int, int], ...]:
    """A host name's addresses (ss: gethostbyname2, IPv4 then IPv6 unless -4/-6)."""
    out = []
    for fam, ver in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        if version and ver != version:
            continue
        try:
            infos = socket.getaddrinfo(name, None, fam, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            continue
        for info in infos:
            value = int.from_bytes(socket.inet_pton(fam, info[4][0].split("%")[0]), "big")
            entry = (ver, value, 32 if ver == 4 else 128)
            if entry not in out:
                out.append(entry)
    return tuple(out)
