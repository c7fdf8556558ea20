"""``sockdebug-agent pods``: every pod network namespace of this node, each inspected once.

Run in the node's PID namespace (a hostPID pod, or on the node itself) as root with
CAP_SYS_PTRACE (to read other processes' ``/proc/PID/ns/net`` and fds), CAP_DAC_READ_SEARCH
(to list the ``/proc/PID/fd`` directory of another uid: without it or CAP_DAC_OVERRIDE
root may not) and CAP_SYS_ADMIN (``setns``).  Processes are grouped by the pod UID in their cgroup path
(``/proc/PID/cgroup``):

- cgroupfs driver: ``.../kubepods/besteffort/pod<uid>/<container id>``
- systemd driver:  ``.../kubepods-besteffort-pod<uid with _ for ->.slice/cri-containerd-<id>.scope``
- inside a cgroup namespace the paths are relative (``/../pod<uid>/<id>``), the pod
  segment is still there.

Then, per distinct network namespace (the node's own first: hostNetwork pods and the
node's daemons live there), one ``netns`` record naming the pods whose processes are in
it, followed by that namespace's socket records; owners come from one walk of every
process's fds, so a socket in a pod's namespace is attributed to its container id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import NamedTuple, Optional

from ..errors import NamespaceError
from ..namespaces import enter
from ..schema import NetNs, Socket, Warning
from .processes import Owners, read_text, scan_owners

# A whole path component naming the pod: "pod<uid>" (cgroupfs) or "kubepods[-qos]-pod<uid>.slice" (systemd).
_POD_SEGMENT = re.compile(
    r"(?:^|/)(?:kubepods-(?:besteffort-|burstable-|guaranteed-)?)?pod"
    r"([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?=/|$)")


class NsGroup(NamedTuple):
    inode: int
    host: bool
    pod_uids: list[str]
    pids: list[int]


def parse_pod_uid(cgroup: str) -> Optional[str]:
    """The pod UID in a /proc/PID/cgroup text (any hierarchy line that names one)."""
    for line in cgroup.splitlines():
        match = _POD_SEGMENT.search(line.split(":", 2)[-1])
        if match:
            return match.group(1).replace("_", "-")
    return None


def host_netns(proc: str = "/proc") -> Optional[int]:
    """The node's own network namespace: pid 1's; where pid 1 cannot be read (a sandboxed
    init), the kubelet's or the container runtime's."""
    try:
        return os.stat(f"{proc}/1/ns/net").st_ino
    except OSError:
        pass
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        comm = read_text(f"{proc}/{entry}/comm")
        if comm and comm.strip() in ("kubelet", "containerd", "crio", "k3s-server", "k3s-agent"):
            try:
                return os.stat(f"{proc}/{entry}/ns/net").st_ino
            except OSError:
                continue
    return None


def scan(proc: str = "/proc") -> tuple[list[NsGroup], list[int]]:
    """Network namespaces of every visible process, with the pods in each; and the pids
    whose namespace could not be read (no CAP_SYS_PTRACE)."""
    host_inode = host_netns(proc)
    groups: dict[int, tuple[set[str], list[int]]] = {}
    denied: list[int] = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            inode = os.stat(f"{proc}/{entry}/ns/net").st_ino
        except PermissionError:
            if pid != 1:  # the node's init holds no pod; host_netns() has another way in
                denied.append(pid)
            continue
        except OSError:  # exited meanwhile, or a kernel thread without one
            continue
        text = read_text(f"{proc}/{entry}/cgroup")
        uid = parse_pod_uid(text) if text else None
        pods, pids = groups.setdefault(inode, (set(), []))
        if uid:
            pods.add(uid)
        pids.append(pid)
    out = [NsGroup(inode, inode == host_inode, sorted(pods), sorted(pids)) for inode, (pods, pids) in groups.items()
           if pods or inode == host_inode]
    out.sort(key=lambda g: (not g.host, g.pod_uids, g.inode))
    return out, denied


def _enter_one(group: NsGroup, proc: str) -> Optional[str]:
    """Enter the group's namespace through the first of its processes still there."""
    error = "no process left in it"
    for pid in group.pids:
        try:
            if os.stat(f"{proc}/{pid}/ns/net").st_ino != group.inode:
                continue
            enter(f"{proc}/{pid}/ns/net")
            return None
        except NamespaceError as exc:
            error = exc.message
        except OSError as exc:
            error = f"{pid}: {exc.strerror}"
    return error


def collect(read_sockets: Callable[[], list[Socket]], processes: bool,
            warn: Callable[[Warning], None], proc: str = "/proc") -> Iterator[tuple[NetNs, list[Socket]]]:
    """(netns record, its sockets) per network namespace that holds a pod (and the node's
    own).  ``read_sockets`` lists the sockets of the current namespace; with ``processes``
    each socket gets its owners from one walk of every process's fds."""
    groups, owners = _survey(processes, warn, proc)
    try:
        own: Optional[int] = os.open(f"{proc}/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        own = None
    try:  # kept short: see netlink._SHORT_TRY
        yield from _inspect(groups, read_sockets, owners, proc)
    finally:
        if own is not None:
            _go_home(own, proc)


def _survey(processes: bool, warn: Callable[[Warning], None], proc: str) -> tuple[list[NsGroup], Optional[Owners]]:
    """The namespaces to inspect, and the owners of every socket (with ``processes``)."""
    groups, denied = scan(proc)
    owners = None
    if processes:
        owner_scan = scan_owners(proc)
        owners = owner_scan.owners
        if owner_scan.denied:
            warn(Warning("process-attribution-denied",
                         f"could not read the open files of {len(owner_scan.denied)} processes: sockets they hold "
                         "show no owner (run as root with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)",
                         len(owner_scan.denied)))
    if denied:
        warn(Warning("netns-denied", f"could not read the network namespace of {len(denied)} processes "
                     "(CAP_SYS_PTRACE missing?): their pods may be missing", len(denied)))
    if not any(g.pod_uids for g in groups):
        warn(Warning("no-pods", "no process of any pod is visible: run in the node's PID namespace "
                     "(hostPID) as root"))
    return groups, owners


def _inspect(groups: list[NsGroup], read_sockets: Callable[[], list[Socket]], owners: Optional[Owners],
             proc: str) -> Iterator[tuple[NetNs, list[Socket]]]:
    for group in groups:
        error = _enter_one(group, proc)
        record = NetNs(netns_inode=group.inode, host=group.host, pod_uids=group.pod_uids,
                       pids=len(group.pids), error=error)
        if error is not None:
            yield record, []
            continue
        socks = read_sockets()
        if owners is not None:
            socks = [s._replace(processes=owners.get(s.inode, []) if s.inode else []) for s in socks]
        yield record, socks


def _go_home(own: int, proc: str) -> None:
    try:
        enter(f"{proc}/self/fd/{own}")  # back home
    except NamespaceError:
        pass
    os.close(own)
