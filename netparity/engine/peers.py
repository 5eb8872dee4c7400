"""What a pod sees at the other end of a connection: a pod, a node (host), or an outside address."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netparity.model.objects import Node, Pod
from netparity.model.quick import quick_init


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class PodPeer:
    pod: Pod

    @property
    def ip(self) -> str | None:
        return self.pod.ip

    def __str__(self) -> str:
        return f"pod {self.pod.key}"


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class HostPeer:
    """A node's host network: the node itself or a hostNetwork pod on it."""

    node: Node
    via: str = ""  # e.g. "hostNetwork pod x/y" or "SNAT by the receiving node"

    @property
    def ip(self) -> str:
        return self.node.ip

    def __str__(self) -> str:
        return f"node {self.node.name}" + (f" ({self.via})" if self.via else "")


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalPeer:
    ip: str

    def __str__(self) -> str:
        return f"outside address {self.ip}"


Peer = PodPeer | HostPeer | ExternalPeer


def peer_address(peer: Peer) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    ip = peer.ip
    return ipaddress.ip_address(ip) if ip else None
