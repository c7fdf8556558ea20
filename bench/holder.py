"""Bench fixture process: holds COUNT established loopback TCP connections (both ends).

Run inside the bench network namespace; prints "ready" once every connection is
accepted, then sleeps until killed.  Both ends live in this process, so one holder
keeps 2*COUNT+1 fds (the per-process limit here is 20,000).
"""

import socket
import sys
import time


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
