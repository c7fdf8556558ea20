"""The rule registry: every finding id the plugin's engine can emit, with its severities,
when it fires, its evidence and what it explains (``Rule``), and the checks that emit them
(``Check``: pure functions over one pod, Service or node view, or the whole cluster view).

docs/triage.md lists the same rules; tests/unit/test_findings_docs.py keeps the two in step.
"""

from __future__ import annotations

from . import connections, nodes, pods, policies, ports, probes, services
from .common import Check, Rule

_MODULES = (services, ports, probes, policies, pods, nodes, connections)
RULES: dict[str, Rule] = {r.id: r for m in _MODULES for r in m.RULES}
CHECKS: tuple[Check, ...] = tuple(c for m in _MODULES for c in m.CHECKS)
SUPPRESSES: dict[str, tuple[str, ...]] = {r.id: r.suppresses for r in RULES.values()}
MERGERS = {r.id: r.merge for r in RULES.values() if r.merge is not None}
#: Findings about pods that are down, from spec, status, Events and logs alone.
DOWN = ("container-crash-looping", "container-not-running", "pod-not-ready")

__all__ = ["CHECKS", "DOWN", "MERGERS", "RULES", "SUPPRESSES", "Check", "Rule"]
