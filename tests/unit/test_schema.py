"""The wire format: to_json (with the hand-rolled socket fast path) equals json.dumps of
to_dict, and from_dict reads every record back; bad objects raise SchemaError."""

from __future__ import annotations

import json

import pytest
from sockdebug_agent.schema import (
    RECORD_TYPES,
    End,
    Error,
    Hello,
    SchemaError,
    Socket,
    Summary,
    Warning,
    from_dict,
    socket_to_json,
    to_dict,
    to_json,
)

SOCKETS = [
    Socket("inet", "tcp", "ESTAB", 0, 0, "127.0.0.1", 8080, "127.0.0.1", 41000, None, 123, 0, 77),  # fast path
    Socket("inet6", "tcp", "LISTEN", 1, 128, "::", 8443, "::", 0, None, 5, 1000, 2**40 + 3, False),
    Socket("inet", "udp", "UNCONN", 832, 0, "0.0.0.0", 5353, "0.0.0.0", 0, "lo", 9, 0, 1, None),
    Socket("inet", "tcp", "TIME-WAIT", 0, 0, "127.0.0.1", 1, "127.0.0.1", 2, None, 0, None, None),  # /proc row
    Socket("unix", "u_str", "ESTAB", 5, 0, None, 11, None, 12, None, 11, 0, 4),
    Socket("unix", "u_dgr", "UNCONN", 0, 0, '/tmp/"we\\ird"\n\x01 é.sock', 13, None, 0, None, 13, None, 5),
    Socket("unix", "u_str", "LISTEN", 0, 4096, "@abs@name", 14, None, 0, None, 14, 0, 6,
           processes=[{"pid": 1, "comm": 'we ird)nm"\x1b', "fd": 3, "container_id": "a" * 64}],
           extended={"shutdown": "<->", "vfs_inode": 99, "vfs_dev": "0/65024", "peers": [15, 16]},
           skmem={"rmem_alloc": 0, "rcvbuf": 212992}),
    Socket("inet", "tcp", "SYN-SENT", 0, 1, "10.0.0.1", 40000, "10.0.0.2", 80, None, 17, 0, 8, None,
           processes=[], timer={"name": "on", "expires_ms": 1000, "retrans": 2},
           extended={"shutdown": "<->", "fwmark": 42, "cgroup_id": 7},
           tcp_info={"congestion": "cubic", "rtt_ms": 0.5, "options": ["ts", "sack"], "min_rtt_ms": None}),
]


@pytest.mark.parametrize("sock", SOCKETS, ids=range(len(SOCKETS)))
def test_socket_json_is_json_dumps_of_to_dict(sock):
    line = socket_to_json(sock)
    assert line == json.dumps(to_dict(sock), separators=(",", ":"))
    assert to_json(sock) == line
    assert "\n" not in line and "\x1b" not in line  # control characters are escaped
    obj = json.loads(line)
    assert list(obj)[:2] == ["type", "family"] and obj["type"] == "socket"
    assert from_dict(obj) == sock
    for extra in ("processes", "timer", "extended", "skmem", "tcp_info"):  # unset extras are left out
        assert (extra in obj) == (getattr(sock, extra) is not None)


RECORDS = [
    Hello(1, "0.1.0", ["sockdebug-agent", "sockets"], "6.1", "host", "linux", 4026531833, None, 0),
    End({"hello": 1, "socket": 3}, 1.5, 0),
    Warning("proc-fallback", "raw sockets read from /proc", None),
    Warning("process-attribution-denied", "could not read 2 processes", 2),
    Error("usage", "invalid filter", "see ss(8)"),
    Summary(56, 180, 22, 150, 0, 3, {"TCP": {"total": 33, "ipv4": 25, "ipv6": 8}}, {"ESTAB": 22}, 6, 15),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.type)
def test_records_round_trip(record):
    line = to_json(record)
    obj = json.loads(line)
    assert obj["type"] == record.type and next(iter(obj)) == "type"
    assert obj == to_dict(record)
    assert from_dict(obj) == record
    assert from_dict({**obj, "added_in_a_newer_agent": 1}) == record  # unknown fields are ignored


def test_every_record_type_is_registered():
    assert set(RECORD_TYPES) >= {"hello", "end", "warning", "error", "socket", "summary"}
    for name, cls in RECORD_TYPES.items():
        assert cls.type == name


@pytest.mark.parametrize("obj", [
    [], "socket", None, 3, {}, {"type": "nosuch"}, {"type": []}, {"type": {"a": 1}},
    {"type": "socket", "family": "inet"},  # required fields missing
    {"type": "end", "records": {}, "elapsed_ms": 1.0},
])
def test_bad_objects_raise_schema_error(obj):
    with pytest.raises(SchemaError):
        from_dict(obj)
