"""What a Service itself decides before any policy (SEMANTICS D22): loadBalancerSourceRanges,
internalTrafficPolicy Local, a Service without endpoints, and endpoints that are
hostNetwork pods. Part of path resolution (paths.py); no policy is read here.
"""

from __future__ import annotations

import ipaddress

from netparity.engine.matcher.leg import EGRESS, Leg
from netparity.engine.path import Path
from netparity.engine.peers import HostPeer, Peer, PodPeer
from netparity.engine.traffic import Decision, PathKind
from netparity.model.objects import Node, Pod, Protocol, Service, ServicePort
from netparity.model.snapshot import Snapshot


def target_port(backend: Pod, sp: ServicePort) -> int | None:
    """The backend's port a Service port translates to; None: no port of that name."""
    if isinstance(sp.target_port, str):
        cp = backend.named_port(sp.target_port, sp.protocol)
        return None if cp is None else cp.port
    return sp.target_port


def no_named_port(backend: Pod, sp: ServicePort, kind: PathKind) -> Path:
    """The backend has no container port the Service port's targetPort names."""
    return Path(
        kind=kind,
        decided=Decision.UNKNOWN,
        reason=f"backend {backend.key} has no port named {sp.target_port!r}",
    )


def source_range_drop(client: Peer, svc: Service, kind: PathKind) -> Path | None:
    """D22: kube-proxy DNATs an LB IP only for sources inside loadBalancerSourceRanges
    (nat KUBE-FW-*); the rest is dropped by filter KUBE-PROXY-FIREWALL, first in INPUT,
    FORWARD and OUTPUT (kubernetes pkg/proxy/iptables/proxier.go, usesFWChain). None: the
    Service has no ranges, or the client is inside them."""
    if not svc.load_balancer_source_ranges:
        return None
    address = ipaddress.ip_address(client.ip) if client.ip else None
    if address is not None and any(
        address in ipaddress.ip_network(r.strip(), strict=False)
        for r in svc.load_balancer_source_ranges
    ):
        return None
    return Path(
        kind=kind,
        decided=Decision.DENY,
        reason=f"{client} is outside loadBalancerSourceRanges of Service {svc.key} "
        f"({', '.join(svc.load_balancer_source_ranges)}): dropped (D22)",
    )


def internal_local_drop(svc: Service, kind: PathKind, backend: Pod | None, node: Node) -> Path:
    """D22: internalTrafficPolicy Local keeps in-cluster traffic to the ClusterIP on the
    client's node (kube-proxy: KUBE-SVL-*, else "has no local endpoints" DROP)."""
    return Path(
        kind=kind,
        decided=Decision.DENY,
        reason=f"Service {svc.key} has internalTrafficPolicy Local and no endpoint "
        + (f"{backend.key} " if backend is not None else "")
        + f"on the client's node {node.name}: dropped (D22)",
    )


def no_endpoints(svc: Service, kind: PathKind) -> Path:
    """D22: no endpoints at all. kube-proxy writes no NAT for the port, only a REJECT in
    filter (KUBE-SERVICES for the ClusterIP, KUBE-EXTERNAL-SERVICES for LB IPs and
    nodePorts: kubernetes pkg/proxy/iptables/proxier.go, syncProxyRules, "has no
    endpoints"); Cilium rejects too by default (cilium/cilium pkg/defaults/defaults.go,
    ServiceNoBackendResponse = "reject"). The client sees `refused`, which for such a
    Service is the dataplane's deny (docs/semantics-notes.md)."""
    return Path(
        kind=kind,
        decided=Decision.DENY,
        refused_is_deny=True,
        reason=f"Service {svc.key} has no endpoints: the dataplane rejects it, the "
        "client sees refused (D22)",
    )


def host_backends(snapshot: Snapshot, svc: Service) -> tuple[Pod, ...]:
    """The hostNetwork pods a Service selects, by key: endpoints at their node's address
    (kube-proxy DNATs to nodeIP:port), which `Snapshot.backends` leaves out."""
    if not svc.selector:
        return ()
    return tuple(
        sorted(
            (p for p in snapshot.pods if p.host_network and svc.selects(p)),
            key=lambda p: p.key,
        )
    )


def host_backed(
    client: Peer,
    svc: Service,
    sp: ServicePort,
    host: Pod,
    node: Node | None,
    protocol: Protocol,
    kind: PathKind,
) -> Path:
    """D22: a Service whose endpoints are hostNetwork pods is DNATed to nodeIP:port
    (kube-proxy's KUBE-SEP, the endpoint being the pod's = the node's address), so the
    client's traffic meets policy as traffic to that node: from a pod on the same node it
    goes to INPUT and NPM, hooked on FORWARD, never sees it (D4a); to another node it is
    the pod's egress to a node address. No ingress policy selects a hostNetwork pod.
    `node`: the host pod's node (None: unknown)."""
    port = target_port(host, sp)
    if port is None:
        return no_named_port(host, sp, kind)
    if node is None:
        return Path(
            kind=kind,
            decided=Decision.UNKNOWN,
            reason=f"the hostNetwork backend {host.key} is on no known node",
        )
    notes = (
        f"Service {svc.key} -> hostNetwork backend {host.key}, DNATed to its node "
        f"{node.name} ({node.ip}:{port}) (D22)",
    )
    if not isinstance(client, PodPeer):
        return Path(
            kind=kind,
            notes=notes,
            port=port,
            backend=host,
            reason="neither end is a pod: no pod policy applies",
        )
    leg = Leg(
        direction=EGRESS,
        subject=client.pod,
        peer=HostPeer(node=node, via=f"hostNetwork pod {host.key}"),
        port=port,
        protocol=protocol,
    )
    return Path(kind=kind, legs=(leg,), notes=notes, port=port, backend=host)
