"""Essential flows: DNS and the API server, planned from every class (SEMANTICS D13).

Every pod needs its cluster's DNS and most need the API server; a policy that cuts them
(the guide's own CiliumNetworkPolicy copied into a namespace without an egress
NetworkPolicy puts every pod there into egress default-deny) breaks everything at once.
So the planner plans, from every class, DNS to the kube-dns Service on 53/UDP and 53/TCP
(or to the pod's own node where the cluster runs node-local DNS, D13) and a TCP connect to
the API server through `default/kubernetes`. Classes alike in how their egress is
isolated (the policies selecting them, under every planned dataplane) share one probe,
whose `stands_for` lists all their pods, as the node probes do.

These are the only probes to real cluster services (DESIGN.md): real CoreDNS and the real
API server cannot answer an agent's token, so a backend runs them as probe kinds of their
own (`essential_check`): a DNS query for the cluster's own service name that must get an
answer, and a TCP connect to the API server's address. Both are read-only. Their purpose
(the probe's scenario) is `essential`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from netparity.engine.compile import EGRESS, INGRESS
from netparity.engine.traffic import Endpoint, NodeEndpoint, ServiceEndpoint
from netparity.model.objects import Node, Pod, Protocol, Service
from netparity.model.snapshot import Snapshot
from netparity.plan.base import PlannerBase, Port
from netparity.plan.classes import PodClass
from netparity.plan.model import Intent, PlannedProbe, Scenario

DNS_PORT = 53
DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"
DNS_APP = "kube-dns"  # k8s-app label of CoreDNS pods
NODE_LOCAL_DNS_APP = "node-local-dns"  # k8s-app label of node-local DNS pods (D13)
API_SERVICE = "default/kubernetes"
API_PORT = 443
# the name every cluster's DNS answers: the API server's Service
DNS_QUERY_NAME = "kubernetes.default.svc.cluster.local"


class Check(StrEnum):
    """How a backend runs an essential probe (instead of a token exchange)."""

    DNS = "dns"  # a DNS query for DNS_QUERY_NAME that must get an answer
    CONNECT = "connect"  # a TCP connect that must be accepted


@dataclass(frozen=True, slots=True, kw_only=True)
class EssentialFlow:
    """One essential destination: the cluster's DNS or the API server, on one port."""

    what: str  # "DNS" or "the API server", for a reader
    check: Check
    port: int
    protocol: Protocol
    service: Service | None = None  # reached through this Service's ClusterIP
    own_node: bool = False  # reached at the pod's own node (node-local DNS)

    def endpoint(self, pod: Pod, nodes: dict[str, Node]) -> Endpoint | None:
        """Where `pod` sends this flow; None where it cannot (no node for node-local DNS)."""
        if self.service is not None:
            return ServiceEndpoint(service=self.service)
        node = nodes.get(pod.node_name or "")
        return NodeEndpoint(node=node) if node is not None else None

    def __str__(self) -> str:
        where = f"svc:{self.service.key}" if self.service is not None else "the own node"
        return f"{self.what} ({where} {self.port}/{self.protocol})"


def dns_service(snapshot: Snapshot) -> Service | None:
    """The cluster's DNS Service: kube-system/kube-dns, else a kube-system Service that
    selects CoreDNS pods (k8s-app=kube-dns)."""
    found = None
    for svc in snapshot.services:
        if svc.namespace != DNS_NAMESPACE:
            continue
        if svc.name == DNS_SERVICE:
            return svc
        if found is None and (svc.selector or {}).get("k8s-app") == DNS_APP:
            found = svc
    return found


def node_local_dns(snapshot: Snapshot) -> bool:
    """Whether the cluster runs node-local DNS (a listener on every node, D13)."""
    return any(p.labels.get("k8s-app") == NODE_LOCAL_DNS_APP for p in snapshot.pods)


def essential_flows(snapshot: Snapshot) -> tuple[EssentialFlow, ...]:
    """DNS first (UDP, then TCP), then the API server; only what the snapshot shows."""
    out: list[EssentialFlow] = []
    if node_local_dns(snapshot):
        for proto in (Protocol.UDP, Protocol.TCP):
            out.append(
                EssentialFlow(
                    what="DNS", check=Check.DNS, port=DNS_PORT, protocol=proto, own_node=True
                )
            )
    svc = dns_service(snapshot)
    if svc is not None:
        for proto in (Protocol.UDP, Protocol.TCP):
            if any(sp.port == DNS_PORT and sp.protocol is proto for sp in svc.ports):
                out.append(
                    EssentialFlow(
                        what="DNS", check=Check.DNS, port=DNS_PORT, protocol=proto, service=svc
                    )
                )
    api = next((s for s in snapshot.services if s.key == API_SERVICE), None)
    if api is not None:
        port = next(
            (sp.port for sp in api.ports if sp.protocol is Protocol.TCP and sp.port == API_PORT),
            next((sp.port for sp in api.ports if sp.protocol is Protocol.TCP), None),
        )
        if port is not None:
            out.append(
                EssentialFlow(
                    what="the API server",
                    check=Check.CONNECT,
                    port=port,
                    protocol=Protocol.TCP,
                    service=api,
                )
            )
    return tuple(out)


def essential_check(probe: PlannedProbe) -> Check | None:
    """How a backend on a real cluster runs `probe`: a DNS query, a TCP connect, or None
    (an ordinary token probe). Only essential probes to DNS or the API server qualify."""
    if Scenario.ESSENTIAL not in probe.scenarios:
        return None
    t = probe.traffic
    dst = t.destination
    if isinstance(dst, ServiceEndpoint) and dst.service.key == API_SERVICE:
        return Check.CONNECT if t.protocol is Protocol.TCP else None
    if t.port == DNS_PORT and isinstance(dst, ServiceEndpoint | NodeEndpoint):
        return Check.DNS
    return None


class EssentialProbes(PlannerBase):
    """The planner's part that plans the essential flows (hooked into `_Planner.plan`)."""

    def _plan_essential(self) -> None:
        flows = essential_flows(self.snapshot)
        if not flows:
            return
        restricted_backends = self._essential_backends_restricted(flows)
        groups: dict[tuple[object, ...], list[PodClass]] = {}
        for c in self.classes.classes:
            if not c.rep.node_name or c.rep.host_network:
                continue
            sig: tuple[object, ...] = tuple(
                self._selecting(c, EGRESS, dp) for dp in self.dps.values()
            )
            if restricted_backends:  # the backends' ingress may tell sources apart
                sig = (*sig, c.name)
            groups.setdefault(sig, []).append(c)
        for members in groups.values():
            stands = tuple(k for m in members for k in m.keys)
            for flow in flows:
                # not a backend to its own Service: hairpin, not what DNS needs
                first = next(
                    (m for m in members if flow.service is None or not flow.service.selects(m.rep)),
                    None,
                )
                src = self._pod_end(first, None) if first is not None else None
                if src is None:
                    continue
                dst = flow.endpoint(src.pod, self.node_by_name)
                if dst is None:
                    continue
                pid = self._add(
                    src,
                    dst,
                    Port(number=flow.port, name=None, protocol=flow.protocol),
                    Intent.SCENARIO,
                    scenarios=(Scenario.ESSENTIAL,),
                )
                draft = self.drafts[pid]
                if len(stands) > len(draft.stands_for):
                    draft.stands_for = stands

    def _essential_backends_restricted(self, flows: tuple[EssentialFlow, ...]) -> bool:
        for flow in flows:
            if flow.service is None:
                continue
            for pod in self._backends(flow.service):
                if any(
                    self.base_engine.selecting(pod, INGRESS, dp)[0]
                    or self.base_engine.selecting(pod, INGRESS, dp)[1]
                    for dp in self.dps.values()
                ):
                    return True
        return False
