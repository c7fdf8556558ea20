"""plugin/peers.py: pods, Services (dual-stack ClusterIPs, externalIPs, load balancers,
nodePorts) and nodes named from one index; hostNetwork pods and hostPorts behind node
addresses; IPv4-mapped and non-canonical IPv6; unknown addresses stay unnamed."""

from __future__ import annotations

import pytest
from sockdebug_plugin.peers import Peer, PeerIndex, canonical


def pod(name, ip, ns="shop", node="node-1", phase="Running", host_network=False, ports=(), ipv6=None):
    ips = [{"ip": ip}] + ([{"ip": ipv6}] if ipv6 else [])
    spec = {"nodeName": node, "containers": [{"name": "app", "ports": list(ports)}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec,
            "status": {"phase": phase, "podIP": ip, "podIPs": ips, "hostIP": "192.168.1.10"}}


def svc(name, ips, ns="shop", node_port=None, external=(), lb=()):
    spec = {"clusterIP": ips[0], "clusterIPs": list(ips), "ports": [{"port": 80, **({"nodePort": node_port}
                                                                                     if node_port else {})}]}
    if external:
        spec["externalIPs"] = list(external)
    out = {"metadata": {"name": name, "namespace": ns}, "spec": spec}
    if lb:
        out["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in lb]}}
    return out


def node(name, *addresses):
    return {"metadata": {"name": name}, "status": {"addresses": [
        {"type": t, "address": a} for t, a in [("InternalIP", addresses[0]), ("Hostname", name),
                                               *[("ExternalIP", a) for a in addresses[1:]]]]}}


PODS = [pod("web", "10.244.0.5", ipv6="fd00:10:244::5"), pod("db", "10.244.0.6", ns="data"),
        pod("agent", "192.168.1.10", ns="kube-system", host_network=True, ports=[{"containerPort": 9100}]),
        pod("edge", "10.244.0.7", ports=[{"containerPort": 80, "hostPort": 8443}])]
SERVICES = [svc("web", ["10.96.0.10", "fd00:10:96::a"]), svc("public", ["10.96.0.11"], node_port=30080,
                                                               external=["192.168.1.10", "203.0.113.7"],
                                                               lb=["198.51.100.4"]),
            svc("headless", ["None"])]
NODES = [node("node-1", "192.168.1.10", "203.0.113.10"), node("node-2", "192.168.1.11")]
INDEX = PeerIndex(PODS, SERVICES, NODES)


def test_pods_services_and_nodes_are_named():
    assert INDEX.name("10.244.0.5") == "pod/shop/web"
    assert INDEX.name("10.244.0.6", 5432) == "pod/data/db"
    assert INDEX.name("10.96.0.10") == "svc/shop/web"
    assert INDEX.name("192.168.1.11") == "node/node-2"
    assert INDEX.name("203.0.113.10") == "node/node-1"  # ExternalIP
    assert INDEX.name("10.1.2.3") is None and INDEX.name(None) is None and INDEX.name("not-an-ip") is None
    assert INDEX.lookup("10.244.0.5").as_dict() == {"kind": "Pod", "namespace": "shop", "name": "web"}
    assert INDEX.lookup("192.168.1.11").as_dict() == {"kind": "Node", "name": "node-2"}


def test_dual_stack_and_ipv6_forms():
    assert INDEX.name("fd00:10:96::a") == "svc/shop/web"
    assert INDEX.name("fd00:10:96:0:0:0:0:a") == "svc/shop/web"  # non-canonical text
    assert INDEX.name("FD00:10:244::5") == "pod/shop/web"
    assert INDEX.name("::ffff:10.244.0.5") == "pod/shop/web"  # IPv4-mapped, as a dual-stack socket shows it
    assert INDEX.name("::ffff:10.96.0.10") == "svc/shop/web"
    assert INDEX.name("fe80::1%eth0") is None
    assert canonical("::ffff:7f00:1") == "127.0.0.1" and canonical("10.0.0.1") == "10.0.0.1"


def test_host_network_pods_share_the_node_address_unless_the_port_is_theirs():
    assert INDEX.name("192.168.1.10") == "node/node-1"
    assert INDEX.name("192.168.1.10", 9100) == "pod/kube-system/agent"  # its declared port on its node
    assert INDEX.name("192.168.1.10", 8443) == "pod/shop/edge"  # a hostPort on that node
    assert INDEX.name("192.168.1.11", 8443) == "node/node-2"  # not claimed on node-2
    assert INDEX.name("192.168.1.10", 30080) == "svc/shop/public"  # a nodePort on any node
    assert INDEX.name("192.168.1.11", 30080) == "svc/shop/public"
    assert INDEX.name("192.168.1.10", 22) == "node/node-1"


def test_external_and_load_balancer_ips_name_the_service_but_never_hide_a_node():
    assert INDEX.name("203.0.113.7") == "svc/shop/public"
    assert INDEX.name("198.51.100.4") == "svc/shop/public"
    assert INDEX.name("192.168.1.10") == "node/node-1"  # an externalIP that is a node's address


def test_without_nodes_listed_host_ips_still_name_the_node():
    index = PeerIndex(PODS, SERVICES, ())
    assert index.name("192.168.1.10") == "node/node-1"  # from the pods' hostIP and the hostNetwork pod
    assert index.name("192.168.1.10", 9100) == "pod/kube-system/agent"
    assert PeerIndex().name("10.244.0.5") is None


def test_a_running_pod_wins_over_a_finished_one_with_the_same_ip():
    old = pod("job-1", "10.244.0.9", phase="Succeeded")
    new = pod("web-2", "10.244.0.9")
    assert PeerIndex([new, old]).name("10.244.0.9") == "pod/shop/web-2"
    assert PeerIndex([old, new]).name("10.244.0.9") == "pod/shop/web-2"
    assert str(Peer("node", None, "n")) == "node/n"


def test_a_large_index():
    """The index is built once per run from every listed object (the bench measures its cost)."""
    pods = [pod(f"p{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}") for i in range(20_000)]
    index = PeerIndex(pods, [svc(f"s{i}", [f"10.96.{i // 256}.{i % 256}"]) for i in range(3_000)])
    assert len(index) == 23_001  # + the nodes' hostIP the pods report
    assert index.name("10.0.78.31") == f"pod/shop/p{78 * 256 + 31}"
    assert index.name("::ffff:10.96.11.183") == f"svc/shop/s{11 * 256 + 183}"


# --- when the lists are read, and how names are shown ---------------------------------------------

def sock(state, local, lport, peer, pport, netid="tcp", family="inet", procs=None):
    from sockdebug_agent.schema import Socket

    return Socket(family, netid, state, 0, 0, local, lport, peer, pport, inode=lport * 31 + pport,
                  processes=procs or [{"pid": 1, "comm": "app", "fd": 3, "container": "app"}])


CONNS = [sock("LISTEN", "0.0.0.0", 8080, "0.0.0.0", 0),
         sock("ESTAB", "10.244.0.9", 41000, "10.244.0.5", 8080),  # out: to pod web
         sock("ESTAB", "10.244.0.9", 41002, "10.96.0.10", 80),  # out: through Service web's ClusterIP
         sock("ESTAB", "10.244.0.9", 8080, "10.244.0.6", 50001),  # in: from pod db
         sock("ESTAB", "10.244.0.9", 8080, "10.244.0.6", 50002),
         sock("ESTAB", "127.0.0.1", 41003, "127.0.0.1", 9000),  # loopback: the pod itself
         sock("SYN-SENT", "10.244.0.9", 41004, "10.1.2.3", 443)]  # nobody listed


def namer(*extra):
    from sockdebug_plugin.peers import Listed, Lookup

    return Lookup(lambda: Listed(PODS, SERVICES, NODES, list(extra))).namer(CONNS)


@pytest.mark.parametrize(("argv", "named"), [
    (["pod/x"], True), (["pod/x", "-a", "-o", "json"], True), (["pod/x", "-t", "state", "established"], True),
    (["pod/x", "-s", "-t"], True), (["pod/x", "--listening", "-a"], True),  # -a wins over --listening, as in ss
    (["pod/x", "--listening"], False), (["pod/x", "-x"], False), (["pod/x", "-o", "jsonl"], False),
    (["pod/x", "-s"], False), (["pod/x", "--routes"], False), (["pod/x", "-a", "--no-peers"], False),
])
def test_peers_are_named_only_where_connections_can_be_shown(argv, named):
    from sockdebug_plugin import flags, options

    assert options.build(flags.parse(argv)).names_peers() is named


def test_the_lists_are_dropped_unread_when_nothing_is_to_be_named():
    import threading

    from sockdebug_plugin.peers import Listed, Lookup

    release, cancelled = threading.Event(), []
    lookup = Lookup(lambda: release.wait(5) and Listed([], [], [], []), lambda: cancelled.append(1))
    assert lookup.namer([CONNS[0], CONNS[5]]) is None and cancelled == [1]  # a listener, a loopback pair
    release.set()


def test_loopback_and_unknown_addresses_stay_unnamed():
    name = namer()
    assert [str(p) if p else None for p in map(name, CONNS)] == [
        None, "pod/shop/web", "svc/shop/web", "pod/data/db", "pod/data/db", None, None]


def test_table_shows_the_name_wide_adds_it_json_has_the_object():
    from sockdebug_plugin import render

    name = namer()
    res = [render.Result({"kind": "pod", "namespace": "shop", "name": "client", "container": "app"}, CONNS)]
    table = render.sockets_table(res, wide=False, color=False, peer=lambda s: str(p) if (p := name(s)) else None)
    lines = table.splitlines()
    assert lines[0].split()[6] == "Peer" and "Peer Address:Port" not in lines[0]
    assert "svc/shop/web:80" in lines[3] and "pod/shop/web:8080" in lines[2] and "10.1.2.3:443" in lines[7]
    wide = render.sockets_table(res, wide=True, color=False, peer=lambda s: str(p) if (p := name(s)) else None)
    head = wide.splitlines()[0]
    assert "Peer Address:Port Peer" in " ".join(head.split()) and "10.96.0.10:80" in wide and "svc/shop/web" in wide
    plain = render.sockets_table(res, wide=False, color=False)
    assert "Peer Address:Port" in plain.splitlines()[0] and "svc/" not in plain
    doc = render.document(res, peer=lambda s: p.as_dict() if (p := name(s)) else None)
    peers = [s["peer"] for s in doc["items"][0]["sockets"]]
    assert peers[1:3] == [{"kind": "Pod", "namespace": "shop", "name": "web"},
                          {"kind": "Service", "namespace": "shop", "name": "web"}]
    assert peers[0] is None and peers[-1] is None


def test_connections_are_grouped_by_direction_peer_and_port():
    from sockdebug_plugin.peers import connections, connections_table

    rows = connections(CONNS, namer())
    assert [(r["direction"], r["name"], r["port"], r["state"], r["count"]) for r in rows] == [
        ("out", "pod/shop/web", 8080, "ESTAB", 1), ("out", "svc/shop/web", 80, "ESTAB", 1),
        ("out", None, 443, "SYN-SENT", 1), ("out", None, 9000, "ESTAB", 1), ("in", "pod/data/db", 8080, "ESTAB", 2)]
    assert rows[-1]["peer"] == {"kind": "Pod", "namespace": "data", "name": "db"} and rows[-1]["containers"] == ["app"]
    text = connections_table(rows)
    assert text.splitlines()[0].split() == ["Direction", "Peer", "Address", "Port", "Netid", "State", "Count",
                                            "Process", "Container"]
    assert connections_table([]) == "no connections"


def test_a_warm_query_reads_the_lists_through_kubectl_get_raw(tmp_path):
    """Three ``kubectl get --raw`` at once; a forbidden kind falls back to the namespace
    (pods, Services) or is left out (nodes), with a note."""
    import json
    import stat
    import sys

    from sockdebug_plugin.peers import through_kubectl

    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"/api/v1/namespaces/shop/pods": {"items": PODS},
                                   "/api/v1/services": {"items": SERVICES}}))
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f"#!{sys.executable}\nimport json, sys\n"
                       f"answers = json.load(open({str(answers)!r}))\n"
                       "path = sys.argv[sys.argv.index('--raw') + 1].split('?')[0]\n"
                       "with open(sys.argv[0] + '.log', 'a') as log:\n    log.write(path + '\\n')\n"
                       "if path not in answers:\n"
                       "    sys.stderr.write(f'Error from server (Forbidden): {path} is forbidden\\n'); sys.exit(1)\n"
                       "print(json.dumps(answers[path]))\n")
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    lookup = through_kubectl(str(kubectl), None, None, "shop")
    name = lookup.namer(CONNS)
    assert str(name(CONNS[1])) == "pod/shop/web" and str(name(CONNS[2])) == "svc/shop/web"
    assert sorted((tmp_path / "kubectl.log").read_text().split()) == [
        "/api/v1/namespaces/shop/pods", "/api/v1/nodes", "/api/v1/pods", "/api/v1/services"]
    assert lookup.notes == [
        "pods: only namespace shop could be listed (no permission cluster-wide): other namespaces' pods are not named",
        "nodes: not listed (no permission): node addresses are not named"]
