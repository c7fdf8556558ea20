"""How many socket-destroy events per second `sockdebug-agent events` keeps up with, against
`ss -E`, during an open/close storm on loopback inside a private network namespace.

    sudo python3 bench/events_bench.py [--seconds 5] [--clients 3] [--rounds 3] [--close clean|rst]

Each run gets a fresh namespace (TIME-WAIT sockets of a clean close stay per namespace), a
server (two accepting processes that close what they accept) and --clients processes that
connect and close as fast as they can for --seconds; every connection destroys two sockets.
One watcher runs per storm: the agent (`events -t`, stdout to a file), the agent without its
table watch (`--no-watch`), or `ss -E -t -n` (line-buffered, as on a terminal), in rotating
order.  Delivered events come from the agent's final tick (and its lost count from the
kernel's drop counter) and from ss's line count (ss says nothing of losses: closes minus
lines).  CPU is the watcher's own (wait4 rusage).  The machine's 1-minute load is noted
before each run: its 2 cores are shared.

Writes bench/results/events.md (and prints it).  Needs root (ip netns).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PORT = 9000
SERVER = f"""
import os, socket
lst = socket.socket()
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", {PORT}))
lst.listen(4096)
os.fork()
print("ready", flush=True)
while True:
    lst.accept()[0].close()
"""
CLIENT = f"""
import socket, struct, sys, time
rst, rate = sys.argv[2] == "rst", float(sys.argv[3])  # rate: connections/s, 0 = as fast as it can
start = time.monotonic()
end, n = start + float(sys.argv[1]), 0
while (now := time.monotonic()) < end:
    if rate and n > (now - start) * rate:
        time.sleep(min(n / rate - (now - start), 0.01))
        continue
    s = socket.create_connection(("127.0.0.1", {PORT}))
    if rst:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    n += 1
print(n)
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def subscribers(ns: str) -> int:
    text = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/netlink"], capture_output=True,
                          text=True, check=True).stdout
    return sum(1 for r in (line.split() for line in text.splitlines()[1:]) if r[1] == "4" and int(r[3], 16))


def wait4_cpu(proc: subprocess.Popen) -> float:
    """Reap ``proc`` and return its CPU seconds (user + system)."""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def one_run(name: str, watcher: list[str], args, work: Path, rate: int) -> dict:
    """One storm of ``rate`` closes/s (0: flat out) watched by one watcher."""
    ns = f"sdbench-ev-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", ns)
    procs: list[subprocess.Popen] = []
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535")
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(server)
        server.stdout.readline()
        out_path = work / f"{name.split()[0]}-{ns}.out"
        cmd = [ns if a == "NS" else a for a in watcher]
        before, load_before = subscribers(ns), load()
        err_path = out_path.with_suffix(".err")
        with open(out_path, "w") as out, open(err_path, "w") as err:
            watch = subprocess.Popen(cmd, stdout=out, stderr=err)
        while subscribers(ns) <= before:
            time.sleep(0.02)
        began = time.monotonic()
        per_client = rate / 2 / args.clients  # two closes per connection
        clients = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, str(args.seconds),
                                     args.close, str(per_client)], stdout=subprocess.PIPE, text=True)
                   for _ in range(args.clients)]
        connections = sum(int(c.communicate()[0]) for c in clients)
        storm = time.monotonic() - began
        time.sleep(1.0)  # let the watcher drain its buffer
        # os.kill, not send_signal: that would reap a watcher that already died (and its rusage).
        exited_early = os.waitid(os.P_PID, watch.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        if not exited_early:
            os.kill(watch.pid, signal.SIGINT if "agent" in name else signal.SIGTERM)
        cpu = wait4_cpu(watch)
        lines = out_path.read_text().splitlines()
        error = err_path.read_text().strip().splitlines()
        out_path.unlink()
        err_path.unlink()
        closes = 2 * connections
        if "agent" in name:
            final = json.loads(lines[-2])["total"]
            delivered, lost, reported_lost = final["events"], final["lost"], final["lost"]
        else:
            delivered, reported_lost = len(lines), None
            lost = closes - delivered
        return {"watcher": name, "rate": rate, "load": load_before, "storm_s": round(storm, 2),
                "connections": connections,
                "closes": closes, "delivered": delivered, "lost": lost, "reported_lost": reported_lost,
                "delivered_per_s": round(delivered / storm), "closes_per_s": round(closes / storm),
                "cpu_s": round(cpu, 2), "cpu_us_per_event": round(cpu / max(delivered, 1) * 1e6, 1),
                "exited_early": exited_early, "exit_code": watch.returncode, "stderr": error[-1] if error else ""}
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rates", default="2000,5000,10000,20000,0",
                    help="closes/s the storm aims at, one storm per rate and watcher (0: as fast as it can)")
    ap.add_argument("--close", choices=("clean", "rst"), default="clean")
    ap.add_argument("--out", default=str(HERE / "results" / "events.md"))
    args = ap.parse_args()
    agent = [sys.executable, "-m", "sockdebug_agent"]  # this checkout: storms last seconds, start-up is noise
    work = HERE / "work"
    work.mkdir(exist_ok=True)
    watchers = {
        "agent events -t": [*agent, "--netns", "NS", "events", "-t", "--tick", "1"],
        "agent events -t --no-watch": [*agent, "--netns", "NS", "events", "-t", "--tick", "1", "--no-watch"],
        "ss -E -t -n": ["ip", "netns", "exec", "NS", "stdbuf", "-oL", "ss", "-E", "-t", "-n", "-H"],
    }
    runs = []
    turn = 0
    for rate in (int(r) for r in args.rates.split(",")):
        for _round in range(args.rounds):
            order = list(watchers.items())
            order = order[turn % len(order):] + order[:turn % len(order)]
            turn += 1
            for name, cmd in order:
                result = one_run(name, cmd, args, work, rate)
                print(json.dumps(result), flush=True)
                runs.append(result)
    report = render(runs, args)
    Path(args.out).write_text(report)
    print(report)


def render(runs: list[dict], args) -> str:
    command = (f"sudo python3 bench/events_bench.py --seconds {args.seconds:g} --clients {args.clients} "
               f"--rounds {args.rounds} --rates {args.rates} --close {args.close}")
    lines = [
        "# events: sockdebug-agent events vs ss -E during an open/close storm", "",
        f"`{command}` — {args.clients} client processes connecting to and closing from a 2-process loopback "
        f"server ({args.close} close) for {args.seconds:g} s per run at a target rate of closes/s (0: as fast as "
        "they can), in a fresh network namespace per run; one watcher per run, rotating order. Kernel "
        f"{os.uname().release}, {os.cpu_count()} CPUs shared with the storm itself and with other work "
        f"(load = 1-minute load average before each run), {time.strftime('%Y-%m-%d')}.", "",
        "| target/s | watcher | load | closes/s made | events/s delivered | lost | CPU s | CPU µs/event | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lost = f"{r['lost']}" + ("" if r["reported_lost"] is not None else " (closes - lines)")
        note = f"exited {r['exit_code']}: {r['stderr']}" if r["exited_early"] else ""
        lines.append(f"| {r['rate'] or 'max'} | `{r['watcher']}` | {r['load']:.2f} | {r['closes_per_s']} | "
                     f"{r['delivered_per_s']} | {lost} | {r['cpu_s']} | {r['cpu_us_per_event']} | {note} |")
    lines += ["", "Per watcher, over all runs: the highest rate made with nothing lost, the lowest made with a loss "
              "(a loss counts the agent's lost messages, and for ss the closes it did not print), and the median CPU "
              "per delivered event.", "",
              "| watcher | most closes/s, nothing lost | fewest closes/s, with a loss | runs with a loss | "
              "runs that died | CPU µs/event (median) |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["watcher"] for r in runs):
        mine = [r for r in runs if r["watcher"] == name]
        clean = [r["closes_per_s"] for r in mine if r["lost"] == 0 and not r["exited_early"]]
        lossy = [r["closes_per_s"] for r in mine if r["lost"] > 0]
        lines.append(f"| `{name}` | {max(clean) if clean else '-'} | {min(lossy) if lossy else '-'} | "
                     f"{len(lossy)} of {len(mine)} | {sum(r['exited_early'] for r in mine)} | "
                     f"{statistics.median(r['cpu_us_per_event'] for r in mine):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
