"""Where the time of `sockdebug-agent sockets -t -a` goes, phase by phase.

In one process, inside a private network namespace holding SIZE TCP sockets, on the
same captured reply: the kernel's part (receiving every datagram of the IPv4 dump,
nothing else), parsing into Socket records (the record path: filters, -o/-e/-m/-i,
analyses), evaluating an ss filter expression over them, serialising them, the
JSON-lines path that replaces parse + serialise for plain dumps, and writing the
output to a pipe.  Then the fixed cost of a run, as whole processes: a bare
interpreter, importing the agent, and a whole `sockets -t -a` of an empty namespace.

    sudo python3 bench/sockets_profile.py [--sizes 40000,100000] [--repeat 7]

Times are the main thread's CPU time (user + system, so the kernel's work inside
recv() counts), best of --repeat: a shared machine stretches wall time, CPU time
much less.  Writes bench/results/sockets_profile.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from holder import loopback_connections  # noqa: E402 - sibling files, not a package
from runner import agent_venv, inside, load, machine, measure  # noqa: E402

ALL_STATES = 0xFFF


def best(fn, repeat: int) -> float:
    """Best CPU ms of ``fn()`` over ``repeat`` calls."""
    out = []
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        out.append((time.thread_time() - t0) * 1000)
    return min(out)


def phases(repeat: int) -> dict[str, float]:
    # Imported here, in the bench venv (see main): the agent of this checkout.
    from sockdebug_agent.filter import select
    from sockdebug_agent.inspectors.sockdiag import (
        SOCK_DIAG_BY_FAMILY,
        CookieWindow,
        inet_lines,
        inet_parser,
        inet_request,
        unique,
    )
    from sockdebug_agent.netlink import NETLINK_SOCK_DIAG, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSGHDR
    from sockdebug_agent.schema import socket_to_json

    request = inet_request(socket.AF_INET, 6, ALL_STATES)
    request = NLMSGHDR.pack(16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request
    captured: list[tuple[bytes, int]] = []

    def receive() -> None:
        captured.clear()
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as sock:
            sock.send(request)
            buf = bytearray(64 * 1024)
            while True:
                size = sock.recv_into(buf)
                captured.append((bytes(buf[:size]), size))
                if NLMSGHDR.unpack_from(buf, size - 20)[1] == NLMSG_DONE:  # DONE ends a dump datagram
                    return

    out = {"kernel: receive every datagram": best(receive, repeat)}
    records: list = []

    def parse() -> None:
        split = unique(inet_parser(socket.AF_INET, 6), CookieWindow())
        records[:] = [split(data, n, 1)[0] for data, n in captured]

    out["parse into Socket records"] = best(parse, repeat)
    sockets = sum(map(len, records))
    sel = select(tcp=True, all_states=True, words=["dport", "!=", ":1", "or", "sport", "=", ":9000"])
    out["filter: ss expression over the records"] = best(lambda: [sel.matches(s) for b in records for s in b],
                                                          repeat)
    out["serialise the records (socket_to_json)"] = best(
        lambda: [("\n".join(map(socket_to_json, b)) + "\n").encode() for b in records], repeat)
    blobs: list[bytes] = []

    def lines() -> None:
        split = inet_lines(socket.AF_INET, 6, CookieWindow())
        blobs[:] = [("\n".join(split(data, n, 1)[0]) + "\n").encode() for data, n in captured]

    out["JSON lines straight from the reply (inet_lines)"] = best(lines, repeat)
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    fd = reader.stdin.fileno()

    def write() -> None:
        for blob in blobs:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]

    out["write the lines to a pipe"] = best(write, repeat)
    reader.stdin.close()
    reader.wait()
    out["sockets"] = sockets
    return out


def startup(agent: str, runs: int) -> dict[str, tuple[float, float]]:
    python = str(Path(agent).parent / "python")
    cases = {
        "interpreter alone (python -S -c pass)": [python, "-S", "-c", "pass"],
        "interpreter with site (python -c pass)": [python, "-c", "pass"],
        "import the agent (python -c 'import sockdebug_agent.cli')": [python, "-c", "import sockdebug_agent.cli"],
        "whole run, empty namespace (sockets -t -a)": [agent, "sockets", "-t", "-a"],
        "ss -tan, empty namespace": ["ss", "-tan"],
    }
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):  # interleaved, as the benches run
        for name, argv in cases.items():
            out[name].append(measure(argv)[0])
    return {name: (statistics.median(v), min(v)) for name, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="40000,100000")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "results" / "sockets_profile.md"))
    ap.add_argument("--venv", default=str(HERE / "work" / "venv"))
    ap.add_argument("--reinstall", action="store_true")
    args = ap.parse_args()
    agent = str(agent_venv(Path(args.venv), args.reinstall))
    python = str(Path(agent).parent / "python")
    if sys.executable != python:  # the phases import the agent: run where this checkout is installed
        os.execv(python, [python, __file__, *(a for a in sys.argv[1:] if a != "--reinstall")])
    results = {}
    for size in map(int, args.sizes.split(",")):
        with loopback_connections(size // 2) as ns, inside(ns):
            before = load()
            results[size] = (phases(args.repeat), f"{before} before, {load()} after")
    with loopback_connections(0, prefix="sdempty") as ns, inside(ns):  # one listener, nothing else
        fixed = startup(agent, max(args.repeat * 3, 21))
    text = report(args, results, fixed)
    Path(args.out).write_text(text)
    print(text)


def report(args: argparse.Namespace, results: dict, fixed: dict[str, tuple[float, float]]) -> str:
    out = ["# sockets: where the time goes", "",
           f"`sudo python3 bench/sockets_profile.py --sizes {args.sizes} --repeat {args.repeat}` — in-process, "
           f"main-thread CPU ms (user + system), best of {args.repeat}, on one captured TCP/IPv4 dump of "
           f"loopback connections. {machine()}.", ""]
    for phase, when in results.values():
        sockets = phase.pop("sockets")
        out += [f"## {sockets:,} sockets ({when})", "", "| phase | CPU ms | µs per socket |", "|---|---|---|"]
        out += [f"| {name} | {ms:.1f} | {ms * 1000 / sockets:.2f} |" for name, ms in phase.items()]
        out.append("")
    out += ["## Fixed cost of a run (whole processes through GNU time, wall ms, interleaved)", "",
            "| what | median ms | min ms |", "|---|---|---|"]
    out += [f"| {name} | {median:.1f} | {least:.1f} |" for name, (median, least) in fixed.items()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the fixtures' own cleanup has run
        sys.exit("interrupted; the bench's namespaces and processes are removed")
