"""Capture the sock_diag reply bytes that tests/unit/test_sockdiag_parsers.py replays.

Run once, as root, from the repository root: ``python3 tests/unit/data/capture_sockdiag.py``.
It makes a throw-away network namespace, opens a few known sockets in it, and writes
here: the raw reply datagrams of four dumps (``*.bin``, request sequence number 1), the
/proc/net files of the same moment (``proc_*.txt``) and what ``ss`` printed for them
(``ss_*.txt``), the oracle the tests compare the parsed records with.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NS = "sdt-capture"


def inner(out: str) -> None:
    sys.path.insert(0, os.path.join(HERE, "..", "..", ".."))
    from sockdebug_agent.inspectors.sockdiag import inet_request, unix_request
    from sockdebug_agent.netlink import NLMSGHDR

    keep = []
    lst = socket.socket()
    lst.bind(("127.0.0.1", 8080))
    lst.listen(5)
    cli = socket.create_connection(("127.0.0.1", 8080))
    srv = lst.accept()[0]
    cli.sendall(b"0123456789")
    cli2 = socket.create_connection(("127.0.0.1", 8080))
    srv2 = lst.accept()[0]
    cli2.shutdown(socket.SHUT_WR)  # FIN-WAIT-2 here, CLOSE-WAIT on srv2
    v6 = socket.socket(socket.AF_INET6)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    v6.bind(("::1", 9443))
    v6.listen(3)
    dual = socket.socket(socket.AF_INET6)
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    dual.bind(("::", 8443))
    dual.listen(2)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 5353))
    udpc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udpc.connect(("127.0.0.1", 5353))
    udpc.send(b"ping")
    path = os.path.join("/tmp", "sdt-capture.sock")
    if os.path.exists(path):
        os.unlink(path)
    us = socket.socket(socket.AF_UNIX)
    us.bind(path)
    us.listen(4)
    uc = socket.socket(socket.AF_UNIX)
    uc.connect(path)  # left pending: the listener's peers list
    ab = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ab.bind("\0sdt-capture")
    pair = socket.socketpair()
    keep += [lst, cli, srv, cli2, srv2, v6, dual, udp, udpc, us, uc, ab, *pair]
    time.sleep(0.2)

    def dump(name: str, payload: bytes) -> None:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)
        nl.bind((0, 0))
        nl.send(NLMSGHDR.pack(16 + len(payload), 20, 0x301, 1, 0) + payload)
        data = b""
        while True:
            chunk = nl.recv(1 << 20)
            data += chunk
            if NLMSGHDR.unpack_from(chunk, 0)[1] in (2, 3) or chunk[-20:][4:6] == b"\x03\x00":
                break
        nl.close()
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

    ext = 0x4E | 0x80  # INFO, VEGAS, CONG, SKMEMINFO (as ss -im), SHUTDOWN
    dump("tcp4.bin", inet_request(socket.AF_INET, 6, 0xFFF, ext))
    dump("tcp6.bin", inet_request(socket.AF_INET6, 6, 0xFFF, ext))
    dump("udp4.bin", inet_request(socket.AF_INET, 17, 0xFFF, 0x41))
    dump("unix.bin", unix_request(0xFFF, 0x7F))
    for name in ("tcp", "tcp6", "udp", "unix"):
        with open(f"/proc/net/{name}") as src, open(os.path.join(out, f"proc_{name}.txt"), "w") as dst:
            dst.write(src.read())
    for name, args in (("tcp", "-tanoeimH"), ("udp", "-uanemH"), ("unix", "-xanemH")):
        text = subprocess.run(["ss", args], capture_output=True, text=True, check=True).stdout
        with open(os.path.join(out, f"ss_{name}.txt"), "w") as f:
            f.write(text)
    os.unlink(path)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        inner(sys.argv[2])
        return
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", NS, sys.executable, __file__, "--inner", HERE], check=True)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


if __name__ == "__main__":
    main()
