"""The in-cluster clients of a LoadBalancer IP that `loadBalancerSourceRanges` leave out (D22).

NPM's kube-proxy drops them at the LB IP (KUBE-PROXY-FIREWALL); Cilium checks the ranges
only for traffic from outside the cluster (`nodeport_lb4`), so they reach the backends as
the backends' and their own policies allow. The planner's D5d connections
(plan/governed_services.py) cover only the pods on a backend's node; these cover every pod
class with a pod outside the ranges, and the nodes (a backend's own and another).

Client classes a backend's ingress policies see alike, and whose egress the same policies
isolate, decide alike on both dataplanes (NPM drops them all): one connection stands for
them, as for D5d.
"""

from __future__ import annotations

from collections.abc import Sequence

from netparity.engine.service_d22 import outside_source_ranges
from netparity.engine.traffic import (
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Via,
)
from netparity.model.objects import Node, Pod, Service, ServicePort, ServiceType
from netparity.plan.classes import PodClass
from netparity.plan.connection import Connection
from netparity.plan.governed_services import ServiceTraffic


class SourceRangeTraffic(ServiceTraffic):
    """Adds the in-cluster clients outside a LoadBalancer's loadBalancerSourceRanges."""

    def source_range_connections(
        self, svc: Service, known: Sequence[Connection]
    ) -> list[Connection]:
        """The connections to judge for `svc`'s ranges, less the clients `known` (the D5d
        connections) already judge through its LB IP."""
        if (
            svc.type is not ServiceType.LOAD_BALANCER
            or not svc.load_balancer_source_ranges
            or not svc.load_balancer_ips
        ):
            return []
        judged = {
            self.classes.of_pod[c.traffic.source.pod.key].name
            for c in known
            if isinstance(c.traffic.source, PodEndpoint)
            and isinstance(c.traffic.destination, ServiceEndpoint)
            and c.traffic.destination.via is Via.LOAD_BALANCER
            and c.traffic.source.pod.key in self.classes.of_pod
            and outside_source_ranges(svc, c.traffic.source.pod.ip)
        }
        backends: dict[str, Pod] = {}
        for p in self.classes.pods_by_namespace.get(svc.namespace, []):
            if svc.selects(p) and p.node_name in self.node_by_name and not p.host_network:
                backends.setdefault(self.classes.of_pod[p.key].name, p)
        out: list[Connection] = []
        for sp in svc.ports:
            for b in backends.values():
                target_port = self._target_port(sp, b)
                if target_port is not None:
                    out += self._pod_clients(svc, sp, b, target_port, judged)
                    out += self._node_clients(svc, sp, b, target_port)
        return out

    @staticmethod
    def _target_port(sp: ServicePort, backend: Pod) -> int | None:
        if isinstance(sp.target_port, int):
            return sp.target_port
        cp = backend.named_port(sp.target_port, sp.protocol)
        return None if cp is None else cp.port

    def _outside(self, svc: Service, cls: PodClass, backend: Pod) -> list[Pod]:
        return [
            p
            for p in self.classes.members[cls.name]
            if p.key != backend.key
            and p.node_name
            and not p.host_network
            and outside_source_ranges(svc, p.ip)
        ]

    def _pod_clients(
        self, svc: Service, sp: ServicePort, b: Pod, target_port: int, judged: set[str]
    ) -> list[Connection]:
        view = self._ingress_view(b)
        sigs = self._signatures(view)
        groups: dict[tuple[object, ...], list[tuple[PodClass, list[Pod]]]] = {}
        for cls in self.classes.classes:
            if cls.name in judged:
                continue
            pods = self._outside(svc, cls, b)
            if not pods:
                continue
            sig = sigs.get(cls.name, ())
            groups.setdefault((sig, self._egress_signature(cls)), []).append((cls, pods))
        out: list[Connection] = []
        for members in groups.values():
            out.append(
                self._grouped(
                    members,
                    self._lb(svc, b),
                    sp,
                    target_port,
                    peer=f"the LoadBalancer IP of Service {svc.key}, from outside its "
                    "loadBalancerSourceRanges",
                )
            )
        return out

    def _node_clients(
        self, svc: Service, sp: ServicePort, b: Pod, target_port: int
    ) -> list[Connection]:
        own = self.node_by_name[b.node_name or ""]
        nodes: list[tuple[Node, str]] = [(own, "the backend's node")]
        other = self._other_node(own)
        if other is not None:
            nodes.append((other, "another node"))
        cls = self.classes.of_pod[b.key]
        out: list[Connection] = []
        for node, what in nodes:
            if not outside_source_ranges(svc, node.ip):
                continue
            out.append(
                Connection(
                    traffic=Traffic(
                        source=NodeEndpoint(node=node),
                        destination=self._lb(svc, b),
                        port=sp.port,
                        protocol=sp.protocol,
                    ),
                    side=None,
                    from_pods=False,
                    pods=self.classes.group(cls, [b]),
                    peer=f"node {node.name} ({node.ip}, {what}) through the LoadBalancer IP "
                    f"of Service {svc.key}, from outside its loadBalancerSourceRanges",
                    port=target_port,
                    port_label=f"{sp.port}/{sp.protocol} (targetPort {target_port})",
                )
            )
        return out

    @staticmethod
    def _lb(svc: Service, backend: Pod) -> ServiceEndpoint:
        return ServiceEndpoint(service=svc, via=Via.LOAD_BALANCER, node=None, backend=backend)

    def _grouped(
        self,
        members: Sequence[tuple[PodClass, list[Pod]]],
        destination: ServiceEndpoint,
        sp: ServicePort,
        target_port: int,
        *,
        peer: str,
    ) -> Connection:
        """One connection from the first class's first pod, standing for the other classes
        (`members`: classes that decide alike, with their pods)."""
        (cls, pods), rest = members[0], members[1:]
        return Connection(
            traffic=Traffic(
                source=PodEndpoint(pod=pods[0]),
                destination=destination,
                port=sp.port,
                protocol=sp.protocol,
            ),
            side=None,
            from_pods=True,
            pods=self.classes.group(cls, pods),
            stands_for=tuple(self.classes.group(c, ps) for c, ps in rest[: self.stands_for_cap]),
            stands_for_pods=sum(len(ps) for _, ps in rest),
            stands_for_classes=len(rest),
            peer=peer,
            port=target_port,
            port_label=f"{sp.port}/{sp.protocol} (targetPort {target_port})",
        )
