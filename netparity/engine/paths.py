"""Path resolution: where a connection goes and which legs a dataplane judges.

Services (ClusterIP, NodePort, LoadBalancer), the outside, hostNetwork, and the
address translations between (kube-proxy's masquerade, SNAT to the receiving node:
SEMANTICS D5, D5b, D5c, D5d, D10) become a `Path`: the legs policy judges (evaluate.py),
or a decision the path alone makes, with its notes. No policy is read here.
"""

from __future__ import annotations

from netparity.engine.dataplane import Dataplane
from netparity.engine.matcher.leg import EGRESS, INGRESS, Leg
from netparity.engine.node_nat import hairpin, in_cluster_external_ip
from netparity.engine.path import Path
from netparity.engine.peers import ExternalPeer, HostPeer, Peer, PodPeer
from netparity.engine.service_gates import (
    host_backed,
    host_backends,
    internal_local_drop,
    no_endpoints,
    no_named_port,
    source_range_drop,
    target_port,
)
from netparity.engine.traffic import (
    Decision,
    Endpoint,
    ExternalEndpoint,
    NodeEndpoint,
    PathKind,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Via,
)
from netparity.model.objects import Node, Pod, Protocol, Service, ServicePort
from netparity.model.snapshot import Snapshot

# A Service path's kind: (the client is outside the pods, how the Service is reached).
_SERVICE_KIND = {
    (False, Via.CLUSTER_IP): PathKind.POD_SERVICE,
    (False, Via.NODE_PORT): PathKind.POD_NODEPORT,
    (False, Via.LOAD_BALANCER): PathKind.POD_LB,
    (True, Via.CLUSTER_IP): PathKind.NODE_SERVICE,
    (True, Via.NODE_PORT): PathKind.EXTERNAL_NODEPORT,
    (True, Via.LOAD_BALANCER): PathKind.EXTERNAL_LB,
}


class PathResolver:
    """Resolves a connection on a snapshot into a `Path` under a dataplane's knobs."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._nodes = {n.name: n for n in snapshot.nodes}
        self._pods_by_ip = {p.ip: p for p in snapshot.pods if p.ip and not p.host_network}
        self._nodes_by_ip = {n.ip: n for n in snapshot.nodes}
        self._backends: dict[str, tuple[Pod, ...]] = {}

    def backends(self, svc: Service) -> tuple[Pod, ...]:
        """The Service's ready backends by pod key (cached)."""
        backends = self._backends.get(svc.key)
        if backends is None:
            backends = self._backends[svc.key] = self.snapshot.backends(svc)
        return backends

    def peer_of(self, endpoint: Endpoint) -> Peer | None:
        """What a source endpoint is to policy; None for a Service (never a source)."""
        if isinstance(endpoint, ServiceEndpoint):
            return None
        return self._as_peer(endpoint)

    def _as_peer(self, endpoint: PodEndpoint | NodeEndpoint | ExternalEndpoint) -> Peer:
        if isinstance(endpoint, PodEndpoint):
            pod = endpoint.pod
            if pod.host_network:
                node = self._nodes.get(pod.node_name or "")
                if node is not None:
                    return HostPeer(node=node, via=f"hostNetwork pod {pod.key}")
            return PodPeer(pod=pod)
        if isinstance(endpoint, NodeEndpoint):
            return HostPeer(node=endpoint.node)
        return self._classify_ip(endpoint.ip)

    def _classify_ip(self, ip: str) -> Peer:
        """An address named by IP is whatever owns it: a pod, a node, or the outside."""
        pod = self._pods_by_ip.get(ip)
        if pod is not None:
            return PodPeer(pod=pod)
        node = self._nodes_by_ip.get(ip)
        if node is not None:
            return HostPeer(node=node)
        return ExternalPeer(ip=ip)

    def resolve(self, traffic: Traffic, dp: Dataplane) -> Path:
        dst = traffic.destination
        src = traffic.source
        if isinstance(src, ServiceEndpoint):
            return Path(
                kind=PathKind.OTHER, decided=Decision.UNKNOWN, reason="a Service cannot be a source"
            )
        client = self._as_peer(src)
        if isinstance(dst, ServiceEndpoint):
            return self._resolve_service(traffic, client, dst, dp)
        target = self._as_peer(dst)
        if isinstance(target, PodPeer):
            pod = target.pod
            if isinstance(traffic.port, str):
                cp = pod.named_port(traffic.port, traffic.protocol)
                if cp is None:
                    return Path(
                        kind=PathKind.OTHER,
                        decided=Decision.UNKNOWN,
                        reason=f"pod {pod.key} has no {traffic.protocol} port named {traffic.port!r}",
                    )
                port = cp.port
            else:
                port = traffic.port
            return self._to_pod(client, pod, port, traffic.protocol, dp, kind=None)
        if isinstance(traffic.port, str):
            return Path(
                kind=PathKind.OTHER,
                decided=Decision.UNKNOWN,
                reason=f"a port name ({traffic.port!r}) means nothing for {dst}",
            )
        port = traffic.port
        if isinstance(client, PodPeer):
            kind = PathKind.POD_NODE if isinstance(target, HostPeer) else PathKind.POD_EXTERNAL
            return Path(
                kind=kind,
                legs=(
                    Leg(
                        direction=EGRESS,
                        subject=client.pod,
                        peer=target,
                        port=port,
                        protocol=traffic.protocol,
                    ),
                ),
                port=port,
            )
        kind = PathKind.NODE_NODE if isinstance(client, HostPeer) else PathKind.EXTERNAL_NODE
        if isinstance(target, ExternalPeer):
            kind = PathKind.OTHER
        return Path(kind=kind, port=port, reason="neither end is a pod: no pod policy applies")

    def _to_pod(
        self,
        client: Peer,
        pod: Pod,
        port: int,
        protocol: Protocol,
        dp: Dataplane,
        *,
        kind: PathKind | None,
    ) -> Path:
        if isinstance(client, PodPeer):
            if client.pod.key == pod.key:
                return Path(
                    kind=kind or PathKind.POD_POD,
                    decided=Decision.ALLOW,
                    reason="a pod cannot block traffic to itself",
                    port=port,
                    backend=pod,
                )
            legs = (
                Leg(
                    direction=EGRESS,
                    subject=client.pod,
                    peer=PodPeer(pod=pod),
                    port=port,
                    protocol=protocol,
                ),
                Leg(direction=INGRESS, subject=pod, peer=client, port=port, protocol=protocol),
            )
            return Path(kind=kind or PathKind.POD_POD, legs=legs, port=port, backend=pod)
        if pod.host_network:
            return Path(
                kind=PathKind.OTHER, port=port, reason="hostNetwork pods are never policy subjects"
            )
        default_kind = PathKind.NODE_POD if isinstance(client, HostPeer) else PathKind.EXTERNAL_POD
        return Path(
            kind=kind or default_kind,
            legs=(Leg(direction=INGRESS, subject=pod, peer=client, port=port, protocol=protocol),),
            port=port,
            backend=pod,
        )

    def _resolve_service(
        self, traffic: Traffic, client: Peer, dst: ServiceEndpoint, dp: Dataplane
    ) -> Path:
        svc = dst.service
        sp = svc.port_named(traffic.port, traffic.protocol)
        if sp is None:
            return Path(
                kind=PathKind.OTHER,
                decided=Decision.UNKNOWN,
                reason=f"Service {svc.key} has no {traffic.protocol} port {traffic.port!r}",
            )
        if dst.via is not Via.CLUSTER_IP and sp.node_port is None and dst.via is Via.NODE_PORT:
            return Path(
                kind=PathKind.OTHER,
                decided=Decision.UNKNOWN,
                reason=f"Service {svc.key} has no nodePort",
            )
        external = not isinstance(client, PodPeer)
        receiving, local_only = self._receiving(client, dst, dp)
        backend = dst.backend or self._backend(svc, receiving if local_only else None)
        if receiving is None and dst.via is not Via.CLUSTER_IP and backend is not None:
            receiving = self._nodes.get(backend.node_name or "")
        kind = _SERVICE_KIND[(external, dst.via)]
        if dst.via is Via.LOAD_BALANCER and self.backends(svc):
            dropped = source_range_drop(client, svc, kind)
            if dropped is not None:
                return dropped
        itp_node = self.internal_local_node(svc, dst.via, client)
        if itp_node is not None and self.backends(svc):
            if dst.backend is None:
                backend = self._backend(svc, itp_node)
            if backend is None or backend.node_name != itp_node.name:
                return internal_local_drop(svc, kind, backend, itp_node)
        hosts = self.host_backends(svc) if backend is None and not self.backends(svc) else ()
        if hosts and dst.via is Via.CLUSTER_IP:
            host = hosts[0]
            node = self._nodes.get(host.node_name or "")
            return host_backed(client, svc, sp, host, node, traffic.protocol, kind)
        if backend is None and not self.backends(svc) and not hosts:
            return no_endpoints(svc, kind)
        if backend is None:
            where = f" on {receiving.name}" if local_only and receiving else ""
            return Path(
                kind=kind,
                decided=Decision.DENY if local_only else Decision.UNKNOWN,
                reason=f"Service {svc.key} has no backend{where}"
                + (" (externalTrafficPolicy Local drops it)" if local_only else ""),
            )
        port = target_port(backend, sp)
        if port is None:
            return no_named_port(backend, sp, kind)
        return self._to_backend(client, dst, sp, backend, port, receiving, dp, kind)

    def _receiving(
        self, client: Peer, dst: ServiceEndpoint, dp: Dataplane
    ) -> tuple[Node | None, bool]:
        """The node that receives (translates) a Service connection, and whether only its
        backends may serve it (externalTrafficPolicy Local)."""
        svc = dst.service
        receiving = dst.node
        if dst.via is Via.LOAD_BALANCER and isinstance(client, PodPeer):
            # a pod's packets to a LoadBalancer IP leave through, and are taken by, its own node
            receiving = self._nodes.get(client.pod.node_name or "")
        elif dst.via is Via.LOAD_BALANCER and isinstance(client, HostPeer):
            receiving = client.node  # a node translates its own traffic to an LB IP
        external = not isinstance(client, PodPeer)
        local_only = (
            dst.via is not Via.CLUSTER_IP and svc.external_traffic_policy == "Local" and external
        )
        if (
            not external
            and dst.via is Via.NODE_PORT
            and svc.external_traffic_policy == "Local"
            and not dp.service_nat_in_node
            and receiving is not None
            and isinstance(client, PodPeer)
            and client.pod.node_name != receiving.name
        ):
            # Cilium translates only its own node's NodePorts at the pod; another node's
            # NodePort is handled there like outside traffic: Local keeps local backends.
            local_only = True
        return receiving, local_only

    def _to_backend(
        self,
        client: Peer,
        dst: ServiceEndpoint,
        sp: ServicePort,
        backend: Pod,
        port: int,
        receiving: Node | None,
        dp: Dataplane,
        kind: PathKind,
    ) -> Path:
        """The path once the Service has picked `backend` (translated to `port`)."""
        svc = dst.service
        external = not isinstance(client, PodPeer)
        on = f"backend {backend.key} on {backend.node_name}, targetPort {port}"
        notes = [f"Service {svc.key} -> {on}"]
        if receiving is not None and dst.via is not Via.CLUSTER_IP:
            notes[0] = f"Service {svc.key} received by {receiving.name} -> {on}"
        if dst.via is Via.CLUSTER_IP:
            return self._cluster_ip(client, backend, port, sp.protocol, dp, kind, notes)
        assert receiving is not None
        if svc.external_traffic_policy == "Local" and external:
            notes.append("externalTrafficPolicy Local keeps the client address (D5c)")
            return self._with_notes(
                self._to_pod(client, backend, port, sp.protocol, dp, kind=kind), notes
            )
        if not external:
            return in_cluster_external_ip(
                client, backend, receiving, port, sp, svc, dp, kind, notes, via=dst.via
            )
        return self._outside_cluster(client, backend, receiving, port, sp.protocol, dp, kind, notes)

    def _outside_cluster(
        self,
        client: Peer,
        backend: Pod,
        receiving: Node,
        port: int,
        protocol: Protocol,
        dp: Dataplane,
        kind: PathKind,
        notes: list[str],
    ) -> Path:
        """An outside client through a NodePort or LoadBalancer IP, externalTrafficPolicy
        Cluster (D5 / D5b)."""
        same_node = backend.node_name == receiving.name
        if dp.masquerade_bypass and same_node:
            notes.append(
                "kube-proxy marks it for masquerade and KUBE-FORWARD accepts it before NPM (D5)"
            )
            return Path(
                kind=kind, decided=Decision.ALLOW, notes=tuple(notes), backend=backend, port=port
            )
        if dp.snat_to_receiving_node and not same_node:
            first: tuple[Leg, ...] = ()
            if (
                dp.service_nat_in_node
                and not dp.masquerade_bypass
                and not (isinstance(client, HostPeer) and client.node.name == receiving.name)
            ):
                # PlaceAzureChainFirst: NPM on the receiving node judges the translated packet
                # before KUBE-FORWARD's accept and before the SNAT (D5, D5b)
                notes.append(
                    f"NPM runs before KUBE-FORWARD on {receiving.name}: it judges the client's "
                    "address there, before the SNAT (D5)"
                )
                first = (
                    Leg(
                        direction=INGRESS,
                        subject=backend,
                        peer=client,
                        port=port,
                        protocol=protocol,
                    ),
                )
            notes.append(f"SNAT to the receiving node {receiving.name} (D5b)")
            snat = HostPeer(node=receiving, via="SNAT by the receiving node")
            path = self._to_pod(snat, backend, port, protocol, dp, kind=kind)
            if first and path.decided is None:
                path.legs = (*first, *path.legs)
            return self._with_notes(path, notes)
        if dp.snat_to_receiving_node:
            notes.append("the backend is on the receiving node: the client address is kept (D5)")
        return self._with_notes(self._to_pod(client, backend, port, protocol, dp, kind=kind), notes)

    def _cluster_ip(
        self,
        client: Peer,
        backend: Pod,
        port: int,
        protocol: Protocol,
        dp: Dataplane,
        kind: PathKind,
        notes: list[str],
    ) -> Path:
        if isinstance(client, PodPeer) and client.pod.key == backend.key:
            if dp.service_nat_in_node and not dp.masquerade_bypass:
                # PlaceAzureChainFirst: the hairpin is forwarded by the node, and NPM judges it
                # before KUBE-FORWARD accepts its masquerade mark (D10, D25)
                notes.append(
                    "hairpin: NPM runs before KUBE-FORWARD (PlaceAzureChainFirst) and judges "
                    "the pod's own traffic (D10)"
                )
                legs = (
                    Leg(
                        direction=EGRESS,
                        subject=backend,
                        peer=PodPeer(pod=backend),
                        port=port,
                        protocol=protocol,
                    ),
                    Leg(
                        direction=INGRESS,
                        subject=backend,
                        peer=PodPeer(pod=backend),
                        port=port,
                        protocol=protocol,
                    ),
                )
                return Path(kind=kind, legs=legs, notes=tuple(notes), backend=backend, port=port)
            if dp.masquerade_bypass:
                notes.append(
                    "hairpin: kube-proxy marks it for masquerade, accepted before NPM (D10)"
                )
                return Path(
                    kind=kind,
                    decided=Decision.ALLOW,
                    notes=tuple(notes),
                    backend=backend,
                    port=port,
                )
            if dp.hairpin_skips_policy:
                return hairpin(kind, backend, port, notes)
        notes.append("evaluated after service translation against the backend and targetPort (D10)")
        return self._with_notes(self._to_pod(client, backend, port, protocol, dp, kind=kind), notes)

    @staticmethod
    def _with_notes(path: Path, notes: list[str]) -> Path:
        return Path(
            kind=path.kind,
            legs=path.legs,
            notes=(*notes, *path.notes),
            uncertain=path.uncertain,
            backend=path.backend,
            port=path.port,
            decided=path.decided,
            reason=path.reason,
        )

    def internal_local_node(self, svc: Service, via: Via, client: Peer | None) -> Node | None:
        """The node internalTrafficPolicy Local confines a ClusterIP connection to (the
        client's), or None where it does not apply (D22)."""
        if via is not Via.CLUSTER_IP or svc.internal_traffic_policy != "Local":
            return None
        if isinstance(client, PodPeer):
            return self._nodes.get(client.pod.node_name or "")
        if isinstance(client, HostPeer):
            return client.node
        return None

    def host_backends(self, svc: Service) -> tuple[Pod, ...]:
        """The hostNetwork pods a Service selects, by key (see `service_gates.host_backends`)."""
        return host_backends(self.snapshot, svc)

    def _backend(self, svc: Service, on_node: Node | None) -> Pod | None:
        """The first ready backend by pod key (the lab sends to it too); for Local, on the node."""
        for pod in self.backends(svc):
            if on_node is None or pod.node_name == on_node.name:
                return pod
        return None
