"""The JSON Lines writer: one record per line, framed by ``hello`` and ``end``.

Lines go straight to file descriptor 1 with ``os.write`` (no text-layer buffering), so
a reader sees every record as soon as it is produced.  Records that are produced
together (the sockets of one netlink datagram, at most ~32 KiB) share one write: one
syscall per line cost more than the whole parse.  A record is never split across
writes of different batches.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import Counter
from typing import Any, Optional

from . import __version__
from .schema import SCHEMA_VERSION, End, Error, Hello, Socket, Warning, socket_to_json, to_json


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

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # a pipe may take less than everything when it is nearly full
            view = view[os.write(self.fd, view):]

    def emit(self, record: Any) -> None:
        self.counts[record.type] += 1
        self._write((to_json(record) + "\n").encode())

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
            self.counts[Socket.type] += len(records)  # type: ignore[attr-defined]
            self._write(("\n".join(records) + "\n").encode())
            return
        self.counts[first.type] += len(records)
        encode = socket_to_json if type(first) is Socket else to_json
        self._write(("\n".join(map(encode, records)) + "\n").encode())

    def hello(self, command: list[str]) -> None:
        if hasattr(os, "uname"):
            release, euid = os.uname().release, os.geteuid()
        else:  # Windows
            import platform

            release, euid = platform.release(), None
        self.emit(Hello(
            schema_version=SCHEMA_VERSION, agent_version=__version__, command=command,
            kernel=release, hostname=socket.gethostname(), platform=sys.platform,
            netns_inode=_ns_inode("net"), pidns_inode=_ns_inode("pid"), euid=euid,
        ))

    def warning(self, code: str, message: str, count: Optional[int] = None) -> None:
        self.emit(Warning(code, message, count))

    def error(self, code: str, message: str, hint: Optional[str] = None) -> None:
        self.emit(Error(code, message, hint))

    def end(self, exit_code: int) -> None:
        counts = dict(self.counts)
        self.emit(End(records=counts, elapsed_ms=round((time.monotonic() - self.started) * 1000, 3),
                      exit_code=exit_code))
