"""The JSON Lines writer: one record per line, framed by ``hello`` and ``end``.

Lines go straight to file descriptor 1 with ``os.write`` (no text-layer buffering), so
a reader sees every record as soon as it is produced.  Records that are produced
together (the sockets of one netlink datagram, at most ~32 KiB) share one write: one
syscall per line cost more than the whole parse.  A record is never split across
writes of different batches.

Faults: a batch is written to its end whatever happens meanwhile, so only whole lines
ever reach the reader.  A pipe that takes part of it gets the rest next; a SIGINT that
arrives during a batch is held until the batch is out (``on_sigint``); stdout that is
closed, full or a broken pipe (SIGPIPE blocked) becomes one ``OutputError``.
"""

from __future__ import annotations

import _socket
import os
import select
import sys
import time
from collections import Counter
from typing import Any, Optional

from . import __version__
from .errors import OutputError
from .faults import output_error
from .schema import SCHEMA_VERSION, End, Error, Hello, Socket, Warning, socket_to_json, text, to_json


def _ns_inode(kind: str) -> Optional[int]:
    try:
        return os.stat(f"/proc/self/ns/{kind}").st_ino
    except OSError:
        return None


class Writer:
    """Writes records to ``fd`` and counts them for the closing ``end`` record."""

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()
        self.broken: Optional[OutputError] = None  #: set once a write failed: write nothing more
        self._writing = False
        self._interrupted = False

    def on_sigint(self, _signum: int, _frame: object) -> None:
        """SIGINT handler: interrupt now, or after the batch being written (never mid-line)."""
        if self._writing:
            self._interrupted = True
            return
        raise KeyboardInterrupt

    def _write(self, data: bytes, kind: Optional[str] = None, records: int = 0) -> None:
        """Write ``data`` (whole lines) to its end; then count ``records`` of type ``kind``."""
        if self.broken is not None:
            raise self.broken
        view = memoryview(data)
        self._writing = True
        try:
            while view:  # a pipe may take less than everything when it is nearly full
                try:
                    view = view[os.write(self.fd, view):]
                except BlockingIOError:  # stdout shared with a process that made it non-blocking
                    select.select([], [self.fd], [])
                except OSError as exc:  # EINTR never gets here: Python retries it (PEP 475)
                    self.broken = output_error(exc)
                    raise self.broken from None
        except BaseException:
            if self.broken is None and len(view) not in (0, len(data)):  # e.g. MemoryError mid-batch
                self.broken = OutputError("the stream was cut inside a record", "run it again")
            raise
        finally:
            self._writing = False
        if kind is not None:
            self.counts[kind] += records
        if self._interrupted:
            self._interrupted = False
            raise KeyboardInterrupt

    def emit(self, record: Any) -> None:
        if type(record) is Warning:  # inspectors' warnings quote kernel text (strerror, names)
            record = record._replace(message=text(record.message))
        self._write((to_json(record) + "\n").encode(), record.type, 1)

    @property
    def takes_lines(self) -> bool:
        """Whether ``emit_batch`` takes socket records already serialised (``sockdiag.inet_lines``):
        this class's does; a writer that keeps records (``render.TableWriter``) has its own."""
        return type(self).emit_batch is Writer.emit_batch

    def emit_batch(self, records: list) -> None:
        """Write records that became ready together (one kernel batch) in one write:
        each is still a whole line, and none waits for later work.  A batch of str is
        socket records already serialised."""
        first = records[0]
        if type(first) is str:  # socket records already written as JSON (sockdiag.inet_lines)
            self._write(("\n".join(records) + "\n").encode(), Socket.type, len(records))  # type: ignore[attr-defined]
            return
        encode = socket_to_json if type(first) is Socket else to_json
        self._write(("\n".join(map(encode, records)) + "\n").encode(), first.type, len(records))

    def hello(self, command: list[str]) -> None:
        if hasattr(os, "uname"):
            release, euid = os.uname().release, os.geteuid()
        else:  # Windows
            import platform

            release, euid = platform.release(), None
        self.emit(Hello(
            schema_version=SCHEMA_VERSION, agent_version=__version__, command=[text(a) for a in command],
            kernel=text(release), hostname=text(_socket.gethostname()), platform=sys.platform,
            netns_inode=_ns_inode("net"), pidns_inode=_ns_inode("pid"), euid=euid,
        ))

    def warning(self, code: str, message: str, count: Optional[int] = None) -> None:
        self.emit(Warning(code, text(message), count))

    def error(self, code: str, message: str, hint: Optional[str] = None) -> None:
        self.emit(Error(code, text(message), None if hint is None else text(hint)))

    def end(self, exit_code: int) -> None:
        counts = dict(self.counts)
        self.emit(End(records=counts, elapsed_ms=round((time.monotonic() - self.started) * 1000, 3),
                      exit_code=exit_code))
