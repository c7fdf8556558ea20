"""Triage: the records of one run in, ``Finding`` records out, most severe first.

Every rule is a pure function of ``TriageInput`` (no I/O), so the unit tests feed it
constructed records.  Every number a rule compares against lives in ``THRESHOLDS``
with the reason for its value; docs/triage.md lists the same table (a unit test keeps
the two in step).  A part that was not collected is None, and the rules that need it
say nothing rather than guess.

Findings are written for the person paged at 3 a.m.: what the state means, the usual
cause, and the next command to run.  Commands are given as ``ss`` / ``ip`` would be
typed inside the pod, with the sockdebug equivalent where there is one.

The rules live by what they read: ``sockets``, ``limits`` (and kernel counters) and
``routes``; ``thresholds`` holds the numbers, ``common`` the input and shared wording.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..schema import SEVERITIES, Finding
from .common import TriageInput, endpoint, is_loopback, owners
from .limits import conntrack, fd_limits, file_max, udp_rcvbuf_errors
from .routes import RouteTable, no_default_route, no_route_to_peer
from .sockets import (
    accept_queues,
    close_wait_leaks,
    ephemeral_ports,
    listen_overflows,
    loopback_only_listeners,
    retransmissions,
    syn_sent_stuck,
    time_wait_pressure,
)
from .thresholds import THRESHOLDS, Threshold, threshold

__all__ = [
    "FINDING_IDS",
    "RULES",
    "THRESHOLDS",
    "RouteTable",
    "Threshold",
    "TriageInput",
    "at_or_above",
    "endpoint",
    "is_loopback",
    "owners",
    "threshold",
    "triage",
]

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
