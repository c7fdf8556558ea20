"""Every closed set of values the plugin accepts, declared once.

The flag table (``flags.py``) turns these into parsing, help text and validation
messages; completion (``complete.py``) offers exactly these; the runner and the
targets module read them.  A unit test proves that completion and validation agree.
Standard library only, and nothing else imported: ``--help`` and completion load it.
"""

from __future__ import annotations

COMMANDS = ("inspect", "sweep", "triage", "agents", "stop", "version")
SUBCOMMANDS = COMMANDS[1:]  #: what completion offers besides targets (``inspect`` is the default)

#: Each command's plain ``-o`` formats; every one of them also takes TEMPLATE_OUTPUTS.
INSPECT_OUTPUTS = ("table", "wide", "json", "yaml", "jsonl")
TRIAGE_OUTPUTS = ("table", "json", "yaml", "jsonl")
SWEEP_OUTPUTS = ("table", "json", "yaml")
AGENTS_OUTPUTS = ("table", "wide", "json", "yaml")
#: kubectl's ``-o NAME=VALUE`` formats (printers.py parses them).
TEMPLATE_OUTPUTS = ("jsonpath", "jsonpath-file", "custom-columns", "custom-columns-file")

#: ``auto`` picks the strongest profile the namespace's Pod Security level admits (profiles.py).
PROFILES = ("auto", "general", "baseline", "restricted", "netadmin")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
SEVERITIES = ("info", "warning", "critical")  #: weakest first: --fail-on SEVERITY means "this or worse"
VIAS = ("ephemeral", "node")

#: TARGET kinds: every accepted spelling (kubectl's short names included) -> canonical kind.
KINDS = {
    "pod": "pod", "pods": "pod", "po": "pod",
    "deployment": "deployments", "deployments": "deployments", "deploy": "deployments",
    "statefulset": "statefulsets", "statefulsets": "statefulsets", "sts": "statefulsets",
    "daemonset": "daemonsets", "daemonsets": "daemonsets", "ds": "daemonsets",
    "replicaset": "replicasets", "replicasets": "replicasets", "rs": "replicasets",
    "job": "jobs", "jobs": "jobs",
    "service": "service", "services": "service", "svc": "service",
    "node": "node", "nodes": "node", "no": "node",
}
#: The spelling completion offers and help shows for each kind, in that order.
KIND_PREFIXES = ("pod/", "deploy/", "sts/", "ds/", "rs/", "job/", "svc/", "node/")


def output_names(plain: tuple[str, ...]) -> list[str]:
    """Every ``-o`` value a command with these plain formats accepts, as help and
    completion show them."""
    return [*plain, *(f"{name}=" for name in TEMPLATE_OUTPUTS)]


def one_of(values: tuple[str, ...]) -> str:
    """``a, b or c``: the hint of a validation error."""
    return ", ".join(values[:-1]) + f" or {values[-1]}" if len(values) > 1 else values[0]
