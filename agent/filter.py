"""ss's socket selection: tables, state groups, and the filter expression compiled for
the agent.

Behaviour follows iproute2 6.1 (``misc/ss.c``): the default states per table and per
family flag, ``-a``/``-l``, then the words, which ``ssfilter.parse`` turns into state
bits and one syntax tree.  This module is the agent's half: it resolves the tree's
names (host names, port names, ``dev`` names, ``cgroup`` paths) and builds the two
evaluators ss runs over that one tree.

ss evaluates an expression twice: the kernel runs it as inet_diag bytecode over TCP
and UDP dumps, and ss runs it again over every row (``run_ssfilter``); a socket is
shown when both say yes.  The two disagree in places (``autobound``: the kernel tests
SOCK_BINDPORT_LOCK, ss the ephemeral range; address rules: the kernel checks the
family, ss compares raw bits), so ``compile_tree`` builds both predicates from the tree
and ``Selection.matches`` applies the kernel one to netlink TCP/UDP rows too.
"""

from __future__ import annotations

import _socket
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Optional

from .schema import Socket
from .ssfilter import (
    ALL,
    CLOSE,
    CLOSE_WAIT,
    CLOSING,
    CONNECTED,
    ESTABLISHED,
    FIN_WAIT1,
    FIN_WAIT2,
    LAST_ACK,
    LISTEN,
    NEW_SYN_RECV,
    SS_CONN,
    STATE_WORDS,
    SYN_RECV,
    SYN_SENT,
    TIME_WAIT,
    And,
    Cgroup,
    Dev,
    Expression,
    FilterError,
    Host,
    HostCond,
    Mark,
    Not,
    Or,
    PortBound,
    Value,
    c_integer,
    parse,
    split_words,
    walk,
)

if TYPE_CHECKING:
    from .ssfilter import Node

__all__ = [
    "ALL", "CLOSE", "CONNECTED", "LISTEN", "NEW_SYN_RECV", "SS_CONN", "STATE_WORDS", "SYN_RECV", "FilterError",
    "Selection", "Unlocked", "cgroup_id", "compile_tree", "parse", "parse_expression", "select", "split_words",
]

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


class Unlocked(set):
    """Cookies of inet sockets without SOCK_BINDPORT_LOCK (what the kernel calls
    autobound); ``known`` is False when the kernel would not say."""

    known = True


class Selection(Value):
    """Which tables, families and states to dump, and the expression to apply."""

    __slots__ = ("expr", "families", "kernel_expr", "marks", "netids", "netlink_family", "reads_fwmark", "states",
                 "unlocked")

    def __init__(self, netids: frozenset[str], families: frozenset[str], states: int,
                 expr: Optional[Callable[[Socket], bool]] = None,
                 kernel_expr: Optional[Callable[[Socket], bool]] = None, unlocked: Optional[Unlocked] = None,
                 netlink_family: Optional[str] = None, marks: bool = False, reads_fwmark: bool = False):
        self.netids = netids  #: tcp udp raw u_str u_dgr u_seq
        self.families = families  #: inet inet6 unix
        self.states = states
        self.expr = expr  #: ss's userspace evaluation (every row)
        #: the kernel's bytecode evaluation, for TCP/UDP rows from netlink (None: same answer)
        self.kernel_expr = kernel_expr
        #: cookies of sockets without SOCK_BINDPORT_LOCK, which the kernel calls autobound;
        #: filled by the dump (an extra bytecode request) when ``autobound`` is used
        self.unlocked = unlocked
        #: ss's preferred family when it is inet or inet6 (-4/-6 last, or an inet:/inet6: host):
        #: ss then sends only that family's netlink dump (/proc fallbacks still read both)
        self.netlink_family = netlink_family
        #: the expression reads socket marks or cgroups (``fwmark``, ``cgroup``): the dump
        #: must parse INET_DIAG_MARK and INET_DIAG_CGROUP_ID into ``extended`` even without -e
        self.marks = marks
        #: the expression uses ``fwmark``, which the kernel answers only to CAP_NET_ADMIN
        self.reads_fwmark = reads_fwmark

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


def select(*, tcp: bool = False, udp: bool = False, raw: bool = False, unix: bool = False,
           ipv4: bool = False, ipv6: bool = False, all_states: bool = False, listening: bool = False,
           words: Sequence[str] = (), local_port_range: tuple[int, int] = (32768, 60999),
           preferred_family: Optional[str] = None, parsed: Optional[Expression] = None) -> Selection:
    """ss's option semantics: table and family flags with their default states, then
    -a/-l, then ``state``/``exclude`` words, then the expression (the remaining words).

    ``preferred_family`` is the last of -x/-4/-6 on the command line (unix, inet or
    inet6); ss parses every address and port of the expression in that family (so with
    -x, ``sport = :22`` is a unix name pattern).  When not given, it is derived from the
    flags in the order -x, -4, -6.  ``parsed`` is ``ssfilter.parse`` of ``words`` when
    the caller already has it.  Names are resolved here: raises FilterError.
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
    if parsed is None:
        parsed = parse(words, preferred)
    state_filter = parsed.states
    if state_filter is None:
        state_filter = ALL if all_states else (1 << LISTEN | 1 << CLOSE if listening else 0)
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
    uses = parsed.uses
    if parsed.tree is not None:
        unlocked = Unlocked() if "autobound" in uses else None
        expr, kernel = compile_tree(parsed.tree, frozenset(dbs), local_port_range, unlocked)
        if parsed.family is not None:  # ss: a host condition's family replaces the selected ones
            families = {parsed.family}
        preferred = parsed.preferred
        if "dev" in uses:  # ss cannot compile `dev` to bytecode and then sends none at all
            kernel = None
    netids = (dbs - {"unix"}) | (set(UNIX_NETIDS) if "unix" in dbs else set())
    return Selection(frozenset(netids), frozenset(families), states, expr, kernel, unlocked,
                     preferred if preferred in ("inet", "inet6") else None,
                     marks=bool(uses & {"fwmark", "cgroup"}), reads_fwmark="fwmark" in uses)


def parse_expression(words: Sequence[str], local_port_range: tuple[int, int] = (32768, 60999),
                     preferred_family: Optional[str] = None,
                     tables: Sequence[str] = ("tcp", "udp")) -> Callable[[Socket], bool]:
    """ss's userspace evaluation of an expression (no state words), as one predicate."""
    tree = parse(words, preferred_family).tree
    if tree is None:
        return lambda s: True
    return compile_tree(tree, frozenset(tables), local_port_range, Unlocked())[0]


# --- the two evaluators ------------------------------------------------------------------

Pred = Callable[[Socket], bool]
Pair = tuple[Pred, Pred]  # (ss's userspace predicate, the kernel bytecode's)
# Trees of up to this many nodes become nested closures (the fastest per socket, and their
# call depth stays small); larger ones run as a jump program, as the kernel runs ss's bytecode.
CLOSURE_NODES = 64


def compile_tree(tree: Node, tables: frozenset[str], local_port_range: tuple[int, int],
                 unlocked: Optional[Unlocked]) -> Pair:
    """ss's two evaluators of one tree: (userspace, kernel bytecode).  Names are resolved
    once per leaf, in the order the words were given (so the first bad word is named)."""
    leaves = _Leaves(tables, local_port_range, unlocked if unlocked is not None else Unlocked())
    nodes = walk(tree)
    pairs: dict[Node, Pair] = {}
    for node in nodes:
        if type(node) not in (And, Or, Not) and node not in pairs:
            pairs[node] = leaves.pair(node)
    if len(nodes) <= CLOSURE_NODES:
        return _closure(tree, pairs, 0), _closure(tree, pairs, 1)
    return _program(tree, pairs, 0), _program(tree, pairs, 1)


def _closure(node: Node, pairs: dict[Node, Pair], which: int) -> Pred:
    t = type(node)
    if t is Not:
        inner = _closure(node.item, pairs, which)
        return lambda s: not inner(s)
    if t is And or t is Or:
        parts = [_closure(item, pairs, which) for item in node.items]
        joined = parts[0]
        for part in parts[1:]:
            joined = _and(joined, part) if t is And else _or(joined, part)
        return joined
    return pairs[node][which]


def _and(a: Pred, b: Pred) -> Pred:
    return lambda s: a(s) and b(s)


def _or(a: Pred, b: Pred) -> Pred:
    return lambda s: a(s) or b(s)


def _program(tree: Node, pairs: dict[Node, Pair], which: int) -> Pred:
    """The tree as a list of leaves with (yes, no) jump targets, like ss's inet_diag
    bytecode: every jump goes forward, ending at len (true) or len + 1 (false)."""
    code: list[list] = []  # [predicate, yes label, no label]
    labels: list[int] = []

    def label() -> int:
        labels.append(-1)
        return len(labels) - 1

    true, false = label(), label()
    todo: list[tuple] = [(tree, true, false)]
    while todo:
        node, yes, no = todo.pop()
        t = type(node)
        if node is None:  # a label placed here
            labels[yes] = len(code)
        elif t is Not:
            todo.append((node.item, no, yes))
        elif t is And or t is Or:
            steps: list[tuple] = []
            for item in node.items[:-1]:
                after = label()
                steps += [(item, after, no) if t is And else (item, yes, after), (None, after, None)]
            steps.append((node.items[-1], yes, no))
            todo.extend(reversed(steps))
        else:
            code.append([pairs[node][which], yes, no])
    labels[true], labels[false] = len(code), len(code) + 1
    preds = tuple(c[0] for c in code)
    yes_at = tuple(labels[c[1]] for c in code)
    no_at = tuple(labels[c[2]] for c in code)
    end = len(code)

    def run(s: Socket) -> bool:
        pc = 0
        while pc < end:
            pc = yes_at[pc] if preds[pc](s) else no_at[pc]
        return pc == end
    return run


# --- leaves: names resolved, (userspace, kernel) predicates ------------------------------

def _false(s: Socket) -> bool:
    return False


class _Leaves:
    def __init__(self, tables: frozenset[str], port_range: tuple[int, int], unlocked: Unlocked):
        self.tables = tables
        self.port_range = port_range
        self.unlocked = unlocked
        self._addr_cache: dict[Optional[str], tuple[int, int]] = {}

    def pair(self, node: Node) -> Pair:
        t = type(node)
        if t is HostCond:
            return self.cond(node.host, node.src)
        if t is PortBound:
            return self.bound(node.host, node.src, node.ge)
        if t is Dev:
            return self.dev(node)
        if t is Mark:
            return self.mark(node)
        if t is Cgroup:
            return self.cgroup(node)
        return self.autobound()

    def port(self, host: Host) -> int:
        """A port name looked up as ss does: in the services of the tables shown."""
        if host.service is None:
            return host.port
        import socket  # name look-ups here only: `socket` with its enums is 12 M instructions of every run

        ports = set()
        for proto in ("udp", "tcp"):
            if proto in self.tables:
                try:
                    ports.add(socket.getservbyname(host.service, proto))
                except OSError:
                    pass
        if len(ports) > 1:
            raise FilterError(f"ambiguous port '{host.service}'", host.word, host.position)
        if not ports:
            raise FilterError(f"'{host.service}' does not look like a port", host.word, host.position)
        return ports.pop()

    def addrs(self, host: Host) -> tuple[tuple[int, int, int], ...]:
        if host.prefix is not None:
            return (host.prefix,)
        if host.hostname is None:
            return ()
        found = _resolve(host.hostname, host.version)
        if not found:
            raise FilterError(f"an inet prefix is expected rather than '{host.hostname}' (no such host)",
                              host.word, host.position)
        return found

    def address(self, text: Optional[str]) -> tuple[int, int]:
        """Socket address text -> (version, value); (0, 0) for unix names."""
        found = self._addr_cache.get(text)
        if found is None:
            if text is None or text[:1] in ("/", "@"):
                found = (0, 0)
            elif ":" in text:
                found = (6, int.from_bytes(_socket.inet_pton(_socket.AF_INET6, text), "big"))
            else:
                found = (4, int.from_bytes(_socket.inet_pton(_socket.AF_INET, text), "big"))
            self._addr_cache[text] = found
        return found

    def cond(self, host: Host, is_src: bool) -> Pair:
        """src/dst HOST and sport/dport [=] PORT (ss's SSF_SCOND / SSF_DCOND)."""
        if host.kind == "unix":
            import fnmatch  # only unix patterns need it

            # Names in records show undecodable bytes as \xNN: so does the pattern.
            pattern = (host.pattern or "").encode("utf-8", "surrogateescape").decode(
                "utf-8", "backslashreplace").lower()

            def unix_match(s: Socket) -> bool:
                if s.family != "unix":
                    return False
                name = s.local_address if is_src else s.peer_address
                return fnmatch.fnmatchcase((name or "").lower(), pattern)
            return unix_match, unix_match
        if host.kind == "other":
            return _false, _false
        port, addrs, address = self.port(host), self.addrs(host), self.address
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

    def bound(self, host: Host, is_src: bool, ge: bool) -> Pair:
        """sport/dport >= or <= PORT; they compare numbers (for unix sockets: inodes)."""
        port = self.port(host)
        kport = port & 0xFFFF  # the bytecode carries the port as a u16
        if ge:
            if is_src:
                return (lambda s: s.local_port >= port), (lambda s: s.local_port >= kport)
            return (lambda s: s.peer_port >= port), (lambda s: s.peer_port >= kport)
        if is_src:
            return (lambda s: s.local_port <= port), (lambda s: s.local_port <= kport)
        return (lambda s: s.peer_port <= port), (lambda s: s.peer_port <= kport)

    def dev(self, node: Dev) -> Pair:
        import socket  # name look-ups here only: `socket` with its enums is 12 M instructions of every run

        text = node.name
        try:
            index = socket.if_nametoindex(text)
        except (OSError, ValueError):
            index = c_integer(text, unsigned=True)
            if index is None:
                raise FilterError(f"cannot parse device '{text}' (no such interface)", text,
                                  node.position) from None
        if index == 0:  # unbound sockets (and unix, which have no device)
            pred: Pred = lambda s: s.interface is None  # noqa: E731
        else:
            try:
                name = socket.if_indextoname(index)
            except OSError:
                name = str(index)  # how the dump names an index it cannot resolve
            pred = lambda s: s.family != "unix" and s.interface == name  # noqa: E731
        return pred, pred

    def mark(self, node: Mark) -> Pair:
        """ss's SSF_MARKMASK and the kernel's INET_DIAG_BC_MARK_COND: (mark & mask) == value.
        A socket without the INET_DIAG_MARK attribute (unix, /proc rows, or a reader
        without CAP_NET_ADMIN) has mark 0, as in ss."""
        mark, mask = node.mark, node.mask

        def pred(s: Socket) -> bool:
            ext = s.extended
            return ((ext.get("fwmark") or 0) if ext else 0) & mask == mark
        return pred, pred

    def cgroup(self, node: Cgroup) -> Pair:
        """ss's SSF_CGROUPCOND and INET_DIAG_BC_CGROUP_COND: the socket's cgroup v2 id
        (INET_DIAG_CGROUP_ID; 0 for sockets without it) equals PATH's."""
        wanted = cgroup_id(node)

        def pred(s: Socket) -> bool:
            ext = s.extended
            return ((ext.get("cgroup_id") or 0) if ext else 0) == wanted
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


def _resolve(name: str, version: int) -> tuple[tuple[int, int, int], ...]:
    """A host name's addresses (ss: gethostbyname2, IPv4 then IPv6 unless -4/-6)."""
    import socket  # name look-ups here only: `socket` with its enums is 12 M instructions of every run

    out = []
    for fam, ver in ((_socket.AF_INET, 4), (_socket.AF_INET6, 6)):
        if version and ver != version:
            continue
        try:
            infos = socket.getaddrinfo(name, None, fam, _socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            continue
        for info in infos:
            value = int.from_bytes(_socket.inet_pton(fam, info[4][0].split("%")[0]), "big")
            entry = (ver, value, 32 if ver == 4 else 128)
            if entry not in out:
                out.append(entry)
    return tuple(out)


# --- cgroup v2 paths ---------------------------------------------------------------------

def cgroup2_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points of the cgroup2 filesystem, in mount order (ss takes the first)."""
    try:
        with open(mountinfo, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        left, sep, right = line.partition(b" - ")
        fields = left.split(b" ")
        if sep and right.split(b" ", 1)[0] == b"cgroup2" and len(fields) > 4:
            # mountinfo escapes space, tab, newline and backslash as \ooo
            raw = fields[4]
            for code in (b"\\040", b"\\011", b"\\012", b"\\134"):
                raw = raw.replace(code, bytes([int(code[1:], 8)]))
            out.append(os.fsdecode(raw))
    return out


def cgroup_id(node: Cgroup, mountinfo: str = "/proc/self/mountinfo") -> int:
    """A cgroup v2 directory's id: its inode number on the cgroup2 filesystem (the id in
    INET_DIAG_CGROUP_ID).  PATH is a path under a cgroup2 mount, or relative to the
    first mount (``/app`` and ``app`` are the mount's ``app``; ``/`` is its root)."""
    mounts = cgroup2_mounts(mountinfo)
    if not mounts:
        raise FilterError(f"cannot resolve cgroup '{node.path}': no cgroup2 filesystem is mounted "
                          "(see /proc/self/mountinfo)", node.path, node.position)
    path = node.path
    full = os.path.normpath(path) if path.startswith("/") else None
    if full is None or not any(full == m or full.startswith(m.rstrip("/") + "/") for m in mounts):
        full = os.path.join(mounts[0], path.lstrip("/"))
    try:
        st = os.stat(full)
    except (OSError, ValueError) as exc:
        raise FilterError(f"cannot resolve cgroup '{path}': {getattr(exc, 'strerror', None) or exc} "
                          f"({full})", path, node.position) from None
    if not os.path.isdir(full):
        raise FilterError(f"cgroup '{path}' is not a cgroup directory ({full})", path, node.position)
    return st.st_ino
