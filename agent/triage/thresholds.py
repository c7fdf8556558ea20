"""The numbers the triage rules compare against, each with the reason for its value.

docs/triage.md lists the same table (tests/unit/test_triage_rules.py keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass


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
