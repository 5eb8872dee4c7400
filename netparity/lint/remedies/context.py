"""What every remedy builder shares: the snapshot, the engine, the checked edits so far.

`RemedyContext` holds the lint's view of the cluster and the helpers the builders of
several kinds use (a policy's current wire dict, a rule by reference, free object names,
peers that select exactly some pods, Cilium policy wire shapes). `NoFix` says why a
finding gets no fix; `Proposal` is what a builder returns.
"""

from __future__ import annotations

import bisect
import copy
import ipaddress
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netparity.engine.compile import NPRule, NPTarget
from netparity.engine.dataplane import Dataplane, EndPortMode
from netparity.facts.cilium_config import LabelFilter
from netparity.lint.classes import LabelIndex, exact_selectors
from netparity.lint.findings import Finding, FixAction, FixWhen
from netparity.lint.probes import ProbeBuilder
from netparity.lint.wire import network_policy_dict, selector_dict
from netparity.model.networkpolicy import NetworkPolicy, PolicyPeer
from netparity.model.objects import NAMESPACE_NAME_LABEL, Pod, ip_address
from netparity.model.selectors import LabelSelector

MAX_PEERS = 24  # a fix listing more peers than this is not readable: no fix, say why

# peers that select some pods, whatever the policy's namespace: (kind, (namespace, selectors)...)
_Shape = tuple[str, tuple[tuple[str, tuple[LabelSelector, ...]], ...]]


class NoFix(Exception):
    """Why a finding gets no fix (one sentence)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    objects: tuple[dict[str, Any], ...]
    action: FixAction
    when: FixWhen
    summary: str
    explanation: str = ""
    edits: tuple[str, ...] = ()  # NetworkPolicy names (as in findings) whose dict this edits
    no_np_reason: str | None = None


class RemedyContext:
    """What the per-kind builders share: the snapshot, the engine, the checked edits so far."""

    def __init__(self, probes: ProbeBuilder) -> None:
        self.probes = probes
        self.snapshot = snapshot = probes.snapshot
        self.engine = engine = probes.engine
        self.classes = classes = probes.classes
        self.npm = probes.npm
        self.target = target = probes.target
        self.policies: dict[str, NetworkPolicy] = {
            f"NetworkPolicy {p.key}": p for p in snapshot.network_policies
        }
        self.targets: dict[str, NPTarget] = {t.name: t for t in engine.np_targets}
        self.current: dict[str, dict[str, Any]] = {}
        self.edited_by: dict[str, list[str]] = defaultdict(list)
        self.names_taken: set[tuple[str, str, str]] = {
            ("NetworkPolicy", p.namespace, p.name) for p in snapshot.network_policies
        } | {(c.kind, c.namespace or "", c.name) for c in snapshot.cilium_policies}
        self.id_labels = {p.key: engine.labels(p, target) for p in classes.all_pods}
        self.all_keys = frozenset(p.key for p in classes.all_pods)
        self._ranges: list[str] | None = None
        self._selected: dict[tuple[str, object], tuple[Pod, ...]] = {}
        self._indexes: dict[str | None, LabelIndex] = {}
        self._precise: dict[tuple[int, int], tuple[Sequence[Pod], _Shape | NoFix]] = {}
        self.excluded: LabelFilter | None = target.label_filter
        # a named-port rule's numbers by (policy, direction, index): remedies/ports.py
        self.named_numbers: dict[tuple[str, str, int], tuple[Any, bool]] = {}
        self.numbers_everywhere: dict[tuple[str, str], dict[int, list[Pod]]] = {}
        # the pods whose IPs some ipBlocks cover, by the blocks (remedies/selectors.py)
        self.covered_pods: dict[tuple[str, ...], list[Pod]] = {}
        # precise_peers' selectors by the id of a long pod list, which comes again (the
        # lists above): (the list, kept alive, and its selectors)
        self._by_list: dict[int, tuple[Sequence[Pod], _Shape | NoFix]] = {}

    def policy_dict(self, name: str) -> dict[str, Any]:
        if name in self.current:
            return copy.deepcopy(self.current[name])
        return network_policy_dict(self.policies[name])

    def rule(self, name: str, direction: str, index: int) -> NPRule:
        for rule in self.targets[name].rules.get(direction, ()):
            if rule.ref.index == index:
                return rule
        raise NoFix(f"{name} has no rule {direction}[{index}]")

    def refs(self, finding: Finding) -> list[tuple[str, str, int]]:
        out = []
        for ref in finding.rule_refs:
            if ref.policy in self.policies and ref.index is not None:
                out.append((ref.policy, ref.direction, ref.index))
        if not out:
            raise NoFix("no NetworkPolicy rule decided these connections under NPM")
        return out

    def free_name(self, kind: str, namespace: str, name: str) -> str:
        candidate = name[:253]
        i = 2
        while (kind, namespace, candidate) in self.names_taken:
            candidate = f"{name}-{i}"
            i += 1
        self.names_taken.add((kind, namespace, candidate))
        return candidate

    def selected(self, policy: NetworkPolicy, dp: Dataplane) -> Sequence[Pod]:
        """The pods the policy selects as `dp` reads labels (worked out once per policy)."""
        key = (policy.key, dp.label_filter)
        pods = self._selected.get(key)
        if pods is None:
            pods = self._selected[key] = tuple(
                p
                for p in self.classes.pods_by_namespace.get(policy.namespace, [])
                if policy.pod_selector.matches(self.engine.labels(p, dp))
            )
        return pods

    def peer_pods(self, policy: NetworkPolicy, peer: PolicyPeer) -> list[Pod]:
        """The pods a selector or ipBlock peer matches under NPM."""
        if peer.ip_block is not None:
            return [p for pods in self.probes.pods_in(peer.ip_block).values() for p in pods]
        out = []
        for ns in self.peer_namespaces(policy, peer):
            for p in self.classes.pods_by_namespace.get(ns, []):
                if peer.pod_selector is None or peer.pod_selector.matches(
                    self.engine.labels(p, self.npm)
                ):
                    out.append(p)
        return out

    def peer_namespaces(self, policy: NetworkPolicy, peer: PolicyPeer) -> list[str]:
        if peer.namespace_selector is None:
            return [policy.namespace]
        sel = peer.namespace_selector
        return [
            ns
            for ns in sorted(self.classes.pods_by_namespace)
            if sel.matches(self.engine.namespace_labels(ns))
        ]

    def label_index(self, namespace: str | None) -> LabelIndex:
        """The pods of `namespace` (None: of the cluster) by identity labels, built once."""
        index = self._indexes.get(namespace)
        if index is None:
            scope = (
                self.classes.all_pods
                if namespace is None
                else self.classes.pods_by_namespace.get(namespace, [])
            )
            index = self._indexes[namespace] = LabelIndex(scope, self.id_labels)
        return index

    def precise_peers(self, pods: Sequence[Pod], home: str) -> list[dict[str, Any]]:
        """Peers that select exactly `pods` today, by identity labels (same on both dataplanes):
        one selector over every namespace if a few labels tell them apart cluster-wide, else
        per namespace. Too many peers to read is no fix. The selectors are worked out once
        per set of pods, whatever the policy's namespace (`home`, read only to write them)."""
        shape = self._shape(pods)
        if isinstance(shape, NoFix):
            raise NoFix(str(shape))
        kind, parts = shape
        if kind == "all":
            return [{"namespaceSelector": {}}]
        if kind == "wide":
            return [
                {"namespaceSelector": {}, "podSelector": selector_dict(sel)} for sel in parts[0][1]
            ]
        out: list[dict[str, Any]] = []
        for ns, sels in parts:
            for sel in sels:
                peer: dict[str, Any] = {}
                if ns != home:
                    peer["namespaceSelector"] = {"matchLabels": {NAMESPACE_NAME_LABEL: ns}}
                if not sel.is_empty or ns == home:
                    peer["podSelector"] = selector_dict(sel)
                out.append(peer)
        return out

    def _shape(self, pods: Sequence[Pod]) -> _Shape | NoFix:
        """`_selectors(pods)`, kept by a fingerprint of the pods, not by their keys (at 20,000
        pods those sets took most of the lint's memory); the pods are kept to rule out a
        hash collision."""
        known = self._by_list.get(id(pods))
        if known is not None and known[0] is pods:
            return known[1]
        keys = frozenset(p.key for p in pods)
        fp = (len(keys), hash(keys))
        long = len(pods) > 64  # a long list comes again: the named-port and ipBlock lists
        entry = self._precise.get(fp)
        if entry is not None and entry[0] is not pods and {p.key for p in entry[0]} != keys:
            entry = None
        if entry is None:
            try:
                result: _Shape | NoFix = self._selectors(pods)
            except NoFix as e:
                result = e
            entry = self._precise[fp] = (pods if long else tuple(pods), result)
        if long:
            self._by_list[id(pods)] = (pods, entry[1])
        return entry[1]

    def _selectors(self, pods: Sequence[Pod]) -> _Shape:
        """Every pod ("all"); one selector set over every namespace ("wide"); or selectors
        per namespace ("each", sorted by namespace)."""
        if len(pods) >= len(self.all_keys) and {p.key for p in pods} == self.all_keys:
            return ("all", ())
        by_ns: dict[str, list[Pod]] = defaultdict(list)
        for p in pods:
            by_ns[p.namespace].append(p)
        if len(by_ns) > 1:
            wide = exact_selectors(pods, self.label_index(None), self.id_labels, split=False)
            if wide is not None:
                return ("wide", (("", tuple(wide)),))
        if len(by_ns) > MAX_PEERS:
            raise NoFix(
                f"the {len(pods)} pods involved, in {len(by_ns)} namespaces, share no label "
                f"that sets them apart, so a fix would list more than {MAX_PEERS} peers: give "
                "them a common label and select it"
            )
        parts: list[tuple[str, tuple[LabelSelector, ...]]] = []
        count = 0
        for ns in sorted(by_ns):
            sels = exact_selectors(by_ns[ns], self.label_index(ns), self.id_labels)
            if sels is None:
                raise NoFix(
                    f"the pods in {ns} ({', '.join(sorted(p.key for p in by_ns[ns])[:3])}) "
                    "cannot be told apart from the others there by labels Cilium keeps"
                )
            parts.append((ns, tuple(sels)))
            count += len(sels)
            if count > MAX_PEERS:
                raise NoFix(
                    f"the {len(pods)} pods involved, in {len(by_ns)} namespaces, share no "
                    f"label that sets them apart, so a fix would list more than {MAX_PEERS} "
                    "peers: give them a common label and select it"
                )
        return ("each", tuple(parts))

    def is_excluded(self, key: str) -> bool:
        return self.excluded is not None and self.excluded.excludes(key)

    @staticmethod
    def cnp(namespace: str, name: str, specs: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"spec": specs[0]} if len(specs) == 1 else {"specs": specs}
        return {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            **body,
        }

    def cnp_ports(self, rule: NPRule) -> list[dict[str, Any]]:
        ports: list[dict[str, Any]] = []
        for pp in rule.ports:
            if isinstance(pp.port, str):
                continue  # a port name means nothing on a node
            if pp.port is None:
                ports.append({"port": "0", "protocol": str(pp.protocol)})
            elif pp.end_port is not None and self.target.end_port is EndPortMode.PORT_ONLY:
                ports.extend(
                    {"port": str(n), "protocol": str(pp.protocol)}
                    for n in range(pp.port, pp.end_port + 1)
                )
            elif pp.end_port is not None:
                ports.append(
                    {"port": str(pp.port), "endPort": pp.end_port, "protocol": str(pp.protocol)}
                )
            else:
                ports.append({"port": str(pp.port), "protocol": str(pp.protocol)})
        return ports

    def cluster_ranges(self) -> list[str]:
        """The node and pod addresses, collapsed (IPv4)."""
        if self._ranges is None:
            self._ranges = self._compute_cluster_ranges()
        return list(self._ranges)

    def _compute_cluster_ranges(self) -> list[str]:
        nets: list[ipaddress.IPv4Network] = []
        for n in self.snapshot.nodes:
            if n.pod_cidr:
                net = ipaddress.ip_network(n.pod_cidr, strict=False)
                if isinstance(net, ipaddress.IPv4Network):
                    nets.append(net)
            ip = ip_address(n.ip)
            if isinstance(ip, ipaddress.IPv4Address):
                nets.append(ipaddress.IPv4Network(ip))
        # the nodes' ranges merged and sorted: a pod's address is looked up, not compared
        # with every node's range (issue 19: 200 nodes x 20,000 pods)
        spans: list[list[int]] = []
        for lo, hi in sorted((int(n.network_address), int(n.broadcast_address)) for n in nets):
            if spans and lo <= spans[-1][1] + 1:
                spans[-1][1] = max(spans[-1][1], hi)
            else:
                spans.append([lo, hi])
        starts = [lo for lo, _ in spans]
        for p in self.snapshot.pods:
            if p.ip:
                ip = ip_address(p.ip)
                if isinstance(ip, ipaddress.IPv4Address):
                    i = bisect.bisect_right(starts, int(ip)) - 1
                    if i < 0 or int(ip) > spans[i][1]:
                        nets.append(ipaddress.IPv4Network(ip))
        return [str(n) for n in ipaddress.collapse_addresses(nets)]
