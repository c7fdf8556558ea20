"""Capture the socket-destroy messages that tests/unit/test_events_parse.py replays.

Run once, as root, from the repository root: ``python3 tests/unit/data/capture_events.py``.
It makes a throw-away network namespace with a blackholed prefix, joins the four destroy
groups there as ``ss -E`` does, runs ``ss -E`` alongside, and ends connections in each way
the agent tells apart (tests/integration/helpers/close_sockets.py).  It writes here:

- ``events.bin``: the datagrams as received, back to back (each is one netlink message,
  so the file is itself a message stream);
- ``events_labels.json``: the scenario each message came from, in the same order;
- ``events_ss.txt``: what ``ss -E -t -u -n -e -i -H`` printed meanwhile (the oracle).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "..", "integration"), os.path.join(HERE, "..", "..", "integration", "helpers")]
import close_sockets  # noqa: E402  (the scenarios the integration tests run too)

NS = "sdt-capture-events"
ORDER = ("clean", "linger0", "unread", "refused", "syn-timeout", "unused", "udp", "v6")


def inner(out: str) -> None:
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)
    nl.bind((0, 0xF))  # the four SKNLGRP_*_DESTROY groups
    ss = subprocess.Popen(["stdbuf", "-oL", "ss", "-E", "-t", "-u", "-n", "-e", "-i", "-H"],
                          stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    data, labels = b"", []
    for label in ORDER:
        close_sockets.SCENARIOS[label]()
        time.sleep(0.3)
        while select.select([nl], [], [], 0.2)[0]:
            data += nl.recv(65536)
            labels.append(label)
    time.sleep(0.5)
    ss.terminate()
    text = ss.communicate()[0]
    with open(os.path.join(out, "events.bin"), "wb") as f:
        f.write(data)
    with open(os.path.join(out, "events_labels.json"), "w") as f:
        json.dump(labels, f, indent=0)
    with open(os.path.join(out, "events_ss.txt"), "w") as f:
        f.write(text)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        inner(sys.argv[2])
        return
    from netns_fixture import TestNamespace  # the integration tests' namespace: add, lo up, delete

    ns = TestNamespace(NS)
    try:
        close_sockets.blackhole(ns.name)
        subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, __file__, "--inner", HERE], check=True)
    finally:
        ns.close()


if __name__ == "__main__":
    main()
