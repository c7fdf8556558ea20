"""The agent's fixed cost: what a run pays before and around its first socket, the same at
10 sockets or 100,000, against `ss -tan` and (with --baseline) the agent of another git
revision.

    sudo python3 bench/startup_bench.py [--runs 31] [--baseline REV] [--reinstall]

Three views, all in an empty network namespace made here:

- Whole processes, interleaved (each round runs every case once, the order rotated): the
  interpreter alone and with `site`, the agent's `--version`, `sockets -ta`, and
  `--netns NAME sockets -ta` of a second empty namespace; wall ms from spawn to exit and
  CPU ms (user + system, from wait4).
- Instructions (valgrind's callgrind, `Ir`): the same count whatever the machine's load,
  so a difference of 1% is real here where wall times move by 50%.  The whole run of each
  agent, and this checkout's run cut into stages (each stage a process that stops with
  os._exit after it).
- Inside one run of this checkout: `python -X importtime` (minimum over the runs, per
  module), and wall ms between timestamps around the agent's own functions.

The agents are plain installs in venvs (bench/work), started as the image starts them:
through their console script, with `python -I`.  Writes bench/results/startup.md.
Needs root (ip netns) and valgrind (scripts/setup-packages).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from runner import agent_venv, baseline_venv, inside, load, machine  # noqa: E402 - sibling files, not a package

# The standard library a `sockets -ta` run imports (besides the interpreter's own).
STDLIB = "typing, argparse, json, _socket, struct, mmap, select, _signal, resource, errno, threading"
# Cumulative stages of a run, for callgrind; each ends with os._exit (no teardown, as cli.run).
STAGES = [
    ("interpreter and `site` (`python -I -c pass`)", "pass"),
    ("+ the standard library the agent uses", f"import gc; gc.disable(); import {STDLIB}"),
    ("+ the record types (`schema`)", f"import gc; gc.disable(); import {STDLIB}; import sockdebug_agent.schema"),
    ("+ the CLI's modules (`import sockdebug_agent.cli`)", "import gc; gc.disable(); import sockdebug_agent.cli"),
    ("+ the argument parser built", "import gc; gc.disable(); import sockdebug_agent.cli as c; c.build_parser()"),
    ("+ `sockets -ta` parsed", "import gc; gc.disable(); import sockdebug_agent.cli as c; "
                               "c.build_parser().parse_args(['sockets', '-ta'])"),
    ("+ the dump's modules (`inspectors.sockets`)", "import gc; gc.disable(); import sockdebug_agent.cli as c; "
     "c.build_parser().parse_args(['sockets', '-ta']); import sockdebug_agent.inspectors.sockets"),
    ("+ the run (hello, netlink sockets, two empty dumps, end)", "import gc; gc.disable(); "
     "import sockdebug_agent.cli as c; c.main(['sockets', '-ta'])"),
]

# Run by this checkout's interpreter with -I: timestamps around the agent's own functions.
# argv[1] is the netns path to enter ("" for none).  Prints one JSON object on stderr.
PHASES = r"""
import sys, time
now = time.perf_counter
t = {"start": now()}
from sockdebug_agent import start
t["imported"] = now()
from sockdebug_agent import cli, namespaces, stream

def stamp(owner, name, before=None, after=None):
    real = getattr(owner, name)
    def wrapped(*args, **kwargs):
        if before and before not in t:
            t[before] = now()
        try:
            return real(*args, **kwargs)
        finally:
            if after and after not in t:
                t[after] = now()
    setattr(owner, name, wrapped)

stamp(cli, "build_parser", "parser", "parser built")
stamp(namespaces, "enter", "enter", "entered")
stamp(stream.Writer, "hello", "hello")
stamp(stream.Writer, "_write", None, "first write")
stamp(stream.Writer, "end", "end", "ended")
argv = (["--netns", sys.argv[1]] if sys.argv[1] else []) + ["sockets", "-ta"]
t["main"] = now()
code = cli.main(argv)
t["returned"] = now()
print(__import__("json").dumps({"code": code, **t}), file=sys.stderr)
"""


def spawn(argv: list[str]) -> tuple[float, float, bytes]:
    """(wall ms, CPU ms, stderr) of one process; stdout goes to /dev/null."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{argv} exited with {code}: {err.decode(errors='replace')}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000, err


def whole(agents: dict[str, Path], other: str, runs: int) -> dict[str, tuple[list[float], list[float]]]:
    """Interleaved whole-process cases: name -> (wall ms, CPU ms) per run (``other``: the
    namespace --netns enters)."""
    python = str(next(iter(agents.values())).parent / "python")
    cases = {"python -I -S -c pass": [python, "-I", "-S", "-c", "pass"],
             "python -I -c pass": [python, "-I", "-c", "pass"]}
    for who, agent in agents.items():
        py = str(agent.parent / "python")
        cases[f"{who}: --version"] = [py, "-I", str(agent), "--version"]
        cases[f"{who}: sockets -ta"] = [py, "-I", str(agent), "sockets", "-ta"]
        cases[f"{who}: --netns NAME sockets -ta"] = [py, "-I", str(agent), "--netns", other, "sockets", "-ta"]
    cases["ss -tan"] = ["ss", "-tan"]
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    names = list(cases)
    for run in range(runs + 1):  # the first round warms the page cache
        for name in names[run % len(names):] + names[:run % len(names)]:
            wall, cpu, _err = spawn(cases[name])
            if run:
                out[name][0].append(wall)
                out[name][1].append(cpu)
    return out


def instructions(argv: list[str]) -> float:
    """Millions of instructions one process executes (callgrind's Ir total)."""
    err = spawn(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv])[2].decode()
    return int(re.search(r"Collected : (\d+)", err).group(1)) / 1e6


def counted(agents: dict[str, Path]) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """(whole-run Ir per agent and for ss, this checkout's cumulative stages)."""
    runs = {f"{who}: sockets -ta": instructions([str(a.parent / "python"), "-I", str(a), "sockets", "-ta"])
            for who, a in agents.items()}
    runs["ss -tan"] = instructions(["ss", "-tan"])
    py = str(agents["this"].parent / "python")
    stages = [(name, instructions([py, "-I", "-c", f"{code}\nimport os; os._exit(0)"])) for name, code in STAGES]
    return runs, stages


def importtime(agent: Path, runs: int) -> list[tuple[str, int, int]]:
    """(module, min self µs, min cumulative µs) of `python -X importtime` over ``runs``
    whole `sockets -ta` runs, in import order."""
    selfs: dict[str, list[int]] = {}
    cums: dict[str, list[int]] = {}
    for _ in range(runs):
        err = spawn([str(agent.parent / "python"), "-I", "-X", "importtime", str(agent), "sockets", "-ta"])[2]
        for line in err.decode().splitlines():
            fields = line.removeprefix("import time:").split("|")
            if len(fields) != 3 or not fields[0].strip().isdigit():
                continue
            selfs.setdefault(fields[2].rstrip(), []).append(int(fields[0]))
            cums.setdefault(fields[2].rstrip(), []).append(int(fields[1]))
    return [(name, min(selfs[name]), min(cums[name])) for name in selfs]


def phases(agent: Path, other: str, runs: int, enter: bool) -> dict[str, list[float]]:
    """ms spent in each phase of one run, per run."""
    argv = [str(agent.parent / "python"), "-I", "-c", PHASES, f"/run/netns/{other}" if enter else ""]
    out: dict[str, list[float]] = {}
    for run in range(runs + 1):
        t = json.loads(spawn(argv)[2].decode().strip().splitlines()[-1])
        spans = {
            "import the entry (`sockdebug_agent.start`: every module a run needs at start)":
                t["imported"] - t["start"],
            "main() to the parser (writer, signals)": t["parser"] - t["main"],
            "build the argument parser": t["parser built"] - t["parser"],
            "parse, then to the netns": t.get("enter", t["hello"]) - t["parser built"],
            "enter the netns": t["entered"] - t["enter"] if enter else 0.0,
            "hello record": t["first write"] - t["hello"],
            "the dump (imports, netlink sockets, request, reply)": t["end"] - t["first write"],
            "end record and main()'s return": t["returned"] - t["end"],
            "main() in all": t["returned"] - t["main"],
        }
        if run:
            for name, seconds in spans.items():
                out.setdefault(name, []).append(seconds * 1000)
    return out


def modules(agent: Path) -> tuple[set[str], set[str]]:
    """(modules the interpreter has after `pass`, modules after `sockets -ta`)."""
    py = str(agent.parent / "python")
    show = "import sys; print(','.join(sorted(sys.modules)), file=sys.stderr)"
    bare = spawn([py, "-I", "-c", show])[2].decode().strip()
    run = "import sys\nfrom sockdebug_agent import cli\ncode = cli.main(['sockets', '-ta'])\n" + show
    after = spawn([py, "-I", "-c", run])[2].decode().strip()
    return set(bare.split(",")), set(after.split(","))


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}"


def report(args: argparse.Namespace, when: str, runs: dict, ir: tuple, imports: list, inside: dict,
           mods: dict) -> str:
    who = list(mods)
    out = ["# The agent's fixed cost (start-up)", "",
           f"`sudo python3 bench/startup_bench.py --runs {args.runs}"
           f"{' --baseline ' + args.baseline if args.baseline else ''}` — in an empty network namespace; "
           f"agents installed in venvs and started as the image starts them (console script, `python -I`). "
           f"{machine()}, {when}."
           + (f" `baseline` is commit {args.baseline} of this repository, in the same rounds."
              if args.baseline else ""),
           "", f"## Whole processes ({args.runs} interleaved rounds)", "",
           "| case | median wall ms | min wall ms | median CPU ms | min CPU ms |", "|---|---|---|---|---|"]
    for name, (wall, cpu) in runs.items():
        out.append(f"| `{name}` | {med(wall)} | {min(wall):.1f} | {med(cpu)} | {min(cpu):.1f} |")
    whole_ir, stages = ir
    out += ["", "## Instructions (callgrind `Ir`, millions; the same under any load)", "",
            "| whole run | M instructions |", "|---|---|"]
    out += [f"| `{name}` | {count:.1f} |" for name, count in whole_ir.items()]
    out += ["", "This checkout's `sockets -ta`, stage by stage (each stage a process that ends with `os._exit` "
            "after it, as `cli.run` does; the garbage collector off from the start, as `start.py` does):", "",
            "| stage | M instructions | the stage's own |", "|---|---|---|"]
    previous = 0.0
    for name, count in stages:
        out.append(f"| {name} | {count:.1f} | {count - previous:+.1f} |")
        previous = count
    out += ["", f"## `python -X importtime` of this checkout's `sockets -ta` (minimum over {args.runs} runs, µs)",
            "", "Modules whose cumulative time is at least 300 µs, in import order; depth 0 is imported by the "
            "entry script, depth 1 by a module of depth 0, ...", "",
            "| module | depth | self µs | cumulative µs |", "|---|---|---|---|"]
    for name, self_us, cum_us in imports:
        if cum_us >= 300:
            depth = (len(name) - len(name.lstrip())) // 2
            out.append(f"| `{name.strip()}` | {depth} | {self_us} | {cum_us} |")
    out += ["", f"## Inside one run of this checkout (`sockets -ta`; medians of {args.runs} runs, wall ms)", "",
            "| phase | in the namespace | with --netns |", "|---|---|---|"]
    plain, entering = inside
    for phase in plain:
        out.append(f"| {phase} | {med(plain[phase])} | {med(entering[phase])} |")
    out += ["", "## Modules `sockets -ta` imports beyond the interpreter's own `python -I -c pass`", ""]
    for name in who:
        bare, after = mods[name]
        extra = sorted(after - bare)
        stdlib = [m for m in extra if not m.startswith("sockdebug_agent")]
        own = [m for m in extra if m.startswith("sockdebug_agent")]
        out.append(f"- {name}: {len(extra)} modules; standard library: {', '.join(stdlib)}; the agent's: "
                   f"{', '.join(m.removeprefix('sockdebug_agent.') for m in own)}")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=31)
    ap.add_argument("--baseline", metavar="REV", help="also run the agent of this git revision, interleaved")
    ap.add_argument("--venv", default=str(HERE / "work" / "venv"), help="where this checkout is installed")
    ap.add_argument("--reinstall", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "startup.md"))
    args = ap.parse_args()
    agents = {"this": agent_venv(Path(args.venv), args.reinstall)}
    if args.baseline:
        agents["baseline"] = baseline_venv(args.baseline, args.reinstall)
    here, other = f"sdstart-{os.getpid()}", f"sdstart-{os.getpid()}-b"  # run in one, --netns the other
    try:
        for ns in (here, other):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        with inside(here):
            before = load()
            runs = whole(agents, other, args.runs)
            ir = counted(agents)
            imports = importtime(agents["this"], args.runs)
            plain = phases(agents["this"], other, args.runs, enter=False)
            entering = phases(agents["this"], other, args.runs, enter=True)
            mods = {name: modules(agent) for name, agent in agents.items()}
            text = report(args, f"{before} before, {load()} after", runs, ir, imports, (plain, entering), mods)
    finally:
        for ns in (here, other):
            subprocess.run(["ip", "netns", "delete", ns], check=False)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
