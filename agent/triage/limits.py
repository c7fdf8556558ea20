"""Rules over limits and kernel counters: fds, file-max, conntrack, UDP receive buffers."""

from __future__ import annotations

from typing import Optional

from ..schema import Finding
from .common import MAX_ITEMS, TriageInput, counted, counter, endpoint, owners, pct
from .thresholds import threshold


def fd_limits(data: TriageInput) -> list[Finding]:
    out = []
    for proc in data.processes or ():
        if proc.percent_used is None or proc.percent_used < threshold("fd_limit.warning"):
            continue
        critical = proc.percent_used >= threshold("fd_limit.critical")
        can_raise = (proc.fd_hard_limit is None or proc.fd_soft_limit is None
                     or proc.fd_hard_limit > proc.fd_soft_limit)
        out.append(Finding(
            id="fd-limit-near",
            severity="critical" if critical else "warning",
            title=f"{proc.comm} (pid {proc.pid}) uses {proc.open_fds} of its {proc.fd_soft_limit} file "
                  f"descriptors ({proc.percent_used}%)",
            evidence={"pid": proc.pid, "comm": proc.comm, "open_fds": proc.open_fds,
                      "fd_soft_limit": proc.fd_soft_limit, "fd_hard_limit": proc.fd_hard_limit,
                      "percent_used": proc.percent_used, "container_id": proc.container_id},
            explanation=(
                "Every socket, file, pipe and epoll instance is a file descriptor, and the process may "
                "hold at most its RLIMIT_NOFILE soft limit (`ulimit -n`). At the limit accept(), "
                "connect() and open() fail with EMFILE 'Too many open files': a server stops taking "
                "new connections while old ones keep working, and its accept queue fills. Either the "
                "load needs more descriptors, or they leak (CLOSE-WAIT sockets, files never closed)."),
            next_step=(
                f"See what they are: `ls -l /proc/{proc.pid}/fd | awk '{{print $NF}}' | cut -d: -f1 | sort "
                "| uniq -c`; if the count grows under steady load it is a leak. To raise the limit: "
                "the container runtime's default (LimitNOFILE of containerd/dockerd) or `ulimit -n` in "
                "the entrypoint"
                + (f" — the process itself may raise its soft limit up to the hard limit "
                   f"({proc.fd_hard_limit})." if can_raise and proc.fd_hard_limit else ".")),
        ))
    out.sort(key=lambda f: -f.evidence["percent_used"])
    return out


def _fill_level(id_: str, rule: str, count: Optional[int], maximum: Optional[int], title: str,
                count_key: str, max_key: str, explanation: str, next_step: str) -> list[Finding]:
    """A table or pool filling up against its cap: warning/critical at the ``rule``'s
    thresholds; nothing when either figure is absent."""
    if count is None or not maximum:
        return []
    ratio = count / maximum
    if ratio < threshold(f"{rule}.warning"):
        return []
    return [Finding(
        id=id_, severity="critical" if ratio >= threshold(f"{rule}.critical") else "warning",
        title=title.format(count=count, maximum=maximum, pct=pct(ratio)),
        evidence={count_key: count, max_key: maximum, "percent": pct(ratio)},
        explanation=explanation, next_step=next_step,
    )]


def file_max(data: TriageInput) -> list[Finding]:
    if data.limits is None:
        return []
    return _fill_level(
        "file-max-near", "file_max", data.limits.system.get("file_handles_allocated"),
        data.limits.system.get("file_max"),
        "{count} of {maximum} file handles allocated system-wide ({pct}% of fs.file-max)",
        "file_handles_allocated", "file_max",
        "fs.file-max caps the open files of every process and container on the node together. At "
        "the cap any open() or socket() on the node fails with ENFILE 'Too many open files in "
        "system', whichever process asks.",
        "On the node, find the biggest holders: `for p in /proc/[0-9]*; do echo $(ls $p/fd 2>/dev/null "
        "| wc -l) $p; done | sort -rn | head`; raise fs.file-max on the node if the load is legitimate.")


def conntrack(data: TriageInput) -> list[Finding]:
    if data.limits is None:
        return []
    return _fill_level(
        "conntrack-near-max", "conntrack", data.limits.netns.get("conntrack_count"),
        data.limits.netns.get("conntrack_max"), "conntrack table at {count} of {maximum} entries ({pct}%)",
        "conntrack_count", "conntrack_max",
        "The connection-tracking table backs NAT, kube-proxy's Service routing and stateful "
        "firewalls. When it is full the kernel drops packets that would need a new entry: new "
        "connections time out at random and dmesg says 'nf_conntrack: table full, dropping packet'. "
        "Inside a pod the count covers only this namespace while the maximum is the node's shared "
        "table, so the node may be fuller than this shows.",
        "On the node: `conntrack -C` and `conntrack -S` (drops, insert_failed); find who creates so "
        "many flows with `conntrack -L | awk '{print $5}' | sort | uniq -c | sort -rn | head`; raise "
        "net.netfilter.nf_conntrack_max (kube-proxy --conntrack-max-per-core).")


def udp_rcvbuf_errors(data: TriageInput) -> list[Finding]:
    errors = counter(data.limits, "Udp", "RcvbufErrors")
    if errors is None or errors < threshold("udp_rcvbuf.warning"):
        return []
    suspects = []
    for sock in data.sockets or ():
        if sock.netid != "udp":
            continue
        drops = (sock.skmem or {}).get("drops", 0)
        if sock.recv_q > 0 or drops:
            suspects.append({"local": endpoint(sock.local_address, sock.local_port), "recv_q": sock.recv_q,
                             "drops": drops if sock.skmem else None,
                             "rcvbuf": (sock.skmem or {}).get("rcvbuf"), "processes": owners([sock])})
    suspects.sort(key=lambda s: (-(s["drops"] or 0), -s["recv_q"]))
    return [Finding(
        id="udp-rcvbuf-errors",
        severity="warning",
        title=f"{counted(errors, 'UDP datagram')} dropped because a receive buffer was full (Udp RcvbufErrors)",
        evidence={"RcvbufErrors": errors, "InErrors": counter(data.limits, "Udp", "InErrors"),
                  "InDatagrams": counter(data.limits, "Udp", "InDatagrams"),
                  "sockets": suspects[:MAX_ITEMS]},
        explanation=(
            "The kernel threw away incoming UDP datagrams because the receiving socket's buffer was full: "
            "the application does not read as fast as datagrams arrive, or its buffer is small. UDP does "
            "not retransmit, so that data is gone (DNS queries time out, metrics and logs have gaps). The "
            "counter is cumulative since this namespace was created."),
        next_step=(
            "`ss -uamp` (sockdebug: `sockets -uamp`) shows Recv-Q and the drops of each socket; read faster "
            "(more workers, a bigger batch per recv), or raise SO_RCVBUF (capped by net.core.rmem_max on "
            "the node)."),
    )]
