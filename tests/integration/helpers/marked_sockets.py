"""Open sockets with known marks (SO_MARK, needs CAP_NET_ADMIN) in the current network
namespace, print one ``ready {json}`` line with their ports, then sleep until killed.

Run by tests/integration/test_filter_marks_vs_ss.py, once in the test's cgroup and once
outside it (the cgroup of a socket is the one of the process that created it):

- TCP listeners on 127.0.0.1: marked 0x2a, 0xff00, and unmarked; one on ::1 marked 0x2b;
- a TCP connection from a client marked 0x7 to the unmarked listener (left in its
  accept queue), and one from a client marked 0x9 that it closes (FIN-WAIT-2, a timewait sock);
- a UDP socket marked 0x5, and an unmarked abstract unix listener (marks are 0 for unix).

Standard library only; nothing leaves the namespace.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

KEEP: list[socket.socket] = []


def open_socket(family: int, kind: int, addr: str, mark: int | None = None) -> socket.socket:
    s = socket.socket(family, kind)
    KEEP.append(s)
    if mark is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    s.bind((addr, 0))
    return s


def listener(family: int, addr: str, mark: int | None = None) -> int:
    s = open_socket(family, socket.SOCK_STREAM, addr, mark)
    s.listen(8)
    return s.getsockname()[1]


def main() -> None:
    role = sys.argv[1]
    ports = {
        "mark_2a": listener(socket.AF_INET, "127.0.0.1", 0x2A),
        "mark_ff00": listener(socket.AF_INET, "127.0.0.1", 0xFF00),
        "plain": listener(socket.AF_INET, "127.0.0.1"),
        "v6_mark_2b": listener(socket.AF_INET6, "::1", 0x2B),
    }
    client = open_socket(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", 0x7)
    client.connect(("127.0.0.1", ports["plain"]))
    ports["client_mark_7"] = client.getsockname()[1]
    closed = open_socket(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", 0x9)
    closed.connect(("127.0.0.1", ports["plain"]))
    ports["closed_mark_9"] = closed.getsockname()[1]
    closed.close()  # the peer never closes: an orphaned FIN-WAIT-2, which the kernel keeps as a timewait sock
    ports["udp_mark_5"] = open_socket(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", 0x5).getsockname()[1]
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    KEEP.append(unix)
    unix.bind(f"\0sdq-marks-{role}-{os.getpid()}")
    unix.listen(1)
    print("ready " + json.dumps({"role": role, "pid": os.getpid(), "ports": ports}), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
