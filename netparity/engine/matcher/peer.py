"""PeerMatcher: a NetworkPolicy rule's from/to, compiled once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

from netparity.engine.dataplane import Dataplane
from netparity.engine.matcher.leg import Leg, Lookup
from netparity.engine.peers import HostPeer, PodPeer
from netparity.model.networkpolicy import IPBlock, PolicyPeer
from netparity.model.selectors import LabelSelector


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

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup) -> bool:
        peer = leg.peer
        if not isinstance(peer, PodPeer) or peer.pod.host_network:
            return False
        pod = peer.pod
        if self.namespace_selector is None:
            if pod.namespace != self.namespace:
                return False
        elif not self.namespace_selector.matches(look.namespace_labels(pod.namespace)):
            return False
        return self.pod_selector is None or self.pod_selector.matches(look.labels(pod, dp))


@dataclass(frozen=True, slots=True)
class AnyPeerMatcher:
    """A rule's peers: any of them (union)."""

    peers: tuple[PeerMatcher, ...]

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup) -> bool:
        for p in self.peers:  # noqa: SIM110 (a loop: faster than any() here)
            if p.matches(leg, dp, look):
                return True
        return False


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
