"""File-descriptor limits and kernel-pressure figures (``ulimit -n``, ``lsof | wc -l``,
``sysctl``, ``/proc/net/{netstat,snmp}``).

Pure parsers (text in, numbers out) first, then the readers.  A figure this kernel or
network namespace does not have is None (``null`` on the wire), never 0: conntrack
files exist only with nf_conntrack loaded, some counters only on newer kernels.

/proc/sys/net and /proc/net follow the network namespace of the reading thread, so
after ``--netns`` these are the figures of the inspected namespace; /proc/sys/fs is
system-wide.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

from ..schema import Limits, ProcessLimits
from .counters import parse_counter_pairs, read_optional
from .processes import parse_comm, parse_container_id, read_text

PF_KTHREAD = 0x00200000

# Counters an on-call engineer watches, by /proc/net/{netstat,snmp} group.  Names
# ending in "*" take every counter of the group with that prefix.
COUNTERS: dict[str, tuple[str, ...]] = {
    "TcpExt": ("ListenOverflows", "ListenDrops", "TCPTimeWaitOverflow", "TCPBacklogDrop",
               "TCPReqQFullDrop", "TCPReqQFullDoCookies", "SyncookiesSent", "SyncookiesRecv",
               "SyncookiesFailed", "TCPAbortOnData", "TCPAbortOnClose", "TCPAbortOnMemory",
               "TCPAbortOnTimeout", "TCPAbortOnLinger", "TCPAbortFailed", "TCPMemoryPressures",
               "PruneCalled", "TW", "TCPSynRetrans", "Syncookies*", "TCPAbortOn*"),
    "Tcp": ("CurrEstab", "ActiveOpens", "PassiveOpens", "AttemptFails", "EstabResets", "RetransSegs",
            "OutSegs", "InErrs", "OutRsts"),
    "Udp": ("InDatagrams", "RcvbufErrors", "SndbufErrors", "NoPorts", "InErrors"),
}

# (key, path) of the per-namespace sysctls reported as plain integers.
NETNS_SYSCTLS = (
    ("somaxconn", "/proc/sys/net/core/somaxconn"),
    ("tcp_max_syn_backlog", "/proc/sys/net/ipv4/tcp_max_syn_backlog"),
    ("tcp_max_tw_buckets", "/proc/sys/net/ipv4/tcp_max_tw_buckets"),
    ("tcp_fin_timeout", "/proc/sys/net/ipv4/tcp_fin_timeout"),
    ("tcp_syncookies", "/proc/sys/net/ipv4/tcp_syncookies"),
    ("tcp_tw_reuse", "/proc/sys/net/ipv4/tcp_tw_reuse"),
    ("conntrack_count", "/proc/sys/net/netfilter/nf_conntrack_count"),
    ("conntrack_max", "/proc/sys/net/netfilter/nf_conntrack_max"),
)


# --- pure parsers -------------------------------------------------------------------

def parse_int(text: Optional[str]) -> Optional[int]:
    """A sysctl holding one integer; None when absent or not a number."""
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def parse_file_nr(text: Optional[str]) -> tuple[Optional[int], Optional[int], Optional[int]]:
    """/proc/sys/fs/file-nr: ``allocated  free  max``."""
    if text is None:
        return None, None, None
    try:
        allocated, free, maximum = (int(w) for w in text.split()[:3])
    except ValueError:
        return None, None, None
    return allocated, free, maximum


def parse_port_range(text: Optional[str]) -> Optional[tuple[int, int]]:
    """ip_local_port_range: ``low<TAB>high``."""
    if text is None:
        return None
    try:
        low, high = (int(w) for w in text.split()[:2])
    except ValueError:
        return None
    return low, high


def parse_nofile(text: str) -> tuple[Optional[int], Optional[int]]:
    """(soft, hard) of the ``Max open files`` line of /proc/PID/limits; None = unlimited.
    Raises ValueError when the line is missing."""
    for line in text.splitlines():
        if line.startswith("Max open files"):
            words = line[len("Max open files"):].split()
            if len(words) < 2:
                break
            return tuple(None if w == "unlimited" else int(w) for w in words[:2])  # type: ignore[return-value]
    raise ValueError("no 'Max open files' line in the limits text")


def is_kernel_thread(stat: bytes) -> bool:
    """PF_KTHREAD in the flags field (the 9th) of /proc/PID/stat."""
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return bool(int(fields[6]) & PF_KTHREAD)
    except (IndexError, ValueError):
        return False


def percent(used: Optional[int], limit: Optional[int]) -> Optional[float]:
    if used is None or not limit:
        return None
    return round(used * 100.0 / limit, 1)


def pick_counters(groups: dict[str, dict[str, int]]) -> dict[str, dict[str, Optional[int]]]:
    """The watched counters of COUNTERS; a name this kernel lacks is None."""
    out: dict[str, dict[str, Optional[int]]] = {}
    for group, names in COUNTERS.items():
        have = groups.get(group, {})
        picked: dict[str, Optional[int]] = {}
        for name in names:
            if name.endswith("*"):
                picked.update((k, v) for k, v in have.items() if k.startswith(name[:-1]))
            else:
                picked[name] = have.get(name)
        out[group] = picked
    return out


def local_ports_in_use(sockets: Iterable[Any], port_range: Optional[tuple[int, int]]
                       ) -> Optional[dict[str, int]]:
    """Distinct local ports inside the ephemeral range held by TCP / UDP sockets (any
    state: TIME-WAIT and listeners hold theirs too)."""
    if port_range is None:
        return None
    low, high = port_range
    ports: dict[str, set[int]] = {"tcp": set(), "udp": set()}
    for sock in sockets:
        held = ports.get(sock.netid)
        if held is not None and low <= sock.local_port <= high:
            held.add(sock.local_port)
    return {netid: len(held) for netid, held in ports.items()}


def build_limits(file_nr: Optional[str], file_max: Optional[str], nr_open: Optional[str],
                 sysctls: dict[str, Optional[str]], port_range: Optional[str],
                 netstat: Optional[str], snmp: Optional[str],
                 sockets: Optional[Iterable[Any]]) -> Limits:
    """The ``limits`` record from the raw texts (None where a file is missing)."""
    allocated, free, maximum = parse_file_nr(file_nr)
    system: dict[str, Optional[int]] = {
        "file_handles_allocated": allocated,
        "file_handles_free": free,
        "file_max": parse_int(file_max) if file_max is not None else maximum,
        "nr_open": parse_int(nr_open),
    }
    ports = parse_port_range(port_range)
    netns: dict[str, Any] = {key: parse_int(sysctls.get(key)) for key, _path in NETNS_SYSCTLS}
    netns["ip_local_port_range"] = list(ports) if ports else None
    netns["local_ports_in_use"] = local_ports_in_use(sockets, ports) if sockets is not None else None
    groups: dict[str, dict[str, int]] = {}
    for text in (netstat, snmp):
        if text:
            try:
                groups.update(parse_counter_pairs(text))
            except ValueError:
                pass
    return Limits(system=system, netns=netns, counters=pick_counters(groups))


# --- readers ------------------------------------------------------------------------

def collect_limits(sockets: Optional[Iterable[Any]]) -> Limits:
    """System, network-namespace and counter figures of the current namespace.
    ``sockets``: the TCP/UDP sockets of this namespace (for ports in use), or None."""
    return build_limits(
        read_optional("/proc/sys/fs/file-nr"), read_optional("/proc/sys/fs/file-max"),
        read_optional("/proc/sys/fs/nr_open"),
        {key: read_optional(path) for key, path in NETNS_SYSCTLS},
        read_optional("/proc/sys/net/ipv4/ip_local_port_range"),
        read_optional("/proc/net/netstat"), read_optional("/proc/net/snmp"), sockets,
    )


@dataclass
class ProcessScan:
    records: list[ProcessLimits] = field(default_factory=list)
    denied: list[int] = field(default_factory=list)  #: pids whose fds or namespace we may not read


def _netns_inode(proc: str, pid: str) -> Optional[int]:
    return os.stat(f"{proc}/{pid}/ns/net").st_ino


def read_stat(pid: int, proc: str = "/proc") -> Optional[bytes]:
    """/proc/PID/stat (readable by anyone); None when the process exited."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            return f.read()
    except OSError:
        return None


def read_process_limits(pid: int, proc: str = "/proc", stat: Optional[bytes] = None) -> Optional[ProcessLimits]:
    """One process's fd count and RLIMIT_NOFILE; None for kernel threads and processes
    that exited.  Raises PermissionError when its fds may not be listed."""
    base = f"{proc}/{pid}"
    if stat is None:
        stat = read_stat(pid, proc)
    if stat is None or is_kernel_thread(stat):
        return None
    try:
        open_fds: Optional[int] = len(os.listdir(f"{base}/fd"))
    except FileNotFoundError:
        return None
    soft = hard = None
    text = read_text(f"{base}/limits")
    if text is not None:
        try:
            soft, hard = parse_nofile(text)
        except ValueError:
            pass
    cgroup = read_text(f"{base}/cgroup")
    return ProcessLimits(pid=pid, comm=parse_comm(stat), open_fds=open_fds, fd_soft_limit=soft,
                         fd_hard_limit=hard, percent_used=percent(open_fds, soft),
                         container_id=parse_container_id(cgroup) if cgroup else None)


def collect_process_limits(proc: str = "/proc", all_netns: bool = False) -> ProcessScan:
    """ProcessLimits of every process in the current network namespace (or in any, with
    ``all_netns``), in pid order.  Processes we may not inspect are listed in ``denied``;
    kernel threads are not processes with fds, and are skipped before anything is denied."""
    scan = ProcessScan()
    try:
        own_netns = os.stat(f"{proc}/self/ns/net").st_ino
        pids = sorted(int(e) for e in os.listdir(proc) if e.isdigit())
    except OSError:  # no /proc here: the caller says so (procfs)
        return scan
    for pid in pids:
        stat = read_stat(pid, proc)
        if stat is None or is_kernel_thread(stat):
            continue
        try:
            if not all_netns and _netns_inode(proc, str(pid)) != own_netns:
                continue
            record = read_process_limits(pid, proc, stat)
        except PermissionError:
            scan.denied.append(pid)
            continue
        except OSError as exc:  # exited meanwhile; out of fds is not silence
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise
            continue
        if record is not None:
            scan.records.append(record)
    return scan
