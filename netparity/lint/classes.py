"""Pod classes (pods every policy treats alike) and exact selectors for a set of pods.

Two pods are in one class when they share a namespace, the values of every label key any
selector uses, and their container ports: no policy can tell them apart, so the lint
evaluates one of them and reports the class with its count. The selector helpers find
labels that pick exactly a set of pods (and nothing else in scope) without the labels the
target dataplane drops from identities, for fixes that must work on both dataplanes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from netparity.engine.compile import NAMESPACE_KEY, NAMESPACE_LABEL_PREFIX
from netparity.engine.evaluate import Engine
from netparity.lint.findings import PodGroup
from netparity.model.objects import ContainerPort, Pod
from netparity.model.selectors import LabelSelector
from netparity.model.snapshot import Snapshot

# namespace, labels selectors use, ports, the workload template (None: running pods)
_ClassKey = tuple[str, tuple[tuple[str, str], ...], tuple[ContainerPort, ...], str | None]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class PodClass:
    namespace: str
    labels: tuple[tuple[str, str], ...]  # the labels selectors use
    pods: tuple[Pod, ...]  # sorted by key; never empty
    full: PodGroup  # the whole class, for reports

    @property
    def rep(self) -> Pod:
        return self.pods[0]

    def group(self, pods: Sequence[Pod] | None = None) -> PodGroup:
        if pods is None:
            return self.full
        members = pods
        return PodGroup(
            namespace=self.namespace,
            labels=self.labels,
            count=len(members),
            example=members[0].key,
            template=members[0].template,
        )


def selector_keys(engine: Engine, namespaces: Iterable[str]) -> dict[str, frozenset[str]]:
    """Per namespace, the pod label keys a selector that can reach its pods reads: the
    subject selectors of its NetworkPolicies, the pod selectors of peers whose namespace
    scope includes it, and every key a Cilium policy uses."""
    names = sorted(set(namespaces))
    per_ns: dict[str, set[str]] = {ns: set() for ns in names}
    for t in engine.np_targets:
        if t.namespace in per_ns:
            per_ns[t.namespace].update(t.subject.keys())
        for rules in t.rules.values():
            for rule in rules:
                for peer in rule.peers:
                    if peer.pod_selector is None:
                        continue
                    if peer.namespace_selector is None:
                        scope = [t.namespace] if t.namespace in per_ns else []
                    else:
                        sel = peer.namespace_selector
                        scope = [ns for ns in names if sel.matches(engine.namespace_labels(ns))]
                    for ns in scope:
                        per_ns[ns].update(peer.pod_selector.keys())
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


class PodClasses:
    """The snapshot's pods (not hostNetwork, not on Windows nodes) in classes."""

    def __init__(self, snapshot: Snapshot, engine: Engine) -> None:
        keys = selector_keys(engine, (p.namespace for p in snapshot.pods))
        windows = {n.name for n in snapshot.nodes if n.os == "windows"}
        grouped: dict[_ClassKey, list[Pod]] = defaultdict(list)
        self.windows_pods = 0
        for pod in snapshot.pods:
            if pod.host_network:
                continue
            if pod.node_name in windows:
                self.windows_pods += 1
                continue
            used = keys[pod.namespace]
            labels = tuple((k, v) for k, v in sorted(pod.labels.items()) if k in used)
            grouped[(pod.namespace, labels, pod.ports, pod.template)].append(pod)
        classes = []
        for k, v in sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[1][0].key)):
            pods = tuple(sorted(v, key=lambda p: p.key))
            full = PodGroup(
                namespace=k[0], labels=k[1], count=len(pods), example=pods[0].key, template=k[3]
            )
            classes.append(PodClass(namespace=k[0], labels=k[1], pods=pods, full=full))
        self.classes: tuple[PodClass, ...] = tuple(classes)
        self.by_namespace: dict[str, list[PodClass]] = defaultdict(list)
        self.of_pod: dict[str, PodClass] = {}
        for c in self.classes:
            self.by_namespace[c.namespace].append(c)
            for p in c.pods:
                self.of_pod[p.key] = c
        self.pods_by_namespace: dict[str, list[Pod]] = {
            ns: [p for c in cs for p in c.pods] for ns, cs in self.by_namespace.items()
        }
        self.all_pods: tuple[Pod, ...] = tuple(p for c in self.classes for p in c.pods)


def exact_selectors(
    wanted: Sequence[Pod],
    scope: Sequence[Pod],
    labels_of: Mapping[str, Mapping[str, str]],
    *,
    split: bool = True,
) -> list[LabelSelector] | None:
    """Selectors (OR'd) over `labels_of` that match exactly `wanted` within `scope`, or None.

    `labels_of` maps a pod key to the labels a selector may use (identity labels only, so that
    the selector means the same on both dataplanes). Without `split`, only one selector (the
    labels the wanted pods share) is tried.
    """
    want = {p.key for p in wanted}
    if not want:
        return []
    distinct: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
    for p in scope:
        if p.key not in want:
            labels = labels_of[p.key]
            distinct.setdefault(tuple(sorted(labels.items())), labels)
    others = list(distinct.values())
    if not others:
        return [LabelSelector()]

    def exact(sel: LabelSelector) -> bool:
        return not any(sel.matches(labels) for labels in others)

    common = _common(labels_of[p.key] for p in wanted)
    if common:
        sel = _minimal(common, exact)
        if sel is not None:
            return [sel]
    if not split:
        return None
    by_labels: dict[tuple[tuple[str, str], ...], list[Pod]] = defaultdict(list)
    for p in wanted:
        by_labels[tuple(sorted(labels_of[p.key].items()))].append(p)
    out: list[LabelSelector] = []
    for label_items in sorted(by_labels):
        if not label_items:
            return None
        sel = _minimal(dict(label_items), exact)
        if sel is None:
            return None
        if sel not in out:
            out.append(sel)
    return out


def _common(label_sets: Iterable[Mapping[str, str]]) -> dict[str, str]:
    it = iter(label_sets)
    first = next(it, None)
    if first is None:
        return {}
    common = dict(first)
    for labels in it:
        common = {k: v for k, v in common.items() if labels.get(k) == v}
    return common


# Label keys a person would select by, most telling first.
PREFERRED_KEYS = (
    "app.kubernetes.io/name",
    "app",
    "k8s-app",
    "name",
    "app.kubernetes.io/component",
    "component",
    "role",
    "tier",
    "app.kubernetes.io/instance",
)


def _preference(key: str) -> tuple[int, str]:
    return (PREFERRED_KEYS.index(key) if key in PREFERRED_KEYS else len(PREFERRED_KEYS), key)


def _minimal(
    labels: Mapping[str, str], exact: Callable[[LabelSelector], bool]
) -> LabelSelector | None:
    """One telling label if that is exact; else the full set with the least telling keys
    dropped while it stays exact; None if even the full set matches other pods."""
    order = sorted(labels, key=_preference)
    for key in order:
        single = LabelSelector(match_labels=((key, labels[key]),))
        if exact(single):
            return single
    keep = dict(labels)
    if not exact(LabelSelector(match_labels=tuple(sorted(keep.items())))):
        return None
    for key in reversed(order):
        trial = {k: v for k, v in keep.items() if k != key}
        if trial and exact(LabelSelector(match_labels=tuple(sorted(trial.items())))):
            keep = trial
    return LabelSelector(match_labels=tuple(sorted(keep.items())))
