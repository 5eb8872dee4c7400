"""Which policies govern a pod: the labels each dataplane's selectors see, and the
NetworkPolicies and Cilium policies that select and isolate a pod for a direction.

`Selector` is the selection half of `Engine` (engine/evaluate.py judges the traffic).
Selection depends only on the namespace, the service account, hostNetwork and the labels
some policy's subject reads, so pods alike (replicas) share one cached entry.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from netparity.engine.compile import (
    NAMESPACE_KEY,
    NAMESPACE_LABEL_PREFIX,
    CiliumTarget,
    NPTarget,
    cilium_refusal,
)
from netparity.engine.dataplane import Dataplane
from netparity.facts.cilium_config import LabelFilter
from netparity.model.objects import Pod
from netparity.model.quick import quick_init
from netparity.model.selectors import LabelSelector
from netparity.model.snapshot import Snapshot

SERVICE_ACCOUNT_KEY = "io.cilium.k8s.policy.serviceaccount"  # D28
CLUSTER_KEY = "io.cilium.k8s.policy.cluster"  # D28


@quick_init
@dataclass(frozen=True, slots=True)
class Selection:
    """Who governs one (pod group, direction, dataplane)."""

    nps: list[NPTarget]
    cts: list[CiliumTarget]  # Cilium policies that isolate the pod
    notes: list[str]
    names: tuple[str, ...]
    adders: list[CiliumTarget]  # enableDefaultDeny false: rules without isolating
    requires: tuple[LabelSelector, ...]  # fromRequires/toRequires of every selecting policy
    requires_deny: tuple[LabelSelector, ...]


@dataclass(slots=True, kw_only=True)
class _Match:
    """The dataplane-independent part of a selection (`Selector._match`)."""

    nps: list[NPTarget]
    skipped: list[NPTarget]  # NetworkPolicies the dataplane does not translate (D11)
    cts: list[CiliumTarget] = field(default_factory=list)
    adders: list[CiliumTarget] = field(default_factory=list)
    refused: list[CiliumTarget] = field(default_factory=list)
    requires_ignored: list[CiliumTarget] = field(default_factory=list)
    requires: tuple[LabelSelector, ...] = ()
    requires_deny: tuple[LabelSelector, ...] = ()
    # the Selection where no note names the dataplane: one for every profile of this view
    shared: Selection | None = None


class Selector:
    """The selection half of an engine over `snapshot`'s compiled policies. Caches per
    dataplane; `Engine` extends it with the judgement."""

    def __init__(
        self,
        snapshot: Snapshot,
        np_targets: tuple[NPTarget, ...],
        cilium_targets: tuple[CiliumTarget, ...],
    ) -> None:
        self._np_by_ns: dict[str, list[NPTarget]] = defaultdict(list)
        for t in np_targets:
            self._np_by_ns[t.namespace].append(t)
        self._ns_labels = {ns.name: ns.labels for ns in snapshot.namespaces}
        self._label_cache: dict[tuple[str, LabelFilter | None], Mapping[str, str]] = {}
        self._cilium_label_cache: dict[tuple[str, LabelFilter | None, str], Mapping[str, str]] = {}
        self._select_cache: dict[tuple[int, str, int], Selection] = {}
        # the policies one (label group, direction, selection-relevant knobs) selects
        self._match_cache: dict[tuple[object, ...], _Match] = {}
        self._label_group: dict[str, int] = {}  # pod key -> its (namespace, labels) group
        self._label_groups: dict[object, int] = {}
        # Selection reads only the label keys some policy's subject names: pods that agree
        # on those (and on namespace and hostNetwork) share one selection, whatever their
        # other labels (pod-template-hash, a StatefulSet's pod name) say.
        subjects = [t.subject for t in np_targets]
        subjects += [c.subject for c in cilium_targets if c.subject is not None]
        self._subject_keys = frozenset(k for sel in subjects for k in sel.keys())  # noqa: SIM118
        # Cilium policies with the one namespace their subject pins ("": any namespace).
        self._cilium_pins: list[tuple[CiliumTarget, str]] = []
        for c in cilium_targets:
            if c.subject is not None:
                pins = {v for k, v in c.subject.match_labels if k == NAMESPACE_KEY}
                self._cilium_pins.append((c, pins.pop() if len(pins) == 1 else ""))
        self._cilium_by_ns: dict[str, list[CiliumTarget]] = {}
        self._dp_refs: dict[int, Dataplane] = {}  # keeps the ids used in cache keys alive

    # ---------------------------------------------------------------- labels

    def labels(self, pod: Pod, dp: Dataplane) -> Mapping[str, str]:
        """The pod labels a dataplane's selectors see (D6: Cilium drops some keys)."""
        if dp.label_filter is None:
            return pod.labels
        key = (pod.key, dp.label_filter)
        cached = self._label_cache.get(key)
        if cached is None:
            cached = dp.label_filter.identity(pod.labels)
            self._label_cache[key] = cached
        return cached

    def cilium_labels(self, pod: Pod, dp: Dataplane) -> Mapping[str, str]:
        """Identity labels: filtered pod labels, the namespace, the namespace's labels, the
        service account and the cluster name (D28; cilium/cilium pkg/k8s/utils/utils.go
        SanitizePodLabels)."""
        key = (pod.key, dp.label_filter, dp.cilium_cluster_name)
        cached = self._cilium_label_cache.get(key)
        if cached is None:
            out = dict(self.labels(pod, dp))
            out[NAMESPACE_KEY] = pod.namespace
            out[SERVICE_ACCOUNT_KEY] = pod.service_account
            out[CLUSTER_KEY] = dp.cilium_cluster_name
            for k, v in self._ns_labels.get(pod.namespace, {}).items():
                out[NAMESPACE_LABEL_PREFIX + k] = v
            self._cilium_label_cache[key] = cached = out
        return cached

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self._ns_labels.get(namespace, {"kubernetes.io/metadata.name": namespace})

    # ---------------------------------------------------------------- selection

    def selecting(
        self, pod: Pod, direction: str, dp: Dataplane
    ) -> tuple[list[NPTarget], list[CiliumTarget], list[str]]:
        """Policies that select `pod` and isolate it for `direction`, and notes on skipped ones."""
        sel = self._selection(pod, direction, dp)
        return sel.nps, sel.cts, sel.notes

    def cilium_refusal(self, target: CiliumTarget, dp: Dataplane) -> str | None:
        """Why `target` has no effect under `dp` (refused, or a host policy); None: it has."""
        return cilium_refusal(target, dp)

    def _selection(self, pod: Pod, direction: str, dp: Dataplane) -> Selection:
        """`selecting` and the names of the selecting policies. Selection depends only on the
        namespace, the service account, hostNetwork and the labels some policy's subject
        reads, so pods alike (replicas) share one entry."""
        group = self._label_group.get(pod.key)
        if group is None:
            keys = self._subject_keys
            raw = (
                pod.namespace,
                pod.host_network,
                pod.service_account,
                tuple(kv for kv in pod.labels.items() if kv[0] in keys),
            )
            group = self._label_groups.setdefault(raw, len(self._label_groups))
            self._label_group[pod.key] = group
        key = (group, direction, id(dp))
        cached = self._select_cache.get(key)
        if cached is not None:
            return cached
        self._dp_refs[id(dp)] = dp
        # Profiles that differ only in what selection never reads (the cause finder's
        # one-knob variants) share the matching; only the notes name the dataplane.
        view = (
            group,
            direction,
            dp.label_filter,
            dp.rules_beyond_policy_types,
            dp.skip_untranslatable,
            dp.cilium_policies,
            dp.cilium_cluster_name,
            dp.cilium_non_default_deny,
            dp.cnp_requires,
            dp.cilium_l7_proxy,
            dp.cilium_icmp_rules,
            dp.cilium_node_selector_labels,
            dp.cilium_host_firewall,
        )
        m = self._match_cache.get(view)
        if m is None:
            m = self._match_cache[view] = self._match(pod, direction, dp)
        if not m.skipped and not m.refused and not m.requires_ignored:
            if m.shared is None:
                names = tuple(t.name for t in m.nps) + tuple(c.name for c in m.cts)
                m.shared = Selection(m.nps, m.cts, [], names, m.adders, m.requires, m.requires_deny)
            self._select_cache[key] = m.shared
            return m.shared
        notes = [
            f"{t.name} is not enforced by {dp.name}: {t.untranslatable} (D11)" for t in m.skipped
        ]
        for c in m.refused:
            refused = cilium_refusal(c, dp)
            if refused is not None:
                notes.append(refused)
        notes += [
            f"{c.name} uses {', '.join(c.requires_fields)}, which {dp.name} ignores "
            "(deprecated in Cilium 1.17, removed in 1.19)"
            for c in m.requires_ignored
        ]
        names = tuple(t.name for t in m.nps) + tuple(c.name for c in m.cts)
        result = Selection(m.nps, m.cts, notes, names, m.adders, m.requires, m.requires_deny)
        self._select_cache[key] = result
        return result

    def _match(self, pod: Pod, direction: str, dp: Dataplane) -> _Match:
        """The policies that select `pod` for `direction` under `dp`, those `dp` skips (D11)
        or refuses, and the requirements. Reads only the fields `_selection` keys on."""
        nps: list[NPTarget] = []
        skipped: list[NPTarget] = []
        if not pod.host_network:
            labels = self.labels(pod, dp)
            for t in self._np_by_ns.get(pod.namespace, ()):
                # D23: a dataplane that ignores policyTypes enforces any direction with rules
                isolated = direction in t.isolates or (
                    dp.rules_beyond_policy_types and direction in t.ruled
                )
                if isolated and t.subject.matches(labels):
                    if dp.skip_untranslatable and t.untranslatable:
                        skipped.append(t)
                        continue
                    nps.append(t)
        m = _Match(nps=nps, skipped=skipped)
        if dp.cilium_policies and not pod.host_network:
            self._match_cilium(pod, direction, dp, m)
        return m

    def _match_cilium(self, pod: Pod, direction: str, dp: Dataplane, m: _Match) -> None:
        clabels = self.cilium_labels(pod, dp)
        requires: list[LabelSelector] = []
        requires_deny: list[LabelSelector] = []
        for c in self._cilium_in(pod.namespace):
            assert c.subject is not None
            if direction not in c.ruled or not c.subject.matches(clabels):
                continue
            if cilium_refusal(c, dp) is not None:
                m.refused.append(c)
                continue
            # enableDefaultDeny is honoured only with enable-non-default-deny-policies
            # (pkg/policy/api/rule_validation.go:101-119, Rule.Sanitize)
            if direction in c.isolates or not dp.cilium_non_default_deny:
                m.cts.append(c)
            else:
                m.adders.append(c)
            if c.requires_fields and not dp.cnp_requires:
                m.requires_ignored.append(c)
            elif dp.cnp_requires:
                requires.extend(c.requires.get(direction, ()))
                requires_deny.extend(c.requires_deny.get(direction, ()))
        m.requires = tuple(requires)
        m.requires_deny = tuple(requires_deny)

    def _cilium_in(self, namespace: str) -> list[CiliumTarget]:
        """The Cilium policies (in policy order) whose subject can select a pod of
        `namespace`: those that pin it, and those that pin none."""
        found = self._cilium_by_ns.get(namespace)
        if found is None:
            found = [c for c, pin in self._cilium_pins if pin in (namespace, "")]
            self._cilium_by_ns[namespace] = found
        return found
