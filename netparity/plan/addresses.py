"""Outside addresses for probes: an address inside an ipBlock that lies outside the cluster.

The cluster is ranges, not a list of addresses (docs/probes.md, "Outside addresses"): the
Service range (inferred from the ClusterIPs, `default/kubernetes` and the DNS Service
among them, widened to a /16; AKS's default 10.0.0.0/16 where it fits; `service_cidr`
overrides), the pod ranges (every node's podCIDR and the overlay range that holds them,
at least a /16), the node subnet (at least a /16), and every address of a pod, node,
ClusterIP or LoadBalancer. A backend allocates the run's own addresses inside those
ranges or away from the planned probe addresses (`netparity/lab/addressing.py`).

The choice is deterministic and depends only on the block and the cluster's ranges, never
on which pod has which IP, so a renumbered cluster picks the same addresses. An address
the run controls (`prefer`: the responder for destinations, the runner's `--external-ip`
for sources) is chosen first wherever the block holds it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from netparity.engine.traffic import DEFAULT_EXTERNAL_IP
from netparity.errors import InputError
from netparity.model.networkpolicy import IPBlock
from netparity.model.objects import run_owned
from netparity.model.snapshot import Snapshot

# Documentation ranges first (never routed), then the block's own addresses.
_PREFERRED = (DEFAULT_EXTERNAL_IP, "198.51.100.10", "203.0.113.20", "192.0.2.200")
_SPECIAL = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3", "255.255.255.255/32")
)
AKS_SERVICE_CIDR = ipaddress.IPv4Network("10.0.0.0/16")  # AKS's default --service-cidr
_WIDEST_GUESS = 12  # an inferred range is never wider than a /12 (kubeadm's Service range)
_NARROWEST_GUESS = 16  # and never narrower than a /16 (AKS's defaults for all three)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterRanges:
    """What belongs to the cluster: its ranges (named) and every address it holds."""

    services: tuple[ipaddress.IPv4Network, ...] = ()
    pods: tuple[ipaddress.IPv4Network, ...] = ()
    nodes: tuple[ipaddress.IPv4Network, ...] = ()
    addresses: frozenset[int] = frozenset()
    # (netmask, network) of every range as integers: `owns` is asked thousands of times
    _masks: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        masks = tuple((int(n.netmask), int(n.network_address)) for n in self.networks)
        object.__setattr__(self, "_masks", masks)

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network, ...]:
        return (*self.services, *self.pods, *self.nodes)

    def owns(self, ip: ipaddress.IPv4Address) -> bool:
        value = int(ip)
        return value in self.addresses or (
            ip.version == 4 and any(value & m == a for m, a in self._masks)
        )

    def where(self, ip: str) -> str | None:
        """Which part of the cluster holds `ip` ("the Service range 10.0.0.0/16"), or None."""
        addr = ipaddress.ip_address(ip)
        if addr.version != 4:
            return None
        for what, nets in (
            ("the Service range", self.services),
            ("a pod range", self.pods),
            ("the node subnet", self.nodes),
        ):
            for n in nets:
                if addr in n:
                    return f"{what} {n}"
        return "a cluster address" if int(addr) in self.addresses else None


def _v4(text: str | None) -> ipaddress.IPv4Address | None:
    if not text or text == "None":
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip if isinstance(ip, ipaddress.IPv4Address) else None


def _covering(
    ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv4Network],
) -> ipaddress.IPv4Network:
    """The smallest network holding every address (or network) given, at least a /16."""
    lows = [int(x.network_address) if isinstance(x, ipaddress.IPv4Network) else int(x) for x in ips]
    highs = [
        int(x.broadcast_address) if isinstance(x, ipaddress.IPv4Network) else int(x) for x in ips
    ]
    lo, hi = min(lows), max(highs)
    prefix = 32 - (lo ^ hi).bit_length()
    return ipaddress.IPv4Network(
        f"{ipaddress.IPv4Address(lo)}/{min(prefix, _NARROWEST_GUESS)}", strict=False
    )


def _guess(
    ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv4Network],
) -> tuple[ipaddress.IPv4Network, ...]:
    """One covering range where it is no wider than a /12, else one /16 per address."""
    if not ips:
        return ()
    net = _covering(ips)
    if net.prefixlen >= _WIDEST_GUESS:
        return (net,)
    return tuple(sorted({_covering([x]) for x in ips}))


def parse_service_cidr(text: str) -> ipaddress.IPv4Network:
    """`--service-cidr`: an IPv4 network (host bits allowed, as kubectl prints it)."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InputError(f"{text!r} is not an IPv4 network", field="--service-cidr") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise InputError(f"{text!r} is not an IPv4 network", field="--service-cidr")
    return net


def cluster_ranges(
    snapshot: Snapshot, *, service_cidr: ipaddress.IPv4Network | None = None
) -> ClusterRanges:
    """The cluster's ranges, read from the snapshot (`service_cidr` replaces the guess)."""
    addrs: set[int] = set()
    pod_cidrs: list[ipaddress.IPv4Network] = []
    for node in snapshot.nodes:
        if node.pod_cidr:
            net = ipaddress.ip_network(node.pod_cidr, strict=False)
            if isinstance(net, ipaddress.IPv4Network):
                pod_cidrs.append(net)
    node_ips = [ip for n in snapshot.nodes if (ip := _v4(n.ip)) is not None]
    pod_ips = [ip for p in snapshot.pods if not p.host_network and (ip := _v4(p.ip)) is not None]
    cluster_ips: list[ipaddress.IPv4Address] = []
    for svc in snapshot.services:
        if run_owned(svc.labels):
            continue
        cip = _v4(svc.cluster_ip)
        if cip is not None:
            cluster_ips.append(cip)
        addrs.update(int(ip) for text in svc.load_balancer_ips if (ip := _v4(text)) is not None)
    addrs.update(int(ip) for ip in (*node_ips, *pod_ips, *cluster_ips))
    nodes = _guess(node_ips)
    # pods outside every podCIDR and the node subnet (Azure CNI pod subnets): their range too
    masks = [(int(n.netmask), int(n.network_address)) for n in (*pod_cidrs, *nodes)]
    loose = [ip for ip in pod_ips if not any(int(ip) & m == a for m, a in masks)]
    pods = tuple(sorted({*pod_cidrs, *_guess([*pod_cidrs, *loose])}))
    taken = (*nodes, *pods)
    if service_cidr is not None:
        services: tuple[ipaddress.IPv4Network, ...] = (service_cidr,)
    else:
        services = tuple(n for n in _guess(cluster_ips) if not any(n.overlaps(t) for t in taken))
        fits = not any(AKS_SERVICE_CIDR.overlaps(t) for t in taken) and not any(
            a in AKS_SERVICE_CIDR for a in (*node_ips, *pod_ips)
        )
        if fits and AKS_SERVICE_CIDR not in services:
            services = (*services, AKS_SERVICE_CIDR)
    return ClusterRanges(services=services, pods=pods, nodes=nodes, addresses=frozenset(addrs))


_v4_address = functools.lru_cache(maxsize=256)(ipaddress.IPv4Address)  # the preferred few


def _usable(ip: ipaddress.IPv4Address, block: IPBlock, ranges: ClusterRanges) -> bool:
    return block.contains(ip) and not ranges.owns(ip) and not any(ip in s for s in _SPECIAL)


def _preferred(prefer: Iterable[str | None]) -> list[tuple[str, bool]]:
    """(address, the user's): the user's are used wherever the block holds them and the
    cluster does not (they answer: a responder, this machine), even in special ranges."""
    out = [(p, True) for p in prefer if p]
    out.extend((p, False) for p in _PREFERRED if p not in {q for q, _ in out})
    return out


def outside_address(
    block: IPBlock, ranges: ClusterRanges, prefer: Iterable[str | None] = ()
) -> str | None:
    """An IPv4 address in `block` (not in its excepts) that lies outside the cluster:
    `prefer`'s first that the block holds, else a documentation address, else one of the
    block's own (the first, tenth, twentieth, middle ... address outside the cluster)."""
    if block.cidr.version != 4:
        return None
    for text, users in _preferred(prefer):
        ip = _v4_address(text)
        if users and block.contains(ip) and not ranges.owns(ip):
            return text
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
    # the cluster's ranges cover every address tried: the first address after each range
    for n in sorted(ranges.networks):
        after = int(n.broadcast_address) + 2
        if first <= after < first + size:
            ip = ipaddress.IPv4Address(after)
            if _usable(ip, block, ranges):
                return str(ip)
    return None


def excepted_address(
    block: IPBlock, ranges: ClusterRanges, prefer: Iterable[str | None] = ()
) -> str | None:
    """An outside address inside one of the block's excepts: just outside the rule."""
    wanted = list(prefer)
    for ex in block.excepts:
        if ex.version != 4:
            continue
        inner = IPBlock(cidr=ex)
        found = outside_address(inner, ranges, wanted)
        if found is not None:
            return found
    return None
