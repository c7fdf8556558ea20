"""Speed and peak memory of `sockdebug-agent sockets` against `ss` on 10k, 40k and 100k
TCP sockets (established loopback connections, both ends, held by several processes)
in a private network namespace.  Whole processes, stdout to a pipe this process
drains, each reaped with wait4 for its own peak RSS; medians of interleaved runs.

    sudo python3 bench/sockets_bench.py [--sizes 10000,40000,100000] [--runs 9] [--reinstall] [--baseline REV]

Writes bench/results/sockets.md (and prints it).  Needs root (ip netns).  Every
namespace and process it makes is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from holder import loopback_connections  # noqa: E402 - sibling files, not a package
from runner import Runs, agent_venv, baseline_venv, inside, interleaved, load, machine  # noqa: E402


def bench_size(sockets: int, runs: int, agent: str, psutil_python: str | None, baseline: str | None
               ) -> tuple[dict[str, Runs], str]:
    with loopback_connections(sockets // 2) as ns, inside(ns):
        before = load()
        cases = {
            "ss -tan": ["ss", "-tan"],
            "agent -t -a": [agent, "sockets", "-t", "-a"],
            "ss -tanp": ["ss", "-tanp"],
            "agent -t -a -p": [agent, "sockets", "-t", "-a", "-p"],
        }
        if baseline:
            cases["baseline agent -t -a"] = [baseline, "sockets", "-t", "-a"]
            cases["baseline agent -t -a -p"] = [baseline, "sockets", "-t", "-a", "-p"]
        if psutil_python:
            cases["psutil net_connections"] = [psutil_python, "-c", "import psutil; psutil.net_connections('tcp')"]
        result = interleaved(cases, runs)
        return result, f"{before} before, {load()} after"


def report(args: argparse.Namespace, results: dict[int, tuple[dict[str, Runs], str]]) -> str:
    sizes = sorted(results)
    out = [
        "# sockets: sockdebug-agent vs ss",
        "",
        f"`sudo python3 bench/sockets_bench.py --sizes {','.join(map(str, sizes))} --runs {args.runs}"
        f"{' --baseline ' + args.baseline if args.baseline else ''}` — "
        "established loopback connections (both ends, plus one listener per holder process) in a private "
        "netns; whole processes, stdout to a pipe the bench drains, peak RSS from GNU time; "
        f"medians of {args.runs} interleaved runs. {machine()}."
        + (f" `baseline agent` is commit {args.baseline} of this repository, in the same runs."
           if args.baseline else ""),
        "",
    ]
    for size in sizes:
        runs, when = results[size]
        out += [f"## {size:,} sockets ({when})", "",
                "| command | median ms | min ms | median CPU ms (user+sys) | median peak RSS MiB | lines |",
                "|---|---|---|---|---|---|"]
        out += [f"| `{name}` | {r.median_ms:.1f} | {min(r.ms):.1f} | {r.median_cpu_ms:.0f} | {r.median_rss_mib:.1f} | "
                f"{r.lines} |" for name, r in runs.items()]
        out.append("")
    if args.baseline:
        out += ["## This checkout against the baseline (medians of the same run)", "",
                "| sockets | -t -a ms | baseline ms | -t -a peak RSS MiB | baseline MiB | -t -a -p ms | baseline ms | "
                "-t -a -p peak RSS MiB | baseline MiB |", "|---|---|---|---|---|---|---|---|---|"]
        for size in sizes:
            r = results[size][0]
            row = [r[name] for name in ("agent -t -a", "baseline agent -t -a", "agent -t -a -p",
                                        "baseline agent -t -a -p")]
            out.append(f"| {size:,} | {row[0].median_ms:.1f} | {row[1].median_ms:.1f} | {row[0].median_rss_mib:.1f} | "
                       f"{row[1].median_rss_mib:.1f} | {row[2].median_ms:.1f} | {row[3].median_ms:.1f} | "
                       f"{row[2].median_rss_mib:.1f} | {row[3].median_rss_mib:.1f} |")
        out.append("")
    out += ["## Ratios (agent / ss, medians of the same run)", "",
            "| sockets | time -t -a (≤ 1.2) | time -t -a -p (≤ 1.0) | peak RSS -t -a (≤ 3) | "
            "peak RSS -t -a -p (≤ 3) |", "|---|---|---|---|---|"]
    for size in sizes:
        r = results[size][0]
        out.append(f"| {size:,} | {r['agent -t -a'].median_ms / r['ss -tan'].median_ms:.2f} | "
                   f"{r['agent -t -a -p'].median_ms / r['ss -tanp'].median_ms:.2f} | "
                   f"{r['agent -t -a'].median_rss_mib / r['ss -tan'].median_rss_mib:.2f} | "
                   f"{r['agent -t -a -p'].median_rss_mib / r['ss -tanp'].median_rss_mib:.2f} |")
    out += ["", "## Growth with the number of sockets (agent)", "",
            "| sockets | -t -a ms | -t -a µs/socket over the smallest | -t -a peak RSS MiB | -t -a -p ms | "
            "-t -a -p peak RSS MiB |", "|---|---|---|---|---|---|"]
    base = results[sizes[0]][0]["agent -t -a"].median_ms
    for size in sizes:
        r = results[size][0]
        plain, owners = r["agent -t -a"], r["agent -t -a -p"]
        per = (plain.median_ms - base) * 1000 / (size - sizes[0]) if size != sizes[0] else float("nan")
        out.append(f"| {size:,} | {plain.median_ms:.1f} | {per:.2f} | {plain.median_rss_mib:.1f} | "
                   f"{owners.median_ms:.1f} | {owners.median_rss_mib:.1f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,40000,100000", help="TCP sockets per fixture, comma-separated")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--psutil", action="store_true", help="also time psutil.net_connections('tcp')")
    ap.add_argument("--out", default=str(HERE / "results" / "sockets.md"))
    ap.add_argument("--venv", default=str(HERE / "work" / "venv"), help="where the agent is installed")
    ap.add_argument("--reinstall", action="store_true", help="reinstall this checkout's agent into --venv")
    ap.add_argument("--baseline", metavar="REV", help="also run the agent of this git revision (e.g. the commit "
                    "before a change), interleaved")
    args = ap.parse_args()
    agent = agent_venv(Path(args.venv), args.reinstall)
    baseline = str(baseline_venv(args.baseline, args.reinstall)) if args.baseline else None
    psutil_python = str(Path(args.venv) / "bin" / "python") if args.psutil else None
    results = {}
    for size in map(int, args.sizes.split(",")):
        results[size] = bench_size(size, args.runs, str(agent), psutil_python, baseline)
        print(f"{size}: done ({results[size][1]})", file=sys.stderr)
    text = report(args, results)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the fixtures' own cleanup has run
        sys.exit("interrupted; the bench's namespaces and processes are removed")
