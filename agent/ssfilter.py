"""ss's filter language as a syntax tree: words in, plain nodes out, nothing looked up.

The grammar is iproute2 6.1's (``misc/ssfilter.y``): state words first, then

    exprlist := expr | exprlist (or | '|' | '||') expr | exprlist [and | & | &&] expr
    expr     := '(' exprlist ')' | (not | !) expr | src [=] HOST | dst [=] HOST
              | sport|dport [OP] PORT | dev [=|!=] IFACE | fwmark [=|!=] MARK[/MASK]
              | cgroup [=|!=] PATH | autobound

with no precedence: ``A or B and C`` is ``(A or B) and C``.  ``parse`` reads it with an
explicit stack, so 600 nested parentheses or a 1,500-term chain cost memory, not Python
recursion; runs of ``and``/``or`` become one n-ary node and ``not not x`` is ``x``.

Parsing only checks syntax: host names, port names, devices and cgroup paths stay text
(``Host.hostname``, ``Host.service``, ``Dev.name``, ``Cgroup.path``) until ``filter.py``
resolves them inside the agent, so the plugin can check a filter on a laptop that has
none of the pod's names.  Every number is read with ASCII digits only, as C's strtol
does: Python's ``int()`` would also take ``١٢٣`` or ``1_0``.
"""

from __future__ import annotations

import _socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

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
STATE_KEYWORDS = ("state", "exclude", "excl")


class FilterError(ValueError):
    """An invalid state word or expression; ``word`` is the offending word and
    ``position`` its index among the words given (None when it is past the end)."""

    def __init__(self, message: str, word: Optional[str] = None, position: Optional[int] = None):
        super().__init__(message)
        self.word, self.position = word, position


# --- the tree ------------------------------------------------------------------------

class Value:
    """A plain value object: fields in ``__slots__`` (each also an ``__init__`` keyword),
    compared and hashed by value.  The tree's nodes and the query contract use it instead
    of NamedTuple, whose classes cost the agent's start-up ~0.1 ms each."""

    __slots__ = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values() == self._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__slots__)})"

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed."""
        return type(self)(**{**{n: getattr(self, n) for n in self.__slots__}, **changes})


class And(Value):
    __slots__ = ("items",)

    def __init__(self, items: tuple):
        self.items = items  #: two or more nodes, evaluated left to right


class Or(Value):
    __slots__ = ("items",)

    def __init__(self, items: tuple):
        self.items = items


class Not(Value):
    __slots__ = ("item",)

    def __init__(self, item: Any):
        self.item = item


class Host(Value):
    """A HOST or PORT word as ss's parse_hostcond reads it, before any look-up."""

    __slots__ = ("hostname", "kind", "pattern", "port", "position", "prefix", "service", "version", "word")

    def __init__(self, kind: str, word: str, position: int, port: int = -1, service: Optional[str] = None,
                 prefix: Optional[tuple[int, int, int]] = None, hostname: Optional[str] = None, version: int = 0,
                 pattern: Optional[str] = None):
        self.kind = kind  #: "inet", "unix" (a name pattern) or "other" (families the agent has no table for)
        self.word, self.position = word, position  #: the word as given, and its argument index
        self.port = port  #: -1: any
        self.service = service  #: a port name, looked up (tcp/udp services) by the agent
        #: an address literal: (version 4/6 or 0 for either, value as an int of its width, prefix length)
        self.prefix = prefix
        self.hostname = hostname  #: a host name, resolved by the agent
        self.version = version  #: the family the word was read in (inet: 4, inet6: 6, else 0)
        self.pattern = pattern  #: unix: the fnmatch pattern


class HostCond(Value):
    """``src|dst HOST`` and ``sport|dport [=] PORT`` (ss's SSF_SCOND / SSF_DCOND)."""

    __slots__ = ("host", "src")

    def __init__(self, src: bool, host: Host):
        self.src, self.host = src, host


class PortBound(Value):
    """``sport|dport >= PORT`` (``ge``) or ``<= PORT``; ``>`` and ``<`` are their Not."""

    __slots__ = ("ge", "host", "src")

    def __init__(self, src: bool, ge: bool, host: Host):
        self.src, self.ge, self.host = src, ge, host


class Dev(Value):
    """``dev IFACE``: an interface name or index, looked up by the agent."""

    __slots__ = ("name", "position")

    def __init__(self, name: str, position: int):
        self.name, self.position = name, position


class Mark(Value):
    """``fwmark MARK[/MASK]``: ``(socket mark & mask) == mark``."""

    __slots__ = ("mark", "mask")

    def __init__(self, mark: int, mask: int):
        self.mark, self.mask = mark, mask


class Cgroup(Value):
    """``cgroup PATH``: a cgroup v2 directory, resolved to its id by the agent."""

    __slots__ = ("path", "position")

    def __init__(self, path: str, position: int):
        self.path, self.position = path, position


class Autobound(Value):
    """``autobound``: the port was picked by the kernel."""

    __slots__ = ()


if TYPE_CHECKING:  # building a typing.Union costs the agent's start-up half a millisecond
    Node = Union[And, Or, Not, HostCond, PortBound, Dev, Mark, Cgroup, Autobound]
LEAVES = (HostCond, PortBound, Dev, Mark, Cgroup, Autobound)


class Expression(Value):
    """A filter as parsed: its state words, then its expression."""

    __slots__ = ("family", "preferred", "states", "tree", "uses")

    def __init__(self, states: Optional[int], tree: Optional[Node], family: Optional[str] = None,
                 preferred: Optional[str] = None, uses: frozenset = frozenset()):
        self.states = states  #: the state words' mask (None: no state or exclude word)
        self.tree = tree  #: None: no expression
        #: the family the last host condition was read in; ss then shows only that family
        self.family = family
        self.preferred = preferred  #: ss's preferred family after the expression
        self.uses = uses  #: condition keywords used (dev, autobound, fwmark, cgroup)


# --- words ---------------------------------------------------------------------------

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


_OR, _AND, _NOT, _EQUALS = ("or", "|", "||"), ("and", "&", "&&"), ("not", "!"), ("=", "==", "eq")
_NOT_EQUALS = ("!=", "ne", "neq")
# sport/dport operators -> (node, negated): ss builds > as NOT <= and < as NOT >=.
PORT_OPS = {
    "=": ("eq", False), "==": ("eq", False), "eq": ("eq", False),
    "!=": ("eq", True), "ne": ("eq", True), "neq": ("eq", True),
    ">=": ("ge", False), "ge": ("ge", False), "geq": ("ge", False),
    "<=": ("le", False), "le": ("le", False), "leq": ("le", False),
    ">": ("le", True), "gt": ("le", True), "<": ("ge", True), "lt": ("ge", True),
}
# Every word ss's lexer turns into a token of its own: never a HOST, PORT or name.
KEYWORDS = frozenset((*_OR, *_AND, *_NOT, *PORT_OPS, "(", ")", "src", "dst", "sport", "dport", "dev",
                      "fwmark", "cgroup", "autobound"))
_FAMILY_PREFIXES = (("unix:", "unix"), ("link:", "link"), ("netlink:", "netlink"), ("vsock:", "vsock"),
                    ("inet:", "inet"), ("inet6:", "inet6"))
CONDITIONS = "src, dst, sport, dport, dev, fwmark, cgroup, autobound, not/!, '('"

_C_SPACE = " \t\n\v\f\r"
_DECIMAL, _OCTAL, _HEX = "0123456789", "01234567", "0123456789abcdefABCDEF"
_HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


def _only(text: str, chars: str) -> bool:
    """``text`` is not empty and every character is one of ``chars``."""
    return bool(text) and not text.strip(chars)


def scanf_integer(text: str) -> tuple[Optional[int], str]:
    """strtol's (and sscanf %i's) integer at the start of ``text``: white space, a sign,
    then 0x hex, leading-0 octal or decimal, ASCII digits only.  Returns the value (None
    if there is none) and the rest of the text."""
    body = text.lstrip(_C_SPACE)
    sign = body[:1] if body[:1] in ("+", "-") else ""
    body = body[len(sign):]
    if body[:2] in ("0x", "0X") and body[2:3] and body[2] in _HEX:
        digits, base, start = _HEX, 16, 2
    elif body[:1] == "0":
        digits, base, start = _OCTAL, 8, 0
    else:
        digits, base, start = _DECIMAL, 10, 0
    end = start
    while end < len(body) and body[end] in digits:
        end += 1
    if end == start:
        return None, text
    value = int(body[start:end], base)
    return (-value if sign == "-" else value), body[end:]


def c_integer(text: str, unsigned: bool = False) -> Optional[int]:
    """iproute2's get_integer (strtol, base 0, over the whole text), or get_unsigned;
    None if it is not one or out of range."""
    value, rest = scanf_integer(text)
    if value is None or rest:
        return None
    if unsigned:
        return value if 0 <= value <= 0xFFFFFFFF and text.lstrip(_C_SPACE)[:1] != "-" else None
    return value if -2**31 <= value < 2**31 else None


def ipv4(text: str) -> Optional[int]:
    """iproute2's get_addr_ipv4: up to four parts, each a C integer <= 255 ("127.1" is
    127.1.0.0)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    value = 0
    for i, part in enumerate(parts):
        n = c_integer(part, unsigned=True) if part and part[0] not in "+- \t" else None
        if n is None or n > 255:
            return None
        value |= n << (24 - 8 * i)
    return value


def inet_prefix(text: str, version: int) -> Optional[tuple[int, int, int]]:
    """iproute2's get_prefix_1: ADDR[/LEN] in the given family (0: either) ->
    (version, value, prefix length), None if it is not one.  ``default``, ``any`` and
    ``all`` match every address, of either family unless one was given (ss 6.1 keeps
    IPv6 sockets for ``src default``)."""
    addr, slash, plen_text = text.partition("/")
    if addr in ("default", "any", "all"):
        return None if slash else (version, 0, 0)
    if ":" in addr:
        if version == 4 or not addr.isascii():
            return None
        try:
            value, found = int.from_bytes(_socket.inet_pton(_socket.AF_INET6, addr), "big"), 6
        except OSError:
            return None
    else:
        if version == 6:
            return None
        value4 = ipv4(addr)
        if value4 is None:
            return None
        value, found = value4, 4
    width = 32 if found == 4 else 128
    if not slash:
        return found, value, width
    plen = c_integer(plen_text, unsigned=True)
    if plen is None and found == 4:  # a dotted netmask: 255.255.0.0
        mask = ipv4(plen_text)
        inverted = (~mask & 0xFFFFFFFF) if mask is not None else 1
        if mask is not None and inverted & (inverted + 1) == 0:
            plen = 32 - inverted.bit_length()
    if plen is None or plen > width:
        return None
    return found, value, plen


def valid_ifname(name: str) -> bool:
    """The kernel's dev_valid_name: 1-15 bytes, not . or .., no '/', ':' or white space."""
    try:
        size = len(name.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # a lone surrogate no argv decoding makes: no name a kernel takes
        return False
    return 0 < size < 16 and name not in (".", "..") and not any(c in name for c in "/:" + _C_SPACE)


# --- the parser ----------------------------------------------------------------------

def parse(words: Sequence[str], preferred_family: Optional[str] = None) -> Expression:
    """State words, then the expression, as ss reads them; ``preferred_family`` is the
    last of -x/-4/-6 given (unix, inet or inet6): ss reads every address and port in it
    (with -x, ``sport = :22`` is a unix name pattern).  Raises FilterError."""
    words = list(words)
    states: Optional[int] = None
    i = 0
    while i < len(words) and words[i] in STATE_KEYWORDS:
        if i + 1 >= len(words):
            raise FilterError(f"'{words[i]}' needs a state name", words[i], i)
        name = words[i + 1]
        bits = STATE_WORDS.get(name.lower()) if name.isascii() else None
        if bits is None:
            raise FilterError(f"wrong state name '{name}' (see `ss --help`: established, "
                              "listening, time-wait, connected, bucket, big, ...)", name, i + 1)
        if words[i] == "state":
            states = (states or 0) | bits
        else:
            states = (ALL if states is None else states) & ~bits
        i += 2
    tokens = split_words(words[i:], i)
    if not tokens:
        return Expression(states, None, None, preferred_family)
    parser = _Parser(tokens, preferred_family)
    tree = parser.parse()
    return Expression(states, tree, parser.family, parser.preferred, frozenset(parser.uses))


class _Parser:
    def __init__(self, tokens: list[tuple[str, int]], preferred: Optional[str]):
        self.words = [t for t, _ in tokens]
        self.where = [w for _, w in tokens]
        self.pos = 0
        self.preferred = preferred
        self.family: Optional[str] = None
        self.uses: set[str] = set()

    def peek(self) -> Optional[str]:
        return self.words[self.pos] if self.pos < len(self.words) else None

    def fail(self, message: str, back: int = 1) -> FilterError:
        i = self.pos - back
        if 0 <= i < len(self.words):
            return FilterError(message, self.words[i], self.where[i])
        return FilterError(message, None, (self.where[-1] + 1) if self.where else 0)

    def argument(self, what: str) -> tuple[str, int]:
        """The word after a keyword (and its operator), which ss's lexer must not have
        turned into a token of its own."""
        word = self.peek()
        if word is None:
            raise self.fail(f"unexpected end of expression: expected {what}", 0)
        self.pos += 1
        if word in KEYWORDS:
            raise self.fail(f"expected {what}, not '{word}'")
        return word, self.where[self.pos - 1]

    def parse(self) -> Node:
        """ssfilter.y's exprlist, iteratively: ``acc`` holds the operands of the current
        run of one operator, ``stack`` one frame per open parenthesis."""
        stack: list[tuple] = []  # (acc, kind, negate, op) outside each open '('
        acc: list = []  # the operands so far; one node, or a run joined by `kind`
        kind: Optional[str] = None  # "and" / "or" once acc holds a run
        op: Optional[str] = None  # the operator waiting for its right operand
        negate = False  # an odd number of not/! before the next operand
        while True:
            word = self.peek()
            if not acc or op is not None:  # an operand must start here
                if word is None:
                    raise self.fail(f"unexpected end of expression: expected a condition ({CONDITIONS})", 0)
                self.pos += 1
                if word in _NOT:
                    negate = not negate
                    continue
                if word == "(":
                    stack.append((acc, kind, negate, op))
                    acc, kind, op, negate = [], None, None, False
                    continue
                node = self.condition(word)
            elif word is None:
                break
            elif word == ")":
                if not stack:
                    raise self.fail("unbalanced ')'", 0)
                self.pos += 1
                node = _freeze(acc, kind)
                acc, kind, negate, op = stack.pop()
            else:  # an operator, or none: ss's implicit AND (the word starts the next operand)
                op = "or" if word in _OR else "and"
                if word in _OR or word in _AND:
                    self.pos += 1
                continue
            if negate:
                node = node.item if type(node) is Not else Not(node)
                negate = False
            if not acc:
                acc = [node]
            elif op == kind or len(acc) == 1:
                if len(acc) == 1 and type(acc[0]) is (And if op == "and" else Or):
                    acc = list(acc[0].items)  # (a or b) or c is one run
                acc.append(node)
                kind = op
            else:  # the operator changes: what came before is the left operand
                acc, kind = [_freeze(acc, kind), node], op
            op = None
        if stack:
            raise self.fail("missing ')'", 0)
        return _freeze(acc, kind)

    def condition(self, word: str) -> Node:
        """One condition whose keyword was just read (ssfilter.y's expr, minus ( and not)."""
        if word in ("src", "dst"):
            if self.peek() in _EQUALS:
                self.pos += 1
            return HostCond(word == "src", self.host(*self.argument("an address"), is_port=False))
        if word in ("sport", "dport"):
            op, negated = PORT_OPS.get(self.peek() or "", ("eq", False))
            if (self.peek() or "") in PORT_OPS:
                self.pos += 1
            host = self.host(*self.argument("a port"), is_port=True)
            node: Node = HostCond(word == "sport", host) if op == "eq" else PortBound(word == "sport", op == "ge",
                                                                                       host)
            return Not(node) if negated else node
        if word in ("dev", "fwmark", "cgroup"):
            negated = self.peek() in _NOT_EQUALS
            if negated or self.peek() in _EQUALS:
                self.pos += 1
            self.uses.add(word)
            node = getattr(self, word)(*self.argument(_ARGUMENTS[word]))
            return Not(node) if negated else node
        if word == "autobound":
            self.uses.add(word)
            return Autobound()
        if word == ")":
            raise self.fail("unbalanced ')'")
        if word in STATE_KEYWORDS:
            raise self.fail(f"'{word}' must come before the expression")
        raise self.fail(f"unknown condition '{word}' (expected {CONDITIONS})")

    def dev(self, text: str, position: int) -> Dev:
        if c_integer(text, unsigned=True) is None and not valid_ifname(text):
            raise self.fail(f"cannot parse device '{text}': not an interface name or index")
        return Dev(text, position)

    def fwmark(self, text: str, position: int) -> Mark:
        """ss's sscanf("%i/%i") (or "%i" and an all-ones mask): trailing junk is ignored."""
        mark, rest = scanf_integer(text)
        mask: Optional[int] = 0xFFFFFFFF
        if "/" in text:
            mask, _ = scanf_integer(rest[1:]) if rest[:1] == "/" else (None, "")
        if mark is None or mask is None:
            raise self.fail(f"cannot parse mark '{text}': expected MARK or MARK/MASK, e.g. 0x2a/0xff")
        return Mark(mark & 0xFFFFFFFF, mask & 0xFFFFFFFF)

    def cgroup(self, text: str, position: int) -> Cgroup:
        return Cgroup(text, position)

    # -- HOST (ss's parse_hostcond)
    def host(self, text: str, position: int, is_port: bool) -> Host:
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
            return Host("unix", text, position, pattern=word)
        if fam in ("link", "netlink", "vsock"):
            return Host("other", text, position)
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
        port, service = -1, None
        if port_text:
            if port_text[0] == ":":
                port_text = port_text[1:]
            if port_text and port_text[0] != "*":
                number = c_integer(port_text)
                if number is not None:
                    port = number
                elif port_text.isascii() and port_text.isprintable() and " " not in port_text:
                    service = port_text
                else:
                    raise self.fail(f"'{port_text}' does not look like a port")
        prefix = hostname = None
        if not is_port and addr and addr[0] != "*":
            prefix = inet_prefix(addr, version)
            if prefix is None:
                if not _only(addr, _HOST_CHARS):
                    raise self.fail(f"an inet prefix is expected rather than '{addr}' "
                                    "(IPv6 addresses go in brackets: [::1]:22)")
                hostname = addr
        return Host("inet", text, position, port, service, prefix, hostname, version)


_ARGUMENTS = {"dev": "an interface name or index", "fwmark": "a mark (MARK[/MASK])", "cgroup": "a cgroup path"}


def _freeze(acc: list, kind: Optional[str]) -> Node:
    if len(acc) == 1:
        return acc[0]
    return And(tuple(acc)) if kind == "and" else Or(tuple(acc))


def walk(tree: Node) -> list[Node]:
    """Every node, parents before children, left to right (no recursion)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        t = type(node)
        if t is And or t is Or:
            todo.extend(reversed(node.items))
        elif t is Not:
            todo.append(node.item)
    return out
