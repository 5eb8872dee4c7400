"""The lab fabric: planning (pure), and real labs of network namespaces (root, never skipped).

The labs here use a stub dataplane written in this file (a little Service NAT through an
ipset, iptables-restore and an nft table) so that the fabric is tested on its own.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from netparity.backend import Observed
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Via,
)
from netparity.errors import ClusterError, InputError
from netparity.lab import down, plan_topology, up
from netparity.lab.apiserver import LAB_API_IP
from netparity.lab.netns import list_netns, netns_pids
from netparity.lab.state import (
    BUILDING,
    LabState,
    decode,
    encode,
    load_state,
    save_state,
    state_path,
)
from netparity.lab.topology import LabTopology, NodeRules
from netparity.model.objects import Node, Pod, Protocol, Service
from netparity.model.snapshot import Snapshot, snapshot_from_dicts

import lab_fixtures
from lab_fixtures import Lab, LabFactory, connected, unique_lab_name

# --------------------------------------------------------------------------- snapshot


def _node(name: str, ip: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": cidr},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def _pod(
    key: str,
    node: str | None,
    ip: str | None,
    ports: list[tuple[str | None, int, str]],
    *,
    host_network: bool = False,
    **labels: str,
) -> dict[str, Any]:
    namespace, name = key.split("/")
    cports = [
        {"containerPort": p, "protocol": proto, **({"name": n} if n else {})}
        for n, p, proto in ports
    ]
    spec: dict[str, Any] = {"containers": [{"name": "c", "ports": cports}]}
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
        "status": {"podIP": ip} if ip else {},
    }


def _snapshot() -> Snapshot:
    return snapshot_from_dicts(
        [
            _node("n1", "10.224.0.4", "10.244.0.0/24"),
            _node("n2", "10.224.0.5", "10.244.1.0/24"),
            _pod("x/a", "n1", "10.244.0.10", [("http", 80, "TCP"), ("dns", 53, "UDP")], app="a"),
            _pod("x/b", "n1", "10.244.0.11", [("web", 8080, "TCP")], app="b"),
            _pod("y/c", "n2", "10.244.1.10", [("http", 80, "TCP")], app="c"),
            _pod("y/d", "n2", None, [(None, 9090, "TCP")], app="d"),
            _pod("kube-system/hn", "n2", "10.224.0.5", [(None, 18080, "TCP")], host_network=True),
            _pod("x/pending", None, None, [("http", 80, "TCP")]),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": "y"},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"app": "c"},
                    "ports": [{"port": 80, "targetPort": 80}],
                },
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "np", "namespace": "x"},
                "spec": {
                    "podSelector": {},
                    "ingress": [
                        {
                            "from": [
                                {"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.16.0.0/16"]}},
                                {"ipBlock": {"cidr": "0.0.0.0/0"}},
                            ]
                        }
                    ],
                    "egress": [
                        {
                            "to": [{"ipBlock": {"cidr": "10.224.0.0/16"}}],
                            "ports": [{"port": 5000, "endPort": 5005}],
                        }
                    ],
                },
            },
        ]
    )


def stub_render(topology: LabTopology) -> Mapping[str, NodeRules]:
    """A stand-in dataplane: y/web's ClusterIP -> y/c; its LB IP -> x/a on n1, y/c on n2
    (a different backend per receiving node shows which node received the traffic).

    The LB IP is matched through an ipset, so the rules only load if the ipset went first.
    """
    svc = topology.snapshot.service("y", "web")
    if svc is None:
        return {}
    lb = svc.load_balancer_ips[0]
    ipset = f"create nplab-lb hash:ip\nadd nplab-lb {lb}\n"
    nft = (
        "table inet nplab {\n  chain probe_fwd {\n"
        "    type filter hook forward priority 10; policy accept;\n  }\n}\n"
    )
    out = {}
    for n in topology.nodes:
        lb_backend = topology.pod("x/a" if n.name == "n1" else "y/c").ip
        iptables = "\n".join(
            [
                "*nat",
                ":PREROUTING ACCEPT [0:0]",
                ":INPUT ACCEPT [0:0]",
                ":OUTPUT ACCEPT [0:0]",
                ":POSTROUTING ACCEPT [0:0]",
                ":NPLAB-SVC - [0:0]",
                "-A PREROUTING -j NPLAB-SVC",
                "-A OUTPUT -j NPLAB-SVC",
                f"-A NPLAB-SVC -d {svc.cluster_ip}/32 -p tcp --dport 80 "
                f"-j DNAT --to-destination {topology.pod('y/c').ip}:80",
                "-A NPLAB-SVC -m set --match-set nplab-lb dst -p tcp --dport 80 "
                f"-j DNAT --to-destination {lb_backend}:80",
                "-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE",
                "COMMIT",
                "",
            ]
        )
        out[n.name] = NodeRules(ipset=ipset, iptables=iptables, nft=nft)
    return out


def empty_render(topology: LabTopology) -> Mapping[str, NodeRules]:
    return {}


SNAP = _snapshot()

# The fixtures this module uses (lab_fixtures is a fixture module, imported by name).
lab_factory = lab_fixtures.lab_factory
module_lab_factory = lab_fixtures.module_lab_factory


def pod(key: str) -> PodEndpoint:
    p = SNAP.pod(*key.split("/"))
    assert p is not None
    return PodEndpoint(pod=p)


def node(name: str) -> NodeEndpoint:
    n = SNAP.node(name)
    assert n is not None
    return NodeEndpoint(node=n)


def ext(ip: str = DEFAULT_EXTERNAL_IP) -> ExternalEndpoint:
    return ExternalEndpoint(ip=ip)


def web(via: Via = Via.CLUSTER_IP, at: str | None = None) -> ServiceEndpoint:
    svc = SNAP.service("y", "web")
    assert svc is not None
    return ServiceEndpoint(service=svc, via=via, node=SNAP.node(at) if at else None)


def tr(src: Any, dst: Any, port: int | str, protocol: Protocol = Protocol.TCP) -> Traffic:
    return Traffic(source=src, destination=dst, port=port, protocol=protocol)


# --------------------------------------------------------------------------- planning (pure)


def test_plan_keeps_snapshot_addresses_and_allocates_missing_pod_ips_from_the_pod_cidr() -> None:
    topo = plan_topology(SNAP, lab="p", dataplane="npm")
    assert [(n.name, n.ip, n.netns) for n in topo.nodes] == [
        ("n1", "10.224.0.4", "np-p-node0"),
        ("n2", "10.224.0.5", "np-p-node1"),
    ]
    assert topo.node_prefix == 24
    assert topo.pod("x/a").ip == "10.244.0.10" and topo.pod("y/c").ip == "10.244.1.10"
    d = topo.pod("y/d")
    assert ipaddress.ip_address(d.ip) in ipaddress.ip_network("10.244.1.0/24")
    assert d.ip != "10.244.1.10" and d.node == "n2"
    hn = topo.pod("kube-system/hn")
    assert (hn.netns, hn.ip, hn.host_ifname, hn.host_network) == (
        "np-p-node1",
        "10.224.0.5",
        "",
        True,
    )
    with pytest.raises(KeyError):
        topo.pod("x/pending")  # not scheduled: not in the lab
    for p in topo.pods:
        assert len(p.host_ifname) <= 15
        assert p.netns.startswith("np-p-")
    assert len({p.netns for p in topo.pods if not p.host_network}) == 4


def test_plan_rewrites_the_snapshot_with_the_lab_addresses() -> None:
    topo = plan_topology(SNAP, lab="p", dataplane="npm")
    live = topo.snapshot
    y_d = live.pod("y", "d")
    assert y_d is not None and y_d.ip == topo.pod("y/d").ip
    pending = live.pod("x", "pending")
    assert pending is not None and pending.ip is None
    svc = live.service("y", "web")
    assert svc is not None and svc.cluster_ip is not None
    assert ipaddress.ip_address(svc.cluster_ip) in ipaddress.ip_network("10.0.0.0/16")
    assert len(svc.load_balancer_ips) == 1
    assert ipaddress.ip_address(svc.load_balancer_ips[0]) in ipaddress.ip_network("192.0.2.0/24")
    assert svc.ports[0].node_port is not None and 30000 <= svc.ports[0].node_port <= 32767
    assert live.network_policies == SNAP.network_policies


def test_plan_is_deterministic() -> None:
    assert plan_topology(SNAP, lab="p", dataplane="npm", generation=2) == plan_topology(
        SNAP, lab="p", dataplane="npm", generation=2
    )


def test_every_generation_gives_every_pod_a_new_address_on_the_same_node() -> None:
    gens = [plan_topology(SNAP, lab="p", dataplane="cilium", generation=g) for g in range(4)]
    for before, after in itertools.pairwise(gens):
        for p in before.pods:
            q = after.pod(p.key)
            assert (q.node, q.netns, q.ports) == (p.node, p.netns, p.ports)
            if p.host_network:
                assert q.ip == p.ip
            else:
                assert q.ip != p.ip, p.key
                cidr = ipaddress.ip_network(after.node(p.node).pod_cidr or "")
                assert ipaddress.ip_address(q.ip) in cidr
        ips = [p.ip for p in after.pods if not p.host_network]
        assert len(set(ips)) == len(ips)
    original = {p.key: p.ip for p in SNAP.pods}
    for p in gens[1].pods:
        if not p.host_network:
            assert p.ip != original[p.key]
    a = gens[1].snapshot.pod("x", "a")
    assert a is not None and a.ip == gens[1].pod("x/a").ip and a.labels == {"app": "a"}


def test_node_subnet_pods_are_renumbered_inside_the_node_subnet() -> None:
    snap = snapshot_from_dicts(
        [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": "n1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.240.0.4"}]},
            },
            _pod("x/a", "n1", "10.240.0.30", [("http", 80, "TCP")]),
        ]
    )
    topo = plan_topology(snap, lab="p", dataplane="npm", generation=1)
    new = topo.pod("x/a").ip
    assert new != "10.240.0.30" and ipaddress.ip_address(new) in ipaddress.ip_network(
        "10.240.0.0/24"
    )


def test_external_hosts_sit_inside_every_ip_block_and_inside_each_except() -> None:
    topo = plan_topology(SNAP, lab="p", dataplane="npm")
    ips = [ipaddress.ip_address(h.ip) for h in topo.hosts]
    assert topo.hosts[0].ip == DEFAULT_EXTERNAL_IP and topo.hosts[0].netns == "np-p-ext0"
    big, hole = ipaddress.ip_network("172.16.0.0/12"), ipaddress.ip_network("172.16.0.0/16")
    assert any(ip in big and ip not in hole for ip in ips)
    assert any(ip in hole for ip in ips)
    taken = {n.ip for n in topo.nodes} | {p.ip for p in topo.pods}
    assert not taken & {h.ip for h in topo.hosts}
    # 10.224.0.0/16 holds the nodes: its host is another address of that subnet.
    node_net = [ip for ip in ips if ip in ipaddress.ip_network("10.224.0.0/16")]
    assert len(node_net) == 1 and str(node_net[0]) not in taken
    # default, 172.16/12 minus except, the except, the node subnet, the API server (last)
    assert len(topo.hosts) == 5 and topo.hosts[-1].ip == LAB_API_IP


@pytest.mark.parametrize("name", ["", "Lab", "toolongname", "a-b", "a_b"])
def test_bad_lab_names_are_refused_with_a_clear_error(name: str) -> None:
    with pytest.raises(InputError, match="lab name"):
        plan_topology(SNAP, lab=name, dataplane="npm")


def test_a_pod_on_a_node_missing_from_the_snapshot_is_an_input_error() -> None:
    snap = snapshot_from_dicts(
        [_node("n1", "10.224.0.4", "10.244.0.0/24"), _pod("x/a", "n9", None, [])]
    )
    with pytest.raises(InputError, match=r"Pod x/a.*spec.nodeName.*n9"):
        plan_topology(snap, lab="p", dataplane="npm")


def test_the_state_encoding_round_trips_a_topology() -> None:
    topo = plan_topology(SNAP, lab="p", dataplane="npm", generation=1)
    assert decode(json.loads(json.dumps(encode(topo)))) == topo


# --------------------------------------------------------------------------- a real lab


@pytest.fixture(scope="module")
def base(module_lab_factory: LabFactory) -> Lab:
    return module_lab_factory(SNAP, dataplane="npm", render=stub_render)


def test_pods_on_one_node_and_across_nodes_connect_with_the_right_token(base: Lab) -> None:
    r = base.run(
        [
            tr(pod("x/a"), pod("x/b"), 8080),
            tr(pod("x/a"), pod("y/c"), 80),
            tr(pod("y/c"), pod("x/a"), "http"),
            tr(pod("x/b"), pod("y/d"), 9090),
        ]
    )
    assert [(x.observed, x.token) for x in r] == [
        (Observed.CONNECTED, t) for t in ("x/b", "y/c", "x/a", "y/d")
    ]
    assert r[1].address == "10.244.1.10:80/TCP" and r[1].source == "pod x/a@n1"
    assert r[2].address == "10.244.0.10:80/TCP"


def test_pods_reach_their_own_node_and_the_other_node_on_the_kubelet_port(base: Lab) -> None:
    own, other = base.run([tr(pod("x/a"), node("n1"), 10250), tr(pod("x/a"), node("n2"), 10250)])
    assert connected(own, "node:n1") and own.address == "10.224.0.4:10250/TCP"
    assert connected(other, "node:n2")


def test_host_network_pods_are_served_by_their_node(base: Lab) -> None:
    to_hn, from_hn, node_to_pod = base.run(
        [
            tr(pod("x/a"), pod("kube-system/hn"), 18080),
            tr(pod("kube-system/hn"), pod("x/b"), 8080),
            tr(node("n1"), pod("y/c"), 80),
        ]
    )
    assert connected(to_hn, "node:n2")
    assert connected(from_hn, "x/b") and from_hn.source == "pod kube-system/hn@n2"
    assert connected(node_to_pod, "y/c") and node_to_pod.source == "node n1"


def test_the_default_external_client_and_pods_reach_each_other(base: Lab) -> None:
    out, back, node_port = base.run(
        [tr(pod("y/c"), ext(), 443), tr(ext(), pod("x/a"), 80), tr(ext(), node("n2"), 10250)]
    )
    assert connected(out, f"ext:{DEFAULT_EXTERNAL_IP}")
    assert connected(back, "x/a") and back.source == f"external {DEFAULT_EXTERNAL_IP}"
    assert connected(node_port, "node:n2")


def test_udp_probes_work_between_pods_and_to_external_hosts(base: Lab) -> None:
    r = base.run(
        [
            tr(pod("y/c"), pod("x/a"), "dns", Protocol.UDP),
            tr(pod("x/a"), ext(), 53, Protocol.UDP),
        ]
    )
    assert connected(r[0], "x/a") and r[0].address == "10.244.0.10:53/UDP"
    assert connected(r[1], f"ext:{DEFAULT_EXTERNAL_IP}")


def test_hosts_inside_ip_blocks_serve_the_ports_policies_name(base: Lab) -> None:
    inside = next(
        h
        for h in base.topology.hosts
        if ipaddress.ip_address(h.ip) in ipaddress.ip_network("10.224.0.0/16")
    )
    r = base.run(
        [tr(pod("x/a"), ext(inside.ip), p) for p in (4999, 5000, 5005, 5006)]
        + [tr(ext(inside.ip), pod("x/b"), 8080)]
    )
    assert all(connected(x, f"ext:{inside.ip}") for x in r[:4]), r
    assert connected(r[4], "x/b")


def test_a_closed_port_is_refused_not_dropped(base: Lab) -> None:
    r = base.probe(pod("y/c"), pod("x/a"), 81)
    assert r.observed is Observed.REFUSED and r.allowed is True


def test_services_resolve_to_cluster_ip_and_lb_ip_through_the_receiving_node(base: Lab) -> None:
    svc = base.snapshot.service("y", "web")
    assert svc is not None
    r = base.run(
        [
            tr(pod("x/a"), web(), 80),
            tr(ext(), web(Via.LOAD_BALANCER, "n1"), 80),
            tr(ext(), web(Via.LOAD_BALANCER, "n2"), 80),
            tr(pod("x/b"), web(Via.LOAD_BALANCER), 80),
        ]
    )
    # ClusterIP -> y/c; the LB IP via n1 -> x/a and via n2 -> y/c: the two external probes
    # to the same LB IP went through different nodes (sequential sub-batches); a pod's own
    # node (x/b is on n1) receives its LB traffic.
    assert [x.token for x in r] == ["y/c", "x/a", "y/c", "x/a"], r
    assert r[0].address == f"{svc.cluster_ip}:80/TCP"
    assert r[1].address == f"{svc.load_balancer_ips[0]}:80/TCP"
    # the LB routes were added for the batch only
    out = subprocess.run(
        ["ip", "-n", base.topology.hosts[0].netns, "route"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert svc.load_balancer_ips[0] not in out


def test_the_rules_are_applied_in_every_node_namespace(base: Lab) -> None:
    for n in base.topology.nodes:
        nft = subprocess.run(
            ["ip", "netns", "exec", n.netns, "nft", "list", "tables"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "table inet nplab" in nft
        sets = subprocess.run(
            ["ip", "netns", "exec", n.netns, "ipset", "list", "-n"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "nplab-lb" in sets


def test_probes_the_lab_cannot_run_are_errors_never_denies(base: Lab) -> None:
    ghost = Pod(namespace="x", name="ghost", labels={})
    svc = SNAP.service("y", "web")
    assert svc is not None
    r = base.run(
        [
            tr(PodEndpoint(pod=ghost), pod("x/a"), 80),
            tr(pod("x/a"), PodEndpoint(pod=ghost), 80),
            tr(pod("x/a"), pod("y/c"), "nope"),
            tr(ServiceEndpoint(service=svc), pod("x/a"), 80),
            tr(pod("x/a"), NodeEndpoint(node=Node(name="n9", ip="10.224.0.9")), 10250),
            tr(pod("x/a"), pod("x/b"), 8080),
        ]
    )
    assert [x.observed for x in r] == [Observed.ERROR] * 5 + [Observed.CONNECTED]
    assert "x/ghost" in (r[0].error or "") and "'nope'" in (r[2].error or "")
    assert all(x.allowed is None for x in r[:5])
    assert [x.id for x in r] == [f"t{i}" for i in range(6)]


def test_an_unknown_external_address_gets_a_host_on_demand(base: Lab) -> None:
    r = base.run([tr(pod("x/a"), ext("198.51.100.7"), 80), tr(ext("198.51.100.8"), pod("y/c"), 80)])
    assert connected(r[0], "ext:198.51.100.7")
    assert connected(r[1], "y/c")
    st = load_state(base.name)
    assert st is not None and st.topology is not None
    assert {"198.51.100.7", "198.51.100.8"} <= {h.ip for h in st.topology.hosts}
    assert set(list_netns(f"np-{base.name}-")) >= {h.netns for h in st.topology.hosts}


def _links(netns: str | None) -> list[dict[str, Any]]:
    argv = ["ip", "-j", "-d"] + (["-n", netns] if netns else []) + ["link", "show"]
    out: list[dict[str, Any]] = json.loads(
        subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    )
    return out


def test_the_lab_is_sealed_from_the_root_namespace(lab_factory: LabFactory) -> None:
    before = sorted(link["ifname"] for link in _links(None))
    lab = lab_factory(SNAP, render=empty_render)
    assert sorted(link["ifname"] for link in _links(None)) == before
    names = list_netns(f"np-{lab.name}-")
    assert len(names) == 1 + 2 + 4 + len(lab.topology.hosts)
    for ns in names:
        ids = subprocess.run(
            ["ip", "-n", ns, "netns", "list-id"], capture_output=True, text=True, check=True
        ).stdout
        for link in _links(ns):
            if "link_netnsid" in link:
                peer = f"nsid {link['link_netnsid']} (iproute2 netns name: np-{lab.name}-"
                assert peer in ids, (ns, link["ifname"], ids)
        routes = subprocess.run(
            ["ip", "-n", ns, "route"], capture_output=True, text=True, check=True
        ).stdout
        is_pod = "-pod" in ns
        assert ("default" in routes) == is_pod, (ns, routes)
        if not is_pod:
            gone = subprocess.run(
                ["ip", "-n", ns, "route", "get", "1.1.1.1"], capture_output=True, text=True
            )
            assert gone.returncode != 0 and "unreachable" in gone.stderr.lower()
    # nothing of the lab listens in the root namespace
    assert lab.probe(pod("x/a"), ext("1.1.1.1"), 80).token == "ext:1.1.1.1"


def test_two_labs_with_different_names_coexist(base: Lab, lab_factory: LabFactory) -> None:
    other = lab_factory(SNAP, render=empty_render)
    assert other.name != base.name
    assert connected(other.probe(pod("x/a"), pod("y/c"), 80), "y/c")
    assert connected(base.probe(pod("x/a"), pod("y/c"), 80), "y/c")
    down(other.name)
    assert connected(base.probe(pod("x/a"), pod("y/c"), 80), "y/c")
    assert base.probe(pod("x/a"), web(), 80).token == "y/c"  # the base lab's rules are intact


def test_upgrade_renumbers_every_pod_and_probes_by_pod_key_still_reach_them(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(SNAP, render=stub_render)
    before = {p.key: p.ip for p in lab.topology.pods}
    lab_factory.upgrade(lab, "cilium", render=stub_render)
    st = load_state(lab.name)
    assert st is not None and (st.generation, st.dataplane, st.status) == (1, "cilium", "ready")
    assert lab.backend.facts().dataplane == "cilium"
    after = {p.key: p.ip for p in lab.topology.pods}
    assert set(after) == set(before)
    for key, ip in after.items():
        assert (ip == before[key]) == (key == "kube-system/hn"), key
    r = lab.run(
        [tr(pod("x/a"), pod("y/c"), 80), tr(ext(), pod("x/b"), 8080), tr(pod("x/b"), web(), 80)]
    )
    assert [x.token for x in r] == ["y/c", "x/b", "y/c"], r
    assert r[0].address == f"{after['y/c']}:80/TCP"
    c = lab.snapshot.pod("y", "c")
    assert c is not None and c.ip == after["y/c"]


def test_down_removes_every_namespace_agent_and_the_state(lab_factory: LabFactory) -> None:
    lab = lab_factory(SNAP, render=empty_render)
    assert connected(lab.probe(pod("x/a"), ext("198.51.100.9"), 80), "ext:198.51.100.9")
    st = load_state(lab.name)
    assert st is not None
    pids = [a.pid for a in st.agents]
    assert len(pids) == 2 + 4 + len(st.topology.hosts if st.topology else ())
    assert down(lab.name) is True
    assert list_netns(f"np-{lab.name}-") == []
    assert not state_path(lab.name).exists()
    time.sleep(0.1)
    assert not [p for p in pids if _running(p)]
    assert down(lab.name) is False


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_a_half_built_leftover_is_removed_by_the_next_up(
    lab_factory: LabFactory,
    capfd: pytest.CaptureFixture[str],
) -> None:

    name = unique_lab_name()
    dead = subprocess.Popen(["true"])
    dead.wait()
    ns = [f"np-{name}-vnet", f"np-{name}-node0", f"np-{name}-pod7"]
    for n in ns:
        subprocess.run(["ip", "netns", "add", n], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns[2], "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while sleeper.pid not in netns_pids([ns[2]]):  # until `ip netns exec` has entered it
            assert time.monotonic() < deadline, "the sleeper never entered its namespace"
            time.sleep(0.01)
        save_state(
            LabState(name=name, dataplane="npm", generation=0, status=BUILDING, pid=dead.pid)
        )
        lab = lab_factory(SNAP, render=empty_render, name=name)
        assert "half-built" in capfd.readouterr().err
        assert sleeper.wait(timeout=5) != 0
        assert f"np-{name}-pod7" not in list_netns(f"np-{name}-")
        assert connected(lab.probe(pod("x/a"), pod("y/c"), 80), "y/c")
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        down(name)


def test_orphan_namespaces_without_state_are_removed_by_down(
    capfd: pytest.CaptureFixture[str],
) -> None:

    name = unique_lab_name()
    try:
        subprocess.run(["ip", "netns", "add", f"np-{name}-node0"], check=True)
        assert down(name) is True
        assert "no state" in capfd.readouterr().err
        assert list_netns(f"np-{name}-") == []
    finally:
        down(name)


def test_a_build_that_fails_leaves_nothing_behind() -> None:
    def broken(topology: LabTopology) -> Mapping[str, NodeRules]:
        return {"n1": NodeRules(iptables="*filter\n-A NO-SUCH-CHAIN -j ACCEPT\nCOMMIT\n")}

    name = unique_lab_name()
    try:
        with pytest.raises(ClusterError, match="node n1"):
            up(SNAP, name=name, render=broken)
        assert list_netns(f"np-{name}-") == []
        assert not state_path(name).exists()
    finally:
        down(name)


def test_an_agent_that_cannot_start_fails_the_build_naming_the_pod(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "agent.py"
    fake.write_text("import sys\nprint('cannot bind TCP port 80', file=sys.stderr)\nsys.exit(2)\n")
    monkeypatch.setenv("NETPARITY_AGENT", str(fake))
    name = unique_lab_name()
    try:
        with pytest.raises(ClusterError, match=r"probe agent of .*exited.*cannot bind TCP port 80"):
            up(SNAP, name=name, render=empty_render)
        assert list_netns(f"np-{name}-") == []
    finally:
        down(name)


def test_an_existing_lab_is_not_rebuilt_over(base: Lab) -> None:
    with pytest.raises(ClusterError, match="already exists"):
        up(SNAP, name=base.name, render=empty_render)
    assert connected(base.probe(pod("x/a"), pod("x/b"), 8080), "x/b")


def test_lab_tests_run_as_root() -> None:
    assert os.geteuid() == 0, "the lab tests need root; CI runs as root"


def test_services_are_untouched_when_the_snapshot_has_addresses() -> None:
    svc = Service(namespace="y", name="s", cluster_ip="10.0.5.5", load_balancer_ips=("192.0.2.77",))
    topo = plan_topology(_with_service(svc), lab="p", dataplane="npm")
    got = topo.snapshot.service("y", "s")
    assert got is not None and (got.cluster_ip, got.load_balancer_ips) == (
        "10.0.5.5",
        ("192.0.2.77",),
    )


def _with_service(svc: Service) -> Snapshot:
    import dataclasses

    return dataclasses.replace(SNAP, services=(*SNAP.services, svc))


def test_cli_status_and_probe_show_the_live_lab(
    base: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from netparity.cli import main

    assert main(["lab", "status", "--name", base.name, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dataplane"] == "npm" and doc["status"] == "ready"
    assert {p["key"]: p["ip"] for p in doc["pods"]}["y/d"] == base.topology.pod("y/d").ip
    probes = tmp_path / "probes.yaml"
    probes.write_text(
        "probes:\n"
        "  - {from: x/a, to: y/c, port: 80, expect: allow}\n"
        "  - {from: external, to: x/b, port: web, expect: allow}\n"
        "  - {from: y/c, to: x/a, port: 81, expect: deny}\n"
    )
    code = main(["lab", "probe", "--name", base.name, "--probes", str(probes), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert {r["dataplane"] for r in rows} == {"npm"}
    assert [(r["observed"], r["ok"]) for r in rows] == [
        ("connected", True),
        ("connected", True),
        ("refused", False),  # refused means the network let it in: an allow, not the deny
    ]
    assert rows[1]["token"] == "x/b"
    assert code == 1
