"""Cilium rule matchers: entities, endpoint selectors and CIDRs (L3), then toPorts.

A rule's match is three-valued (`Match`): the engine models the L3/L4 part of every rule and
answers MAYBE, naming the field, only where the verdict depends on what it cannot model
(toServices/toGroups/CIDR-group peers, toFQDNs answers, L7 rules, authentication, TLS).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from netparity.engine.dataplane import Dataplane
from netparity.engine.matcher.leg import INGRESS, Leg, Lookup
from netparity.engine.matcher.port import PortMatcher, compile_cilium_ports
from netparity.engine.peers import ExternalPeer, HostPeer, PodPeer
from netparity.model.ciliumpolicy import CiliumRule, Entity
from netparity.model.networkpolicy import IPBlock
from netparity.model.selectors import LabelSelector

_WORLD = (Entity.WORLD, Entity.WORLD_IPV4, Entity.WORLD_IPV6)


class Match(IntEnum):
    NO = 0
    MAYBE = 1
    YES = 2


def _apiserver(leg: Leg, look: Lookup, uncertain: list[str]) -> bool:
    """The kube-apiserver identity: the `default/kubernetes` EndpointSlices' addresses
    (cilium/cilium pkg/k8s/watchers: the kubernetes Service's endpoints get the
    reserved:kube-apiserver label). Ingress from the API server reaches pods on AKS through
    konnectivity (SEMANTICS D12), so an ingress match is only noted."""
    peer = leg.peer
    if not isinstance(peer, ExternalPeer) or peer.ip not in look.apiserver_ips:
        return False
    if leg.direction == INGRESS:
        uncertain.append(
            "ingress from the API server reaches pods through konnectivity on AKS (D12): "
            "its source may not be the kube-apiserver identity"
        )
    return True


def entity_matches(entity: Entity, leg: Leg, uncertain: list[str], look: Lookup) -> bool:
    peer = leg.peer
    if entity is Entity.ALL:
        return True
    if entity in _WORLD:
        if not isinstance(peer, ExternalPeer):
            return False
        version = ipaddress.ip_address(peer.ip).version
        return entity is Entity.WORLD or (entity is Entity.WORLD_IPV4) == (version == 4)
    if entity is Entity.CLUSTER:
        # D28: `cluster` includes kube-apiserver (pkg/policy/api/entity.go:143)
        return isinstance(peer, PodPeer | HostPeer) or _apiserver(leg, look, uncertain)
    if isinstance(peer, HostPeer):
        own = peer.node.name == leg.subject.node_name
        return (entity is Entity.HOST and own) or (entity is Entity.REMOTE_NODE and not own)
    if entity is Entity.KUBE_APISERVER:
        return _apiserver(leg, look, uncertain)
    return False


@dataclass(frozen=True, slots=True)
class CiliumL3Matcher:
    """toEntities/fromEntities, toEndpoints/fromEndpoints (Cilium label keys), CIDRs, nodes."""

    entities: tuple[Entity, ...]
    endpoints: tuple[LabelSelector, ...]
    cidrs: tuple[IPBlock, ...]
    nodes: tuple[LabelSelector, ...] = ()

    def matches(
        self,
        leg: Leg,
        dp: Dataplane,
        look: Lookup,
        uncertain: list[str],
        requires: Sequence[LabelSelector] = (),
    ) -> bool:
        peer = leg.peer
        for entity in self.entities:
            if entity_matches(entity, leg, uncertain, look):
                return True
        if isinstance(peer, PodPeer) and not peer.pod.host_network and self.endpoints:
            labels = look.cilium_labels(peer.pod, dp)
            # fromRequires/toRequires are added to every endpoint selector, not to entities
            # or CIDRs (pkg/policy/api/ingress.go GetSourceEndpointSelectorsWithRequirements)
            if all(r.matches(labels) for r in requires):
                for sel in self.endpoints:
                    if sel.matches(labels):
                        return True
        if isinstance(peer, HostPeer) and any(sel.matches(peer.node.labels) for sel in self.nodes):
            return True
        if isinstance(peer, ExternalPeer):
            ip = ipaddress.ip_address(peer.ip)
            if any(block.contains(ip) for block in self.cidrs):
                return True
        return False


@dataclass(frozen=True, slots=True)
class CiliumRuleMatcher:
    """One Cilium rule: its L3 part (None: none given) and its ports. An empty rule `{}`
    selects nothing; it only turns on default deny. An `icmps` rule matches ICMP only,
    which no TCP/UDP/SCTP leg is."""

    l3: CiliumL3Matcher | None
    ports: PortMatcher
    empty: bool
    icmp: bool = False
    fqdns: str | None = None  # toFQDNs: outside addresses the DNS proxy learns
    l3_unknown: tuple[str, ...] = ()  # peers netparity cannot resolve
    conditions: tuple[str, ...] = ()  # may refuse what the L3/L4 part admits

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup, uncertain: list[str]) -> bool:
        return self.match(leg, dp, look, uncertain)[0] is Match.YES

    def match(
        self,
        leg: Leg,
        dp: Dataplane,
        look: Lookup,
        uncertain: list[str],
        requires: Sequence[LabelSelector] = (),
    ) -> tuple[Match, str]:
        """YES/NO, or MAYBE with the field the answer hinges on."""
        if self.icmp:
            return Match.NO, ""
        l3 = Match.YES
        why = ""
        if self.l3 is not None:
            if self.l3.matches(leg, dp, look, uncertain, requires):
                l3 = Match.YES
            elif self.l3_unknown:
                l3, why = Match.MAYBE, ", ".join(self.l3_unknown)
                if not isinstance(leg.peer, ExternalPeer) and all(
                    "Groups" in f or "cidrGroup" in f for f in self.l3_unknown
                ):
                    l3 = Match.NO  # cloud groups and CIDR groups name outside addresses (D2)
            elif self.fqdns is not None and isinstance(leg.peer, ExternalPeer):
                if dp.cilium_l7_proxy:
                    l3, why = Match.MAYBE, f"{self.fqdns} (the addresses DNS answers give)"
                else:
                    l3 = Match.NO  # no DNS proxy fills the selector: it admits nothing
            else:
                l3 = Match.NO
        elif self.empty:
            return Match.NO, ""
        if l3 is Match.NO or not self.ports.matches(leg, dp, look, uncertain):
            return Match.NO, ""
        if self.conditions:
            cond = ", ".join(self.conditions)
            return Match.MAYBE, f"{why}; {cond}" if why else cond
        return l3, why


def compile_cilium_rule(
    rule: CiliumRule, endpoints: Sequence[LabelSelector], nodes: Sequence[LabelSelector] = ()
) -> CiliumRuleMatcher:
    """`endpoints`: the rule's peer selectors, normalised and scoped by compile.py."""
    l3 = None
    if rule.has_l3:
        l3 = CiliumL3Matcher(
            tuple(rule.entities), tuple(endpoints), tuple(rule.cidrs), tuple(nodes)
        )
    return CiliumRuleMatcher(
        l3,
        compile_cilium_ports(rule.ports),
        not rule.ports,
        icmp=rule.icmp,
        fqdns=rule.fqdns,
        l3_unknown=rule.l3_unknown,
        conditions=rule.conditions,
    )
