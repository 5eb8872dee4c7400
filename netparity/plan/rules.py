"""Policies as the planner sees them: one shape for NetworkPolicy and Cilium rules.

Each rule becomes a RuleSpec (subject selector, peers, ports, direction, reference), and
each policy a PolicySpec that knows which directions it isolates and which SEMANTICS rows
its own text already touches (D6 excluded label keys, D11 untranslatable).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol as _Protocol
from typing import TypeVar

from netparity.engine.compile import EGRESS, INGRESS, CiliumTarget, NPTarget
from netparity.engine.evaluate import Engine
from netparity.facts.cilium_config import LabelFilter
from netparity.model.ciliumpolicy import CiliumPolicy, CiliumProtocol, CiliumRule, Entity
from netparity.model.networkpolicy import IPBlock, NetworkPolicy, PolicyPort
from netparity.model.objects import Protocol
from netparity.model.selectors import LabelSelector, Operator
from netparity.plan.classes import NamedPortUse, ScopedSelector, scope_of_cilium_selector
from netparity.plan.model import Scenario


class _HasName(_Protocol):
    @property
    def name(self) -> str: ...


_Named = TypeVar("_Named", bound=_HasName)


class PeerKind(StrEnum):
    PODS = "pods"  # NetworkPolicy pod/namespace selectors, or a Cilium endpoint selector
    BLOCK = "block"  # ipBlock / toCIDR(Set)
    ALL = "all"  # from/to omitted: every peer
    HOST = "host"  # Cilium entity host: the subject's own node
    REMOTE_NODE = "remote-node"  # Cilium entity remote-node
    WORLD = "world"  # Cilium entities world / all: outside the cluster
    CLUSTER = "cluster"  # Cilium entity cluster: every pod


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSpec:
    kind: PeerKind
    namespace_selector: LabelSelector | None = None  # NetworkPolicy: None = the policy's namespace
    pod_selector: LabelSelector | None = None  # NetworkPolicy: None = every pod of the namespaces
    cilium_selector: LabelSelector | None = None  # Cilium: matched against identity labels
    block: IPBlock | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PortSpec:
    protocol: Protocol | None  # None: any protocol (Cilium ANY)
    port: int | str | None  # None: every port; str: a named port
    end_port: int | None = None

    @property
    def is_range(self) -> bool:
        return (
            isinstance(self.port, int) and self.end_port is not None and self.end_port > self.port
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSpec:
    ref: str  # "NetworkPolicy ns/name ingress[0]"
    order: tuple[int, int, int]  # (policy, direction, index): the order rules are planned in
    direction: str  # "ingress" or "egress"
    deny: bool  # a Cilium deny rule: traffic it matches must be rejected
    peers: tuple[PeerSpec, ...]  # empty: every peer
    ports: tuple[PortSpec, ...]  # empty: every port
    selects_nothing: bool = False  # a Cilium rule `{}`: only turns default deny on


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySpec:
    name: str  # "NetworkPolicy ns/name"
    namespace: str | None  # None: clusterwide
    cilium: bool
    subject: LabelSelector | None  # None: a Cilium host policy (not planned)
    isolates: frozenset[str]
    rules: tuple[RuleSpec, ...]
    tags: tuple[Scenario, ...] = ()  # rows the policy's text touches (D6, D11)


def _np_port(pp: PolicyPort) -> PortSpec:
    return PortSpec(protocol=pp.protocol, port=pp.port, end_port=pp.end_port)


def _cilium_port(protocol: CiliumProtocol, port: int | str | None, end: int | None) -> PortSpec:
    proto = None if protocol is CiliumProtocol.ANY else Protocol(protocol.value)
    return PortSpec(protocol=proto, port=port, end_port=end)


def _by_name(targets: Sequence[_Named]) -> dict[str, _Named]:
    """Compiled policies by name, the first of a name winning (as a search in order)."""
    out: dict[str, _Named] = {}
    for t in targets:
        out.setdefault(t.name, t)
    return out


def network_policy_spec(
    policy: NetworkPolicy,
    order: int,
    engine: Engine,
    excluded: LabelFilter | None,
    targets: Mapping[str, NPTarget] | None = None,
) -> PolicySpec:
    name = f"NetworkPolicy {policy.key}"
    rules: list[RuleSpec] = []
    uses_excluded = False
    selectors = [policy.pod_selector]
    for d_index, (direction, raw) in enumerate(
        ((INGRESS, policy.ingress), (EGRESS, policy.egress))
    ):
        for r in raw:
            peers = []
            for p in r.peers:
                if p.ip_block is not None:
                    peers.append(PeerSpec(kind=PeerKind.BLOCK, block=p.ip_block))
                else:
                    peers.append(
                        PeerSpec(
                            kind=PeerKind.PODS,
                            namespace_selector=p.namespace_selector,
                            pod_selector=p.pod_selector,
                        )
                    )
                    if p.pod_selector is not None:
                        selectors.append(p.pod_selector)
            rules.append(
                RuleSpec(
                    ref=f"{name} {direction}[{r.index}]",
                    order=(order, d_index, r.index),
                    direction=direction,
                    deny=False,
                    peers=tuple(peers),
                    ports=tuple(_np_port(pp) for pp in r.ports),
                )
            )
    if excluded is not None:
        uses_excluded = any(excluded.excludes(k) for s in selectors for k in s.keys())  # noqa: SIM118
    tags: list[Scenario] = []
    if uses_excluded:
        tags.append(Scenario.IDENTITY_LABELS)
    if targets is None:
        targets = _by_name(engine.np_targets)
    target = targets.get(name)
    if target is not None and target.untranslatable:
        tags.append(Scenario.UNTRANSLATABLE)
    if any(
        req.operator is Operator.NOT_IN and len(req.values) > 1
        for r in (*policy.ingress, *policy.egress)
        for p in r.peers
        if p.namespace_selector is not None
        for req in p.namespace_selector.match_expressions
    ):
        # D19: NPM ORs the values of a multi-value NotIn (In keeps its meaning)
        tags.append(Scenario.NS_SELECTOR_OR)
    return PolicySpec(
        name=name,
        namespace=policy.namespace,
        cilium=False,
        subject=policy.pod_selector,
        isolates=frozenset(t.lower() for t in policy.policy_types),
        rules=tuple(rules),
        tags=tuple(tags),
    )


def _cilium_rule(
    rule: CiliumRule,
    ref: str,
    order: tuple[int, int, int],
    direction: str,
    deny: bool,
    selectors: tuple[LabelSelector, ...],
) -> RuleSpec:
    peers: list[PeerSpec] = [PeerSpec(kind=PeerKind.PODS, cilium_selector=s) for s in selectors]
    for e in rule.entities:
        kind = {
            Entity.HOST: PeerKind.HOST,
            Entity.REMOTE_NODE: PeerKind.REMOTE_NODE,
            Entity.WORLD: PeerKind.WORLD,
            Entity.WORLD_IPV4: PeerKind.WORLD,
            Entity.ALL: PeerKind.ALL,
            Entity.CLUSTER: PeerKind.CLUSTER,
        }.get(e)
        if kind is not None:
            peers.append(PeerSpec(kind=kind))
    peers.extend(PeerSpec(kind=PeerKind.BLOCK, block=b) for b in rule.cidrs)
    ports = tuple(_cilium_port(p.protocol, p.port, p.end_port) for p in rule.ports)
    return RuleSpec(
        ref=ref,
        order=order,
        direction=direction,
        deny=deny,
        peers=tuple(peers),
        ports=ports,
        selects_nothing=(rule.has_l3 and not peers) or (not rule.has_l3 and not rule.ports),
    )


def cilium_policy_spec(
    policy: CiliumPolicy,
    order: int,
    engine: Engine,
    targets: Mapping[str, CiliumTarget] | None = None,
) -> PolicySpec:
    name = f"{policy.kind} {policy.key}"
    if targets is None:
        targets = _by_name(engine.cilium_targets)
    target = targets.get(name)
    assert target is not None
    rules: list[RuleSpec] = []
    for d_index, direction in enumerate((INGRESS, EGRESS)):
        for ref, rule in target.rules.get(direction, ()):
            rules.append(
                _cilium_rule(
                    rule,
                    str(ref),
                    (order, d_index, rule.index),
                    direction,
                    False,
                    target.endpoints.get(id(rule), ()),
                )
            )
        for ref, rule in target.deny_rules.get(direction, ()):
            rules.append(
                _cilium_rule(
                    rule,
                    str(ref),
                    (order, d_index + 2, rule.index),
                    direction,
                    True,
                    target.endpoints.get(id(rule), ()),
                )
            )
    return PolicySpec(
        name=name,
        namespace=policy.namespace,
        cilium=True,
        subject=target.subject,
        isolates=target.isolates,
        rules=tuple(rules),
    )


def policy_specs(engine: Engine, excluded: LabelFilter | None) -> tuple[PolicySpec, ...]:
    snap = engine.snapshot
    nps = _by_name(engine.np_targets)
    out = [
        network_policy_spec(p, i, engine, excluded, nps)
        for i, p in enumerate(snap.network_policies)
    ]
    base = len(out)
    cnps = _by_name(engine.cilium_targets)
    out.extend(
        cilium_policy_spec(p, base + i, engine, cnps) for i, p in enumerate(snap.cilium_policies)
    )
    return tuple(out)


def scoped_selectors(engine: Engine, specs: Sequence[PolicySpec]) -> list[ScopedSelector]:
    """Every pod selector, with the namespaces whose pods it is ever matched against."""
    namespaces = [ns.name for ns in engine.snapshot.namespaces]
    ns_cache: dict[LabelSelector, frozenset[str]] = {}

    def matching(sel: LabelSelector) -> frozenset[str]:
        if sel not in ns_cache:
            ns_cache[sel] = frozenset(
                n for n in namespaces if sel.matches(engine.namespace_labels(n))
            )
        return ns_cache[sel]

    out: list[ScopedSelector] = []
    for spec in specs:
        if spec.subject is not None and not spec.subject.is_empty:
            if spec.cilium:
                scope = scope_of_cilium_selector(spec.subject)
            else:
                scope = frozenset({spec.namespace or ""})
            out.append(ScopedSelector(selector=spec.subject, cilium=spec.cilium, namespaces=scope))
        for rule in spec.rules:
            for peer in rule.peers:
                if peer.cilium_selector is not None:
                    out.append(
                        ScopedSelector(
                            selector=peer.cilium_selector,
                            cilium=True,
                            namespaces=scope_of_cilium_selector(peer.cilium_selector),
                        )
                    )
                elif peer.pod_selector is not None and not peer.pod_selector.is_empty:
                    scope = (
                        frozenset({spec.namespace or ""})
                        if peer.namespace_selector is None
                        else matching(peer.namespace_selector)
                    )
                    out.append(
                        ScopedSelector(selector=peer.pod_selector, cilium=False, namespaces=scope)
                    )
    return out


def named_port_uses(specs: Sequence[PolicySpec]) -> set[NamedPortUse]:
    return {
        (p.port, p.protocol)
        for spec in specs
        for rule in spec.rules
        for p in rule.ports
        if isinstance(p.port, str)
    }


def ip_blocks(specs: Sequence[PolicySpec]) -> list[IPBlock]:
    return [
        peer.block
        for spec in specs
        for rule in spec.rules
        for peer in rule.peers
        if peer.block is not None
    ]


def reaches_nodes(
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


def admits_outside(rule: RuleSpec) -> bool:
    """Whether some dataplane could let this rule match a non-pod source (D5)."""
    if rule.selects_nothing:
        return False
    return not rule.peers or any(p.kind is not PeerKind.PODS for p in rule.peers)
