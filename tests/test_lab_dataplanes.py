"""The lab's dataplanes: what they render, that it loads, and what real packets do through it.

Rendering tests read the rules compiled from a snapshot and load them into a throwaway
namespace. Packet tests build the same snapshot as a lab under each dataplane and run the
probes of SEMANTICS.md sections 3 and 5, asserting each dataplane's verdict.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from netparity.backend import Observed, Target
from netparity.engine.traffic import (
    Endpoint,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Via,
)
from netparity.errors import InputError
from netparity.lab.build import plan_topology
from netparity.lab.dataplanes import render
from netparity.lab.dataplanes.kubeproxy import sep_chain, svc_chain
from netparity.lab.dataplanes.npm import hashed
from netparity.lab.dataplanes.services import service_routes
from netparity.lab.topology import LabTopology, NodeRules
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot, snapshot_from_dicts

from lab_fixtures import Lab, LabFactory, lab_factory, module_lab_factory  # noqa: F401

DATAPLANES = ("npm", "cilium", "cilium-1.16")
E = "203.0.113.10"  # the lab's default external host (client E, server X)
Y = "198.51.100.7"  # another external host, added by the lab when a probe needs it
N1, N2 = "10.224.0.4", "10.224.0.5"

# ---------------------------------------------------------------------------- builders


def _ns(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


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
    ip: str,
    node: str,
    labels: dict[str, str] | None = None,
    ports: tuple[tuple[str | None, int, str], ...] = (),
    *,
    host_network: bool = False,
) -> dict[str, Any]:
    namespace, name = key.split("/")
    cports = [
        {k: v for k, v in (("name", n), ("containerPort", p), ("protocol", pr)) if v is not None}
        for n, p, pr in ports
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
        "spec": {
            "nodeName": node,
            "hostNetwork": host_network,
            "containers": [{"name": "c", "ports": cports}],
        },
        "status": {"podIP": ip, "phase": "Running"},
    }


def _svc(
    name: str,
    app: str,
    port: int,
    target: int | str,
    *,
    cluster_ip: str,
    type_: str = "ClusterIP",
    node_port: int | None = None,
    lb_ip: str | None = None,
    local: bool = False,
    protocol: str = "TCP",
    namespace: str = "np",
    selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    sp: dict[str, Any] = {"port": port, "targetPort": target, "protocol": protocol}
    if node_port is not None:
        sp["nodePort"] = node_port
    spec: dict[str, Any] = {
        "type": type_,
        "selector": selector or {"app": app},
        "clusterIP": cluster_ip,
        "ports": [sp],
    }
    if type_ != "ClusterIP":
        spec["externalTrafficPolicy"] = "Local" if local else "Cluster"
    svc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    if lb_ip:
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": lb_ip}]}}
    return svc


def _np(
    name: str,
    app: str | dict[str, str],
    *,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
    namespace: str = "np",
) -> dict[str, Any]:
    types = []
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {"app": app} if isinstance(app, str) else app}
    }
    if ingress is not None:
        types.append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        types.append("Egress")
        spec["egress"] = egress
    spec["policyTypes"] = types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _from_app(app: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"app": app}}}


def _ipblock(cidr: str, *excepts: str) -> dict[str, Any]:
    block: dict[str, Any] = {"cidr": cidr}
    if excepts:
        block["except"] = list(excepts)
    return {"ipBlock": block}


def fixture_snapshot() -> Snapshot:
    """SEMANTICS section 3's fixture, with one pod per scenario so one lab runs them all."""
    tcp8080 = (("http-test", 8080, "TCP"),)
    docs: list[dict[str, Any]] = [
        _node("n1", N1, "10.244.1.0/24"),
        _node("n2", N2, "10.244.2.0/24"),
        _ns("np", team="a"),
        _ns("other", team="b"),
        _ns("kube-system"),
        # node n1
        _pod("np/client", "10.244.1.10", "n1"),
        _pod("np/c-ipb", "10.244.1.11", "n1"),
        _pod("np/c-dns", "10.244.1.12", "n1"),
        _pod("np/c-np", "10.244.1.13", "n1"),
        _pod("np/c-alt", "10.244.1.14", "n1"),
        _pod("np/c-ep", "10.244.1.15", "n1"),
        _pod("np/c-deny", "10.244.1.16", "n1"),
        _pod("np/c-ent", "10.244.1.17", "n1"),
        _pod("np/front", "10.244.1.18", "n1", {"app": "front", "role": "frontend"}),
        _pod("np/c-exc", "10.244.1.40", "n1"),
        _pod("np/c-v6", "10.244.1.41", "n1"),
        _pod("np/srv-local", "10.244.1.20", "n1", None, (*tcp8080, ("dns", 5353, "UDP"))),
        _pod("np/srv-ipb", "10.244.1.21", "n1", None, tcp8080),
        _pod("np/srv-deny", "10.244.1.22", "n1", None, (*tcp8080, ("dns", 5353, "UDP"))),
        _pod("np/srv-nodes", "10.244.1.23", "n1", None, tcp8080),
        _pod(
            "np/srv-ep",
            "10.244.1.24",
            "n1",
            None,
            tuple((None, p, "TCP") for p in (9000, 9003, 9005, 9006, 9010)),
        ),
        _pod(
            "np/db-0",
            "10.244.1.25",
            "n1",
            {"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"},
            tcp8080,
        ),
        _pod("np/web-d1", "10.244.1.30", "n1", None, tcp8080),
        _pod("np/web-e1", "10.244.1.31", "n1", None, tcp8080),
        _pod("np/web-p1", "10.244.1.32", "n1", None, tcp8080),
        _pod("np/web-f1", "10.244.1.33", "n1", None, tcp8080),
        _pod("np/web-l1", "10.244.1.34", "n1", None, tcp8080),
        _pod("np/srv-hp", "10.244.1.35", "n1", None, tcp8080),
        _pod("np/srv-t", "10.244.1.36", "n1", None, tcp8080),
        _pod("np/srv-t80", "10.244.1.37", "n1", None, tcp8080),
        _pod("kube-system/hostnet-n1", N1, "n1", None, ((None, 18080, "TCP"),), host_network=True),
        # node n2
        _pod("np/srv-remote", "10.244.2.10", "n2", None, tcp8080),
        _pod("np/srv-alt", "10.244.2.11", "n2", None, (("alt", 8443, "TCP"),)),
        _pod("np/plain", "10.244.2.12", "n2", None, ((None, 8080, "TCP"), (None, 8443, "TCP"))),
        _pod("np/web-d2", "10.244.2.20", "n2", None, tcp8080),
        _pod("np/web-e2", "10.244.2.21", "n2", None, tcp8080),
        _pod("np/web-s2", "10.244.2.22", "n2", None, tcp8080),
        _pod("np/web-p2", "10.244.2.23", "n2", None, tcp8080),
        _pod("other/decoy", "10.244.2.30", "n2", None, (("http-test", 8000, "TCP"),)),
        _pod(
            "kube-system/coredns",
            "10.244.2.40",
            "n2",
            {"k8s-app": "kube-dns"},
            (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")),
        ),
        _pod("kube-system/hostnet-n2", N2, "n2", None, ((None, 18080, "TCP"),), host_network=True),
        # Services
        _svc("svc-web", "srv-local", 80, "http-test", cluster_ip="10.0.0.20"),
        _svc("svc-t", "srv-t", 80, 8080, cluster_ip="10.0.0.21"),
        _svc("svc-t80", "srv-t80", 80, 8080, cluster_ip="10.0.0.22"),
        _svc("svc-hp", "srv-hp", 80, 8080, cluster_ip="10.0.0.23"),
        _svc(
            "kube-dns",
            "coredns",
            53,
            53,
            cluster_ip="10.0.0.10",
            protocol="UDP",
            namespace="kube-system",
            selector={"k8s-app": "kube-dns"},
        ),
    ]
    for i, (name, app, local) in enumerate(
        [
            ("svc-d1", "web-d1", False),
            ("svc-d2", "web-d2", False),
            ("svc-e1", "web-e1", False),
            ("svc-e2", "web-e2", False),
            ("svc-s2", "web-s2", False),
            ("svc-p1", "web-p1", False),
            ("svc-p2", "web-p2", False),
            ("svc-f1", "web-f1", False),
            ("svc-el", "web-e1", True),
            ("svc-l1", "web-l1", True),
        ]
    ):
        docs.append(
            _svc(
                name,
                app,
                80,
                8080,
                cluster_ip=f"10.0.1.{i + 1}",
                type_="LoadBalancer",
                node_port=30001 + i,
                lb_ip=f"192.0.2.{i + 1}",
                local=local,
            )
        )
    deny_all: list[dict[str, Any]] = []
    docs += [
        # D2 / P1-P4: egress to 0.0.0.0/0 only
        _np("c-ipb", "c-ipb", egress=[{"to": [_ipblock("0.0.0.0/0")]}]),
        # D2: except carves X out of 0.0.0.0/0
        _np("c-exc", "c-exc", egress=[{"to": [_ipblock("0.0.0.0/0", f"{E}/32")]}]),
        # P25 / D11: NPM cannot translate an IPv6 ipBlock and skips the whole policy
        _np("c-v6", "c-v6", egress=[{"to": [_ipblock("::/0")]}, {"to": [_ipblock("10.0.0.0/8")]}]),
        # P6/P7: DNS by selector only
        _np(
            "c-dns",
            "c-dns",
            egress=[
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            },
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
        ),
        # D3: egress named port (http-test: 8080 on servers, 8000 on other/decoy)
        _np("c-np", "c-np", egress=[{"ports": [{"port": "http-test"}]}]),
        # D3b: egress named port that resolves to one number cluster-wide (alt = 8443)
        _np("c-alt", "c-alt", egress=[{"ports": [{"port": "alt"}]}]),
        # D1 egress variant
        _np(
            "c-ep",
            "c-ep",
            egress=[{"to": [_ipblock(f"{E}/32")], "ports": [{"port": 8440, "endPort": 8450}]}],
        ),
        _np("c-deny", "c-deny", egress=deny_all),
        # P5: ingress from the pod CIDR
        _np("srv-ipb", "srv-ipb", ingress=[{"from": [_ipblock("10.244.0.0/16")]}]),
        # P8 / D4c: ingress deny-all
        _np("srv-deny", "srv-deny", ingress=deny_all),
        # P9: ingress from the node subnet
        _np("srv-nodes", "srv-nodes", ingress=[{"from": [_ipblock("10.224.0.0/16")]}]),
        # D1: port 9000 endPort 9005 from client
        _np(
            "srv-ep",
            "srv-ep",
            ingress=[{"from": [_from_app("client")], "ports": [{"port": 9000, "endPort": 9005}]}],
        ),
        # D3 ingress: resolved on the subject pod
        _np(
            "srv-remote",
            "srv-remote",
            ingress=[{"from": [{"podSelector": {}}], "ports": [{"port": "http-test"}]}],
        ),
        # D6: deny-all on a label Cilium leaves out of identities
        _np("db-0", {"statefulset.kubernetes.io/pod-name": "db-0"}, ingress=deny_all),
        # D5 table
        _np("web-d1", "web-d1", ingress=deny_all),
        _np("web-d2", "web-d2", ingress=deny_all),
        _np("web-l1", "web-l1", ingress=deny_all),
        _np(
            "web-e1", "web-e1", ingress=[{"from": [_ipblock(f"{E}/32")], "ports": [{"port": 8080}]}]
        ),
        _np(
            "web-e2", "web-e2", ingress=[{"from": [_ipblock(f"{E}/32")], "ports": [{"port": 8080}]}]
        ),
        _np("web-s2", "web-s2", ingress=[{"from": [_ipblock("10.224.0.0/16")]}]),
        _np("web-p1", "web-p1", ingress=[{"ports": [{"port": 8080}]}]),
        _np("web-p2", "web-p2", ingress=[{"ports": [{"port": 8080}]}]),
        _np(
            "web-f1",
            "web-f1",
            ingress=[{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}],
        ),
        # D10: ClusterIP evaluated on (backend, targetPort); hairpin
        _np("srv-t", "srv-t", ingress=[{"from": [_from_app("client")], "ports": [{"port": 8080}]}]),
        _np(
            "srv-t80", "srv-t80", ingress=[{"from": [_from_app("client")], "ports": [{"port": 80}]}]
        ),
        _np("srv-hp", "srv-hp", ingress=deny_all),
        # D4b remedy: CNP toEntities remote-node (NPM ignores Cilium policies)
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "c-ent", "namespace": "np"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "c-ent"}},
                "egress": [{"toEntities": ["remote-node"]}],
            },
        },
    ]
    return snapshot_from_dicts(docs)


def topology(dataplane: str, snapshot: Snapshot | None = None) -> LabTopology:
    return plan_topology(snapshot or fixture_snapshot(), lab="dpt", dataplane=dataplane)


def rules(dataplane: str, snapshot: Snapshot | None = None) -> dict[str, NodeRules]:
    return dict(render(topology(dataplane, snapshot)))


def small_snapshot(*policies: dict[str, Any]) -> Snapshot:
    return snapshot_from_dicts([*_small_docs(), *policies])


def _small_docs() -> list[dict[str, Any]]:
    return list(
        [
            _node("n1", N1, "10.244.1.0/24"),
            _node("n2", N2, "10.244.2.0/24"),
            _ns("np"),
            _ns("other"),
            _pod("np/a", "10.244.1.10", "n1", None, (("http-test", 8080, "TCP"),)),
            _pod("np/b", "10.244.2.10", "n2", None, (("http-test", 8080, "TCP"),)),
            _pod("other/c", "10.244.2.11", "n2", None, (("http-test", 8000, "TCP"),)),
            _pod("kube-system/h", N1, "n1", None, (("http-test", 9999, "TCP"),), host_network=True),
        ]
    )


# ---------------------------------------------------------------------------- rendering


def test_every_node_gets_rules_for_each_dataplane() -> None:
    for dp in DATAPLANES:
        assert set(rules(dp)) == {"n1", "n2"}


def test_an_unknown_dataplane_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown dataplane 'spec'"):
        render(topology("spec"))


def test_rendering_is_deterministic() -> None:
    for dp in DATAPLANES:
        assert rules(dp) == rules(dp)


def test_npm_forward_runs_kube_forward_before_azure_npm_on_new_connections_only() -> None:
    text = rules("npm")["n1"].iptables
    forward = [line for line in text.splitlines() if line.startswith("-A FORWARD ")]
    # D21: kube-proxy's jumps in the order its Prepend leaves them, NPM's right after
    # KUBE-SERVICES (positionAzureChainJumpRule), before KUBE-EXTERNAL-SERVICES
    assert [line.split(" -j ")[-1] for line in forward] == [
        "KUBE-PROXY-FIREWALL",
        "KUBE-FORWARD",
        "KUBE-SERVICES",
        "AZURE-NPM",
        "KUBE-EXTERNAL-SERVICES",
    ]
    assert forward[3] == "-A FORWARD -m conntrack --ctstate NEW -j AZURE-NPM"
    assert "-A INPUT -m conntrack --ctstate NEW -j AZURE" not in text
    assert "-A OUTPUT -m conntrack --ctstate NEW -j AZURE" not in text
    assert re.search(r"-A KUBE-FORWARD .*--mark 0x4000/0x4000 -j ACCEPT", text)
    assert re.search(r"-A KUBE-FORWARD .*--ctstate RELATED,ESTABLISHED -j ACCEPT", text)


def test_npm_default_drop_only_marks_and_the_base_chain_drops_on_the_mark() -> None:
    text = rules("npm")["n1"].iptables
    chain = (
        "AZURE-NPM-INGRESS-"
        + text.split("INGRESS-POLICY-np/srv-deny")[1].split("-j AZURE-NPM-INGRESS-")[1].split()[0]
    )
    lines = [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]
    # marks under their own bit, never the whole mark (NPM PR #1313): kube-proxy's 0x4000 stays
    assert lines == [f'-A {chain} -m comment --comment "DROP-ALL" -j MARK --set-xmark 0x400/0x400']
    assert "-A AZURE-NPM-INGRESS -m mark --mark 0x400/0x400 " in text
    assert "-A AZURE-NPM-EGRESS -m mark --mark 0x800/0x800 " in text
    assert "0xffffffff" not in text
    assert " -j DROP" not in "\n".join(lines)


def test_npm_ipsets_hold_pods_never_hostnetwork_pods_and_are_short_enough() -> None:
    snap = small_snapshot(
        _np(
            "p",
            "a",
            ingress=[{"from": [{"namespaceSelector": {}}], "ports": [{"port": "http-test"}]}],
        )
    )
    text = rules("npm", snap)["n1"].ipset
    assert all(
        len(line.split()[1]) <= 31 for line in text.splitlines() if line.startswith("create")
    )
    all_ns = hashed("all-namespaces")
    members = [line.split()[2] for line in text.splitlines() if line.startswith(f"add {all_ns} ")]
    assert members == ["10.244.1.10", "10.244.2.10", "10.244.2.11"]
    named = hashed("namedport:http-test")
    assert f"create {named} hash:ip,port family inet -exist" in text
    entries = [line.split()[2] for line in text.splitlines() if line.startswith(f"add {named} ")]
    assert entries == ["10.244.1.10,tcp:8080", "10.244.2.10,tcp:8080", "10.244.2.11,tcp:8000"]


def test_npm_ipblock_sets_split_the_zero_route_and_mark_excepts_nomatch() -> None:
    snap = small_snapshot(
        _np("p", "a", egress=[{"to": [_ipblock("0.0.0.0/0", "10.0.0.0/8", "128.0.0.0/1")]}])
    )
    text = rules("npm", snap)["n1"].ipset
    name = hashed("p-in-ns-np-0-0OUT")
    members = [
        line.split(" ", 2)[2] for line in text.splitlines() if line.startswith(f"add {name} ")
    ]
    assert members == ["0.0.0.0/1", "128.0.0.0/1 nomatch", "10.0.0.0/8 nomatch"]


def test_npm_port_ranges_named_ports_and_sctp_become_iptables_matches() -> None:
    snap = small_snapshot(
        _np(
            "p",
            "a",
            ingress=[
                {
                    "ports": [
                        {"port": 9000, "endPort": 9005},
                        {"port": "http-test"},
                        {"protocol": "SCTP", "port": 9999},
                        {"protocol": "UDP"},
                    ]
                }
            ],
        )
    )
    text = rules("npm", snap)["n1"].iptables
    assert "-p tcp -m tcp --dport 9000:9005 " in text
    assert f"-p tcp -m set --match-set {hashed('namedport:http-test')} dst,dst " in text
    assert "-p sctp -m sctp --dport 9999 " in text
    assert "-p udp -m comment" in text


def test_npm_skips_policies_it_cannot_translate_and_says_so() -> None:
    snap = small_snapshot(
        _np("v6", "a", egress=[{"to": [_ipblock("::/0")]}, {"to": [_ipblock("10.0.0.0/8")]}]),
        _np(
            "badvalue",
            {"app": "a"},
            ingress=[
                {
                    "from": [
                        {
                            "podSelector": {
                                "matchExpressions": [
                                    {"key": "x", "operator": "In", "values": ["not a value!"]}
                                ]
                            }
                        }
                    ]
                }
            ],
        ),
    )
    text = rules("npm", snap)["n1"].iptables
    assert (
        "# NPM skips NetworkPolicy np/v6: egress[0] has an ipBlock NPM does not take for IPv4 "
        "(::/0) (fail-open)" in text
    )
    assert "# NPM skips NetworkPolicy np/badvalue:" in text
    assert "POLICY-np/v6" not in text and "POLICY-np/badvalue" not in text
    # no translated policy: AZURE-NPM stays empty (NPM is not activated)
    assert "-A AZURE-NPM -j" not in text


def test_npm_validates_what_translate_policy_validates_and_no_more() -> None:
    """D20: an allow-all rule returns before the direction's other rules are read, a long
    label value passes NPM's regex, a direction policyTypes leaves out is never read; a
    non-canonical /0 fails util.IsIPV4."""
    long_value = "v" * 70
    snap = small_snapshot(
        _np("allall", "a", egress=[{}, {"to": [_ipblock("::/0")]}]),
        _np(
            "long",
            {"app": "a"},
            ingress=[
                {
                    "from": [
                        {
                            "podSelector": {
                                "matchExpressions": [
                                    {"key": "x", "operator": "NotIn", "values": [long_value]}
                                ]
                            }
                        }
                    ]
                }
            ],
        ),
        _np("slash0", "a", egress=[{"to": [_ipblock("10.0.0.0/0")]}]),
    )
    text = rules("npm", snap)["n1"].iptables
    skipped = [line for line in text.splitlines() if line.startswith("# NPM skips")]
    assert skipped == [
        "# NPM skips NetworkPolicy np/slash0: egress[0] has an ipBlock NPM does not take for "
        "IPv4 (10.0.0.0/0) (fail-open)"
    ]
    assert "EGRESS-POLICY-np/allall" in text and "ALLOW-ALL-TO" in text
    assert "INGRESS-POLICY-np/long" in text


def test_kube_proxy_chains_pick_the_first_backend_by_key_and_resolve_named_target_ports() -> None:
    topo = topology("npm")
    route = next(r for r in service_routes(topo) if r.service.name == "svc-web")
    assert route.backend is not None and route.backend.pod.key == "np/srv-local"
    assert route.backend.port == 8080
    text = render(topo)["n1"].iptables
    sep = sep_chain(route, route.backend)
    assert f"-A {sep} -s 10.244.1.20/32 " in text  # hairpin mark before DNAT
    assert re.search(rf"-A {sep} -p tcp .*-j DNAT --to-destination 10.244.1.20:8080", text)
    assert re.search(
        r"-A KUBE-SERVICES -m set ! --match-set kube-cluster-ranges src -d 10.0.0.20/32 .*"
        r"--dport 80 -j KUBE-MARK-MASQ",
        text,
    )
    assert text.splitlines()[
        max(i for i, line in enumerate(text.splitlines()) if line.startswith("-A KUBE-SERVICES"))
    ].endswith("--dst-type LOCAL -j KUBE-NODEPORTS")
    assert svc_chain(route).startswith("KUBE-SVC-") and len(svc_chain(route)) == 25


def test_kube_proxy_external_traffic_policy_local_uses_the_receiving_nodes_backend() -> None:
    topo = topology("npm")
    route = next(r for r in service_routes(topo) if r.service.name == "svc-el")
    ext, svl = svc_chain(route, "KUBE-EXT-"), svc_chain(route, "KUBE-SVL-")
    n1, n2 = render(topo)["n1"].iptables, render(topo)["n2"].iptables
    assert f"-A {ext} -j {svl}" in n1
    assert f"-A {ext} -j {svl}" not in n2
    assert f"-A {ext} -m set --match-set kube-pod-ranges src " in n2  # pods still go cluster-wide
    assert re.search(r"NETPARITY-NO-ENDPOINTS .*-d 192\.0\.2\.9/32 .*-j DROP", n2)
    cluster = next(r for r in service_routes(topo) if r.service.name == "svc-d1")
    assert f"-A {svc_chain(cluster, 'KUBE-EXT-')} " in n1
    assert re.search(rf"-A {svc_chain(cluster, 'KUBE-EXT-')} .*-j KUBE-MARK-MASQ", n1)


def test_cilium_compiles_endport_as_a_range_except_for_cilium_1_16() -> None:
    assert "tcp dport 9000-9005 return" in rules("cilium")["n1"].nft
    assert "tcp dport 9000-9005" not in rules("cilium-1.16")["n1"].nft
    assert "tcp dport 9000 return" in rules("cilium-1.16")["n1"].nft


def test_cilium_egress_named_port_conflict_voids_the_rule_and_a_unique_name_is_a_wildcard() -> None:
    nft = rules("cilium")["n1"].nft
    chain = _pod_chain(nft, "egress", "np/c-np")
    assert "return" not in chain.replace("return comment", "")  # nothing allowed
    alt = _pod_chain(nft, "egress", "np/c-alt")
    assert 'tcp dport 8443 return comment "NetworkPolicy np/c-alt egress[0]"' in alt


def test_cilium_cidr_rules_match_world_only_and_wildcards_match_everything() -> None:
    nft = rules("cilium")["n1"].nft
    ipb = _pod_chain(nft, "egress", "np/c-ipb")
    assert "ip daddr != @pods ip daddr != @nodes fib daddr type != local return" in ipb
    p1 = _pod_chain(nft, "ingress", "np/web-p1")
    assert 'tcp dport 8080 return comment "NetworkPolicy np/web-p1 ingress[0]"' in p1


def test_cilium_label_filter_drops_the_statefulset_pod_name_from_identities() -> None:
    nft = rules("cilium")["n1"].nft
    assert "# ingress of np/db-0" not in nft  # the selector matches no identity: not isolated
    assert "POLICY-np/db-0" in rules("npm")["n1"].iptables


def test_cilium_sctp_port_rules_never_match_but_rules_without_ports_do() -> None:
    snap = small_snapshot(
        _np("s", "a", ingress=[{"ports": [{"protocol": "SCTP", "port": 9999}]}]),
        _np("t", "b", ingress=[{"from": [{"podSelector": {}}]}]),
    )
    nft = rules("cilium", snap)
    a = _pod_chain(nft["n1"].nft, "ingress", "np/a")
    assert "sctp" not in a and "NetworkPolicy np/s" not in a
    b = _pod_chain(nft["n2"].nft, "ingress", "np/b")
    assert (
        'ip saddr { 10.244.1.10, 10.244.2.10 } return comment "NetworkPolicy np/t ingress[0]"' in b
    )


def test_cilium_policies_compile_entities_cidrs_and_denies_and_list_unsupported_rules() -> None:
    cnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "c", "namespace": "np"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "a"}},
            "ingress": [
                {
                    "fromEntities": ["world", "remote-node"],
                    "toPorts": [{"ports": [{"port": "8080"}]}],
                },
                {"fromEndpoints": [{}]},
            ],
            "ingressDeny": [{"fromCIDR": ["203.0.113.0/24"]}],
            "egress": [{"toFQDNs": [{"matchName": "example.com"}]}, {"toEntities": ["host"]}],
        },
    }
    nft = rules("cilium", small_snapshot(cnp))["n1"].nft
    ing = _pod_chain(nft, "ingress", "np/a")
    assert "ip saddr 203.0.113.0/24 drop" in ing
    assert ing.index(" drop comment") < ing.index("allow-localhost") < ing.index("tcp dport 8080")
    assert "ip saddr @remote_nodes tcp dport 8080 return" in ing
    assert "udp dport 8080 return" in ing  # protocol ANY: TCP and UDP, never SCTP
    # fromEndpoints [{}] in a CNP: every pod of the policy's namespace, not other/c
    assert (
        'ip saddr { 10.244.1.10, 10.244.2.10 } return comment "CiliumNetworkPolicy np/c ingress[1]"'
        in ing
    )
    assert "# np/a: skipped CiliumNetworkPolicy np/c egress[0]: unsupported" in nft
    assert "fib daddr type local return" in _pod_chain(nft, "egress", "np/a")


def test_clusterwide_cilium_policies_select_pods_of_every_namespace_and_host_policies_are_listed() -> (
    None
):
    ccnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "all"},
        "specs": [
            {"endpointSelector": {}, "ingress": [{"fromEndpoints": [{}]}]},
            {"nodeSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]},
        ],
    }
    nft = rules("cilium", small_snapshot(ccnp))
    b = _pod_chain(nft["n2"].nft, "ingress", "np/b")
    assert "ip saddr { 10.244.1.10, 10.244.2.10, 10.244.2.11 } return" in b
    assert "# skipped CiliumClusterwideNetworkPolicy all#1: nodeSelector" in nft["n1"].nft


def test_overlapping_excepts_load_in_both_dataplanes(scratch_netns: str) -> None:
    snap = small_snapshot(
        _np("x", "a", egress=[{"to": [_ipblock("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24")]}])
    )
    assert "ip daddr != 10.1.0.0/16" in _pod_chain(
        rules("cilium", snap)["n1"].nft, "egress", "np/a"
    )
    for dp in ("npm", "cilium"):
        _apply(scratch_netns, rules(dp, snap)["n1"])


def test_cilium_external_traffic_is_snated_only_toward_a_backend_on_another_node() -> None:
    n1 = rules("cilium")["n1"].nft
    assert re.search(r"meta l4proto tcp meta mark set .* dnat to 10\.244\.2\.20:8080", n1)  # svc-d2
    assert re.search(
        r"meta l4proto tcp dnat to 10\.244\.1\.30:8080 comment \"np/svc-d1 external", n1
    )
    assert "snat to 10.224.0.4" in n1
    assert 'oifname "azv' in n1 and "snat to 169.254.42.1" in n1


def _pod_chain(nft: str, direction: str, key: str) -> str:
    marker = f"\t# {direction} of {key}\n"
    assert marker in nft, f"no {direction} chain for {key}"
    return nft.split(marker, 1)[1].split("\n\t}", 1)[0]


@pytest.fixture
def scratch_netns() -> Iterator[str]:
    name = f"np-dptest-{os.getpid()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _apply(netns: str, node_rules: NodeRules) -> None:
    for argv, text in (
        (["ipset", "restore"], node_rules.ipset),
        (["iptables-restore"], node_rules.iptables),
        (["nft", "-f", "-"], node_rules.nft),
    ):
        if text.strip():
            proc = subprocess.run(
                ["ip", "netns", "exec", netns, *argv], input=text, text=True, capture_output=True
            )
            assert proc.returncode == 0, f"{argv[0]} failed: {proc.stderr}"


def test_the_rules_of_every_dataplane_load_and_can_be_applied_again_and_replaced(
    scratch_netns: str,
) -> None:
    # npm, then npm again (re-apply), then cilium over it (lab upgrade), then npm back
    for dp in ("npm", "npm", "cilium", "cilium-1.16", "npm"):
        for node_rules in rules(dp).values():
            _apply(scratch_netns, node_rules)
        listing = subprocess.run(
            ["ip", "netns", "exec", scratch_netns, "nft", "list", "ruleset"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if dp == "npm":
            assert "AZURE-NPM" in listing and "table ip cilium" not in listing
        else:
            assert "table ip cilium" in listing and "AZURE-NPM" not in listing


# ---------------------------------------------------------------------------- real packets


@dataclass(frozen=True)
class Row:
    """One probe and its expected verdict per dataplane (True: allowed)."""

    what: str
    src: str
    dst: str
    port: int | str
    npm: bool
    cilium: bool
    cilium_116: bool | None = None  # None: as cilium
    protocol: Protocol = Protocol.TCP

    def expected(self, dataplane: str) -> bool:
        if dataplane == "npm":
            return self.npm
        if dataplane == "cilium-1.16" and self.cilium_116 is not None:
            return self.cilium_116
        return self.cilium


def _endpoint(lab: Lab, spec: str) -> Endpoint:
    kind, _, rest = spec.partition(":")
    snap = lab.snapshot
    if kind == "pod":
        pod = snap.pod(*rest.split("/"))
        assert pod is not None, spec
        return PodEndpoint(pod=pod)
    if kind == "node":
        node = snap.node(rest)
        assert node is not None, spec
        return NodeEndpoint(node=node)
    if kind == "ext":
        return ExternalEndpoint(ip=rest)
    key, _, at = rest.partition("@")
    svc = snap.service(*key.split("/"))
    assert svc is not None, spec
    via = {"svc": Via.CLUSTER_IP, "nodeport": Via.NODE_PORT, "lb": Via.LOAD_BALANCER}[kind]
    return ServiceEndpoint(service=svc, via=via, node=snap.node(at) if at else None)


def check(lab: Lab, dataplane: str, rows: list[Row]) -> None:
    targets = [
        Target(
            id=f"r{i}",
            traffic=Traffic(
                source=_endpoint(lab, r.src),
                destination=_endpoint(lab, r.dst),
                port=r.port,
                protocol=r.protocol,
            ),
        )
        for i, r in enumerate(rows)
    ]
    results = lab.backend.run(targets, timeout=1.5)
    wrong = []
    for row, res in zip(rows, results, strict=True):
        if res.observed in (Observed.ERROR, Observed.NOT_RUN):
            wrong.append(f"{row.what}: probe could not run ({res.error})")
        elif res.allowed is not row.expected(dataplane):
            want = "allow" if row.expected(dataplane) else "deny"
            wrong.append(f"{row.what}: expected {want}, observed {res.observed} ({res.address})")
    assert not wrong, f"{dataplane}:\n" + "\n".join(wrong)


@pytest.fixture(scope="module")
def labs(module_lab_factory: LabFactory) -> dict[str, Lab]:  # noqa: F811
    """One lab per dataplane, built once for the module from the fixture snapshot."""
    snap = fixture_snapshot()
    return {dp: module_lab_factory(snap, dataplane=dp) for dp in DATAPLANES}


by_dataplane = pytest.mark.parametrize("dataplane", DATAPLANES)


IPBLOCK_ROWS = [
    Row("P1 c-ipb -> srv-remote", "pod:np/c-ipb", "pod:np/srv-remote", 8080, True, False),
    Row(
        "c-ipb -> srv-local (same node)",
        "pod:np/c-ipb",
        "pod:np/srv-local",
        8080,
        True,
        False,
    ),
    Row("P2 c-ipb -> own node hostnet", "pod:np/c-ipb", "node:n1", 18080, True, False),
    Row("P3 c-ipb -> other node hostnet", "pod:np/c-ipb", "node:n2", 18080, True, False),
    Row("P4 c-ipb -> X", "pod:np/c-ipb", f"ext:{E}", 8443, True, True),
    Row("except X/32: c-exc -> X", "pod:np/c-exc", f"ext:{E}", 8443, False, False),
    Row("except X/32: c-exc -> Y", "pod:np/c-exc", f"ext:{Y}", 8443, True, True),
    Row("P25 c-v6 -> X (NPM skips the policy)", "pod:np/c-v6", f"ext:{E}", 8443, True, False),
    Row(
        "c-v6 -> srv-local (10/8 covers the pod)",
        "pod:np/c-v6",
        "pod:np/srv-local",
        8080,
        True,
        False,
    ),
    Row(
        "P5 client -> srv-ipb (pod CIDR)",
        "pod:np/client",
        "pod:np/srv-ipb",
        8080,
        True,
        False,
    ),
    Row("P5 X -> srv-ipb (outside)", f"ext:{E}", "pod:np/srv-ipb", 8080, False, False),
    Row(
        "P9 hostnet@n2 -> srv-nodes",
        "pod:kube-system/hostnet-n2",
        "pod:np/srv-nodes",
        8080,
        True,
        False,
    ),
]


NODE_ROWS = [
    Row("P6 c-dns -> own kubelet", "pod:np/c-dns", "node:n1", 10250, True, False),
    Row("c-dns -> own node hostnet", "pod:np/c-dns", "node:n1", 18080, True, False),
    Row("P7 c-dns -> other kubelet", "pod:np/c-dns", "node:n2", 10250, False, False),
    Row("c-dns -> other hostnet", "pod:np/c-dns", "node:n2", 18080, False, False),
    Row(
        "c-dns -> coredns 53/udp",
        "pod:np/c-dns",
        "pod:kube-system/coredns",
        53,
        True,
        True,
        protocol=Protocol.UDP,
    ),
    Row(
        "c-dns -> kube-dns ClusterIP 53/udp",
        "pod:np/c-dns",
        "svc:kube-system/kube-dns",
        53,
        True,
        True,
        protocol=Protocol.UDP,
    ),
    Row("c-dns -> srv-local", "pod:np/c-dns", "pod:np/srv-local", 8080, False, False),
    Row(
        "P8 hostnet@n1 -> srv-deny",
        "pod:kube-system/hostnet-n1",
        "pod:np/srv-deny",
        8080,
        True,
        True,
    ),
    Row("D4c node n1 -> srv-deny", "node:n1", "pod:np/srv-deny", 8080, True, True),
    Row(
        "D4d hostnet@n2 -> srv-deny",
        "pod:kube-system/hostnet-n2",
        "pod:np/srv-deny",
        8080,
        False,
        False,
    ),
    Row(
        "hostnet@n1 -> srv-nodes (own node)",
        "pod:kube-system/hostnet-n1",
        "pod:np/srv-nodes",
        8080,
        True,
        True,
    ),
    Row("CNP remote-node: c-ent -> n2", "pod:np/c-ent", "node:n2", 18080, True, True),
    Row("CNP remote-node: c-ent -> own node", "pod:np/c-ent", "node:n1", 18080, True, False),
    Row("CNP remote-node: c-ent -> X", "pod:np/c-ent", f"ext:{E}", 8443, True, False),
]


POD_ROWS = [
    Row(
        "client -> srv-local (no policy)",
        "pod:np/client",
        "pod:np/srv-local",
        8080,
        True,
        True,
    ),
    Row(
        "client -> srv-remote (ingress from ns pods)",
        "pod:np/client",
        "pod:np/srv-remote",
        8080,
        True,
        True,
    ),
    Row("client -> srv-deny", "pod:np/client", "pod:np/srv-deny", 8080, False, False),
    Row(
        "client -> srv-local 5353/udp",
        "pod:np/client",
        "pod:np/srv-local",
        5353,
        True,
        True,
        protocol=Protocol.UDP,
    ),
    Row(
        "client -> srv-deny 5353/udp",
        "pod:np/client",
        "pod:np/srv-deny",
        5353,
        False,
        False,
        protocol=Protocol.UDP,
    ),
    Row(
        "c-deny -> srv-local (egress deny-all)",
        "pod:np/c-deny",
        "pod:np/srv-local",
        8080,
        False,
        False,
    ),
    Row(
        "X -> srv-local (external, no policy)",
        f"ext:{E}",
        "pod:np/srv-local",
        8080,
        True,
        True,
    ),
    Row(
        "P20 client -> db-0 (pod-name label)",
        "pod:np/client",
        "pod:np/db-0",
        8080,
        False,
        True,
    ),
]


PORT_ROWS = [
    Row(
        "P16 c-np -> srv-remote:http-test (decoy 8000)",
        "pod:np/c-np",
        "pod:np/srv-remote",
        8080,
        True,
        False,
    ),
    Row("c-np -> plain:8080", "pod:np/c-np", "pod:np/plain", 8080, False, False),
    Row("P17 c-alt -> X:8443 (alt unique)", "pod:np/c-alt", f"ext:{E}", 8443, False, True),
    Row("c-alt -> plain:8443 (unnamed)", "pod:np/c-alt", "pod:np/plain", 8443, False, True),
    Row("c-alt -> srv-alt:alt", "pod:np/c-alt", "pod:np/srv-alt", "alt", True, True),
    Row("c-alt -> srv-alt:8444", "pod:np/c-alt", "pod:np/srv-alt", 8444, False, False),
    Row("P18 client -> srv-ep:9000", "pod:np/client", "pod:np/srv-ep", 9000, True, True),
    Row(
        "P18 client -> srv-ep:9003",
        "pod:np/client",
        "pod:np/srv-ep",
        9003,
        True,
        True,
        False,
    ),
    Row(
        "client -> srv-ep:9005 (end)",
        "pod:np/client",
        "pod:np/srv-ep",
        9005,
        True,
        True,
        False,
    ),
    Row("client -> srv-ep:9006", "pod:np/client", "pod:np/srv-ep", 9006, False, False),
    Row("P19 client -> srv-ep:9010", "pod:np/client", "pod:np/srv-ep", 9010, False, False),
    Row(
        "srv-local -> srv-ep:9000 (not from client)",
        "pod:np/srv-local",
        "pod:np/srv-ep",
        9000,
        False,
        False,
    ),
    Row("c-ep -> X:8440 (start)", "pod:np/c-ep", f"ext:{E}", 8440, True, True),
    Row("c-ep -> X:8443 (inside)", "pod:np/c-ep", f"ext:{E}", 8443, True, True, False),
    Row("c-ep -> X:8451 (beyond)", "pod:np/c-ep", f"ext:{E}", 8451, False, False),
]


EXTERNAL_SERVICE_ROWS = [
    Row(
        "P10 deny-all, eTP=Cluster, backend n1",
        f"ext:{E}",
        "nodeport:np/svc-d1@n1",
        80,
        True,
        False,
    ),
    Row("P10 via LB IP", f"ext:{E}", "lb:np/svc-d1@n1", 80, True, False),
    Row("P11 deny-all, backend n2", f"ext:{E}", "nodeport:np/svc-d2@n1", 80, False, False),
    Row("ipBlock e/32, backend n1", f"ext:{E}", "nodeport:np/svc-e1@n1", 80, True, True),
    Row("ipBlock e/32, backend n2", f"ext:{E}", "nodeport:np/svc-e2@n1", 80, False, False),
    Row(
        "P12 ipBlock nodes, backend n2",
        f"ext:{E}",
        "nodeport:np/svc-s2@n1",
        80,
        True,
        False,
    ),
    Row("P13 ports-only, backend n1", f"ext:{E}", "nodeport:np/svc-p1@n1", 80, True, True),
    Row("P13 ports-only, backend n2", f"ext:{E}", "lb:np/svc-p2@n1", 80, True, True),
    Row(
        "P14 eTP=Local ipBlock e/32, backend n1",
        f"ext:{E}",
        "nodeport:np/svc-el@n1",
        80,
        True,
        True,
    ),
    Row(
        "eTP=Local via n2 (no local backend)",
        f"ext:{E}",
        "nodeport:np/svc-el@n2",
        80,
        False,
        False,
    ),
    Row("eTP=Local deny-all, backend n1", f"ext:{E}", "lb:np/svc-l1@n1", 80, False, False),
    Row(
        "E -> nodePort svc-p2 on n2 (backend local there)",
        f"ext:{E}",
        "nodeport:np/svc-p2@n2",
        80,
        True,
        True,
    ),
    Row(
        "hostnet@n2 -> nodePort svc-d1 on n1 (deny-all)",
        "pod:kube-system/hostnet-n2",
        "nodeport:np/svc-d1@n1",
        80,
        True,
        False,
    ),
    Row(
        "node n2 -> nodePort svc-e1 on n1 (from E/32 only)",
        "node:n2",
        "nodeport:np/svc-e1@n1",
        80,
        True,
        False,
    ),
]


IN_CLUSTER_SERVICE_ROWS = [
    Row(
        "P15 client (not frontend) -> LB IP svc-f1",
        "pod:np/client",
        "lb:np/svc-f1@n1",
        80,
        True,
        False,
    ),
    Row("front -> LB IP svc-f1", "pod:np/front", "lb:np/svc-f1@n1", 80, True, True),
    Row(
        "client -> nodePort svc-f1 on own node",
        "pod:np/client",
        "nodeport:np/svc-f1@n1",
        80,
        True,
        False,
    ),
    Row(
        "c-deny -> LB IP svc-p1 (egress deny-all)",
        "pod:np/c-deny",
        "lb:np/svc-p1@n1",
        80,
        True,
        False,
    ),
    Row(
        "client -> LB IP svc-d2 (backend n2, deny-all)",
        "pod:np/client",
        "lb:np/svc-d2@n1",
        80,
        False,
        False,
    ),
    Row(
        "D10 client -> svc-t:80 (targetPort 8080 allowed)",
        "pod:np/client",
        "svc:np/svc-t",
        80,
        True,
        True,
    ),
    Row(
        "D10 client -> svc-t80:80 (only 80 allowed)",
        "pod:np/client",
        "svc:np/svc-t80",
        80,
        False,
        False,
    ),
    Row("svc-web: named targetPort", "pod:np/client", "svc:np/svc-web", 80, True, True),
    Row(
        "D10 hairpin srv-hp -> own Service",
        "pod:np/srv-hp",
        "svc:np/svc-hp",
        80,
        True,
        True,
    ),
    Row("client -> svc-hp (deny-all)", "pod:np/client", "svc:np/svc-hp", 80, False, False),
    Row(
        "client -> nodePort svc-e2 on n2 (backend there)",
        "pod:np/client",
        "nodeport:np/svc-e2@n2",
        80,
        True,
        False,
    ),
    Row(
        "client -> nodePort svc-p2 on n2 (ports-only)",
        "pod:np/client",
        "nodeport:np/svc-p2@n2",
        80,
        True,
        True,
    ),
    Row(
        "client -> nodePort svc-d1 on n2 (backend on n1, deny-all)",
        "pod:np/client",
        "nodeport:np/svc-d1@n2",
        80,
        False,
        False,
    ),
    Row(
        "node n1 -> LB IP svc-d1 (local backend, deny-all)",
        "node:n1",
        "lb:np/svc-d1@n1",
        80,
        True,
        True,
    ),
    Row(
        "node n1 -> LB IP svc-d2 (backend n2, deny-all)",
        "node:n1",
        "lb:np/svc-d2@n1",
        80,
        False,
        False,
    ),
]


@pytest.mark.lab
@by_dataplane
def test_ipblock_covers_pods_and_nodes_under_npm_only(labs: dict[str, Lab], dataplane: str) -> None:
    check(labs[dataplane], dataplane, IPBLOCK_ROWS)


@pytest.mark.lab
@by_dataplane
def test_node_traffic_own_node_and_other_nodes(labs: dict[str, Lab], dataplane: str) -> None:
    check(labs[dataplane], dataplane, NODE_ROWS)


@pytest.mark.lab
@by_dataplane
def test_pod_to_pod_isolation_udp_and_identity_labels(labs: dict[str, Lab], dataplane: str) -> None:
    check(labs[dataplane], dataplane, POD_ROWS)


@pytest.mark.lab
@by_dataplane
def test_named_ports_and_port_ranges(labs: dict[str, Lab], dataplane: str) -> None:
    check(labs[dataplane], dataplane, PORT_ROWS)


@pytest.mark.lab
@by_dataplane
def test_nodeport_and_loadbalancer_from_outside(labs: dict[str, Lab], dataplane: str) -> None:
    check(labs[dataplane], dataplane, EXTERNAL_SERVICE_ROWS)


@pytest.mark.lab
@by_dataplane
def test_in_cluster_clients_of_services(labs: dict[str, Lab], dataplane: str) -> None:
    check(labs[dataplane], dataplane, IN_CLUSTER_SERVICE_ROWS)


@pytest.mark.lab
def test_a_lab_upgraded_from_npm_to_cilium_and_back_enforces_the_new_dataplane_only(
    lab_factory: LabFactory,  # noqa: F811
) -> None:
    snap = small_snapshot(
        _np("b", "b", ingress=[{"from": [_ipblock("10.244.0.0/16")]}]),
        _np("a", "a", egress=[{"to": [_ipblock("0.0.0.0/0")]}]),
    )
    rows = [
        Row("a -> b (ipBlock both ways)", "pod:np/a", "pod:np/b", 8080, True, False),
        Row("a -> own node (D4a)", "pod:np/a", "node:n1", 10250, True, False),
        Row("c -> b (ipBlock of the pod CIDR)", "pod:other/c", "pod:np/b", 8080, True, False),
    ]
    lab = lab_factory(snap, dataplane="npm")
    check(lab, "npm", rows)
    check(lab_factory.upgrade(lab, "cilium"), "cilium", rows)
    check(lab_factory.upgrade(lab, "npm"), "npm", rows)


# ---------------------------------------------------------------------------- cilium-config


def _cilium_config(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": "kube-system"},
        "data": data,
    }


def test_cilium_reads_the_label_filter_the_engine_reads() -> None:
    """One table of Cilium's defaults and one reading of `labels`, for the lab and the engine."""
    from netparity.engine.dataplane import get_dataplane
    from netparity.facts.cilium_config import DEFAULT_LABEL_FILTER
    from netparity.lab.dataplanes.cilium import Compiler

    for setting in (None, "!spark-role k8s:app"):
        extra = [] if setting is None else [_cilium_config(labels=setting)]
        snap = small_snapshot(*extra)
        lab = Compiler(topology("cilium", snap), honour_end_port=True).filter
        engine = get_dataplane("cilium").with_config(snap.config).label_filter
        assert lab == engine
        assert (lab == DEFAULT_LABEL_FILTER) is (setting is None)
        assert lab.keeps("app") and not lab.keeps("failure-domain.beta.kubernetes.io/zone")


def test_cilium_an_unreadable_labels_pattern_or_allow_localhost_is_an_input_error() -> None:
    for data in ({"labels": "k8s:!team("}, {"labels": "k8s:"}, {"allow-localhost": "never"}):
        with pytest.raises(InputError, match="ConfigMap kube-system/cilium-config"):
            rules("cilium", small_snapshot(_cilium_config(**data)))


def test_cilium_enable_sctp_compiles_sctp_port_rules_that_load() -> None:
    """The kernel here has no SCTP, so no SCTP packet can be sent: this checks the nft rules
    the lab renders under `enable-sctp: "true"` (and that nft accepts them), not packets."""
    policies = (
        _np("s", "a", ingress=[{"ports": [{"protocol": "SCTP", "port": 9999}]}]),
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "any", "namespace": "np"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "b"}},
                "ingress": [{"toPorts": [{"ports": [{"port": "7000", "protocol": "ANY"}]}]}],
            },
        },
    )
    on = rules("cilium", small_snapshot(_cilium_config(**{"enable-sctp": "true"}), *policies))
    a = _pod_chain(on["n1"].nft, "ingress", "np/a")
    assert 'sctp dport 9999 return comment "NetworkPolicy np/s ingress[0]"' in a
    b = _pod_chain(on["n2"].nft, "ingress", "np/b")
    assert all(f"{p} dport 7000 return" in b for p in ("tcp", "udp", "sctp"))
    for value in ("false", "yes"):  # the agent reads anything but Go's true spellings as false
        off = rules("cilium", small_snapshot(_cilium_config(**{"enable-sctp": value}), *policies))
        assert "sctp dport" not in off["n1"].nft + off["n2"].nft  # D8
        assert "meta l4proto sctp drop" in off["n1"].nft  # D24: SCTP dropped whole
    name = f"np-sctp-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for node_rules in (*on.values(), *off.values()):
            _apply(name, node_rules)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_cilium_allow_localhost_policy_sends_the_nodes_own_packets_through_ingress() -> None:
    """The host's packets to a local pod pass the pod's ingress chain from an output hook (its
    deny rules first, D26); under `allow-localhost: policy` that chain no longer returns
    early for the host."""
    policy = _np("w", "a", ingress=[{"from": [{"podSelector": {}}]}])
    default = rules("cilium", small_snapshot(policy))["n1"].nft
    chain = _pod_chain(default, "ingress", "np/a")
    assert "allow-localhost" in chain
    assert "ip daddr vmap { 10.244.1.10 : jump ingress_0 }" in "\n".join(
        _chain_body(default, "output")
    )
    config = _cilium_config(**{"allow-localhost": "policy"})
    policed = rules("cilium", small_snapshot(config, policy))["n1"].nft
    assert "allow-localhost" not in _pod_chain(policed, "ingress", "np/a")
    output = policed.split("\tchain output {\n", 1)[1].split("\n\t}", 1)[0]
    assert "type filter hook output priority filter; policy accept;" in output
    assert "ct direction reply accept" in output
    assert "ip daddr vmap { 10.244.1.10 : jump ingress_0 }" in output


def test_cilium_without_sctp_drops_every_sctp_packet_of_its_pods_before_policy() -> None:
    """D24, checked on the rendered rules (the lab's kernel has no SCTP to send): with
    `enable-sctp` off every SCTP packet from or to a local pod drops in forward, input and
    output before the reply shortcut and any policy; with it on, no such rule."""
    snap = small_snapshot()  # no policy at all
    for dp in ("cilium", "cilium-1.16", "cilium-1.19"):
        nft = rules(dp, snap)["n1"].nft
        for chain in ("forward", "input", "output"):
            body = _chain_body(nft, chain)
            drop = next(i for i, line in enumerate(body) if "meta l4proto sctp drop" in line)
            reply = next(i for i, line in enumerate(body) if "ct direction reply accept" in line)
            assert drop < reply, (dp, chain)
    on = small_snapshot(_cilium_config(**{"enable-sctp": "true"}))
    assert "sctp drop" not in rules("cilium", on)["n1"].nft
    assert "sctp drop" not in rules("npm", snap)["n1"].iptables.lower()


def _chain_body(nft: str, name: str) -> list[str]:
    lines = nft.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"chain {name} {{")
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "}")
    return [line.strip() for line in lines[start + 1 : end]]
