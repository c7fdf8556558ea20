"""Sockets for the fault-injection tests, opened in the current network namespace; prints
one ``ready {json}`` line, then sleeps until killed.

Run by tests/integration/test_faults*.py as ``ip netns exec NS python3 hostile.py ROLE ARGS``:

- ``many PORT COUNT``: COUNT established loopback TCP connections, both ends held here
  (2*COUNT+1 fds: at most 20,000 per process, so big fixtures use several).
- ``unix DIR ROW``: unix sockets with hostile names: bytes that are not UTF-8, a newline,
  NULs, and an abstract name holding a newline followed by ROW (a forged
  /proc/net/unix row, given in hex).
- ``bound IFNAME PORT``: a TCP listener bound to the device IFNAME (hex of its bytes).

Standard library only; nothing here talks to anything outside the namespace.
"""

from __future__ import annotations

import os
import resource
import socket
import sys

from open_sockets import ready  # this folder is sys.path[0] when run as a script

KEEP: list[socket.socket] = []


def many(port: int, count: int) -> dict:
    resource.setrlimit(resource.RLIMIT_NOFILE, (2 * count + 64, 2 * count + 64))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    KEEP.append(listener)
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        KEEP.extend((client, server))
    return {"sockets": 2 * count + 1}


def bind_unix(name: bytes, kind: int = socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(name)
    if kind == socket.SOCK_STREAM:
        s.listen(1)
    KEEP.append(s)
    return os.fstat(s.fileno()).st_ino


def unix(workdir: str, forged_row: bytes) -> dict:
    names = {
        "not-utf8": b"\0sdf-\xff\xfe-name",
        "newline": b"\0sdf-new\nline",
        "nuls": b"\0sdf\0in\0side",
        "forged": b"\0e\n" + forged_row,
        "path-newline": os.path.join(workdir, "sdf\npath.sock").encode(),
    }
    inodes = {}
    for i, (role, name) in enumerate(names.items()):
        inodes[role] = bind_unix(name, socket.SOCK_STREAM if i % 2 == 0 else socket.SOCK_DGRAM)
    return {"inodes": inodes, "names": {k: v.hex() for k, v in names.items()}}


def bound(ifname: bytes, port: int) -> dict:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname)
    s.bind(("0.0.0.0", port))
    s.listen(4)
    KEEP.append(s)
    return {"inode": os.fstat(s.fileno()).st_ino}


def main() -> None:
    role, args = sys.argv[1], sys.argv[2:]
    if role == "many":
        info = many(int(args[0]), int(args[1]))
    elif role == "unix":
        info = unix(args[0], bytes.fromhex(args[1]))
    elif role == "bound":
        info = bound(bytes.fromhex(args[0]), int(args[1]))
    else:
        sys.exit(f"unknown role {role}")
    ready(info)


if __name__ == "__main__":
    main()
