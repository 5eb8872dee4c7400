"""PortMatcher: a rule's ports (NetworkPolicy or Cilium toPorts), compiled once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

from netparity.engine.dataplane import Dataplane, EndPortMode, NamedPortEgress
from netparity.engine.matcher.leg import INGRESS, Leg, Lookup
from netparity.engine.peers import PodPeer
from netparity.model.ciliumpolicy import CiliumPort, CiliumProtocol
from netparity.model.networkpolicy import PolicyPort
from netparity.model.objects import Protocol


class PortMatcher(TypingProtocol):
    def matches(self, leg: Leg, dp: Dataplane, look: Lookup, uncertain: list[str]) -> bool: ...


@dataclass(frozen=True, slots=True)
class AllPortsMatcher:
    """ports omitted: every port of every protocol."""

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup, uncertain: list[str]) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class PortProtocolMatcher:
    """One ports entry: a protocol (None: any the datapath parses, Cilium's ANY) and every
    port (None), a name, a number or number..end."""

    protocol: Protocol | None
    port: int | str | None
    end_port: int | None

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup, uncertain: list[str]) -> bool:
        if self.protocol is None:
            if leg.protocol is Protocol.SCTP and not dp.sctp_port_rules:
                return False  # ANY means the protocols the datapath parses
        elif self.protocol is not leg.protocol:
            return False
        if leg.protocol is Protocol.SCTP and not dp.sctp_port_rules:
            uncertain.append("SCTP port rules under Cilium without enable-sctp (D8)")
            return False
        port = self.port
        if port is None:
            return True
        if isinstance(port, str):
            return _named_port_matches(port, leg, dp, look)
        return _number_matches(port, self.end_port, leg, dp, uncertain)


@dataclass(frozen=True, slots=True)
class AnyPortMatcher:
    """A rule's ports: any entry (union), tried in order (their notes keep that order)."""

    ports: tuple[PortMatcher, ...]

    def matches(self, leg: Leg, dp: Dataplane, look: Lookup, uncertain: list[str]) -> bool:
        for p in self.ports:  # noqa: SIM110 (a loop: faster than any() here)
            if p.matches(leg, dp, look, uncertain):
                return True
        return False


def _number_matches(
    port: int, end: int | None, leg: Leg, dp: Dataplane, uncertain: list[str]
) -> bool:
    if end is None:
        return leg.port == port
    if dp.end_port is EndPortMode.PORT_ONLY:
        if port < leg.port <= end and dp.end_port_uncertain:
            uncertain.append(f"endPort range {port}-{end} on {dp.name} (D1)")
        return leg.port == port
    return port <= leg.port <= end


def _named_port_matches(name: str, leg: Leg, dp: Dataplane, look: Lookup) -> bool:
    if leg.direction == INGRESS:
        cp = leg.subject.named_port(name, leg.protocol)
        return cp is not None and cp.port == leg.port
    if dp.named_port_egress is NamedPortEgress.CLUSTER_WIDE:
        values = {n for n, proto in look.named_ports.get(name, ()) if proto is leg.protocol}
        return len(values) == 1 and leg.port in values  # D3: a conflict voids the rule
    peer = leg.peer
    if not isinstance(peer, PodPeer):
        return False  # D3b: named-port sets hold pod IPs only
    cp = peer.pod.named_port(name, leg.protocol)
    return cp is not None and cp.port == leg.port


def _union(ports: Sequence[PortMatcher]) -> PortMatcher:
    if not ports:
        return AllPortsMatcher()
    return ports[0] if len(ports) == 1 else AnyPortMatcher(tuple(ports))


def compile_np_ports(ports: Sequence[PolicyPort]) -> PortMatcher:
    """A NetworkPolicy rule's ports; empty: every port."""
    return _union([PortProtocolMatcher(pp.protocol, pp.port, pp.end_port) for pp in ports])


def compile_cilium_ports(ports: Sequence[CiliumPort]) -> PortMatcher:
    """A Cilium rule's toPorts ports; empty: every port."""
    out: list[PortMatcher] = []
    for cp in ports:
        if cp.protocol is CiliumProtocol.ANY:
            out.append(PortProtocolMatcher(None, cp.port, cp.end_port))
        else:
            out.append(PortProtocolMatcher(Protocol(cp.protocol.value), cp.port, cp.end_port))
    return _union(out)
