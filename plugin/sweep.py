"""The sweep's analysis: a thin adapter from what ``sweep_run`` collects today
(``SweepInput``) to the findings engine (``engine.analyse``), and the sweep's report
rendering (``text``, ``document``) through the one findings renderer.

The rules themselves live in ``plugin/rules`` (docs/triage.md lists them all); the sweep
runs every one except those about pods that are down (``rules.DOWN``: crash loops and
not-Ready pods are for phase 2 of issue 11, when sweep also collects Events and logs of
every failing container).  Until then EndpointSlices, NetworkPolicies and Events are not
collected by the sweep, and its report says so (``not_seen``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from . import engine, findings, podspec
from .findings import Finding, Report, Uninspected  # noqa: F401  (the sweep's public names)
from .podspec import PodKey, bind_failure, key, mentioned_ports, running_containers, trouble  # noqa: F401
from .rules import DOWN, RULES
from .view import NODE_PORT_RANGE, ClusterInput, NodeObservation, PodObservation, is_loopback  # noqa: F401

SweepFinding = Finding
SEVERITIES = findings.SEVERITIES
RULE_IDS = tuple(r for r in RULES if r not in DOWN)
NOT_COLLECTED = "sweep does not collect them yet"


class SweepInput(NamedTuple):
    pods: list[dict]  #: the pods in scope (every phase; only running ones are inspected)
    services: list[dict]  #: Services of the namespaces in scope (or all)
    sockets: dict[PodKey, list[Any]]  #: inspected pods: their listening Socket records
    uninspected: dict[PodKey, str] = {}  #: pods that could not be inspected -> why
    context_pods: list[dict] = []  #: other pods (any namespace) for node-level checks
    host_listeners: dict[str, list[Any]] = {}  #: node -> host-netns listeners no pod owns
    logs: dict[tuple[str, str, str], str] = {}  #: (ns, pod, container) -> last log lines (previous run)
    node_port_range: tuple[int, int] = NODE_PORT_RANGE


def _containers(pod: dict) -> list[dict]:
    """Regular containers and sidecars (``podspec.containers``), for sweep_run."""
    return podspec.containers(pod)


def analyse(data: SweepInput) -> Report:
    """Every finding for the pods in scope, most severe first, and the pods not inspected."""
    return engine.analyse(ClusterInput(
        pods=data.pods, context_pods=data.context_pods, services=data.services, logs=data.logs,
        observed={k: PodObservation(v) for k, v in data.sockets.items()}, uninspected=data.uninspected,
        node_observed={n: NodeObservation(v) for n, v in data.host_listeners.items()},
        not_listed={kind: NOT_COLLECTED for kind in ("endpointslices", "events", "networkpolicies")},
        node_port_range=data.node_port_range), rules=RULE_IDS)


def at_or_above(found: Sequence[Finding], severity: str) -> list[Finding]:
    return findings.at_or_above(found, severity)


def document(report: Report, scope: dict[str, Any]) -> dict[str, Any]:
    return findings.document(report, scope, "SweepReport")


def text(report: Report, scope: dict[str, Any], color: bool = False) -> str:
    return findings.text(report, scope, color, empty="no port problems found")
