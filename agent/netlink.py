"""A minimal netlink request/dump client over the standard library ``socket``.

Shared by sock_diag (sockets) and rtnetlink (routes, interfaces).  Parsers receive
each reply message as (buffer, start, end) into the receive buffer, so they can
``struct.unpack_from`` without copying.  Multi-part replies, NLMSG_ERROR and
NLM_F_DUMP_INTR (the table changed during the dump) are handled here.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_MIN_TYPE = 0x10  # below: control messages (NOOP, ERROR, DONE, OVERRUN)

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
_PREFETCH_BUF = 64 * 1024  # the kernel caps a dump datagram at 32 KiB
_HEADER_START = struct.Struct("=IH")  # length and type of an nlmsghdr
T = TypeVar("T")


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


def parse_datagram(buf: memoryview | bytes, size: int, seq: int, parse: Callable[[Any, int, int], T]
                   ) -> tuple[list[T], bool, bool]:
    """Split one received datagram: ``(items, done, interrupted)`` where ``items`` are
    ``parse(buf, start, end)`` of its data messages (None results dropped), ``done``
    says the reply is complete and ``interrupted`` that the kernel flagged the dump.

    Pure (no I/O).  Raises ``NetlinkError`` for an error reply and ``ProtocolError``
    for lengths that do not fit; messages of another sequence number are skipped.
    This loop runs once per socket, hence the local names.
    """
    items: list[T] = []
    done = interrupted = False
    unpack_header = NLMSGHDR.unpack_from
    off = 0
    while off + 16 <= size:
        length, kind, flags, msg_seq, _pid = unpack_header(buf, off)
        end = off + length
        if length < 16 or end > size:
            raise ProtocolError(f"netlink message of length {length} at offset {off} in a {size}-byte datagram")
        if msg_seq == seq:
            if kind >= NLMSG_MIN_TYPE:
                try:
                    item = parse(buf, off + 16, end)
                except (struct.error, IndexError) as exc:  # a parser read past a short field
                    raise ProtocolError(f"malformed message of type {kind} at offset {off}: {exc}") from None
                if item is not None:
                    items.append(item)
            else:
                done = _control(buf, off + 16, end, kind) or done
            if flags & NLM_F_DUMP_INTR:
                interrupted = True
        off = (end + 3) & ~3
    if off < size:
        raise ProtocolError(f"{size - off} stray bytes after the last netlink message")
    return items, done, interrupted


class Netlink:
    """One netlink socket of one protocol, for request/dump exchanges."""

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
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

    def stream(self, msg_type: int, payload: bytes, parse: Callable[[memoryview, int, int], T],
               flags: int = NLM_F_REQUEST | NLM_F_DUMP, prefetch: bool = False) -> Iterator[list[T]]:
        """Send one request and yield, for every datagram of the reply, the list of
        ``parse(buffer, start, end)`` over its data messages (results that are None are
        dropped).  Parsing happens before the buffer is reused, so callers get records,
        never views.  If the kernel flagged the dump as interrupted (the table changed
        under it), ``DumpInterrupted`` is raised after the last batch.

        ``prefetch`` receives in a helper thread while this one parses (see
        ``_prefetched``): worth it for big dumps on a machine with a second core.
        """
        self._seq += 1
        seq = self._seq
        request = NLMSGHDR.pack(16 + len(payload), msg_type, flags, seq, 0) + payload
        interrupted = False
        for view, size in self._prefetched(request) if prefetch else self._received(request):
            if size == 0:
                raise ProtocolError("netlink socket closed during a dump")
            batch, done, flagged = parse_datagram(view, size, seq, parse)
            interrupted = interrupted or flagged
            if batch:
                yield batch
            if done:
                if interrupted:
                    raise DumpInterrupted()
                return
        raise ProtocolError("the netlink reply ended without NLMSG_DONE")

    def _received(self, request: bytes, sock: socket.socket | None = None) -> Iterator[tuple[memoryview, int]]:
        """Send ``request`` (unless already sent) and yield the reply's datagrams, received
        into the one reusable buffer, one at a time."""
        if sock is None:
            sock = self.sock
            sock.send(request)
        buf, recv_into = self._buf, sock.recv_into
        view = memoryview(buf)
        while True:
            yield view, recv_into(buf)

    def _prefetched(self, request: bytes) -> Iterator[tuple[memoryview, int]]:
        """Datagrams received by a helper thread while the caller parses the previous ones.

        The kernel builds each batch of a dump inside recv(), with the GIL released, so
        on two cores its work overlaps the parsing (a third of a 40k-socket dump).  The
        helper stops after a datagram that ends the reply; if it ever stopped early, the
        rest is read here, one datagram at a time.  The exchange runs on a socket of its
        own, so a helper that somehow outlived its reply could never take another's.
        """
        import threading
        from _queue import SimpleQueue

        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, self.protocol)
        sock.bind((0, 0))
        sock.send(request)
        queue: SimpleQueue = SimpleQueue()
        recv_into = sock.recv_into

        def receive() -> None:
            try:
                while True:
                    buf = bytearray(_PREFETCH_BUF)
                    size = recv_into(buf)
                    queue.put((memoryview(buf), size))
                    if size == 0 or _ends_reply(buf, size):
                        break
            except (OSError, MemoryError) as exc:  # handed over: the reader raises it (RLIMIT_AS, ...)
                queue.put(exc)
            queue.put(None)

        try:
            threading.Thread(target=receive, name="netlink-prefetch", daemon=True).start()
        except RuntimeError:  # no thread left (RLIMIT_NPROC, memory): receive here, one datagram at a time
            queue.put(None)
        try:
            while True:
                item = queue.get()
                if item is None:
                    break
                if isinstance(item, (OSError, MemoryError)):
                    raise item
                yield item
            yield from self._received(request, sock)
        finally:
            sock.close()


def _ends_reply(buf: bytearray, size: int) -> bool:
    """A cheap look at a datagram: does it end the reply (NLMSG_DONE last, an error)?"""
    if size >= 20 and _HEADER_START.unpack_from(buf, size - 20) == (20, NLMSG_DONE):
        return True
    return size >= 16 and _HEADER_START.unpack_from(buf, 0)[1] == NLMSG_ERROR


def _control(buf: memoryview | bytes, start: int, end: int, kind: int) -> bool:
    """Handle a control message; True when it ends the exchange (DONE, or an ACK)."""
    if kind == NLMSG_DONE:
        if end - start >= 4:
            code = _INT.unpack_from(buf, start)[0]
            if code < 0:
                raise NetlinkError(-code, os.strerror(-code))
        return True
    if kind == NLMSG_ERROR:
        if end - start < 4:
            raise ProtocolError("truncated NLMSG_ERROR")
        code = _INT.unpack_from(buf, start)[0]
        if code:
            raise NetlinkError(-code, os.strerror(-code))
        return True  # an ACK (code 0) ends a non-dump request
    return False  # NOOP, OVERRUN: nothing to do


def dump_all(nl: Netlink, msg_type: int, payload: bytes, parse: Callable[[memoryview, int, int], T]
             ) -> list[T]:
    """A whole dump as one list, retried from scratch when the kernel flags it as
    interrupted (rtnetlink does when routes or links change mid-dump)."""
    for _attempt in range(_DUMP_RETRIES):
        out: list[T] = []
        try:
            for batch in nl.stream(msg_type, payload, parse):
                out.extend(batch)
        except DumpInterrupted:
            continue
        return out
    raise NetlinkError(errno.EAGAIN, "netlink dump kept being interrupted by concurrent changes")
