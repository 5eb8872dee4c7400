"""Cilium rule matchers: entities, endpoint selectors and CIDRs (L3), then toPorts."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from netparity.engine.dataplane import Dataplane
from netparity.engine.matcher.leg import Leg, Lookup
from netparity.engine.matcher.port import PortMatcher, compile_cilium_ports
from netparity.engine.peers import ExternalPeer, HostPeer, PodPeer
from netparity.model.ciliumpolicy import CiliumRule, Entity
from netparity.model.networkpolicy import IPBlock
from netparity.model.selectors import LabelSelector

_WORLD = (Entity.WORLD, Entity.WORLD_IPV4, Entity.WORLD_IPV6)


def entity_matches(entity: Entity, leg: Leg, uncertain: list[str]) -> bool:
    peer = leg.peer
    if entity is Entity.ALL:
        return True
    if entity in _WORLD:
        if not isinstance(peer, ExternalPeer):
            return False
        version = ipaddress.ip_address(peer.ip).version
        return entity is Entity.WORLD or (entity is Entity.WORLD_IPV4) == (version == 4)
    if entity is Entity.CLUSTER:
        return isinstance(peer, PodPeer | HostPeer)
    if isinstance(peer, HostPeer):
        own = peer.node.name == leg.subject.node_name
        return (entity is Entity.HOST and own) or (entity is Entity.REMOTE_NODE and not own)
    if entity is Entity.KUBE_APISERVER:
        uncertain.append("the kube-apiserver entity is not modelled")
    return False


@dataclass(frozen=True, slots=True)
class CiliumL3Matcher:
    """toEntities/fromEntities, toEndpoints/fromEndpoints (Cilium label keys), CIDRs."""

    entities: tuple[Entity, ...]
    endpoints: tuple[LabelSelector, ...]
    cidrs: tuple[IPBlock, ...]

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup, uncertain: list[str]) -> bool:
        peer = leg.peer
        for entity in self.entities:
            if entity_matches(entity, leg, uncertain):
                return True
        if isinstance(peer, PodPeer) and not peer.pod.host_network:
            labels = look.cilium_labels(peer.pod, dp)
            for sel in self.endpoints:
                if sel.matches(labels):
                    return True
        if isinstance(peer, ExternalPeer):
            ip = ipaddress.ip_address(peer.ip)
            if any(block.contains(ip) for block in self.cidrs):
                return True
        return False


@dataclass(frozen=True, slots=True)
class CiliumRuleMatcher:
    """One Cilium rule: its L3 part (None: none given) and its ports. An empty rule `{}`
    selects nothing; it only turns on default deny."""

    l3: CiliumL3Matcher | None
    ports: PortMatcher
    empty: bool

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup, uncertain: list[str]) -> bool:
        if self.l3 is not None:
            if not self.l3.matches(leg, dp, look, uncertain):
                return False
        elif self.empty:
            return False
        return self.ports.matches(leg, dp, look, uncertain)


def compile_cilium_rule(rule: CiliumRule, endpoints: Sequence[LabelSelector]) -> CiliumRuleMatcher:
    """`endpoints`: the rule's peer selectors, normalised and scoped by compile.py."""
    l3 = None
    if rule.has_l3:
        l3 = CiliumL3Matcher(tuple(rule.entities), tuple(endpoints), tuple(rule.cidrs))
    return CiliumRuleMatcher(l3, compile_cilium_ports(rule.ports), not rule.ports)
