"""The planner's state and the helpers every part of it uses.

`PlannerBase` holds what is computed once per plan: the dataplanes, the policies as
RuleSpecs, the equivalence classes, indexes over them, and the drafts (planned probes by
id, merged when two parts of the planner plan the same probe). Its helpers choose peers,
name probes by meaning and memoize the engine's verdicts.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from netparity.engine.compile import EGRESS, INGRESS
from netparity.engine.dataplane import Dataplane, get_dataplane, older_release
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    Decision,
    DirectionResult,
    Endpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Verdict,
)
from netparity.facts.cilium_config import LabelFilter
from netparity.model.networkpolicy import IPBlock
from netparity.model.objects import Node, Pod, Protocol, Service
from netparity.model.selectors import LabelSelector
from netparity.model.snapshot import Snapshot
from netparity.plan.addresses import cluster_ranges
from netparity.plan.classes import (
    Classes,
    PodClass,
    block_members,
    compute_classes,
    rep_ips,
    scope_of_cilium_selector,
)
from netparity.plan.ids import Meaning, meaning
from netparity.plan.model import Intent, Scenario
from netparity.plan.rules import (
    PeerKind,
    PeerSpec,
    PolicySpec,
    RuleSpec,
    admits_outside,
    ip_blocks,
    named_port_uses,
    policy_specs,
    reaches_nodes,
    scoped_selectors,
)

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
_node_ip = functools.lru_cache(maxsize=4096)(ipaddress.ip_address)  # asked per ipBlock peer


@dataclass(slots=True)
class Draft:
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
class Port:
    number: int
    name: str | None
    protocol: Protocol
    tags: tuple[Scenario, ...] = ()


Progress = Callable[[str, int, int], None]  # (what, done, total), as backend.Progress


def _silent(what: str, done: int, total: int) -> None:
    return None


class PlannerBase:
    snapshot: Snapshot  # with the run-owned Services (set by the planner)
    engine: Engine  # over `snapshot`
    synthetic: tuple[Service, ...]

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        current: str,
        target: str,
        external_ip: str = DEFAULT_EXTERNAL_IP,
        responder: str | None = None,
        service_cidr: ipaddress.IPv4Network | None = None,
        progress: Progress | None = None,
    ) -> None:
        self._progress: Progress = progress or _silent
        # The outside client: where the machine running the probes is seen from (its id
        # stays `external:default` whatever the address, so records stay comparable).
        self.external_ip = external_ip
        # Where outside destinations go: the user's responder where there is one (a
        # backend runs outside probes only to an address something answers at).
        self.responder = responder
        self.outside_target = responder or external_ip
        self.dps = _dataplanes(snapshot, current, target)
        self.current = current
        self.target = target
        self.cur = self.dps[current]
        self.tgt = self.dps[target]
        base = Engine(snapshot)
        cilium_view = next((d for d in self.dps.values() if d.cilium_policies), None)
        excluded = cilium_view.label_filter if cilium_view else None
        self.specs = policy_specs(base, excluded)
        self.classes: Classes = compute_classes(
            base,
            scoped_selectors(base, self.specs),
            named_port_uses(self.specs),
            ip_blocks(self.specs),
            list(self.dps.values()),
        )
        self.base_engine = base
        built = len(self.classes.classes)
        self._progress("classes built", built, built)
        self.nodes: tuple[Node, ...] = snapshot.nodes
        self.node_by_name = {n.name: n for n in snapshot.nodes}
        self.hostnet_port = _hostnet_ports(snapshot)
        self.by_ns: dict[str, list[PodClass]] = defaultdict(list)
        for c in self.classes.classes:
            self.by_ns[c.namespace].append(c)
        self.pods_by_ns: dict[str, list[Pod]] = defaultdict(list)
        for p in snapshot.pods:
            if not p.host_network:
                self.pods_by_ns[p.namespace].append(p)
        self.ranges = cluster_ranges(snapshot, service_cidr=service_cidr)
        self.backend_cache: dict[str, list[Pod]] = {}
        self.block_cache: dict[IPBlock, list[PodClass]] = {}
        self.address_cache: dict[tuple[IPBlock, str, bool], str | None] = {}
        self.peer_cache: dict[tuple[bool, str | None, PeerSpec], list[PodClass]] = {}
        self.ns_cache: dict[LabelSelector, list[str]] = {}
        self.label_index: dict[
            LabelFilter | None, dict[tuple[str, str], dict[str, list[PodClass]]]
        ] = {}
        self.rep_ips = rep_ips(self.classes.classes)
        self._index_rules(snapshot)
        self.subjects = {spec.name: self._subjects(spec) for spec in self.specs}
        self.policies_of: dict[str, list[PolicySpec]] = defaultdict(list)
        for spec in self.specs:
            for c in self.subjects[spec.name]:
                self.policies_of[c.name].append(spec)
        self.drafts: dict[str, Draft] = {}
        self.inside: dict[str, set[str]] = defaultdict(set)  # rule -> probe ids
        self.outside: dict[str, set[str]] = defaultdict(set)
        self.uncovered: dict[str, str] = {}
        self.verdicts: dict[tuple[str, str], Verdict] = {}
        self.reject_cache: dict[
            tuple[str, str, int, str], tuple[Endpoint, Endpoint, Port] | None
        ] = {}
        self.seq = 0

    def _index_rules(self, snapshot: Snapshot) -> None:
        """What the rules ask of the plan: the ports inside endPort ranges, the policies
        whose egress can reach a node and whose ingress admits outside clients."""
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
            if r.direction == EGRESS and reaches_nodes(r, node_ips)
        }
        self.outside_capable = {
            spec.name
            for spec in self.specs
            for r in spec.rules
            if r.direction == INGRESS and admits_outside(r)
        }

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
        # the policy's namespace matters only to a peer without a namespace selector
        own_ns = peer.cilium_selector is None and peer.namespace_selector is None
        key = (spec.cilium, spec.namespace if own_ns else None, peer)
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
                podsel = peer.pod_selector
                if peer.namespace_selector is None:
                    pool = self.by_ns.get(spec.namespace or "", [])
                elif podsel is not None and podsel.match_labels:
                    # only the classes that carry the selector's first label can match
                    having = self._label_index(dp).get(podsel.match_labels[0], {})
                    pool = [
                        c
                        for ns in self._namespaces(peer.namespace_selector)
                        for c in having.get(ns, ())
                    ]
                else:
                    pool = [
                        c
                        for ns in self._namespaces(peer.namespace_selector)
                        for c in self.by_ns[ns]
                    ]
                found = [c for c in pool if podsel is None or podsel.matches(eng.labels(c.rep, dp))]
            if found:
                break
        self.peer_cache[key] = found
        return found

    def _label_index(self, dp: Dataplane) -> dict[tuple[str, str], dict[str, list[PodClass]]]:
        """Classes by each label their representative carries under `dp`'s view, by
        namespace, in class order."""
        found = self.label_index.get(dp.label_filter)
        if found is None:
            found = self.label_index[dp.label_filter] = {}
            for c in self.classes.classes:
                for kv in self.base_engine.labels(c.rep, dp).items():
                    found.setdefault(kv, {}).setdefault(c.namespace, []).append(c)
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
        return [n for n in self.nodes if peer.block.contains(_node_ip(n.ip))]

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

    def _other_namespaces_first(self, subject: PodClass) -> Iterator[PodClass]:
        yield from (c for c in self.classes.classes if c.namespace != subject.namespace)
        yield from (c for c in self.classes.classes if c.namespace == subject.namespace)

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
            src,
            dst,
            number,
            name,
            proto,
            class_name=self._class_name,
            backend_node=backend_node,
            default_external=self.external_ip,
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

    def _add(
        self,
        src: Endpoint,
        dst: Endpoint,
        port: Port,
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
            draft = Draft(
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

    def _judge(self, src: Endpoint, dst: Endpoint, port: Port) -> tuple[str, Traffic]:
        m = self._meaning(src, dst, port.number, port.name, port.protocol)
        return m.id, Traffic(source=src, destination=dst, port=port.number, protocol=port.protocol)

    def _side_denies(self, src: Endpoint, dst: Endpoint, port: Port, direction: str) -> bool:
        pid, traffic = self._judge(src, dst, port)
        for dp in (self.cur, self.tgt):
            side = self._side(self._verdict(pid, traffic, dp), direction)
            if side is not None and side.decision is Decision.DENY:
                return True
        return False

    def _admits(
        self, src: Endpoint, dst: Endpoint, port: Port, rule: RuleSpec, cilium: bool
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


def _dataplanes(snapshot: Snapshot, current: str, target: str) -> dict[str, Dataplane]:
    """The current and target dataplanes (and the target's older release), configured by
    the snapshot's cilium-config, by name."""
    names = [current, target]
    older = older_release(target)
    if older is not None:
        names.append(older)
    dps: dict[str, Dataplane] = {}
    for n in names:
        dps.setdefault(n, get_dataplane(n).with_config(snapshot.config))
    return dps


def _hostnet_ports(snapshot: Snapshot) -> dict[str, int]:
    """Per node, the lowest TCP port a hostNetwork pod on it serves (the first such pod)."""
    out: dict[str, int] = {}
    for p in snapshot.pods:
        if p.host_network and p.node_name and p.node_name not in out:
            tcp = sorted(cp.port for cp in p.ports if cp.protocol is Protocol.TCP)
            if tcp:
                out[p.node_name] = tcp[0]
    return out
