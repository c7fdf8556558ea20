"""Open a known set of sockets inside the current network namespace, print one
``ready {json}`` line describing them, then sleep until killed.

Run by tests/integration/conftest.py as ``ip netns exec NS python3 open_sockets.py ROLE DIR``:

- ``main``: listeners (127.0.0.1, 0.0.0.0, dual-stack ``::``, ``::1``, v6only ``::``, one
  bound to ``lo``), established pairs (v4, v6, v4-mapped, an explicitly bound client),
  CLOSE-WAIT, a FIN-WAIT-2 holding its fd and an orphaned one (a timewait sock),
  TIME-WAIT, SYN-SENT against a full accept queue, UDP (bound, connected, v6,
  dual-stack), raw ICMP, and unix stream/dgram/seqpacket sockets (path, abstract,
  autobound, unnamed pairs).
- ``peer``: a second process (comm ``we ird)nm``) with connections its listeners never
  accept, and a socket it shares with a forked child (two owners).

Standard library only; nothing here touches anything outside the namespace but
the unix socket paths under DIR.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import sys
import time

KEEP: list[socket.socket] = []  # every socket stays open (and referenced) until we are killed
S = socket


def keep(sock: socket.socket) -> socket.socket:
    KEEP.append(sock)
    return sock


def listener(family: int, addr: str, port: int, backlog: int = 16, *, v6only: int | None = None,
             dev: str | None = None, kind: int = S.SOCK_STREAM) -> socket.socket:
    s = keep(socket.socket(family, kind))
    s.setsockopt(S.SOL_SOCKET, S.SO_REUSEADDR, 1)
    if v6only is not None:
        s.setsockopt(S.IPPROTO_IPV6, S.IPV6_V6ONLY, v6only)
    if dev is not None:
        s.setsockopt(S.SOL_SOCKET, S.SO_BINDTODEVICE, dev.encode())
    s.bind((addr, port))
    if kind == S.SOCK_STREAM:
        s.listen(backlog)
    return s


def connect(family: int, addr: tuple, bind: tuple | None = None) -> socket.socket:
    c = keep(socket.socket(family, S.SOCK_STREAM))
    if bind is not None:
        c.bind(bind)
    c.connect(addr)
    return c


def accept(lst: socket.socket) -> socket.socket:
    return keep(lst.accept()[0])


def wait_until(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def tcp_state_of(sock: socket.socket) -> int:
    # struct tcp_info's first byte is the TCP state.
    return sock.getsockopt(S.IPPROTO_TCP, S.TCP_INFO, 8)[0]


def main_role(workdir: str) -> dict:
    info: dict = {}
    lo4, lo6 = "127.0.0.1", "::1"
    # --- listeners ---------------------------------------------------------------
    l8080 = listener(S.AF_INET, lo4, 8080, 16)
    listener(S.AF_INET, "0.0.0.0", 9090, 8)  # the peer's connections wait here
    l8443 = listener(S.AF_INET6, "::", 8443, 10, v6only=0)  # dual stack: ss prints *:8443
    l9443 = listener(S.AF_INET6, lo6, 9443, 12)
    listener(S.AF_INET6, "::", 9444, 5, v6only=1)  # ss prints [::]:9444
    l80 = listener(S.AF_INET, lo4, 80, 4)
    listener(S.AF_INET, "0.0.0.0", 6000, 3, dev="lo")  # ss prints 0.0.0.0%lo:6000
    full = listener(S.AF_INET, lo4, 7000, 0)  # accept queue of 1 (0 < 1), never accepted

    # --- established pairs ---------------------------------------------------------
    c1 = connect(S.AF_INET, (lo4, 8080))
    c1.setsockopt(S.SOL_SOCKET, S.SO_KEEPALIVE, 1)  # timer:(keepalive,...)
    c1.setsockopt(S.IPPROTO_TCP, S.TCP_KEEPIDLE, 7200)
    accept(l8080)
    c1.sendall(b"x" * 100)  # 100 unread bytes: the accepted side's Recv-Q
    connect(S.AF_INET6, (lo6, 9443))
    accept(l9443)
    connect(S.AF_INET, (lo4, 8443))  # accepted side is [::ffff:127.0.0.1]:8443
    accept(l8443)
    # An explicitly bound client inside the ephemeral range (SOCK_BINDPORT_LOCK: not
    # "autobound" for the kernel).
    connect(S.AF_INET, (lo4, 80), bind=(lo4, 40000))
    accept(l80)

    # --- FIN-WAIT-2 with its fd (shutdown) and CLOSE-WAIT on the other side ---------
    c2 = connect(S.AF_INET, (lo4, 8080))
    a2 = accept(l8080)
    c2.shutdown(S.SHUT_WR)
    wait_until(lambda: tcp_state_of(c2) == 5, "FIN-WAIT-2 (shutdown)")
    wait_until(lambda: tcp_state_of(a2) == 8, "CLOSE-WAIT")

    # --- orphaned FIN-WAIT-2: the client closes, the server never does --------------
    c3 = socket.socket(S.AF_INET, S.SOCK_STREAM)
    c3.connect((lo4, 8080))
    a3 = accept(l8080)
    c3.close()
    wait_until(lambda: tcp_state_of(a3) == 8, "CLOSE-WAIT (orphan's peer)")

    # --- TIME-WAIT: the client closes first, then the server ------------------------
    for family, addr, lst in ((S.AF_INET, (lo4, 8080), l8080), (S.AF_INET6, (lo6, 9443), l9443)):
        c = socket.socket(family, S.SOCK_STREAM)
        c.connect(addr)
        a = lst.accept()[0]
        c.sendall(b"bye")
        assert a.recv(3) == b"bye"
        c.close()
        assert a.recv(1) == b""
        a.close()
    time.sleep(0.05)  # the last ACK on loopback
    # Last on 8080 (accept() takes the oldest): never accepted, ESTAB with inode 0 and
    # l8080's Recv-Q 1.
    connect(S.AF_INET, (lo4, 8080))

    # --- SYN-SENT against a full accept queue ---------------------------------------
    connect(S.AF_INET, (lo4, 7000))  # fills the queue of `full`
    info["syn_sent_ports"] = []
    for _ in range(2):
        c = keep(socket.socket(S.AF_INET, S.SOCK_STREAM))
        c.setblocking(False)
        err = c.connect_ex((lo4, 7000))
        assert err == errno.EINPROGRESS, err
        info["syn_sent_ports"].append(c.getsockname()[1])
    del full

    # --- UDP -------------------------------------------------------------------------
    listener(S.AF_INET, lo4, 5353, kind=S.SOCK_DGRAM)
    u2 = keep(socket.socket(S.AF_INET, S.SOCK_DGRAM))
    u2.connect((lo4, 5353))  # ESTAB, autobound port
    u2.send(b"ping")  # one queued datagram: u1's Recv-Q is memory, not bytes
    listener(S.AF_INET6, lo6, 5354, kind=S.SOCK_DGRAM)
    listener(S.AF_INET6, "::", 5355, v6only=0, kind=S.SOCK_DGRAM)  # *:5355
    u6 = keep(socket.socket(S.AF_INET6, S.SOCK_DGRAM))
    u6.connect((lo6, 5354))
    listener(S.AF_INET, "0.0.0.0", 5300, kind=S.SOCK_DGRAM)

    # --- raw (ss and the agent read /proc/net/raw where raw_diag is missing) --------
    keep(socket.socket(S.AF_INET, S.SOCK_RAW, S.IPPROTO_ICMP))

    # --- unix ------------------------------------------------------------------------
    path = os.path.join(workdir, "stream.sock")
    us = keep(socket.socket(S.AF_UNIX, S.SOCK_STREAM))
    us.bind(path)
    us.listen(7)
    keep(socket.socket(S.AF_UNIX, S.SOCK_STREAM)).connect(path)
    accept(us)
    keep(socket.socket(S.AF_UNIX, S.SOCK_STREAM)).connect(path)  # pending: Recv-Q 1
    abstract = "sdt-abstract-%d" % os.getpid()
    ua = keep(socket.socket(S.AF_UNIX, S.SOCK_STREAM))
    ua.bind("\0" + abstract)
    ua.listen(3)
    ca = keep(socket.socket(S.AF_UNIX, S.SOCK_STREAM))
    ca.connect("\0" + abstract)
    accept(ua)
    ca.send(b"hello")  # unread: Recv-Q 5 on the accepted side
    p1, p2 = socket.socketpair()
    keep(p1), keep(p2)
    dpath = os.path.join(workdir, "dgram.sock")
    ud = keep(socket.socket(S.AF_UNIX, S.SOCK_DGRAM))
    ud.bind(dpath)
    ua2 = keep(socket.socket(S.AF_UNIX, S.SOCK_DGRAM))
    ua2.bind("")  # autobind: @ + 5 hex digits
    ua2.connect(dpath)
    ua2.send(b"12345678")
    keep(socket.socket(S.AF_UNIX, S.SOCK_DGRAM))  # unnamed, unconnected
    qpath = os.path.join(workdir, "seq.sock")
    uq = keep(socket.socket(S.AF_UNIX, S.SOCK_SEQPACKET))
    uq.bind(qpath)
    uq.listen(2)
    keep(socket.socket(S.AF_UNIX, S.SOCK_SEQPACKET)).connect(qpath)
    accept(uq)

    info.update(abstract="@" + abstract, autobind="@" + ua2.getsockname()[1:].decode(),
                stream_path=path, dgram_path=dpath, seq_path=qpath)
    return info


def set_comm(name: bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NAME = 15
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def peer_role(workdir: str) -> dict:
    set_comm(b"we ird)nm")  # ss cuts comm at the first ')'
    for _ in range(2):  # never accepted by main: l9090 Recv-Q 2
        connect(S.AF_INET, ("127.0.0.1", 9090))
    connect(S.AF_INET6, ("::1", 8443))  # never accepted either
    shared = connect(S.AF_INET, ("127.0.0.1", 9090), bind=("127.0.0.1", 45678))
    child = os.fork()
    if child == 0:  # the child holds `shared` (and everything else) too; dies with the group
        while True:
            time.sleep(3600)
    return {"child_pid": child, "shared_port": shared.getsockname()[1]}


def ready(info: dict) -> None:
    """Print the ``ready {json}`` line the test waits for (with our pid), then hold
    everything open until killed (shared with hostile.py)."""
    info["pid"] = os.getpid()
    sys.stdout.write("ready " + json.dumps(info) + "\n")
    sys.stdout.flush()
    while True:
        time.sleep(3600)


def main() -> None:
    role, workdir = sys.argv[1], sys.argv[2]
    ready(main_role(workdir) if role == "main" else peer_role(workdir))


if __name__ == "__main__":
    main()
