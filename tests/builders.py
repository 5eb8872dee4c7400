"""Small builders of wire dicts for tests: pods, nodes, namespaces, Services, policies."""

from __future__ import annotations

from typing import Any

from netparity.model.snapshot import Snapshot, snapshot_from_dicts


def ns(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def node(name: str, ip: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": cidr},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def pod(
    key: str,
    ip: str,
    node_name: str,
    labels: dict[str, str] | None = None,
    ports: list[tuple[str | None, int, str]] | None = None,
    host_network: bool = False,
) -> dict[str, Any]:
    namespace, name = key.split("/")
    cports = [
        {k: v for k, v in (("name", n), ("containerPort", p), ("protocol", proto)) if v is not None}
        for n, p, proto in (ports or [])
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "nodeName": node_name,
            "hostNetwork": host_network,
            "containers": [{"name": "c", "ports": cports}],
        },
        "status": {"podIP": ip, "phase": "Running"},
    }


def service(
    key: str,
    selector: dict[str, str],
    port: int,
    target: int | str,
    *,
    type_: str = "ClusterIP",
    cluster_ip: str = "10.0.0.10",
    node_port: int | None = None,
    etp: str | None = None,
    lb_ip: str | None = None,
    protocol: str = "TCP",
) -> dict[str, Any]:
    namespace, name = key.split("/")
    sp: dict[str, Any] = {"port": port, "targetPort": target, "protocol": protocol}
    if node_port:
        sp["nodePort"] = node_port
    spec: dict[str, Any] = {
        "type": type_,
        "selector": selector,
        "clusterIP": cluster_ip,
        "ports": [sp],
    }
    if etp:
        spec["externalTrafficPolicy"] = etp
    status = {"loadBalancer": {"ingress": [{"ip": lb_ip}]}} if lb_ip else {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
        "status": status,
    }


def netpol(key: str, spec: dict[str, Any]) -> dict[str, Any]:
    namespace, name = key.split("/")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def cnp(key: str, spec: dict[str, Any]) -> dict[str, Any]:
    namespace, name = key.split("/")
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def base_cluster(*extra: dict[str, Any]) -> Snapshot:
    """`base_docs(*extra)` as a Snapshot."""
    return snapshot_from_dicts(base_docs(*extra))


def base_docs(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Two nodes, namespaces x (team=a) and y (team=b); pods x/a, x/b on n1, y/c on n2, a
    hostNetwork pod on each node, and whatever `extra` adds."""
    docs = [
        ns("x", team="a"),
        ns("y", team="b"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("x/a", "10.244.0.10", "n1", {"app": "a"}, [("http", 80, "TCP"), ("dns", 53, "UDP")]),
        pod(
            "x/b",
            "10.244.0.11",
            "n1",
            {"app": "b", "tier": "web"},
            [("http", 8080, "TCP"), (None, 9000, "TCP")],
        ),
        pod(
            "y/c", "10.244.1.10", "n2", {"app": "c"}, [("http", 80, "TCP"), ("sctp", 9999, "SCTP")]
        ),
        pod(
            "kube-system/hn1",
            "10.224.0.4",
            "n1",
            {"app": "hostnet"},
            [(None, 18080, "TCP")],
            host_network=True,
        ),
        pod(
            "kube-system/hn2",
            "10.224.0.5",
            "n2",
            {"app": "hostnet"},
            [(None, 18080, "TCP")],
            host_network=True,
        ),
        *extra,
    ]
    return docs
