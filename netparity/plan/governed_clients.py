"""The in-cluster clients of a NodePort/LoadBalancer Service (D5d), grouped cheaply.

A Service port's in-cluster clients are the classes on its backends' nodes, grouped by
what the backends' ingress view sees of them. Most classes are seen as nothing (the empty
signature): they are kept per node once, sorted by their first pod's key and split by
their egress signature on demand (`NodeBulk`), so a Service port walks only the classes
its view sees, not every class on every backend's node (issue 19). `ListGroup` and
`BulkGroup` give the same members in the same order as a sorted list of them would.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from netparity.model.objects import Node, Pod
from netparity.plan.classes import PodClass
from netparity.plan.groups import PodGroup

# an in-cluster client of a Service: (client, backend, node, targetPort, client class, pods)
Client = tuple[Pod, Pod, Node, int, PodClass, int]
Entry = tuple[str, list[Pod], PodClass]  # (class name, its pods on the node, the class)
Rep = tuple[Node, Pod, int, PodGroup]  # (node, backend, targetPort, the backends there)
Signature = tuple[object, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Part:
    """Some classes of one node: (first pod's key, entry index) sorted, names, pods."""

    order: tuple[tuple[str, int], ...]
    names: frozenset[str]
    pods: int


def _part(entries: Sequence[Entry], indexes: Sequence[int]) -> Part:
    return Part(
        order=tuple(sorted((entries[i][1][0].key, i) for i in indexes)),
        names=frozenset(entries[i][0] for i in indexes),
        pods=sum(len(entries[i][1]) for i in indexes),
    )


@dataclass(slots=True, kw_only=True)
class NodeBulk:
    """Every class on one node: all of them, and (built when first asked) by egress."""

    entries: list[Entry]
    index: dict[str, int]
    whole: Part
    parts: dict[Signature, Part] | None = None

    @classmethod
    def of(cls, entries: list[Entry]) -> NodeBulk:
        index = {e[0]: i for i, e in enumerate(entries)}
        return cls(entries=entries, index=index, whole=_part(entries, range(len(entries))))

    def by_egress(self, egress: Callable[[PodClass], Signature]) -> dict[Signature, Part]:
        if self.parts is None:
            split: dict[Signature, list[int]] = {}
            for i, e in enumerate(self.entries):
                split.setdefault(egress(e[2]), []).append(i)
            self.parts = {sig: _part(self.entries, ix) for sig, ix in split.items()}
        return self.parts


def _client(pods: list[Pod], backend: Pod) -> Pod:
    return pods[0] if pods[0].key != backend.key else pods[1]


def _key(m: Client) -> str:
    return m[0].key


class ListGroup:
    """Clients listed one by one (the classes a view sees something of)."""

    def __init__(self, members: list[Client], *, ordered: bool = False) -> None:
        """`ordered`: the members come sorted already (a sorted group's split)."""
        if not ordered:
            members.sort(key=_key)
        self._members = members
        self._counts: Counter[str] | None = None  # per class name (counted when asked)

    def _names(self) -> Counter[str]:
        if self._counts is None:
            self._counts = Counter(m[4].name for m in self._members)
        return self._counts

    def first(self) -> Client:
        return self._members[0]

    def members(self) -> Iterator[Client]:
        return iter(self._members)

    @property
    def pods(self) -> int:
        return sum(m[5] for m in self._members)

    @property
    def distinct(self) -> int:
        return len(self._names())

    def occurrences(self, name: str) -> int:
        return self._names()[name]

    def split(self, egress: Callable[[PodClass], Signature]) -> list[ListGroup]:
        by_egress: dict[Signature, list[Client]] = {}
        known: dict[str, Signature] = {}  # a class's on every node it is a member on
        for m in self._members:
            klass = m[4]
            sig = known.get(klass.name)
            if sig is None:
                sig = known[klass.name] = egress(klass)
            part = by_egress.get(sig)
            if part is None:
                by_egress[sig] = [m]
            else:
                part.append(m)
        # each part keeps the members' order: sorted as this group is
        return [ListGroup(ms, ordered=True) for ms in by_egress.values()]


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkGroup:
    """The classes a view sees nothing of on the backends' nodes (one `Part` per rep, None
    where the node has none), less those the view sees (`seen`) and less the backend
    itself in its own class (`own`)."""

    reps: Sequence[Rep]
    nodes: Sequence[NodeBulk]
    parts: Sequence[Part | None]
    seen: Mapping[str, object]
    seen_on: Sequence[Sequence[str]]  # per rep, the seen classes on its node
    own: str
    _first: list[Client | None] = field(default_factory=list)

    def _own_count(self, i: int) -> int:
        """The backend's own class on rep i's node, less the backend (0: not a client)."""
        part = self.parts[i]
        if self.own in self.seen or part is None or self.own not in part.names:
            return 0
        node = self.nodes[i]
        return len(node.entries[node.index[self.own]][1]) - 1

    def members(self) -> Iterator[Client]:
        streams: list[Iterator[Client]] = []
        for i, part in enumerate(self.parts):
            if part is not None:
                streams.append(self._stream(i, part))
                if self._own_count(i):
                    node, b, port, _ = self.reps[i]
                    _, pods, klass = self.nodes[i].entries[self.nodes[i].index[self.own]]
                    streams.append(iter([(_client(pods, b), b, node, port, klass, len(pods) - 1)]))
        return heapq.merge(*streams, key=_key)

    def _stream(self, i: int, part: Part) -> Iterator[Client]:
        node, b, port, _ = self.reps[i]
        entries, seen, own = self.nodes[i].entries, self.seen, self.own
        for _, j in part.order:
            name, pods, klass = entries[j]
            if name not in seen and name != own:
                yield (pods[0], b, node, port, klass, len(pods))

    def first(self) -> Client | None:
        if not self._first:
            self._first.append(next(self.members(), None))
        return self._first[0]

    @property
    def pods(self) -> int:
        total = 0
        seen = self.seen
        for i, part in enumerate(self.parts):
            if part is None:
                continue
            node = self.nodes[i]
            # the seen classes of the part: walk the smaller of it and the node's seen ones
            if len(part.names) < len(self.seen_on[i]):
                hidden = [n for n in part.names if n in seen]
            else:
                hidden = [n for n in self.seen_on[i] if n in part.names]
            total += part.pods - sum(len(node.entries[node.index[n]][1]) for n in hidden)
            if self.own in part.names and self.own not in seen:
                total -= 1
        return total

    @property
    def distinct(self) -> int:
        seen = self.seen  # on a rep's node: in its `seen_on`
        names = {n for p in self.parts if p is not None for n in p.names if n not in seen}
        if self.own in names and not any(self._own_count(i) for i in range(len(self.parts))):
            names.discard(self.own)
        return len(names)

    def occurrences(self, name: str) -> int:
        if name == self.own:
            return sum(1 for i in range(len(self.parts)) if self._own_count(i))
        return sum(1 for p in self.parts if p is not None and name in p.names)

    def split(self, egress: Callable[[PodClass], Signature]) -> list[BulkGroup]:
        by_node = [n.by_egress(egress) for n in self.nodes]
        sigs = dict.fromkeys(sig for parts in by_node for sig in parts)
        groups: list[tuple[str, BulkGroup]] = []
        for sig in sigs:
            g = BulkGroup(
                reps=self.reps,
                nodes=self.nodes,
                parts=[parts.get(sig) for parts in by_node],
                seen=self.seen,
                seen_on=self.seen_on,
                own=self.own,
            )
            first = g.first()
            if first is not None:
                groups.append((first[0].key, g))
        groups.sort(key=lambda kg: kg[0])
        return [g for _, g in groups]


def group_clients(
    reps: Sequence[Rep],
    nodes: Sequence[NodeBulk],
    sigs: Mapping[str, Signature],
    own: str,
) -> list[ListGroup | BulkGroup]:
    """The clients on the reps' nodes grouped by what the view sees of them (`sigs`; a
    class missing there is seen as nothing), in the order their signatures first appear
    walking the reps and each node's classes in order."""
    listed: dict[Signature, list[Client]] = {}
    first_at: dict[Signature, tuple[int, int]] = {}
    seen_on: list[list[str]] = []
    for i, ((node, b, port, _), bulk) in enumerate(zip(reps, nodes, strict=True)):
        entries = bulk.entries
        if len(sigs) < len(entries):
            hits = sorted(bulk.index[n] for n in sigs if n in bulk.index)
        else:
            hits = [j for j, e in enumerate(entries) if e[0] in sigs]
        names: list[str] = []
        bkey = b.key
        for j in hits:  # in order: a signature's first hit is where it first appears
            name, pods, klass = entries[j]
            names.append(name)
            count = len(pods) - (name == own)
            if count:
                sig = sigs[name]
                client = pods[0] if pods[0].key != bkey else pods[1]  # `_client`
                members = listed.get(sig)
                if members is None:
                    members = listed[sig] = []
                    first_at[sig] = (i, j)
                members.append((client, b, node, port, klass, count))
        seen_on.append(names)
        if () not in first_at:
            for j, (name, pods, _) in enumerate(entries):
                if name not in sigs and (name != own or len(pods) > 1):
                    first_at[()] = (i, j)
                    break
    out: list[ListGroup | BulkGroup] = []
    for sig, _ in sorted(first_at.items(), key=lambda kv: kv[1]):
        if sig == ():
            parts = [n.whole for n in nodes]
            out.append(
                BulkGroup(reps=reps, nodes=nodes, parts=parts, seen=sigs, seen_on=seen_on, own=own)
            )
        else:
            out.append(ListGroup(listed[sig]))
    return out
