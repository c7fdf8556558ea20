"""What the findings engine reads from the API, for ``triage`` and ``sweep`` alike: the
kinds a pod's view needs (Services, EndpointSlices, NetworkPolicies, Events, nodes, the
other pods), each listed once per namespace in scope or once for the whole cluster (never
once per pod), and the last lines of every failing container's failed run.

A kind that may not be listed is not an error: it is left out and named in
``not_listed`` (kind -> why), the report says what could not be seen, and the rules that
need it stay silent.  Pods and Services are listed cluster-wide where the user may (the
other namespaces' pods name peers and share nodes; a Service anywhere may own a
nodePort), else in the namespaces in scope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Optional

from . import podspec
from .errors import SockdebugError
from .kube import Forbidden, NotFound
from .podspec import PodKey

LOG_LINES = 30  #: lines of a failed run's log read (the bind error is among the last)
POD_EVENTS = "involvedObject.kind=Pod"  #: the Events the rules read: about pods
PARALLEL = 8


class Reads(NamedTuple):
    """The API's part of a ``ClusterInput``."""

    services: list[dict]
    endpoint_slices: list[dict]
    network_policies: list[dict]
    events: list[dict]
    nodes: list[dict]
    pods: list[dict]  #: the other pods (context): cluster-wide, or of the namespaces in scope
    not_listed: dict[str, str]  #: kind -> why it could not be listed
    notes: list[str]  #: a kind listed in part (the namespaces in scope only), in words


def unlisted_reason(exc: SockdebugError) -> str:
    """Why a kind is missing, short enough for a report line."""
    if isinstance(exc, Forbidden):
        return f"no permission to {exc.verb} {exc.resource} (see docs/rbac.md)"
    return exc.cause


def _one(fn: Callable[[], list[dict]], kind: str, not_listed: dict[str, str]) -> list[dict]:
    try:
        return fn()
    except (Forbidden, NotFound) as exc:  # 404: an API group this server does not serve
        not_listed.setdefault(kind, unlisted_reason(exc))
        return []


def _per_namespace(fn: Callable[[Optional[str]], list[dict]], namespaces: Optional[Sequence[str]]) -> list[dict]:
    if namespaces is None:
        return fn(None)
    return [item for ns in namespaces for item in fn(ns)]


def _wide(fn: Callable[[Optional[str]], list[dict]], kind: str, namespaces: Optional[Sequence[str]],
          not_listed: dict[str, str], notes: list[str]) -> list[dict]:
    """Every namespace's, else (forbidden cluster-wide) those of the namespaces in scope."""
    try:
        return fn(None)
    except Forbidden as exc:
        if namespaces is None:
            not_listed.setdefault(kind, unlisted_reason(exc))
            return []
        notes.append(f"{kind}: only namespace {', '.join(namespaces)} could be listed ({unlisted_reason(exc)} "
                     "cluster-wide)")
        return _one(lambda: _per_namespace(fn, namespaces), kind, not_listed)


ALL = ("services", "endpointslices", "networkpolicies", "events", "nodes", "pods")


def read(kube: Any, namespaces: Optional[Sequence[str]], *, kinds: Sequence[str] = ALL,
         event_selector: str = POD_EVENTS, pod_selector: Optional[str] = None, parallel: int = PARALLEL) -> Reads:
    """Everything the engine reads besides the pods in scope and the agents' records.

    ``namespaces``: the namespaces in scope (None: the whole cluster), where EndpointSlices,
    NetworkPolicies and Events are listed (once each per namespace); Services, nodes and
    pods (the other pods, for context) are listed cluster-wide.  ``kinds``: which of
    ``ALL`` to list; ``event_selector``: the Events' field selector (``involvedObject.uid=UID``
    for one pod); ``pod_selector``: the pods' (``spec.nodeName=NODE``)."""
    not_listed: dict[str, str] = {}
    notes: list[str] = []
    jobs: dict[str, Callable[[], list[dict]]] = {
        "services": lambda: _wide(kube.list_services, "services", namespaces, not_listed, notes),
        "endpointslices": lambda: _one(lambda: _per_namespace(kube.list_endpoint_slices, namespaces),
                                       "endpointslices", not_listed),
        "networkpolicies": lambda: _one(lambda: _per_namespace(kube.list_network_policies, namespaces),
                                        "networkpolicies", not_listed),
        "events": lambda: _one(lambda: _per_namespace(lambda ns: kube.list_events(ns, event_selector), namespaces),
                               "events", not_listed),
        "nodes": lambda: _one(kube.list_nodes, "nodes", not_listed),
        "pods": lambda: _wide(lambda ns: kube.list_pods(ns, field_selector=pod_selector), "pods", namespaces,
                              not_listed, notes),
    }
    wanted = {kind: job for kind, job in jobs.items() if kind in kinds}
    with ThreadPoolExecutor(max_workers=min(parallel, len(wanted))) as pool:
        got = dict(zip(wanted, pool.map(lambda job: job(), wanted.values())))
    return Reads(got.get("services", []), got.get("endpointslices", []), got.get("networkpolicies", []),
                 got.get("events", []), got.get("nodes", []), got.get("pods", []), not_listed, notes)


def read_for_peers(kube: Any, namespace: str) -> Any:
    """``peers.Listed``: every pod, Service and node (the watch cache's copy), a kind that
    may not be listed cluster-wide taken from ``namespace`` only."""
    from .peers import Listed

    not_listed: dict[str, str] = {}
    notes: list[str] = []
    jobs = (lambda: _wide(lambda ns: kube.list_pods(ns, cached=True), "pods", [namespace], not_listed, notes),
            lambda: _wide(lambda ns: kube.list_services(ns, cached=True), "services", [namespace], not_listed,
                          notes),
            lambda: _one(lambda: kube.list_nodes(cached=True), "nodes", not_listed))
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        pods, services, nodes = pool.map(lambda job: job(), jobs)
    notes += [f"{kind}: not listed ({why}): {kind} are not named" for kind, why in sorted(not_listed.items())]
    return Listed(pods, services, nodes, notes)


# --- the failed runs' logs ------------------------------------------------------------------

def failing(pods: Iterable[dict]) -> list[tuple[PodKey, str]]:
    """(pod, container) of every failing container (init containers and sidecars included)
    of the live pods: the ones whose last run's log may say why."""
    out = []
    for p in pods:
        if not podspec.is_live(p):
            continue
        spec = p.get("spec") or {}
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            if podspec.trouble(p, c["name"]):
                out.append((podspec.key(p), c["name"]))
    return out


def failed_run_logs(kube: Any, pods: Iterable[dict], parallel: int = PARALLEL) -> dict[tuple[str, str, str], str]:
    """The last lines of every failing container's failed run, where the bind error is:
    the previous run (CrashLoopBackOff, or restarted and running again) and the current
    one (it may have just terminated, and the kubelet may already have dropped the one
    before).  A log that cannot be read is left out (the view then says it was not seen)."""
    wanted = failing(pods)

    def one(item: tuple[PodKey, str]) -> Optional[tuple[tuple[str, str, str], str]]:
        (ns, name), container = item
        texts = []
        for previous in (True, False):
            try:
                texts.append(kube.log_tail(ns, name, container, lines=LOG_LINES, previous=previous))
            except SockdebugError:
                continue
        return ((ns, name, container), "\n".join(texts)) if texts else None

    if not wanted:
        return {}
    with ThreadPoolExecutor(max_workers=min(parallel, len(wanted))) as pool:
        return dict(found for found in pool.map(one, wanted) if found is not None)


# --- a host network namespace's sockets, per owner ---------------------------------------------

def split_host_sockets(sockets: Iterable[Any], pods: Iterable[dict], ids: Callable[[dict], dict[str, str]]
                       ) -> tuple[dict[PodKey, list[Any]], list[Any]]:
    """A node's network namespace seen whole: the sockets held by a container of one of
    ``pods`` (hostNetwork pods share it), each owner tagged with its container's name, and
    the node's own (no pod's process holds them).  ``ids``: a pod's container id -> name."""
    owner_of: dict[str, tuple[PodKey, str]] = {}
    for p in pods:
        for cid, name in ids(p).items():
            owner_of[cid] = (podspec.key(p), name)
    mine: dict[PodKey, list[Any]] = {}
    host = []
    for s in sockets:
        held: dict[PodKey, list[dict]] = {}
        for proc in s.processes or ():
            owner = owner_of.get(proc.get("container_id") or "")
            if owner:
                held.setdefault(owner[0], []).append({**proc, "container": owner[1]})
        for k, procs in held.items():
            mine.setdefault(k, []).append(s._replace(processes=procs))
        if not held:
            host.append(s)
    return mine, host
