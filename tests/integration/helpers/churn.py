"""A network namespace whose TCP table is busy and small, so that sock_diag dumps race
with it: run by tests/integration/test_churn.py as
``ip netns exec PARENT python3 churn.py CONNECTIONS``, where PARENT has
``net.ipv4.tcp_child_ehash_entries=128``.

It moves into a new network namespace (a child of PARENT, so its established table
has 128 buckets and every chain is long), opens CONNECTIONS loopback connections and
keeps them, prints ``ready``, then opens and closes connections as fast as it can
until killed: every new socket goes to the head of a chain, shifting the sockets a
dump has already listed, and the kernel lists some of them twice.  Standard library
only; all traffic stays on the namespace's loopback.
"""

from __future__ import annotations

import ctypes
import socket
import subprocess
import sys

CLONE_NEWNET = 0x40000000


def main() -> None:
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
        raise SystemExit(f"unshare: errno {ctypes.get_errno()}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 7000))
    listener.listen(4096)
    held = []
    for _ in range(int(sys.argv[1])):
        held.append(socket.create_connection(("127.0.0.1", 7000)))
        held.append(listener.accept()[0])
    print("ready", flush=True)
    while True:
        client = socket.create_connection(("127.0.0.1", 7000))
        server = listener.accept()[0]
        client.close()
        server.close()


if __name__ == "__main__":
    main()
