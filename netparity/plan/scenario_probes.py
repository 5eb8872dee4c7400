"""Scenario probes: nodes (D4), outside traffic through NodePort/LoadBalancer (D5, D5b,
D5c) and in-cluster clients of them (D5d), with run-owned Services where none exists."""

from __future__ import annotations

from collections.abc import Sequence

from netparity.engine.compile import EGRESS, INGRESS
from netparity.engine.service_d22 import itp_local_nodes, outside_source_ranges
from netparity.engine.traffic import (
    Decision,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Via,
)
from netparity.model.objects import (
    RUN_LABEL,
    Node,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    frozen_labels,
)
from netparity.model.snapshot import Snapshot
from netparity.plan.addresses import outside_address
from netparity.plan.base import NODE_PORT_RANGE, REJECT_TRIES, SYNTHETIC_PREFIX, PlannerBase, Port
from netparity.plan.classes import PodClass
from netparity.plan.ids import digest
from netparity.plan.model import Intent, Scenario

# The run label's value on the planner's Services until a backend creates them for a run.
PLANNED_RUN = "planned"


class ScenarioProbes(PlannerBase):
    def _plan_node_egress(self) -> None:
        """D4a/D4b: classes whose egress is restricted, to their own node and another; one
        class per behaviour towards nodes (the probe stands for all of them)."""
        groups: dict[tuple[object, ...], list[PodClass]] = {}
        for c in self.classes.classes:
            if c.rep.node_name not in self.node_by_name:
                continue
            sig = self._behaviour(c, EGRESS, self.node_capable)
            if sig is not None:
                groups.setdefault(sig, []).append(c)
        for members in groups.values():
            c = members[0]
            own = self.node_by_name[c.rep.node_name or ""]
            src = PodEndpoint(pod=c.rep)
            stands = tuple(k for m in members for k in m.keys)
            for node in (own, self._other_node(own.name)):
                if node is None:
                    continue
                port = Port(number=self._node_port(node), name=None, protocol=Protocol.TCP)
                pid = self._add(
                    src,
                    NodeEndpoint(node=node),
                    port,
                    Intent.SCENARIO,
                    scenarios=(Scenario.NODE_EGRESS,),
                )
                draft = self.drafts[pid]
                if len(stands) > len(draft.stands_for):
                    draft.stands_for = stands

    def _synthetic_services(self, snapshot: Snapshot) -> tuple[Service, ...]:
        """Run-owned NodePort Services for ingress-restricted classes no NodePort or
        LoadBalancer Service exposes: one per behaviour towards outside traffic (isolation
        and the policies that could admit a non-pod source, under both dataplanes) and port,
        through the first class that has it."""
        exposed: set[str] = set()
        used_ports: set[int] = set()
        for svc in snapshot.services:
            used_ports.update(sp.node_port for sp in svc.ports if sp.node_port)
            if svc.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER):
                for p in self._backends(svc):
                    c = self.classes.of.get(p.key)
                    if c is not None:
                        exposed.add(c.name)
        out: list[Service] = []
        lo, hi = NODE_PORT_RANGE
        seen: set[tuple[object, ...]] = set()
        for c in self.classes.classes:
            if c.name in exposed or not c.rep.labels or not c.rep.node_name:
                continue
            behaviour = self._behaviour(c, INGRESS, self.outside_capable)
            if behaviour is None:
                continue
            tcp = [n for n, p in c.ports if p is Protocol.TCP]
            if tcp:
                number, proto = tcp[0], Protocol.TCP
            elif c.ports:
                number, proto = c.ports[0]
            else:
                number, proto = 8080, Protocol.TCP
            sig = (*behaviour, number, proto, c.named_ports)  # ingress names resolve here
            if sig in seen:
                continue  # another class already shows how this behaviour meets outside traffic
            seen.add(sig)
            name = SYNTHETIC_PREFIX + digest(c.name, 10)
            node_port = lo + int(digest(name, 8), 16) % (hi - lo + 1)
            while node_port in used_ports:
                node_port = lo if node_port >= hi else node_port + 1
            used_ports.add(node_port)
            out.append(
                Service(
                    namespace=c.namespace,
                    name=name,
                    type=ServiceType.NODE_PORT,
                    selector=frozen_labels(dict(c.rep.labels)),
                    ports=(
                        ServicePort(
                            name="probe",
                            protocol=proto,
                            port=number,
                            target_port=number,
                            node_port=node_port,
                        ),
                    ),
                    external_traffic_policy="Cluster",
                    publish_not_ready=True,
                    # the run's own: a backend that creates it never reads it back
                    labels=frozen_labels({RUN_LABEL: PLANNED_RUN}),
                )
            )
        return tuple(out)

    def _client_addresses(self, cls: PodClass) -> list[str]:
        """The default outside client, then one address per client ipBlock of its ingress."""
        out = [self.external_ip]
        for spec in self.policies_of.get(cls.name, []):
            for rule in spec.rules:
                if rule.direction != INGRESS or rule.deny:
                    continue
                for peer in rule.peers:
                    if peer.block is None:
                        continue
                    addr = outside_address(peer.block, self.ranges, (self.external_ip,))
                    if addr is not None and addr not in out:
                        out.append(addr)
        return out[:3]

    def _plan_services(self) -> None:
        """D5/D5b/D5c: outside clients through NodePort/LB, received on the backend's node
        and another; D5d: an in-cluster client through the backend's node."""
        services = [
            s
            for s in self.snapshot.services
            if s.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
        ]
        for svc in services:
            backends = self._backends(svc)
            if not backends:
                continue
            # the first backend of the first class (by name): pods of one class are alike
            b = min(backends, key=lambda p: (self._class_name(p.key) or "", p.key))
            bcls = self.classes.of.get(b.key)
            bnode = self.node_by_name.get(b.node_name or "")
            if bcls is None or bnode is None or not self._restricted(bcls, INGRESS):
                continue
            other = self._other_node(bnode.name)
            clients = self._client_addresses(bcls)
            local = svc.external_traffic_policy == "Local"
            for sp in svc.ports:
                vias = []
                if sp.node_port:
                    vias.append(Via.NODE_PORT)
                if svc.type is ServiceType.LOAD_BALANCER and svc.load_balancer_ips:
                    vias.append(Via.LOAD_BALANCER)
                port = Port(number=sp.port, name=None, protocol=sp.protocol)
                if local:
                    elsewhere = [p for p in backends if p.node_name != bnode.name]
                    if elsewhere and elsewhere[0].node_name in self.node_by_name:
                        other = self.node_by_name[elsewhere[0].node_name or ""]
                for via in vias:
                    for recv in (bnode, other):
                        if recv is None:
                            continue
                        backend: Pod | None = b
                        if local:
                            on = [p for p in backends if p.node_name == recv.name]
                            backend = on[0] if on else None
                        dst = ServiceEndpoint(service=svc, via=via, node=recv, backend=backend)
                        for ip in clients:
                            self._add(
                                ExternalEndpoint(ip=ip),
                                dst,
                                port,
                                Intent.SCENARIO,
                                scenarios=(Scenario.EXTERNAL_INGRESS,),
                            )
                if vias and not local:
                    self._in_cluster_client(svc, vias[0], backends, bcls, port)
        self._plan_source_ranges()
        self._plan_itp_local()

    def _plan_source_ranges(self) -> None:
        """D22: a pod outside a LoadBalancer's loadBalancerSourceRanges reaching its LB IP.
        NPM's kube-proxy drops it (KUBE-PROXY-FIREWALL); Cilium checks the ranges only for
        traffic from outside the cluster (`nodeport_lb4`), so policy decides. One probe per
        Service port, from the first client (other namespaces first) the target admits,
        else from the first client; a class's client is one on the backend's node where it
        has one outside the ranges (ids stay put when pods are renamed)."""
        for svc in self.snapshot.services:
            if (
                svc.type is not ServiceType.LOAD_BALANCER
                or not svc.load_balancer_source_ranges
                or not svc.load_balancer_ips
            ):
                continue
            backends = [p for p in self._backends(svc) if p.node_name in self.node_by_name]
            backends = [p for p in backends if not p.host_network]
            if not backends:
                continue
            b = min(backends, key=lambda p: (self._class_name(p.key) or "", p.key))
            bcls = self.classes.of.get(b.key)
            if bcls is None:
                continue
            # per class, a pod on the backend's node where one is outside the ranges, else
            # the first: the pair's placement, not which pod is first by name, makes the id
            firsts = (
                next(
                    (p for p in outside if p.node_name == b.node_name),
                    outside[0] if outside else None,
                )
                for outside in (
                    [
                        p
                        for p in c.pods
                        if p.key != b.key
                        and p.node_name
                        and not p.host_network
                        and outside_source_ranges(svc, p.ip)
                    ]
                    for c in self._other_namespaces_first(bcls)
                )
            )
            clients = [p for p in firsts if p is not None][:REJECT_TRIES]
            if not clients:
                continue
            dst = ServiceEndpoint(
                service=svc,
                via=Via.LOAD_BALANCER,
                node=self.node_by_name[b.node_name or ""],
                backend=b,
            )
            for sp in svc.ports:
                port = Port(number=sp.port, name=None, protocol=sp.protocol)
                client = next(
                    (
                        c
                        for c in clients
                        if self._verdict(
                            *self._judge(PodEndpoint(pod=c), dst, port), self.tgt
                        ).decision
                        is Decision.ALLOW
                    ),
                    clients[0],
                )
                self._add(
                    PodEndpoint(pod=client),
                    dst,
                    port,
                    Intent.SCENARIO,
                    scenarios=(Scenario.LB_SOURCE_RANGES,),
                )

    def _plan_itp_local(self) -> None:
        """D22: a pod on a node without a backend of an internalTrafficPolicy Local
        NodePort/LoadBalancer Service, reaching its LB IP and its own node's NodePort.
        kube-proxy sends them to every endpoint; Cilium's internal scope keeps them on the
        client's node and refuses them. One probe each per Service port, from the first pod
        (by key) on the first such node (by name)."""
        for svc in self.snapshot.services:
            if svc.internal_traffic_policy != "Local" or svc.type not in (
                ServiceType.NODE_PORT,
                ServiceType.LOAD_BALANCER,
            ):
                continue
            ready = {p.key for p in self.snapshot.backends(svc)}
            backends = [
                p
                for p in self._backends(svc)
                if p.key in ready and p.node_name in self.node_by_name and not p.host_network
            ]
            clients = [p for c in self.classes.classes for p in c.pods]
            bare = itp_local_nodes(svc, backends, clients)
            if not bare:
                continue
            node = self.node_by_name.get(bare[0])
            client = min(
                (p for p in clients if p.node_name == bare[0] and not p.host_network),
                key=lambda p: p.key,
            )
            b = min(backends, key=lambda p: (self._class_name(p.key) or "", p.key))
            if node is None:
                continue
            vias: list[tuple[Via, Node | None]] = [(Via.NODE_PORT, node)]
            if svc.type is ServiceType.LOAD_BALANCER and svc.load_balancer_ips:
                vias.insert(0, (Via.LOAD_BALANCER, None))
            for sp in svc.ports:
                for via, recv in vias:
                    if via is Via.NODE_PORT and sp.node_port is None:
                        continue
                    self._add(
                        PodEndpoint(pod=client),
                        ServiceEndpoint(service=svc, via=via, node=recv, backend=b),
                        Port(number=sp.port, name=None, protocol=sp.protocol),
                        Intent.SCENARIO,
                        scenarios=(Scenario.ITP_LOCAL,),
                    )

    def _in_cluster_client(
        self,
        svc: Service,
        via: Via,
        backends: Sequence[Pod],
        bcls: PodClass,
        port: Port,
    ) -> None:
        """D5d: a pod of a class whose egress is open reaches the Service through the node
        of a backend of the backend's class, preferably from that very node (SEMANTICS:
        "pod -> NodePort of the local node"). Whether such a pair exists, not which pods
        are first by name, decides the probe's meaning."""
        members = [p for p in backends if self.classes.of.get(p.key) is bcls and p.node_name]
        if not members:
            return
        chosen: tuple[Pod, Pod] | None = None
        tries = 0
        for c in self._other_namespaces_first(bcls):
            if c.name == bcls.name or self._restricted(c, EGRESS) or not c.rep.node_name:
                continue
            pair = next(
                ((b, p) for b in members for p in c.pods if p.node_name == b.node_name),
                (members[0], c.rep),
            )
            chosen = chosen or pair
            tries += 1
            direct_port = self._backend_port(svc, port, pair[0])
            if direct_port is not None and self._side_denies(
                PodEndpoint(pod=pair[1]), PodEndpoint(pod=pair[0]), direct_port, INGRESS
            ):
                chosen = pair
                break
            if tries >= REJECT_TRIES:
                break
        if chosen is None:
            return
        backend, client = chosen
        recv = self.node_by_name.get(backend.node_name or "")
        dst = ServiceEndpoint(service=svc, via=via, node=recv, backend=backend)
        self._add(
            PodEndpoint(pod=client), dst, port, Intent.SCENARIO, scenarios=(Scenario.LB_IN_CLUSTER,)
        )

    @staticmethod
    def _backend_port(svc: Service, port: Port, backend: Pod) -> Port | None:
        sp = svc.port_named(port.number, port.protocol)
        if sp is None:
            return None
        if isinstance(sp.target_port, str):
            cp = backend.named_port(sp.target_port, sp.protocol)
            return None if cp is None else Port(number=cp.port, name=None, protocol=sp.protocol)
        return Port(number=sp.target_port, name=None, protocol=sp.protocol)
