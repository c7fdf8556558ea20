#!/usr/bin/env python3
"""sockdebug test workload: holds a known set of sockets open until stopped.

Everything the tests want to find with the agent is declared on the command
line, so a test knows exactly which records to expect:

  server.py --listen 127.0.0.1:8080 --listen 0.0.0.0:9090 --connect 127.0.0.1:9090
  server.py --udp 0.0.0.0:5353 --unix /tmp/app.sock --unix @abstract-name
  server.py --close-wait 3            # 3 server-side sockets stuck in CLOSE-WAIT
  server.py --backlog-full 127.0.0.1:7070 --backlog 2 --backlog-clients 6

Addresses are HOST:PORT, [V6HOST]:PORT or :PORT (all IPv4 addresses).  Port 0
picks a free port; the ready line reports the ports actually bound.

Accepted connections are kept open and their input discarded, so --connect
yields an ESTAB pair.  --close-wait N accepts N connections whose clients then
close, and never closes its own side.  --backlog-full makes a listener that
never accepts and fills its accept queue (Recv-Q = backlog + 1 on Linux); the
remaining clients stay in SYN-SENT.

When everything is set up one JSON line {"type": "ready", ...} is printed on
stdout (flushed); SIGTERM/SIGINT end the process at once (it may be PID 1).
Standard library only, so it runs on the bare Debian python3 base image.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time


def parse_addr(text: str) -> tuple[int, str, int]:
    """HOST:PORT / [V6]:PORT / :PORT -> (family, host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1], int(port)
    if ":" in host:
        return socket.AF_INET6, host, int(port)
    return socket.AF_INET, host or "0.0.0.0", int(port)


def fmt(sockaddr: tuple) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.keep: list[socket.socket] = []  # sockets held open, never selected
        self.report: dict[str, list] = {
            "listen": [],
            "udp": [],
            "unix": [],
            "connect": [],
            "close_wait": [],
            "backlog_full": [],
        }

    def listen(self, family: int, host: str, port: int, backlog: int = 128, accept: bool = True) -> socket.socket:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        s.listen(backlog)
        if accept:
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, self.on_accept)
        else:
            self.keep.append(s)
        return s

    def on_accept(self, lsock: socket.socket) -> None:
        try:
            conn, _ = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        self.sel.register(conn, selectors.EVENT_READ, self.on_read)

    def on_read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(conn)
            conn.close()

    def connect(self, family: int, host: str, port: int, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(family, socket.SOCK_STREAM)
            try:
                s.connect((host, port))
                self.keep.append(s)
                return s
            except OSError:
                s.close()
                if time.monotonic() >= deadline:
                    raise
                self.poll(0.1)  # let our own listeners accept meanwhile

    def close_wait(self, n: int, family: int, host: str, port: int) -> None:
        """n accepted sockets whose peers have closed: CLOSE-WAIT until we exit."""
        lsock = self.listen(family, host, port, backlog=max(n, 1), accept=False)
        addr = lsock.getsockname()
        clients = []
        for _ in range(n):
            c = socket.socket(family, socket.SOCK_STREAM)
            c.connect(addr[:2])
            clients.append(c)
        for _ in range(n):
            conn, _ = lsock.accept()
            self.keep.append(conn)  # never read, never closed
        for c in clients:
            c.close()  # FIN to the accepted side -> CLOSE-WAIT there
        self.report["close_wait"].append({"listen": fmt(addr), "count": n})

    def backlog_full(self, family: int, host: str, port: int, backlog: int, clients: int) -> None:
        lsock = self.listen(family, host, port, backlog=backlog, accept=False)
        addr = lsock.getsockname()
        for _ in range(clients):
            c = socket.socket(family, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(addr[:2])
            except (BlockingIOError, InterruptedError):
                pass
            self.keep.append(c)
        self.report["backlog_full"].append({"listen": fmt(addr), "backlog": backlog, "clients": clients})

    def poll(self, timeout: float | None) -> None:
        for key, _ in self.sel.select(timeout):
            key.data(key.fileobj)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--listen",
        action="append",
        type=parse_addr,
        default=[],
        metavar="HOST:PORT",
        help="TCP listener that accepts and holds connections",
    )
    p.add_argument(
        "--connect",
        action="append",
        type=parse_addr,
        default=[],
        metavar="HOST:PORT",
        help="outgoing TCP connection held open (retried until --connect-timeout)",
    )
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--udp", action="append", type=parse_addr, default=[], metavar="HOST:PORT", help="bound UDP socket")
    p.add_argument(
        "--unix",
        action="append",
        default=[],
        metavar="PATH",
        help="listening unix stream socket (@name for the abstract namespace)",
    )
    p.add_argument("--close-wait", type=int, default=0, metavar="N", help="leak N server-side sockets in CLOSE-WAIT")
    p.add_argument(
        "--close-wait-listen",
        type=parse_addr,
        default=(socket.AF_INET, "127.0.0.1", 0),
        metavar="HOST:PORT",
        help="listener used for --close-wait (default 127.0.0.1:0)",
    )
    p.add_argument(
        "--backlog-full",
        action="append",
        type=parse_addr,
        default=[],
        metavar="HOST:PORT",
        help="listener that never accepts, with its accept queue filled by clients",
    )
    p.add_argument("--backlog", type=int, default=2, help="listen backlog for --backlog-full")
    p.add_argument("--backlog-clients", type=int, default=6, help="clients per --backlog-full listener")
    p.add_argument(
        "--exit-after",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="exit after this long (0: run until SIGTERM/SIGINT)",
    )
    args = p.parse_args(argv)

    def stop(signum: int, _frame: object) -> None:
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    srv = Server()
    for family, host, port in args.listen:
        srv.report["listen"].append(fmt(srv.listen(family, host, port).getsockname()))
    for family, host, port in args.udp:
        u = socket.socket(family, socket.SOCK_DGRAM)
        u.bind((host, port))
        srv.keep.append(u)
        srv.report["udp"].append(fmt(u.getsockname()))
    for path in args.unix:
        x = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        x.bind("\0" + path[1:] if path.startswith("@") else path)
        x.listen(16)
        x.setblocking(False)
        srv.sel.register(x, selectors.EVENT_READ, srv.on_accept)
        srv.report["unix"].append(path)
    for family, host, port in args.connect:
        c = srv.connect(family, host, port, args.connect_timeout)
        srv.report["connect"].append({"local": fmt(c.getsockname()), "peer": fmt(c.getpeername())})
    if args.close_wait:
        srv.close_wait(args.close_wait, *args.close_wait_listen)
    for family, host, port in args.backlog_full:
        srv.backlog_full(family, host, port, args.backlog, args.backlog_clients)

    # Accept whatever our own clients queued before announcing readiness, so
    # that a test that waits for "ready" sees the ESTAB pairs complete.
    srv.poll(0.05)
    print(json.dumps({"type": "ready", "pid": os.getpid(), "uid": os.getuid(), **srv.report}), flush=True)

    deadline = time.monotonic() + args.exit_after if args.exit_after > 0 else None
    while deadline is None or time.monotonic() < deadline:
        srv.poll(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
