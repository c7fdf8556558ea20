"""Node mode at scale: `sockdebug-agent pods -tul -p` (what `sweep --via node` runs) and
`sockdebug-agent sockets -tl -p` in the node's own network namespace (what
`node/NAME --listening` runs), on a simulated node with 100k sockets and 300 pods.

    sudo python3 bench/node_bench.py [--pods 300] [--sockets 100000] [--runs 7] [--reinstall] [--baseline REV]
    sudo python3 bench/node_bench.py --clean     # remove what a killed run left behind

The node is a PID and mount namespace of its own (its pid 1 is this bench's "node
init", with a /proc of its own) and a network namespace of its own, so the agent sees
exactly the node's processes and none of this machine's.  Each pod is a network
namespace with a process in it whose cgroup is ``.../kubepods/besteffort/pod<UID>/<container
id>`` on the cgroup v1 ``pids`` hierarchy (the cgroupfs layout the local cluster's
kubelet uses, see docs/local-cluster.md), or on cgroup2 where there is no v1, which is
how the agent's `pods` command finds pods (agent/inspectors/podns.py).  Each pod holds
two TCP listeners (IPv4, IPv6), two UDP sockets and loopback connections; the node's
own namespace holds the rest of the sockets (connections of its daemons).

Everything it makes (namespaces, cgroups, processes) is removed at the end, also on
Ctrl-C and SIGTERM; the node's processes also die with the bench (they are one PID
namespace, whose init has PR_SET_PDEATHSIG).  Writes bench/results/node.md.  The
fixture (``Node``) is reused by tests/integration/test_node_scale.py.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from holder import MAX_PER_HOLDER  # noqa: E402 - sibling files, not a package
from runner import GNU_TIME, TIME_FORMAT, agent_venv, baseline_venv, load, machine, parse_time, setns  # noqa: E402

PREFIX = "sdnode"
CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x4000, 0x40000, 0x2, 0x4, 0x8
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
READY_TIMEOUT = 300.0  # seconds for every process of the node to open its sockets
POD_LISTENERS = 4  # TCP 0.0.0.0:8080 and [::]:8443, UDP 0.0.0.0:5353 and [::]:5353
LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass
class Pod:
    uid: str
    container: str  #: 64-hex container id: the leaf of its cgroup
    netns: str  #: ip netns name
    connections: int


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def cgroup_root() -> Path:
    """Where pod cgroups go: the cgroup v1 `pids` hierarchy, else the cgroup2 mount."""
    v2 = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype, options = fields[fields.index("-") + 1], fields[-1].split(",")
            if fstype == "cgroup" and "pids" in options:
                return Path(fields[4])
            if fstype == "cgroup2" and v2 is None:
                v2 = Path(fields[4])
    if v2 is None:
        raise RuntimeError("no cgroup hierarchy is mounted")
    return v2


def _ip_batch(lines: list[str]) -> None:
    subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=False,
                   stdout=subprocess.DEVNULL)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        import fcntl

        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _enter_netns(name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        setns(fd)
    finally:
        os.close(fd)


def _connections(addr: str, port: int, count: int, listeners: list[socket.socket]) -> list[socket.socket]:
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((addr, port))
    lst.listen(4096)
    held = [lst, *listeners]
    for _ in range(count):
        held.append(socket.create_connection((addr, port)))
        held.append(lst.accept()[0])
    return held


def _pod_process(pod: Pod, cgroup: Path) -> list[socket.socket]:
    """In the forked pod process: into the pod's network namespace and cgroup, then its sockets."""
    _enter_netns(pod.netns)
    (cgroup / "cgroup.procs").write_text("0")  # 0: this process, whatever its pid is here
    _loopback_up()
    extra = []
    for family, kind, addr, port in ((socket.AF_INET6, socket.SOCK_STREAM, "::", 8443),
                                     (socket.AF_INET, socket.SOCK_DGRAM, "0.0.0.0", 5353),
                                     (socket.AF_INET6, socket.SOCK_DGRAM, "::", 5353)):
        s = socket.socket(family, kind)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port))
        if kind == socket.SOCK_STREAM:
            s.listen(16)
        extra.append(s)
    return _connections("127.0.0.1", 8080, pod.connections, extra)


class _NodeInit:
    """pid 1 of the node: starts its processes, then runs commands for the bench."""

    def __init__(self, node_netns: str, pods: list[Pod], cgroups: dict[str, Path], host_connections: int,
                 commands: int, replies: int) -> None:
        self.commands, self.replies = os.fdopen(commands, "r"), os.fdopen(replies, "w")
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _check(LIBC.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
        _enter_netns(node_netns)
        _loopback_up()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ready_r, ready_w = os.pipe()
        started = 0
        for i, count in enumerate(_split(host_connections, MAX_PER_HOLDER)):
            started += self._child(ready_w, lambda i=i, count=count: _connections(
                f"127.0.0.{1 + i // 8}", 9000 + i, count, []))
        for pod in pods:
            started += self._child(ready_w, lambda pod=pod: _pod_process(pod, cgroups[pod.uid]))
        os.close(ready_w)
        got = 0
        deadline = time.monotonic() + READY_TIMEOUT
        while got < started and select.select([ready_r], [], [], max(deadline - time.monotonic(), 0))[0]:
            got += len(os.read(ready_r, 4096))
        self.reply({"ready": got == started, "started": started, "got": got})

    def _child(self, ready_w: int, make) -> int:
        if os.fork() == 0:
            try:
                held = make()  # noqa: F841 - kept open until killed
                os.write(ready_w, b".")
                while True:
                    signal.pause()
            except BaseException as exc:  # reported through the missing ready byte
                print(f"node fixture process failed: {exc!r}", file=sys.stderr)
            os._exit(1)
        return 1

    def reply(self, obj: dict) -> None:
        self.replies.write(json.dumps(obj) + "\n")
        self.replies.flush()

    def serve(self) -> None:
        for line in self.commands:
            request = json.loads(line)
            try:
                self.reply(self.run(request["argv"], request.get("output")))
            except Exception as exc:  # the bench reports it
                self.reply({"error": repr(exc)})

    def run(self, argv: list[str], output: str | None) -> dict:
        with tempfile.NamedTemporaryFile("r", prefix="sdnode-rss-") as rss:
            t0 = time.perf_counter()
            proc = subprocess.Popen([GNU_TIME, "-f", TIME_FORMAT, "-o", rss.name, *argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            data = proc.stdout.read()
            code = proc.wait()
            elapsed = (time.perf_counter() - t0) * 1000
            stderr = proc.stderr.read().decode(errors="replace")
            proc.stdout.close()
            proc.stderr.close()
            if output:
                Path(output).write_bytes(data)
            peak, cpu = parse_time(rss.read())
            return {"ms": elapsed, "rss_kib": peak, "cpu_ms": cpu, "lines": data.count(b"\n"), "code": code,
                    "stderr": stderr[-2000:]}


def _split(total: int, most: int) -> list[int]:
    parts = -(-total // most) if total else 0
    return [total // parts + (i < total % parts) for i in range(parts)] if parts else []


class Node:
    """The simulated node: ``with Node(pods=300, sockets=100_000) as node: node.run([...])``."""

    def __init__(self, pods: int = 300, sockets: int = 100_000, host_share: float = 0.4) -> None:
        self.tag = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(2)}"
        self.node_netns = f"{self.tag}-node"
        pod_sockets = int(sockets * (1 - host_share))
        per_pod = max(pod_sockets // max(pods, 1), POD_LISTENERS)
        self.pods = [Pod(uid=_uuid(), container=secrets.token_hex(32), netns=f"{self.tag}-pod{i}",
                         connections=(per_pod - POD_LISTENERS) // 2) for i in range(pods)]
        host_sockets = sockets - sum(POD_LISTENERS + 2 * p.connections for p in self.pods)
        self.host_connections = max(host_sockets // 2, 0)
        self.cgroup_base = cgroup_root() / self.tag
        self.cgroups = {p.uid: self.cgroup_base / "kubepods" / "besteffort" / f"pod{p.uid}" / p.container
                        for p in self.pods}
        self.init_pid: int | None = None
        self._to_node = self._from_node = None

    @property
    def sockets(self) -> int:
        return 2 * self.host_connections + sum(POD_LISTENERS + 2 * p.connections for p in self.pods) + len(
            _split(self.host_connections, MAX_PER_HOLDER))

    def __enter__(self) -> Node:
        previous = signal.signal(signal.SIGTERM, _interrupt)
        self._previous_sigterm = previous
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        _ip_batch([f"netns add {name}" for name in [self.node_netns, *(p.netns for p in self.pods)]])
        for path in self.cgroups.values():
            path.mkdir(parents=True, exist_ok=True)
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # outside the new PID namespace: unshare, fork its pid 1, wait for it
            try:
                os.close(cmd_w)
                os.close(rep_r)
                LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                _check(LIBC.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare")
                _check(LIBC.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
                init = os.fork()
                if init == 0:
                    node = _NodeInit(self.node_netns, self.pods, self.cgroups, self.host_connections, cmd_r, rep_w)
                    node.serve()
                    os._exit(0)
                os.waitpid(init, 0)
            except BaseException as exc:
                print(f"node fixture failed: {exc!r}", file=sys.stderr)
            os._exit(0)
        self.init_pid = pid
        os.close(cmd_r)
        os.close(rep_w)
        self._to_node, self._from_node = os.fdopen(cmd_w, "w"), os.fdopen(rep_r, "r")
        hello = self._reply()
        if not hello.get("ready"):
            raise RuntimeError(f"the node fixture did not start: {hello}")

    def _reply(self) -> dict:
        line = self._from_node.readline()
        if not line:
            raise RuntimeError("the node fixture's init exited")
        return json.loads(line)

    def run(self, argv: list[str], output: str | None = None) -> dict:
        """Run ``argv`` on the node (its PID, mount and network namespace): wall ms, peak
        RSS KiB, lines, exit code, stderr; stdout saved to ``output`` if given."""
        self._to_node.write(json.dumps({"argv": argv, "output": output}) + "\n")
        self._to_node.flush()
        reply = self._reply()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        for stream in (self._to_node, self._from_node):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self.init_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)  # its pid 1 has PDEATHSIG: the whole node goes
            os.waitpid(self.init_pid, 0)
            self.init_pid = None
        _remove_cgroups(self.cgroup_base)
        _ip_batch([f"netns del {name}" for name in [self.node_netns, *(p.netns for p in self.pods)]])
        signal.signal(signal.SIGTERM, getattr(self, "_previous_sigterm", signal.SIG_DFL))


def _uuid() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # clean up as on Ctrl-C


def _remove_cgroups(base: Path, timeout: float = 30.0) -> None:
    """rmdir the tree bottom-up; a cgroup whose processes are still exiting is retried."""
    deadline = time.monotonic() + timeout
    while base.exists():
        busy = False
        for path in [*sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), base]:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                busy = True
        if not busy or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def clean_stale() -> None:
    """What a killed run left: this prefix's network namespaces and cgroups."""
    names = [n for n in os.listdir("/run/netns") if n.startswith(PREFIX + "-")] if os.path.isdir("/run/netns") else []
    if names:
        _ip_batch([f"netns del {n}" for n in names])
    root = cgroup_root()
    for path in root.glob(PREFIX + "-*"):
        _remove_cgroups(path)
    print(f"removed {len(names)} network namespaces and the {PREFIX}-* cgroups under {root}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=300)
    ap.add_argument("--sockets", type=int, default=100_000)
    ap.add_argument("--host-share", type=float, default=0.4, help="fraction of the sockets in the node's netns")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "results" / "node.md"))
    ap.add_argument("--venv", default=str(HERE / "work" / "venv"))
    ap.add_argument("--reinstall", action="store_true")
    ap.add_argument("--clean", action="store_true", help="only remove what a killed run left behind")
    ap.add_argument("--baseline", metavar="REV", help="also run the agent of this git revision, interleaved")
    args = ap.parse_args()
    if args.clean:
        clean_stale()
        return
    agent = str(agent_venv(Path(args.venv), args.reinstall))
    baseline = str(baseline_venv(args.baseline, args.reinstall)) if args.baseline else None
    t0 = time.perf_counter()
    with Node(args.pods, args.sockets, args.host_share) as node:
        built = time.perf_counter() - t0
        before = load()
        cases = {
            "sockdebug-agent pods -tul -p": [agent, "pods", "-tul", "-p"],
            "sockdebug-agent sockets -tl -p": [agent, "sockets", "-tl", "-p"],
            "ss -tlnp (reference)": ["ss", "-tlnp"],
        }
        if baseline:
            cases[f"baseline ({args.baseline}) pods -tul -p"] = [baseline, "pods", "-tul", "-p"]
            cases[f"baseline ({args.baseline}) sockets -tl -p"] = [baseline, "sockets", "-tl", "-p"]
        times = {name: [] for name in cases}
        lines = {name: node.run(argv)["lines"] for name, argv in cases.items()}  # warm-up
        for run in range(args.runs):
            names = list(cases)
            for name in names[run % len(names):] + names[:run % len(names)]:
                reply = node.run(cases[name])
                if reply["code"] != 0:
                    raise RuntimeError(f"{name}: exit {reply['code']}: {reply['stderr']}")
                times[name].append((reply["ms"], reply["rss_kib"], reply["cpu_ms"]))
        after = load()
        sockets = node.sockets
    text = "\n".join([
        "# Node mode at scale",
        "",
        f"`sudo python3 bench/node_bench.py --pods {args.pods} --sockets {args.sockets} --host-share "
        f"{args.host_share} --runs {args.runs}{' --baseline ' + args.baseline if args.baseline else ''}` "
        f"— a simulated node (PID, mount and network namespace of its "
        f"own) with {sockets:,} sockets: {args.pods} pods (network namespaces with a process in a "
        f"`kubepods/besteffort/pod<UID>/<id>` cgroup, {POD_LISTENERS} listening sockets and loopback "
        f"connections each) and the node's own namespace; commands run inside the node, medians of "
        f"{args.runs} interleaved runs, peak RSS from GNU time. Fixture built in {built:.1f} s. {machine()}; "
        f"{before} before, {after} after.",
        "",
        "| command | median ms | min ms | max ms | median CPU ms (user+sys) | median peak RSS MiB | lines |",
        "|---|---|---|---|---|---|---|",
        *(f"| `{name}` | {statistics.median(t for t, _, _ in v):.0f} | {min(t for t, _, _ in v):.0f} | "
          f"{max(t for t, _, _ in v):.0f} | {statistics.median(c for _, _, c in v):.0f} | "
          f"{statistics.median(r for _, r, _ in v) / 1024:.1f} | {lines[name]} |"
          for name, v in times.items()),
        "",
    ])
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, cgroups)")
    if shutil.which("ip") is None:
        sys.exit("needs ip (iproute2)")
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: Node.close has run
        sys.exit("interrupted; the node's namespaces, cgroups and processes are removed")
