"""Bench fixture: COUNT established loopback TCP connections (both ends) in one process,
and ``loopback_connections``, the namespace that several such processes fill.

As a script (``holder.py PORT COUNT``), run inside the bench network namespace: it
prints "ready" once every connection is accepted, then sleeps until killed.  Both
ends live in this process, so one holder keeps 2*COUNT+1 fds (the per-process limit
here is 20,000).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator


def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    held = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        held += (client, server)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()


@contextlib.contextmanager
def loopback_connections(connections: int, holders: int, prefix: str = "sdbench") -> Iterator[str]:
    """A private network namespace whose loopback carries ``connections`` established TCP
    connections, held by ``holders`` processes running this file; yields its name and
    removes everything afterwards."""
    ns = f"{prefix}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen] = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        per = connections // holders
        for i in range(holders):
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, str(9000 + i),
                                           str(per)], stdout=subprocess.PIPE, text=True))
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                sys.exit("a holder process failed to start")
        yield ns
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)
