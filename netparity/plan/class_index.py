"""The planner's pod classes, indexed for walking the traffic each policy governs.

`ClassIndex` computes the classes exactly as the planner does (classes.py, over the
planner's RuleSpecs), leaving out pods on Windows nodes (Cilium is Linux-only, D15), and
indexes them by namespace and by pod. A class is shown to a reader as a `PodGroup`: its
namespace, the labels (that the selectors able to reach its namespace read) all its pods
share, a count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from netparity.engine.compile import NAMESPACE_KEY, NAMESPACE_LABEL_PREFIX
from netparity.engine.dataplane import Dataplane
from netparity.engine.evaluate import Engine
from netparity.model.objects import Pod
from netparity.model.selectors import LabelSelector
from netparity.plan.classes import PodClass, compute_classes
from netparity.plan.groups import PodGroup
from netparity.plan.rules import ip_blocks, named_port_uses, policy_specs, scoped_selectors


class ClassIndex:
    """The snapshot's pods (not hostNetwork, not on Windows nodes) in the planner's classes,
    ordered by namespace, shown labels and first pod."""

    def __init__(self, engine: Engine, views: Sequence[Dataplane]) -> None:
        snapshot = engine.snapshot
        windows = {n.name for n in snapshot.nodes if n.os == "windows"}
        self.windows_pods = sum(
            1 for p in snapshot.pods if not p.host_network and p.node_name in windows
        )
        cilium_view = next((d for d in views if d.cilium_policies), None)
        specs = policy_specs(engine, cilium_view.label_filter if cilium_view else None)
        computed = compute_classes(
            engine,
            scoped_selectors(engine, specs),
            named_port_uses(specs),
            ip_blocks(specs),
            list(views),
            skip=lambda p: p.node_name in windows,
        )
        keys = selector_keys(engine, (c.namespace for c in computed.classes))
        self._full: dict[str, PodGroup] = {}
        self._shown: dict[str, tuple[tuple[str, str], ...]] = {}
        for c in computed.classes:
            used = keys[c.namespace]
            first = min(c.pods, key=lambda p: p.key)
            shown = _shared(c.pods, used)
            self._shown[c.name] = shown
            self._full[c.name] = PodGroup(
                namespace=c.namespace,
                labels=shown,
                count=len(c.pods),
                example=first.key,
                template=c.template,
            )
        self.classes: tuple[PodClass, ...] = tuple(
            sorted(
                computed.classes,
                key=lambda c: (c.namespace, self._shown[c.name], self._full[c.name].example),
            )
        )
        self.by_name: dict[str, PodClass] = {c.name: c for c in self.classes}
        # members by pod key (the representative, pods[0], is the planner's choice)
        self.members: dict[str, tuple[Pod, ...]] = {
            c.name: tuple(sorted(c.pods, key=lambda p: p.key)) for c in self.classes
        }
        self.by_namespace: dict[str, list[PodClass]] = defaultdict(list)
        self.of_pod: dict[str, PodClass] = {}
        for c in self.classes:
            self.by_namespace[c.namespace].append(c)
            for p in c.pods:
                self.of_pod[p.key] = c
        self.pods_by_namespace: dict[str, list[Pod]] = {
            ns: sorted((p for c in cs for p in c.pods), key=lambda p: p.key)
            for ns, cs in self.by_namespace.items()
        }
        self.all_pods: tuple[Pod, ...] = tuple(p for c in self.classes for p in c.pods)
        self._groups: dict[tuple[str, int, str], PodGroup] = {}  # group(cls, pods), once

    def group(self, cls: PodClass, pods: Sequence[Pod] | None = None) -> PodGroup:
        """The class (or the `pods` of it) as a reader sees them."""
        if pods is None:
            return self._full[cls.name]
        key = (cls.name, len(pods), pods[0].key)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = PodGroup(
                namespace=cls.namespace,
                labels=self._shown[cls.name],
                count=len(pods),
                example=pods[0].key,
                template=pods[0].template,
            )
        return group


def _shared(pods: Sequence[Pod], used: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The labels (of the keys `used`) every pod has: a class can hold pods whose labels
    differ where no selector's answer does."""
    common = {k: v for k, v in pods[0].labels.items() if k in used}
    for p in pods[1:]:
        if not common:
            break
        common = {k: v for k, v in common.items() if p.labels.get(k) == v}
    return tuple(sorted(common.items()))


def selector_keys(engine: Engine, namespaces: Iterable[str]) -> dict[str, frozenset[str]]:
    """Per namespace, the pod label keys a selector that can reach its pods reads: the
    subject selectors of its NetworkPolicies, the pod selectors of peers whose namespace
    scope includes it, and every key a Cilium policy uses."""
    names = sorted(set(namespaces))
    per_ns: dict[str, set[str]] = {ns: set() for ns in names}
    # keys read through a namespaceSelector, per selector: its namespaces are worked out
    # once (issue 19: not every peer's selector against every namespace)
    across: dict[LabelSelector, set[str]] = defaultdict(set)
    for t in engine.np_targets:
        if t.namespace in per_ns:
            per_ns[t.namespace].update(t.subject.keys())
        for rules in t.rules.values():
            for rule in rules:
                for peer in rule.peers:
                    if peer.pod_selector is None:
                        continue
                    if peer.namespace_selector is not None:
                        across[peer.namespace_selector].update(peer.pod_selector.keys())
                    elif t.namespace in per_ns:
                        per_ns[t.namespace].update(peer.pod_selector.keys())
    for sel, keys in across.items():
        for ns in names:
            if sel.matches(engine.namespace_labels(ns)):
                per_ns[ns].update(keys)
    common: set[str] = set()
    for c in engine.cilium_targets:
        sels = [c.subject] if c.subject is not None else []
        for group in c.endpoints.values():
            sels.extend(group)
        for sel in sels:
            common.update(
                k
                for k in tuple(sel.keys())
                if k != NAMESPACE_KEY and not k.startswith(NAMESPACE_LABEL_PREFIX)
            )
    return {ns: frozenset(keys | common) for ns, keys in per_ns.items()}
