"""The example cluster (examples/aks-migration.yaml) and its probes (examples/probes.yaml)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from netparity.model import NetworkPolicy, Pod, Protocol, Service, Snapshot, load_snapshot

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SNAPSHOT = EXAMPLES / "aks-migration.yaml"
PROBES = EXAMPLES / "probes.yaml"

NODES = {
    "aks-nodepool1-0": ("10.224.0.4", "10.244.0.0/24"),
    "aks-nodepool1-1": ("10.224.0.5", "10.244.1.0/24"),
    "aks-nodepool1-2": ("10.224.0.6", "10.244.2.0/24"),
}
SCENARIO_POLICIES = {
    "1 endPort": ("port-range/allow-port-range", "port-range/allow-egress-port-range"),
    "2 ipBlock": (
        "ipblock-test/example-ipblock",
        "ipblock-test/allow-from-node-subnet",
        "ipblock-test/allow-from-pod-cidr",
    ),
    "3 named ports": ("named-ports/allow-egress",),
    "4 egress to the node": (
        "egress-lockdown/default-deny-egress",
        "egress-lockdown/allow-dns",
        "egress-lockdown/allow-egress",
    ),
    "5 NodePort/LoadBalancer": (
        "web/default-deny-ingress",
        "web/allow-partner-range",
        "web/allow-status-port",
    ),
    "clean": ("shop/allow-web-to-api", "shop/allow-catalog-readers"),
}
DATAPLANES = {"spec", "npm", "cilium", "cilium-1.16"}
EXTERNAL_IP = "203.0.113.10"
CLUSTER_RANGES = tuple(
    ipaddress.ip_network(c) for c in ("10.224.0.0/16", "10.244.0.0/16", "10.0.0.0/16")
)


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    return load_snapshot([SNAPSHOT])


def raw_items() -> list[dict[str, Any]]:
    doc = yaml.safe_load(SNAPSHOT.read_text(encoding="utf-8"))
    items: list[dict[str, Any]] = doc["items"]
    return items


def probes() -> list[dict[str, Any]]:
    doc = yaml.safe_load(PROBES.read_text(encoding="utf-8"))
    entries: list[dict[str, Any]] = doc["probes"]
    return entries


def policy(snap: Snapshot, key: str) -> NetworkPolicy:
    for np_ in snap.network_policies:
        if np_.key == key:
            return np_
    raise AssertionError(f"no NetworkPolicy {key}")


def service(snap: Snapshot, ref: str) -> Service:
    ns, _, name = ref.partition("/")
    svc = snap.service(ns, name)
    assert svc is not None, f"no Service {ref}"
    return svc


def find_pod(snap: Snapshot, ref: str) -> Pod | None:
    """NAMESPACE/NAME, or NAMESPACE/key=value,... (the first matching pod by name)."""
    ns, _, rest = ref.partition("/")
    if "=" not in rest:
        return snap.pod(ns, rest)
    wanted = dict(kv.split("=", 1) for kv in rest.split(","))
    matches = sorted(
        (
            p
            for p in snap.pods
            if p.namespace == ns and all(p.labels.get(k) == v for k, v in wanted.items())
        ),
        key=lambda p: p.name,
    )
    return matches[0] if matches else None


def serves(pod: Pod, port: int | str, protocol: Protocol) -> bool:
    return any(
        cp.protocol is protocol and (cp.port == port if isinstance(port, int) else cp.name == port)
        for cp in pod.ports
    )


def probe_id(p: dict[str, Any]) -> str:
    return f"{p['from']}->{p['to']}:{p['port']}/{p.get('protocol', 'TCP')}"


def test_the_example_loads_with_nothing_skipped_and_no_cilium_policies(snap: Snapshot) -> None:
    assert not snap.skipped
    assert not snap.cilium_policies
    assert 20 <= len(snap.pods) <= 30
    assert 5 <= len(snap.namespaces) <= 8


def test_it_has_three_linux_nodes_with_the_fixed_addresses(snap: Snapshot) -> None:
    assert {n.name: (n.ip, n.pod_cidr) for n in snap.nodes} == NODES
    assert all(n.os == "linux" for n in snap.nodes)


def test_every_namespace_in_use_is_a_real_namespace_object_with_its_name_label(
    snap: Snapshot,
) -> None:
    declared = {
        i["metadata"]["name"]: i["metadata"]["labels"]
        for i in raw_items()
        if i["kind"] == "Namespace"
    }
    used = {p.namespace for p in snap.pods} | {n.namespace for n in snap.network_policies}
    assert used <= set(declared)
    for name, labels in declared.items():
        assert labels["kubernetes.io/metadata.name"] == name
        if name != "kube-system":
            assert {"team", "env"} <= set(labels), name


@pytest.mark.parametrize(
    "key", [k for keys in SCENARIO_POLICIES.values() for k in keys], ids=lambda k: str(k)
)
def test_each_scenario_policy_exists_with_explicit_policy_types(snap: Snapshot, key: str) -> None:
    policy(snap, key)
    ns, _, name = key.partition("/")
    stored = next(
        i
        for i in raw_items()
        if i["kind"] == "NetworkPolicy"
        and i["metadata"]["name"] == name
        and i["metadata"]["namespace"] == ns
    )
    assert stored["spec"]["policyTypes"], "the API server always stores policyTypes"


def test_the_endport_policies_carry_the_guide_ranges(snap: Snapshot) -> None:
    ingress = policy(snap, "port-range/allow-port-range").ingress[0].ports[0]
    assert (ingress.port, ingress.end_port) == (9000, 9005)
    egress = policy(snap, "port-range/allow-egress-port-range").egress[0]
    assert (egress.ports[0].port, egress.ports[0].end_port) == (32000, 32768)
    assert str(egress.peers[0].ip_block) == "198.51.100.0/24"
    server = find_pod(snap, "port-range/app=range-server")
    assert server is not None
    assert {cp.port for cp in server.ports} == {9000, 9003, 9005, 9006}


def test_the_ipblock_policies_cover_everything_the_node_subnet_and_the_pod_cidr(
    snap: Snapshot,
) -> None:
    def cidr(key: str, direction: str) -> str:
        np_ = policy(snap, key)
        rule = (np_.egress if direction == "egress" else np_.ingress)[0]
        return str(rule.peers[0].ip_block)

    assert cidr("ipblock-test/example-ipblock", "egress") == "0.0.0.0/0"
    assert cidr("ipblock-test/allow-from-node-subnet", "ingress") == "10.224.0.0/16"
    assert cidr("ipblock-test/allow-from-pod-cidr", "ingress") == "10.244.0.0/16"


def test_http_test_names_two_numbers_in_two_namespaces_so_cilium_voids_the_egress_rule(
    snap: Snapshot,
) -> None:
    named = {
        (p.namespace, cp.port)
        for p in snap.pods
        for cp in p.ports
        if cp.name == "http-test" and cp.protocol is Protocol.TCP
    }
    assert named == {("named-ports", 8080), ("shop", 8000)}
    rule = policy(snap, "named-ports/allow-egress").egress[0]
    assert not rule.peers
    assert [p.port for p in rule.ports] == ["http-test"]


def test_the_egress_lockdown_allows_only_dns_and_the_internal_subnet(snap: Snapshot) -> None:
    deny = policy(snap, "egress-lockdown/default-deny-egress")
    assert deny.isolates_egress and not deny.egress
    dns = policy(snap, "egress-lockdown/allow-dns").egress[0]
    assert {(p.port, p.protocol) for p in dns.ports} == {(53, Protocol.UDP), (53, Protocol.TCP)}
    subnet = policy(snap, "egress-lockdown/allow-egress").egress[0]
    assert str(subnet.peers[0].ip_block) == "10.20.30.0/24"


@pytest.mark.parametrize(
    ("ref", "etp", "node"),
    [
        ("web/web-frontend", "Cluster", "aks-nodepool1-0"),
        ("web/web-admin", "Cluster", "aks-nodepool1-1"),
        ("web/web-partner", "Local", "aks-nodepool1-2"),
        ("web/web-status", "Cluster", "aks-nodepool1-2"),
    ],
)
def test_each_web_service_has_its_only_backend_on_the_node_the_probes_assume(
    snap: Snapshot, ref: str, etp: str, node: str
) -> None:
    svc = service(snap, ref)
    assert svc.external_traffic_policy == etp
    assert [b.node_name for b in snap.backends(svc)] == [node]
    assert all(sp.node_port for sp in svc.ports)


def test_the_web_namespace_denies_all_ingress_by_default(snap: Snapshot) -> None:
    np_ = policy(snap, "web/default-deny-ingress")
    assert np_.pod_selector.is_empty and np_.isolates_ingress and not np_.ingress
    status = policy(snap, "web/allow-status-port").ingress[0]
    assert not status.peers
    assert [(p.port, p.protocol) for p in status.ports] == [(8080, Protocol.TCP)]


def test_every_pod_ip_lies_in_its_node_pod_cidr_and_no_ip_repeats(snap: Snapshot) -> None:
    seen: dict[str, str] = {ip: name for name, (ip, _) in NODES.items()}
    for pod in snap.pods:
        if pod.host_network:
            continue
        assert pod.ip is not None and pod.node_name in NODES, pod.key
        cidr = ipaddress.ip_network(NODES[pod.node_name][1])
        assert ipaddress.ip_address(pod.ip) in cidr, pod.key
        assert pod.ip not in seen, f"{pod.key} repeats {seen.get(pod.ip)}"
        seen[pod.ip] = pod.key


def test_each_node_has_one_host_network_pod_on_its_ip_listening_on_18080(snap: Snapshot) -> None:
    hostnet = [p for p in snap.pods if p.host_network]
    assert sorted(p.node_name or "" for p in hostnet) == sorted(NODES)
    for pod in hostnet:
        assert pod.node_name is not None
        assert pod.ip == NODES[pod.node_name][0]
        assert serves(pod, 18080, Protocol.TCP)


def test_services_use_the_fixed_ranges_and_every_service_has_backends(snap: Snapshot) -> None:
    for svc in snap.services:
        assert svc.cluster_ip is not None
        assert ipaddress.ip_address(svc.cluster_ip) in ipaddress.ip_network("10.0.0.0/16")
        for ip in svc.load_balancer_ips:
            assert ipaddress.ip_address(ip) in ipaddress.ip_network("192.0.2.0/24"), svc.key
        backends = snap.backends(svc)
        assert backends, svc.key
        for sp in svc.ports:
            assert all(serves(b, sp.target_port, sp.protocol) for b in backends), (svc.key, sp)
    dns = service(snap, "kube-system/kube-dns")
    assert dns.cluster_ip == "10.0.0.10"


def test_the_probe_file_has_a_why_comment_for_every_probe() -> None:
    text = PROBES.read_text(encoding="utf-8")
    whys = [line for line in text.splitlines() if line.strip().startswith("# why")]
    assert len(whys) == len(probes())
    assert all(any(f"D{n}" in w or "section" in w for n in range(1, 17)) for w in whys)


@pytest.mark.parametrize("probe", probes(), ids=probe_id)
def test_every_probe_names_endpoints_that_exist_and_ports_they_serve(
    snap: Snapshot, probe: dict[str, Any]
) -> None:
    assert set(probe) <= {"from", "to", "port", "protocol", "expect"}
    protocol = Protocol(probe.get("protocol", "TCP"))
    port = probe["port"]
    assert isinstance(port, int | str)
    check_source(snap, probe["from"])
    check_destination(snap, probe["to"], port, protocol)
    expect = probe["expect"]
    if isinstance(expect, str):
        assert expect in ("allow", "deny")
    else:
        assert set(expect) <= DATAPLANES and {"npm", "cilium", "cilium-1.16"} <= set(expect)
        assert set(expect.values()) <= {"allow", "deny"}


def check_source(snap: Snapshot, ref: str) -> None:
    if ref == "external":
        return
    if ref.startswith("ip:"):
        assert not any(ipaddress.ip_address(ref[3:]) in r for r in CLUSTER_RANGES), ref
        return
    if ref.startswith("node:"):
        assert snap.node(ref[5:]) is not None, ref
        return
    pod = find_pod(snap, ref)
    assert pod is not None, f"no pod {ref}"
    assert not pod.host_network, f"{ref}: use node:NAME for host-network sources"


def check_destination(snap: Snapshot, ref: str, port: int | str, protocol: Protocol) -> None:
    kind, sep, rest = ref.partition(":")
    if not sep:
        pod = find_pod(snap, ref)
        assert pod is not None, f"no pod {ref}"
        assert serves(pod, port, protocol), f"{pod.key} does not serve {port}/{protocol}"
        return
    if kind == "ip":
        assert rest != EXTERNAL_IP
        assert not any(ipaddress.ip_address(rest) in r for r in CLUSTER_RANGES), ref
        return
    if kind == "node":
        assert snap.node(rest) is not None, ref
        listeners = [p for p in snap.pods if p.host_network and p.node_name == rest]
        assert any(serves(p, port, protocol) for p in listeners), f"nothing on {ref}:{port}"
        return
    assert kind in ("svc", "nodeport", "lb"), ref
    target, _, node = rest.partition("@")
    svc = service(snap, target)
    assert isinstance(port, int), "a Service is probed on its port number"
    sp = next((p for p in svc.ports if p.port == port and p.protocol is protocol), None)
    assert sp is not None, f"{ref} has no port {port}/{protocol}"
    backends = snap.backends(svc)
    assert backends and all(serves(b, sp.target_port, protocol) for b in backends)
    if kind == "svc":
        assert not node
        return
    assert snap.node(node) is not None, f"{ref}: unknown receiving node"
    assert sp.node_port is not None
    if kind == "lb":
        assert svc.type == "LoadBalancer" and svc.load_balancer_ips
    if svc.external_traffic_policy == "Local":
        assert any(b.node_name == node for b in backends), f"{ref}: eTP=Local needs a local backend"
