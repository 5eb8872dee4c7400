"""SEMANTICS D22: what the Service proxy itself decides, before any policy: a Service port
without endpoints, `internalTrafficPolicy: Local` without an endpoint on the client's node,
and `loadBalancerSourceRanges`. kube-proxy and Cilium's kube-proxy replacement differ in
how (the knobs in engine/dataplane.py cite their sources); paths.py asks these functions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from netparity.engine.dataplane import Dataplane
from netparity.engine.path import Path
from netparity.engine.peers import ExternalPeer, Peer, PodPeer
from netparity.engine.traffic import Decision, PathKind, Via
from netparity.model.objects import Node, Pod, Service, ServiceType

# The words of the range drop's reason that the lint and the planner recognise it by
# (lint kind and scenario `lb-source-ranges`).
SOURCE_RANGES_MARK = "outside loadBalancerSourceRanges"
# The words of internalTrafficPolicy Local's rejection (lint kind and scenario `itp-local`).
ITP_LOCAL_MARK = "internalTrafficPolicy Local and no endpoint"


def outside_source_ranges(svc: Service, ip: str | None) -> bool:
    """`ip` is a client the Service's loadBalancerSourceRanges leave out (False where the
    Service has no ranges: every client is admitted)."""
    ranges = svc.load_balancer_source_ranges
    return bool(ranges) and ip is not None and not _in_ranges(ip, ranges or ())


def _in_ranges(ip: str | None, ranges: tuple[str, ...]) -> bool:
    if not ip:
        return False
    address = ipaddress.ip_address(ip)
    for r in ranges:
        try:
            if address in ipaddress.ip_network(r.strip(), strict=False):
                return True
        except ValueError:
            continue  # a range the API server would refuse matches nothing
    return False


def source_range_drop(svc: Service, client: Peer, dp: Dataplane, kind: PathKind) -> Path | None:
    """The drop of a LoadBalancer connection from outside `loadBalancerSourceRanges`, or None.

    kube-proxy DNATs an LB IP only for sources inside the ranges (nat KUBE-FW-*) and drops the
    rest in filter KUBE-PROXY-FIREWALL, first in INPUT, FORWARD and OUTPUT (kubernetes pkg/
    proxy/iptables/proxier.go, usesFWChain): every client. Cilium checks only what arrives
    from outside the cluster (`lb_source_ranges_in_cluster`), and not at all with
    `enable-svc-source-range-check: false` (`lb_source_range_check`)."""
    ranges = svc.load_balancer_source_ranges
    if not ranges or not dp.lb_source_range_check:
        return None
    if not dp.lb_source_ranges_in_cluster and not isinstance(client, ExternalPeer):
        return None
    if _in_ranges(client.ip, ranges):
        return None
    return Path(
        kind=kind,
        decided=Decision.DENY,
        reason=f"{client} is {SOURCE_RANGES_MARK} of Service {svc.key} "
        f"({', '.join(ranges)}): dropped (D22)",
    )


def itp_local_nodes(svc: Service, backends: Sequence[Pod], clients: Sequence[Pod]) -> list[str]:
    """The nodes with client pods (not hostNetwork) and no backend of `svc`, by name, where
    `svc` is a NodePort/LoadBalancer Service with internalTrafficPolicy Local (else [])."""
    if svc.internal_traffic_policy != "Local" or svc.type not in (
        ServiceType.NODE_PORT,
        ServiceType.LOAD_BALANCER,
    ):
        return []
    if not backends:
        return []  # no endpoints at all: refused on both dataplanes
    covered = {b.node_name for b in backends}
    return sorted(
        {
            p.node_name
            for p in clients
            if p.node_name and not p.host_network and p.node_name not in covered
        }
    )


def itp_node(
    svc: Service,
    via: Via,
    client: Peer | None,
    client_node: Node | None,
    dp: Dataplane | None,
    receiving: Node | None,
) -> Node | None:
    """The node internalTrafficPolicy Local confines a connection to (`client_node`, the
    client's), or None where it does not apply: the ClusterIP, from a pod or a node; under
    `itp_external_frontends` (Cilium's internal scope) also a pod's LB IP and its own node's
    NodePort (`receiving`); another node's NodePort is handled there as outside traffic."""
    if svc.internal_traffic_policy != "Local":
        return None
    if via is Via.CLUSTER_IP:
        return client_node
    if dp is None or not dp.itp_external_frontends or not isinstance(client, PodPeer):
        return None
    if via is Via.NODE_PORT and (client_node is None or receiving != client_node):
        return None
    return client_node


def no_local_endpoint(
    svc: Service, backend: Pod | None, node: Node, dp: Dataplane, kind: PathKind
) -> Path:
    """internalTrafficPolicy Local and no endpoint on the client's node `node`: kube-proxy
    drops it ("has no local endpoints"); Cilium answers as for a Service without endpoints."""
    verb = "rejected, the client sees refused" if dp.itp_no_local_reject else "dropped"
    return Path(
        kind=kind,
        decided=Decision.DENY,
        refused_is_deny=dp.itp_no_local_reject,
        reason=f"Service {svc.key} has {ITP_LOCAL_MARK} "
        + (f"{backend.key} " if backend is not None else "")
        + f"on the client's node {node.name}: {verb} (D22)",
    )


def no_endpoints(svc: Service, dp: Dataplane, kind: PathKind) -> Path:
    """No endpoints at all. kube-proxy writes no NAT for the port, only a REJECT in filter
    (KUBE-SERVICES for the ClusterIP, KUBE-EXTERNAL-SERVICES for LB IPs and nodePorts:
    proxier.go, syncProxyRules, "has no endpoints"); Cilium rejects too by default
    (`service-no-backend-response`, default `reject`, pkg/option/config.go
    ServiceNoBackendResponseReject) with ICMP port unreachable, or drops with `drop`.
    The client sees `refused`, which for such a Service is the dataplane's deny
    (docs/semantics-notes.md)."""
    if dp.service_no_backend_reject:
        how = "the dataplane rejects it, the client sees refused"
    else:
        how = "the dataplane drops it (service-no-backend-response: drop)"
    return Path(
        kind=kind,
        decided=Decision.DENY,
        refused_is_deny=dp.service_no_backend_reject,
        reason=f"Service {svc.key} has no endpoints: {how} (D22)",
    )
