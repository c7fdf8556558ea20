"""What every rule module shares: the registry record, the subjects the suppression pass
matches on, and small helpers over views."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Optional

from .. import podspec
from ..findings import Finding
from ..podspec import PodKey
from ..view import EPHEMERAL_RANGE, Listener


class Rule(NamedTuple):
    """One finding id: its severities, when it fires, its evidence, and which other ids a
    finding of it explains (on the same subjects, at most as severe: see
    ``findings.suppress``).  docs/triage.md lists the same (a unit test keeps them in step)."""

    id: str
    severities: tuple[str, ...]
    when: str
    evidence: tuple[str, ...]
    suppresses: tuple[str, ...] = ()
    merge: Optional[Callable[[list[Finding]], Finding]] = None  #: joins per-pod findings of one group


class Check(NamedTuple):
    """A pure function over one kind of view and the ids it may emit."""

    over: str  #: pod | service | node | cluster
    fn: Callable[..., list[Finding]]
    ids: tuple[str, ...]


# --- subjects -------------------------------------------------------------------------------

def port_subject(k: PodKey, port: int, proto: str) -> tuple:
    """A port of a pod's network namespace."""
    return ("port", k[0], k[1], port, proto)


def ready_subject(k: PodKey, container: str) -> tuple:
    """Why a container of a pod is not ready."""
    return ("ready", k[0], k[1], container)


def crash_subjects(k: PodKey, container: str) -> set[tuple]:
    """Why a container keeps failing (and so is not ready either)."""
    return {("crash", k[0], k[1], container), ready_subject(k, container)}


# --- helpers over views ---------------------------------------------------------------------

def on_port(ls: Iterable[Listener], port: int, proto: str) -> list[Listener]:
    return [lst for lst in ls if lst.port == port and lst.protocol == proto]


def client_port(lst: Listener) -> bool:
    """A UDP socket in the ephemeral range: a resolver's or client's, not a server."""
    return lst.protocol == "UDP" and EPHEMERAL_RANGE[0] <= lst.port <= EPHEMERAL_RANGE[1]


def owners_text(ls: Iterable[Listener]) -> str:
    """Who holds these listeners: containers and processes, never 'an unknown process' when
    a container is known."""
    ls = list(ls)
    containers = sorted({c for lst in ls for c in lst.containers})
    procs = sorted({p for lst in ls for p in lst.processes})
    if containers:
        return f"container {', '.join(containers)}" + (f" ({', '.join(procs[:3])})" if procs else "")
    if procs:
        return ", ".join(procs[:3])
    return "a process the agent could not attribute"


def restarts(pod: dict, container: str) -> int:
    return int((podspec.statuses(pod).get(container) or {}).get("restartCount") or 0)


def recent(events: Iterable[Any], container: Optional[str], *prefixes: str, limit: int = 3) -> list[str]:
    """The newest messages of Events about ``container`` (None: any) starting with one of
    ``prefixes``, newest last, with their counts."""
    out = []
    for e in events:
        if container is not None and e.container not in (None, container):
            continue
        if any(e.message.startswith(p) for p in prefixes):
            out.append(f"{e.message.strip()[:300]}" + (f" (x{e.count})" if e.count > 1 else ""))
    return out[-limit:]
