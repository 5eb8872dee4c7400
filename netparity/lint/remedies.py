"""The remedy for each kind of finding: the objects that would restore parity.

One builder per kind turns a finding into a proposal (NetworkPolicies to apply before the
migration, a CiliumNetworkPolicy to apply after it, or a policy to delete), or says why
there is none (`NoFix`). fixes.py checks every proposal against the engine before it is
offered. Edits to one NetworkPolicy accumulate: a builder starts from the last checked
version of the policy.
"""

from __future__ import annotations

import copy
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from netparity.engine.compile import EGRESS, INGRESS, NPRule, NPTarget
from netparity.engine.dataplane import Dataplane, EndPortMode
from netparity.engine.traffic import Decision, ExternalEndpoint, ServiceEndpoint
from netparity.facts.cilium_config import LabelFilter
from netparity.lint import remedy_rows
from netparity.lint.classes import exact_selectors
from netparity.lint.findings import Change, Finding, FixAction, FixWhen
from netparity.lint.probes import ProbeBuilder
from netparity.lint.wire import network_policy_dict, selector_dict
from netparity.model.networkpolicy import NetworkPolicy, PolicyPeer
from netparity.model.objects import NAMESPACE_NAME_LABEL, Pod
from netparity.plan.model import Scenario

MAX_EXPANDED_PORTS = 2048  # an endPort range longer than this is not expanded
MAX_PEERS = 24  # a fix listing more peers than this is not readable: no fix, say why

NO_NP_FOR_NODES = (
    "no NetworkPolicy-only fix exists for node addresses: under Cilium an ipBlock never "
    "matches a node (the host / remote-node identities) and no peer selector selects one; "
    "the only NetworkPolicy form that reaches nodes is a rule without from/to (ports only), "
    "which admits every peer on those ports"
)


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


class Remedies:
    """The per-kind builders and what they share: the snapshot, the checked edits so far."""

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
        self.excluded: LabelFilter | None = target.label_filter
        self.builders: dict[str, Callable[[Finding], Proposal]] = {
            Scenario.ENDPORT: self._endport,
            Scenario.NAMED_PORT: self._named_port,
            Scenario.IPBLOCK_PODS: self._ipblock_pods,
            Scenario.IPBLOCK_NODES: self._ipblock_nodes,
            Scenario.NODE_EGRESS: self._node_egress,
            Scenario.EXTERNAL_INGRESS: self._external_ingress,
            Scenario.LB_IN_CLUSTER: self._lb_in_cluster,
            Scenario.IDENTITY_LABELS: self._identity_labels,
            Scenario.SCTP: self._sctp,
            Scenario.UNTRANSLATABLE: self._untranslatable,
            Scenario.NS_SELECTOR_OR: lambda f: remedy_rows.ns_selector_or(self, f),
        }

    def _policy_dict(self, name: str) -> dict[str, Any]:
        if name in self.current:
            return copy.deepcopy(self.current[name])
        return network_policy_dict(self.policies[name])

    def _rule(self, name: str, direction: str, index: int) -> NPRule:
        for rule in self.targets[name].rules.get(direction, ()):
            if rule.ref.index == index:
                return rule
        raise NoFix(f"{name} has no rule {direction}[{index}]")

    def _refs(self, finding: Finding) -> list[tuple[str, str, int]]:
        out = []
        for ref in finding.rule_refs:
            if ref.policy in self.policies and ref.index is not None:
                out.append((ref.policy, ref.direction, ref.index))
        if not out:
            raise NoFix("no NetworkPolicy rule decided these connections under NPM")
        return out

    def _free_name(self, kind: str, namespace: str, name: str) -> str:
        candidate = name[:253]
        i = 2
        while (kind, namespace, candidate) in self.names_taken:
            candidate = f"{name}-{i}"
            i += 1
        self.names_taken.add((kind, namespace, candidate))
        return candidate

    def _selected(self, policy: NetworkPolicy, dp: Dataplane) -> list[Pod]:
        return [
            p
            for p in self.classes.pods_by_namespace.get(policy.namespace, [])
            if policy.pod_selector.matches(self.engine.labels(p, dp))
        ]

    def _peer_pods(self, policy: NetworkPolicy, peer: PolicyPeer) -> list[Pod]:
        """The pods a selector or ipBlock peer matches under NPM."""
        if peer.ip_block is not None:
            return [p for pods in self.probes.pods_in(peer.ip_block).values() for p in pods]
        out = []
        for ns in self._peer_namespaces(policy, peer):
            for p in self.classes.pods_by_namespace.get(ns, []):
                if peer.pod_selector is None or peer.pod_selector.matches(
                    self.engine.labels(p, self.npm)
                ):
                    out.append(p)
        return out

    def _peer_namespaces(self, policy: NetworkPolicy, peer: PolicyPeer) -> list[str]:
        if peer.namespace_selector is None:
            return [policy.namespace]
        sel = peer.namespace_selector
        return [
            ns
            for ns in sorted(self.classes.pods_by_namespace)
            if sel.matches(self.engine.namespace_labels(ns))
        ]

    def _precise_peers(self, pods: Sequence[Pod], home: str) -> list[dict[str, Any]]:
        """Peers that select exactly `pods` today, by identity labels (same on both dataplanes):
        one selector over every namespace if a few labels tell them apart cluster-wide, else
        per namespace. Too many peers to read is no fix."""
        keys = {p.key for p in pods}
        if keys == self.all_keys:
            return [{"namespaceSelector": {}}]
        by_ns: dict[str, list[Pod]] = defaultdict(list)
        for p in pods:
            by_ns[p.namespace].append(p)
        if len(by_ns) > 1:
            wide = exact_selectors(pods, self.classes.all_pods, self.id_labels, split=False)
            if wide is not None:
                return [
                    {"namespaceSelector": {}, "podSelector": selector_dict(sel)} for sel in wide
                ]
        if len(by_ns) > MAX_PEERS:
            raise NoFix(
                f"the {len(pods)} pods involved, in {len(by_ns)} namespaces, share no label "
                f"that sets them apart, so a fix would list more than {MAX_PEERS} peers: give "
                "them a common label and select it"
            )
        out: list[dict[str, Any]] = []
        for ns in sorted(by_ns):
            sels = exact_selectors(
                by_ns[ns], self.classes.pods_by_namespace.get(ns, []), self.id_labels
            )
            if sels is None:
                raise NoFix(
                    f"the pods in {ns} ({', '.join(sorted(p.key for p in by_ns[ns])[:3])}) "
                    "cannot be told apart from the others there by labels Cilium keeps"
                )
            for sel in sels:
                peer: dict[str, Any] = {}
                if ns != home:
                    peer["namespaceSelector"] = {"matchLabels": {NAMESPACE_NAME_LABEL: ns}}
                if not sel.is_empty or ns == home:
                    peer["podSelector"] = selector_dict(sel)
                out.append(peer)
            if len(out) > MAX_PEERS:
                raise NoFix(
                    f"the {len(pods)} pods involved, in {len(by_ns)} namespaces, share no "
                    f"label that sets them apart, so a fix would list more than {MAX_PEERS} "
                    "peers: give them a common label and select it"
                )
        return out

    def _is_excluded(self, key: str) -> bool:
        return self.excluded is not None and self.excluded.excludes(key)

    @staticmethod
    def _cnp(namespace: str, name: str, specs: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"spec": specs[0]} if len(specs) == 1 else {"specs": specs}
        return {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            **body,
        }

    def _cnp_ports(self, rule: NPRule) -> list[dict[str, Any]]:
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

    # ---------------------------------------------------------------- one builder per kind

    def _endport(self, finding: Finding) -> Proposal:
        edits: dict[str, dict[str, Any]] = {}
        ranges: list[str] = []
        for name, direction, index in self._refs(finding):
            d = edits.get(name) or self._policy_dict(name)
            edits[name] = d
            rule = d["spec"][direction][index]
            out: list[dict[str, Any]] = []
            for entry in rule.get("ports", []):
                end = entry.get("endPort")
                if end is None:
                    out.append(entry)
                    continue
                start = int(entry["port"])
                if end - start + 1 > MAX_EXPANDED_PORTS:
                    raise NoFix(
                        f"the range {start}-{end} in {name} {direction}[{index}] has "
                        f"{end - start + 1} ports, too many to list; move to Cilium >= 1.17 "
                        "(AKS on Kubernetes >= 1.32), which honours endPort"
                    )
                ranges.append(f"{start}-{end}/{entry.get('protocol', 'TCP')}")
                out.extend(
                    {"protocol": entry.get("protocol", "TCP"), "port": n}
                    for n in range(start, end + 1)
                )
            rule["ports"] = out
        return Proposal(
            objects=tuple(edits.values()),
            action=FixAction.APPLY,
            when=FixWhen.BEFORE,
            summary=f"lists every port of {', '.join(dict.fromkeys(ranges))} instead of the "
            "endPort range",
            explanation=f"{self.target.name} does not honour endPort (Microsoft's migration "
            "guide: before Cilium 1.17, use single ports); NPM treats the list exactly as the "
            "range. On Cilium >= 1.17 the range itself works.",
            edits=tuple(edits),
        )

    def _named_port(self, finding: Finding) -> Proposal:
        edits: dict[str, dict[str, Any]] = {}
        notes: list[str] = []
        for name, direction, index in self._refs(finding):
            if direction != EGRESS:
                raise NoFix("ingress named ports resolve on the selected pod on both dataplanes")
            policy = self.policies[name]
            rule = self._rule(name, direction, index)
            d = edits.get(name) or self._policy_dict(name)
            edits[name] = d
            wire_rule = d["spec"][direction][index]
            reach = (
                self.classes.all_pods
                if not rule.peers
                else list(
                    {p.key: p for pe in rule.peers for p in self._peer_pods(policy, pe)}.values()
                )
            )
            named = [pp for pp in rule.ports if isinstance(pp.port, str)]
            plain = bool(rule.peers) and all(pe.ip_block is None for pe in rule.peers)
            numbers: dict[tuple[str, str], dict[int, list[Pod]]] = {}
            for pp in named:
                assert isinstance(pp.port, str)
                by_number: dict[int, list[Pod]] = defaultdict(list)
                for p in reach:
                    cp = p.named_port(pp.port, pp.protocol)
                    if cp is not None:
                        by_number[cp.port].append(p)
                numbers[(pp.port, str(pp.protocol))] = dict(sorted(by_number.items()))
                if len(by_number) != 1:
                    plain = False
                else:  # a pod the rule reaches that serves the number under another name
                    number = next(iter(by_number))
                    named_keys = {p.key for p in by_number[number]}
                    if any(
                        cp.port == number and cp.protocol is pp.protocol
                        for p in reach
                        if p.key not in named_keys
                        for cp in p.ports
                    ):
                        plain = False
            for (pname, proto), by_number in numbers.items():
                if not by_number:
                    raise NoFix(f"no pod the rule reaches names a {proto} port {pname!r}")
                notes.append(
                    f"{pname} is "
                    + ", ".join(
                        f"{n} on {len(pods)} pod(s) ({pods[0].key})"
                        for n, pods in by_number.items()
                    )
                )
            if plain:
                for entry in wire_rule.get("ports", []):
                    key = (entry.get("port"), entry.get("protocol", "TCP"))
                    if key in numbers:
                        entry["port"] = next(iter(numbers[key]))
                continue
            keep = [e for e in wire_rule.get("ports", []) if not isinstance(e.get("port"), str)]
            new_rules = []
            for (_, proto), by_number in numbers.items():
                for number, pods in by_number.items():
                    new_rules.append(
                        {
                            "to": self._precise_peers(pods, policy.namespace),
                            "ports": [{"protocol": proto, "port": number}],
                        }
                    )
            rules = d["spec"][direction]
            if keep:
                wire_rule["ports"] = keep
                rules.extend(new_rules)
            else:
                rules[index] = new_rules[0]
                rules.extend(new_rules[1:])
        split = any(
            "to" in r and len(r.get("ports", [])) == 1
            for d in edits.values()
            for r in d["spec"].get("egress", [])
        )
        return Proposal(
            objects=tuple(edits.values()),
            action=FixAction.APPLY,
            when=FixWhen.BEFORE,
            summary="replaces the named port with its number"
            + (" (one rule per number, to the pods that name it)" if split else ""),
            explanation="Cilium < 1.20 resolves an egress named port over every pod in the "
            "cluster and voids the rule when the name has several numbers (cilium/cilium#30003); "
            "NPM resolves it on each destination pod, and only pods match. "
            + "; ".join(notes)
            + (
                ". A plain number would admit more than NPM did, so each number goes with "
                "the pods that name it today; pods created later with that name are not covered"
                if split
                else ""
            )
            + ".",
            edits=tuple(edits),
        )

    def _ipblock_pods(self, finding: Finding) -> Proposal:
        edits: dict[str, dict[str, Any]] = {}
        added: list[str] = []
        for name, direction, index in self._refs(finding):
            policy = self.policies[name]
            rule = self._rule(name, direction, index)
            covered = {
                p.key: p
                for pe in rule.peers
                if pe.ip_block is not None
                for p in self._peer_pods(policy, pe)
            }
            if not covered:
                raise NoFix(f"{name} {direction}[{index}] covers no pod IP")
            d = edits.get(name) or self._policy_dict(name)
            edits[name] = d
            peers = self._precise_peers(list(covered.values()), policy.namespace)
            wire_rule = d["spec"][direction][index]
            field = "from" if direction == INGRESS else "to"
            existing = wire_rule.setdefault(field, [])
            for peer in peers:
                if peer not in existing:
                    existing.append(peer)
            added.append(
                "namespaceSelector: {}"
                if peers == [{"namespaceSelector": {}}]
                else f"the selectors of the {len(covered)} pods whose IPs it covers"
            )
        every = all(a == "namespaceSelector: {}" for a in added)
        return Proposal(
            objects=tuple(edits.values()),
            action=FixAction.APPLY,
            when=FixWhen.BEFORE,
            summary=f"adds {', '.join(dict.fromkeys(added))} next to the ipBlock",
            explanation="Cilium's ipBlock never matches pod IPs (D2); Microsoft's migration "
            "guide adds namespaceSelector/podSelector peers next to it. NPM already admitted "
            "these pods through the ipBlock, so nothing changes before the migration."
            + (
                ""
                if every
                else " Pod IPs change when pods are rescheduled: the selectors name the "
                "workloads at those addresses today."
            ),
            edits=tuple(edits),
        )

    def _ipblock_nodes(self, finding: Finding) -> Proposal:
        by_policy: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for name, direction, index in self._refs(finding):
            by_policy[name].append((direction, index))
        specs: list[dict[str, Any]] = []
        namespace = finding.namespace
        for name, refs in by_policy.items():
            policy = self.policies[name]
            spec: dict[str, Any] = {"endpointSelector": selector_dict(policy.pod_selector)}
            for direction, index in refs:
                rule = self._rule(name, direction, index)
                item: dict[str, Any] = {
                    ("toEntities" if direction == EGRESS else "fromEntities"): ["remote-node"]
                }
                ports = self._cnp_ports(rule)
                if ports:
                    item["toPorts"] = [{"ports": ports}]
                spec.setdefault(direction, []).append(item)
            specs.append(spec)
        first = self.policies[next(iter(by_policy))]
        cnp_name = self._free_name("CiliumNetworkPolicy", namespace, f"{first.name}-nodes")
        return Proposal(
            objects=(self._cnp(namespace, cnp_name, specs),),
            action=FixAction.APPLY,
            when=FixWhen.AFTER,
            summary="a CiliumNetworkPolicy admitting the remote-node entity on the rule's ports "
            "(apply after the upgrade)",
            explanation="Apply it after `az aks update --network-dataplane cilium` (NPM ignores "
            "it); until it is in place these connections are denied. remote-node stands for "
            "every other node and its hostNetwork pods, not only the addresses the ipBlock "
            "listed (AKS does not offer policy-cidr-match-mode: nodes).",
            no_np_reason=NO_NP_FOR_NODES,
        )

    def _node_egress(self, finding: Finding) -> Proposal:
        affected: dict[str, Pod] = {}
        for t in finding.traffic:
            cls = self.classes.of_pod.get(t.pods.example)
            if cls is not None:
                affected.update({p.key: p for p in cls.pods})
        namespace = finding.namespace
        scope = self.classes.pods_by_namespace.get(namespace, [])
        selectors: list[dict[str, Any]] | None = None
        for name in finding.policies:
            policy = self.policies.get(name)
            if policy is not None and {p.key for p in self._selected(policy, self.target)} == set(
                affected
            ):
                selectors = [selector_dict(policy.pod_selector)]
                break
        if selectors is None:
            sels = exact_selectors(list(affected.values()), scope, self.id_labels)
            if sels is None:
                raise NoFix(
                    "the affected pods cannot be told apart from the others in "
                    f"{namespace} by labels Cilium keeps, so no endpointSelector selects them"
                )
            selectors = [selector_dict(s) for s in sels]
        specs = [{"endpointSelector": s, "egress": [{"toEntities": ["host"]}]} for s in selectors]
        base = finding.policies[0].split("/", 1)[1] if finding.policies else "pods"
        cnp_name = self._free_name("CiliumNetworkPolicy", namespace, f"{base}-own-node")
        return Proposal(
            objects=(self._cnp(namespace, cnp_name, specs),),
            action=FixAction.APPLY,
            when=FixWhen.AFTER,
            summary="a CiliumNetworkPolicy admitting egress to the host entity (the pod's own "
            "node; apply after the upgrade)",
            explanation="NPM never polices a pod's traffic to its own node (D4a); Cilium does. "
            "Apply this after `az aks update --network-dataplane cilium` (NPM ignores it); "
            "until it is in place that traffic is denied. Narrow it with toPorts if only some "
            "node ports are needed (kubelet 10250, node-local DNS 53, ...).",
            no_np_reason="no NetworkPolicy-only fix exists for a pod's own node: no peer "
            "selects a node under Cilium; only a rule without `to` (ports only) reaches it, "
            "and that admits every destination on those ports",
        )

    def _cluster_ranges(self) -> list[str]:
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
            ip = ipaddress.ip_address(n.ip)
            if isinstance(ip, ipaddress.IPv4Address):
                nets.append(ipaddress.IPv4Network(ip))
        cidrs = [(int(n.network_address), int(n.broadcast_address)) for n in nets]
        for p in self.snapshot.pods:
            if p.ip:
                ip = ipaddress.ip_address(p.ip)
                if isinstance(ip, ipaddress.IPv4Address) and not any(
                    lo <= int(ip) <= hi for lo, hi in cidrs
                ):
                    nets.append(ipaddress.IPv4Network(ip))
        return [str(n) for n in ipaddress.collapse_addresses(nets)]

    def _external_ingress(self, finding: Finding) -> Proposal:
        assert finding.service is not None
        ns, _, name = finding.service.partition("/")
        svc = self.snapshot.service(ns, name)
        if svc is None or not svc.selector:
            raise NoFix(f"Service {finding.service} has no selector to pick its backends")
        remote = False
        for e in finding.expectations:
            dst = e.traffic.destination
            if (
                e.expected is Decision.ALLOW
                and isinstance(dst, ServiceEndpoint)
                and dst.node is not None
                and dst.backend is not None
                and dst.backend.node_name != dst.node.name
            ):
                remote = True
        ports = []
        for sp in svc.ports:
            entry = {"protocol": str(sp.protocol), "port": sp.target_port}
            if entry not in ports:
                ports.append(entry)
        rule: dict[str, Any] = {"ports": ports}
        if not remote:
            rule = {
                "from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": self._cluster_ranges()}}],
                "ports": ports,
            }
        policy_name = self._free_name("NetworkPolicy", ns, f"{name}-external-clients")
        obj = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": policy_name, "namespace": ns},
            "spec": {
                "podSelector": {"matchLabels": dict(svc.selector)},
                "policyTypes": ["Ingress"],
                "ingress": [rule],
            },
        }
        clients = sorted(
            {
                e.traffic.source.ip
                for e in finding.expectations
                if isinstance(e.traffic.source, ExternalEndpoint)
            }
        )
        if remote:
            summary = "a ports-only ingress rule on the Service's targetPorts"
            explanation = (
                "A backend reached through another node sees the receiving node as the "
                "source: NPM admitted it through an ipBlock of node addresses (D5b), Cilium "
                "sees remote-node, which no ipBlock or selector matches. Only a rule without "
                "`from` admits it, and it admits every source on these ports, in-cluster pods "
                "included. (After the upgrade, a CiliumNetworkPolicy with fromEntities "
                "[world, remote-node] on these ports is narrower.)"
            )
        else:
            summary = (
                "an ingress rule admitting addresses outside the cluster on the Service's "
                "targetPorts"
            )
            explanation = (
                "NPM lets outside clients through to a backend on the receiving node without "
                "evaluating policy (kube-proxy's masquerade mark, D5); Cilium evaluates them "
                f"with the client's address ({', '.join(clients)} in the lint). The rule "
                "admits every address outside the cluster's node and pod ranges, which is what "
                "NPM let through; narrow the ipBlock to your clients' ranges if they are known "
                "(keep 168.63.129.16 if the Azure load balancer probes the nodePort). It is "
                "safe before the migration: NPM already let these clients through."
            )
        return Proposal(
            objects=(obj,),
            action=FixAction.APPLY,
            when=FixWhen.BEFORE,
            summary=summary,
            explanation=explanation,
        )

    def _lb_in_cluster(self, finding: Finding) -> Proposal:
        raise NoFix(
            "NPM skips policy for these connections only because the client and the backend "
            "share a node (kube-proxy's masquerade mark, D5d); the same clients on another "
            "node are judged by NPM with the node's address. No policy can depend on "
            "placement, so no fix restores exactly today's behaviour: if these clients need "
            "the Service, admit them by label in the backend's ingress policy (and in their "
            "own egress policy)"
        )

    def _identity_labels(self, finding: Finding) -> Proposal:
        edits: dict[str, dict[str, Any]] = {}
        for name in finding.policies:
            policy = self.policies.get(name)
            if policy is None:
                continue
            d = self._policy_dict(name)
            changed = False
            scope = self.classes.pods_by_namespace.get(policy.namespace, [])
            if any(self._is_excluded(k) for k in tuple(policy.pod_selector.keys())):
                wanted = self._selected(policy, self.npm)
                sels = exact_selectors(wanted, scope, self.id_labels)
                keys = sorted(k for k in tuple(policy.pod_selector.keys()) if self._is_excluded(k))
                if sels is None or len(sels) != 1:
                    raise NoFix(
                        f"the pods {name} selects differ from the others in {policy.namespace} "
                        f"only in labels Cilium leaves out of identities ({', '.join(keys)}); "
                        "give them a label of their own and select that"
                    )
                d["spec"]["podSelector"] = selector_dict(sels[0])
                changed = True
            for direction, rules in ((INGRESS, policy.ingress), (EGRESS, policy.egress)):
                field = "from" if direction == INGRESS else "to"
                for rule in rules:
                    new_peers: list[dict[str, Any]] = []
                    touched = False
                    for pe, wire in zip(
                        rule.peers, d["spec"][direction][rule.index].get(field, []), strict=True
                    ):
                        sel = pe.pod_selector
                        if sel is None or not any(self._is_excluded(k) for k in tuple(sel.keys())):
                            new_peers.append(wire)
                            continue
                        wanted = self._peer_pods(policy, pe)
                        if not wanted:
                            new_peers.append(wire)
                            continue
                        scope_pods = [
                            p
                            for ns in self._peer_namespaces(policy, pe)
                            for p in self.classes.pods_by_namespace.get(ns, [])
                        ]
                        peer_sels = exact_selectors(wanted, scope_pods, self.id_labels)
                        if peer_sels is None:
                            raise NoFix(
                                f"the pods a peer of {name} {direction}[{rule.index}] selects "
                                "cannot be told apart from the others by labels Cilium keeps; "
                                "give them a label of their own and select that"
                            )
                        for s in peer_sels:
                            item: dict[str, Any] = {"podSelector": selector_dict(s)}
                            if pe.namespace_selector is not None:
                                item["namespaceSelector"] = selector_dict(pe.namespace_selector)
                            new_peers.append(item)
                        touched = True
                    if touched:
                        d["spec"][direction][rule.index][field] = new_peers
                        changed = True
            if changed:
                edits[name] = d
        if not edits:
            raise NoFix("no selector of these policies uses a label Cilium leaves out")
        return Proposal(
            objects=tuple(edits.values()),
            action=FixAction.APPLY,
            when=FixWhen.BEFORE,
            summary="selects the same pods by labels Cilium keeps in identities",
            explanation="Cilium leaves some labels (statefulset.kubernetes.io/pod-name, "
            "pod-template-hash, keys starting kubernetes.io or k8s.io, ...) out of security "
            "identities, so a selector on them matches nothing (D6). The new selectors pick "
            "exactly the pods the old ones pick today.",
            edits=tuple(edits),
        )

    def _sctp(self, finding: Finding) -> Proposal:
        raise NoFix(
            "Cilium as AKS runs it has SCTP disabled (enable-sctp: false), so SCTP port rules "
            "never match (D8); the only NetworkPolicy form that admits SCTP is a rule without "
            "ports, which admits every port and protocol from those peers"
        )

    def _untranslatable(self, finding: Finding) -> Proposal:
        objs = []
        reasons = []
        for name in finding.policies:
            t = self.targets.get(name)
            if t is not None and t.untranslatable:
                objs.append(network_policy_dict(self.policies[name]))
                reasons.append(f"{name}: {t.untranslatable}")
        if not objs:
            raise NoFix("NPM translates every policy involved")
        outage = any(c is Change.OUTAGE for c in finding.changes)
        return Proposal(
            objects=tuple(objs),
            action=FixAction.DELETE,
            when=FixWhen.BEFORE,
            summary="deletes the policy NPM never enforced",
            explanation="NPM could not translate it and never enforced it ("
            + "; ".join(reasons)
            + "); Cilium will. Deleting it keeps today's behaviour. To keep the policy instead, "
            + (
                "accept that these connections will be cut"
                if outage
                else "accept that these connections change"
            )
            + " and probe them after the migration.",
        )
