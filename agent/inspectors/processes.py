"""Which processes hold which sockets (``ss -p``), and which container a process is in.

Like ss, this walks every ``/proc/PID/fd`` of the agent's PID namespace and matches
``socket:[INODE]`` links.  Reading another user's fd table needs the same uid or
CAP_SYS_PTRACE; processes we may not read are counted, never silently skipped.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Collection
from typing import NamedTuple, Optional

from ..schema import Process, ProcessIds, text

CAP_SYS_PTRACE = 19


class OwnerScan(NamedTuple):
    owners: dict[int, list[Process]]  #: socket inode -> holders
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
    """Map socket inodes to the processes holding them (only ``pids``, when given)."""
    scan = OwnerScan({}, [])
    owners = scan.owners
    readlink, listdir = os.readlink, os.listdir
    try:
        entries = os.listdir(proc)
    except OSError:  # no /proc in this mount namespace: the caller warns (procfs.processes_hidden)
        return scan
    for entry in entries:
        if not entry.isdigit() or (pids is not None and int(entry) not in pids):
            continue
        pid = int(entry)
        try:
            dirfd = os.open(f"{proc}/{entry}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except PermissionError:
            scan.denied.append(pid)
            continue
        except OSError as exc:  # exited meanwhile, or a kernel thread; out of fds is not silence
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise
            continue
        found: list[tuple[int, int]] = []
        try:
            for fd in listdir(dirfd):
                try:
                    target = readlink(fd, dir_fd=dirfd)
                except PermissionError:  # listable but not readable: a more privileged process
                    scan.denied.append(pid)
                    break
                except OSError:  # fd closed meanwhile
                    continue
                if target.startswith("socket:["):
                    found.append((int(target[8:-1]), int(fd)))
        except PermissionError:
            scan.denied.append(pid)
        except OSError:
            pass
        finally:
            os.close(dirfd)
        if not found:
            continue
        try:
            with open(f"{proc}/{entry}/stat", "rb") as f:
                comm = parse_comm(f.read())
        except OSError:
            continue  # exited between the fd walk and now
        container = None
        if with_containers:
            text = read_text(f"{proc}/{entry}/cgroup")
            container = parse_container_id(text) if text else None
        for inode, fd in found:
            entry_ = Process(pid=pid, comm=comm, fd=fd)
            if container:
                entry_["container_id"] = container
            owners.setdefault(inode, []).append(entry_)
    for holders in owners.values():
        holders.sort(key=lambda p: (p["pid"], p["fd"]))
    return scan


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
