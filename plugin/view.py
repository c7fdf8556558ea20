"""What the findings rules look at: one ``PodView`` per pod in scope, one ``ServiceView``
per Service selecting one of them, one ``NodeView`` per node, built once from plain API
dicts and the agent's records (``ClusterInput``).  Pure: no I/O, no API calls.

Building is linear in the input: Services find their pods through a (namespace, label)
index, EndpointSlices and Events are indexed by pod, NetworkPolicies are matched within
their namespace only.  Where a part of the input is missing (a kind that could not be
listed, a pod whose sockets could not be read, a log that was not fetched) the view says so
in words (``unseen``) and holds None rather than an empty list, so that a rule can tell "no
listener" from "not seen".
"""

from __future__ import annotations

import functools
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Optional

from . import podspec
from .podspec import PodKey

NODE_PORT_RANGE = (30000, 32767)  # kube-apiserver --service-node-port-range default
EPHEMERAL_RANGE = (32768, 60999)  # net.ipv4.ip_local_port_range default
_WILDCARDS = frozenset({None, "", "*", "0.0.0.0", "::"})
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# The kinds phase-2 collection lists, by the name ``ClusterInput.not_listed`` uses.
KINDS = ("services", "endpointslices", "networkpolicies", "events", "nodes")


# --- addresses and listeners ------------------------------------------------------------

@functools.lru_cache(maxsize=65536)
def normal_ip(addr: Optional[str]) -> Optional[str]:
    """The address in canonical text, IPv4-mapped IPv6 as IPv4, scope id dropped; None for
    anything that is not an address (wildcards included).  Cached: a run sees few
    distinct bind addresses."""
    if not addr or addr in ("*", "0.0.0.0", "::"):
        return None
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def is_loopback(addr: Optional[str]) -> bool:
    """127.0.0.0/8, ::1 and ::ffff:127.x."""
    ip = normal_ip(addr)
    return ip is not None and (ip.startswith("127.") or ip == "::1")


def overlaps(a: Optional[str], b: Optional[str]) -> bool:
    """Two bind addresses on one port collide: a wildcard collides with everything."""
    return a in _WILDCARDS or b in _WILDCARDS or a == b


class Listener(NamedTuple):
    """A listening TCP socket or a bound, unconnected UDP socket."""

    protocol: str  #: TCP | UDP
    address: str  #: "0.0.0.0", "::", "127.0.0.1", ...
    port: int
    containers: tuple[str, ...]  #: owning containers, when owners could be read
    owners: tuple[dict, ...]  #: the agent's process records (pid, comm, container)
    v6only: Optional[bool] = None
    loopback: bool = False  #: bound to 127.0.0.0/8, ::1 or ::ffff:127.x (set by ``listeners``)

    @property
    def processes(self) -> tuple[str, ...]:
        """``comm/pid`` of each owner (formatted only for the few listeners a finding shows)."""
        return tuple(dict.fromkeys(f"{p.get('comm')}/{p.get('pid')}" for p in self.owners))

    def text(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol.lower()} {host}:{self.port}"

    def accepts(self, target: Optional[str]) -> bool:
        """Whether a connection to ``target`` (an address of this namespace; None: some
        non-loopback address we do not know) reaches this socket."""
        addr = self.address
        if addr in ("*", "", "::"):
            return not (self.v6only and target is not None and ":" not in target)
        if addr == "0.0.0.0":
            return target is None or ":" not in target
        if self.loopback:
            return target is not None and is_loopback(target)
        return target is None or normal_ip(addr) == normal_ip(target)


def listeners(sockets: Iterable[Any]) -> list[Listener]:
    """TCP LISTEN and bound UDP UNCONN sockets as ``Listener`` s (other records ignored)."""
    out = []
    for s in sockets:
        # connections are most of a busy pod's sockets: rejected on the first two compares
        netid, state = getattr(s, "netid", None), getattr(s, "state", None)
        if netid == "tcp" and state == "LISTEN":
            proto = "TCP"
        elif netid == "udp" and state == "UNCONN":
            proto = "UDP"
        else:
            continue
        if getattr(s, "type", "socket") != "socket" or s.family not in ("inet", "inet6") or not s.local_port:
            continue
        procs = s.processes or ()
        containers = tuple(sorted({p["container"] for p in procs if p.get("container")}))
        address = s.local_address or "*"
        out.append(Listener(proto, address, s.local_port, containers, tuple(procs), s.v6only, is_loopback(address)))
    return out


# --- the input ------------------------------------------------------------------------------

class PodObservation(NamedTuple):
    """What the agent saw in one pod's network namespace."""

    sockets: Sequence[Any]  #: Socket records (listeners and connections); owners carry ``container``
    limits: Any = None  #: the agent's Limits record of that namespace (counters), if read
    findings: Sequence[Any] = ()  #: the agent's own Finding records (``triage``), if run
    capture: Any = None  #: an ``events.Capture`` of its closed connections (``triage --events``), if run


class NodeObservation(NamedTuple):
    """What the agent saw in a node's own network namespace."""

    sockets: Sequence[Any] = ()  #: sockets of the node's namespace that no pod's process holds
    limits: Any = None
    findings: Sequence[Any] = ()  #: the agent's Finding records of ``triage --host``
    capture: Any = None  #: an ``events.Capture`` of the namespace's closed connections, if run


class ClusterInput(NamedTuple):
    """Everything the engine reads; phase-2 collection fills it from the API and the agent."""

    pods: Sequence[dict]  #: the pods in scope (every phase; only running ones can be observed)
    context_pods: Sequence[dict] = ()  #: other pods (any namespace): Services' other pods, node neighbours
    services: Sequence[dict] = ()
    endpoint_slices: Sequence[dict] = ()  #: discovery.k8s.io/v1 EndpointSlices
    network_policies: Sequence[dict] = ()
    nodes: Sequence[dict] = ()
    events: Sequence[dict] = ()  #: core/v1 or events.k8s.io/v1 Events about the pods
    logs: Mapping[tuple[str, str, str], str] = {}  #: (ns, pod, container) -> last lines of its failed run
    observed: Mapping[PodKey, PodObservation] = {}  #: pods whose network namespace the agent read
    uninspected: Mapping[PodKey, str] = {}  #: pods whose namespace could not be read -> why
    node_observed: Mapping[str, NodeObservation] = {}  #: node -> its own namespace, when read
    not_listed: Mapping[str, str] = {}  #: kind (KINDS) -> why it could not be listed
    scope_nodes: Sequence[str] = ()  #: node targets (``triage node/NAME``): their findings are in scope
    node_port_range: tuple[int, int] = NODE_PORT_RANGE
    not_seen: Sequence[str] = ()  #: anything else the collection could not see, in words (the report's)


class Event(NamedTuple):
    """One Event about a pod, both API versions read alike."""

    reason: str
    message: str
    type: str  #: Normal | Warning
    count: int
    container: Optional[str]  #: from fieldPath ``spec.containers{NAME}``
    last: str  #: last time seen (RFC 3339 text), for ordering


def event(raw: Mapping) -> tuple[Optional[PodKey], Event]:
    """(the pod it is about, the Event) of a core/v1 or events.k8s.io/v1 Event."""
    obj = raw.get("involvedObject") or raw.get("regarding") or {}
    path = obj.get("fieldPath") or ""
    container = path[path.index("{") + 1:-1] if "{" in path and path.endswith("}") else None
    series = raw.get("series") or {}
    count = raw.get("count") or series.get("count") or raw.get("deprecatedCount") or 1
    last = (raw.get("lastTimestamp") or series.get("lastObservedTime") or raw.get("eventTime")
            or raw.get("deprecatedLastTimestamp") or "")
    pod = (obj.get("namespace", ""), obj["name"]) if obj.get("kind") == "Pod" and obj.get("name") else None
    return pod, Event(raw.get("reason") or "", raw.get("message") or raw.get("note") or "", raw.get("type") or "",
                      int(count), container, str(last))


class EndpointState(NamedTuple):
    """The pod's entry in one of its Services' EndpointSlices."""

    service: str
    slice: str
    ready: bool  #: conditions.ready (absent counts as ready, as the API documents)
    addresses: tuple[str, ...]


class ServiceView:
    """A Service with a selector, the live pods it selects (scope and context) and what its
    EndpointSlices say."""

    def __init__(self, svc: dict, selected: list[dict], slices_known: bool,
                 endpoints: Optional[list[tuple[PodKey, EndpointState]]]):
        self.svc = svc
        self.key: PodKey = (svc["metadata"].get("namespace", ""), svc["metadata"]["name"])
        self.spec = svc.get("spec") or {}
        self.selected = selected
        self.slices_known = slices_known
        self.endpoints = endpoints or []

    @property
    def name(self) -> str:
        return self.key[1]

    def ports(self) -> list[dict]:
        return [sp for sp in self.spec.get("ports") or [] if (sp.get("protocol") or "TCP") in ("TCP", "UDP")]

    def ready_endpoints(self) -> Optional[int]:
        """Distinct ready endpoints (None when the EndpointSlices were not read)."""
        if not self.slices_known:
            return None
        return len({(k or e.addresses) for k, e in self.endpoints if e.ready})

    @staticmethod
    def port_label(sp: Mapping) -> str:
        return f"port {sp.get('name') + ' ' if sp.get('name') else ''}{sp.get('port')}"


class Target(NamedTuple):
    """A Service port that resolves in a pod: where the Service sends traffic."""

    service: ServiceView
    service_port: dict
    port: int  #: the pod's port (the targetPort, a name resolved)
    protocol: str


class PodView(NamedTuple):
    """One pod in scope and everything known about it (spec-derived parts computed once)."""

    pod: dict
    key: PodKey
    node: Optional[str]
    ports: list[podspec.ContainerPort]  #: declared by its containers and sidecars
    running: set[str]  #: containers running now
    probes: list[podspec.Probe]
    targets: list[Target]  #: Service ports that resolve in it
    trouble: dict[str, dict]  #: container -> how it is failing (``podspec.trouble``), failing ones only
    listeners: Optional[list[Listener]]  #: None: its network namespace was not read
    sockets: Sequence[Any]  #: every socket record read (connections too)
    services: list[ServiceView]  #: Services selecting it
    endpoints: list[EndpointState]  #: its entries in EndpointSlices (by targetRef, else by address)
    policies: Optional[list[dict]]  #: NetworkPolicies of type Ingress selecting it (None: not listed)
    events: list[Event]  #: newest last
    logs: dict[str, str]  #: container -> last log lines of its failed run
    limits: Any  #: the agent's Limits record of its namespace
    agent_findings: Sequence[Any]
    unseen: list[str]  #: what could not be seen, in words
    capture: Any = None  #: its ``events.Capture`` (``triage --events``), None when not captured

    @property
    def host_network(self) -> bool:
        return podspec.host_network(self.pod)

    def target_ip(self) -> Optional[str]:
        """The address the kubelet and Services connect to: the pod IP (a hostNetwork pod's
        is the node's)."""
        ips = podspec.pod_ips(self.pod)
        return ips[0] if ips else None

    def counters(self, *names: str) -> dict[str, int]:
        """``Group.Name`` -> value of the agent's counters that are present and non-zero."""
        found = {}
        counters = getattr(self.limits, "counters", None) or {}
        for name in names:
            group, _, field = name.partition(".")
            value = (counters.get(group) or {}).get(field)
            if value:
                found[name] = value
        return found


class NodeView(NamedTuple):
    """One node: the pods on it (live, or rejected by its kubelet) and its own listeners."""

    name: str
    node: Optional[dict]
    pods: list[dict]
    host: list[Listener]  #: the node namespace's listeners no pod owns (empty when not read)
    host_seen: bool
    agent_findings: Sequence[Any]


# --- building ---------------------------------------------------------------------------------

class ClusterView:
    """The views of one run, built once from a ``ClusterInput``."""

    def __init__(self, data: ClusterInput):
        self.data = data
        self.scope = [p for p in data.pods]
        self.scope_keys = {podspec.key(p) for p in data.pods}
        seen: dict[PodKey, dict] = {}
        for p in [*data.pods, *data.context_pods]:
            seen.setdefault(podspec.key(p), p)
        self.all_pods = list(seen.values())
        self.listeners: dict[PodKey, list[Listener]] = {k: listeners(o.sockets) for k, o in data.observed.items()}
        self.node_port_range = data.node_port_range
        self._ports: dict[int, list[podspec.ContainerPort]] = {}
        self._resolved: dict[tuple, Optional[int]] = {}
        self._index_labels()
        self._index_endpoints()
        self.services = self._services()
        self._policies_by_ns: dict[str, list[dict]] = defaultdict(list)
        for pol in data.network_policies:
            if _ingress(pol):
                self._policies_by_ns[pol["metadata"].get("namespace", "")].append(pol)
        self._events: dict[PodKey, list[Event]] = defaultdict(list)
        for raw in data.events:
            pod, ev = event(raw)
            if pod is not None:
                self._events[pod].append(ev)
        for evs in self._events.values():
            evs.sort(key=lambda e: e.last)
        self._services_of: dict[PodKey, list[ServiceView]] = defaultdict(list)
        for sv in self.services:
            for p in sv.selected:
                self._services_of[podspec.key(p)].append(sv)
        self.pods = [self._pod_view(p) for p in data.pods]
        self.nodes = self._node_views()

    @functools.cached_property
    def peers(self) -> Any:
        """A ``peers.PeerIndex`` of every listed pod, Service and node, built on first use (the
        connection rules name peers with it)."""
        from .peers import PeerIndex  # peers reads this module's addresses

        return PeerIndex(self.all_pods, self.data.services, self.data.nodes)

    def _index_labels(self) -> None:
        self._by_label: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
        for p in self.all_pods:
            if not podspec.is_live(p):
                continue
            ns = p["metadata"].get("namespace", "")
            for k, v in podspec.labels(p).items():
                self._by_label[ns, k, v].append(p)

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[dict]:
        """Live pods (scope and context) a Service-style selector picks, through the index."""
        if not selector:
            return []
        candidates = min((self._by_label.get((namespace, k, v), []) for k, v in selector.items()), key=len)
        return [p for p in candidates if podspec.selects(selector, podspec.labels(p))]

    def _index_endpoints(self) -> None:
        self.slices_known = "endpointslices" not in self.data.not_listed
        self._endpoints: dict[PodKey, list[tuple[PodKey, EndpointState]]] = defaultdict(list)  # svc -> (pod, state)
        self._endpoints_of: dict[PodKey, list[EndpointState]] = defaultdict(list)  # pod -> its entries
        by_ip: dict[tuple[str, str], PodKey] = {}
        for p in self.all_pods:
            for ip in podspec.pod_ips(p):
                by_ip[p["metadata"].get("namespace", ""), ip] = podspec.key(p)
        for sl in self.data.endpoint_slices:
            meta = sl.get("metadata") or {}
            ns, svc = meta.get("namespace", ""), (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if not svc:
                continue
            for ep in sl.get("endpoints") or []:
                ref = ep.get("targetRef") or {}
                addresses = tuple(ep.get("addresses") or ())
                pod = ((ref.get("namespace") or ns, ref["name"]) if ref.get("kind") == "Pod" and ref.get("name")
                       else next((by_ip[ns, a] for a in addresses if (ns, a) in by_ip), None))
                ready = (ep.get("conditions") or {}).get("ready")
                state = EndpointState(svc, meta.get("name", ""), ready is not False, addresses)
                self._endpoints[ns, svc].append((pod, state))
                if pod is not None:
                    self._endpoints_of[pod].append(state)

    def _services(self) -> list[ServiceView]:
        out = []
        for svc in self.data.services:
            spec = svc.get("spec") or {}
            selector = spec.get("selector")
            if not selector or spec.get("type") == "ExternalName":
                continue
            ns = svc["metadata"].get("namespace", "")
            selected = self.select(ns, selector)
            if not selected:
                continue
            endpoints = self._endpoints.get((ns, svc["metadata"]["name"]))
            out.append(ServiceView(svc, selected, self.slices_known, endpoints))
        return out

    def _pod_view(self, pod: dict) -> PodView:
        k = podspec.key(pod)
        ns = k[0]
        obs = self.data.observed.get(k)
        services = self._services_of.get(k, [])
        endpoints = self._endpoints_of.get(k, [])
        policies = None
        if "networkpolicies" not in self.data.not_listed:
            labels = podspec.labels(pod)
            policies = [pol for pol in self._policies_by_ns.get(ns, [])
                        if podspec.label_selector_matches((pol.get("spec") or {}).get("podSelector"), labels)]
        logs = {c["name"]: self.data.logs[(*k, c["name"])] for c in _all_containers(pod)
                if (*k, c["name"]) in self.data.logs}
        statuses = podspec.statuses(pod)
        troubles = {name: t for name, s in statuses.items() if (t := podspec.status_trouble(s))}
        running = {name for name, s in statuses.items() if "running" in (s.get("state") or {})}
        targets = []
        for sv in services:
            for sp in sv.ports():
                proto = sp.get("protocol") or "TCP"
                port = self.resolve(pod, sp.get("targetPort", sp.get("port")), proto)
                if port:
                    targets.append(Target(sv, sp, port, proto))
        return PodView(pod, k, (pod.get("spec") or {}).get("nodeName"), self.ports(pod),
                       running, podspec.probes(pod), targets, troubles,
                       self.listeners.get(k),
                       obs.sockets if obs else (), services, endpoints, policies, self._events.get(k, []), logs,
                       obs.limits if obs else None, obs.findings if obs else (),
                       self._unseen(pod, k, obs, logs, troubles), obs.capture if obs else None)

    def _unseen(self, pod: dict, k: PodKey, obs: Optional[PodObservation], logs: dict[str, str],
                troubles: dict[str, dict]) -> list[str]:
        out = []
        if obs is None:
            phase = (pod.get("status") or {}).get("phase") or "Unknown"
            why = self.data.uninspected.get(k) or ("not collected" if phase == "Running" else f"the pod is {phase}")
            out.append(f"sockets: its network namespace was not read ({why})")
        out += [f"logs: the failed run of container {name} was not read" for name in troubles if name not in logs]
        for kind in KINDS:
            if kind in self.data.not_listed:
                out.append(f"{kind}: not listed ({self.data.not_listed[kind]})")
        return out

    def _node_views(self) -> dict[str, NodeView]:
        by_node: dict[str, list[dict]] = defaultdict(list)
        for pod in self.all_pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if node and (podspec.is_live(pod) or podspec.rejected_for_ports(pod)):
                by_node[node].append(pod)
        nodes = {n["metadata"]["name"]: n for n in self.data.nodes}
        out = {}
        for name in sorted(set(by_node) | set(self.data.scope_nodes)):
            obs = self.data.node_observed.get(name)
            out[name] = NodeView(name, nodes.get(name), by_node.get(name, []), listeners(obs.sockets) if obs else [],
                                 obs is not None, obs.findings if obs else ())
        return out

    def ports(self, pod: dict) -> list[podspec.ContainerPort]:
        """``podspec.container_ports``, computed once per pod of the run."""
        found = self._ports.get(id(pod))
        if found is None:
            found = self._ports[id(pod)] = podspec.container_ports(pod)
        return found

    def resolve(self, pod: dict, target: Any, protocol: str) -> Optional[int]:
        """``podspec.resolve_target_port``, once per pod, target and protocol of the run."""
        memo = (id(pod), target, protocol)
        if memo not in self._resolved:
            self._resolved[memo] = podspec.resolve_target_port(pod, target, protocol)
        return self._resolved[memo]

    def pending_for_ports(self) -> list[dict]:
        """Pods no node could take for want of a free host port."""
        return [p for p in self.all_pods if not (p.get("spec") or {}).get("nodeName")
                and podspec.unschedulable_for_ports(p)]


def _all_containers(pod: Mapping) -> list[dict]:
    """Every container whose logs may explain a failure: init containers included."""
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _ingress(policy: Mapping) -> bool:
    """The policy restricts ingress: policyTypes lists Ingress, or is absent (Ingress is then
    always implied)."""
    types = (policy.get("spec") or {}).get("policyTypes")
    return not types or "Ingress" in types
