"""Rules over the sockets: listeners, queues, connection states, ports, retransmissions."""

from __future__ import annotations

from collections import Counter
from typing import Optional

from ..schema import Finding, Socket
from .common import MAX_ITEMS, TriageInput, counted, counter, endpoint, is_loopback, owners, pct, tcp, who
from .thresholds import threshold

# --- rules --------------------------------------------------------------------------

def loopback_only_listeners(data: TriageInput) -> list[Finding]:
    if data.sockets is None or data.host:
        return []
    listeners = [s for s in tcp(data) if s.state == "LISTEN"]
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
                f"{who(procs)} accepts connections on port {port} only from inside this network "
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
    for sock in tcp(data):
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
        holder = who(procs)
        out.append(Finding(
            id="close-wait-leak",
            severity="critical" if len(socks) >= crit else "warning",
            title=f"{holder} holds {len(socks)} sockets in CLOSE-WAIT: it does not close connections "
                  "its peers closed",
            evidence={"pid": pid, "comm": procs[0]["comm"] if procs else None, "close_wait": len(socks),
                      "recv_q_bytes": sum(s.recv_q for s in socks),
                      "distinct_peers": len(peers),
                      "peers": [{"peer": p, "count": n} for p, n in peers.most_common(MAX_ITEMS)],
                      "local_ports": sorted({s.local_port for s in socks})[:MAX_ITEMS]},
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
    overflows = counter(data.limits, "TcpExt", "ListenOverflows")
    drops = counter(data.limits, "TcpExt", "ListenDrops")
    warn_ratio, min_backlog = threshold("accept_queue.warning"), threshold("accept_queue.min_backlog")
    out = []
    for sock in tcp(data):
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
                f"Check that {who(procs)} is alive and accepting (a thread dump, or `strace -fp "
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
    overflows = counter(data.limits, "TcpExt", "ListenOverflows")
    drops = counter(data.limits, "TcpExt", "ListenDrops")
    worst = max(overflows or 0, drops or 0)
    if worst < threshold("listen_overflows.warning"):
        return []
    queued = [{"listener": endpoint(s.local_address, s.local_port), "recv_q": s.recv_q, "backlog": s.send_q,
               "processes": owners([s])}
              for s in tcp(data) if s.state == "LISTEN" and s.recv_q > 0]
    queued.sort(key=lambda q: -q["recv_q"])
    return [Finding(
        id="listen-overflows",
        severity="warning",
        title=f"The kernel has dropped {counted(worst, 'incoming connection')} at a full accept queue "
              "(ListenOverflows/ListenDrops)",
        evidence={"ListenOverflows": overflows, "ListenDrops": drops,
                  "TCPReqQFullDrop": counter(data.limits, "TcpExt", "TCPReqQFullDrop"),
                  "SyncookiesSent": counter(data.limits, "TcpExt", "SyncookiesSent"),
                  "listeners_with_queued_connections": queued[:MAX_ITEMS]},
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
    for sock in tcp(data):
        if sock.state == "SYN-SENT" and sock.timer and sock.timer.get("retrans", 0) >= min_retrans:
            by_dest.setdefault(endpoint(sock.peer_address, sock.peer_port), []).append(sock)
    out = []
    for dest, socks in sorted(by_dest.items(), key=lambda kv: -len(kv[1])):
        procs = owners(socks)
        out.append(Finding(
            id="syn-sent-stuck",
            severity="critical" if len(socks) >= threshold("syn_sent.critical") else "warning",
            title=f"{counted(len(socks), 'connection attempt')} to {dest} "
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
    overflow = counter(data.limits, "TcpExt", "TCPTimeWaitOverflow")
    tw_socks = [s for s in tcp(data) if s.state == "TIME-WAIT"]
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
              + (f" ({pct(ratio)}% of tcp_max_tw_buckets={maximum})" if maximum else "")
              + (f"; {overflow} already destroyed early" if overflow else ""),
        evidence={"time_wait": count, "tcp_max_tw_buckets": maximum,
                  "percent": pct(ratio) if maximum else None, "TCPTimeWaitOverflow": overflow,
                  "top_destinations": [{"peer": p, "count": n} for p, n in dests.most_common(MAX_ITEMS)]},
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
    for sock in tcp(data):
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
            title=f"{used} of {size} ephemeral ports in use {scope} ({pct(ratio)}%)",
            evidence={"destination": dest, "ports_in_use": used, "ip_local_port_range": [low, high],
                      "range_size": size, "percent": pct(ratio), "states": dict(states),
                      "processes": owners(socks)[:MAX_ITEMS]},
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
        in_range = [s for s in tcp(data) if low <= s.local_port <= high]
        out.append(finding("by TCP sockets in total", total, in_range, None))
    return out


def retransmissions(data: TriageInput) -> list[Finding]:
    if data.sockets is None:
        return []
    min_retrans = threshold("retransmissions.min_retrans")
    warn, crit = threshold("retransmissions.warning"), threshold("retransmissions.critical")
    bad = []
    for sock in tcp(data):
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
                    "segs_out": s.tcp_info["segs_out"], "percent": pct(r),  # type: ignore[index]
                    "rtt_ms": s.tcp_info.get("rtt_ms"), "processes": owners([s])}  # type: ignore[union-attr]
                   for r, s in bad[:MAX_ITEMS]]
    return [Finding(
        id="retransmissions-high",
        severity="critical" if worst >= crit else "warning",
        title=f"{counted(len(bad), 'TCP connection')} {'retransmits' if len(bad) == 1 else 'retransmit'} "
              f"{pct(warn)}% or more of {'its' if len(bad) == 1 else 'their'} segments "
              f"(worst {pct(worst)}%, to {connections[0]['peer']})",
        evidence={"connections": connections, "count": len(bad),
                  "RetransSegs": counter(data.limits, "Tcp", "RetransSegs"),
                  "OutSegs": counter(data.limits, "Tcp", "OutSegs")},
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
