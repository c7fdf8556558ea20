"""Speed of `sockdebug-agent sockets` against `ss` and psutil on 20,000 loopback
connections (40,000 TCP sockets held by several processes) in a private network
namespace.  Whole processes, stdout to a pipe, median of interleaved runs.

    sudo python3 bench/sockets_bench.py [--connections 20000] [--holders 5] [--runs 9]

Writes bench/results/sockets.md (and prints it).  Needs root (ip netns).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from holder import loopback_connections  # noqa: E402 - a sibling file, not a package

CLONE_NEWNET = 0x40000000


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall time of one whole process whose stdout goes to a pipe we drain."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t0) * 1000, proc.stdout.count(b"\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--holders", type=int, default=5)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--out", default=str(HERE / "results" / "sockets.md"))
    ap.add_argument("--venv", default=str(HERE / "work" / "venv"), help="where the agent is installed")
    ap.add_argument("--reinstall", action="store_true", help="reinstall the agent into --venv")
    args = ap.parse_args()

    venv = Path(args.venv)
    if not (venv / "bin" / "sockdebug-agent").exists() or args.reinstall:
        # A plain (non-editable) install in a venv: what users run, without this
        # machine's site-packages start-up hooks.
        sh(sys.executable, "-m", "venv", "--clear", str(venv))
        sh(str(venv / "bin" / "pip"), "install", "-q", str(HERE.parent), "psutil")
    agent = str(venv / "bin" / "sockdebug-agent")
    python = str(venv / "bin" / "python")
    with loopback_connections(args.connections, args.holders) as ns:
        # Enter the namespace ourselves so that every measured command starts the same way.
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            sys.exit("setns failed")
        os.close(fd)

        psutil_cmd = [python, "-c", "import psutil; psutil.net_connections('tcp')"]
        cases = {
            "ss -tan": ["ss", "-tan"],
            "sockdebug-agent sockets -t -a": [agent, "sockets", "-t", "-a"],
            "ss -tanp": ["ss", "-tanp"],
            "sockdebug-agent sockets -t -a -p": [agent, "sockets", "-t", "-a", "-p"],
            "python3 -c psutil.net_connections('tcp')": psutil_cmd,
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        lines: dict[str, int] = {}
        for name, cmd in cases.items():  # warm-up: page cache, pyc files
            lines[name] = timed(cmd)[1]
        for run in range(args.runs):
            order = list(cases.items())
            order = order[run % len(order):] + order[:run % len(order)]  # interleave, rotate
            for name, cmd in order:
                times[name].append(timed(cmd)[0])

    med = {name: statistics.median(v) for name, v in times.items()}
    ratios = {
        "agent -t -a / ss -tan": med["sockdebug-agent sockets -t -a"] / med["ss -tan"],
        "agent -t -a -p / ss -tanp": med["sockdebug-agent sockets -t -a -p"] / med["ss -tanp"],
        "psutil / agent -t -a -p": med["python3 -c psutil.net_connections('tcp')"]
        / med["sockdebug-agent sockets -t -a -p"],
        "psutil / agent -t -a": med["python3 -c psutil.net_connections('tcp')"]
        / med["sockdebug-agent sockets -t -a"],
    }
    uname = os.uname()
    out = [
        "# sockets: sockdebug-agent vs ss vs psutil",
        "",
        f"`python3 bench/sockets_bench.py --connections {args.connections} --holders {args.holders} "
        f"--runs {args.runs}` — {args.connections} loopback connections ({2 * args.connections} TCP "
        f"sockets) held by {args.holders} processes in a private netns; whole processes, stdout to a "
        f"pipe, median of {args.runs} interleaved runs. Kernel {uname.release}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| command | median ms | min ms | lines out |",
        "|---|---|---|---|",
    ]
    out += [f"| `{n}` | {med[n]:.1f} | {min(times[n]):.1f} | {lines[n]} |" for n in cases]
    out += ["", "| ratio | value | target |", "|---|---|---|"]
    targets = {"agent -t -a / ss -tan": "≤ 2.0", "agent -t -a -p / ss -tanp": "≤ 1.5",
               "psutil / agent -t -a -p": "≥ 5", "psutil / agent -t -a": "≥ 5"}
    out += [f"| {n} | {v:.2f} | {targets[n]} |" for n, v in ratios.items()]
    text = "\n".join(out) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
