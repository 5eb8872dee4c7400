"""Cilium's rules in the lab as nft matches: peer classes (L3), protocol and port ranges
(L4), and one pod's compiled ingress or egress (`PodRules`); cilium_policy.py compiles
policies into them, cilium.py writes them into chains.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from netparity.model.networkpolicy import IPBlock

# ---------------------------------------------------------------------------- L3 / L4


@dataclass(frozen=True, slots=True, kw_only=True)
class L3:
    """A peer class: `all`, `pods` (ips), `host`, `remote-node`, or `world` (optionally a CIDR)."""

    kind: str
    ips: tuple[str, ...] = ()
    cidr: ipaddress.IPv4Network | None = None
    excepts: tuple[ipaddress.IPv4Network, ...] = ()


ALL = L3(kind="all")
HOST = L3(kind="host")
REMOTE_NODE = L3(kind="remote-node")
WORLD = L3(kind="world")


@dataclass(frozen=True, slots=True, kw_only=True)
class L4:
    """A protocol and port range; proto None: any traffic (a rule without ports)."""

    proto: str | None = None
    lo: int | None = None
    hi: int | None = None

    def nft(self) -> str:
        if self.proto is None:
            return ""
        if self.lo is None:
            return f"meta l4proto {self.proto}"
        rng = str(self.lo) if self.hi is None or self.hi == self.lo else f"{self.lo}-{self.hi}"
        return f"{self.proto} dport {rng}"


ANY_L4 = L4()


def _addr_set(ips: Sequence[str]) -> str:
    return ips[0] if len(ips) == 1 else "{ " + ", ".join(ips) + " }"


def _l3_nft(l3: L3, addr: str, has_remote_nodes: bool) -> str | None:
    """The nft match for a peer class on `addr` (saddr/daddr); None: it can match nothing."""
    if l3.kind == "all":
        return ""
    if l3.kind == "pods":
        return f"ip {addr} {_addr_set(l3.ips)}" if l3.ips else None
    if l3.kind == "host":
        return f"fib {addr} type local"
    if l3.kind == "apiserver":
        return f"ip {addr} {_addr_set(l3.ips)}"
    if l3.kind == "remote-node":
        return f"ip {addr} @remote_nodes" if has_remote_nodes else None
    parts = [f"ip {addr} != @pods", f"ip {addr} != @nodes", f"fib {addr} type != local"]
    if l3.cidr is not None and l3.cidr.prefixlen > 0:
        parts.append(f"ip {addr} {l3.cidr}")
    if l3.excepts:
        parts.append(f"ip {addr} != {_addr_set([str(e) for e in l3.excepts])}")
    return " ".join(parts)


def world(block: IPBlock) -> L3 | None:
    if block.cidr.version != 4:
        return None
    excepts = tuple(
        ipaddress.collapse_addresses(
            e for e in block.excepts if isinstance(e, ipaddress.IPv4Network)
        )
    )
    cidr = block.cidr if isinstance(block.cidr, ipaddress.IPv4Network) else None
    return L3(kind="world", cidr=cidr, excepts=excepts)


@dataclass(slots=True)
class PodRules:
    """The compiled ingress or egress of one pod."""

    isolated: bool = False
    deny: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return self.isolated or bool(self.deny)


def emit(
    into: PodRules,
    l3s: Iterable[L3],
    l4s: Iterable[L4],
    verdict: str,
    why: str,
    is_in: bool,
    has_remote_nodes: bool,
) -> None:
    """One rule's nft lines: every peer with every port, into the deny or allow list."""
    addr = "saddr" if is_in else "daddr"
    lines = into.deny if verdict == "drop" else into.allow
    l4list = list(l4s)
    for l3 in l3s:
        m3 = _l3_nft(l3, addr, has_remote_nodes)
        if m3 is None:
            continue
        for l4 in l4list:
            match = " ".join(x for x in (m3, l4.nft()) if x)
            lines.append(f'{match} {verdict} comment "{why}"'.lstrip())
