"""What the process itself can run into, turned into the shared errors (errors.py).

The CLI's edge calls ``classify`` on whatever ended a run: out of memory under
RLIMIT_AS, no thread under RLIMIT_NPROC, no fd under RLIMIT_NOFILE, SIGINT, unusable
kernel data, or a bug.  Each becomes one error with a cause that names the limit and a
hint, never a traceback.  Also here: keeping fds 0-2 taken when the agent was started
with one closed, and the stderr line that must never fail.
"""

from __future__ import annotations

import errno
import os
from typing import Optional

try:  # now: under RLIMIT_AS, loading the module when memory has run out fails too
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

from .errors import Interrupted, KernelError, OutputError, ResourceError, SockdebugError
from .netlink import NetlinkError, ProtocolError
from .schema import escape

_WHY = {
    errno.EBADF: "stdout is closed or not open for writing",
    errno.ENOSPC: "stdout is full (no space left on its device)",
    errno.EPIPE: "stdout is a broken pipe: its reader went away",
}


def output_error(exc: OSError, what: str = "stdout") -> OutputError:
    why = _WHY.get(exc.errno or 0) or f"cannot write to stdout ({exc.strerror})"
    return OutputError(why.replace("stdout", what, 1) + ": the stream is incomplete",
                       "give the agent a working stdout (a pipe or file that is read to its end)")


def reserve_std_fds() -> set[int]:
    """The standard fds that were closed at start, now each holding /dev/null.

    Otherwise the next file opened (a namespace, a netlink socket) would take number 1,
    and records would be written into it."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        try:
            null = os.open(os.devnull, os.O_RDWR)
        except OSError:  # no /dev: nothing better to do
            break
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    return closed


def silence_stdout() -> None:
    """After a failed write to stdout: point fd 1 at /dev/null, so nothing (Python's exit
    flush of ``sys.stdout`` included) tries again and prints an "Exception ignored"."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    os.dup2(null, 1)
    os.close(null)


def ignore_unraisable(_unraisable: object) -> None:
    """``sys.unraisablehook``: an exception in a finaliser (a generator closed while memory
    or stdout has run out) changes nothing the run's error record does not already say."""


def stderr_line(line: str) -> None:
    """One line on stderr, escaped for a terminal by the one rule (schema.escape); a stderr
    that is gone is ignored."""
    data = (escape(line) + "\n").encode("utf-8", "backslashreplace")
    try:
        while data:
            data = data[os.write(2, data):]
    except OSError:
        pass


def _rlimit(name: str) -> Optional[int]:
    """The soft limit RLIMIT_<name> of this process; None when unlimited or unknown."""
    if resource is None:
        return None
    soft, _hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))
    return None if soft == resource.RLIM_INFINITY else soft


def _mib(n: int) -> str:
    return f"{n // (1 << 20)} MiB"


def out_of_memory() -> ResourceError:
    limits = [f"RLIMIT_{name} = {_mib(v)}" for name in ("AS", "DATA") if (v := _rlimit(name)) is not None]
    if limits:
        cause = f"out of memory under this process's limit {' and '.join(limits)} (ulimit -v)"
        hint = "raise it (ulimit -v, prlimit --as) or ask for less: -t/-u/-x, a state, a filter, no -p/-i/-m"
    else:
        cause = "out of memory: no RLIMIT_AS is set, so the machine or this container's memory cgroup is full"
        hint = "give the container more memory, or ask for less: -t/-u/-x, a state, a filter, no -p/-i/-m"
    return ResourceError(cause, hint)


def no_thread() -> ResourceError:
    nproc = _rlimit("NPROC")
    under = f"RLIMIT_NPROC = {nproc} (ulimit -u)" if nproc is not None else "the pids cgroup or memory"
    return ResourceError(f"could not start a thread: no processes or threads left under {under}",
                         "raise the limit (ulimit -u, prlimit --nproc, the container's pids limit)")


def os_resource(exc: OSError) -> Optional[ResourceError]:
    """The resource error an OSError stands for, or None if it is not about a limit."""
    if exc.errno == errno.EMFILE:
        nofile = _rlimit("NOFILE")
        return ResourceError(f"no file descriptor left under RLIMIT_NOFILE = {nofile} (ulimit -n)",
                             "raise it (ulimit -n, prlimit --nofile): the agent needs 5 at least")
    if exc.errno == errno.ENFILE:
        return ResourceError("the system's file table is full (fs.file-max)",
                             "close files elsewhere, or raise fs.file-max")
    if exc.errno in (errno.ENOMEM, errno.ENOBUFS):
        return out_of_memory()
    return None


def classify(exc: BaseException) -> SockdebugError:
    """The shared error for whatever ended a run."""
    if isinstance(exc, SockdebugError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted("interrupted (SIGINT): the records before this one are complete, the rest is missing",
                           "run again without interrupting it; narrow it with -t/-u/-x, a state or a filter")
    if isinstance(exc, MemoryError):
        return out_of_memory()
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return no_thread()
    if isinstance(exc, OSError) and (resource := os_resource(exc)) is not None:
        return resource
    if isinstance(exc, (NetlinkError, ProtocolError)):
        return KernelError(f"the kernel's netlink or /proc answer could not be used: {exc}",
                           "run again; if it persists, report it with `uname -r` and the command line")
    internal = SockdebugError(f"{type(exc).__name__}: {exc}", "please report this with the command line and `uname -r`")
    internal.code = "internal"
    return internal
