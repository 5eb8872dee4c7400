"""The in-cluster clients of a Service with internalTrafficPolicy Local on a node without a
backend, through its LoadBalancer IP and their own node's NodePort (D22).

kube-proxy (in front of NPM) sends a pod's LB-IP and NodePort connections through
KUBE-EXT-* to every endpoint: internalTrafficPolicy shapes the ClusterIP only. Cilium looks
a pod's own connection up in the internal scope (socket LB / bpf_lxc; SVC_FLAG_TWO_SCOPES),
so internalTrafficPolicy Local keeps it on the client's node, and with no endpoint there the
no-backend response refuses it (engine knob `itp_external_frontends`). The planner's D5d
connections (plan/governed_services.py) cover only the pods on a backend's node; these
cover the pods on every other node. Client classes a backend's ingress policies see alike,
and whose egress the same policies isolate, decide alike: one connection per node stands
for them, as for D5d.
"""

from __future__ import annotations

from netparity.engine.service_d22 import itp_local_nodes
from netparity.engine.traffic import ServiceEndpoint, Via
from netparity.lint.source_ranges import SourceRangeTraffic
from netparity.model.objects import Node, Pod, Service, ServicePort, ServiceType
from netparity.plan.classes import PodClass
from netparity.plan.connection import Connection


class ItpLocalTraffic(SourceRangeTraffic):
    """Adds the pods on nodes without a backend of an internalTrafficPolicy Local Service."""

    def itp_local_connections(self, svc: Service) -> list[Connection]:
        if svc.internal_traffic_policy != "Local":
            return []
        ready = {p.key for p in self.snapshot.backends(svc)}
        backends: dict[str, Pod] = {}
        for p in self.classes.pods_by_namespace.get(svc.namespace, []):
            if p.key in ready and p.node_name in self.node_by_name and not p.host_network:
                backends.setdefault(self.classes.of_pod[p.key].name, p)
        pods = [p for ps in self.classes.pods_by_namespace.values() for p in ps]
        bare = itp_local_nodes(svc, list(backends.values()), pods)
        if not backends or not bare:
            return []
        b = next(iter(backends.values()))
        out: list[Connection] = []
        for sp in svc.ports:
            target_port = self._target_port(sp, b)
            if target_port is None:
                continue
            for name in bare:
                node = self.node_by_name.get(name)
                if node is None:
                    continue
                if svc.type is ServiceType.LOAD_BALANCER and svc.load_balancer_ips:
                    out += self._itp_clients(svc, sp, b, target_port, node, Via.LOAD_BALANCER)
                if sp.node_port is not None:
                    out += self._itp_clients(svc, sp, b, target_port, node, Via.NODE_PORT)
        return out

    def _itp_clients(
        self, svc: Service, sp: ServicePort, b: Pod, target_port: int, node: Node, via: Via
    ) -> list[Connection]:
        view = self._ingress_view(b)
        sigs = self._signatures(view)
        groups: dict[tuple[object, ...], list[tuple[PodClass, list[Pod]]]] = {}
        for cls in self.classes.classes:
            pods = [
                p
                for p in self.classes.members[cls.name]
                if p.node_name == node.name and not p.host_network
            ]
            if not pods:
                continue
            sig = sigs.get(cls.name, ())
            groups.setdefault((sig, self._egress_signature(cls)), []).append((cls, pods))
        what = (
            "the LoadBalancer IP"
            if via is Via.LOAD_BALANCER
            else f"the NodePort of its own node {node.name}"
        )
        out: list[Connection] = []
        dst = ServiceEndpoint(
            service=svc, via=via, node=node if via is Via.NODE_PORT else None, backend=b
        )
        for members in groups.values():
            out.append(
                self._grouped(
                    members,
                    dst,
                    sp,
                    target_port,
                    peer=f"{what} of Service {svc.key} (internalTrafficPolicy Local), from "
                    f"node {node.name}, which has no backend",
                )
            )
        return out
