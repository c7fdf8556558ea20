"""Entering a network namespace by name, path or pid, before any socket is opened.

Only the network namespace changes (like ``nsenter --net``): /proc still shows the
agent's own PID namespace, so ``-p`` attributes sockets to processes visible there
(on the host: all of them).

The path is opened without blocking (a FIFO would otherwise wait for a writer for
ever) and must be an nsfs file of a network namespace (``NS_GET_NSTYPE``) before
``setns`` is tried; every way a path can be wrong is a ``namespace`` error with a hint.
"""

from __future__ import annotations

import errno
import os
from typing import Optional

from .errors import NamespaceError
from .schema import text

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), Linux >= 4.11
_NS_TYPES = {0x00020000: "mount", 0x02000000: "cgroup", 0x04000000: "UTS", 0x08000000: "IPC",
             0x10000000: "user", 0x20000000: "PID", 0x00000080: "time"}
_SHOWN = 120  # characters of a path a message shows, at most

_USE = "--netns takes an `ip netns list` name or an nsfs path such as /proc/PID/ns/net"
_NOT_NS = {
    errno.ENOENT: ("no network namespace at {path}", f"{_USE}; --target-pid a running pid"),
    errno.ENOTDIR: ("no network namespace at {path}: a part of it is not a directory", _USE),
    errno.ENAMETOOLONG: ("no network namespace at {path}: the path is too long", _USE),
    errno.ELOOP: ("no network namespace at {path}: too many symbolic links", _USE),
    errno.ENXIO: ("{path} is a unix socket or device without a reader, not a network namespace", _USE),
    errno.EACCES: ("may not open {path}", "run as root (CAP_SYS_ADMIN and CAP_SYS_PTRACE)"),
    errno.EPERM: ("may not open {path}", "run as root (CAP_SYS_ADMIN and CAP_SYS_PTRACE)"),
}


def shown(path: str) -> str:
    """``path`` for a message: escaped, and abbreviated in the middle when long."""
    safe = text(path)
    if len(safe) <= _SHOWN:
        return safe
    return f"{safe[:60]}...({len(safe) - 100} characters)...{safe[-40:]}"


def netns_path(netns: Optional[str] = None, target_pid: Optional[int] = None) -> Optional[str]:
    """`ip netns` name -> /run/netns/NAME; a path stays a path; a pid -> /proc/PID/ns/net."""
    if target_pid is not None:
        return f"/proc/{target_pid}/ns/net"
    if netns is None:
        return None
    return netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    import ctypes  # only on this path: costs a few ms of start-up

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _check_netns(fd: int, path: str) -> None:
    """Raise unless ``fd`` is a network namespace's nsfs file."""
    import fcntl

    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):  # not nsfs: a file, a directory, a FIFO, ...
            import stat

            what = _describe(os.fstat(fd).st_mode, stat)
            raise NamespaceError(f"{shown(path)} is {what}, not a network namespace",
                                 f"{_USE} (`ls -l /proc/PID/ns/` shows them)") from None
        return  # an older kernel without NS_GET_NSTYPE: setns will judge
    if kind != CLONE_NEWNET:
        raise NamespaceError(f"{shown(path)} is a {_NS_TYPES.get(kind, hex(kind))} namespace, not a network one",
                             "give the `net` file: /proc/PID/ns/net or an `ip netns` name")


def _describe(mode: int, stat) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISREG, "a regular file"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not an nsfs file"


def enter(path: str) -> None:
    """Switch this (single-threaded) process into the network namespace at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        cause, hint = _NOT_NS.get(exc.errno or 0, ("cannot open {path}: " + (exc.strerror or str(exc)), _USE))
        raise NamespaceError(cause.format(path=shown(path)), hint) from None
    try:
        _check_netns(fd, path)
        _setns(fd)
    except OSError as exc:
        hint = "entering a network namespace needs CAP_SYS_ADMIN (run as root)"
        if exc.errno == errno.EINVAL:  # not a network namespace file
            hint = "that path is not a network namespace (nsfs) file"
        raise NamespaceError(f"cannot enter the network namespace {shown(path)}: {exc.strerror}", hint) from None
    finally:
        os.close(fd)


def inode(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
