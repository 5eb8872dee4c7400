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
from netparity.engine.service_d22 import (
    itp_node,
    no_endpoints,
    no_local_endpoint,
    source_range_drop,
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
        # Engine shares these three with an engine over other policies, same pods and nodes
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

    def _receiving(
        self, client: Peer, dst: ServiceEndpoint, dp: Dataplane
    ) -> tuple[Node | None, bool]:
        """The node that receives the packet (None: not known yet) and whether only its
        local backends count (externalTrafficPolicy Local)."""
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
            dropped = source_range_drop(svc, client, dp, kind)
            if dropped is not None:
                return dropped
        itp_node = self.internal_local_node(svc, dst.via, client, dp, receiving)
        if itp_node is not None and self.backends(svc):
            # D22: internalTrafficPolicy Local keeps in-cluster traffic to the ClusterIP on
            # the client's node (kube-proxy: KUBE-SVL-*; Cilium: the local-scope backends)
            if dst.backend is None or dst.backend.node_name != itp_node.name:
                backend = self._backend(svc, itp_node) or backend  # the proxy picks a local one
            if backend is None or backend.node_name != itp_node.name:
                return no_local_endpoint(svc, backend, itp_node, dp, kind)
        hosts = self.host_backends(svc) if backend is None and not self.backends(svc) else ()
        if hosts and dst.via is Via.CLUSTER_IP:
            return self._host_backed(client, svc, sp, hosts[0], traffic.protocol, kind)
        if backend is None and not self.backends(svc) and not hosts:
            return no_endpoints(svc, dp, kind)  # D22
        if backend is None:
            where = f" on {receiving.name}" if local_only and receiving else ""
            return Path(
                kind=kind,
                decided=Decision.DENY if local_only else Decision.UNKNOWN,
                reason=f"Service {svc.key} has no backend{where}"
                + (" (externalTrafficPolicy Local drops it)" if local_only else ""),
            )
        port = _target_port(backend, sp)
        if port is None:
            return Path(
                kind=kind,
                decided=Decision.UNKNOWN,
                reason=f"backend {backend.key} has no port named {sp.target_port!r}",
            )
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

    def _host_backed(
        self,
        client: Peer,
        svc: Service,
        sp: ServicePort,
        host: Pod,
        protocol: Protocol,
        kind: PathKind,
    ) -> Path:
        """D22: a Service whose endpoints are hostNetwork pods is DNATed to nodeIP:port
        (kube-proxy's KUBE-SEP, the endpoint being the pod's = the node's address), so the
        client's traffic meets policy as traffic to that node: from a pod on the same node it
        goes to INPUT and NPM, hooked on FORWARD, never sees it (D4a); to another node it is
        the pod's egress to a node address. No ingress policy selects a hostNetwork pod."""
        node = self._nodes.get(host.node_name or "")
        if isinstance(sp.target_port, str):
            cp = host.named_port(sp.target_port, sp.protocol)
            if cp is None:
                return Path(
                    kind=kind,
                    decided=Decision.UNKNOWN,
                    reason=f"backend {host.key} has no port named {sp.target_port!r}",
                )
            port = cp.port
        else:
            port = sp.target_port
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

    def internal_local_node(
        self,
        svc: Service,
        via: Via,
        client: Peer | None,
        dp: Dataplane | None = None,
        receiving: Node | None = None,
    ) -> Node | None:
        """The node internalTrafficPolicy Local confines a connection to (the client's), or
        None where it does not apply (D22, service_d22.itp_node)."""
        own = client.node if isinstance(client, HostPeer) else None
        if isinstance(client, PodPeer):
            own = self._nodes.get(client.pod.node_name or "")
        return itp_node(svc, via, client, own, dp, receiving)

    def host_backends(self, svc: Service) -> tuple[Pod, ...]:
        """The hostNetwork pods a Service selects, by key: endpoints at their node's address
        (kube-proxy DNATs to nodeIP:port), which `backends` leaves out."""
        if not svc.selector:
            return ()
        return tuple(
            sorted(
                (p for p in self.snapshot.pods if p.host_network and svc.selects(p)),
                key=lambda p: p.key,
            )
        )

    def _backend(self, svc: Service, on_node: Node | None) -> Pod | None:
        """The first ready backend by pod key (the lab sends to it too); for Local, on the node."""
        for pod in self.backends(svc):
            if on_node is None or pod.node_name == on_node.name:
                return pod
        return None


def _target_port(backend: Pod, sp: ServicePort) -> int | None:
    """The backend's port for `sp` (a named targetPort resolved on the pod; None: none)."""
    if isinstance(sp.target_port, str):
        cp = backend.named_port(sp.target_port, sp.protocol)
        return None if cp is None else cp.port
    return sp.target_port
