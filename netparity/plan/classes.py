"""Equivalence classes: pods that every policy treats alike, probed once through one of them.

Two pods are in one class when they share a namespace, give the same match/no-match answer
to every pod selector of every policy (under every label view the dataplanes use: D6),
have the same numbers for every port name a policy uses (D3) and lie in the same ipBlocks
(D2). hostNetwork pods are nodes, never classes.

Pods are first grouped by their labels projected on the keys selectors use (cheap), then
groups with the same answer vector merge: the selectors run once per group, not per pod.
A class's name is derived from labels, port names and ipBlocks only (never pod names or
IPs), so that a renumbered cluster has the same classes.
"""

from __future__ import annotations

import functools
import heapq
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from netparity.engine.compile import NAMESPACE_KEY
from netparity.engine.dataplane import Dataplane
from netparity.engine.evaluate import Engine
from netparity.facts.cilium_config import LabelFilter
from netparity.model.networkpolicy import IPBlock
from netparity.model.objects import Pod, Protocol, ip_address
from netparity.model.selectors import LabelSelector

# A port name a policy uses, with the protocol it is used with (None: any, Cilium ANY).
NamedPortUse = tuple[str, Protocol | None]
# namespace, selector answers, (port name, protocol, number)s, ipBlocks holding the IP,
# the workload whose template the pods are (None: running pods)
ClassKey = tuple[
    str, tuple[bool, ...], tuple[tuple[str, str, int | None], ...], tuple[str, ...], str | None
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PodClass:
    """Pods no policy can tell apart. `pods[0]` is the representative probes use."""

    name: str  # unique, readable, name/IP independent: "shop[app=api]"
    namespace: str
    labels: tuple[tuple[str, str], ...]  # the distinguishing labels shown in `name`
    pods: tuple[Pod, ...]  # the representative first, then the others by key
    named_ports: tuple[tuple[str, str, int | None], ...] = ()  # (name, protocol, number)
    blocks: tuple[str, ...] = ()  # ipBlocks (that tell pods apart) holding the pods' IPs
    ports: tuple[tuple[int, Protocol], ...] = ()  # ports every member declares
    # "Kind/name" where the class is a workload's template (no pod of it was running): its
    # pods are the template's, placed on a node; a twin copies their labels and ports
    template: str | None = None

    @property
    def rep(self) -> Pod:
        return self.pods[0]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.pods)

    def declares(self, port: int, protocol: Protocol) -> bool:
        return (port, protocol) in self.ports

    def number(self, name: str, protocol: Protocol | None) -> int | None:
        for n, proto, number in self.named_ports:
            if n == name and (protocol is None or proto == protocol.value):
                return number
        cp = self.rep.named_port(name, protocol)
        return None if cp is None else cp.port


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopedSelector:
    """A pod selector and the namespaces whose pods it is ever matched against."""

    selector: LabelSelector
    cilium: bool  # matched against Cilium identity labels (else plain pod labels)
    namespaces: frozenset[str] | None  # None: every namespace


@dataclass(frozen=True, slots=True, kw_only=True)
class Classes:
    classes: tuple[PodClass, ...]  # sorted by name
    of: Mapping[str, PodClass]  # pod key -> its class
    blocks: tuple[IPBlock, ...]  # every distinct ipBlock / CIDR any policy names

    def in_namespace(self, namespace: str) -> tuple[PodClass, ...]:
        return tuple(c for c in self.classes if c.namespace == namespace)


@functools.lru_cache(maxsize=1 << 16)  # the same pods are looked up in several passes
def ip_int(ip: str | None) -> int | None:
    if ip is None:
        return None
    try:
        addr = ip_address(ip)
    except ValueError:
        return None
    return int(addr) if addr.version == 4 else None


def block_members(block: IPBlock, ips: Sequence[int], order: Sequence[int]) -> list[int]:
    """Indices (into `order`) of the sorted IPv4 ints `ips` that `block` contains."""
    if block.cidr.version != 4:
        return []
    lo = int(block.cidr.network_address)
    hi = lo + block.cidr.num_addresses - 1
    start, end = bisect_left(ips, lo), bisect_right(ips, hi)
    inside = set(range(start, end))
    for ex in block.excepts:
        if ex.version != 4:
            continue
        elo = int(ex.network_address)
        ehi = elo + ex.num_addresses - 1
        inside.difference_update(range(bisect_left(ips, elo), bisect_right(ips, ehi)))
    return [order[i] for i in sorted(inside)]


def _label_text(labels: Iterable[tuple[str, str]]) -> str:
    """`app=a,tier=web`; `*` where no selector reads any of the pods' labels."""
    return ",".join(f"{k}={v}" for k, v in labels) or "*"


# A class before its name: namespace, shown labels, pods (representative first), named
# ports, ipBlocks, the ports every pod declares, the template.
_Draft = tuple[
    str,
    tuple[tuple[str, str], ...],
    tuple[Pod, ...],
    tuple[tuple[str, str, int | None], ...],
    tuple[str, ...],
    set[tuple[int, Protocol]],
    str | None,
]


def compute_classes(
    engine: Engine,
    selectors: Sequence[ScopedSelector],
    named_ports: Iterable[NamedPortUse],
    blocks: Iterable[IPBlock],
    views: Sequence[Dataplane],
    *,
    skip: Callable[[Pod], bool] | None = None,
) -> Classes:
    """Partition the snapshot's pods (hostNetwork pods excluded, and those `skip` names)
    into equivalence classes."""
    snapshot = engine.snapshot
    pods = [p for p in snapshot.pods if not p.host_network and (skip is None or not skip(p))]
    np_views = _distinct_views(views)
    cilium_views = _distinct_views([v for v in views if v.cilium_policies])
    keys = {k for s in selectors for k in s.selector.keys()}  # noqa: SIM118
    # --- selectors per namespace
    per_ns = _selectors_per_namespace(sorted({p.namespace for p in pods}), selectors)
    # --- group by namespace + projected labels, then one answer vector per group
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Pod]] = defaultdict(list)
    for p in pods:
        proj = tuple(sorted((k, v) for k, v in p.labels.items() if k in keys))
        groups[(p.namespace, proj)].append(p)
    vector: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[bool, ...]] = {}
    for gkey, members in groups.items():
        ns = gkey[0]
        rep = members[0]
        plain, cil = per_ns[ns]
        bits: list[bool] = []
        for dp in np_views:
            labels = engine.labels(rep, dp)
            bits.extend(s.matches(labels) for s in plain)
        for dp in cilium_views:
            clabels = engine.cilium_labels(rep, dp)
            bits.extend(s.matches(clabels) for s in cil)
        vector[gkey] = tuple(bits)
    # --- named ports
    uses = sorted(set(named_ports), key=lambda u: (u[0], u[1].value if u[1] else ""))

    def port_key(p: Pod) -> tuple[tuple[str, str, int | None], ...]:
        out = []
        for name, proto in uses:
            cp = p.named_port(name, proto)
            out.append((name, proto.value if proto else "*", None if cp is None else cp.port))
        return tuple(out)

    # --- ipBlock memberships (only blocks holding some but not all pods tell pods apart)
    distinct_blocks = tuple(dict.fromkeys(blocks))
    member_of = _block_membership(pods, distinct_blocks)
    # --- classes
    by_key: dict[ClassKey, list[tuple[Pod, tuple[tuple[str, str], ...]]]] = defaultdict(list)
    for i, p in enumerate(pods):
        proj = tuple(sorted((k, v) for k, v in p.labels.items() if k in keys))
        ckey = (
            p.namespace,
            vector[(p.namespace, proj)],
            port_key(p),
            tuple(member_of.get(i, ())),
            p.template,
        )
        by_key[ckey].append((p, proj))
    drafts: list[_Draft] = []
    for ckey, cmembers in by_key.items():
        ns, _, ports_key, blocks_key, template = ckey
        label_sets = sorted({proj for _, proj in cmembers})
        shown = label_sets[0]
        member_pods = sorted((p for p, _ in cmembers), key=lambda p: p.key)
        rep = next((p for p in member_pods if p.ip and p.node_name), member_pods[0])
        ordered = (rep, *(p for p in member_pods if p.key != rep.key))
        declared = set.intersection(*({(cp.port, cp.protocol) for cp in p.ports} for p in ordered))
        drafts.append((ns, shown, ordered, ports_key, blocks_key, declared, template))
    named = _named(drafts)
    named = _unique_names(named)
    named.sort(key=lambda c: c.name)
    of = {p.key: c for c in named for p in c.pods}
    return Classes(classes=tuple(named), of=of, blocks=distinct_blocks)


def _selectors_per_namespace(
    namespaces: Sequence[str], selectors: Sequence[ScopedSelector]
) -> dict[str, tuple[list[LabelSelector], list[LabelSelector]]]:
    """Per namespace, the distinct selectors that may apply to its pods: the plain
    (NetworkPolicy) ones and the Cilium ones."""
    unique = list(dict.fromkeys((s.selector, s.cilium, s.namespaces) for s in selectors))
    # per namespace, the positions in `unique` of the selectors scoped to it (issue 19: not
    # every selector of every namespace's policies against every namespace)
    everywhere: list[int] = []
    scoped: dict[str, list[int]] = defaultdict(list)
    for i, (_, _, scope) in enumerate(unique):
        if scope is None:
            everywhere.append(i)
        else:
            for ns in scope:
                scoped[ns].append(i)
    per_ns: dict[str, tuple[list[LabelSelector], list[LabelSelector]]] = {}
    for ns in namespaces:
        mine = list(heapq.merge(everywhere, scoped.get(ns, ())))
        plain = [unique[i][0] for i in mine if not unique[i][1]]
        cil = [unique[i][0] for i in mine if unique[i][1]]
        per_ns[ns] = (list(dict.fromkeys(plain)), list(dict.fromkeys(cil)))
    return per_ns


def rep_ips(classes: Sequence[PodClass]) -> tuple[list[int], list[int]]:
    """The classes' representatives' addresses (as integers), sorted, and their classes'
    indexes."""
    with_ip = sorted(
        (ip, i) for i, c in enumerate(classes) if c.rep.ip and (ip := ip_int(c.rep.ip)) is not None
    )
    return [ip for ip, _ in with_ip], [i for _, i in with_ip]


def _block_membership(pods: Sequence[Pod], blocks: Sequence[IPBlock]) -> dict[int, list[str]]:
    """Per pod (by index), the ipBlocks holding it, of those that hold some but not all."""
    with_ip = sorted((ip, i) for i, p in enumerate(pods) if (ip := ip_int(p.ip)) is not None)
    ips = [ip for ip, _ in with_ip]
    order = [i for _, i in with_ip]
    member_of: dict[int, list[str]] = defaultdict(list)
    for block in sorted(blocks, key=str):
        inside = block_members(block, ips, order)
        if 0 < len(inside) < len(ips):
            text = str(block)
            for i in inside:
                member_of[i].append(text)
    return member_of


def _named(drafts: Sequence[_Draft]) -> list[PodClass]:
    """The classes, named namespace[labels], then with port names, then ipBlocks where
    needed to be unique."""
    base_count: dict[str, int] = defaultdict(int)
    for ns, shown, *_ in drafts:
        base_count[f"{ns}[{_label_text(shown)}]"] += 1
    named: list[PodClass] = []
    for ns, shown, ordered, ports_key, blocks_key, declared, template in drafts:
        name = f"{ns}[{_label_text(shown)}]"
        if base_count[name] > 1:
            defined = [f"{n}={num}" for n, _, num in ports_key if num is not None]
            if defined:
                name += "{" + ",".join(defined) + "}"
            if blocks_key:
                name += "<in " + ";".join(str(b) for b in blocks_key) + ">"
            if template is not None:
                # a template's class beside running pods' classes of the same labels says
                # so (a template alone keeps the name its running pods will have)
                name += "~template"
        named.append(
            PodClass(
                name=name,
                namespace=ns,
                labels=shown,
                pods=ordered,
                named_ports=tuple(ports_key),
                blocks=tuple(str(b) for b in blocks_key),
                ports=tuple(sorted(declared, key=lambda pp: (pp[0], pp[1].value))),
                template=template,
            )
        )
    return named


def _unique_names(classes: list[PodClass]) -> list[PodClass]:
    """Last resort for classes that still share a name: append the smallest full label
    set among their pods (labels only, never names or IPs)."""
    count: dict[str, int] = defaultdict(int)
    for c in classes:
        count[c.name] += 1
    if all(n == 1 for n in count.values()):
        return classes
    out = []
    for c in classes:
        if count[c.name] == 1:
            out.append(c)
            continue
        extra = sorted({_label_text(sorted(p.labels.items())) for p in c.pods})[0]
        out.append(
            PodClass(
                name=f"{c.name}~{{{extra}}}",
                namespace=c.namespace,
                labels=c.labels,
                pods=c.pods,
                named_ports=c.named_ports,
                blocks=c.blocks,
                ports=c.ports,
                template=c.template,
            )
        )
    return out


def _distinct_views(views: Sequence[Dataplane]) -> list[Dataplane]:
    seen: set[LabelFilter | None] = set()
    out = []
    for v in views:
        if v.label_filter not in seen:
            seen.add(v.label_filter)
            out.append(v)
    return out


def scope_of_cilium_selector(selector: LabelSelector) -> frozenset[str] | None:
    for k, v in selector.match_labels:
        if k == NAMESPACE_KEY:
            return frozenset({v})
    return None
