"""Naming remote addresses: ``pod/NS/NAME``, ``svc/NS/NAME``, ``node/NAME``.

When: ``InspectOptions.names_peers`` says whether a run can show an address worth naming
(a socket list that is not listening-only, in table, wide, json or yaml); then ``Lookup`` lists pods,
Services and nodes once, in the background from the start of the run (through the
client, or on a warm query through ``kubectl get --raw``: no client import), and
``Lookup.namer`` waits for the lists only when a socket really has a remote address to
name (not loopback, not a wildcard); otherwise they are dropped unread.  A kind that may
not be listed cluster-wide is listed in the target's namespace, else left out, and
``notes`` says so: what is not listed is simply not named.

``PeerIndex`` is built once per run from the pods, Services and nodes the run listed (any
of them may be missing: what is not listed is simply not named), then ``lookup(address,
port)`` is one or two dict look-ups.  Addresses are compared in canonical form:
IPv4-mapped IPv6 (``::ffff:10.0.0.5``) as IPv4, IPv6 compressed, a zone id dropped.

Which name an address gets:

- a Service's ClusterIPs (both families of a dual-stack Service), externalIPs and
  load-balancer ingress IPs name the Service (a node's own address wins over an
  externalIP that happens to be one);
- a node's InternalIP/ExternalIP addresses, and the hostIPs pods report, name the node;
- a pod's podIPs name the pod, a running pod over a finished one that left the same IP;
- hostNetwork pods share their node's address, so the address alone names the **node**.
  With the remote **port** (the peer port of a connection this side opened) the node's
  address names the **pod** when the port is one that pod claims on that node (a
  hostNetwork pod's containerPort, or any pod's hostPort), and the **Service** when the
  port is one of its nodePorts.  A node address with any other port stays the node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Optional

from . import podspec
from .view import is_loopback, normal_ip

_KIND = {"pod": "Pod", "svc": "Service", "node": "Node"}
_LIVE = ("Running", "Pending", None)


class Peer(NamedTuple):
    kind: str  #: pod | svc | node
    namespace: Optional[str]
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace is not None else f"{self.kind}/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        """The ``peer`` object of json/yaml: ``{kind: Pod|Service|Node, namespace?, name}``."""
        out: dict[str, Any] = {"kind": _KIND[self.kind]}
        if self.namespace is not None:
            out["namespace"] = self.namespace
        out["name"] = self.name
        return out


def canonical(addr: Optional[str]) -> Optional[str]:
    """The address as the index keys it; None for anything that is not one."""
    if not addr:
        return None
    if ":" not in addr:
        return addr  # dotted IPv4 as the kernel and the API print it: no parsing on the hot path
    return normal_ip(addr)


class PeerIndex:
    """Every address the listed objects own, indexed once."""

    def __init__(self, pods: Iterable[Mapping] = (), services: Iterable[Mapping] = (),
                 nodes: Iterable[Mapping] = ()):
        self._ip: dict[str, Peer] = {}
        self._claims: dict[tuple[str, int], Peer] = {}  #: (node, port) -> pod claiming it on that node
        self._node_ports: dict[int, Peer] = {}  #: nodePort -> Service
        pods = list(pods)
        for node in nodes:
            name = node["metadata"]["name"]
            for a in (node.get("status") or {}).get("addresses") or []:
                if a.get("type") in ("InternalIP", "ExternalIP"):
                    self._put(a.get("address"), Peer("node", None, name), replace=False)
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if not node:
                continue
            st = pod.get("status") or {}
            for ip in [st.get("hostIP"), *[h.get("ip") for h in st.get("hostIPs") or []]]:
                self._put(ip, Peer("node", None, node), replace=False)
            if podspec.host_network(pod):
                for ip in podspec.pod_ips(pod):
                    self._put(ip, Peer("node", None, node), replace=False)
            if podspec.is_live(pod):
                ns, name = podspec.key(pod)
                for cp in podspec.container_ports(pod):
                    if cp.host_port:
                        self._claims.setdefault((node, cp.host_port), Peer("pod", ns, name))
        for svc in services:
            peer = Peer("svc", svc["metadata"].get("namespace", ""), svc["metadata"]["name"])
            spec = svc.get("spec") or {}
            for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
                if ip and ip != "None":
                    self._put(ip, peer, replace=True)
            for sp in spec.get("ports") or []:
                if sp.get("nodePort"):
                    self._node_ports.setdefault(int(sp["nodePort"]), peer)
            lb = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            for ip in [*(spec.get("externalIPs") or []), *[i.get("ip") for i in lb]]:
                self._put(ip, peer, replace=False)
        # finished pods first, so that a live pod that reuses the address wins
        for pod in sorted((p for p in pods if not podspec.host_network(p)),
                          key=lambda p: (p.get("status") or {}).get("phase") in _LIVE):
            peer = Peer("pod", *podspec.key(pod))
            for ip in podspec.pod_ips(pod):
                held = self._ip.get(canonical(ip) or "")
                if held is None or held.kind == "pod":
                    self._put(ip, peer, replace=True)

    def _put(self, addr: Optional[str], peer: Peer, replace: bool) -> None:
        key = canonical(addr)
        if key is not None and (replace or key not in self._ip):
            self._ip[key] = peer

    def lookup(self, address: Optional[str], port: Optional[int] = None) -> Optional[Peer]:
        """The object that owns ``address`` (with ``port``: the remote port, which may name a
        hostNetwork/hostPort pod or a NodePort Service behind a node's address); None for an
        address nothing listed owns."""
        key = canonical(address)
        peer = self._ip.get(key) if key else None
        if peer is not None and peer.kind == "node" and port:
            return self._claims.get((peer.name, port)) or self._node_ports.get(port) or peer
        return peer

    def name(self, address: Optional[str], port: Optional[int] = None) -> Optional[str]:
        """``pod/NS/NAME``, ``svc/NS/NAME``, ``node/NAME``, or None."""
        peer = self.lookup(address, port)
        return None if peer is None else str(peer)

    def __len__(self) -> int:
        return len(self._ip)


# --- one run's lookup ---------------------------------------------------------------------

#: The kinds naming needs and their cluster-wide list paths (a namespace's: ``namespaced``).
LISTS = (("pods", "/api/v1/pods"), ("services", "/api/v1/services"), ("nodes", "/api/v1/nodes"))
_NO_NAME = frozenset({None, "", "*", "0.0.0.0", "::"})


class Listed(NamedTuple):
    pods: Sequence[Mapping]
    services: Sequence[Mapping]
    nodes: Sequence[Mapping]
    notes: list[str]  #: kinds listed in part or not at all, in words


def nameable(s: Any) -> bool:
    """A socket whose remote address may belong to a pod, Service or node: an inet socket
    with a peer that is neither a wildcard nor loopback (loopback is the pod itself)."""
    return (getattr(s, "family", None) in ("inet", "inet6") and s.peer_address not in _NO_NAME
            and not is_loopback(s.peer_address))


class Lookup:
    """The lists of one run, fetched once from when the run starts; ``fetch`` returns them
    (it runs in a thread), ``cancel`` drops them unread."""

    def __init__(self, fetch: Callable[[], Listed], cancel: Callable[[], None] = lambda: None):
        self._fetch, self._cancel = fetch, cancel
        self._listed: Optional[Listed] = None
        self._error: Optional[BaseException] = None
        self._index: Optional[PeerIndex] = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.notes: list[str] = []  #: what could not be listed, once the lists are in

    def _run(self) -> None:
        try:
            self._listed = self._fetch()
        except BaseException as exc:  # handed to the caller in namer()
            self._error = exc

    def namer(self, sockets: Iterable[Any], keep: bool = False) -> Optional[Callable[[Any], Optional[Peer]]]:
        """socket -> its peer's name, once the lists are in (waited for only when one of
        ``sockets`` has an address to name); None when none has, and then the lists are
        dropped unless ``keep`` (--watch: a later round may need them)."""
        if self._index is None:
            if not any(nameable(s) for s in sockets):
                if not keep:
                    self.cancel()
                return None
            self._thread.join()
            if self._error is not None:
                from .errors import SockdebugError

                if not isinstance(self._error, SockdebugError):
                    raise self._error
                self.notes = [f"peers are not named: {self._error.cause}"]
                self._index = PeerIndex()
            else:
                assert self._listed is not None
                self.notes = list(self._listed.notes)
                self._index = PeerIndex(self._listed.pods, self._listed.services, self._listed.nodes)
        index = self._index
        return lambda s: index.lookup(s.peer_address, s.peer_port) if nameable(s) else None

    def cancel(self) -> None:
        self._cancel()


def read_lists(kube: Any, namespace: str) -> Listed:
    """The lists through the client (``collect.read_for_peers``)."""
    from .collect import read_for_peers

    return read_for_peers(kube, namespace)


def through_client(kube: Any, namespace: str) -> Lookup:
    """The lookup of a run that has the client: three lists at once, from the API
    server's watch cache."""
    return Lookup(lambda: read_lists(kube, namespace))


def through_kubectl(kubectl: str, kubeconfig: Optional[str], context: Optional[str], namespace: str) -> Lookup:
    """A warm query's lookup: one ``kubectl get --raw`` per kind, started now."""
    from .kube import Forbidden
    from .kubectl import KubectlGet

    started = {kind: KubectlGet(kubectl, kubeconfig, context, path + "?resourceVersion=0") for kind, path in LISTS}

    def fetch() -> Listed:
        got: dict[str, list] = {}
        notes: list[str] = []
        for kind, path in LISTS:
            try:
                got[kind] = started[kind].result()["items"]
                continue
            except Forbidden:
                pass
            if kind == "nodes":
                notes.append("nodes: not listed (no permission): node addresses are not named")
                got[kind] = []
                continue
            try:
                got[kind] = KubectlGet(kubectl, kubeconfig, context, namespaced(path, namespace)).result()["items"]
                notes.append(f"{kind}: only namespace {namespace} could be listed (no permission cluster-wide): "
                             f"other namespaces' {kind} are not named")
            except Forbidden:
                notes.append(f"{kind}: not listed (no permission): {kind} are not named")
                got[kind] = []
        return Listed(got["pods"], got["services"], got["nodes"], notes)

    def cancel() -> None:
        for get in started.values():
            get.cancel()

    return Lookup(fetch, cancel)


def namespaced(path: str, namespace: str) -> str:
    """``/api/v1/pods`` -> ``/api/v1/namespaces/NS/pods``."""
    prefix, _, plural = path.rpartition("/")
    return f"{prefix}/namespaces/{namespace}/{plural}"


# --- connections grouped by peer (triage) --------------------------------------------------------

_NOT_CONNECTED = frozenset({"LISTEN", "UNCONN", "CLOSE"})


def connections(sockets: Iterable[Any], namer: Optional[Callable[[Any], Optional[Peer]]]) -> list[dict[str, Any]]:
    """A namespace's inet connections grouped by direction, peer, the server's port and
    state: ``in`` (its peer connected to a port this namespace listens on: the port is
    ours, the peer's ephemeral ports are folded) or ``out`` (the port is the peer's).
    A named peer is one row whatever its addresses; an unknown one, one row per address."""
    socks = [s for s in sockets if getattr(s, "family", None) in ("inet", "inet6")]
    listening = {(s.netid, s.local_port) for s in socks if s.state in ("LISTEN", "UNCONN")}
    rows: dict[tuple, dict[str, Any]] = {}
    for s in socks:
        if s.state in _NOT_CONNECTED or s.peer_address in _NO_NAME:
            continue
        inbound = (s.netid, s.local_port) in listening
        peer = namer(s) if namer is not None else None
        port = s.local_port if inbound else s.peer_port
        key = ("in" if inbound else "out", str(peer) if peer else canonical(s.peer_address), port, s.netid, s.state)
        row = rows.get(key)
        if row is None:
            row = rows[key] = {"direction": key[0], "peer": peer.as_dict() if peer else None,
                               "name": str(peer) if peer else None, "addresses": [], "port": port,
                               "netid": s.netid, "state": s.state, "count": 0, "processes": [], "containers": []}
        row["count"] += 1
        if s.peer_address not in row["addresses"]:
            row["addresses"].append(s.peer_address)
        for p in s.processes or ():
            proc = f"{p.get('comm')}/{p.get('pid')}"
            if proc not in row["processes"]:
                row["processes"].append(proc)
            if p.get("container") and p["container"] not in row["containers"]:
                row["containers"].append(p["container"])
    return sorted(rows.values(), key=lambda r: (r["direction"] != "out", r["name"] is None, r["name"] or "",
                                                r["addresses"][0], r["port"], r["state"]))


CONNECTION_HEADERS = ("Direction", "Peer", "Address", "Port", "Netid", "State", "Count", "Process", "Container")


def connection_rows(rows: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """The table cells of ``connections`` rows, every string escaped."""
    from .render import escape

    return [[r["direction"], escape(r["name"] or "-"), escape(",".join(r["addresses"][:3])
                                                               + (",..." if len(r["addresses"]) > 3 else "")),
             str(r["port"]), escape(r["netid"]), escape(r["state"]), str(r["count"]),
             escape(",".join(r["processes"][:3])), escape(",".join(r["containers"]))] for r in rows]


def connections_table(rows: Sequence[Mapping[str, Any]], show_headers: bool = True) -> str:
    from .render import format_table

    if not rows:
        return "no connections"
    return format_table(CONNECTION_HEADERS, connection_rows(rows), right=frozenset({3, 6}), show_headers=show_headers)
