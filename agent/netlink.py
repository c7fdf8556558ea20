"""A minimal netlink request/dump client over the standard library ``socket``.

Shared by sock_diag (sockets) and rtnetlink (routes, interfaces).  Parsers receive
each reply message as (buffer, start, end) into the receive buffer, so they can
``struct.unpack_from`` without copying.  Multi-part replies, NLMSG_ERROR and
NLM_F_DUMP_INTR (the table changed during the dump) are handled here.
"""

from __future__ import annotations

import _socket
import errno
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any, Optional, TypeVar

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

# The kernel caps a dump datagram at 32 KiB, and sizes it by the reader's buffer up to
# that; rtnetlink replies with a large min_dump_alloc can be bigger.  One anonymous
# mapping per socket: pages the kernel never writes to are never resident, where a
# bytearray of the same size would be zeroed (and counted) in full.
_RECV_BUF = 1 << 20
_DUMP_RETRIES = 5
# The prefetch ring: slots of the same mapping, each larger than any sock_diag datagram.
_SLOT = 64 * 1024
_SLOTS = 4
# The kernel fills the first datagram of a dump (inside send(), at most a page) and then
# up to 32 KiB each; one that is not nearly full is the last data before NLMSG_DONE.
_PREFETCH_FROM = 16 * 1024
_HELPER_CHECK = 1.0  # seconds between checks that a silent prefetch helper is still alive
# CPython 3.11 loops forever when it unwinds an exception into a try block while memory is
# exhausted (RLIMIT_AS) and the instruction's offset is above 256: the handler needs that
# offset as an int, its allocation fails, and the failure is unwound into the same handler.
# Generators that a MemoryError closes (those of a dump) therefore keep try blocks at the
# start of a short function; tests/unit/test_netlink_stream.py checks the offsets.
_SHORT_TRY = 256
_HEADER_START = struct.Struct("=IH")  # length and type of an nlmsghdr
T = TypeVar("T")
# A datagram splitter: (buffer, size, sequence number) -> (items, done, interrupted).
Split = Callable[[Any, int, int], "tuple[list[T], bool, bool]"]


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


def parse_datagram(buf: memoryview | bytes, size: int, seq: int, parse: Callable[[Any, int, int], T],
                   start: int = 0) -> tuple[list[T], bool, bool]:
    """Split one received datagram from offset ``start``: ``(items, done, interrupted)``
    where ``items`` are ``parse(buf, start, end)`` of its data messages (None results
    dropped), ``done`` says the reply is complete and ``interrupted`` that the kernel
    flagged the dump.

    Pure (no I/O).  Raises ``NetlinkError`` for an error reply and ``ProtocolError``
    for lengths that do not fit; messages of another sequence number are skipped.
    This loop runs once per socket, hence the local names.
    """
    items: list[T] = []
    done = interrupted = False
    unpack_header = NLMSGHDR.unpack_from
    off = start
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
                done = control(buf, off + 16, end, kind) or done
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
        self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, protocol)
        self.sock.bind((0, 0))
        self._buf = mmap.mmap(-1, _RECV_BUF)
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream(self, msg_type: int, payload: bytes, parse: Callable[[memoryview, int, int], T],
               flags: int = NLM_F_REQUEST | NLM_F_DUMP, prefetch: bool = False) -> Iterator[list[T]]:
        """``dump`` with each data message parsed on its own: ``parse(buffer, start, end)``
        (results that are None are dropped)."""
        return self.dump(msg_type, payload, lambda buf, size, seq: parse_datagram(buf, size, seq, parse),
                         flags, prefetch)

    def dump(self, msg_type: int, payload: bytes, split: Split, flags: int = NLM_F_REQUEST | NLM_F_DUMP,
             prefetch: bool = False) -> Iterator[list[T]]:
        """Send one request and yield, for every datagram of the reply, the items
        ``split(buffer, size, seq)`` makes of it (``parse_datagram``'s contract, for
        parsers that walk a whole datagram themselves).  Splitting happens before the
        buffer is reused, so callers get records, never views.  If the kernel flagged the
        dump as interrupted (the table changed under it), ``DumpInterrupted`` is raised
        after the last batch.

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
            batch, done, flagged = split(view, size, seq)
            interrupted = interrupted or flagged
            if batch:
                yield batch
            if done:
                if interrupted:
                    raise DumpInterrupted()
                return
        raise ProtocolError("the netlink reply ended without NLMSG_DONE")

    def _received(self, request: Optional[bytes], sock: Optional[_socket.socket] = None
                  ) -> Iterator[tuple[memoryview, int]]:
        """Send ``request`` (unless None: already sent) and yield the reply's datagrams,
        received into the one reusable buffer, one at a time."""
        sock = sock or self.sock
        if request is not None:
            sock.send(request)
        view = memoryview(self._buf)
        while True:
            yield view, _receive(sock, view)

    def _prefetched(self, request: bytes) -> Iterator[tuple[memoryview, int]]:
        """Datagrams received by a helper thread while the caller parses the previous ones.

        The kernel builds each batch of a dump inside recv(), with the GIL released, so
        on two cores its work overlaps the parsing (a third of a 40k-socket dump).
        Datagrams are received here until one is nearly full (``_PREFETCH_FROM``): a small
        reply (its data, then NLMSG_DONE on its own) never starts a thread, which on a
        node with hundreds of namespaces costs more than such a dump.  The helper then
        fills a ring of ``_SLOTS`` buffers, so memory
        stays flat however far ahead of the parser the kernel gets; it stops after a
        datagram that ends the reply.  If it stops early, or no thread can be started, the
        rest is read here, one datagram at a time.  The exchange runs on a socket of its
        own, so a helper that somehow outlived its reply could never take another's.
        """
        # _ring's imports happen here, before the socket: importing opens a file, and with the
        # fewest fds Python runs with (RLIMIT_NOFILE 5) this socket takes the last one.
        import _queue  # noqa: F401
        import threading  # noqa: F401
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, self.protocol)
        try:  # kept at the start of a short generator: see _SHORT_TRY
            yield from self._exchange(sock, request)
        finally:
            sock.close()

    def _exchange(self, sock: _socket.socket, request: bytes) -> Iterator[tuple[memoryview, int]]:
        sock.bind((0, 0))
        sock.send(request)
        mapping = memoryview(self._buf)
        slots = [mapping[i * _SLOT:(i + 1) * _SLOT] for i in range(_SLOTS)]
        while True:
            size = _receive(sock, slots[0])
            yield slots[0], size
            if size == 0 or _ends_reply(slots[0], size):
                return
            if size >= _PREFETCH_FROM:  # a full datagram: more are coming
                break
        yield from _ring(sock, slots)
        yield from self._received(None, sock)


def _receive(sock: _socket.socket, view: memoryview) -> int:
    """One datagram into ``view``; one that did not fit is an error, never silently cut."""
    size = sock.recv_into(view, 0, _socket.MSG_TRUNC)  # MSG_TRUNC: the real length, even if cut
    if size > len(view):
        raise ProtocolError(f"a {size}-byte netlink datagram does not fit the {len(view)}-byte buffer")
    return size


def _ring(sock: _socket.socket, slots: list[memoryview]) -> Iterator[tuple[memoryview, int]]:
    """The datagrams ``_Helper`` receives, in order; the helper is told to stop however
    the reader stops."""
    helper = _Helper(sock, slots)
    if not helper.start():  # no thread left (RLIMIT_NPROC, memory): the caller receives itself
        return
    try:  # kept at the start of a short generator: see _SHORT_TRY
        yield from helper
    finally:
        helper.stop()


class _Helper:
    """The helper thread of ``Netlink._prefetched``, and an iterator over what it receives.

    Slots go back to it once the caller asks for the next datagram (it has parsed the
    previous one by then); slot 0 holds the datagram the caller is parsing.  Whatever
    stops the thread (an ``OSError``, ``MemoryError`` under ``RLIMIT_AS``, ...) is kept
    and raised by ``__next__``, in the reader; the thread never prints a traceback, and
    one that died without a last word (no memory even for that) is noticed within
    ``_HELPER_CHECK`` seconds instead of being waited for forever."""

    def __init__(self, sock: _socket.socket, slots: list[memoryview]) -> None:
        from _queue import SimpleQueue

        self.sock, self.slots = sock, slots
        self.free: SimpleQueue = SimpleQueue()
        self.full: SimpleQueue = SimpleQueue()
        self.failure: Optional[BaseException] = None
        self.held = 0  # the slot the caller is parsing, handed back when it asks for the next
        self.thread: Any = None

    def start(self) -> bool:
        import threading

        self.thread = threading.Thread(target=self._receive, name="netlink-prefetch", daemon=True)
        try:
            self.thread.start()
        except RuntimeError:  # no thread, or (out of memory) one whose start could not be awaited
            return False
        # Slots only now: a thread started by a start() that then failed waits for one
        # forever, and never takes a datagram from the reader, who receives the rest itself.
        for index in range(1, len(self.slots)):
            self.free.put(index)
        return True

    def _receive(self) -> None:
        free, full, sock, slots = self.free, self.full, self.sock, self.slots
        try:
            while True:
                index = free.get()
                if index is None:  # the caller stopped early
                    break
                size = _receive(sock, slots[index])
                full.put((index, size))
                if size == 0 or _ends_reply(slots[index], size):
                    break
        except BaseException as exc:  # handed to the reader, whatever it is
            self.failure = exc
        try:
            full.put(None)
        except BaseException:  # no memory left even for that: the reader sees the thread gone
            pass

    def __iter__(self) -> _Helper:
        return self

    def __next__(self) -> tuple[memoryview, int]:
        from _queue import Empty

        while True:
            try:
                item = self.full.get(timeout=_HELPER_CHECK)
                break
            except Empty:
                if not self.thread.is_alive():
                    item = None
                    break
        self.free.put(self.held)
        if item is None:
            if self.failure is not None:
                raise self.failure
            raise StopIteration
        self.held, size = item
        return self.slots[self.held], size

    def stop(self) -> None:
        self.free.put(None)


def _ends_reply(buf: bytearray, size: int) -> bool:
    """A cheap look at a datagram: does it end the reply (NLMSG_DONE last, an error)?"""
    if size >= 20 and _HEADER_START.unpack_from(buf, size - 20) == (20, NLMSG_DONE):
        return True
    return size >= 16 and _HEADER_START.unpack_from(buf, 0)[1] == NLMSG_ERROR


def control(buf: memoryview | bytes, start: int, end: int, kind: int) -> bool:
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
