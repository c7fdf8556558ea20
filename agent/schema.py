"""The JSON Lines record types: the one contract between the agent and its readers.

Every line the agent prints is one record, a JSON object whose ``type`` names one
of the NamedTuples below (cheap to build, and no dataclasses import at start-up).
Nested structures are ``TypedDict`` s (plain dicts at run time, so they serialise
without conversion).  ``to_json`` and
``from_dict`` live here and nowhere else; the plugin imports this module.
Field meanings follow ``ss``; ``docs/schema.md`` documents each one.

Compatibility: adding a field or a record type keeps ``SCHEMA_VERSION``;
renaming, removing or changing the meaning of one bumps it.
"""

# No ``from __future__ import annotations`` here: NamedTuple and TypedDict turn every field
# annotation given as text into a ForwardRef, compiling it, which made this module's import
# twice as slow (about 3 ms of every run).  Types are defined before they are used.
import json
from typing import Any, NamedTuple, Optional, TypedDict

SCHEMA_VERSION = 1

# The C-accelerated quoting json.dumps uses for str; also escapes control
# characters, so target-supplied names never reach a reader raw.
_quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]

# ss's state names, indexed by the kernel's TCP state number (shared by unix_diag).
STATE_NAMES = (
    "UNKNOWN", "ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT",
    "UNCONN", "CLOSE-WAIT", "LAST-ACK", "LISTEN", "CLOSING", "SYN-RECV",
)


def text(raw: bytes | bytearray | memoryview | str) -> str:
    """The one rule for every string the agent takes from the kernel, a target or its own
    command line: valid UTF-8 as is, any other byte as the four characters ``\\xNN``.

    ``str`` input is what Python already decoded with ``surrogateescape`` (argv,
    ``if_indextoname``, ``gethostname``): its lone surrogates are the undecodable bytes,
    and they get the same ``\\xNN`` instead of reaching the wire as ``\\udcNN``."""
    if isinstance(raw, str):
        if raw.isascii():
            return raw
        try:
            raw = raw.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no decoder made (e.g. from JSON): keep it visible
            return raw.encode("utf-8", "backslashreplace").decode("utf-8")
    return bytes(raw).decode("utf-8", "backslashreplace")


def escape(text: Any) -> str:
    """``text`` made safe for a terminal: the one rule of docs/schema.md (Conventions), beside
    ``text()``, so the error path needs no further import (render.py re-exports it)."""
    if text is None:
        return ""
    if type(text) is not str:
        text = str(text)
    if text.isprintable():  # the common case, in C
        return text
    return "".join(c if c.isprintable() else escape_char(c) for c in text)


def escape_char(c: str) -> str:
    """The escape of one non-printable character."""
    code = ord(c)
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode/surrogateescape keep it
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


# --- nested structures -------------------------------------------------------------

class Process(TypedDict, total=False):
    """One owner of a socket (``ss -p``): a process holding it in an fd."""

    pid: int  #: as seen in the agent's PID namespace
    comm: str  #: /proc/PID/stat comm (untrusted text)
    fd: int
    container_id: Optional[str]  #: 64-hex container id from /proc/PID/cgroup, if any


class Timer(TypedDict):
    """``ss -o``: the socket's pending kernel timer."""

    name: str  #: on | keepalive | timewait | persist | unknown
    expires_ms: int
    retrans: int


class SkMem(TypedDict, total=False):
    """``ss -m``: SK_MEMINFO, bytes."""

    rmem_alloc: int
    rcvbuf: int
    wmem_alloc: int
    sndbuf: int
    fwd_alloc: int
    wmem_queued: int
    optmem: int
    backlog: int
    drops: int


class Extended(TypedDict, total=False):
    """``ss -e``: details beyond the default columns."""

    shutdown: str  #: "<->", "-->" (no more receives), "<--" (no more sends), "---"
    fwmark: Optional[int]
    cgroup_id: Optional[int]
    vfs_inode: Optional[int]  #: unix: inode of the bound path
    vfs_dev: Optional[str]  #: unix: "MAJ/MIN" as ss prints it
    peers: Optional[list[int]]  #: unix listeners: inodes of pending connections


TcpInfo = dict[str, Any]
"""``ss -i``: struct tcp_info fields by name (times in ms, rates in bytes/s), plus
``congestion`` (the algorithm).  Only fields the kernel returned are present."""


# --- records -----------------------------------------------------------------------

class Hello(NamedTuple):
    """First record of every stream: who is talking, about which namespace."""

    schema_version: int
    agent_version: str
    command: list[str]
    kernel: str
    hostname: str
    platform: str
    netns_inode: Optional[int]
    pidns_inode: Optional[int]
    euid: Optional[int]


class End(NamedTuple):
    """Last record of a complete stream; its absence means the stream broke."""

    records: dict[str, int]
    elapsed_ms: float
    exit_code: int


class Warning(NamedTuple):
    """A problem that did not stop the run; the records emitted are still right but may be
    incomplete in the way ``code`` says."""

    code: str
    message: str
    count: Optional[int] = None


class Error(NamedTuple):
    """A fatal problem; the stream ends after it (still with an ``end`` record)."""

    code: str
    message: str
    hint: Optional[str] = None


class Socket(NamedTuple):
    """One socket, as one row of ``ss``.

    Unix sockets: ``local_address`` is the path, ``@name`` for abstract names, null
    when unnamed; ``local_port`` is the socket's inode and ``peer_port`` the peer's.
    A tuple (not a dataclass) because tens of thousands are built per run and
    ``tuple.__new__`` is the cheapest typed record Python has.
    """

    family: str  #: inet | inet6 | unix
    netid: str  #: tcp | udp | raw | u_str | u_dgr | u_seq
    state: str  #: one of STATE_NAMES
    recv_q: int
    send_q: int
    local_address: Optional[str]
    local_port: int
    peer_address: Optional[str]
    peer_port: int
    interface: Optional[str] = None
    inode: int = 0
    uid: Optional[int] = None
    cookie: Optional[int] = None
    v6only: Optional[bool] = None
    # Present only when asked for (ss -p / -o / -e / -m / -i).
    processes: Optional[list[Process]] = None
    timer: Optional[Timer] = None
    extended: Optional[Extended] = None
    skmem: Optional[SkMem] = None
    tcp_info: Optional[TcpInfo] = None



class Summary(NamedTuple):
    """``ss -s`` plus a count per TCP state in this network namespace."""

    sockets_used: Optional[int]
    tcp_total: Optional[int]  #: alloc + tw, as ss prints after "TCP:" (alloc is global)
    tcp_estab: Optional[int]
    tcp_closed: Optional[int]
    tcp_orphaned: Optional[int]
    tcp_timewait: Optional[int]
    transports: dict[str, dict[str, int]]  #: RAW/UDP/TCP/INET/FRAG -> total/ipv4/ipv6
    tcp_states: dict[str, int]  #: ss state name -> sockets in it
    udp_sockets: int = 0
    unix_sockets: int = 0


class Route(NamedTuple):
    """One route of one table (``ip route show table all``)."""

    family: str  #: inet | inet6
    table: str  #: main | local | default | number
    route_type: str  #: unicast | local | broadcast | blackhole | unreachable | prohibit | ...
    dst: str  #: CIDR, or "default"
    gateway: Optional[str]
    dev: Optional[str]
    prefsrc: Optional[str]
    metric: Optional[int]
    protocol: str  #: kernel | boot | static | dhcp | ra | number
    scope: str  #: global | link | host | site | nowhere | number
    pref: Optional[str] = None  #: IPv6 router preference: low | medium | high
    src: Optional[str] = None  #: source-specific routing prefix ("from")
    nexthops: Optional[list[dict[str, Any]]] = None  #: multipath: [{gateway, dev, weight, flags}]
    flags: tuple[str, ...] = ()


class Interface(NamedTuple):
    """A link and its addresses (``ip -br addr`` and more)."""

    index: int
    name: str
    state: str  #: UP | DOWN | UNKNOWN | LOWERLAYERDOWN | ...
    mtu: Optional[int]
    mac: Optional[str]
    flags: list[str]
    kind: Optional[str]  #: veth | bridge | ... (IFLA_LINKINFO), null for plain devices
    addresses: list[dict[str, Any]]  #: [{family, address, prefixlen, scope, flags, peer?, broadcast?, label?}]
    link_type: Optional[str] = None  #: ether | loopback | none | ... (ARPHRD, as ip prints it)
    master: Optional[str] = None  #: the bridge or bond this link is enslaved to
    stats: Optional[dict[str, int]] = None  #: rx/tx packets, bytes, errors, dropped (IFLA_STATS64)


class ProcessLimits(NamedTuple):
    """One process's fd usage against its RLIMIT_NOFILE."""

    pid: int
    comm: str
    open_fds: Optional[int]  #: null when /proc/PID/fd cannot be read
    fd_soft_limit: Optional[int]  #: null = unlimited, or /proc/PID/limits unreadable
    fd_hard_limit: Optional[int]
    percent_used: Optional[float]
    container_id: Optional[str] = None


class ProcessIds(NamedTuple):
    """``ids``: one process's user and group ids, as /proc/PID/status lists them (real,
    effective, saved, filesystem): an agent without CAP_SYS_PTRACE reads a process's
    /proc/PID/fd only when it runs as the same uid and gid."""

    pid: int
    comm: str
    uids: list[int]
    gids: list[int]
    container_id: Optional[str] = None


class Limits(NamedTuple):
    """System, network-namespace and counter figures; absent figures are null, never 0."""

    system: dict[str, Optional[int]]
    netns: dict[str, Any]
    counters: dict[str, dict[str, Optional[int]]]


class Finding(NamedTuple):
    """A triage conclusion in plain language, with the figures behind it."""

    id: str
    severity: str  #: critical | warning | info
    title: str
    evidence: dict[str, Any]
    explanation: str
    next_step: str


class NetNs(NamedTuple):
    """``pods`` (node agent): a network namespace about to be inspected; the socket records
    that follow, up to the next ``netns`` record, are its sockets."""

    netns_inode: int
    host: bool  #: the node's own network namespace (hostNetwork pods, the node's daemons)
    pod_uids: list[str]  #: pods with a process in it (from /proc/PID/cgroup)
    pids: int  #: processes in it
    error: Optional[str] = None  #: why it could not be entered (no sockets follow)


class Seen(TypedDict):
    """``events``: the socket as the agent's last table dump before its close showed it."""

    state: str  #: state at that dump (ESTAB, SYN-SENT, CLOSE-WAIT, LISTEN, ...)
    local_address: str
    local_port: int
    peer_address: str
    peer_port: int
    inode: int
    uid: int
    age_ms: float  #: from the first dump that showed it to the close (a lower bound of its life)


class Event(NamedTuple):
    """``events``: one TCP or UDP socket destroyed by the kernel (``ss -E``), with its final
    figures.  The address, port, state and queue fields are the kernel's message as ``ss -E``
    prints it; ``close``, ``duration_ms`` and ``seen`` are the agent's additions."""

    time: float  #: Unix time the agent received it (s, ms precision)
    family: str  #: inet | inet6
    netid: str  #: tcp | udp
    state: str  #: state at destruction: UNCONN for every TCP socket, ESTAB for a connected UDP one
    recv_q: int
    send_q: int
    local_address: str
    local_port: int
    peer_address: str
    peer_port: int  #: 0 also when the kernel had already reset the connection (see ``close``)
    interface: Optional[str]
    cookie: int
    close: Optional[str]  #: closed | reset | failed | timeout | unconnected (TCP), null for UDP
    duration_ms: Optional[float]  #: the connection lived at least this long; null when unknown
    bytes_sent: Optional[int]  #: TCP figures from the final tcp_info; null for UDP
    bytes_received: Optional[int]
    bytes_acked: Optional[int]
    retrans: Optional[int]  #: tcpi_total_retrans
    lost: Optional[int]
    rtt_ms: Optional[float]
    segs_in: Optional[int]
    segs_out: Optional[int]
    seen: Optional[Seen] = None  #: the agent's last sight of it; null if no dump showed it
    processes: Optional[list[Process]] = None  #: -p: its owners at that last sight (best effort)
    tcp_info: Optional[TcpInfo] = None  #: -i: the whole final tcp_info


class EventCounts(TypedDict):
    """``tick``: what happened over one interval, or since the start."""

    events: int  #: event records written
    unmatched: int  #: destroyed sockets the filter or the family flags left out
    lost: int  #: destroy messages the kernel dropped because the agent's buffer was full
    resets: int  #: events whose ``close`` is ``reset``
    by_netid: dict[str, int]
    by_state: dict[str, int]
    by_close: dict[str, int]  #: ``close`` value -> events (UDP under "none")
    kernel: dict[str, Optional[int]]  #: namespace TCP counters over the same span (docs/schema.md)


class Tick(NamedTuple):
    """``events``: periodic counts, and one last tick (``final``) before ``end``."""

    elapsed_ms: float  #: since the subscription started
    interval: EventCounts  #: since the previous tick
    total: EventCounts  #: since the subscription started
    final: bool = False
    ended_by: Optional[str] = None  #: final tick: count | for | SIGINT | SIGTERM | stdin


RECORD_TYPES: dict[str, type] = {
    "hello": Hello, "end": End, "warning": Warning, "error": Error, "socket": Socket, "summary": Summary,
    "route": Route, "interface": Interface, "process_limits": ProcessLimits, "limits": Limits,
    "finding": Finding, "netns": NetNs, "event": Event, "tick": Tick, "process_ids": ProcessIds,
}
for _name, _cls in RECORD_TYPES.items():
    _cls.type = _name  # type: ignore[attr-defined]  # a class attribute, not a field
SEVERITIES = ("critical", "warning", "info")


# --- serialisation -----------------------------------------------------------------

def to_dict(record: Any) -> dict[str, Any]:
    """The record as the JSON object it is on the wire (``type`` first; unset optional
    socket extras left out)."""
    out: dict[str, Any] = {"type": record.type}
    if type(record) is Socket:
        out.update((k, v) for k, v in zip(Socket._fields, record)
                   if v is not None or k not in _SOCKET_EXTRAS)
    else:
        out.update(zip(record._fields, record))
    return out


_SOCKET_EXTRAS = ("processes", "timer", "extended", "skmem", "tcp_info")
_SOCKET_HEAD = (
    '{"type":"socket","family":"%s","netid":"%s","state":"%s","recv_q":%d,"send_q":%d,'
    '"local_address":%s,"local_port":%d,"peer_address":%s,"peer_port":%d,"interface":%s,'
    '"inode":%d,"uid":%s,"cookie":%s,"v6only":%s'
)
_JSON_BOOL = {None: "null", True: "true", False: "false"}


def json_string(value: Optional[str]) -> str:
    """A str (or None) as JSON text, escaped as ``json.dumps`` escapes it."""
    return "null" if value is None else _quote(value)


def _opt_int(value: Optional[int]) -> str:
    return "null" if value is None else str(value)


def process_json_parts(pid: int, comm: str, container_id: Optional[str]) -> tuple[str, str]:
    """The compact JSON of ``Process(pid, comm, fd[, container_id])`` around its fd:
    ``head + str(fd) + tail``, so an owner scan can render each process once and every
    socket it holds with one format."""
    head = f'{{"pid":{pid},"comm":{_quote(comm)},"fd":'
    return head, "}" if container_id is None else f',"container_id":{_quote(container_id)}}}'


def socket_to_json(s: Socket) -> str:
    """Hand-rolled for the hot path (tens of thousands of sockets): ~5x faster than
    ``json.dumps`` of a dict, same output (checked in the unit tests)."""
    (family, netid, state, rq, wq, local, lport, peer, pport, ifname, inode, uid, cookie, v6only,
     processes, timer, extended, skmem, tcp_info) = s
    if family != "unix" and ifname is None and uid is not None and cookie is not None:
        # IP addresses and ss names are plain ASCII: no escaping needed.  An f-string is
        # the cheapest formatting Python has (a third less than %).
        text = (f'{{"type":"socket","family":"{family}","netid":"{netid}","state":"{state}","recv_q":{rq},'
                f'"send_q":{wq},"local_address":"{local}","local_port":{lport},"peer_address":"{peer}",'
                f'"peer_port":{pport},"interface":null,"inode":{inode},"uid":{uid},"cookie":{cookie},'
                f'"v6only":{_JSON_BOOL[v6only]}')
        if processes is None and timer is None and extended is None and skmem is None and tcp_info is None:
            return text + "}"
    else:
        text = _SOCKET_HEAD % (family, netid, state, rq, wq, json_string(local), lport, json_string(peer), pport,
                               json_string(ifname), inode, _opt_int(uid), _opt_int(cookie), _JSON_BOOL[v6only])
    for name, value in zip(_SOCKET_EXTRAS, (processes, timer, extended, skmem, tcp_info)):
        if value is not None:
            text += ',"%s":%s' % (name, json.dumps(value, separators=(",", ":")))
    return text + "}"


def event_to_json(e: Event) -> str:
    """Hand-rolled like ``socket_to_json``, for the same reason: events come in storms of
    tens of thousands a second, and json.dumps was half the cost of each (same output,
    checked in the unit tests)."""
    (when, family, netid, state, rq, wq, local, lport, peer, pport, ifname, cookie, close, duration,
     sent, received, acked, retrans, lost, rtt, segs_in, segs_out, seen, processes, tcp_info) = e
    text = (f'{{"type":"event","time":{when},"family":"{family}","netid":"{netid}","state":"{state}",'
            f'"recv_q":{rq},"send_q":{wq},"local_address":"{local}","local_port":{lport},'
            f'"peer_address":"{peer}","peer_port":{pport},"interface":{json_string(ifname)},"cookie":{cookie},'
            f'"close":{"null" if close is None else _quote(close)},'
            f'"duration_ms":{"null" if duration is None else duration}')
    if sent is None and rtt is None:  # UDP, or a kernel without tcp_info
        text += (',"bytes_sent":null,"bytes_received":null,"bytes_acked":null,"retrans":null,"lost":null,'
                 '"rtt_ms":null,"segs_in":null,"segs_out":null')
    else:  # inline tests: nine calls of _opt_int were a fifth of the line's cost
        text += (f',"bytes_sent":{"null" if sent is None else sent},'
                 f'"bytes_received":{"null" if received is None else received},'
                 f'"bytes_acked":{"null" if acked is None else acked},'
                 f'"retrans":{"null" if retrans is None else retrans},"lost":{"null" if lost is None else lost},'
                 f'"rtt_ms":{"null" if rtt is None else rtt},"segs_in":{"null" if segs_in is None else segs_in},'
                 f'"segs_out":{"null" if segs_out is None else segs_out}')
    for name, value in (("seen", seen), ("processes", processes), ("tcp_info", tcp_info)):
        text += ',"%s":%s' % (name, "null" if value is None else json.dumps(value, separators=(",", ":")))
    return text + "}"


def to_json(record: Any) -> str:
    """One line of JSON (no newline) for any record."""
    if type(record) is Socket:
        return socket_to_json(record)
    if type(record) is Event:
        return event_to_json(record)
    return json.dumps(to_dict(record), separators=(",", ":"))


class SchemaError(ValueError):
    """A JSON object that is not a valid record of this schema."""


class UnknownRecordType(SchemaError):
    """A record type this schema does not know: from a newer agent (new types keep the
    schema version), so readers may skip it."""


def from_dict(obj: Any) -> Any:
    """The record for one decoded JSON object; unknown fields are ignored so that newer
    agents stay readable, missing required ones raise ``SchemaError``."""
    if not isinstance(obj, dict):
        raise SchemaError(f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None  # a list would not hash
    if cls is None:
        raise UnknownRecordType(f"unknown record type {obj.get('type')!r}")
    names = _FIELD_NAMES[cls]
    try:
        return cls(**{k: v for k, v in obj.items() if k in names})
    except TypeError as exc:
        raise SchemaError(f"bad {cls.type} record: {exc}") from None


_FIELD_NAMES = {cls: frozenset(cls._fields) for cls in RECORD_TYPES.values()}
