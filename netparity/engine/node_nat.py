"""A pod reaching a Service through a NodePort or a LoadBalancer IP (SEMANTICS D5d): where
the node translates it, and which legs each dataplane then judges. Part of path
resolution (paths.py); no policy is read here.
"""

from __future__ import annotations

from netparity.engine.dataplane import Dataplane
from netparity.engine.matcher.leg import EGRESS, INGRESS, Leg
from netparity.engine.path import Path
from netparity.engine.peers import HostPeer, Peer, PodPeer
from netparity.engine.traffic import Decision, PathKind, Via
from netparity.model.objects import Node, Pod, Service, ServicePort


def in_cluster_external_ip(
    client: Peer,
    backend: Pod,
    receiving: Node,
    port: int,
    sp: ServicePort,
    svc: Service,
    dp: Dataplane,
    kind: PathKind,
    notes: list[str],
    *,
    via: Via,
) -> Path:
    """A pod reaching a Service through a NodePort or a LoadBalancer IP (D5d)."""
    assert isinstance(client, PodPeer)
    protocol = sp.protocol
    legs: list[Leg] = []
    remote = client.pod.node_name != receiving.name
    if remote and via is Via.NODE_PORT and sp.node_port is not None:
        # the packet first leaves the client's node towards another node's address
        legs.append(
            Leg(
                direction=EGRESS,
                subject=client.pod,
                peer=HostPeer(node=receiving),
                port=sp.node_port,
                protocol=protocol,
            )
        )
        notes.append(f"egress to {receiving.name}:{sp.node_port} is judged before translation")
    pod_to_pod = (
        Leg(
            direction=EGRESS,
            subject=client.pod,
            peer=PodPeer(pod=backend),
            port=port,
            protocol=protocol,
        ),
        Leg(direction=INGRESS, subject=backend, peer=client, port=port, protocol=protocol),
    )
    if dp.service_nat_in_node:
        return _kube_proxy_external_ip(
            client, backend, receiving, port, svc, dp, kind, notes, legs, pod_to_pod
        )
    if not legs and dp.hairpin_skips_policy and backend.key == client.pod.key:
        return hairpin(kind, backend, port, notes)
    if not legs:
        notes.append("translated at the client like pod-to-pod, both sides evaluated (D5d)")
        return Path(kind=kind, legs=pod_to_pod, notes=tuple(notes), backend=backend, port=port)
    # another node's NodePort: that node translates it like outside traffic
    if backend.node_name == receiving.name or not dp.snat_to_receiving_node:
        peer: Peer = client
    else:
        peer = HostPeer(node=receiving, via="SNAT by the receiving node")
        notes.append(f"SNAT to {receiving.name} (D5b)")
    legs.append(Leg(direction=INGRESS, subject=backend, peer=peer, port=port, protocol=protocol))
    return Path(kind=kind, legs=tuple(legs), notes=tuple(notes), backend=backend, port=port)


def hairpin(kind: PathKind, backend: Pod, port: int, notes: list[str]) -> Path:
    """D25: a pod reaching itself through a Service its node translates at the pod (ClusterIP,
    LB IP, its own node's NodePort): Cilium marks the flow loopback and skips both policy
    checks (see Dataplane.hairpin_skips_policy)."""
    notes.append("hairpin: the pod reaches itself through the Service (D25)")
    return Path(
        kind=kind,
        decided=Decision.ALLOW,
        notes=tuple(notes),
        backend=backend,
        port=port,
        reason="Cilium skips egress and ingress policy on a hairpin through a Service (D25)",
    )


def _kube_proxy_external_ip(
    client: PodPeer,
    backend: Pod,
    receiving: Node,
    port: int,
    svc: Service,
    dp: Dataplane,
    kind: PathKind,
    notes: list[str],
    legs: list[Leg],
    pod_to_pod: tuple[Leg, Leg],
) -> Path:
    """A pod's packet to a NodePort or LoadBalancer IP that kube-proxy translates on
    `receiving` (D5d). Two effects, modelled apart:
    - where NPM judges it: kube-proxy marks eTP=Cluster traffic for masquerade; with the
      default placement KUBE-FORWARD accepts the mark before NPM (masquerade_bypass), with
      PlaceAzureChainFirst NPM judges the translated packet first, with the client's
      address (egress and, ipsets being cluster-wide, the backend's ingress);
    - what address the backend sees: the mark masquerades it to `receiving`'s IP, so a
      backend on another node is judged there against that node (D5b), either way."""
    protocol = pod_to_pod[0].protocol
    if svc.external_traffic_policy == "Local":
        notes.append(
            "externalTrafficPolicy Local: kube-proxy sends pods' traffic like "
            "ClusterIP traffic, unmarked"
        )
        remote = client.pod.node_name != receiving.name
        if remote and backend.node_name != receiving.name:
            return Path(
                kind=kind,
                decided=Decision.DENY,
                notes=tuple(notes),
                backend=backend,
                port=port,
                reason=(
                    f"without SNAT the backend on {backend.node_name} answers the client "
                    f"directly, not through {receiving.name}: the reply does not match "
                    "the connection (a routing failure, not a policy)"
                ),
            )
        return Path(
            kind=kind, legs=(*legs, *pod_to_pod), notes=tuple(notes), backend=backend, port=port
        )
    same = backend.node_name == receiving.name
    if dp.masquerade_bypass:
        notes.append("kube-proxy's masquerade mark skips NPM on the receiving node (D5d)")
        if same:
            return Path(
                kind=kind,
                legs=tuple(legs),
                notes=tuple(notes),
                backend=backend,
                port=port,
                reason="masquerade-marked traffic is accepted before NPM (D5d)",
            )
    else:
        notes.append(
            f"PlaceAzureChainFirst: NPM judges the translated packet on {receiving.name} "
            "before KUBE-FORWARD accepts the masquerade mark (D5d)"
        )
        legs.extend(pod_to_pod)
    if not same:
        legs.append(
            Leg(
                direction=INGRESS,
                subject=backend,
                peer=HostPeer(node=receiving, via="SNAT by the receiving node"),
                port=port,
                protocol=protocol,
            )
        )
        notes.append(f"SNAT to {receiving.name}; the backend's node judges its ingress (D5d)")
    return Path(kind=kind, legs=tuple(legs), notes=tuple(notes), backend=backend, port=port)
