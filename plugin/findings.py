"""The one findings model of the plugin: ``Finding``, the severity order, the suppression
pass, ``--fail-on``, the merge of the agent's netns findings, and the one renderer
(table, json, yaml) that ``triage`` and ``sweep`` share.

A finding names the objects involved with their roles (``{kind, namespace?, name,
container?, role?}``), says what goes wrong, why, what to change, and the figures behind
it.  Two more fields are engine plumbing and never rendered:

``about``
    the subjects the finding accounts for, as tuples: ``("port", ns, pod, port, proto)``,
    ``("crash", ns, pod, container)`` (why a container keeps failing) and ``("ready", ns,
    pod, container)`` (why it is not ready).  The suppression pass drops a finding whose
    every subject another finding accounts for, when the rule registry says that finding
    explains this kind (``Rule.suppresses``).
``group``
    findings of one rule with the same group (one Service port over several pods) are
    merged into one after suppression, by the rule's ``merge``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Optional, TextIO

from sockdebug_agent.render import escape, severity_tag, value_text
from sockdebug_agent.schema import SEVERITIES

from .errors import FindingsError, UsageError

RANK = {s: len(SEVERITIES) - 1 - i for i, s in enumerate(SEVERITIES)}  #: critical 2, warning 1, info 0
FAIL_ON = SEVERITIES  #: the values --fail-on accepts
FIELDS = ("id", "severity", "title", "objects", "explanation", "fix", "evidence")  #: what is rendered
OUTPUTS = ("table", "json", "yaml")
_KIND_SHORT = {"Service": "svc", "Pod": "pod", "Node": "node", "NetworkPolicy": "netpol"}


class Finding(NamedTuple):
    """One problem: what, who, why, what to change, and the figures behind it."""

    id: str
    severity: str  #: critical | warning | info
    title: str
    objects: list[dict[str, Any]]  #: {kind, namespace?, name, container?, role?}
    explanation: str
    fix: str
    evidence: dict[str, Any]
    about: frozenset = frozenset()  #: subjects it accounts for (suppression; not rendered)
    group: Optional[tuple] = None  #: merge key across pods (not rendered)


class Uninspected(NamedTuple):
    """A pod in scope whose sockets could not be read, and why."""

    namespace: str
    name: str
    node: Optional[str]
    reason: str


class Report(NamedTuple):
    findings: list[Finding]
    uninspected: list[Uninspected]
    inspected: int  #: pods whose sockets were read
    pods: int  #: pods in scope
    not_seen: list[str] = []  #: kinds or parts the whole run could not see, in words


# --- objects ----------------------------------------------------------------------------------

def obj(kind: str, name: str, namespace: Optional[str] = None, container: Optional[str] = None,
        role: Optional[str] = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind}
    if namespace is not None:
        out["namespace"] = namespace
    out["name"] = name
    if container:
        out["container"] = container
    if role:
        out["role"] = role
    return out


def pod_obj(pod_or_key: Any, container: Optional[str] = None, role: Optional[str] = None) -> dict[str, Any]:
    if isinstance(pod_or_key, tuple):
        ns, name = pod_or_key
    else:
        ns, name = pod_or_key["metadata"].get("namespace", ""), pod_or_key["metadata"]["name"]
    return obj("Pod", name, ns, container, role)


def svc_obj(svc: Mapping, role: Optional[str] = None) -> dict[str, Any]:
    return obj("Service", svc["metadata"]["name"], svc["metadata"].get("namespace", ""), role=role)


def node_obj(node: str, role: Optional[str] = None) -> dict[str, Any]:
    return obj("Node", node, role=role)


def policy_obj(policy: Mapping, role: Optional[str] = None) -> dict[str, Any]:
    return obj("NetworkPolicy", policy["metadata"]["name"], policy["metadata"].get("namespace", ""), role=role)


def object_text(o: Mapping[str, Any]) -> str:
    """kubectl-style: ``svc/web -n shop``, ``pod/api -n shop (container app, crash-looping)``."""
    text = f"{_KIND_SHORT.get(o['kind'], o['kind'].lower())}/{o['name']}"
    if o.get("namespace"):
        text += f" -n {o['namespace']}"
    extra = [f"container {o['container']}"] if o.get("container") else []
    if o.get("role"):
        extra.append(o["role"])
    return text + (f" ({', '.join(extra)})" if extra else "")


def pods_of(f: Finding) -> set[tuple[str, str]]:
    return {(o.get("namespace", ""), o["name"]) for o in f.objects if o["kind"] == "Pod"}


# --- order, suppression, grouping -------------------------------------------------------------

def order(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first, then by id, then by the objects named: the order of every output."""
    return sorted(findings, key=lambda f: (-RANK[f.severity], f.id, [object_text(o) for o in f.objects]))


def suppress(findings: Sequence[Finding], suppresses: Mapping[str, Iterable[str]]) -> list[Finding]:
    """Drop each finding all of whose subjects other findings account for, where the rule of
    the other finding explains this id (``suppresses[other.id]``) and the other finding is at
    least as severe (a warning never hides a critical finding).  Every finding counts as
    an explainer, suppressed or not, so explanation is transitive.  The survivor records the
    ids it explains in ``evidence.explains``."""
    covers: dict[Any, list[int]] = defaultdict(list)
    for i, f in enumerate(findings):
        for s in f.about:
            covers[s].append(i)
    explains: dict[int, set[str]] = defaultdict(set)
    dropped: set[int] = set()
    for i, f in enumerate(findings):
        if not f.about:
            continue
        by: set[int] = set()
        for s in f.about:
            found = [j for j in covers[s] if j != i and f.id in suppresses.get(findings[j].id, ())
                     and RANK[findings[j].severity] >= RANK[f.severity]]
            if not found:
                break
            by.update(found)
        else:
            dropped.add(i)
            for j in by:
                explains[j].add(f.id)
    out = []
    for i, f in enumerate(findings):
        if i in dropped:
            continue
        if explains.get(i):
            known = set(f.evidence.get("explains", ()))
            f = f._replace(evidence={**f.evidence, "explains": sorted(explains[i] | known)})
        out.append(f)
    return out


def merge_groups(findings: Sequence[Finding], mergers: Mapping[str, Callable[[list[Finding]], Finding]]
                 ) -> list[Finding]:
    """One finding per (id, group): the rule's merger joins the per-pod findings."""
    groups: dict[tuple, list[Finding]] = defaultdict(list)
    out: list[Finding] = []
    for f in findings:
        if f.group is None or f.id not in mergers:
            out.append(f)
        else:
            if (f.id, f.group) not in groups:
                out.append(f)  # placeholder, replaced below
            groups[f.id, f.group].append(f)
    return [mergers[f.id](groups[f.id, f.group]) if f.group is not None and f.id in mergers else f for f in out]


def dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per id, objects and subjects (node rules see a conflict from each pod's side)."""
    return list({(f.id, repr(f.objects), f.about, f.group): f for f in findings}.values())


# --- --fail-on --------------------------------------------------------------------------------

def at_or_above(findings: Iterable[Finding], severity: str) -> list[Finding]:
    return [f for f in findings if RANK[f.severity] >= RANK[severity]]


def fail_on(findings: Iterable[Finding], severity: Optional[str]) -> None:
    """The one ``--fail-on`` evaluation: FindingsError (exit 1) when a finding is at least
    ``severity``; nothing when ``severity`` is None."""
    if severity is None:
        return
    worst = at_or_above(findings, severity)
    if worst:
        raise FindingsError(f"{len(worst)} finding(s) at or above {severity}", "see the findings above")


# --- the agent's findings ---------------------------------------------------------------------

def from_agent(rec: Any, target: dict[str, Any]) -> Finding:
    """An agent ``finding`` record (netns-only: CLOSE-WAIT, backlog, fds, conntrack, ...) in
    this model: ``next_step`` is the fix, the pod or node it ran in the one object."""
    return Finding(rec.id, rec.severity, rec.title, [target], rec.explanation, rec.next_step, dict(rec.evidence))


# --- rendering --------------------------------------------------------------------------------

def finding_dict(f: Finding) -> dict[str, Any]:
    return {name: getattr(f, name) for name in FIELDS}


def findings_text(findings: Sequence[Finding], color: bool = False, empty: str = "no findings") -> str:
    """The table form: one block per finding, every target-supplied string escaped."""
    out = []
    for f in findings:
        out.append(f"{severity_tag(f.severity, color)}  {escape(f.title)}  [{escape(f.id)}]")
        out.append("    objects: " + "; ".join(escape(object_text(o)) for o in f.objects))
        out.append(f"    why: {escape(f.explanation)}")
        out.append(f"    fix: {escape(f.fix)}")
        if f.evidence:
            out.append("    evidence: " + ", ".join(f"{escape(k)}={value_text(v)}" for k, v in f.evidence.items()))
        out.append("")
    if not findings:
        out += [empty, ""]
    return "\n".join(out)


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    found = list(findings)
    return {s: sum(1 for f in found if f.severity == s) for s in SEVERITIES}


def document(report: Report, scope: dict[str, Any], kind: str) -> dict[str, Any]:
    """The json/yaml document of a report (``kind``: SweepReport, TriageReport)."""
    doc = {
        "apiVersion": "sockdebug.io/v1", "kind": kind, "scope": scope,
        "summary": {"pods": report.pods, "inspected": report.inspected, "findings": counts(report.findings)},
        "findings": [finding_dict(f) for f in report.findings],
        "uninspected": [u._asdict() for u in report.uninspected],
    }
    if report.not_seen:
        doc["not_seen"] = list(report.not_seen)
    return doc


def text(report: Report, scope: dict[str, Any], color: bool = False, empty: str = "no findings") -> str:
    """The table output of a report: findings, what was not inspected or seen, a summary."""
    out = [findings_text(report.findings, color, empty)]
    if report.uninspected:
        out.append(f"not inspected ({len(report.uninspected)}):")
        out += [f"    pod/{escape(u.name)} -n {escape(u.namespace)}: {escape(u.reason)}" for u in report.uninspected]
        out.append("")
    if report.not_seen:
        out.append("not seen: " + "; ".join(escape(s) for s in report.not_seen))
        out.append("")
    tally = ", ".join(f"{n} {s}" for s, n in counts(report.findings).items())
    elapsed = f" in {scope['elapsed_s']:.1f}s" if scope.get("elapsed_s") is not None else ""
    what = (", ".join(f"node/{escape(n)}" for n in scope["nodes"]) if scope.get("nodes") and not report.pods
            else f"{report.inspected} of {report.pods} pods")
    out.append(f"{what} inspected via {scope.get('via', '?')}{elapsed}: {tally}")
    if scope.get("requests"):  # retry.Requests.as_dict(): what the run asked of the API server
        from .retry import summary_line

        out.append(f"API: {summary_line(scope['requests'])}")
    return "\n".join(out)


def write(doc: dict[str, Any], output: str, out: TextIO) -> None:
    """A report document as json or yaml (``table`` is ``text``)."""
    from .render import write_doc

    if output not in OUTPUTS[1:]:
        raise UsageError(f"no document for output {output!r}", f"use {', '.join(OUTPUTS[1:])}, or text() for table")
    write_doc(doc, output, out)
