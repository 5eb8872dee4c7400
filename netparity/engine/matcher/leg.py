"""One side to judge (`Leg`) and what matchers may look up in the compiled snapshot."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

from netparity.engine.dataplane import Dataplane
from netparity.engine.peers import Peer
from netparity.model.objects import Pod, Protocol

INGRESS = "ingress"
EGRESS = "egress"


# Built for every verdict: a plain (not frozen) slotted class, which constructs several
# times faster; it never leaves the engine.
@dataclass(slots=True, kw_only=True)
class Leg:
    """One side to judge: `subject`'s `direction` policy against `peer` on port/protocol."""

    direction: str
    subject: Pod
    peer: Peer
    port: int
    protocol: Protocol


class Lookup(TypingProtocol):
    """The engine's views the matchers read (labels as a dataplane sees them, addresses)."""

    named_ports: Mapping[str, frozenset[tuple[int, Protocol]]]
    # the API server's addresses: `default/kubernetes` EndpointSlices (Cilium's kube-apiserver)
    apiserver_ips: frozenset[str]

    def labels(self, pod: Pod, dp: Dataplane) -> Mapping[str, str]: ...

    def cilium_labels(self, pod: Pod, dp: Dataplane) -> Mapping[str, str]: ...

    def namespace_labels(self, namespace: str) -> Mapping[str, str]: ...

    def address(self, ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address: ...
