#!/usr/bin/env python3
"""Agent image benchmark: image size and the time from `docker run` to the first record.

Scenario (what `kubectl sockdebug` does, minus Kubernetes): a sockdebug-testapp
target runs; the agent image is started N times with
`docker run --rm --network container:T --pid container:T --cap-add SYS_PTRACE
 <agent> sockets -tulp`, and for each run we take, from the moment the docker
CLI is spawned, the time until the first JSON line (the hello record), until
the first socket record, and until the process exits.  As a floor, the same is
measured for `python3 -I -c "print('{}')"` in the same image (container start
plus bare interpreter start).  Medians go to bench/results/image.md.

Usage: bench/image_start.py [-n RUNS] [--agent TAG] [--testapp TAG] [--no-build] [--out FILE]
Needs the images (scripts/build-images builds them unless --no-build).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def docker(*args: str, timeout: float = 120) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=timeout).stdout


def timed_run(cmd: list[str]) -> dict[str, float]:
    """Seconds from spawn to the first line, the first socket record and exit."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = first_socket = None
    assert p.stdout is not None
    for line in p.stdout:
        now = time.perf_counter() - t0
        if first is None:
            first = now
        if first_socket is None and line.startswith('{"type":"socket"'):
            first_socket = now
    rc = p.wait(timeout=60)
    done = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}")
    return {"first": first if first is not None else done, "socket": first_socket or done, "exit": done}


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=11)
    version = subprocess.run(
        [str(ROOT / "scripts" / "build-images"), "--print-version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ap.add_argument("--agent", default=f"sockdebug-agent:{version}")
    ap.add_argument("--testapp", default=f"sockdebug-testapp:{version}")
    ap.add_argument("--no-build", action="store_true", help="use the images as they are")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "image.md")
    args = ap.parse_args()

    if not args.no_build:
        subprocess.run([str(ROOT / "scripts" / "build-images"), "agent", "testapp"], check=True)

    inspect = json.loads(docker("image", "inspect", args.agent))[0]
    size = inspect["Size"]
    layers = len(inspect["RootFS"]["Layers"])
    base = inspect["Config"]["Labels"].get("org.opencontainers.image.version", "?")

    target = f"sockdebug-bench-target-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", target, args.testapp)
    try:
        deadline = time.monotonic() + 30
        while '"ready"' not in docker("logs", target) and time.monotonic() < deadline:
            time.sleep(0.2)
        ns = ["--network", f"container:{target}", "--pid", f"container:{target}"]
        agent_cmd = ["docker", "run", "--rm", *ns, "--cap-add", "SYS_PTRACE", args.agent, "sockets", "-tulp"]
        floor_cmd = ["docker", "run", "--rm", *ns, "--entrypoint", "/usr/bin/python3", args.agent]
        floor_cmd += ["-I", "-c", "print('{}')"]
        timed_run(agent_cmd)  # warm the page cache and docker's image metadata
        agent_runs, floor_runs = [], []
        for i in range(args.runs):
            agent_runs.append(timed_run(agent_cmd))
            floor_runs.append(timed_run(floor_cmd))
            print(
                f"run {i + 1}/{args.runs}: first record {agent_runs[-1]['first'] * 1000:.0f} ms, "
                f"exit {agent_runs[-1]['exit'] * 1000:.0f} ms; floor (python3 -I -c print) first line "
                f"{floor_runs[-1]['first'] * 1000:.0f} ms",
                file=sys.stderr,
            )
        # The agent's own view: elapsed_ms in its end record (inside the container).
        out = subprocess.run(agent_cmd, capture_output=True, text=True, check=True).stdout.splitlines()
        end = json.loads(out[-1])
        sockets = sum(1 for line in out if line.startswith('{"type":"socket"'))
    finally:
        subprocess.run(["docker", "rm", "-f", target], capture_output=True, check=False)

    server = docker("version", "--format", "{{.Server.Version}}").strip()
    first = [r["first"] for r in agent_runs]
    first_range = f"min {min(first) * 1000:.0f}, max {max(first) * 1000:.0f}"
    to_socket, to_exit = ms([r["socket"] for r in agent_runs]), ms([r["exit"] for r in agent_runs])
    floor_first, floor_exit = ms([r["first"] for r in floor_runs]), ms([r["exit"] for r in floor_runs])
    report = f"""# Agent image: size and start time

Measured by `bench/image_start.py` ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC): Docker {server},
kernel {platform.release()}, {args.runs} runs after one warm-up, medians.

| what | value |
| --- | --- |
| image | `{args.agent}` (version label {base}) |
| size, uncompressed (`docker image inspect .Size`) | {size / 1e6:.1f} MB in {layers} layer(s) |
| `docker run` → first record (hello) | {ms(first)} ms ({first_range}) |
| `docker run` → first socket record | {to_socket} ms |
| `docker run` → exit (`sockets -tulp`, {sockets} sockets) | {to_exit} ms |
| floor: `python3 -I -c "print('{{}}')"` instead → first line / exit | {floor_first} / {floor_exit} ms |
| agent's own elapsed time (end record `elapsed_ms`) | {end.get("elapsed_ms", "?")} ms |

Scenario: `docker run --rm --network container:T --pid container:T --cap-add SYS_PTRACE {args.agent}
sockets -tulp` against a `{args.testapp}` target (two listeners, one connection).
The time is dominated by the container runtime (namespaces, mounts, runc), see
the floor row; the agent's own share (imports, the first netlink dump) is the
difference between the first-record row and the floor's first line.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
