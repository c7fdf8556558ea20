"""``sockdebug-agent serve``: keep an ephemeral agent container alive for exec reuse.

Ephemeral containers can never be removed from a pod, so the plugin starts one
``serve`` process per target container and execs each query next to it.  Each
query (exec'd with SOCKDEBUG_SERVE=1 in the container's environment) sends the
serve process SIGUSR1; after ``idle_timeout`` seconds without one, it exits and the
container ends.  ``sockdebug-agent stop``, exec'd the same way (the plugin's ``stop``),
ends it sooner: SIGTERM to the serve process of its own container, sent after its
stream is complete (the container ends with it).  No files are written and no socket
is opened.
"""

from __future__ import annotations

import _signal  # signal without its enums: this module is imported by every run (cli.py)
import os
import time

SERVE_ENV = "SOCKDEBUG_SERVE"


def run(idle_timeout: float) -> None:
    """Sleep until no query has come for ``idle_timeout`` seconds (or SIGTERM)."""
    last = time.monotonic()

    def poke(_sig: int, _frame: object) -> None:
        nonlocal last
        last = time.monotonic()

    _signal.signal(_signal.SIGUSR1, poke)
    _signal.signal(_signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        left = idle_timeout - (time.monotonic() - last)
        if left <= 0:
            return
        time.sleep(min(left, 60.0))


def _is_serve(cmdline: bytes, comm: bytes) -> bool:
    """``[python] .../sockdebug-agent serve ...`` run by Python (not a wrapper such as
    ``timeout`` that merely has those words in its arguments)."""
    if not (comm.startswith(b"sockdebug-agen") or comm.startswith(b"python")):
        return False
    args = cmdline.split(b"\0")
    return any(a.endswith(b"sockdebug-agent") and args[i + 1:i + 2] == [b"serve"] for i, a in enumerate(args))


def _catches_sigusr1(status_path: str) -> bool:
    """Whether the process has installed its SIGUSR1 handler yet: a serve process that is
    still starting would be killed by the signal's default action."""
    with open(status_path) as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (_signal.SIGUSR1 - 1) & 1)
    return False


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _serve_pids(proc: str) -> list[int]:
    """Every serve process visible in ``proc`` (the target container's PID namespace:
    other containers' agents too), this process excepted."""
    me, found = os.getpid(), []
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if _is_serve(_read(f"{proc}/{entry}/cmdline"), _read(f"{proc}/{entry}/comm")):
                found.append(int(entry))
        except OSError:  # gone meanwhile
            continue
    return found


def keep_alive(proc: str = "/proc") -> None:
    """Tell the serve process(es) of this container that a query ran (best effort)."""
    for pid in _serve_pids(proc):
        try:
            if _catches_sigusr1(f"{proc}/{pid}/status"):
                os.kill(pid, _signal.SIGUSR1)
        except OSError:  # gone, or not ours to signal
            continue


def own_serve(proc: str = "/proc") -> list[int]:
    """The serve process(es) of this container only: the same cgroup as this process
    (an exec joins its container's cgroup; another agent container targeting the same
    container shares the PID namespace but not the cgroup).  Nothing when this
    process's cgroup cannot be read: never a guess."""
    try:
        mine = _read(f"{proc}/self/cgroup")
    except OSError:
        return []
    own = []
    for pid in _serve_pids(proc):
        try:
            if _read(f"{proc}/{pid}/cgroup") == mine:
                own.append(pid)
        except OSError:
            continue
    return own


_pending: list[int] = []


def stop_after_end(pids: list[int]) -> None:
    """Remember the serve processes ``stop`` ends once its stream is complete: ending
    the container's main process ends the container, and this exec with it."""
    _pending.extend(pids)


def send_pending() -> None:
    """SIGTERM to the serve processes ``stop`` found (serve exits 0 at once)."""
    while _pending:
        try:
            os.kill(_pending.pop(), _signal.SIGTERM)
        except OSError:  # gone already
            continue
