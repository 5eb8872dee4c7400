"""Rule probes: for every rule, what it must admit and what lies just outside it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from netparity.engine.compile import EGRESS, INGRESS
from netparity.engine.matcher.peer import flatten
from netparity.engine.traffic import (
    Decision,
    Endpoint,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
)
from netparity.model.networkpolicy import IPBlock
from netparity.model.objects import Node, Protocol
from netparity.plan.addresses import excepted_address, outside_address
from netparity.plan.base import (
    CANDIDATES,
    EXTERNAL_PORT,
    FALLBACK_PORT,
    OTHER_PROTOCOL,
    REJECT_TRIES,
    PlannerBase,
    Port,
)
from netparity.plan.classes import PodClass
from netparity.plan.model import Intent, Scenario
from netparity.plan.rules import PeerKind, PeerSpec, PolicySpec, PortSpec, RuleSpec


class RuleProbes(PlannerBase):
    def _admit_ports(
        self, ps: PortSpec, dst: PodClass | None, node: Node | None, direction: str
    ) -> list[Port]:
        proto = ps.protocol or Protocol.TCP
        tags: list[Scenario] = []
        if proto is Protocol.SCTP:
            tags.append(Scenario.SCTP)
        if ps.port is None:
            if dst is not None:
                declared = [n for n, p in dst.ports if p is proto] or [
                    cp.port for cp in dst.rep.ports if cp.protocol is proto
                ]
                number = min(declared) if declared else FALLBACK_PORT[proto]
            elif node is not None:
                number = self._node_port(node) if proto is Protocol.TCP else FALLBACK_PORT[proto]
            else:
                number = EXTERNAL_PORT if proto is Protocol.TCP else FALLBACK_PORT[proto]
            return [Port(number=number, name=None, protocol=proto, tags=tuple(tags))]
        if isinstance(ps.port, str):
            if dst is None:
                return []
            found = dst.number(ps.port, ps.protocol)
            if found is None:
                return []
            if direction == EGRESS and self._name_conflicts(ps.port, proto):
                tags.append(Scenario.NAMED_PORT)
            return [Port(number=found, name=ps.port, protocol=proto, tags=tuple(tags))]
        if ps.is_range:
            assert ps.end_port is not None
            tags.append(Scenario.ENDPORT)
            numbers = [ps.port, ps.end_port]
            if dst is not None:
                inner = sorted(n for n, p in dst.ports if p is proto and ps.port < n < ps.end_port)
                numbers[1:1] = inner[:1]
            return [Port(number=n, name=None, protocol=proto, tags=tuple(tags)) for n in numbers]
        return [Port(number=ps.port, name=None, protocol=proto, tags=tuple(tags))]

    def _reject_ports(self, ps: PortSpec, admitted: Port) -> list[Port]:
        out: list[Port] = []
        if ps.is_range:
            assert isinstance(ps.port, int) and ps.end_port is not None
            for n in (ps.port - 1, ps.end_port + 1):
                if 1 <= n <= 65535:
                    out.append(
                        Port(
                            number=n,
                            name=None,
                            protocol=admitted.protocol,
                            tags=(Scenario.ENDPORT,),
                        )
                    )
        if ps.protocol is not None:
            out.append(
                Port(
                    number=admitted.number,
                    name=None,
                    protocol=OTHER_PROTOCOL[admitted.protocol],
                )
            )
        return out

    def _name_conflicts(self, name: str, proto: Protocol) -> bool:
        numbers = {n for n, p in self.engine.named_ports.get(name, ()) if p is proto}
        return len(numbers) > 1

    def _plan_rules(self) -> None:
        total = sum(len(spec.rules) for spec in self.specs)
        done = 0
        for spec in self.specs:
            done += len(spec.rules)
            self._progress("rules planned", done, total)
            subjects = self.subjects[spec.name]
            for rule in spec.rules:
                if spec.subject is None:
                    self.uncovered[rule.ref] = "a Cilium host policy (nodeSelector) is not planned"
                elif not subjects:
                    self.uncovered[rule.ref] = "the policy selects no pod"
                elif rule.selects_nothing:
                    self.uncovered[rule.ref] = "the rule selects no peer"
                else:
                    self._plan_rule(spec, rule, subjects)
                    if Scenario.NS_SELECTOR_OR in spec.tags:
                        self._plan_ns_selector_or(spec, rule, subjects)
                    if rule.ref not in self.inside:
                        self.uncovered[rule.ref] = "no peer the rule matches can be probed"
            if subjects:
                self._plan_default_deny(spec, subjects)

    def _plan_ns_selector_or(
        self, spec: PolicySpec, rule: RuleSpec, subjects: Sequence[PodClass]
    ) -> None:
        """D19: per peer, one class in a namespace that NPM's flattened reading of the
        namespaceSelector admits and the selector itself does not (the admit probe prefers
        a peer both dataplanes admit, so it never shows this)."""
        eng = self.base_engine
        for peer in rule.peers:
            sel = peer.namespace_selector
            if peer.kind is not PeerKind.PODS or sel is None:
                continue
            flat = flatten(sel)
            found = [
                c
                for ns in sorted(self.by_ns)
                if not sel.matches(labels := eng.namespace_labels(ns))
                and any(f.matches(labels) for f in flat)
                for c in self.by_ns[ns]
                if peer.pod_selector is None
                or peer.pod_selector.matches(eng.labels(c.rep, self.cur))
            ]
            other_side = EGRESS if rule.direction == INGRESS else INGRESS
            for ps in rule.ports or (PortSpec(protocol=None, port=None),):
                subject = self._pick_subject(subjects, ps, rule.direction)
                me = PodEndpoint(pod=subject.rep)
                chosen: tuple[Endpoint, Endpoint, Port] | None = None
                for c in found[:CANDIDATES]:
                    end = self._pod_end(c, subject.rep)
                    if end is None:
                        continue
                    if rule.direction == INGRESS:
                        src, dst = end, me
                        ports = self._admit_ports(ps, subject, None, INGRESS)
                    else:
                        src, dst = me, end
                        ports = self._admit_ports(ps, c, None, EGRESS)
                    if not ports:
                        continue
                    pid, traffic = self._judge(src, dst, ports[0])
                    side = self._side(self._verdict(pid, traffic, self.tgt), other_side)
                    if chosen is None or side is None or side.decision is Decision.ALLOW:
                        chosen = (src, dst, ports[0])
                    if side is None or side.decision is Decision.ALLOW:
                        break  # the other side allows: only this rule's reading decides
                if chosen is not None:
                    self._add(
                        *chosen,
                        Intent.SCENARIO,
                        rule=rule,
                        scenarios=(Scenario.NS_SELECTOR_OR,),
                    )

    def _pick_subject(self, subjects: Sequence[PodClass], ps: PortSpec, direction: str) -> PodClass:
        if direction != INGRESS or ps.port is None:
            return subjects[0]
        proto = ps.protocol or Protocol.TCP
        for c in subjects:
            if isinstance(ps.port, str):
                if c.number(ps.port, ps.protocol) is not None:
                    return c
            elif c.declares(ps.port, proto):
                return c
        return subjects[0]

    def _plan_rule(self, spec: PolicySpec, rule: RuleSpec, subjects: Sequence[PodClass]) -> None:
        ports = rule.ports or (PortSpec(protocol=None, port=None),)
        peers = rule.peers or (PeerSpec(kind=PeerKind.ALL),)
        intent = Intent.REJECT if rule.deny else Intent.ADMIT
        tags = spec.tags
        for ps in ports:
            subject = self._pick_subject(subjects, ps, rule.direction)
            me = subject.rep
            own = self.node_by_name.get(me.node_name or "")
            first: tuple[Endpoint, Endpoint, Port, PodClass | None] | None = None
            src: Endpoint
            dst: Endpoint
            for peer in peers:
                for other, extra, peer_cls, node in self._peer_ends(
                    spec, rule, peer, ps, subject, own
                ):
                    if rule.direction == INGRESS:
                        src, dst = other, PodEndpoint(pod=me)
                        admit = self._admit_ports(ps, subject, None, INGRESS)
                    else:
                        src, dst = PodEndpoint(pod=me), other
                        admit = self._admit_ports(ps, peer_cls, node, EGRESS)
                        if not admit and isinstance(ps.port, str) and peer_cls is None:
                            self._named_port_outside(rule, ps, src, other, tags)
                    for port in admit:
                        self._add(src, dst, port, intent, rule=rule, scenarios=(*extra, *tags))
                        if first is None and (peer_cls is not None or rule.direction == INGRESS):
                            first = (src, dst, port, peer_cls)
            if (
                rule.direction == EGRESS
                and isinstance(ps.port, str)
                and self._name_conflicts(ps.port, ps.protocol or Protocol.TCP)
            ):
                self._each_number(spec, rule, ps, subject, intent)
            if rule.deny:
                continue
            if first is None:
                # nothing the rule matches can be probed (an IPv6 ipBlock, say): what lies
                # outside it still can
                self._reject_peer(spec, rule, subject, self._subject_port(ps, subject, rule), tags)
                continue
            src, dst, port, _ = first
            for rp in self._reject_ports(ps, port):
                if self._side_denies(src, dst, rp, rule.direction):
                    self._add(src, dst, rp, Intent.REJECT, rule=rule, scenarios=tags)
            for peer in peers:
                if peer.kind is PeerKind.BLOCK and peer.block is not None and peer.block.excepts:
                    addr = self._address(peer.block, rule.direction, excepted=True)
                    if addr is None:
                        continue
                    out_end = ExternalEndpoint(ip=addr)
                    s, d = (out_end, dst) if rule.direction == INGRESS else (src, out_end)
                    ext_port = port
                    if rule.direction == EGRESS and ps.port is None:
                        ext_port = self._admit_ports(ps, None, None, EGRESS)[0]
                    if self._side_denies(s, d, ext_port, rule.direction):
                        self._add(s, d, ext_port, Intent.REJECT, rule=rule, scenarios=tags)
            self._reject_peer(spec, rule, subject, port, tags)

    def _outside(self, direction: str) -> str:
        """The outside end of a rule's direction: the runner as a source (ingress), the
        responder (else the runner's address) as a destination (egress)."""
        return self.external_ip if direction == INGRESS else self.outside_target

    def _address(self, block: IPBlock, direction: str, *, excepted: bool = False) -> str | None:
        """`outside_address` (or `excepted_address`) of the block, once per block: policies
        repeat the same few CIDRs."""
        key = (block, direction, excepted)
        if key not in self.address_cache:
            find = excepted_address if excepted else outside_address
            self.address_cache[key] = find(block, self.ranges, self._prefer(direction))
        return self.address_cache[key]

    def _prefer(self, direction: str) -> tuple[str | None, ...]:
        """Addresses to choose first inside an ipBlock: the ones a backend can use there."""
        return (self.external_ip,) if direction == INGRESS else (self.responder,)

    def _subject_port(self, ps: PortSpec, subject: PodClass, rule: RuleSpec) -> Port | None:
        if rule.direction == INGRESS:
            ports = self._admit_ports(ps, subject, None, INGRESS)
            return ports[0] if ports else None
        if isinstance(ps.port, int):
            return Port(number=ps.port, name=None, protocol=ps.protocol or Protocol.TCP)
        return None

    def _peer_ends(
        self,
        spec: PolicySpec,
        rule: RuleSpec,
        peer: PeerSpec,
        ps: PortSpec,
        subject: PodClass,
        own: Node | None,
    ) -> Iterator[tuple[Endpoint, tuple[Scenario, ...], PodClass | None, Node | None]]:
        """The other ends to probe for one peer: (endpoint, scenarios, its class, its node)."""
        me = subject.rep
        if peer.kind in (PeerKind.PODS, PeerKind.ALL, PeerKind.CLUSTER):
            chosen = self._choose_pod_peer(spec, rule, peer, ps, subject)
            if chosen is not None:
                yield chosen[0], (), chosen[1], None
            if peer.kind is PeerKind.ALL:
                yield ExternalEndpoint(ip=self._outside(rule.direction)), (), None, None
            return
        if peer.kind is PeerKind.WORLD:
            yield ExternalEndpoint(ip=self._outside(rule.direction)), (), None, None
            return
        if peer.kind is PeerKind.HOST:
            if own is not None:
                yield NodeEndpoint(node=own), (Scenario.NODE_EGRESS,), None, own
            return
        if peer.kind is PeerKind.REMOTE_NODE:
            other = self._other_node(me.node_name)
            if other is not None:
                yield NodeEndpoint(node=other), (), None, other
            return
        assert peer.block is not None
        addr = self._address(peer.block, rule.direction)
        if addr is not None:
            yield ExternalEndpoint(ip=addr), (), None, None
        if spec.cilium:
            return  # Cilium CIDR rules never match pods or nodes on any dataplane we model
        inside: list[tuple[PodEndpoint, PodClass]] = []
        for c in self._classes_in_block(peer):
            end = self._pod_end(c, me)
            if end is not None:
                inside.append((end, c))
            if len(inside) >= CANDIDATES:
                break
        chosen = self._best(inside, spec, rule, ps, subject)
        if chosen is not None:
            yield chosen[0], (Scenario.IPBLOCK_PODS,), chosen[1], None
        nodes = self._nodes_in_block(peer)
        other = self._other_node(me.node_name, nodes)
        if other is not None:
            yield NodeEndpoint(node=other), (Scenario.IPBLOCK_NODES,), None, other
        if rule.direction == EGRESS and own is not None and own in nodes:
            yield NodeEndpoint(node=own), (Scenario.IPBLOCK_NODES, Scenario.NODE_EGRESS), None, own

    def _choose_pod_peer(
        self, spec: PolicySpec, rule: RuleSpec, peer: PeerSpec, ps: PortSpec, subject: PodClass
    ) -> tuple[PodEndpoint, PodClass] | None:
        """A matching peer class, preferring one that serves the port and whose verdict
        under the reference dataplane is decided by this rule."""
        me = subject.rep
        proto = ps.protocol or Protocol.TCP
        tried: list[tuple[PodEndpoint, PodClass]] = []
        serving: list[tuple[PodEndpoint, PodClass]] = []
        pool: Iterable[PodClass] = self._peer_classes(spec, peer)
        if peer.kind is PeerKind.ALL:
            pool = self._other_namespaces_first(subject)
        for c in pool:
            end = self._pod_end(c, me)
            if end is None:
                continue
            if rule.direction == EGRESS:
                if isinstance(ps.port, str):
                    if c.number(ps.port, ps.protocol) is None:
                        continue
                elif isinstance(ps.port, int) and not c.declares(ps.port, proto):
                    if len(tried) < CANDIDATES:
                        tried.append((end, c))
                    continue
            serving.append((end, c))
            if len(serving) >= CANDIDATES:
                break
        return self._best(serving or tried, spec, rule, ps, subject)

    def _best(
        self,
        candidates: Sequence[tuple[PodEndpoint, PodClass]],
        spec: PolicySpec,
        rule: RuleSpec,
        ps: PortSpec,
        subject: PodClass,
    ) -> tuple[PodEndpoint, PodClass] | None:
        """The first candidate the rule decides under the reference dataplane and the target
        allows too; else the first the rule decides; else the first."""
        me = subject.rep
        best: tuple[PodEndpoint, PodClass] | None = None
        for end, c in candidates:
            if rule.direction == INGRESS:
                src, dst = end, PodEndpoint(pod=me)
                ports = self._admit_ports(ps, subject, None, INGRESS)
            else:
                src, dst = PodEndpoint(pod=me), end
                ports = self._admit_ports(ps, c, None, EGRESS)
            if not ports or not self._admits(src, dst, ports[0], rule, spec.cilium):
                continue
            pid, traffic = self._judge(src, dst, ports[0])
            if rule.deny or self._verdict(pid, traffic, self.tgt).decision is Decision.ALLOW:
                return end, c
            best = best or (end, c)
        return best or (candidates[0] if candidates else None)

    def _each_number(
        self, spec: PolicySpec, rule: RuleSpec, ps: PortSpec, subject: PodClass, intent: Intent
    ) -> None:
        """D3: a conflicting egress port name, probed towards one peer per number it has."""
        assert isinstance(ps.port, str)
        me = subject.rep
        seen: set[int] = set()
        proto = ps.protocol or Protocol.TCP
        known = {n for n, p in self.engine.named_ports.get(ps.port, ()) if p is proto}
        for peer in rule.peers or (PeerSpec(kind=PeerKind.ALL),):
            for c in self._peer_classes(spec, peer):
                if seen >= known:
                    return
                number = c.number(ps.port, ps.protocol)
                end = self._pod_end(c, me)
                if number is None or number in seen or end is None:
                    continue
                seen.add(number)
                for port in self._admit_ports(ps, c, None, EGRESS):
                    self._add(
                        PodEndpoint(pod=me), end, port, intent, rule=rule, scenarios=spec.tags
                    )

    def _named_port_outside(
        self, rule: RuleSpec, ps: PortSpec, src: Endpoint, dst: Endpoint, tags: Sequence[Scenario]
    ) -> None:
        """D3b: an egress named port towards an outside address (NPM: never; Cilium: the
        cluster-wide number when there is exactly one)."""
        assert isinstance(ps.port, str)
        proto = ps.protocol or Protocol.TCP
        numbers = sorted({n for n, p in self.engine.named_ports.get(ps.port, ()) if p is proto})
        if len(numbers) != 1:
            return
        port = Port(number=numbers[0], name=ps.port, protocol=proto, tags=(Scenario.NAMED_PORT,))
        self._add(src, dst, port, Intent.SCENARIO, rule=rule, scenarios=tags)

    def _reject_peer(
        self,
        spec: PolicySpec,
        rule: RuleSpec | None,
        subject: PodClass,
        port: Port | None,
        tags: Sequence[Scenario],
        direction: str | None = None,
    ) -> None:
        """A peer no rule of the subject admits, on the rule's port (or a served one):
        preferably denied under the reference dataplane with the other side open."""
        direction = direction or (rule.direction if rule else INGRESS)
        if port is not None:
            port = Port(number=port.number, name=None, protocol=port.protocol)
        key = (subject.name, direction, port.number if port else 0, port.protocol if port else "")
        if key in self.reject_cache:
            found = self.reject_cache[key]
            if found is not None:
                self._add(*found, Intent.REJECT, rule=rule, scenarios=tags)
            return
        me = subject.rep
        ref = self.tgt if spec.cilium else self.cur
        opposite = EGRESS if direction == INGRESS else INGRESS
        candidates: list[tuple[Endpoint, PodClass | None]] = []
        for cand in self._other_namespaces_first(subject):
            pe = self._pod_end(cand, me)
            if pe is not None:
                candidates.append((pe, cand))
            if len(candidates) >= REJECT_TRIES - 1:
                break
        candidates.append((ExternalEndpoint(ip=self._outside(direction)), None))
        best: tuple[Endpoint, Endpoint, Port] | None = None
        best_score = 0
        src: Endpoint
        dst: Endpoint
        for end, c in candidates:
            p = port
            if p is None:
                everything = PortSpec(protocol=Protocol.TCP, port=None)
                dst_cls = subject if direction == INGRESS else c
                p = self._admit_ports(everything, dst_cls, None, direction)[0]
            src, dst = (
                (end, PodEndpoint(pod=me)) if direction == INGRESS else (PodEndpoint(pod=me), end)
            )
            pid, traffic = self._judge(src, dst, p)
            v = self._verdict(pid, traffic, ref)
            side = self._side(v, direction)
            if side is not None and side.decision is Decision.DENY:
                score = 2
            elif self._side_denies(src, dst, p, direction):
                score = 1
            else:
                continue
            other = self._side(v, opposite)
            if other is None or other.decision is not Decision.DENY:
                score += 1
            if score > best_score:
                best, best_score = (src, dst, p), score
            if score == 3:
                break
        if best is not None:
            self._add(*best, Intent.REJECT, rule=rule, scenarios=tags)
        self.reject_cache[key] = best

    def _plan_default_deny(self, spec: PolicySpec, subjects: Sequence[PodClass]) -> None:
        """A direction the policy isolates without any rule: everything must be rejected."""
        for direction in (INGRESS, EGRESS):
            if direction not in spec.isolates:
                continue
            if any(r.direction == direction and not r.deny for r in spec.rules):
                continue
            self._reject_peer(spec, None, subjects[0], None, spec.tags, direction=direction)
