"""Connections that end in each way ``events`` tells apart, run inside a test's namespace.

    python3 close_sockets.py SCENARIO...     (prints one JSON line per scenario when done)

Scenarios: clean, linger0, unread, refused, refused-nonblocking, syn-timeout (needs a blackholed 10.99.0.5:
see ``blackhole``), unused, udp, v6, held (a connection kept $HOLD_SECONDS, default 2.5 s, so
a table dump sees it, then closed cleanly), marker (one UDP socket on 127.0.0.1:MARKER_PORT).  Ports are
fixed so that tests can filter on them; tests/unit/data/capture_events.py records the
same scenarios.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time

BLACKHOLE = "10.99.0.5"
MARKER_PORT = 5399


def blackhole(netns: str) -> None:
    """A prefix whose packets vanish, without a firewall: a veth pair with its far end up,
    and a static neighbour with a MAC nobody has (the far end drops frames not for it).
    Two SYNs, then the connect gives up (at 3 s)."""
    for cmd in (["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"], ["link", "set", "bh0", "up"],
                ["link", "set", "bh1", "up"], ["addr", "add", "10.99.0.1/24", "dev", "bh0"],
                ["neigh", "add", BLACKHOLE, "lladdr", "02:00:00:00:00:05", "dev", "bh0", "nud", "permanent"]):
        subprocess.run(["ip", "-n", netns, *cmd], check=True, capture_output=True, timeout=30)
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.tcp_syn_retries=1"], check=True,
                   timeout=30)


def listener(host: str, port: int, family: int = socket.AF_INET) -> socket.socket:
    lst = socket.socket(family)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, port))
    lst.listen()
    return lst


def connection(host: str, port: int, family: int = socket.AF_INET) -> tuple[socket.socket, ...]:
    """A listener on host:port and one connection to it: (listener, client, server side)."""
    lst = listener(host, port, family)
    cli = socket.create_connection((host, port))
    return lst, cli, lst.accept()[0]


def close_in_turn(first: socket.socket, second: socket.socket, lst: socket.socket, client: socket.socket) -> dict:
    """Close one side, then (0.1 s later) the other, then the listener; the client's port."""
    port = client.getsockname()[1]
    first.close()
    time.sleep(0.1)
    second.close()
    lst.close()
    return {"client_port": port}


def clean() -> dict:
    """Each side sends, then the client closes first (the server is a passive closer)."""
    lst, cli, srv = connection("127.0.0.1", 7000)
    cli.sendall(b"x" * 1000)
    srv.recv(2000)
    srv.sendall(b"y" * 500)
    cli.recv(1000)
    time.sleep(0.3)  # so last_data_* count something
    return close_in_turn(cli, srv, lst, cli)


def linger0() -> dict:
    """The client aborts (SO_LINGER 0): it sends an RST, the server receives it."""
    lst, cli, srv = connection("127.0.0.1", 7001)
    cli.sendall(b"x" * 100)
    srv.recv(200)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return close_in_turn(cli, srv, lst, cli)


def unread() -> dict:
    """The server closes with unread data: the kernel answers with an RST."""
    lst, cli, srv = connection("127.0.0.1", 7002)
    cli.sendall(b"x" * 100)
    time.sleep(0.1)
    return close_in_turn(srv, cli, lst, cli)


def refused() -> dict:
    try:
        socket.create_connection(("127.0.0.1", 7003))
    except ConnectionRefusedError:
        return {"refused": True}
    return {"refused": False}


def refused_nonblocking() -> dict:
    """A connect with a timeout is non-blocking inside: the error is read with SO_ERROR, and
    the kernel keeps the peer port (no tcp_disconnect), as for most clients (Go, Java NIO,
    asyncio)."""
    try:
        socket.create_connection(("127.0.0.1", 7008), timeout=5)
    except ConnectionRefusedError:
        return {"refused": True}
    return {"refused": False}


def syn_timeout() -> dict:
    began = time.monotonic()
    try:
        socket.create_connection((BLACKHOLE, 80), timeout=30)
    except OSError as exc:
        return {"error": exc.errno, "seconds": round(time.monotonic() - began, 3)}
    return {"error": None}


def unused() -> dict:
    socket.socket().close()
    return {}


def udp() -> dict:
    bound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bound.bind(("127.0.0.1", 5353))
    conn = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    conn.connect(("127.0.0.1", 5353))
    conn.send(b"ping")
    time.sleep(0.05)
    port = conn.getsockname()[1]
    bound.close()
    conn.close()
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.bind(("::1", 5354))
    v6.close()
    return {"client_port": port}


def v6() -> dict:
    lst, cli, srv = connection("::1", 7006, socket.AF_INET6)
    return close_in_turn(cli, srv, lst, cli)


def held() -> dict:
    lst, cli, srv = connection("127.0.0.1", 7007)
    time.sleep(float(os.environ.get("HOLD_SECONDS", "2.5")))
    port, fd = cli.getsockname()[1], cli.fileno()
    cli.close()
    srv.close()
    lst.close()
    return {"client_port": port, "pid": os.getpid(), "fd": fd}


def marker() -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", MARKER_PORT))
    sock.close()
    return {}


SCENARIOS = {"clean": clean, "linger0": linger0, "unread": unread, "refused": refused,
             "refused-nonblocking": refused_nonblocking,
             "syn-timeout": syn_timeout, "unused": unused, "udp": udp, "v6": v6, "held": held, "marker": marker}


if __name__ == "__main__":
    for name in sys.argv[1:]:
        result = SCENARIOS[name]()
        print(json.dumps({"scenario": name, **result}), flush=True)
