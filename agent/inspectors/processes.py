"""Which processes hold which sockets (``ss -p``), and which container a process is in.

Like ss, this walks every ``/proc/PID/fd`` of the agent's PID namespace and matches
``socket:[INODE]`` links.  Reading another user's fd table needs the same uid or
CAP_SYS_PTRACE; processes we may not read are counted, never silently skipped.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Collection, Iterator
from typing import Any, NamedTuple, Optional

from ..schema import Process, ProcessIds, process_json_parts, text

CAP_SYS_PTRACE = 19


class Owners:
    """Socket inode -> the processes holding it, kept small: one int per socket fd
    (the process's index << 32 | fd), a tuple of them for a socket held more than once,
    and each process's pid, comm and container once.  A node has a socket fd for every
    socket of every namespace; a Process dict per fd cost more than the dump itself."""

    __slots__ = ("_fds", "_json", "_processes")

    def __init__(self) -> None:
        self._fds: dict[int, Any] = {}
        self._processes: list[tuple[int, str, Optional[str]]] = []  #: (pid, comm, container id)
        self._json: list[tuple[str, str]] = []  #: each process's JSON around its fd

    def add(self, pid: int, comm: str, container: Optional[str], found: list[tuple[int, int]]) -> None:
        """One process and the (socket inode, fd) pairs it holds."""
        base = len(self._processes) << 32
        container = container or None
        self._processes.append((pid, comm, container))
        self._json.append(process_json_parts(pid, comm, container))
        setdefault = self._fds.setdefault
        for inode, fd in found:
            packed = base | fd
            held = setdefault(inode, packed)
            if held is not packed:  # a second holder (a forked child, SCM_RIGHTS)
                self._fds[inode] = (*held, packed) if type(held) is tuple else (held, packed)

    def __len__(self) -> int:
        return len(self._fds)

    def __contains__(self, inode: int) -> bool:
        return inode in self._fds

    def __iter__(self) -> Iterator[int]:
        """The socket inodes held by some process."""
        return iter(self._fds)

    def _packed(self, inode: int) -> tuple[int, ...]:
        held = self._fds.get(inode)
        if held is None:
            return ()
        if type(held) is int:
            return (held,)
        # ss's order: by pid, then fd
        return tuple(sorted(held, key=lambda p: (self._processes[p >> 32][0], p & 0xFFFFFFFF)))

    def get(self, inode: int, default: Optional[list[Process]] = None) -> Optional[list[Process]]:
        """The holders of a socket as ``Process`` records, or ``default`` when none is known."""
        packed = self._packed(inode)
        if not packed:
            return default
        out = []
        for p in packed:
            pid, comm, container = self._processes[p >> 32]
            entry = Process(pid=pid, comm=comm, fd=p & 0xFFFFFFFF)
            if container:
                entry["container_id"] = container
            out.append(entry)
        return out

    def json(self, inode: int) -> str:
        """``get(inode, [])`` as compact JSON, as ``json.dumps`` would write it."""
        held = self._fds.get(inode)
        if held is None:
            return "[]"
        if type(held) is int:
            head, tail = self._json[held >> 32]
            return f"[{head}{held & 0xFFFFFFFF}{tail}]"
        return "[" + ",".join(f"{self._json[p >> 32][0]}{p & 0xFFFFFFFF}{self._json[p >> 32][1]}"
                              for p in self._packed(inode)) + "]"


class OwnerScan(NamedTuple):
    owners: Owners  #: socket inode -> holders
    denied: list[int]  #: pids whose fds we may not read


def parse_comm(stat: bytes) -> str:
    """comm from the text of /proc/PID/stat: between the first '(' and the last ')'
    (a comm may itself contain ')' or spaces)."""
    return text(stat[stat.find(b"(") + 1:stat.rfind(b")")])


def parse_container_id(cgroup: str) -> Optional[str]:
    """The 64-hex container id in a /proc/PID/cgroup text (cgroupfs and systemd drivers,
    cgroup v1 and v2: ``.../<id>``, ``cri-containerd-<id>.scope``, ``docker-<id>.scope``)."""
    import re  # only -p needs it

    for line in cgroup.splitlines():
        match = re.search(r"([0-9a-f]{64})", line.rsplit(":", 1)[-1])
        if match:
            return match.group(1)
    return None


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return text(f.read())
    except OSError:
        return None


def scan_owners(proc: str = "/proc", with_containers: bool = True,
                pids: Optional[Collection[int]] = None) -> OwnerScan:
    """Map socket inodes to the processes holding them (only ``pids``, when given): one
    pass per process (its fd directory, one readlink per fd, then comm and cgroup if it
    holds a socket).  Split in short functions: see netlink._SHORT_TRY."""
    scan = OwnerScan(Owners(), [])
    try:
        entries = os.listdir(proc)
    except OSError:  # no /proc in this mount namespace: the caller warns (procfs.processes_hidden)
        return scan
    for entry in entries:
        if not entry.isdigit() or (pids is not None and int(entry) not in pids):
            continue
        found = _socket_fds(proc, entry, scan.denied)
        if found:
            _add_holder(scan.owners, proc, entry, found, with_containers)
    return scan


def _socket_fds(proc: str, entry: str, denied: list[int]) -> list[tuple[int, int]]:
    """(socket inode, fd) of each socket process ``entry`` holds; its pid goes to ``denied``
    when its fds may not be read."""
    try:
        dirfd = os.open(f"{proc}/{entry}/fd", os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError:
        denied.append(int(entry))
        return []
    except OSError as exc:  # exited meanwhile, or a kernel thread; out of fds is not silence
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise
        return []
    try:
        return _readlinks(dirfd, int(entry), denied)
    finally:
        os.close(dirfd)


def _readlinks(dirfd: int, pid: int, denied: list[int]) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    readlink = os.readlink
    try:
        for fd in os.listdir(dirfd):
            try:
                target = readlink(fd, dir_fd=dirfd)
            except PermissionError:  # listable but not readable: a more privileged process
                denied.append(pid)
                break
            except OSError:  # fd closed meanwhile
                continue
            if target.startswith("socket:["):
                found.append((int(target[8:-1]), int(fd)))
    except PermissionError:
        denied.append(pid)
    except OSError:
        pass
    return found


def _add_holder(owners: Owners, proc: str, entry: str, found: list[tuple[int, int]], with_containers: bool) -> None:
    try:
        with open(f"{proc}/{entry}/stat", "rb") as f:
            comm = parse_comm(f.read())
    except OSError:
        return  # exited between the fd walk and now
    container = None
    if with_containers:
        cgroup = read_text(f"{proc}/{entry}/cgroup")
        container = parse_container_id(cgroup) if cgroup else None
    owners.add(int(entry), comm, container, found)


def parse_ids(status: str) -> tuple[list[int], list[int]]:
    """The Uid: and Gid: lines of /proc/PID/status: real, effective, saved, filesystem."""
    uids: list[int] = []
    gids: list[int] = []
    for line in status.splitlines():
        if line.startswith("Uid:"):
            uids = [int(x) for x in line.split()[1:5]]
        elif line.startswith("Gid:"):
            gids = [int(x) for x in line.split()[1:5]]
    return uids, gids


def scan_ids(proc: str = "/proc") -> list[ProcessIds]:
    """Every other visible process's uid and gid (/proc/PID/status is world-readable: no
    privilege needed), with its container.  The plugin runs its agent as the ids of the
    target's processes when it may not add CAP_SYS_PTRACE."""
    me = os.getpid()
    out = []
    for entry in os.listdir(proc):
        if not entry.isdigit() or int(entry) == me:
            continue
        status = read_text(f"{proc}/{entry}/status")
        try:
            with open(f"{proc}/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        uids, gids = parse_ids(status or "")
        if not uids or not gids:
            continue
        cgroup = read_text(f"{proc}/{entry}/cgroup")
        out.append(ProcessIds(int(entry), parse_comm(stat), uids, gids,
                              parse_container_id(cgroup) if cgroup else None))
    return sorted(out)


def has_capability(cap: int, proc: str = "/proc") -> Optional[bool]:
    """Whether this process has ``cap`` in its effective set (None if unknown)."""
    text = read_text(f"{proc}/self/status")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return None
