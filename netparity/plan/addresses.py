"""Outside addresses for probes: an address inside an ipBlock that no pod, node or Service owns.

The choice is deterministic and depends only on the block and the cluster's ranges, never
on which pod has which IP, so a renumbered cluster picks the same addresses (unless the
renumbering moves pods onto them).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netparity.engine.traffic import DEFAULT_EXTERNAL_IP
from netparity.model.networkpolicy import IPBlock
from netparity.model.snapshot import Snapshot

# Documentation ranges first (never routed), then the block's own addresses.
_PREFERRED = (DEFAULT_EXTERNAL_IP, "198.51.100.10", "203.0.113.20", "192.0.2.200")
_SPECIAL = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3", "255.255.255.255/32")
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterRanges:
    """Addresses that belong to the cluster: pod CIDRs, node, pod, ClusterIP and LB IPs."""

    networks: tuple[ipaddress.IPv4Network, ...]
    addresses: frozenset[int]

    def owns(self, ip: ipaddress.IPv4Address) -> bool:
        return int(ip) in self.addresses or any(ip in n for n in self.networks)


def cluster_ranges(snapshot: Snapshot) -> ClusterRanges:
    nets = []
    for node in snapshot.nodes:
        if node.pod_cidr:
            net = ipaddress.ip_network(node.pod_cidr, strict=False)
            if isinstance(net, ipaddress.IPv4Network):
                nets.append(net)
    addrs: set[int] = set()
    candidates = [n.ip for n in snapshot.nodes] + [p.ip for p in snapshot.pods if p.ip]
    for svc in snapshot.services:
        if svc.cluster_ip and svc.cluster_ip != "None":
            candidates.append(svc.cluster_ip)
        candidates.extend(svc.load_balancer_ips)
    for text in candidates:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.version == 4:
            addrs.add(int(ip))
    return ClusterRanges(networks=tuple(nets), addresses=frozenset(addrs))


def _usable(ip: ipaddress.IPv4Address, block: IPBlock, ranges: ClusterRanges) -> bool:
    return block.contains(ip) and not ranges.owns(ip) and not any(ip in s for s in _SPECIAL)


def outside_address(block: IPBlock, ranges: ClusterRanges) -> str | None:
    """An IPv4 address in `block` (not in its excepts) that the cluster does not own."""
    if block.cidr.version != 4:
        return None
    for text in _PREFERRED:
        ip = ipaddress.IPv4Address(text)
        if _usable(ip, block, ranges):
            return text
    net = block.cidr
    first = int(net.network_address)
    size = net.num_addresses
    offsets = [1, 10, 20, size // 2 + 1, size - 2, 0, size - 1]
    steps = 64
    offsets += [size * k // steps + 5 for k in range(steps)]
    for off in offsets:
        if 0 <= off < size:
            ip = ipaddress.IPv4Address(first + off)
            if _usable(ip, block, ranges):
                return str(ip)
    return None


def excepted_address(block: IPBlock, ranges: ClusterRanges) -> str | None:
    """An outside address inside one of the block's excepts: just outside the rule."""
    for ex in block.excepts:
        if ex.version != 4:
            continue
        inner = IPBlock(cidr=ex)
        found = outside_address(inner, ranges)
        if found is not None:
            return found
    return None
