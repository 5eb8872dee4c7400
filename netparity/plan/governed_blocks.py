"""The nodes and the outside address an ipBlock peer stands for (plan/governed.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence

from netparity.engine.traffic import DEFAULT_EXTERNAL_IP, NodeEndpoint
from netparity.model.networkpolicy import IPBlock
from netparity.model.objects import Node, Pod, ip_address
from netparity.plan.governed_ports import Peer

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def covered_nodes(block: IPBlock, nodes: Sequence[Node]) -> list[Node]:
    """The nodes whose IP the block covers, in order."""
    return [n for n in nodes if block.contains(ip_address(n.ip))]


def ipblock_nodes(block: IPBlock, covered: Sequence[Node], s: Pod) -> list[Peer]:
    """The subject's own node and another node, of those whose IPs the block covers
    (`covered_nodes`)."""
    out = []
    own_seen = other_seen = False
    for n in covered:
        own = n.name == s.node_name
        if (own and own_seen) or (not own and other_seen):
            continue
        what = "own node" if own else "another node"
        out.append(
            Peer(
                endpoint=NodeEndpoint(node=n),
                desc=f"node {n.name} ({what}; node IP in ipBlock {block})",
                node=n,
            )
        )
        own_seen = own_seen or own
        other_seen = other_seen or not own
    return out


def sample_outside(
    block: IPBlock, owned: Collection[str], pod_cidrs: Sequence[IPNet]
) -> str | None:
    """An address inside the block (not excepted) that no pod, node or Service owns (`owned`),
    outside the pod CIDRs if it can be."""
    net = block.cidr
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    default = ipaddress.ip_address(DEFAULT_EXTERNAL_IP)
    if default.version == net.version:
        candidates.append(default)
    size = net.num_addresses
    first = net.network_address
    candidates += [first + min(1, size - 1), first + size // 2, first + max(0, size - 2)]
    for e in block.excepts:
        after = int(e.broadcast_address) + 1
        if after <= int(net.broadcast_address):
            candidates.append(ipaddress.ip_address(after))
    fallback: str | None = None
    for c in candidates:
        if not block.contains(c) or str(c) in owned:
            continue
        if any(c in cidr for cidr in pod_cidrs if cidr.version == c.version):
            fallback = fallback or str(c)
            continue
        return str(c)
    return fallback
