"""The in-cluster clients of a Service port grouped cheaply (netparity/plan/governed_clients.py)
are the clients a plain walk finds: every class on each backend's node (less the backend),
grouped by what the view sees of it, each group in pod-key order, split by egress the same
way. Random clusters, checked against that walk (issue 19)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from netparity.model.objects import Node, Pod
from netparity.plan.classes import PodClass
from netparity.plan.governed_clients import BulkGroup, ListGroup, NodeBulk, group_clients


def _cluster(rng: random.Random) -> tuple[list[Node], list[PodClass]]:
    nodes = [Node(name=f"n{i}", ip=f"10.224.0.{i + 4}") for i in range(rng.randint(1, 4))]
    classes = []
    for c in range(rng.randint(2, 14)):
        pods = sorted(
            (
                Pod(
                    namespace="ns",
                    name=f"{rng.choice('abcdefgh')}{rng.randrange(10**6)}-{c}-{k}",
                    node_name=rng.choice(nodes).name,
                )
                for k in range(rng.randint(1, 4))
            ),
            key=lambda p: p.key,
        )
        classes.append(PodClass(name=f"c{c}", namespace="ns", labels=(), pods=tuple(pods)))
    return nodes, classes


def _entries(node: Node, classes: list[PodClass]) -> list[tuple[str, list[Pod], PodClass]]:
    out = []
    for c in classes:
        pods = [p for p in c.pods if p.node_name == node.name]
        if pods:
            out.append((c.name, pods, c))
    return out


def _walk(reps: list[Any], bulks: list[NodeBulk], sigs: dict[str, Any]) -> list[Any]:
    """Every client (the backend itself left out), grouped by signature in the order each
    first appears, sorted by key."""
    groups: dict[Any, list[Any]] = {}
    for (node, b, port, _), bulk in zip(reps, bulks, strict=True):
        for name, pods, klass in bulk.entries:
            rest = [p for p in pods if p.key != b.key]
            if rest:
                client = (rest[0], b, node, port, klass, len(rest))
                groups.setdefault(sigs.get(name, ()), []).append(client)
    return [sorted(g, key=lambda m: m[0].key) for g in groups.values()]


def _same(group: ListGroup | BulkGroup, members: list[Any]) -> None:
    assert list(group.members()) == members
    assert group.first() == members[0]
    assert group.pods == sum(m[5] for m in members)
    names = [m[4].name for m in members]
    assert group.distinct == len(set(names))
    for name in set(names):  # asked of its members only
        assert group.occurrences(name) == names.count(name)


@pytest.mark.parametrize("seed", range(300))
def test_grouped_clients_are_the_clients_a_plain_walk_finds(seed: int) -> None:
    rng = random.Random(seed)
    nodes, classes = _cluster(rng)
    own_class = rng.choice(classes)
    own = own_class.name
    reps = []
    for node in nodes:
        backends = [p for p in own_class.pods if p.node_name == node.name]
        if backends and (not reps or rng.random() < 0.8):  # at least one backend's node
            reps.append((node, backends[0], 8080, None))
    assert reps
    bulks = [NodeBulk.of(_entries(r[0], classes)) for r in reps]
    views = ("a", "b")
    sigs = {c.name: (rng.choice(views),) for c in classes if rng.random() < 0.4}
    egress = {c.name: (rng.choice("xyz"),) if rng.random() < 0.7 else () for c in classes}
    expected = _walk(reps, bulks, sigs)
    groups = group_clients(reps, bulks, sigs, own)
    assert [g.first() for g in groups] == [members[0] for members in expected]
    for group, members in zip(groups, expected, strict=True):
        _same(group, members)
        split = group.split(lambda c: egress[c.name])
        by_egress: dict[Any, list[Any]] = {}
        for m in members:
            by_egress.setdefault(egress[m[4].name], []).append(m)
        want = sorted(by_egress.values(), key=lambda ms: ms[0][0].key)
        assert len(split) == len(want)
        for part, ms in zip(split, want, strict=True):
            _same(part, ms)
