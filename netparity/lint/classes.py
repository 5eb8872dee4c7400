"""Exact selectors for a set of pods, for fixes that must work on both dataplanes.

The helpers find labels that pick exactly a set of pods (and nothing else in scope)
without the labels the target dataplane drops from identities. The lint's pod classes are
the planner's (netparity/plan/classes.py, indexed by plan/class_index.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from netparity.model.objects import Pod
from netparity.model.selectors import LabelSelector


class LabelIndex:
    """A scope's pods grouped by their labels (as `labels_of` gives them), built once for the
    many `exact_selectors` calls over the same scope (issue 19: not a pass over every pod
    per call)."""

    def __init__(self, scope: Iterable[Pod], labels_of: Mapping[str, Mapping[str, str]]) -> None:
        self.group_of: dict[str, int] = {}
        self.labels: list[Mapping[str, str]] = []
        self.sizes: list[int] = []
        ids: dict[tuple[tuple[str, str], ...], int] = {}
        for p in scope:
            if p.key in self.group_of:
                continue
            labels = labels_of[p.key]
            items = tuple(sorted(labels.items()))
            i = ids.get(items)
            if i is None:
                i = ids[items] = len(self.labels)
                self.labels.append(labels)
                self.sizes.append(0)
            self.sizes[i] += 1
            self.group_of[p.key] = i
        # (key, value) -> the label sets that carry it: a matchLabels selector is checked
        # against the posting lists, not against every label set
        self.postings: dict[tuple[str, str], set[int]] = defaultdict(set)
        for i, labels in enumerate(self.labels):
            for kv in labels.items():
                self.postings[kv].add(i)

    def other_groups(self, want: set[str]) -> set[int]:
        """The label sets (by index) of the scope's pods outside `want`."""
        taken: dict[int, int] = defaultdict(int)
        for k in want:
            i = self.group_of.get(k)
            if i is not None:
                taken[i] += 1
        return {i for i in range(len(self.labels)) if taken[i] < self.sizes[i]}

    def matches_any(self, sel: LabelSelector, groups: set[int]) -> bool:
        """Whether `sel` matches one of the label sets `groups`."""
        if sel.match_expressions or not sel.match_labels:
            return any(sel.matches(self.labels[i]) for i in groups)
        hits: set[int] | None = None
        for kv in sel.match_labels:
            posting = self.postings.get(kv)
            if not posting:
                return False
            hits = posting & groups if hits is None else hits & posting
            if not hits:
                return False
        return bool(hits)


def exact_selectors(
    wanted: Sequence[Pod],
    scope: Sequence[Pod] | LabelIndex,
    labels_of: Mapping[str, Mapping[str, str]],
    *,
    split: bool = True,
) -> list[LabelSelector] | None:
    """Selectors (OR'd) over `labels_of` that match exactly `wanted` within `scope`, or None.

    `labels_of` maps a pod key to the labels a selector may use (identity labels only, so that
    the selector means the same on both dataplanes); `scope` may come indexed (LabelIndex over
    the same `labels_of`). Without `split`, only one selector (the labels the wanted pods
    share) is tried.
    """
    want = {p.key for p in wanted}
    if not want:
        return []
    index = scope if isinstance(scope, LabelIndex) else LabelIndex(scope, labels_of)
    others = index.other_groups(want)
    if not others:
        return [LabelSelector()]

    def exact(sel: LabelSelector) -> bool:
        return not index.matches_any(sel, others)

    groups = [index.group_of.get(p.key) for p in wanted]
    if None in groups:
        common = _common(labels_of[p.key] for p in wanted)
    else:  # each distinct label set once, in the order of the pods
        common = _common(index.labels[i] for i in dict.fromkeys(groups) if i is not None)
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
