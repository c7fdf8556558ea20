"""The JSON Lines record types: the one contract between the agent and its readers.

Every line the agent prints is one record, a JSON object whose ``type`` names
one of the dataclasses below.  Nested structures are ``TypedDict`` s (plain dicts
at run time, so they serialise without conversion).  ``to_json`` and
``from_dict`` live here and nowhere else; the plugin imports this module.
Field meanings follow ``ss``; ``docs/schema.md`` documents each one.

Compatibility: adding a field or a record type keeps ``SCHEMA_VERSION``;
renaming, removing or changing the meaning of one bumps it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, TypedDict

SCHEMA_VERSION = 1

# The C-accelerated quoting json.dumps uses for str; also escapes control
# characters, so target-supplied names never reach a reader raw.
_quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]

# ss's state names, indexed by the kernel's TCP state number (shared by unix_diag).
STATE_NAMES = (
    "UNKNOWN", "ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT",
    "UNCONN", "CLOSE-WAIT", "LAST-ACK", "LISTEN", "CLOSING", "SYN-RECV",
)


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

@dataclass(slots=True)
class Hello:
    """First record of every stream: who is talking, about which namespace."""

    type: ClassVar[str] = "hello"
    schema_version: int
    agent_version: str
    command: list[str]
    kernel: str
    hostname: str
    platform: str
    netns_inode: Optional[int]
    pidns_inode: Optional[int]
    euid: Optional[int]


@dataclass(slots=True)
class End:
    """Last record of a complete stream; its absence means the stream broke."""

    type: ClassVar[str] = "end"
    records: dict[str, int]
    elapsed_ms: float
    exit_code: int


@dataclass(slots=True)
class Warning:
    """A problem that did not stop the run; the records emitted are still right but may be
    incomplete in the way ``code`` says."""

    type: ClassVar[str] = "warning"
    code: str
    message: str
    count: Optional[int] = None


@dataclass(slots=True)
class Error:
    """A fatal problem; the stream ends after it (still with an ``end`` record)."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    hint: Optional[str] = None


@dataclass(slots=True)
class Socket:
    """One socket, as one row of ``ss``.

    Unix sockets: ``local_address`` is the path, ``@name`` for abstract names, null
    when unnamed; ``local_port`` is the socket's inode and ``peer_port`` the peer's.
    """

    type: ClassVar[str] = "socket"
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


@dataclass(slots=True)
class TransportCount:
    total: int
    ipv4: int
    ipv6: int


@dataclass(slots=True)
class Summary:
    """``ss -s`` plus a count per TCP state in this network namespace."""

    type: ClassVar[str] = "summary"
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


@dataclass(slots=True)
class NextHop:
    gateway: Optional[str]
    dev: Optional[str]
    weight: int = 1


@dataclass(slots=True)
class Route:
    """One route of one table (``ip route show table all``)."""

    type: ClassVar[str] = "route"
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
    nexthops: Optional[list[dict[str, Any]]] = None  #: multipath: [{gateway, dev, weight}]
    flags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Interface:
    """A link and its addresses (``ip -br addr`` and more)."""

    type: ClassVar[str] = "interface"
    index: int
    name: str
    state: str  #: UP | DOWN | UNKNOWN | LOWERLAYERDOWN | ...
    mtu: Optional[int]
    mac: Optional[str]
    flags: list[str]
    kind: Optional[str]  #: veth | bridge | ... (IFLA_LINKINFO), null for plain devices
    addresses: list[dict[str, Any]]  #: [{family, address, prefixlen, scope}]


@dataclass(slots=True)
class ProcessLimits:
    """One process's fd usage against its RLIMIT_NOFILE."""

    type: ClassVar[str] = "process_limits"
    pid: int
    comm: str
    open_fds: Optional[int]  #: null when /proc/PID/fd cannot be read
    fd_soft_limit: Optional[int]  #: null = unlimited
    fd_hard_limit: Optional[int]
    percent_used: Optional[float]
    container_id: Optional[str] = None


@dataclass(slots=True)
class Limits:
    """System, network-namespace and counter figures; absent figures are null, never 0."""

    type: ClassVar[str] = "limits"
    system: dict[str, Optional[int]]
    netns: dict[str, Any]
    counters: dict[str, dict[str, Optional[int]]]


@dataclass(slots=True)
class Finding:
    """A triage conclusion in plain language, with the figures behind it."""

    type: ClassVar[str] = "finding"
    id: str
    severity: str  #: critical | warning | info
    title: str
    evidence: dict[str, Any]
    explanation: str
    next_step: str


RECORD_TYPES: dict[str, type] = {
    cls.type: cls
    for cls in (Hello, End, Warning, Error, Socket, Summary, Route, Interface,
                ProcessLimits, Limits, Finding)
}
SEVERITIES = ("critical", "warning", "info")


# --- serialisation -----------------------------------------------------------------

def to_dict(record: Any) -> dict[str, Any]:
    """The record as the JSON object it is on the wire (``type`` first; unset optional
    socket extras left out)."""
    out: dict[str, Any] = {"type": record.type}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value is None and f.name in _SOCKET_EXTRAS:
            continue
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [dataclasses.asdict(v) for v in value]
        out[f.name] = value
    return out


_SOCKET_EXTRAS = ("processes", "timer", "extended", "skmem", "tcp_info")
_SOCKET_HEAD = (
    '{"type":"socket","family":"%s","netid":"%s","state":"%s","recv_q":%d,"send_q":%d,'
    '"local_address":%s,"local_port":%d,"peer_address":%s,"peer_port":%d,"interface":%s,'
    '"inode":%d,"uid":%s,"cookie":%s,"v6only":%s'
)
_JSON_BOOL = {None: "null", True: "true", False: "false"}


def _opt_str(value: Optional[str]) -> str:
    return "null" if value is None else _quote(value)


def _opt_int(value: Optional[int]) -> str:
    return "null" if value is None else str(value)


def socket_to_json(s: Socket) -> str:
    """Hand-rolled for the hot path (tens of thousands of sockets): ~7x faster than
    ``json.dumps`` of a dict, same output."""
    if s.family == "unix":
        local, peer = _opt_str(s.local_address), _opt_str(s.peer_address)
    else:  # IP addresses and ss names are plain ASCII: no escaping needed
        local, peer = '"%s"' % s.local_address, '"%s"' % s.peer_address
    text = _SOCKET_HEAD % (
        s.family, s.netid, s.state, s.recv_q, s.send_q, local, s.local_port, peer, s.peer_port,
        _opt_str(s.interface), s.inode, _opt_int(s.uid), _opt_int(s.cookie), _JSON_BOOL[s.v6only],
    )
    extras = ""
    for name in _SOCKET_EXTRAS:
        value = getattr(s, name)
        if value is not None:
            extras += ',"%s":%s' % (name, json.dumps(value, separators=(",", ":")))
    return text + extras + "}"


def to_json(record: Any) -> str:
    """One line of JSON (no newline) for any record."""
    if type(record) is Socket:
        return socket_to_json(record)
    return json.dumps(to_dict(record), separators=(",", ":"))


class SchemaError(ValueError):
    """A JSON object that is not a valid record of this schema."""


def from_dict(obj: Any) -> Any:
    """The record for one decoded JSON object; unknown fields are ignored so that newer
    agents stay readable, missing required ones raise ``SchemaError``."""
    if not isinstance(obj, dict):
        raise SchemaError(f"expected a JSON object, got {type(obj).__name__}")
    cls = RECORD_TYPES.get(obj.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise SchemaError(f"unknown record type {obj.get('type')!r}")
    names = _FIELD_NAMES[cls]
    try:
        return cls(**{k: v for k, v in obj.items() if k in names})
    except TypeError as exc:
        raise SchemaError(f"bad {cls.type} record: {exc}") from None


_FIELD_NAMES = {cls: frozenset(f.name for f in dataclasses.fields(cls)) for cls in RECORD_TYPES.values()}
