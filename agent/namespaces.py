"""Entering a network namespace by name, path or pid, before any socket is opened.

Only the network namespace changes (like ``nsenter --net``): /proc still shows the
agent's own PID namespace, so ``-p`` attributes sockets to processes visible there
(on the host: all of them).
"""

from __future__ import annotations

import os
from typing import Optional

from .errors import NamespaceError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


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


def enter(path: str) -> None:
    """Switch this (single-threaded) process into the network namespace at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NamespaceError(f"no network namespace at {path}",
                             "--netns takes an `ip netns list` name or an nsfs path; "
                             "--target-pid a running pid") from None
    except PermissionError:
        raise NamespaceError(f"may not open {path}",
                             "run as root (CAP_SYS_ADMIN and CAP_SYS_PTRACE)") from None
    try:
        _setns(fd)
    except OSError as exc:
        hint = "entering a network namespace needs CAP_SYS_ADMIN (run as root)"
        if exc.errno == 22:  # EINVAL: not a network namespace file
            hint = "that path is not a network namespace (nsfs) file"
        raise NamespaceError(f"cannot enter the network namespace {path}: {exc.strerror}", hint) from None
    finally:
        os.close(fd)


def inode(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
