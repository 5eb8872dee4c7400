"""The planner: the probes that prove every rule and reveal every migration scenario.

`make_plan(snapshot)` is pure. It groups pods into equivalence classes (classes.py), then
for every rule of every policy plans probes the rule must admit (a matching peer on the
rule's ports: both ends of a range, the destination's number for a named port, a
declared port for "all ports") and probes just outside it (a peer no rule of the subject
admits, the ports below and above a range, another protocol), kept only where the
subject's side would deny them. Scenario probes reveal the SEMANTICS rows: egress to the
own and another node (D4), ipBlocks over pods and nodes (D2), conflicting named ports
(D3), endPort (D1), external NodePort/LoadBalancer ingress with the receiving node on and
off the backend's node (D5), in-cluster clients of those Services (D5d), SCTP (D8),
excluded identity labels (D6) and policies NPM cannot translate (D11). Pods whose ingress
is restricted but that no NodePort/LoadBalancer Service exposes get a run-owned Service
(`Plan.synthetic_services`).

Coverage counts a Cilium deny rule's probes (traffic it must reject) as both its admit
("exercised") and its reject probes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from netparity.engine.compile import EGRESS, INGRESS
from netparity.engine.dataplane import Dataplane, get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    Decision,
    DirectionResult,
    Endpoint,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Verdict,
    Via,
)
from netparity.model.networkpolicy import IPBlock
from netparity.model.objects import (
    Node,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    frozen_labels,
)
from netparity.model.selectors import LabelSelector
from netparity.model.snapshot import Snapshot
from netparity.plan.addresses import cluster_ranges, excepted_address, outside_address
from netparity.plan.classes import (
    Classes,
    PodClass,
    block_members,
    compute_classes,
    scope_of_cilium_selector,
)
from netparity.plan.ids import Meaning, digest, meaning, plan_digest
from netparity.plan.model import (
    Coverage,
    Intent,
    Plan,
    PlannedProbe,
    Prediction,
    Scenario,
)
from netparity.plan.rules import (
    PeerKind,
    PeerSpec,
    PolicySpec,
    PortSpec,
    RuleSpec,
    exclusion_pattern,
    ip_blocks,
    named_port_uses,
    policy_specs,
    scoped_selectors,
)
from netparity.probefile import ProbeSpec, ResolvedProbe, resolve_probes

# Bump when what an id means changes: records of another version are refused (record.py).
PLAN_VERSION = "1"
KUBELET_PORT = 10250
EXTERNAL_PORT = 443  # "all ports" towards an outside address
FALLBACK_PORT = {Protocol.TCP: 80, Protocol.UDP: 53, Protocol.SCTP: 9999}
OTHER_PROTOCOL = {
    Protocol.TCP: Protocol.UDP,
    Protocol.UDP: Protocol.TCP,
    Protocol.SCTP: Protocol.TCP,
}
CANDIDATES = 4  # matching peers tried before settling for the first
REJECT_TRIES = 6  # peers tried when looking for one no rule admits
NODE_PORT_RANGE = (30000, 32767)
SYNTHETIC_PREFIX = "netparity-"

_INTENT_ORDER = {Intent.EXPLICIT: 0, Intent.ADMIT: 1, Intent.REJECT: 2, Intent.SCENARIO: 3}
_SCENARIO_ORDER = {s: i for i, s in enumerate(Scenario)}


@dataclass(slots=True)
class _Draft:
    meaning: Meaning
    traffic: Traffic
    intent: Intent
    rule: str | None
    rule_order: tuple[int, int, int] | None
    title: str
    stands_for: tuple[str, ...]
    source_class: str | None
    destination_class: str | None
    expect: Mapping[str, Decision] | None = None
    rules: list[str] = field(default_factory=list)
    scenarios: list[Scenario] = field(default_factory=list)
    seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Port:
    number: int
    name: str | None
    protocol: Protocol
    tags: tuple[Scenario, ...] = ()


def _reaches_nodes(
    rule: RuleSpec, node_ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]
) -> bool:
    """Whether some dataplane could let this rule match a node (D4)."""
    if rule.selects_nothing:
        return False
    if not rule.peers:
        return True
    for peer in rule.peers:
        if peer.kind in (PeerKind.ALL, PeerKind.HOST, PeerKind.REMOTE_NODE, PeerKind.CLUSTER):
            return True
        if peer.block is not None and any(peer.block.contains(ip) for ip in node_ips):
            return True
    return False


def _v4(ip: str) -> int | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    return int(addr) if addr.version == 4 else None


def _admits_outside(rule: RuleSpec) -> bool:
    """Whether some dataplane could let this rule match a non-pod source (D5)."""
    if rule.selects_nothing:
        return False
    return not rule.peers or any(p.kind is not PeerKind.PODS for p in rule.peers)


def make_plan(
    snapshot: Snapshot,
    *,
    current: str = "npm",
    target: str = "cilium",
    explicit: Iterable[ProbeSpec | ResolvedProbe] = (),
) -> Plan:
    """Plan the probes for `snapshot` moving from `current` to `target` (deterministic)."""
    return _Planner(snapshot, current=current, target=target).plan(tuple(explicit))


class _Planner:
    def __init__(self, snapshot: Snapshot, *, current: str, target: str) -> None:
        names = [current, target]
        if target == "cilium":
            names.append("cilium-1.16")
        self.dps: dict[str, Dataplane] = {}
        for n in names:
            self.dps.setdefault(n, get_dataplane(n).with_config(snapshot.config))
        self.current = current
        self.target = target
        self.cur = self.dps[current]
        self.tgt = self.dps[target]
        base = Engine(snapshot)
        cilium_view = next((d for d in self.dps.values() if d.cilium_policies), None)
        excluded = exclusion_pattern(cilium_view.label_exclusions) if cilium_view else None
        self.specs = policy_specs(base, excluded)
        self.classes: Classes = compute_classes(
            base,
            scoped_selectors(base, self.specs),
            named_port_uses(self.specs),
            ip_blocks(self.specs),
            list(self.dps.values()),
        )
        self.base_engine = base
        self.nodes: tuple[Node, ...] = snapshot.nodes
        self.node_by_name = {n.name: n for n in snapshot.nodes}
        self.hostnet_port: dict[str, int] = {}
        for p in snapshot.pods:
            if p.host_network and p.node_name and p.node_name not in self.hostnet_port:
                tcp = sorted(cp.port for cp in p.ports if cp.protocol is Protocol.TCP)
                if tcp:
                    self.hostnet_port[p.node_name] = tcp[0]
        self.by_ns: dict[str, list[PodClass]] = defaultdict(list)
        for c in self.classes.classes:
            self.by_ns[c.namespace].append(c)
        self.pods_by_ns: dict[str, list[Pod]] = defaultdict(list)
        for p in snapshot.pods:
            if not p.host_network:
                self.pods_by_ns[p.namespace].append(p)
        self.ranges = cluster_ranges(snapshot)
        self.backend_cache: dict[str, list[Pod]] = {}
        self.block_cache: dict[IPBlock, list[PodClass]] = {}
        self.peer_cache: dict[tuple[bool, str | None, PeerSpec], list[PodClass]] = {}
        self.ns_cache: dict[LabelSelector, list[str]] = {}
        with_ip = sorted(
            (ip, i)
            for i, c in enumerate(self.classes.classes)
            if c.rep.ip and (ip := _v4(c.rep.ip)) is not None
        )
        self.rep_ips = ([ip for ip, _ in with_ip], [i for _, i in with_ip])
        self.range_ports: dict[Protocol | None, set[int]] = defaultdict(set)
        for spec in self.specs:
            for r in spec.rules:
                for ps in r.ports:
                    if ps.is_range and isinstance(ps.port, int) and ps.end_port is not None:
                        self.range_ports[ps.protocol].update(range(ps.port + 1, ps.end_port + 1))
        node_ips = [ipaddress.ip_address(n.ip) for n in snapshot.nodes]
        self.node_capable = {
            spec.name
            for spec in self.specs
            for r in spec.rules
            if r.direction == EGRESS and _reaches_nodes(r, node_ips)
        }
        self.outside_capable = {
            spec.name
            for spec in self.specs
            for r in spec.rules
            if r.direction == INGRESS and _admits_outside(r)
        }
        self.subjects = {spec.name: self._subjects(spec) for spec in self.specs}
        self.policies_of: dict[str, list[PolicySpec]] = defaultdict(list)
        for spec in self.specs:
            for c in self.subjects[spec.name]:
                self.policies_of[c.name].append(spec)
        self.synthetic = self._synthetic_services(snapshot)
        self.snapshot = dataclasses.replace(
            snapshot, services=(*snapshot.services, *self.synthetic)
        )
        self.engine = Engine(self.snapshot)
        self.twins = {name: self._find_twin(dp) for name, dp in self.dps.items()}
        self.drafts: dict[str, _Draft] = {}
        self.inside: dict[str, set[str]] = defaultdict(set)  # rule -> probe ids
        self.outside: dict[str, set[str]] = defaultdict(set)
        self.uncovered: dict[str, str] = {}
        self.verdicts: dict[tuple[str, str], Verdict] = {}
        self.reject_cache: dict[
            tuple[str, str, int, str], tuple[Endpoint, Endpoint, _Port] | None
        ] = {}
        self.seq = 0

    # ------------------------------------------------------------------ helpers

    def _isolated(self, cls: PodClass, direction: str, dp: Dataplane) -> bool:
        selected = self.base_engine.selecting(cls.rep, direction, dp)
        return bool(selected[0] or selected[1])

    def _restricted(self, cls: PodClass, direction: str) -> bool:
        return self._isolated(cls, direction, self.cur) or self._isolated(cls, direction, self.tgt)

    def _view(self, spec_is_cilium: bool) -> list[Dataplane]:
        """The dataplanes whose label view chooses subjects and peers, preferred first."""
        if spec_is_cilium:
            return [d for d in (self.tgt, *self.dps.values()) if d.cilium_policies][:1]
        return [self.cur, self.tgt]

    def _subjects(self, spec: PolicySpec) -> list[PodClass]:
        sel = spec.subject
        if sel is None:
            return []
        pool = self.by_ns.get(spec.namespace, []) if spec.namespace else self.classes.classes
        for dp in self._view(spec.cilium):
            if spec.cilium:
                found = [c for c in pool if sel.matches(self.base_engine.cilium_labels(c.rep, dp))]
            else:
                found = [c for c in pool if sel.matches(self.base_engine.labels(c.rep, dp))]
            if found:
                return found
        return []

    def _peer_classes(self, spec: PolicySpec, peer: PeerSpec) -> Sequence[PodClass]:
        """Classes a selector peer matches, in class order (under the first view that
        matches any)."""
        if peer.kind in (PeerKind.ALL, PeerKind.CLUSTER):
            return self.classes.classes
        if peer.kind is not PeerKind.PODS:
            return ()
        key = (spec.cilium, spec.namespace, peer)
        found = self.peer_cache.get(key)
        if found is not None:
            return found
        eng = self.base_engine
        found = []
        for dp in self._view(spec.cilium):
            if peer.cilium_selector is not None:
                sel = peer.cilium_selector
                scope = scope_of_cilium_selector(sel)
                pool: Sequence[PodClass] = (
                    self.classes.classes
                    if scope is None
                    else [c for ns in sorted(scope) for c in self.by_ns.get(ns, [])]
                )
                found = [c for c in pool if sel.matches(eng.cilium_labels(c.rep, dp))]
            else:
                if peer.namespace_selector is None:
                    pool = self.by_ns.get(spec.namespace or "", [])
                else:
                    pool = [
                        c
                        for ns in self._namespaces(peer.namespace_selector)
                        for c in self.by_ns[ns]
                    ]
                podsel = peer.pod_selector
                found = [c for c in pool if podsel is None or podsel.matches(eng.labels(c.rep, dp))]
            if found:
                break
        self.peer_cache[key] = found
        return found

    def _namespaces(self, selector: LabelSelector) -> list[str]:
        found = self.ns_cache.get(selector)
        if found is None:
            eng = self.base_engine
            found = self.ns_cache[selector] = [
                ns for ns in sorted(self.by_ns) if selector.matches(eng.namespace_labels(ns))
            ]
        return found

    def _classes_in_block(self, peer: PeerSpec) -> list[PodClass]:
        """Classes whose pods the block holds (memberships are part of the class key)."""
        block = peer.block
        assert block is not None
        found = self.block_cache.get(block)
        if found is None:
            reps = self.rep_ips
            inside = set(block_members(block, reps[0], reps[1]))
            found = self.block_cache[block] = [
                c for i, c in enumerate(self.classes.classes) if i in inside
            ]
        return found

    def _nodes_in_block(self, peer: PeerSpec) -> list[Node]:
        assert peer.block is not None
        return [n for n in self.nodes if peer.block.contains(ipaddress.ip_address(n.ip))]

    def _other_node(self, name: str | None, pool: Sequence[Node] | None = None) -> Node | None:
        for n in pool if pool is not None else self.nodes:
            if n.name != name:
                return n
        return None

    def _node_port(self, node: Node) -> int:
        return self.hostnet_port.get(node.name, KUBELET_PORT)

    def _pod_end(self, cls: PodClass, other: Pod | None) -> PodEndpoint | None:
        """The class's representative, or another member when `other` is that pod; never
        a pod that is not scheduled (no node to probe it on)."""
        for p in cls.pods:
            if p.node_name and (other is None or p.key != other.key):
                return PodEndpoint(pod=p)
        return None

    def _class_name(self, key: str) -> str | None:
        c = self.classes.of.get(key)
        return c.name if c is not None else None

    def _backends(self, svc: Service) -> list[Pod]:
        found = self.backend_cache.get(svc.key)
        if found is None:
            found = self.backend_cache[svc.key] = sorted(
                (p for p in self.pods_by_ns.get(svc.namespace, []) if svc.selects(p)),
                key=lambda p: p.key,
            )
        return found

    def _meaning(
        self, src: Endpoint, dst: Endpoint, number: int | str, name: str | None, proto: Protocol
    ) -> Meaning:
        backend_node = None
        if isinstance(dst, ServiceEndpoint):
            b = dst.backend
            if b is None:
                pods = self._backends(dst.service)
                b = pods[0] if pods else None
            backend_node = b.node_name if b is not None else None
        return meaning(
            src, dst, number, name, proto, class_name=self._class_name, backend_node=backend_node
        )

    def _verdict(self, pid: str, traffic: Traffic, dp: Dataplane) -> Verdict:
        key = (pid, dp.name)
        v = self.verdicts.get(key)
        if v is None:
            v = self.verdicts[key] = self.engine.evaluate(traffic, dp)
        return v

    @staticmethod
    def _side(v: Verdict, direction: str) -> DirectionResult | None:
        return v.ingress if direction == INGRESS else v.egress

    # ------------------------------------------------------------------ drafts

    def _add(
        self,
        src: Endpoint,
        dst: Endpoint,
        port: _Port,
        intent: Intent,
        *,
        rule: RuleSpec | None = None,
        scenarios: Sequence[Scenario] = (),
        title: str | None = None,
        expect: Mapping[str, Decision] | None = None,
        mean: Meaning | None = None,
    ) -> str:
        m = mean or self._meaning(src, dst, port.number, port.name, port.protocol)
        pid = m.id
        tags = [*port.tags, *scenarios]
        draft = self.drafts.get(pid)
        if draft is None:
            src_cls = self.classes.of.get(src.pod.key) if isinstance(src, PodEndpoint) else None
            dst_cls = self.classes.of.get(dst.pod.key) if isinstance(dst, PodEndpoint) else None
            self.seq += 1
            draft = _Draft(
                meaning=m,
                traffic=Traffic(
                    source=src, destination=dst, port=port.number, protocol=port.protocol
                ),
                intent=intent,
                rule=rule.ref if rule else None,
                rule_order=rule.order if rule else None,
                title=title or m.title,
                stands_for=src_cls.keys if src_cls else (),
                source_class=src_cls.name if src_cls else None,
                destination_class=dst_cls.name if dst_cls else None,
                expect=expect,
                seq=self.seq,
            )
            self.drafts[pid] = draft
        if rule is not None and rule.ref not in draft.rules:
            draft.rules.append(rule.ref)
        for t in tags:
            if t not in draft.scenarios:
                draft.scenarios.append(t)
        if rule is not None:
            if intent is Intent.ADMIT or rule.deny:
                self.inside[rule.ref].add(pid)
            if intent is Intent.REJECT:
                self.outside[rule.ref].add(pid)
        return pid

    def _judge(self, src: Endpoint, dst: Endpoint, port: _Port) -> tuple[str, Traffic]:
        m = self._meaning(src, dst, port.number, port.name, port.protocol)
        return m.id, Traffic(source=src, destination=dst, port=port.number, protocol=port.protocol)

    def _side_denies(self, src: Endpoint, dst: Endpoint, port: _Port, direction: str) -> bool:
        pid, traffic = self._judge(src, dst, port)
        for dp in (self.cur, self.tgt):
            side = self._side(self._verdict(pid, traffic, dp), direction)
            if side is not None and side.decision is Decision.DENY:
                return True
        return False

    def _admits(
        self, src: Endpoint, dst: Endpoint, port: _Port, rule: RuleSpec, cilium: bool
    ) -> bool:
        pid, traffic = self._judge(src, dst, port)
        dp = self.tgt if cilium else self.cur
        v = self._verdict(pid, traffic, dp)
        side = self._side(v, rule.direction)
        if side is None:
            return False
        if rule.deny:
            return v.decision is Decision.DENY and rule.ref in (str(r) for r in side.rules)
        return v.decision is Decision.ALLOW and rule.ref in (str(r) for r in side.rules)

    # ------------------------------------------------------------------ ports

    def _admit_ports(
        self, ps: PortSpec, dst: PodClass | None, node: Node | None, direction: str
    ) -> list[_Port]:
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
            return [_Port(number=number, name=None, protocol=proto, tags=tuple(tags))]
        if isinstance(ps.port, str):
            if dst is None:
                return []
            found = dst.number(ps.port, ps.protocol)
            if found is None:
                return []
            if direction == EGRESS and self._name_conflicts(ps.port, proto):
                tags.append(Scenario.NAMED_PORT)
            return [_Port(number=found, name=ps.port, protocol=proto, tags=tuple(tags))]
        if ps.is_range:
            assert ps.end_port is not None
            tags.append(Scenario.ENDPORT)
            numbers = [ps.port, ps.end_port]
            if dst is not None:
                inner = sorted(n for n, p in dst.ports if p is proto and ps.port < n < ps.end_port)
                numbers[1:1] = inner[:1]
            return [_Port(number=n, name=None, protocol=proto, tags=tuple(tags)) for n in numbers]
        return [_Port(number=ps.port, name=None, protocol=proto, tags=tuple(tags))]

    def _reject_ports(self, ps: PortSpec, admitted: _Port) -> list[_Port]:
        out: list[_Port] = []
        if ps.is_range:
            assert isinstance(ps.port, int) and ps.end_port is not None
            for n in (ps.port - 1, ps.end_port + 1):
                if 1 <= n <= 65535:
                    out.append(
                        _Port(
                            number=n,
                            name=None,
                            protocol=admitted.protocol,
                            tags=(Scenario.ENDPORT,),
                        )
                    )
        if ps.protocol is not None:
            out.append(
                _Port(
                    number=admitted.number,
                    name=None,
                    protocol=OTHER_PROTOCOL[admitted.protocol],
                )
            )
        return out

    def _name_conflicts(self, name: str, proto: Protocol) -> bool:
        numbers = {n for n, p in self.engine.named_ports.get(name, ()) if p is proto}
        return len(numbers) > 1

    # ------------------------------------------------------------------ rules

    def _plan_rules(self) -> None:
        for spec in self.specs:
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
                    if rule.ref not in self.inside:
                        self.uncovered[rule.ref] = "no peer the rule matches can be probed"
            if subjects:
                self._plan_default_deny(spec, subjects)

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
            first: tuple[Endpoint, Endpoint, _Port, PodClass | None] | None = None
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
                    addr = excepted_address(peer.block, self.ranges)
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

    def _subject_port(self, ps: PortSpec, subject: PodClass, rule: RuleSpec) -> _Port | None:
        if rule.direction == INGRESS:
            ports = self._admit_ports(ps, subject, None, INGRESS)
            return ports[0] if ports else None
        if isinstance(ps.port, int):
            return _Port(number=ps.port, name=None, protocol=ps.protocol or Protocol.TCP)
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
                yield ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP), (), None, None
            return
        if peer.kind is PeerKind.WORLD:
            yield ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP), (), None, None
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
        addr = outside_address(peer.block, self.ranges)
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

    def _other_namespaces_first(self, subject: PodClass) -> Iterator[PodClass]:
        yield from (c for c in self.classes.classes if c.namespace != subject.namespace)
        yield from (c for c in self.classes.classes if c.namespace == subject.namespace)

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
        port = _Port(number=numbers[0], name=ps.port, protocol=proto, tags=(Scenario.NAMED_PORT,))
        self._add(src, dst, port, Intent.SCENARIO, rule=rule, scenarios=tags)

    def _reject_peer(
        self,
        spec: PolicySpec,
        rule: RuleSpec | None,
        subject: PodClass,
        port: _Port | None,
        tags: Sequence[Scenario],
        direction: str | None = None,
    ) -> None:
        """A peer no rule of the subject admits, on the rule's port (or a served one):
        preferably denied under the reference dataplane with the other side open."""
        direction = direction or (rule.direction if rule else INGRESS)
        if port is not None:
            port = _Port(number=port.number, name=None, protocol=port.protocol)
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
        candidates.append((ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP), None))
        best: tuple[Endpoint, Endpoint, _Port] | None = None
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

    # ------------------------------------------------------------------ scenarios

    def _selecting(self, cls: PodClass, direction: str, dp: Dataplane) -> tuple[str, ...]:
        selected = self.base_engine.selecting(cls.rep, direction, dp)
        return tuple(t.name for t in selected[0]) + tuple(c.name for c in selected[1])

    def _behaviour(
        self, cls: PodClass, direction: str, capable: set[str]
    ) -> tuple[object, ...] | None:
        """How a class's `direction` treats non-pod peers, under the current and the target
        dataplane: isolated or not, and which policies could match such peers. None: open."""
        out: list[object] = []
        restricted = False
        for dp in (self.cur, self.tgt):
            names = self._selecting(cls, direction, dp)
            restricted = restricted or bool(names)
            out.append((bool(names), tuple(sorted(n for n in names if n in capable))))
        return tuple(out) if restricted else None

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
                port = _Port(number=self._node_port(node), name=None, protocol=Protocol.TCP)
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
            sig = (*behaviour, number, proto)
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
                )
            )
        return tuple(out)

    def _client_addresses(self, cls: PodClass) -> list[str]:
        """The default outside client, then one address per client ipBlock of its ingress."""
        out = [DEFAULT_EXTERNAL_IP]
        for spec in self.policies_of.get(cls.name, []):
            for rule in spec.rules:
                if rule.direction != INGRESS or rule.deny:
                    continue
                for peer in rule.peers:
                    if peer.block is None:
                        continue
                    addr = outside_address(peer.block, self.ranges)
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
                port = _Port(number=sp.port, name=None, protocol=sp.protocol)
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

    def _in_cluster_client(
        self,
        svc: Service,
        via: Via,
        backends: Sequence[Pod],
        bcls: PodClass,
        port: _Port,
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
    def _backend_port(svc: Service, port: _Port, backend: Pod) -> _Port | None:
        sp = svc.port_named(port.number)
        if sp is None:
            return None
        if isinstance(sp.target_port, str):
            cp = backend.named_port(sp.target_port, sp.protocol)
            return None if cp is None else _Port(number=cp.port, name=None, protocol=sp.protocol)
        return _Port(number=sp.target_port, name=None, protocol=sp.protocol)

    # ------------------------------------------------------------------ explicit

    def _plan_explicit(self, explicit: Sequence[ProbeSpec | ResolvedProbe]) -> None:
        specs = [e for e in explicit if isinstance(e, ProbeSpec)]
        resolved = {id(r.spec): r for r in resolve_probes(specs, self.snapshot)}
        for item in explicit:
            rp = item if isinstance(item, ResolvedProbe) else resolved[id(item)]
            t = rp.traffic
            number: int | str = t.port
            name: str | None = None
            if isinstance(t.port, str) and isinstance(t.destination, PodEndpoint):
                cp = t.destination.pod.named_port(t.port, t.protocol)
                if cp is not None:
                    number, name = cp.port, t.port
            m = self._meaning(t.source, t.destination, number, name, t.protocol)
            if isinstance(number, str):
                # a Service port name: keep the name for the engine
                pid = m.id
                if pid not in self.drafts:
                    self.seq += 1
                    src_cls = (
                        self.classes.of.get(t.source.pod.key)
                        if isinstance(t.source, PodEndpoint)
                        else None
                    )
                    self.drafts[pid] = _Draft(
                        meaning=m,
                        traffic=t,
                        intent=Intent.EXPLICIT,
                        rule=None,
                        rule_order=None,
                        title=rp.spec.name or m.title,
                        stands_for=src_cls.keys if src_cls else (),
                        source_class=src_cls.name if src_cls else None,
                        destination_class=None,
                        expect=rp.spec.expect,
                        seq=self.seq,
                    )
                continue
            self._add(
                t.source,
                t.destination,
                _Port(number=number, name=name, protocol=t.protocol),
                Intent.EXPLICIT,
                title=rp.spec.name,
                expect=rp.spec.expect,
                mean=m,
            )

    # ------------------------------------------------------------------ presence

    def _present(self) -> list[Scenario]:
        present: set[Scenario] = set()
        with_ip = sorted(
            (ip, i)
            for i, p in enumerate(self.snapshot.pods)
            if p.ip and not p.host_network and (ip := _v4(p.ip)) is not None
        )
        ips = [ip for ip, _ in with_ip]
        order = [i for _, i in with_ip]
        node_ips = [ipaddress.ip_address(n.ip) for n in self.nodes]
        covers_pods: dict[IPBlock, bool] = {}
        for spec in self.specs:
            present.update(spec.tags)
            for rule in spec.rules:
                for ps in rule.ports:
                    if ps.is_range:
                        present.add(Scenario.ENDPORT)
                    if ps.protocol is Protocol.SCTP:
                        present.add(Scenario.SCTP)
                    if (
                        rule.direction == EGRESS
                        and isinstance(ps.port, str)
                        and self._name_conflicts(ps.port, ps.protocol or Protocol.TCP)
                    ):
                        present.add(Scenario.NAMED_PORT)
                if spec.cilium:
                    continue
                for peer in rule.peers:
                    if peer.block is None:
                        continue
                    if peer.block not in covers_pods:
                        covers_pods[peer.block] = bool(block_members(peer.block, ips, order))
                    if covers_pods[peer.block]:
                        present.add(Scenario.IPBLOCK_PODS)
                    if any(peer.block.contains(ip) for ip in node_ips):
                        present.add(Scenario.IPBLOCK_NODES)
        for c in self.classes.classes:
            if Scenario.NODE_EGRESS not in present and self._restricted(c, EGRESS):
                present.add(Scenario.NODE_EGRESS)
        for svc in self.snapshot.services:
            if svc.type not in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER):
                continue
            backends = self._backends(svc)
            bcls = self.classes.of.get(backends[0].key) if backends else None
            if bcls is not None and self._restricted(bcls, INGRESS):
                present.add(Scenario.EXTERNAL_INGRESS)
                if svc.external_traffic_policy != "Local":
                    present.add(Scenario.LB_IN_CLUSTER)
        return [s for s in Scenario if s in present]

    # ------------------------------------------------------------------ the plan

    def plan(self, explicit: Sequence[ProbeSpec | ResolvedProbe]) -> Plan:
        self._plan_explicit(explicit)
        self._plan_rules()
        self._plan_node_egress()
        self._plan_services()
        drafts = sorted(self.drafts.values(), key=self._order)
        probes = tuple(self._probe(d) for d in drafts)
        ids = {p.id for p in probes}
        all_rules = [r.ref for spec in self.specs for r in spec.rules]
        with_admit = [r for r in all_rules if self.inside.get(r, set()) & ids]
        with_reject = [
            r
            for r in all_rules
            if (
                self.outside.get(r, set())
                | (self.inside.get(r, set()) if self._is_deny(r) else set())
            )
            & ids
        ]
        present = self._present()
        probed = {s for p in probes for s in p.scenarios}
        coverage = Coverage(
            rules_total=len(all_rules),
            rules_with_admit=len(with_admit),
            rules_with_reject=len(with_reject),
            scenarios_present=tuple(str(s) for s in present),
            scenarios_probed=tuple(str(s) for s in Scenario if s in probed),
            uncovered=tuple(
                f"{r}: {self.uncovered.get(r, 'no admit probe')}"
                for r in all_rules
                if r not in set(with_admit)
            ),
        )
        return Plan(
            probes=probes,
            coverage=coverage,
            digest=plan_digest(p.id for p in probes),
            current=self.current,
            target=self.target,
            classes={c.name: c.keys for c in self.classes.classes},
            synthetic_services=self.synthetic,
        )

    def _is_deny(self, ref: str) -> bool:
        return "ingressDeny[" in ref or "egressDeny[" in ref

    @staticmethod
    def _order(d: _Draft) -> tuple[object, ...]:
        if d.intent is Intent.EXPLICIT:
            return (0, (d.seq, 0, 0), 0, 0, "", "")
        if d.rule_order is not None:
            return (1, d.rule_order, _INTENT_ORDER[d.intent], 0, d.title, d.meaning.id)
        first = _SCENARIO_ORDER[d.scenarios[0]] if d.scenarios else len(_SCENARIO_ORDER)
        return (2, (0, 0, 0), _INTENT_ORDER[d.intent], first, d.title, d.meaning.id)

    def _find_twin(self, dp: Dataplane) -> Dataplane | None:
        """A dataplane listed before `dp` that differs from it only in endPort handling."""
        for other in self.dps.values():
            if other is dp:
                return None
            same = dataclasses.replace(
                dp,
                name=other.name,
                description=other.description,
                end_port=other.end_port,
                end_port_uncertain=other.end_port_uncertain,
            )
            if same == other:
                return other
        return None

    def _in_a_range(self, v: Verdict, protocol: Protocol) -> bool:
        """Whether the destination port lies in (port, endPort] of some rule (D1 matters)."""
        if v.port is None:
            return True
        return v.port in self.range_ports.get(protocol, ()) or v.port in self.range_ports.get(
            None, ()
        )

    def _probe(self, d: _Draft) -> PlannedProbe:
        predicted: dict[str, Prediction] = {}
        for name, dp in self.dps.items():
            twin = self.twins[name]
            if twin is not None and (d.meaning.id, dp.name) not in self.verdicts:
                tv = self._verdict(d.meaning.id, d.traffic, twin)
                if not self._in_a_range(tv, d.traffic.protocol):
                    self.verdicts[(d.meaning.id, dp.name)] = tv  # endPort cannot matter here
            v = self._verdict(d.meaning.id, d.traffic, dp)
            rules = tuple(
                str(r) for side in (v.egress, v.ingress) if side is not None for r in side.rules
            )
            predicted[name] = Prediction(
                decision=v.decision,
                explanation=v.explanation,
                rules=rules,
                uncertain=v.uncertain,
            )
        return PlannedProbe(
            id=d.meaning.id,
            title=d.title,
            kind=d.meaning.kind,
            traffic=d.traffic,
            intent=d.intent,
            rule=d.rule or (d.rules[0] if d.rules else None),
            scenario=d.scenarios[0] if d.scenarios else None,
            stands_for=d.stands_for,
            predicted=predicted,
            rules=tuple(d.rules),
            scenarios=tuple(d.scenarios),
            source_class=d.source_class,
            destination_class=d.destination_class,
            expect=d.expect,
        )
