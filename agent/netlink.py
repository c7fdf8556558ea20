"""A minimal netlink request/dump client over the standard library ``socket``.

Shared by sock_diag (sockets) and rtnetlink (routes, interfaces).  ``dump`` yields
each reply message's payload as a memoryview into the receive buffer, so parsers
can ``struct.unpack_from`` without copying.  Multi-part replies, NLMSG_ERROR and
NLM_F_DUMP_INTR (the table changed during the dump: start over) are handled here.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4

NLMSG_ERROR = 2
NLMSG_DONE = 3

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH

NLMSGHDR = struct.Struct("=IHHII")
RTATTR = struct.Struct("=HH")
_INT = struct.Struct("=i")

# The kernel sizes each dump batch by the reader's buffer, up to 32 KiB; a larger
# buffer costs nothing and leaves room if that cap is raised.
_RECV_BUF = 1 << 20
_DUMP_RETRIES = 5


class NetlinkError(OSError):
    """The kernel answered a request with an error (``errno`` is set)."""


class ProtocolError(ValueError):
    """Bytes that are not a well-formed netlink message stream."""


class DumpInterrupted(Exception):
    """The dumped table changed while it was read (NLM_F_DUMP_INTR)."""


def align4(n: int) -> int:
    return (n + 3) & ~3


def parse_attrs(buf: memoryview | bytes, start: int, end: int) -> dict[int, memoryview | bytes]:
    """Route attributes (``struct rtattr``) in ``buf[start:end]`` by type.

    The nested flag (bit 15) and byte-order flag (bit 14) are stripped from types.
    """
    attrs: dict[int, memoryview | bytes] = {}
    while start + 4 <= end:
        length, kind = RTATTR.unpack_from(buf, start)
        if length < 4 or start + length > end:
            raise ProtocolError(f"attribute of length {length} at offset {start} overruns its message")
        attrs[kind & 0x3FFF] = buf[start + 4:start + length]
        start += align4(length)
    return attrs


def iter_messages(buf: memoryview | bytes, size: int, seq: int) -> Iterator[tuple[int, int, int, int]]:
    """Split one received datagram into ``(type, flags, payload_start, payload_end)``.

    Raises ``NetlinkError`` for NLMSG_ERROR with a non-zero code and ``ProtocolError``
    for lengths that do not fit.  Messages of another sequence number are skipped.
    """
    off = 0
    while off + 16 <= size:
        length, kind, flags, msg_seq, _pid = NLMSGHDR.unpack_from(buf, off)
        if length < 16 or off + length > size:
            raise ProtocolError(
                f"netlink message of length {length} at offset {off} in a {size}-byte datagram")
        if msg_seq == seq:
            if kind == NLMSG_ERROR:
                if length < 20:
                    raise ProtocolError("truncated NLMSG_ERROR")
                code = _INT.unpack_from(buf, off + 16)[0]
                if code:
                    raise NetlinkError(-code, os.strerror(-code))
            yield kind, flags, off + 16, off + length
        off += align4(length)
    if off < size:
        raise ProtocolError(f"{size - off} stray bytes after the last netlink message")


class Netlink:
    """One netlink socket of one protocol, for request/dump exchanges."""

    def __init__(self, protocol: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self.sock.bind((0, 0))
        self._buf = bytearray(_RECV_BUF)
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dump(self, msg_type: int, payload: bytes, flags: int = NLM_F_REQUEST | NLM_F_DUMP
             ) -> Iterator[tuple[memoryview, int, int]]:
        """Send one dump request and yield ``(buffer, start, end)`` for every reply payload.

        The buffer is reused by the next receive: parse each payload before asking for
        the next one.  On NLM_F_DUMP_INTR the whole dump is retried, but since the
        caller has consumed earlier parts, an interrupted dump is reported by raising
        ``DumpInterrupted`` once the retries are used up — use ``dump_all`` for
        retry-safe collection.
        """
        self._seq += 1
        seq = self._seq
        header = NLMSGHDR.pack(16 + len(payload), msg_type, flags, seq, 0)
        self.sock.send(header + payload)
        view = memoryview(self._buf)
        recv_into = self.sock.recv_into
        interrupted = False
        while True:
            size = recv_into(self._buf)
            if size == 0:
                raise ProtocolError("netlink socket closed during a dump")
            for kind, msg_flags, start, end in iter_messages(view, size, seq):
                if msg_flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if kind == NLMSG_DONE:
                    if end - start >= 4:
                        code = _INT.unpack_from(view, start)[0]
                        if code < 0:
                            raise NetlinkError(-code, os.strerror(-code))
                    if interrupted:
                        raise DumpInterrupted()
                    return
                if kind == NLMSG_ERROR:  # an ACK (code 0) ends a non-dump request
                    return
                yield view, start, end


def dump_all(protocol_sock: Netlink, msg_type: int, payload: bytes, parse) -> list:
    """Run a dump and parse every payload with ``parse(buf, start, end)`` (which may
    return None to drop a message), retrying from scratch when the kernel flags the
    dump as interrupted."""
    for _attempt in range(_DUMP_RETRIES):
        out = []
        try:
            for buf, start, end in protocol_sock.dump(msg_type, payload):
                item = parse(buf, start, end)
                if item is not None:
                    out.append(item)
        except DumpInterrupted:
            continue
        return out
    raise NetlinkError(errno.EAGAIN, "netlink dump kept being interrupted by concurrent changes")
