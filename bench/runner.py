"""Shared by the benches: run whole processes the same way and measure them.

``measure(argv)`` starts a process with stdout to a pipe that this process drains
(counting lines): wall time from start to exit, and its peak RSS as GNU time reports it.
Not ``wait4`` of our own child: ``ru_maxrss`` keeps the high-water mark of the image
before exec, and a child forked from this Python process starts at its size (~18 MiB,
three times ss's); GNU time forks the command from its own ~2 MiB image.  ``interleaved`` runs
a set of commands round-robin, rotating the order each round, so a change in machine
load hits every command alike; medians are what the results report.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
GNU_TIME = "/usr/bin/time"  # package `time` (scripts/setup)


@dataclass
class Runs:
    ms: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  #: user + system
    lines: int = 0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms)

    @property
    def median_cpu_ms(self) -> float:
        return statistics.median(self.cpu_ms)

    @property
    def median_rss_mib(self) -> float:
        return statistics.median(self.rss_kib) / 1024


def measure(argv: list[str], preexec: Callable[[], None] | None = None) -> tuple[float, int, int, float]:
    """(wall ms, peak RSS KiB, lines written, CPU ms) of one run of ``argv``."""
    buf = bytearray(1 << 20)
    lines = 0
    with tempfile.NamedTemporaryFile("r", prefix="sdbench-rss-") as rss:
        t0 = time.perf_counter()
        proc = subprocess.Popen([GNU_TIME, "-f", TIME_FORMAT, "-o", rss.name, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, preexec_fn=preexec)
        reader = proc.stdout
        while True:
            n = reader.readinto(buf)
            if not n:
                break
            lines += buf.count(b"\n", 0, n)
        code = proc.wait()
        elapsed = (time.perf_counter() - t0) * 1000
        reader.close()
        if code != 0:
            raise RuntimeError(f"{argv} exited with {code}")
        peak, cpu = parse_time(rss.read())
        return elapsed, peak, lines, cpu


TIME_FORMAT = "%M %U %S"


def parse_time(text: str) -> tuple[int, float]:
    """GNU time's TIME_FORMAT line: (peak RSS KiB, user + system ms)."""
    rss, user, system = text.split()[-3:]
    return int(rss), (float(user) + float(system)) * 1000


def interleaved(cases: dict[str, list[str]], runs: int, preexec: Callable[[], None] | None = None
                ) -> dict[str, Runs]:
    """Each command once for warm-up (page cache, .pyc files), then ``runs`` rounds."""
    out = {name: Runs() for name in cases}
    for name, argv in cases.items():
        out[name].lines = measure(argv, preexec)[2]
    names = list(cases)
    for run in range(runs):
        for name in names[run % len(names):] + names[:run % len(names)]:
            ms, rss, _lines, cpu = measure(cases[name], preexec)
            out[name].ms.append(ms)
            out[name].rss_kib.append(rss)
            out[name].cpu_ms.append(cpu)
    return out


def load() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min)"


def agent_venv(venv: Path, reinstall: bool) -> Path:
    """A plain (non-editable) install of this checkout in ``venv``, as users run it."""
    if reinstall or not (venv / "bin" / "sockdebug-agent").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(HERE.parent), "psutil"], check=True)
    return venv / "bin" / "sockdebug-agent"


def baseline_venv(rev: str, reinstall: bool = False) -> Path:
    """The agent of git revision ``rev`` of this repository, installed in a venv of its
    own (bench/work/venv-REV), to run interleaved with this checkout's."""
    venv = HERE / "work" / f"venv-{rev}"
    if reinstall or not (venv / "bin" / "sockdebug-agent").exists():
        with tempfile.TemporaryDirectory(prefix="sdbench-src-") as src:
            archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", rev], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", src, "psutil"], check=True)
    return venv / "bin" / "sockdebug-agent"


def machine() -> str:
    uname = os.uname()
    return (f"Kernel {uname.release}, {os.cpu_count()} CPUs (shared with other work), Python "
            f"{sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}")


CLONE_NEWNET = 0x40000000


def setns(fd: int, kind: int = CLONE_NEWNET) -> None:
    if ctypes.CDLL(None, use_errno=True).setns(fd, kind) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """This process (and so every command it starts) in network namespace ``ns``."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            setns(fd)
        finally:
            os.close(fd)
        yield
    finally:
        setns(home)
        os.close(home)
