"""One write per kernel batch (agent/stream.py) against one write per line, on 40,000
TCP sockets (20,000 loopback connections held by several processes) in a private
network namespace.  Whole processes, stdout to a pipe that the parent drains, median
of interleaved runs; both variants start through the same wrapper, and the per-line
variant only replaces ``Writer.emit_batch`` by a loop over ``Writer.emit``.

    sudo python3 bench/write_batching.py [--connections 20000] [--holders 4] [--runs 9]

Writes bench/results/write_batching.md (and prints it).  Needs root (ip netns).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from holder import loopback_connections  # noqa: E402 - a sibling file, not a package

# Runs the agent's own main() after optionally switching to one write per line (python3 must
# import this checkout's agent: run it with the venv of bench/sockets_bench.py).  With
# --count (the warm-up run only, so timed runs carry no wrapper cost) it counts the
# write(2) calls to stdout and reports them on stderr.
WRAPPER = r"""
import os, sys
from sockdebug_agent import cli, stream
writes = [0]
if sys.argv[2] == "--count":
    del sys.argv[2]
    real_write = os.write
    def counting_write(fd, data):
        if fd == 1:
            writes[0] += 1
        return real_write(fd, data)
    stream.os.write = counting_write
if sys.argv[1] == "per-line":
    batched = stream.Writer.emit_batch
    def emit_batch(self, records):  # records, or lines already serialised: one write each
        for record in records:
            batched(self, [record])
    stream.Writer.emit_batch = emit_batch
code = cli.main(sys.argv[2:])
print(f"writes={writes[0]}", file=sys.stderr)
sys.exit(code)
"""


def timed(cmd: list[str]) -> tuple[float, int, int]:
    """Wall time (ms), lines and (when counted) stdout writes of one whole process."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, check=True)
    elapsed = (time.perf_counter() - t0) * 1000
    writes = int(proc.stderr.decode().rsplit("writes=", 1)[1])
    return elapsed, proc.stdout.count(b"\n"), writes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--holders", type=int, default=4)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--out", default=str(HERE / "results" / "write_batching.md"))
    args = ap.parse_args()

    with loopback_connections(args.connections, args.holders, prefix="sdwrite") as ns:
        query = ["--netns", ns, "sockets", "-t", "-a"]
        cases = {name: [sys.executable, "-c", WRAPPER, name, *query] for name in ("batched", "per-line")}
        times: dict[str, list[float]] = {name: [] for name in cases}
        seen: dict[str, tuple[int, int]] = {}
        for name, cmd in cases.items():  # warm-up, counting the writes
            _ms, lines, writes = timed([*cmd[:4], "--count", *cmd[4:]])
            seen[name] = (lines, writes)
        for run in range(args.runs):
            order = list(cases.items())
            if run % 2:
                order.reverse()
            for name, cmd in order:
                times[name].append(timed(cmd)[0])

    med = {name: statistics.median(v) for name, v in times.items()}
    uname = os.uname()
    out = [
        "# Output writes: one per kernel batch vs one per line",
        "",
        f"`python3 bench/write_batching.py --connections {args.connections} --holders {args.holders} "
        f"--runs {args.runs}` — `sockdebug-agent --netns NS sockets -t -a` on {args.connections} loopback "
        f"connections ({2 * args.connections} TCP sockets) held by {args.holders} processes in a private "
        f"netns; whole processes, stdout to a pipe, median of {args.runs} interleaved runs. Kernel "
        f"{uname.release}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}.",
        "",
        "| variant | median ms | min ms | max ms | lines out | write(2) calls to stdout |",
        "|---|---|---|---|---|---|",
    ]
    out += [
        f"| {n} | {med[n]:.1f} | {min(times[n]):.1f} | {max(times[n]):.1f} | {seen[n][0]} | {seen[n][1]} |"
        for n in cases
    ]
    out += ["", f"per-line / batched: {med['per-line'] / med['batched']:.2f}x"]
    text = "\n".join(out) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
