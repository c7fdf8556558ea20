"""The /proc/net fallback parsers on captured and hostile bytes: names with any byte,
names holding a newline and a forged row, and inet rows that are not the kernel's."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sockdebug_agent.inspectors import procnet
from sockdebug_agent.netlink import ProtocolError

DATA = Path(__file__).parent / "data"
HEADER = b"Num       RefCount Protocol Flags    Type St Inode Path\n"


def row(ptr: bytes, inode: int, name: bytes | None = None, *, flags: int = 0, kind: int = 1, st: int = 1) -> bytes:
    """One line as unix_seq_show prints it."""
    line = b"%s: %08X %08X %08X %04X %02X %5d" % (ptr, 2, 0, flags, kind, st, inode)
    return line + (b" " + name if name is not None else b"")


def table(*rows: bytes) -> bytes:
    return HEADER + b"".join(r + b"\n" for r in rows)


P = [b"%016x" % (0x9F3A0000 + i * 0x40) for i in range(10)]  # distinct hashed pointers
Z = b"0" * 16  # kptr_restrict


def names(t: procnet.UnixTable) -> list:
    return [(s.inode, s.local_address) for s in t.sockets]


def test_captured_unix_table():
    t = procnet.parse_proc_unix((DATA / "proc_unix.txt").read_bytes())
    assert t.ambiguous == 0 and len(t.sockets) == 6
    assert ("/tmp/sdt-capture.sock" in {s.local_address for s in t.sockets})


def test_a_name_that_is_not_utf8_is_escaped_not_fatal():
    t = procnet.parse_proc_unix(table(row(P[0], 10, b"@abc\xff\xfe"), row(P[1], 11, b"/tmp/\xc3\xa9")))
    assert names(t) == [(10, "@abc\\xff\\xfe"), (11, "/tmp/\u00e9")]


def test_a_newline_in_a_name_continues_it():
    t = procnet.parse_proc_unix(table(row(P[0], 10, b"@one\ntwo\n\nthree"), row(P[1], 11), row(P[2], 12, b"@x\n")))
    assert names(t) == [(10, "@one\ntwo\n\nthree"), (11, None), (12, "@x\n")]


def test_a_forged_row_with_another_pointer_style_stays_in_the_name():
    forged = row(Z, 999, b"/forged")  # zeros where every real row has a hashed pointer
    t = procnet.parse_proc_unix(table(row(P[0], 10, b"@evil\n" + forged), row(P[1], 11)))
    assert names(t) == [(10, "@evil\n" + forged.decode()), (11, None)]
    # and the other way round: a hashed pointer among kptr_restrict zeros
    t = procnet.parse_proc_unix(table(row(Z, 10, b"@evil\n" + row(P[3], 999)), row(Z, 11)))
    assert [s.inode for s in t.sockets] == [10, 11]


def test_a_forged_row_repeating_a_real_pointer_stays_in_the_name():
    t = procnet.parse_proc_unix(table(row(P[0], 10, b"@evil\n" + row(P[0], 999)), row(P[1], 11)))
    assert [s.inode for s in t.sockets] == [10, 11]


LONG = b"/run/a/path/long/enough/that/no/whole/row/fits/after/it/in/a/name"


def test_a_perfect_forgery_is_resolved_by_the_kernels_count():
    forged = row(P[5], 999, b"/forged")
    data = table(row(P[0], 10, b"@evil\n" + forged), row(P[1], 11, LONG),
                 row(P[2], 12))
    # Without the count, the forged row cannot be told from a real one: ss lists it too.
    assert [s.inode for s in procnet.parse_proc_unix(data).sockets] == [10, 999, 11, 12]
    t = procnet.parse_proc_unix(data, expected=3)
    assert names(t) == [(10, "@evil\n" + forged.decode()), (11, LONG.decode()),
                        (12, None)]
    assert t.ambiguous == 0


def test_when_the_count_cannot_decide_the_rows_are_flagged():
    forged = row(P[5], 999)
    data = table(row(P[0], 10, b"@e\n" + forged), row(P[1], 11, b"@f"), row(P[2], 12), row(P[3], 13))
    t = procnet.parse_proc_unix(data, expected=4)  # one row too many, two candidates (999 and 12)
    assert t.ambiguous == 2 and len(t.sockets) == 5
    assert procnet.parse_proc_unix(data, expected=5).ambiguous == 0  # the count agrees: nothing forged
    assert len(procnet.parse_proc_unix(data, expected=3).sockets) == 3  # two too many, two candidates


def test_text_after_a_forged_unnamed_row_goes_back_into_the_name():
    data = table(row(P[0], 10, b"@evil\n" + row(P[7], 999) + b"\ngarbage"), row(P[1], 11))
    t = procnet.parse_proc_unix(data)
    assert [s.inode for s in t.sockets] == [10, 11]
    assert t.sockets[0].local_address.endswith("\ngarbage")


def test_no_name_holds_two_whole_rows():
    """Why joining candidates one by one is enough: with 16-digit pointers a row is longer
    than half a name."""
    assert 2 * len(row(P[5], 1)) + 2 > procnet.UNIX_NAME_MAX


@pytest.mark.parametrize("data", [b"", HEADER, HEADER + b"garbage\n", HEADER + b"\n"])
def test_unix_table_without_rows(data):
    if data.endswith(b"garbage\n") or data == HEADER + b"\n":
        with pytest.raises(ProtocolError):
            procnet.parse_proc_unix(data)
    else:
        assert procnet.parse_proc_unix(data).sockets == []


def test_listening_state_and_types():
    t = procnet.parse_proc_unix(table(row(P[0], 1, b"/l", flags=0x10000), row(P[1], 2, kind=2, st=3),
                                      row(P[2], 3, kind=5, st=9)))
    assert [(s.netid, s.state) for s in t.sockets] == [("u_str", "LISTEN"), ("u_dgr", "ESTAB"), ("u_seq", "UNKNOWN")]


def test_unix_count_from_protocols():
    text = (b"protocol  size sockets  memory press maxhdr  slab module     cl co\n"
            b"UNIX-STREAM 1152     14      -1   NI       0   yes  kernel      y  n\n"
            b"UNIX      1152      1      -1   NI       0   yes  kernel      y  n\n"
            b"TCP       2432      3       2   no     320   yes  kernel      y  y\n")
    assert procnet.parse_unix_count(text) == 15
    assert procnet.parse_unix_count(b"protocol size sockets\nTCP 1 2\n") is None
    assert procnet.parse_unix_count(b"protocol size sockets\nUNIX 1 -1\n") is None


# --- inet -----------------------------------------------------------------------------

def test_captured_inet_tables_as_bytes_and_text():
    raw = (DATA / "proc_tcp.txt").read_bytes()
    assert procnet.parse_proc_inet(raw, socket.AF_INET, "tcp") == procnet.parse_proc_inet(
        raw.decode(), socket.AF_INET, "tcp")
    six = procnet.parse_proc_inet((DATA / "proc_tcp6.txt").read_bytes(), socket.AF_INET6, "tcp")
    assert six and all(s.family == "inet6" for s in six)


@pytest.mark.parametrize("line", [
    b"   0: 0100007F:1F90 00000000:0000 0A",  # cut short
    b"   0: zz00007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1",
    b"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 \xff   0        0 1 1",
    b"   0: 0100007F:1_90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1",
    b"   0: 0000000000000000FFFF00000100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1",
    "   0: \u0661100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1".encode(),
])
def test_inet_rows_that_are_not_the_kernels_raise_protocol_error(line):
    with pytest.raises(ProtocolError):
        procnet.parse_proc_inet(b"  sl  local_address\n" + line + b"\n", socket.AF_INET, "tcp", timers=True)


def test_inet_state_out_of_range_and_negative_jiffies():
    line = (b"   0: 0100007F:1F90 0100007F:A100 FF 00000001:00000002 02:FFFFFFFFFFFFFFF6 00000000     7"
            b"        -1 42 1 0000000000000000 20 4 30 10 -1")
    (s,) = procnet.parse_proc_inet(b"hdr\n" + line + b"\n", socket.AF_INET, "tcp", timers=True)
    assert (s.state, s.send_q, s.recv_q, s.uid, s.inode) == ("UNKNOWN", 1, 2, 7, 42)
    assert s.timer["name"] == "keepalive"


def test_inodes_no_process_holds_break_the_tie():
    forged = row(P[5], 999)
    data = table(row(P[0], 10, b"@e\n" + forged), row(P[1], 11, b"@f"), row(P[2], 12), row(P[3], 13))
    t = procnet.parse_proc_unix(data, expected=4, held={10, 11, 12, 13})
    assert t.ambiguous == 0 and [s.inode for s in t.sockets] == [10, 11, 12, 13]
    assert procnet.parse_proc_unix(data, expected=4, held={10, 11, 13}).ambiguous == 2  # 12 unheld too
