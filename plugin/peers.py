"""Naming remote addresses: ``pod/NS/NAME``, ``svc/NS/NAME``, ``node/NAME``.

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

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Optional

from . import podspec
from .view import normal_ip

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
