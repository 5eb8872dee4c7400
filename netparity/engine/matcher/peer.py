"""PeerMatcher: a NetworkPolicy rule's from/to, compiled once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Protocol as TypingProtocol

from netparity.engine.dataplane import Dataplane
from netparity.engine.matcher.leg import Leg, Lookup
from netparity.engine.peers import HostPeer, PodPeer
from netparity.model.networkpolicy import IPBlock, PolicyPeer
from netparity.model.selectors import LabelSelector, Operator, Requirement


class PeerMatcher(TypingProtocol):
    def matches(self, leg: Leg, dp: Dataplane, look: Lookup) -> bool: ...


@dataclass(frozen=True, slots=True)
class AllPeersMatcher:
    """from/to omitted: every peer, nodes and outside included (D14)."""

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class IPPeerMatcher:
    """An ipBlock: a plain address match; D2: Cilium's CIDR rules never match pods or nodes."""

    block: IPBlock

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup) -> bool:
        peer = leg.peer
        if isinstance(peer, PodPeer | HostPeer) and not dp.ipblock_matches_cluster:
            return False
        ip = peer.ip
        return ip is not None and self.block.contains(look.address(ip))


@dataclass(frozen=True, slots=True)
class PodPeerMatcher:
    """namespaceSelector and/or podSelector: selectors only ever match pods. Without a
    namespaceSelector, the policy's own namespace."""

    namespace: str
    namespace_selector: LabelSelector | None
    pod_selector: LabelSelector | None
    # D19: the namespaceSelector as NPM flattens it, one selector per combination of values.
    flattened: tuple[LabelSelector, ...] = field(init=False)

    # D18: the peer also matches what is not a pod, where the dataplane says so.
    negative: bool = field(init=False)

    def __post_init__(self) -> None:
        flat = () if self.namespace_selector is None else flatten(self.namespace_selector)
        object.__setattr__(self, "flattened", flat)
        object.__setattr__(self, "negative", _purely_negative(self))

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup) -> bool:
        peer = leg.peer
        if not isinstance(peer, PodPeer) or peer.pod.host_network:
            # D18: no namespace label, no pod label: a selector true of nothing matches it
            return self.negative and dp.negative_ns_selector_non_pods
        pod = peer.pod
        if self.namespace_selector is None:
            if pod.namespace != self.namespace:
                return False
        else:
            ns_labels = look.namespace_labels(pod.namespace)
            if dp.ns_selector_flattened:
                if not any(s.matches(ns_labels) for s in self.flattened):
                    return False
            elif not self.namespace_selector.matches(ns_labels):
                return False
        return self.pod_selector is None or self.pod_selector.matches(look.labels(pod, dp))


def _purely_negative(m: PodPeerMatcher) -> bool:
    """D18: a non-empty namespaceSelector that an empty label set satisfies (only NotIn /
    DoesNotExist), with no podSelector or one an empty label set satisfies too: the rule
    the dataplane compiles is a negation, true of whatever carries no labels at all."""
    ns = m.namespace_selector
    if ns is None or not (ns.match_labels or ns.match_expressions) or not ns.matches({}):
        return False
    return m.pod_selector is None or m.pod_selector.matches({})


def flatten(selector: LabelSelector) -> tuple[LabelSelector, ...]:
    """D19: a selector split into one selector per combination of the values of its
    multi-value In/NotIn expressions, to be ORed: In keeps its meaning, NotIn [a, b] becomes
    "NotIn a or NotIn b", true of every label set."""
    base: list[Requirement] = []
    multi: list[Requirement] = []
    for req in selector.match_expressions:
        is_set_op = req.operator in (Operator.IN, Operator.NOT_IN)
        (multi if is_set_op and len(req.values) > 1 else base).append(req)
    if not multi:
        return (selector,)
    choices = [
        [
            Requirement(key=r.key, operator=r.operator, values=frozenset({v}))
            for v in sorted(r.values)
        ]
        for r in multi
    ]
    return tuple(
        LabelSelector(match_labels=selector.match_labels, match_expressions=(*base, *combo))
        for combo in product(*choices)
    )


@dataclass(frozen=True, slots=True)
class AnyPeerMatcher:
    """A rule's peers: any of them (union)."""

    peers: tuple[PeerMatcher, ...]

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup) -> bool:
        for p in self.peers:  # noqa: SIM110 (a loop: faster than any() here)
            if p.matches(leg, dp, look):
                return True
        return False


def ns_selector_matches(sel: LabelSelector, labels: Mapping[str, str], dp: Dataplane) -> bool:
    """A namespaceSelector as `dp` reads it (D19: NPM ORs each value of a multi-value
    In/NotIn, `flatten`)."""
    if dp.ns_selector_flattened:
        return any(f.matches(labels) for f in flatten(sel))
    return sel.matches(labels)


def compile_peer(peer: PolicyPeer, namespace: str) -> PeerMatcher:
    if peer.ip_block is not None:
        return IPPeerMatcher(peer.ip_block)
    return PodPeerMatcher(namespace, peer.namespace_selector, peer.pod_selector)


def compile_peers(peers: Sequence[PolicyPeer], namespace: str) -> PeerMatcher:
    """A rule's from/to in the policy's `namespace`; empty: every peer."""
    if not peers:
        return AllPeersMatcher()
    compiled = tuple(compile_peer(p, namespace) for p in peers)
    return compiled[0] if len(compiled) == 1 else AnyPeerMatcher(compiled)
