"""Bench fixture: established loopback TCP connections (both ends) held by several
processes in a private network namespace.

As a script (``holder.py ADDR PORT COUNT``), run inside the bench network namespace: it
listens on ADDR:PORT, connects COUNT clients to it, prints "ready" once every connection
is accepted, then sleeps until killed.  Both ends live in this process, so one holder
keeps 2*COUNT+1 fds.

``loopback_connections`` spreads the connections so that no holder needs more than
``MAX_PER_HOLDER`` connections (the per-process fd limit here is 20,000) and no
destination gets more than that either (one destination address and port has only
~28,000 ephemeral source ports): holder ``i`` listens on 127.0.0.(1 + i // 8), port
9000 + i.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

MAX_PER_HOLDER = 9000  # 18,001 fds, under the 20,000 limit with room for the interpreter's own


def main() -> None:
    addr, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((addr, port))
    listener.listen(4096)
    held = []
    for _ in range(count):
        client = socket.create_connection((addr, port))
        server, _ = listener.accept()
        held += (client, server)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def holder_layout(connections: int, holders: int = 0) -> list[tuple[str, int, int]]:
    """(address, port, connections) per holder: at least ``holders`` of them, and enough
    that none holds more than MAX_PER_HOLDER connections."""
    holders = max(holders, -(-connections // MAX_PER_HOLDER), 1)
    per, extra = divmod(connections, holders)
    return [(f"127.0.0.{1 + i // 8}", 9000 + i, per + (i < extra)) for i in range(holders)]


@contextlib.contextmanager
def loopback_connections(connections: int, holders: int = 0, prefix: str = "sdbench") -> Iterator[str]:
    """A private network namespace whose loopback carries ``connections`` established TCP
    connections (2 * connections sockets plus one listener per holder), held by processes
    running this file; yields its name and removes everything afterwards, also on
    Ctrl-C or SIGTERM."""
    ns = f"{prefix}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen] = []
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for addr, port, count in holder_layout(connections, holders):
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, __file__, addr, str(port),
                                           str(count)], stdout=subprocess.PIPE, text=True,
                                          start_new_session=True))
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a holder process failed to start")
        yield ns
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            p.stdout.close()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # run the fixture's cleanup, as Ctrl-C does


if __name__ == "__main__":
    main()
