"""Cilium's policy in the lab: identities and entities, and the per-pod rules they compile to.

`Compiler` turns a topology's NetworkPolicies and Cilium policies into each local pod's
`ingress_N`/`egress_N` chain bodies (nft); `cilium.py` wraps them, with the Service
translation, into one table per node. The semantics are those of `cilium.py`'s docstring.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from netparity.facts.cilium_config import cilium_settings
from netparity.facts.cilium_local_cluster import policy_default_local_cluster
from netparity.lab.dataplanes.cilium_nft import ALL as ALL
from netparity.lab.dataplanes.cilium_nft import ANY_L4 as ANY_L4
from netparity.lab.dataplanes.cilium_nft import HOST as HOST
from netparity.lab.dataplanes.cilium_nft import L3 as L3
from netparity.lab.dataplanes.cilium_nft import L4 as L4
from netparity.lab.dataplanes.cilium_nft import REMOTE_NODE as REMOTE_NODE
from netparity.lab.dataplanes.cilium_nft import WORLD as WORLD
from netparity.lab.dataplanes.cilium_nft import PodRules as PodRules
from netparity.lab.dataplanes.cilium_nft import emit as _emit
from netparity.lab.dataplanes.cilium_nft import world as _world
from netparity.lab.dataplanes.services import (
    ip_sorted,
)
from netparity.lab.topology import LabTopology
from netparity.model.ciliumpolicy import (
    CiliumPolicy,
    CiliumPort,
    CiliumProtocol,
    CiliumRule,
    Entity,
)
from netparity.model.networkpolicy import NetworkPolicy, PolicyPeer, PolicyPort
from netparity.model.objects import Pod, Protocol
from netparity.model.selectors import LabelSelector, Operator, Requirement

NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"


# ---------------------------------------------------------------------------- identities


def _normalize(selector: LabelSelector) -> LabelSelector | None:
    """A Cilium selector with `k8s:`/`any:` prefixes removed; None if it names another source."""

    def key(k: str) -> str | None:
        for source in ("k8s:", "any:"):
            if k.startswith(source):
                return k[len(source) :]
        if ":" in k:
            return None  # reserved:, container:, cidr:, ... never match a pod's k8s labels
        return k

    labels: list[tuple[str, str]] = []
    for k, v in selector.match_labels:
        nk = key(k)
        if nk is None:
            return None
        labels.append((nk, v))
    exprs: list[Requirement] = []
    for req in selector.match_expressions:
        nk = key(req.key)
        if nk is None:
            return None
        exprs.append(replace(req, key=nk))
    return LabelSelector(match_labels=tuple(labels), match_expressions=tuple(exprs))


def _reserved_entity(selector: LabelSelector) -> Entity | bool | None:
    """`reserved:<entity>` selectors select an entity; False when the selector is not one."""
    keys = list(selector.keys())
    if not any(k.startswith("reserved:") for k in keys):
        return False
    if len(selector.match_labels) == 1 and not selector.match_expressions:
        name = selector.match_labels[0][0][len("reserved:") :]
        try:
            return Entity(name)
        except ValueError:
            return None
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """A pod as Cilium sees it: its IP and its identity labels."""

    pod: Pod
    ip: str
    pod_labels: Mapping[str, str]  # filtered pod labels (what a K8s podSelector matches)
    labels: Mapping[str, str]  # + namespace label, namespace labels (CNP selectors)
    namespace_labels: Mapping[str, str]


class Compiler:
    """Everything cluster-wide Cilium knows: endpoints, named ports, policies."""

    def __init__(
        self, topology: LabTopology, *, honour_end_port: bool, local_cluster: bool = False
    ) -> None:
        snap = topology.snapshot
        self.topology = topology
        self.honour_end_port = honour_end_port
        self.settings = cilium_settings(snap.config)
        # D18: `policy-default-local-cluster` (the release's default, or the cluster's own
        # cilium-config setting) adds the cluster label to every NetworkPolicy peer.
        configured = policy_default_local_cluster(snap.config)
        self.local_cluster = local_cluster if configured is None else configured
        self.filter = self.settings.labels
        ns_labels = {ns.name: dict(ns.labels) for ns in snap.namespaces}
        self.endpoints: list[Endpoint] = []
        for p in snap.pods:
            if p.host_network or p.ip is None or ipaddress.ip_address(p.ip).version != 4:
                continue
            nsl = ns_labels.get(p.namespace) or dict(snap.namespace(p.namespace).labels)
            pod_labels = self.filter.identity(p.labels)
            labels = dict(pod_labels)
            labels[NAMESPACE_LABEL] = p.namespace
            labels[CLUSTER_LABEL] = self.settings.cluster_name  # D28
            labels["io.cilium.k8s.policy.serviceaccount"] = p.service_account  # D28
            for k, v in nsl.items():
                labels[NAMESPACE_LABELS_PREFIX + k] = v
            self.endpoints.append(
                Endpoint(pod=p, ip=p.ip, pod_labels=pod_labels, labels=labels, namespace_labels=nsl)
            )
        self.by_key = {e.pod.key: e for e in self.endpoints}
        # D28: kube-apiserver: `default/kubernetes`'s addresses outside the pods (also `world`)
        api = snap.endpoints.get("default/kubernetes")
        ips = tuple(ip_sorted(ip for ip in (api.outside if api else ()) if ":" not in ip))
        self.apiserver = (L3(kind="apiserver", ips=ips),) if ips else ()
        self._np_peers: dict[tuple[str, PolicyPeer], list[L3]] = {}
        self._cnp_l3: dict[tuple[str | None, CiliumRule], list[L3]] = {}
        # egress named ports resolve against every pod of the cluster (D3), except
        # hostNetwork pods: Cilium's named-port map is built from its endpoints only
        # (cilium/cilium pkg/k8s/watchers/pod.go:884-887 at v1.17.5, D27)
        self.named: dict[tuple[str, Protocol], set[int]] = {}
        for p in snap.pods:
            if p.host_network:
                continue
            for cp in p.ports:
                if cp.name:
                    self.named.setdefault((cp.name, cp.protocol), set()).add(cp.port)

    # -- peers

    def _pods(self, match: Iterable[Endpoint]) -> L3:
        return L3(kind="pods", ips=tuple(ip_sorted(e.ip for e in match)))

    def np_peer(self, policy: NetworkPolicy, peer: PolicyPeer) -> list[L3]:
        key = (policy.namespace, peer)
        if key not in self._np_peers:
            self._np_peers[key] = self._np_peer(policy, peer)
        return self._np_peers[key]

    def _np_peer(self, policy: NetworkPolicy, peer: PolicyPeer) -> list[L3]:
        if peer.ip_block is not None:
            w = _world(peer.ip_block)
            return [w] if w is not None else []
        out = [self._np_pods(policy, peer)]
        # The peer as Cilium's parseNetworkPolicyPeer builds it, matched against the reserved
        # identities too (D18), whose labels hold none of its k8s keys.
        selector = self._np_selector(peer)
        if selector is not None:
            out += [l3 for l3 in (HOST, REMOTE_NODE, WORLD) if selector.matches({})]
        return out

    def _np_selector(self, peer: PolicyPeer) -> LabelSelector | None:
        """A namespaceSelector peer as one Cilium selector: the namespace keys prefixed, the
        namespace-exists requirement only when the namespaceSelector is empty
        (pkg/k8s/network_policy.go:88-92 at v1.17), the podSelector's terms, and the
        local-cluster requirement under `policy-default-local-cluster`. None: no
        namespaceSelector (the policy's namespace is then always required)."""
        nsel = peer.namespace_selector
        if nsel is None:
            return None
        labels = [(NAMESPACE_LABELS_PREFIX + k, v) for k, v in nsel.match_labels]
        exprs = [replace(r, key=NAMESPACE_LABELS_PREFIX + r.key) for r in nsel.match_expressions]
        if not labels and not exprs:
            exprs.append(Requirement(key=NAMESPACE_LABEL, operator=Operator.EXISTS))
        if peer.pod_selector is not None:
            labels += peer.pod_selector.match_labels
            exprs += peer.pod_selector.match_expressions
        if self.local_cluster:
            labels.append((CLUSTER_LABEL, "default"))
        return LabelSelector(match_labels=tuple(labels), match_expressions=tuple(exprs))

    def _np_pods(self, policy: NetworkPolicy, peer: PolicyPeer) -> L3:
        eps = self.endpoints
        if peer.namespace_selector is not None:
            nsel = peer.namespace_selector
            eps = [e for e in eps if nsel.matches(e.namespace_labels)]
        else:
            eps = [e for e in eps if e.pod.namespace == policy.namespace]
        if peer.pod_selector is not None:
            psel = peer.pod_selector
            eps = [e for e in eps if psel.matches(e.pod_labels)]
        return self._pods(eps)

    def cnp_endpoints(self, policy: CiliumPolicy, selector: LabelSelector) -> list[L3]:
        entity = _reserved_entity(selector)
        if entity is not False:
            return self.entity(entity) if isinstance(entity, Entity) else []
        norm = _normalize(selector)
        if norm is None:
            return []
        keys = set(norm.keys())
        scoped = NAMESPACE_LABEL in keys or any(k.startswith(NAMESPACE_LABELS_PREFIX) for k in keys)
        eps = [e for e in self.endpoints if norm.matches(e.labels)]
        if policy.namespace is not None and not scoped:
            eps = [e for e in eps if e.pod.namespace == policy.namespace]
        return [self._pods(eps)]

    def entity(self, entity: Entity) -> list[L3]:
        if entity is Entity.ALL:
            return [ALL]
        if entity in (Entity.WORLD, Entity.WORLD_IPV4):
            return [WORLD]
        if entity is Entity.CLUSTER:  # D28: kube-apiserver is part of the cluster
            return [self._pods(self.endpoints), HOST, REMOTE_NODE, *self.apiserver]
        if entity is Entity.HOST:
            return [HOST]
        if entity is Entity.REMOTE_NODE:
            return [REMOTE_NODE]
        # init, health, unmanaged, ingress, world-ipv6: none in the lab
        return list(self.apiserver) if entity is Entity.KUBE_APISERVER else []

    # -- ports

    def _named(
        self, name: str, protos: Sequence[Protocol], subject: Pod, ingress: bool
    ) -> int | None:
        if ingress:
            for cp in subject.ports:
                if cp.name == name and cp.protocol in protos:
                    return cp.port
            return None
        numbers: set[int] = set()
        for proto in protos:
            numbers |= self.named.get((name, proto), set())
        return next(iter(numbers)) if len(numbers) == 1 else None

    def _range(self, port: int, end: int | None) -> tuple[int, int | None]:
        return (port, end if self.honour_end_port else None)

    def np_ports(self, ports: Sequence[PolicyPort], subject: Pod, ingress: bool) -> list[L4]:
        if not ports:
            return [ANY_L4]
        out: list[L4] = []
        for p in ports:
            if p.protocol is Protocol.SCTP and not self.settings.enable_sctp:
                continue  # SCTP is off: SCTP port rules never match (D8)
            proto = p.protocol.lower()
            if p.port is None:
                out.append(L4(proto=proto))
            elif isinstance(p.port, str):
                n = self._named(p.port, (p.protocol,), subject, ingress)
                if n is not None:
                    out.append(L4(proto=proto, lo=n))
            else:
                lo, hi = self._range(p.port, p.end_port)
                out.append(L4(proto=proto, lo=lo, hi=hi))
        return out

    def cnp_ports(self, ports: Sequence[CiliumPort], subject: Pod, ingress: bool) -> list[L4]:
        if not ports:
            return [ANY_L4]
        out: list[L4] = []
        for p in ports:
            if p.protocol is CiliumProtocol.SCTP and not self.settings.enable_sctp:
                continue  # D8, as above
            protos: tuple[Protocol, ...]
            if p.protocol is CiliumProtocol.ANY:
                # ANY: the protocols the datapath parses, SCTP among them only when enabled
                protos = (Protocol.TCP, Protocol.UDP)
                if self.settings.enable_sctp:
                    protos += (Protocol.SCTP,)
            else:
                protos = (Protocol(p.protocol.value),)
            if p.port is None:
                out += (
                    [ANY_L4] if p.protocol is CiliumProtocol.ANY else [L4(proto=protos[0].lower())]
                )
                continue
            if isinstance(p.port, str):
                n = self._named(p.port, protos, subject, ingress)
                if n is not None:
                    out += [L4(proto=pr.lower(), lo=n) for pr in protos]
                continue
            lo, hi = self._range(p.port, p.end_port)
            out += [L4(proto=pr.lower(), lo=lo, hi=hi) for pr in protos]
        return out

    # -- per pod

    def pod_rules(self, ep: Endpoint, *, has_remote_nodes: bool) -> tuple[PodRules, PodRules]:
        ingress, egress = PodRules(), PodRules()
        self._np_rules(ep, ingress, egress, has_remote_nodes)
        self._cnp_rules(ep, ingress, egress, has_remote_nodes)
        return ingress, egress

    def _np_rules(
        self, ep: Endpoint, ingress: PodRules, egress: PodRules, has_remote_nodes: bool
    ) -> None:
        """The rules of the NetworkPolicies that select the pod."""
        snap = self.topology.snapshot
        for np_ in snap.network_policies:
            if np_.namespace != ep.pod.namespace or not np_.pod_selector.matches(ep.pod_labels):
                continue
            for direction, rules, into in (
                ("Ingress", np_.ingress, ingress),
                ("Egress", np_.egress, egress),
            ):
                # SEMANTICS D23: Cilium's ParseNetworkPolicy (cilium/cilium
                # pkg/k8s/network_policy.go) translates every spec.ingress/spec.egress rule
                # without reading policyTypes, which only adds the empty default-deny rule to
                # a direction that has none; a direction with any rule is enforced.
                if direction not in np_.policy_types and not rules:
                    continue
                into.isolated = True
                is_in = direction == "Ingress"
                for rule in rules:
                    why = f"NetworkPolicy {np_.key} {direction.lower()}[{rule.index}]"
                    if rule.peers:
                        l3s = [x for p in rule.peers for x in self.np_peer(np_, p)]
                    else:
                        l3s = [ALL]  # no from/to: a true wildcard incl. host, remote-node, world
                    _emit(
                        into,
                        l3s,
                        self.np_ports(rule.ports, ep.pod, is_in),
                        "return",
                        why,
                        is_in,
                        has_remote_nodes,
                    )

    def _cnp_rules(
        self, ep: Endpoint, ingress: PodRules, egress: PodRules, has_remote_nodes: bool
    ) -> None:
        """The rules of the Cilium policies that select the pod (deny rules first)."""
        snap = self.topology.snapshot
        for cp in snap.cilium_policies:
            if cp.node_selector is not None or cp.endpoint_selector is None:
                continue
            # a CNP's k8s:io.kubernetes.pod.namespace match label is overwritten with its own
            # namespace (ParseToCiliumRule); other forms stay and then select nothing
            written = cp.endpoint_selector
            if cp.namespace is not None:
                written = replace(
                    written,
                    match_labels=tuple(
                        (k, v) for k, v in written.match_labels if k != "k8s:" + NAMESPACE_LABEL
                    ),
                )
            subject = _normalize(written)
            if subject is None or not subject.matches(ep.labels):
                continue
            if cp.namespace is not None and cp.namespace != ep.pod.namespace:
                continue
            for direction, allows, denies, default_deny, into in (
                ("ingress", cp.ingress or (), cp.ingress_deny, cp.default_deny_ingress, ingress),
                ("egress", cp.egress or (), cp.egress_deny, cp.default_deny_egress, egress),
            ):
                # `enableDefaultDeny: false` adds rules without isolating, but only where
                # `enable-non-default-deny-policies` is on; off, the field is ignored (D28)
                honoured = self.settings.enable_non_default_deny_policies
                if (allows or denies) and (default_deny is not False or not honoured):
                    into.isolated = True
                is_in = direction == "ingress"
                for crules, verdict, label in (
                    (denies, "drop", f"{direction}Deny"),
                    (allows, "return", direction),
                ):
                    for crule in crules:
                        why = f"{cp.kind} {cp.key} {label}[{crule.index}]"
                        if crule.unsupported:
                            into.notes.append(
                                f"skipped {why}: unsupported {', '.join(crule.unsupported)}"
                            )
                            continue
                        _emit(
                            into,
                            self.cnp_l3(cp, crule),
                            self.cnp_ports(crule.ports, ep.pod, is_in),
                            verdict,
                            why,
                            is_in,
                            has_remote_nodes,
                        )

    def cnp_l3(self, policy: CiliumPolicy, rule: CiliumRule) -> list[L3]:
        key = (policy.namespace, rule)
        if key not in self._cnp_l3:
            self._cnp_l3[key] = self._cnp_l3_uncached(policy, rule)
        return self._cnp_l3[key]

    def _cnp_l3_uncached(self, policy: CiliumPolicy, rule: CiliumRule) -> list[L3]:
        if not rule.has_l3:
            # ports only: a wildcard; an empty rule `{}` selects nothing (but still isolates)
            return [ALL] if rule.ports else []
        out: list[L3] = []
        for sel in rule.endpoints or ():
            out += self.cnp_endpoints(policy, sel)
        for ent in rule.entities:
            out += self.entity(ent)
        for block in rule.cidrs:
            w = _world(block)
            if w is not None:
                out.append(w)
        return out


# ---------------------------------------------------------------------------- rendering
