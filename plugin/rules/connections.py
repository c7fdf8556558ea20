"""Findings from a capture of closed connections (``triage --events DURATION``): peers whose
connections this side resets, connects that fail, connection churn, and resets received.
Per peer, named as a pod, Service or node; pure functions over an ``events.Capture``.

The thresholds are in ``THRESHOLDS`` and in docs/triage.md with their reasons (a unit test
keeps the two in step).
"""

from __future__ import annotations

from typing import Any, Optional

from ..events import IN, OUT, Capture, Namer, PeerKey, Totals, peer_key, peer_of, peer_text
from ..findings import Finding, node_obj, obj, pod_obj
from .common import Check, Rule

THRESHOLDS: dict[str, float] = {
    "resets.warning": 3,
    "resets.critical": 10,
    "resets.critical_share": 0.5,
    "resets_received.warning": 3,
    "failures.warning": 1,
    "failures.critical": 3,
    "failures.critical_share": 0.5,
    "churn.short_ms": 1000,
    "churn.min": 10,
    "churn.info": 5,
    "churn.warning": 50,
}
T = THRESHOLDS
IDS = ("connection-resets", "connection-failures", "connection-churn", "connections-reset-by-peers")
_KIND = {"pod": "Pod", "svc": "Service", "node": "Node"}


def seconds_text(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def _peer_obj(peer: Optional[Any]) -> list[dict[str, Any]]:
    if peer is None:
        return []
    return [obj(_KIND[peer.kind], peer.name, peer.namespace, role="peer")]


def _side(key: PeerKey) -> str:
    return "to" if key.direction == OUT else "from"


def _evidence(key: PeerKey, peer: Optional[Any], tot: Totals, span: float, **more: Any) -> dict[str, Any]:
    return {"peer": peer_text(key, peer), "address": key.address, "direction": key.direction, "port": key.port,
            **more, "connections": tot.connections, "seconds": round(span, 1)}


def resets(subject: dict[str, Any], key: PeerKey, peer: Optional[Any], tot: Totals, span: float) -> list[Finding]:
    """This side reset (aborted) connections of one peer: warning from ``resets.warning``;
    critical from ``resets.critical`` when they are at least ``resets.critical_share`` of them."""
    n = tot.count("reset")
    if n < T["resets.warning"]:
        return []
    critical = n >= T["resets.critical"] and n / tot.connections >= T["resets.critical_share"]
    name = peer_text(key, peer)
    role = "client" if key.direction == OUT else "server"
    return [Finding(
        "connection-resets", "critical" if critical else "warning",
        f"{n} connections {_side(key)} {name} reset in {seconds_text(span)}", [subject, *_peer_obj(peer)],
        f"This side ended {n} of {tot.connections} connections {_side(key)} {name} with a reset: the kernel sent an "
        "RST because the socket was closed with SO_LINGER 0, or with data it had not read. As the "
        f"{role}, that is usually " + (
            "a request timeout giving up on a slow answer, or a pool discarding connections it thinks broken"
            if key.direction == OUT else
            "a server closing before it read the whole request (an error path, a body it did not consume), or "
            "a proxy or load shedder dropping connections") + "; the peer sees `connection reset by peer`.",
        "Find which process closes them (the Process column of `kubectl sockdebug POD --events`) and "
        "why: its timeouts and error paths; read a request fully before closing; do not set SO_LINGER 0 on "
        "ordinary closes.",
        _evidence(key, peer, tot, span, resets=n))]


def failures(subject: dict[str, Any], key: PeerKey, peer: Optional[Any], tot: Totals, span: float
             ) -> list[Finding]:
    """Connects to one peer that failed (refused or unreachable) or timed out."""
    failed, timeout = tot.count("failed"), tot.count("timeout")
    n = failed + timeout
    if key.direction != OUT or n < T["failures.warning"]:
        return []
    critical = n >= T["failures.critical"] and n / tot.connections >= T["failures.critical_share"]
    name = peer_text(key, peer)
    parts = [f"{failed} refused or unreachable" if failed else "", f"{timeout} timed out" if timeout else ""]
    return [Finding(
        "connection-failures", "critical" if critical else "warning",
        f"connections to {name} fail: {', '.join(p for p in parts if p)} (of {tot.connections} in "
        f"{seconds_text(span)})", [subject, *_peer_obj(peer)],
        "A connect that fails at once was refused (an RST answered the SYN: nothing listens on that port, a "
        "Service without ready endpoints that kube-proxy rejects) or found no route; one that timed out sent "
        "SYNs nobody answered (a NetworkPolicy or firewall dropping them, a peer that is gone, a blackholed "
        "address). Either way this client's requests to it fail now.",
        f"Check that {name} has ready endpoints and listens on port {key.port or '?'} "
        "(`kubectl get endpointslices`, `kubectl sockdebug <its pod> --listening`); for timeouts, the "
        "NetworkPolicies of both sides and the route (`kubectl sockdebug <this pod> --routes`).",
        _evidence(key, peer, tot, span, failed=failed, timeout=timeout))]


def churn(subject: dict[str, Any], key: PeerKey, peer: Optional[Any], tot: Totals, span: float,
          short: int) -> list[Finding]:
    """Many short-lived, cleanly closed connections with one peer: info from ``churn.info``
    a second, warning from ``churn.warning`` a second (at least ``churn.min`` in all)."""
    if span <= 0 or short < T["churn.min"]:
        return []
    rate = short / span
    if rate < T["churn.info"]:
        return []
    severity = "warning" if rate >= T["churn.warning"] else "info"
    name = peer_text(key, peer)
    return [Finding(
        "connection-churn", severity,
        f"connection churn: {short} short-lived connections {_side(key)} {name} ({rate:.1f}/s)",
        [subject, *_peer_obj(peer)],
        f"{short} connections {_side(key)} {name} closed cleanly within "
        f"{T['churn.short_ms']:g} ms of opening ({rate:.1f} a second): a client that opens a connection per "
        "request instead of reusing one. Each costs a handshake (latency, CPU on both sides, TLS if any), and "
        "the closing side keeps a TIME-WAIT entry for 60 s, which holds one of the client's ephemeral ports "
        "toward that destination.",
        "Reuse connections: HTTP keep-alive or a connection pool in the client (and a server idle timeout longer "
        "than the client's); for a health check or cron, a longer interval.",
        _evidence(key, peer, tot, span, short_lived=short, per_second=round(rate, 2),
                  short_ms=T["churn.short_ms"]))]


def reset_by_peers(subject: dict[str, Any], capture: Capture, span: float) -> list[Finding]:
    """Resets received: the kernel's EstabResets over the capture, less the resets this
    side sent (which it counts too)."""
    estab = capture.kernel("estab_resets")
    if estab is None:
        return []
    sent = sum(1 for e in capture.events if e.close == "reset")
    received = estab - sent
    if received < T["resets_received.warning"]:
        return []
    return [Finding(
        "connections-reset-by-peers", "warning",
        f"{received} connections were reset by their peers in {seconds_text(span)}", [subject],
        "The namespace's TCP counter EstabResets counts connections that went straight from ESTABLISHED or "
        f"CLOSE-WAIT to CLOSED: {estab} during the capture, of which this side's own resets explain {sent}. The "
        "rest received an RST from their peer: the application saw `connection reset by peer`. A received reset "
        "ends a socket with the same final figures as a clean close, so the events cannot say which peers sent "
        "them.",
        "Look at the peers this pod talks to (the per-peer totals of `kubectl sockdebug ... --events`) and at "
        "their side: a server resetting connections (run triage --events there), a proxy's idle timeout shorter "
        "than this client's pool, or a conntrack entry that expired under a long idle connection.",
        {"estab_resets": estab, "resets_sent": sent, "seconds": round(span, 1)})]


def capture_findings(subject: dict[str, Any], capture: Capture, lookup: Optional[Namer]) -> list[Finding]:
    """Every connection finding of one capture (``subject``: the pod or node it ran in)."""
    span = capture.span_s()
    out: list[Finding] = []
    short_lived: dict[PeerKey, int] = {}
    for e in capture.events:
        if e.close == "closed" and (e.duration_ms is None or e.duration_ms < T["churn.short_ms"]):
            k = peer_key(e, capture.listening)  # no duration: no dump saw it, so it lived under a second
            short_lived[k] = short_lived.get(k, 0) + 1
    peers = capture.peers()
    for key, tot in peers.items():
        if key.direction not in (OUT, IN):
            continue
        peer = peer_of(key, lookup)
        out += resets(subject, key, peer, tot, span)
        out += failures(subject, key, peer, tot, span)
        out += churn(subject, key, peer, tot, span, short_lived.get(key, 0))
    out += reset_by_peers(subject, capture, span)
    return out


def check(view: Any) -> list[Finding]:
    """The captures of the pods and node targets in scope."""
    out: list[Finding] = []
    for pv in view.pods:
        if pv.capture is not None:
            out += capture_findings(pod_obj(pv.key), pv.capture, view.peers.lookup)
    for name in view.data.scope_nodes:
        obs = view.data.node_observed.get(name)
        if obs is not None and obs.capture is not None:
            out += capture_findings(node_obj(name), obs.capture, view.peers.lookup)
    return out


RULES = (
    Rule("connection-resets", ("critical", "warning"),
         "this side reset (aborted) at least resets.warning connections with one peer during the capture; "
         "critical from resets.critical when they are at least resets.critical_share of that peer's connections",
         ("peer", "address", "direction", "port", "resets", "connections", "seconds")),
    Rule("connection-failures", ("critical", "warning"),
         "connects to one peer failed (refused, unreachable) or timed out: warning from failures.warning, "
         "critical from failures.critical when they are at least failures.critical_share of the attempts",
         ("peer", "address", "direction", "port", "failed", "timeout", "connections", "seconds")),
    Rule("connection-churn", ("warning", "info"),
         "at least churn.min connections with one peer closed cleanly within churn.short_ms of opening, at "
         "churn.info a second or more (warning from churn.warning a second)",
         ("peer", "address", "direction", "port", "short_lived", "per_second", "short_ms", "connections", "seconds")),
    Rule("connections-reset-by-peers", ("warning",),
         "the namespace's EstabResets over the capture, less the resets this side sent, reach "
         "resets_received.warning",
         ("estab_resets", "resets_sent", "seconds")),
)
CHECKS = (Check("cluster", check, IDS),)
