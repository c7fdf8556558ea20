"""Triage: the records of one run in, ``Finding`` records out, most severe first.

Every rule is a pure function of ``TriageInput`` (no I/O), so the unit tests feed it
constructed records.  Every number a rule compares against lives in ``THRESHOLDS``
with the reason for its value; docs/triage.md lists the same table (a unit test keeps
the two in step).  A part that was not collected is None, and the rules that need it
say nothing rather than guess.

Findings are written for the person paged at 3 a.m.: what the state means, the usual
cause, and the next command to run.  Commands are given as ``ss`` / ``ip`` would be
typed inside the pod, with the sockdebug equivalent where there is one.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from .schema import SEVERITIES, Finding, Interface, Limits, ProcessLimits, Route, Socket, Summary


@dataclass(frozen=True)
class Threshold:
    value: float
    unit: str
    reason: str


THRESHOLDS: dict[str, Threshold] = {
    "close_wait.warning": Threshold(
        10, "CLOSE-WAIT sockets held by one process",
        "A correct program leaves CLOSE-WAIT within microseconds (it reads EOF and closes); several at "
        "once in one process only happen when close() is not being called. 10 tolerates a burst of "
        "peers closing while a busy server is between read() and close()."),
    "close_wait.critical": Threshold(
        100, "CLOSE-WAIT sockets held by one process",
        "At this count the leak is established and each one is an fd: at a typical 1024 soft limit the "
        "process is a tenth of the way to EMFILE."),
    "accept_queue.warning": Threshold(
        0.8, "fraction of the listen backlog (Recv-Q / Send-Q of a LISTEN socket)",
        "A queue 80% full leaves room for a burst of only a fifth of the backlog before the kernel "
        "starts dropping handshakes."),
    "accept_queue.min_backlog": Threshold(
        10, "backlog below which only a full queue is reported",
        "With a tiny backlog 80% is one or two connections, which a healthy server can have queued "
        "for an instant; only report those when actually full."),
    "accept_queue.critical": Threshold(
        1.0, "fraction of the listen backlog",
        "Recv-Q at the backlog: the next connection makes the queue overflow and the kernel drops "
        "SYNs and final ACKs (sk_acceptq_is_full)."),
    "listen_overflows.warning": Threshold(
        1, "TcpExt ListenOverflows or ListenDrops since the namespace was created",
        "Any non-zero value means clients have already had handshakes dropped; the counters are "
        "cumulative, so the finding says it happened, not that it is happening now."),
    "syn_sent.retransmits": Threshold(
        1, "SYN retransmissions of one SYN-SENT socket",
        "A SYN is only retransmitted after a full second (the initial RTO) without any answer; a "
        "reachable peer answers within one RTT with SYN-ACK or RST."),
    "syn_sent.critical": Threshold(
        10, "stuck SYN-SENT sockets to one destination",
        "Ten callers waiting on one destination at once means requests are queueing behind it, "
        "not one unlucky packet."),
    "time_wait.warning": Threshold(
        0.5, "fraction of net.ipv4.tcp_max_tw_buckets",
        "Half the bucket limit leaves headroom for a doubling of the connection rate only."),
    "time_wait.critical": Threshold(
        0.9, "fraction of net.ipv4.tcp_max_tw_buckets",
        "Close to the limit the kernel starts destroying TIME-WAIT sockets early "
        "(TCPTimeWaitOverflow), which is also critical on its own."),
    "ephemeral_ports.warning": Threshold(
        0.5, "fraction of ip_local_port_range used toward one destination (or in total)",
        "connect() searches the range for a free port; past half of it the search gets slow and a "
        "doubling of the rate exhausts it."),
    "ephemeral_ports.critical": Threshold(
        0.8, "fraction of ip_local_port_range",
        "At 80% connect() is close to failing with EADDRNOTAVAIL; TIME-WAIT churn can take the rest "
        "within a minute."),
    "fd_limit.warning": Threshold(
        80, "percent of the process's RLIMIT_NOFILE soft limit",
        "The issue's threshold: 80% leaves 20% of headroom for a load spike before EMFILE."),
    "fd_limit.critical": Threshold(
        95, "percent of the RLIMIT_NOFILE soft limit",
        "At 95% the next burst of connections fails with EMFILE (accept and connect both need fds)."),
    "file_max.warning": Threshold(
        0.8, "fraction of fs.file-max allocated system-wide",
        "fs.file-max is shared by every process on the node; 80% leaves room for one busy workload "
        "to grow."),
    "file_max.critical": Threshold(
        0.95, "fraction of fs.file-max",
        "At 95% any process on the node may get ENFILE on its next open() or socket()."),
    "conntrack.warning": Threshold(
        0.75, "fraction of nf_conntrack_max",
        "The conntrack table also holds TIME-WAIT and recently closed flows for minutes; 75% is "
        "the usual alerting level (node-exporter's NodeConntrackTableNearlyFull alert fires at 75%)."),
    "conntrack.critical": Threshold(
        0.9, "fraction of nf_conntrack_max",
        "At 90% a burst of new flows fills the table and the kernel drops their packets."),
    "retransmissions.min_retrans": Threshold(
        10, "retransmitted segments of one connection",
        "Below 10 a connection's ratio is noise (a single lost packet on a short connection is 10%)."),
    "retransmissions.warning": Threshold(
        0.05, "retransmitted / sent segments of one connection (tcp_info)",
        "A healthy datacenter path retransmits well under 1%; 5% costs a visible share of throughput "
        "and adds RTO-sized latency spikes."),
    "retransmissions.critical": Threshold(
        0.2, "retransmitted / sent segments",
        "One segment in five lost: throughput collapses and requests time out."),
    "udp_rcvbuf.warning": Threshold(
        1, "Udp RcvbufErrors since the namespace was created",
        "Every one is a datagram the application never saw; UDP does not retransmit."),
}


def threshold(name: str) -> float:
    return THRESHOLDS[name].value


@dataclass
class TriageInput:
    """What one run collected; None where a part could not be collected."""

    sockets: Optional[Sequence[Socket]] = None
    summary: Optional[Summary] = None
    routes: Optional[Sequence[Route]] = None
    interfaces: Optional[Sequence[Interface]] = None
    processes: Optional[Sequence[ProcessLimits]] = None
    limits: Optional[Limits] = None
    host: bool = False  #: a node's own network namespace, where loopback-only daemons are normal


# --- helpers ------------------------------------------------------------------------

_PEERED = frozenset(("ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT",
                     "LAST-ACK", "CLOSING"))
_REJECT_TYPES = frozenset(("blackhole", "unreachable", "prohibit"))
_MAX_ITEMS = 10  # entries listed in one finding's evidence
_DEFAULT_RULE_TABLES = ("local", "main", "default")  # `ip rule` of a fresh namespace, in order


def _ip(addr: Optional[str]) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address, IPv4-mapped IPv6 as IPv4; None for non-addresses."""
    if not addr:
        return None
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(addr: Optional[str]) -> bool:
    ip = _ip(addr)
    return ip is not None and ip.is_loopback


def endpoint(addr: Optional[str], port: int) -> str:
    if addr and ":" in addr:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


def owners(socks: Iterable[Socket]) -> list[dict[str, Any]]:
    """The distinct processes holding any of ``socks``: [{pid, comm}] by pid."""
    seen: dict[int, str] = {}
    for sock in socks:
        for proc in sock.processes or ():
            seen.setdefault(proc["pid"], proc.get("comm", "?"))
    return [{"pid": pid, "comm": comm} for pid, comm in sorted(seen.items())]


def _who(procs: list[dict[str, Any]]) -> str:
    if not procs:
        return "an unknown process"
    text = ", ".join(f"{p['comm']} (pid {p['pid']})" for p in procs[:3])
    return text + (f" and {len(procs) - 3} more" if len(procs) > 3 else "")


def _counter(limits: Optional[Limits], group: str, name: str) -> Optional[int]:
    if limits is None:
        return None
    return limits.counters.get(group, {}).get(name)


def _count(n: int, singular: str, plural: Optional[str] = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _pct(ratio: float) -> float:
    return round(ratio * 100, 1)


def _tcp(data: TriageInput) -> list[Socket]:
    return [s for s in data.sockets or () if s.netid == "tcp"]


# --- rules --------------------------------------------------------------------------

def loopback_only_listeners(data: TriageInput) -> list[Finding]:
    if data.sockets is None or data.host:
        return []
    listeners = [s for s in _tcp(data) if s.state == "LISTEN"]
    open_ports = {s.local_port for s in listeners if not is_loopback(s.local_address)}
    reachable_pids = {p["pid"] for s in listeners if not is_loopback(s.local_address)
                      for p in s.processes or ()}
    by_port: dict[int, list[Socket]] = {}
    for sock in listeners:
        if is_loopback(sock.local_address) and sock.local_port not in open_ports:
            by_port.setdefault(sock.local_port, []).append(sock)
    out = []
    for port, socks in sorted(by_port.items()):
        procs = owners(socks)
        pids = {p["pid"] for p in procs}
        # A process that also listens on a reachable address is probably keeping an admin or
        # debug port private on purpose (sidecars do); one that listens only here is not reachable.
        deliberate = bool(pids) and pids <= reachable_pids
        other = sorted({endpoint(s.local_address, s.local_port) for s in listeners
                        if not is_loopback(s.local_address) and pids & {p["pid"] for p in s.processes or ()}})
        addresses = sorted({s.local_address for s in socks if s.local_address})
        out.append(Finding(
            id="loopback-only-listener",
            severity="info" if deliberate else "warning",
            title=f"Port {port} listens only on loopback ({', '.join(addresses)}): other pods and "
                  "Services cannot reach it",
            evidence={"port": port, "addresses": addresses, "processes": procs,
                      "reachable_listeners_of_same_process": other},
            explanation=(
                f"{_who(procs)} accepts connections on port {port} only from inside this network "
                "namespace, i.e. from containers of the same pod. Connections from other pods, "
                "through a Service, or from the kubelet's probes arrive on the pod's own IP and are "
                "refused (RST). The usual cause is a server whose default bind address is localhost "
                "(many frameworks' dev defaults, `listen('localhost')`, server.address=127.0.0.1)."
                + (" The same process also listens on a reachable address, so this may be a "
                   "deliberately private admin or debug port." if deliberate else "")),
            next_step=(
                f"Make it bind 0.0.0.0 (or :: for both families), restart, and check with "
                f"`ss -ltnp 'sport = :{port}'` (sockdebug: `sockets -tlp 'sport = :{port}'`). "
                "If the port is meant to be private, nothing to do."),
        ))
    return out


def close_wait_leaks(data: TriageInput) -> list[Finding]:
    if data.sockets is None:
        return []
    by_pid: dict[Optional[int], list[Socket]] = {}
    for sock in _tcp(data):
        if sock.state != "CLOSE-WAIT":
            continue
        pids = {p["pid"] for p in sock.processes or ()} or {None}
        for pid in pids:
            by_pid.setdefault(pid, []).append(sock)
    warn, crit = threshold("close_wait.warning"), threshold("close_wait.critical")
    out = []
    for pid, socks in sorted(by_pid.items(), key=lambda kv: -len(kv[1])):
        if len(socks) < warn:
            continue
        procs = [p for p in owners(socks) if p["pid"] == pid]
        peers = Counter(endpoint(s.peer_address, s.peer_port) for s in socks)
        who = _who(procs)
        out.append(Finding(
            id="close-wait-leak",
            severity="critical" if len(socks) >= crit else "warning",
            title=f"{who} holds {len(socks)} sockets in CLOSE-WAIT: it does not close connections "
                  "its peers closed",
            evidence={"pid": pid, "comm": procs[0]["comm"] if procs else None, "close_wait": len(socks),
                      "recv_q_bytes": sum(s.recv_q for s in socks),
                      "distinct_peers": len(peers),
                      "peers": [{"peer": p, "count": n} for p, n in peers.most_common(_MAX_ITEMS)],
                      "local_ports": sorted({s.local_port for s in socks})[:_MAX_ITEMS]},
            explanation=(
                "CLOSE-WAIT means the other side has closed the connection (its FIN arrived) and the "
                "kernel is waiting for this process to close() its end. The kernel never times this "
                "state out: each one stays a file descriptor and a connection slot until the process "
                "closes it or exits. It piles up when code does not close a connection after reading "
                "EOF — typically an HTTP or database client whose response body is never closed, a "
                "pool that keeps dead connections, or a handler stuck before its cleanup."),
            next_step=(
                "See whom they belong to: `ss -tnp state close-wait` (sockdebug: `sockets -tnp state "
                "close-wait`) — the peer port names the client library that leaks. A thread dump "
                "(jstack, py-spy dump, SIGQUIT for Go) shows where the code holds them. A restart frees "
                "them only until the leak fills up again."),
        ))
    return out


def accept_queues(data: TriageInput) -> list[Finding]:
    if data.sockets is None:
        return []
    somaxconn = data.limits.netns.get("somaxconn") if data.limits else None
    overflows = _counter(data.limits, "TcpExt", "ListenOverflows")
    drops = _counter(data.limits, "TcpExt", "ListenDrops")
    warn_ratio, min_backlog = threshold("accept_queue.warning"), threshold("accept_queue.min_backlog")
    out = []
    for sock in _tcp(data):
        if sock.state != "LISTEN" or sock.recv_q <= 0 or sock.cookie is None:
            continue  # no cookie: a /proc row, whose Send-Q is 0, not the backlog
        backlog = sock.send_q
        full = sock.recv_q >= backlog * threshold("accept_queue.critical")
        near = backlog >= min_backlog and sock.recv_q >= backlog * warn_ratio
        if not (full or near):
            continue
        where = endpoint(sock.local_address, sock.local_port)
        procs = owners([sock])
        capped = somaxconn is not None and backlog >= somaxconn
        out.append(Finding(
            id="accept-queue-full",
            severity="critical" if full else "warning",
            title=(f"Accept queue of {where} is {'full' if full else 'nearly full'}: "
                   f"{sock.recv_q} connections waiting, backlog {backlog}"),
            evidence={"listener": where, "recv_q": sock.recv_q, "backlog": backlog, "processes": procs,
                      "somaxconn": somaxconn, "ListenOverflows": overflows, "ListenDrops": drops},
            explanation=(
                "For a listening socket, Recv-Q counts connections whose handshake the kernel has "
                "completed but that the application has not accept()ed yet; Send-Q is the backlog it "
                "asked for in listen(), capped by net.core.somaxconn. When the queue is full the kernel "
                "drops new SYNs and handshake ACKs, so clients see connect timeouts and retries after "
                "1 s, 3 s, 7 s — not refusals. Usual causes: the accept loop is blocked or too slow "
                "(all workers busy, a GC pause, a deadlock), or the backlog is too small for bursts."),
            next_step=(
                f"Check that {_who(procs)} is alive and accepting (a thread dump, or `strace -fp "
                f"{procs[0]['pid'] if len(procs) == 1 else 'PID'} -e trace=accept4`); watch Recv-Q with "
                f"`ss -ltn 'sport = :{sock.local_port}'`. "
                + ("The backlog is already at net.core.somaxconn: raise that sysctl for the pod as well "
                   "as the application's backlog." if capped else
                   f"Raise the application's listen backlog (capped by net.core.somaxconn={somaxconn})."
                   if somaxconn is not None else "Raise the application's listen backlog.")),
        ))
    out.sort(key=lambda f: (f.severity != "critical", -f.evidence["recv_q"]))
    return out


def listen_overflows(data: TriageInput) -> list[Finding]:
    overflows = _counter(data.limits, "TcpExt", "ListenOverflows")
    drops = _counter(data.limits, "TcpExt", "ListenDrops")
    worst = max(overflows or 0, drops or 0)
    if worst < threshold("listen_overflows.warning"):
        return []
    queued = [{"listener": endpoint(s.local_address, s.local_port), "recv_q": s.recv_q, "backlog": s.send_q,
               "processes": owners([s])}
              for s in _tcp(data) if s.state == "LISTEN" and s.recv_q > 0]
    queued.sort(key=lambda q: -q["recv_q"])
    return [Finding(
        id="listen-overflows",
        severity="warning",
        title=f"The kernel has dropped {_count(worst, 'incoming connection')} at a full accept queue "
              "(ListenOverflows/ListenDrops)",
        evidence={"ListenOverflows": overflows, "ListenDrops": drops,
                  "TCPReqQFullDrop": _counter(data.limits, "TcpExt", "TCPReqQFullDrop"),
                  "SyncookiesSent": _counter(data.limits, "TcpExt", "SyncookiesSent"),
                  "listeners_with_queued_connections": queued[:_MAX_ITEMS]},
        explanation=(
            "ListenOverflows counts handshakes dropped because a listener's accept queue was full; "
            "ListenDrops counts every drop at the listening stage (overflows included). Clients of "
            "those connections waited for a SYN retransmission (1 s and more) or gave up. The counters "
            "are cumulative since this network namespace was created (for a pod: since it started), so "
            "they prove it happened, not that it is happening now."),
        next_step=(
            "Run triage again in a minute: if the numbers grow it is happening now (`nstat -az "
            "TcpExtListenOverflows TcpExtListenDrops` shows the deltas). Then find the listener with a "
            "queue: `ss -ltn` (sockdebug: `sockets -tl`), Recv-Q against Send-Q."),
    )]


def syn_sent_stuck(data: TriageInput) -> list[Finding]:
    if data.sockets is None:
        return []
    min_retrans = threshold("syn_sent.retransmits")
    by_dest: dict[str, list[Socket]] = {}
    for sock in _tcp(data):
        if sock.state == "SYN-SENT" and sock.timer and sock.timer.get("retrans", 0) >= min_retrans:
            by_dest.setdefault(endpoint(sock.peer_address, sock.peer_port), []).append(sock)
    out = []
    for dest, socks in sorted(by_dest.items(), key=lambda kv: -len(kv[1])):
        procs = owners(socks)
        out.append(Finding(
            id="syn-sent-stuck",
            severity="critical" if len(socks) >= threshold("syn_sent.critical") else "warning",
            title=f"{_count(len(socks), 'connection attempt')} to {dest} "
                  f"{'gets' if len(socks) == 1 else 'get'} no answer (stuck in SYN-SENT)",
            evidence={"destination": dest, "sockets": len(socks),
                      "max_syn_retransmits": max(s.timer["retrans"] for s in socks),  # type: ignore[index]
                      "processes": procs},
            explanation=(
                "SYN-SENT means this side sent the opening SYN and has heard nothing back — no SYN-ACK, "
                "and no RST either (a closed port would answer with RST: 'connection refused'). After a "
                "retransmission the peer or the path is silently dropping the SYN: the destination pod "
                "or host is gone (a stale IP or endpoint), a NetworkPolicy or firewall drops the "
                "traffic, the peer's accept queue is full, or the reply has no way back."),
            next_step=(
                f"Check that {dest} is a live endpoint (`kubectl get endpointslices -A -o wide`), the "
                "NetworkPolicies of both sides, and the peer's accept queue; `ss -tnpo state syn-sent` "
                "(sockdebug: `sockets -tnpo state syn-sent`) shows the retry timers."),
        ))
    return out


def time_wait_pressure(data: TriageInput) -> list[Finding]:
    if data.limits is None:
        return []
    maximum = data.limits.netns.get("tcp_max_tw_buckets")
    overflow = _counter(data.limits, "TcpExt", "TCPTimeWaitOverflow")
    tw_socks = [s for s in _tcp(data) if s.state == "TIME-WAIT"]
    count: Optional[int] = len(tw_socks) if data.sockets is not None else None
    if count is None and data.summary is not None:
        count = data.summary.tcp_timewait
    if count is None:
        return []
    ratio = count / maximum if maximum else 0.0
    if overflow or ratio >= threshold("time_wait.critical"):
        severity = "critical"
    elif ratio >= threshold("time_wait.warning"):
        severity = "warning"
    else:
        return []
    dests = Counter(endpoint(s.peer_address, s.peer_port) for s in tw_socks)
    return [Finding(
        id="time-wait-pressure",
        severity=severity,
        title=f"{count} TCP sockets in TIME-WAIT"
              + (f" ({_pct(ratio)}% of tcp_max_tw_buckets={maximum})" if maximum else "")
              + (f"; {overflow} already destroyed early" if overflow else ""),
        evidence={"time_wait": count, "tcp_max_tw_buckets": maximum,
                  "percent": _pct(ratio) if maximum else None, "TCPTimeWaitOverflow": overflow,
                  "top_destinations": [{"peer": p, "count": n} for p, n in dests.most_common(_MAX_ITEMS)]},
        explanation=(
            "TIME-WAIT is the normal 60-second state of the side that closed a TCP connection first; it "
            "keeps that address/port pair from being reused while late packets may still arrive. This "
            "many means this side opens and closes a lot of short connections (no keep-alive, no "
            "pooling). Beyond net.ipv4.tcp_max_tw_buckets the kernel destroys new TIME-WAIT sockets at "
            "once (TCPTimeWaitOverflow, 'time wait bucket table overflow' in dmesg), and meanwhile they "
            "hold local ports that new connections need."),
        next_step=(
            "Find the busiest destinations: `ss -tan state time-wait | awk '{print $4}' | sort | uniq -c "
            "| sort -rn | head` (top_destinations above), and turn on keep-alive or pooling in that "
            "client; net.ipv4.tcp_tw_reuse=1 lets outgoing connections reuse them."),
    )]


def ephemeral_ports(data: TriageInput) -> list[Finding]:
    if data.sockets is None or data.limits is None:
        return []
    port_range = data.limits.netns.get("ip_local_port_range")
    if not port_range:
        return []
    low, high = port_range
    size = high - low + 1
    if size <= 0:
        return []
    warn, crit = threshold("ephemeral_ports.warning"), threshold("ephemeral_ports.critical")
    by_dest: dict[tuple[str, str], list[Socket]] = {}
    for sock in _tcp(data):
        if sock.state != "LISTEN" and low <= sock.local_port <= high and sock.peer_port:
            key = (endpoint(sock.peer_address, sock.peer_port), sock.local_address or "")
            by_dest.setdefault(key, []).append(sock)
    out = []

    def finding(scope: str, used: int, socks: list[Socket], dest: Optional[str]) -> Finding:
        ratio = used / size
        states = Counter(s.state for s in socks)
        return Finding(
            id="ephemeral-ports-exhaustion",
            severity="critical" if ratio >= crit else "warning",
            title=f"{used} of {size} ephemeral ports in use {scope} ({_pct(ratio)}%)",
            evidence={"destination": dest, "ports_in_use": used, "ip_local_port_range": [low, high],
                      "range_size": size, "percent": _pct(ratio), "states": dict(states),
                      "processes": owners(socks)[:_MAX_ITEMS]},
            explanation=(
                "Every outgoing TCP connection to the same destination address and port needs its own "
                "local port from net.ipv4.ip_local_port_range, and sockets in TIME-WAIT keep theirs. "
                "When the range runs out connect() fails with EADDRNOTAVAIL ('Cannot assign requested "
                "address'), and before that it slows down searching for a free port. The usual cause is "
                "a client opening a new connection per request to one backend (a proxy, a database, a "
                "Service IP) and closing it right after."),
            next_step=(
                "Reuse connections (HTTP keep-alive, a connection pool); widen the range with the pod "
                "sysctl net.ipv4.ip_local_port_range (a safe sysctl in Kubernetes); or spread the load "
                "over more destination addresses. `ss -tan 'dst " + (dest or "ADDR:PORT") + "'` lists them."),
        )
    for (dest, _src), socks in sorted(by_dest.items(), key=lambda kv: -len(kv[1])):
        used = len({s.local_port for s in socks})
        if used / size >= warn:
            out.append(finding(f"toward {dest}", used, socks, dest))
    total = (data.limits.netns.get("local_ports_in_use") or {}).get("tcp")
    if total is not None and total / size >= warn and not out:
        in_range = [s for s in _tcp(data) if low <= s.local_port <= high]
        out.append(finding("by TCP sockets in total", total, in_range, None))
    return out


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
        title=title.format(count=count, maximum=maximum, pct=_pct(ratio)),
        evidence={count_key: count, max_key: maximum, "percent": _pct(ratio)},
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


def no_default_route(data: TriageInput) -> list[Finding]:
    if data.routes is None:
        return []
    out = []
    ifaces = data.interfaces or ()
    for family, label in (("inet", "IPv4"), ("inet6", "IPv6")):
        if any(r.family == family and r.dst == "default" and r.route_type == "unicast" for r in data.routes):
            continue
        addressed = [
            {"interface": i.name, "addresses": [f"{a['address']}/{a['prefixlen']}" for a in i.addresses
                                                if a.get("family") == family and a.get("scope") == "global"]}
            for i in ifaces if "LOOPBACK" not in i.flags and "UP" in i.flags]
        addressed = [a for a in addressed if a["addresses"]]
        if family == "inet6" and not addressed:
            continue  # no global IPv6 address: IPv6 is simply not in use here
        if addressed:
            severity = "warning" if family == "inet" else "info"
        else:
            severity = "info"  # only loopback: isolated on purpose (hostNetwork: false, network none)
        routes = [f"{r.dst} dev {r.dev}" + (f" via {r.gateway}" if r.gateway else "")
                  for r in data.routes if r.family == family and r.table == "main"]
        out.append(Finding(
            id="no-default-route",
            severity=severity,
            title=f"No {label} default route" + ("" if addressed else " (the namespace has no "
                                                  f"{label} address besides loopback)"),
            evidence={"family": family, "interfaces": addressed, "main_table": routes[:_MAX_ITEMS]},
            explanation=(
                f"Without a default route only directly connected subnets and explicitly routed "
                f"destinations are reachable over {label}; connect() to anything else fails at once with "
                "ENETUNREACH 'Network is unreachable'. A pod gets its default route from the CNI plugin, "
                "so its absence means a broken or unfinished network setup, or a namespace set up by hand."),
            next_step=(
                "`ip route show table all` (sockdebug: `routes`) and compare with a healthy pod on the same "
                "node; check the CNI plugin's logs on the node (and `ip rule` if policy routing is used)."),
        ))
    return out


class RouteTable:
    """Longest-prefix match over the collected routes, the way the default rules look them
    up (tables local, main, default; ``throw`` moves on to the next table)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.entries: list[tuple[Any, Route]] = []
        for r in routes:
            try:
                net = ipaddress.ip_network("0.0.0.0/0" if r.dst == "default" and r.family == "inet"
                                           else "::/0" if r.dst == "default" else r.dst, strict=False)
            except ValueError:
                continue
            self.entries.append((net, r))

    def _best(self, ip: Any, tables: Optional[set[str]], exclude: frozenset[str] = frozenset()
              ) -> dict[str, Route]:
        best: dict[str, tuple[int, int, Route]] = {}
        for net, r in self.entries:
            if net.version != ip.version or (tables is not None and r.table not in tables):
                continue
            if r.route_type in exclude or ip not in net:
                continue
            key = (net.prefixlen, -(r.metric or 0))
            held = best.get(r.table)
            if held is None or key > held[:2]:
                best[r.table] = (*key, r)
        return {t: v[2] for t, v in best.items()}

    def lookup(self, ip: Any) -> Optional[Route]:
        best = self._best(ip, set(_DEFAULT_RULE_TABLES))
        for table in _DEFAULT_RULE_TABLES:
            route = best.get(table)
            if route is not None and route.route_type != "throw":
                return route
        return None

    def usable_elsewhere(self, ip: Any) -> bool:
        """Whether a table other than the default rules' (policy routing may select it) has
        a usable route for ``ip``."""
        best = self._best(ip, None, exclude=_REJECT_TYPES | {"throw"})
        return any(t not in _DEFAULT_RULE_TABLES for t in best)


def no_route_to_peer(data: TriageInput) -> list[Finding]:
    if data.sockets is None or data.routes is None:
        return []
    table = RouteTable(data.routes)
    by_peer: dict[str, list[Socket]] = {}
    unroutable: dict[str, Optional[Route]] = {}  #: peer -> the reject route that matched, or None
    routable: set[str] = set()
    for sock in data.sockets:
        if sock.netid not in ("tcp", "udp") or sock.state not in _PEERED:
            continue
        ip = _ip(sock.peer_address)
        if ip is None or ip.is_unspecified or ip.is_multicast:
            continue
        key = str(ip)
        if key in routable:
            continue
        if key not in unroutable:
            route = table.lookup(ip)
            # A policy rule may select another table that has a route: do not guess then.
            if (route is not None and route.route_type not in _REJECT_TYPES) or table.usable_elsewhere(ip):
                routable.add(key)
                continue
            unroutable[key] = route
        by_peer.setdefault(key, []).append(sock)
    out = []
    for peer, socks in sorted(by_peer.items(), key=lambda kv: -len(kv[1])):
        route = unroutable[peer]
        matched = None if route is None else {"dst": route.dst, "table": route.table,
                                              "route_type": route.route_type}
        why = ("no route matches it" if route is None
               else f"the matching route is {route.route_type} {route.dst} (table {route.table})")
        out.append(Finding(
            id="no-route-to-peer",
            severity="critical",
            title=f"{_count(len(socks), 'connection')} to {peer}, but {why}",
            evidence={"peer": peer, "sockets": len(socks), "matched_route": matched,
                      "states": dict(Counter(s.state for s in socks)),
                      "connections": [f"{endpoint(s.local_address, s.local_port)} -> "
                                      f"{endpoint(s.peer_address, s.peer_port)} ({s.netid} {s.state})"
                                      for s in socks[:_MAX_ITEMS]],
                      "processes": owners(socks)},
            explanation=(
                f"This namespace has connections to {peer}, but the routing table has no usable way to "
                "it now, so their packets cannot leave: the connections will stall and time out, and new "
                "connect() calls fail with ENETUNREACH or EHOSTUNREACH. Usually the route went away after "
                "the connection was made (an interface or address changed, the CNI reconfigured the pod, "
                "a VPN or tunnel went down), or a blackhole/unreachable route covers the address."),
            next_step=(
                f"`ip route get {peer}` inside the namespace shows the kernel's decision; `ip route show "
                "table all` (sockdebug: `routes`) and `ip rule` show why."),
        ))
    return out


def retransmissions(data: TriageInput) -> list[Finding]:
    if data.sockets is None:
        return []
    min_retrans = threshold("retransmissions.min_retrans")
    warn, crit = threshold("retransmissions.warning"), threshold("retransmissions.critical")
    bad = []
    for sock in _tcp(data):
        info = sock.tcp_info
        if not info:
            continue
        retrans, sent = info.get("total_retrans"), info.get("segs_out")
        if retrans is None or not sent or retrans < min_retrans:
            continue
        ratio = retrans / sent
        if ratio >= warn:
            bad.append((ratio, sock))
    if not bad:
        return []
    bad.sort(key=lambda rs: -rs[0])
    worst = bad[0][0]
    connections = [{"local": endpoint(s.local_address, s.local_port), "peer": endpoint(s.peer_address, s.peer_port),
                    "state": s.state, "total_retrans": s.tcp_info["total_retrans"],  # type: ignore[index]
                    "segs_out": s.tcp_info["segs_out"], "percent": _pct(r),  # type: ignore[index]
                    "rtt_ms": s.tcp_info.get("rtt_ms"), "processes": owners([s])}  # type: ignore[union-attr]
                   for r, s in bad[:_MAX_ITEMS]]
    return [Finding(
        id="retransmissions-high",
        severity="critical" if worst >= crit else "warning",
        title=f"{_count(len(bad), 'TCP connection')} {'retransmits' if len(bad) == 1 else 'retransmit'} "
              f"{_pct(warn)}% or more of {'its' if len(bad) == 1 else 'their'} segments "
              f"(worst {_pct(worst)}%, to {connections[0]['peer']})",
        evidence={"connections": connections, "count": len(bad),
                  "RetransSegs": _counter(data.limits, "Tcp", "RetransSegs"),
                  "OutSegs": _counter(data.limits, "Tcp", "OutSegs")},
        explanation=(
            "TCP had to resend this share of what these connections sent (tcp_info total_retrans / "
            "segs_out). A little is normal; this much means packets are lost on the way — an overloaded "
            "node or NIC, a congested or faulty link, an MTU black hole on a tunnel, or a peer that drops. "
            "Throughput collapses and every loss adds a retransmission timeout (200 ms or more) to some "
            "request."),
        next_step=(
            "Run `ss -tni dst PEER` (sockdebug: `sockets -ti dst PEER`) a few times to see whether retrans "
            "grows; look for drops and errors on the interfaces (`ip -s link`, the interface records below) "
            "and for an MSS much smaller than the interface MTU (a tunnel's MTU problem)."),
    )]


def udp_rcvbuf_errors(data: TriageInput) -> list[Finding]:
    errors = _counter(data.limits, "Udp", "RcvbufErrors")
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
        title=f"{_count(errors, 'UDP datagram')} dropped because a receive buffer was full (Udp RcvbufErrors)",
        evidence={"RcvbufErrors": errors, "InErrors": _counter(data.limits, "Udp", "InErrors"),
                  "InDatagrams": _counter(data.limits, "Udp", "InDatagrams"),
                  "sockets": suspects[:_MAX_ITEMS]},
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


RULES: tuple[Callable[[TriageInput], list[Finding]], ...] = (
    accept_queues, no_route_to_peer, fd_limits, close_wait_leaks, syn_sent_stuck, time_wait_pressure,
    ephemeral_ports, file_max, conntrack, listen_overflows, retransmissions, udp_rcvbuf_errors,
    no_default_route, loopback_only_listeners,
)
FINDING_IDS = (
    "accept-queue-full", "no-route-to-peer", "fd-limit-near", "close-wait-leak", "syn-sent-stuck",
    "time-wait-pressure", "ephemeral-ports-exhaustion", "file-max-near", "conntrack-near-max",
    "listen-overflows", "retransmissions-high", "udp-rcvbuf-errors", "no-default-route",
    "loopback-only-listener",
)
_RANK = {name: i for i, name in enumerate(SEVERITIES)}


def triage(data: TriageInput) -> list[Finding]:
    """Every rule's findings, most severe first (rule order within a severity)."""
    findings = [f for rule in RULES for f in rule(data)]
    findings.sort(key=lambda f: _RANK[f.severity])
    return findings


def at_or_above(findings: Sequence[Finding], severity: str) -> bool:
    """Whether any finding is at least as severe as ``severity``."""
    return any(_RANK[f.severity] <= _RANK[severity] for f in findings)
