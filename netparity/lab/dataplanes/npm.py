"""Azure NPM v2 on Linux, compiled from the snapshot's NetworkPolicies, behind kube-proxy.

ipsets (cluster-wide, the same on every node; names hashed to `azure-npm-<fnv32a>` as NPM
does, the readable name in a comment line): `ns-<ns>`, `podlabel-<k>[:<v>]`,
`nestedlabel-<k>:<v1>:<v2>` (In with several values), `nslabel-<k>[:<v>]`,
`all-namespaces` (hash:net of pod IPs; hostNetwork pods are never members), one hash:net
per ipBlock peer (`nomatch` entries for `except`, 0.0.0.0/0 as two /1 halves) and
`namedport:<name>` (hash:ip,port of podIP,<proto>:<port>).

Chains (filter; FORWARD only, NEW only, after kube-proxy's KUBE-FORWARD, or before it when
`azure-npm-config` sets `PlaceAzureChainFirst`, as positionAzureChainJumpRule in
npm/pkg/dataplane/policies/chain-management_linux.go places it):
  FORWARD -m conntrack --ctstate NEW -j AZURE-NPM
  AZURE-NPM -> AZURE-NPM-INGRESS, AZURE-NPM-EGRESS, AZURE-NPM-ACCEPT
  AZURE-NPM-INGRESS: dst in a policy's subject sets -> AZURE-NPM-INGRESS-<hash>; drop on 0x400
  AZURE-NPM-INGRESS-<hash>: allow ACLs -> AZURE-NPM-INGRESS-ALLOW-MARK; last: mark 0x400
  AZURE-NPM-INGRESS-ALLOW-MARK: mark 0x200, then AZURE-NPM-EGRESS
  AZURE-NPM-EGRESS: src in subject sets -> AZURE-NPM-EGRESS-<hash>; drop on 0x800;
                    0x200 -> AZURE-NPM-ACCEPT
  AZURE-NPM-EGRESS-<hash>: allow ACLs -> AZURE-NPM-ACCEPT; last: mark 0x800
  AZURE-NPM-ACCEPT: ACCEPT
Marks are set and matched under their own bit (0x200/0x200, ...), never the whole mark, as NPM
has done since PR #1313 ("updating NPM marks with a mask to not clash with kube-proxy"): with
PlaceAzureChainFirst a packet NPM accepts still carries kube-proxy's 0x4000 and is SNATed.
A default drop only marks, so a later policy can still allow: the union of policies.
A direction with an allow-all rule (`{}`) is one ALLOW-ALL rule: NPM returns before reading
its other rules (D20). Policies TranslatePolicy rejects (an ipBlock cidr util.IsIPV4 refuses:
IPv6 or a non-canonical /0; an In/NotIn value failing the label regex, any length) are
skipped whole (fail-open, D11, D20) and listed in comment lines.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netparity.lab.dataplanes.iptables import IpsetFile, Table, comment, render_tables
from netparity.lab.dataplanes.kubeproxy import define_sets, kube_proxy
from netparity.lab.dataplanes.registry import register
from netparity.lab.dataplanes.services import ip_sorted, service_routes
from netparity.lab.topology import LabTopology, NodeRules
from netparity.model.networkpolicy import (
    IPBlock,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)
from netparity.model.npmconfig import place_azure_chain_first
from netparity.model.objects import Pod
from netparity.model.selectors import LabelSelector, Operator, Requirement

INGRESS_ALLOW_MARK = 0x200
INGRESS_DROP_MARK = 0x400
EGRESS_DROP_MARK = 0x800

AZURE_NPM = "AZURE-NPM"
INGRESS = "AZURE-NPM-INGRESS"
EGRESS = "AZURE-NPM-EGRESS"
ACCEPT = "AZURE-NPM-ACCEPT"
INGRESS_ALLOW = "AZURE-NPM-INGRESS-ALLOW-MARK"

# The nft text every NPM node gets: remove the Cilium dataplane's table if present.
RESET_NFT = "table ip cilium\ndelete table ip cilium\n"


def fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode():
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def hashed(name: str) -> str:
    return f"azure-npm-{fnv32a(name)}"


class UntranslatableError(Exception):
    """NPM's TranslatePolicy fails: the policy is not programmed at all."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SetMatch:
    name: str  # readable
    negate: bool = False


class Sets:
    """NPM's ipsets, filled from the snapshot; each is defined once, when a rule uses it."""

    def __init__(self, topology: LabTopology, ipsets: IpsetFile) -> None:
        snap = topology.snapshot
        self._ipsets = ipsets
        self._pods: list[Pod] = [
            p for p in snap.pods if not p.host_network and p.ip is not None and _ipv4(p.ip)
        ]
        self._ns_labels = {ns.name: ns.labels for ns in snap.namespaces}
        for p in self._pods:
            if p.namespace not in self._ns_labels:
                self._ns_labels[p.namespace] = snap.namespace(p.namespace).labels

    def _hash_net(self, name: str, pods: Iterable[Pod]) -> str:
        if hashed(name) not in self._ipsets:
            ips = ip_sorted(p.ip for p in pods if p.ip is not None)
            self._ipsets.define(hashed(name), "hash:net", ips, note=name)
        return name

    def ns(self, namespace: str) -> SetMatch:
        name = f"ns-{namespace}"
        self._hash_net(name, (p for p in self._pods if p.namespace == namespace))
        return SetMatch(name=name)

    def all_namespaces(self) -> SetMatch:
        self._hash_net("all-namespaces", self._pods)
        return SetMatch(name="all-namespaces")

    def pod_label(self, key: str, values: tuple[str, ...] | None, negate: bool = False) -> SetMatch:
        if values is None:
            name = f"podlabel-{key}"
            members = (p for p in self._pods if key in p.labels)
        elif len(values) == 1:
            name = f"podlabel-{key}:{values[0]}"
            members = (p for p in self._pods if p.labels.get(key) == values[0])
        else:
            name = f"nestedlabel-{key}:" + ":".join(values)
            members = (p for p in self._pods if p.labels.get(key) in values)
        self._hash_net(name, members)
        return SetMatch(name=name, negate=negate)

    def ns_label(self, key: str, values: tuple[str, ...] | None, negate: bool = False) -> SetMatch:
        def ns_has(ns: str) -> bool:
            labels: Mapping[str, str] = self._ns_labels.get(ns, {})
            if values is None:
                return key in labels
            return labels.get(key) in values

        name = f"nslabel-{key}" if values is None else f"nslabel-{key}:" + ":".join(values)
        self._hash_net(name, (p for p in self._pods if ns_has(p.namespace)))
        return SetMatch(name=name, negate=negate)

    def named_port(self, port_name: str) -> SetMatch:
        name = f"namedport:{port_name}"
        if hashed(name) in self._ipsets:
            return SetMatch(name=name)
        members: set[tuple[str, str, int]] = set()
        for p in self._pods:
            assert p.ip is not None
            for cp in p.ports:
                if cp.name == port_name:
                    members.add((p.ip, cp.protocol.lower(), cp.port))
        entries = [
            f"{ip},{proto}:{port}"
            for ip, proto, port in sorted(
                members, key=lambda m: (ipaddress.IPv4Address(m[0]), m[1], m[2])
            )
        ]
        self._ipsets.define(hashed(name), "hash:ip,port", entries, note=name)
        return SetMatch(name=name)

    def ip_block(self, name: str, block: IPBlock) -> SetMatch:
        entries: dict[str, bool] = {}  # cidr -> nomatch

        def put(net: ipaddress.IPv4Network | ipaddress.IPv6Network, nomatch: bool) -> None:
            if net.prefixlen == 0:
                entries["0.0.0.0/1"] = nomatch
                entries["128.0.0.0/1"] = nomatch
            else:
                entries[str(net)] = nomatch

        put(block.cidr, False)
        for e in block.excepts:
            put(e, True)
        members = [f"{net} nomatch" if nm else net for net, nm in entries.items()]
        self._ipsets.define(hashed(name), "hash:net", members, note=name)
        return SetMatch(name=name)


def _ipv4(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 4
    except ValueError:
        return False


def _match(specs: list[SetMatch], direction: str) -> str:
    parts = []
    for s in specs:
        neg = "! " if s.negate else ""
        parts.append(f"-m set {neg}--match-set {hashed(s.name)} {direction}")
    return " ".join(parts)


def _describe(specs: list[SetMatch]) -> str:
    return "-AND-".join(("!" if s.negate else "") + s.name for s in specs) or "ALL"


def _selector_specs(selector: LabelSelector, sets: Sets, *, pods: bool) -> list[SetMatch]:
    label = sets.pod_label if pods else sets.ns_label
    specs: list[SetMatch] = [label(k, (v,)) for k, v in selector.match_labels]
    for req in selector.match_expressions:
        values = tuple(sorted(req.values))
        if req.operator is Operator.IN:
            specs.append(label(req.key, values))
        elif req.operator is Operator.NOT_IN:
            specs += [label(req.key, (v,), negate=True) for v in values]
        elif req.operator is Operator.EXISTS:
            specs.append(label(req.key, None))
        else:
            specs.append(label(req.key, None, negate=True))
    return specs


def _pods_in_ns(namespace: str, selector: LabelSelector, sets: Sets) -> list[SetMatch]:
    return [sets.ns(namespace), *_selector_specs(selector, sets, pods=True)]


def _namespaces(selector: LabelSelector, sets: Sets) -> list[SetMatch]:
    specs = _selector_specs(selector, sets, pods=False)
    if not specs:
        # D18: parseNSSelector anchors only an empty selector on all-namespaces
        # (npm/pkg/controlplane/translation/parseSelector.go:207-214); a purely negative one
        # stays `! --match-set nslabel-...`, true of outside addresses, nodes, hostNetwork pods
        specs.insert(0, sets.all_namespaces())
    return specs


_VALID_LABEL = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _valid_label_value(value: str) -> bool:
    """isValidLabelValue (npm/pkg/controlplane/translation/parseSelector.go:17, 312-319): the
    regex must match the whole value; there is no length limit."""
    return _VALID_LABEL.fullmatch(value) is not None


def _is_ipv4(cidr: str) -> bool:
    """util.IsIPV4 (npm/util/util.go:366-384), on the cidr as written."""
    ip_only = cidr.split("/")
    if "/0" in cidr and ip_only[0] != "0.0.0.0":
        return False  # a non-canonical /0 such as 10.0.0.0/0 (SEMANTICS D20)
    try:
        if ipaddress.ip_address(ip_only[0]).version != 4:
            return False
        if "/" in cidr:
            ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return True


def _check_selector(selector: LabelSelector | None, where: str) -> None:
    if selector is None:
        return
    for req in selector.match_expressions:
        in_not_in = req.operator in (Operator.IN, Operator.NOT_IN)
        if in_not_in and not all(_valid_label_value(v) for v in req.values):
            raise UntranslatableError(f"{where}: an invalid matchExpressions value")


def _allow_all(rules: tuple[PolicyRule, ...]) -> bool:
    """isAllowAllToIngress / isAllowAllToEgress (translatePolicy.go:560-568, 603-611)."""
    return any(not r.peers and not r.ports for r in rules)


def _check_translatable(policy: NetworkPolicy) -> None:
    """The errors TranslatePolicy returns on Linux (npm/pkg/controlplane/translation/
    translatePolicy.go), in its order: spec.podSelector always (:655-658); then each direction
    policyTypes names (:666-678), unless it has an allow-all rule, whose early return
    (:575-578, :618-621) leaves its other rules unread; in those, an ipBlock cidr util.IsIPV4
    rejects (:233-235) and invalid In/NotIn values in a peer's selectors."""
    _check_selector(policy.pod_selector, "spec.podSelector")
    for direction, rules in (("Ingress", policy.ingress), ("Egress", policy.egress)):
        if direction not in policy.policy_types or _allow_all(rules):
            continue
        for rule in rules:
            where = f"{direction.lower()}[{rule.index}]"
            for peer in rule.peers:
                if peer.ip_block is not None:
                    if not _is_ipv4(peer.ip_block.written):
                        raise UntranslatableError(
                            f"{where} has an ipBlock NPM does not take for IPv4 "
                            f"({peer.ip_block.written})"
                        )
                    continue
                _check_selector(peer.pod_selector, where)
                _check_selector(peer.namespace_selector, where)


def _port_match(port: PolicyPort, sets: Sets) -> tuple[str, str]:
    proto = port.protocol.lower()
    if port.port is None:
        return f"-p {proto}", f"ON-{port.protocol}"
    if isinstance(port.port, str):
        np_ = sets.named_port(port.port)
        return (
            f"-p {proto} {_match([np_], 'dst,dst')}",
            f"ON-{port.protocol}-TO-NAMEDPORT-{port.port}",
        )
    rng = str(port.port)
    if port.end_port is not None and port.end_port != port.port:
        rng = f"{port.port}:{port.end_port}"
    return f"-p {proto} -m {proto} --dport {rng}", f"ON-{port.protocol}-TO-PORT-{rng}"


def _flatten_ns_selector(selector: LabelSelector) -> list[LabelSelector]:
    """SEMANTICS D19, as NPM does it (Azure/azure-container-networking
    npm/pkg/controlplane/translation/parseSelector.go:21-142, flattenNameSpaceSelector and
    zipMatchExprs): each multi-value In/NotIn expression of a namespaceSelector is split into
    one single-value expression per value, and every combination becomes a selector of its
    own, rendered as a rule of its own (so the selectors are ORed). Pod selectors keep one
    nested set instead."""
    flat = [
        LabelSelector(
            match_labels=selector.match_labels,
            match_expressions=tuple(
                r
                for r in selector.match_expressions
                if r.operator not in (Operator.IN, Operator.NOT_IN) or len(r.values) == 1
            ),
        )
    ]
    for req in selector.match_expressions:
        if req.operator not in (Operator.IN, Operator.NOT_IN) or len(req.values) == 1:
            continue
        flat = [
            LabelSelector(
                match_labels=base.match_labels,
                match_expressions=(
                    *base.match_expressions,
                    Requirement(key=req.key, operator=req.operator, values=frozenset({v})),
                ),
            )
            for base in flat
            for v in sorted(req.values)
        ]
    return flat


def _peer_match(
    policy: NetworkPolicy, peer: PolicyPeer, sets: Sets, tag: str
) -> list[list[SetMatch]]:
    """One peer's matches: each list is one iptables rule (ANDed sets); the rules are ORed."""
    if peer.ip_block is not None:
        return [[sets.ip_block(tag, peer.ip_block)]]
    if peer.namespace_selector is not None:
        out = []
        for nsel in _flatten_ns_selector(peer.namespace_selector):
            specs = _namespaces(nsel, sets)
            if peer.pod_selector is not None:
                specs += _selector_specs(peer.pod_selector, sets, pods=True)
            out.append(specs)
        return out
    if peer.pod_selector is not None:
        return [_pods_in_ns(policy.namespace, peer.pod_selector, sets)]
    return [[]]


def _policy_chains(policy: NetworkPolicy, sets: Sets, filt: Table) -> None:
    """Rules of one (translatable) policy: its chains and the jumps to them."""
    key = policy.key
    subject = _pods_in_ns(policy.namespace, policy.pod_selector, sets)
    for direction, rules in (("Ingress", policy.ingress), ("Egress", policy.egress)):
        if direction not in policy.policy_types:
            continue
        ingress = direction == "Ingress"
        base = INGRESS if ingress else EGRESS
        chain = f"{base}-{fnv32a(key)}"
        peer_dir = "src" if ingress else "dst"
        allow = f"-j {INGRESS_ALLOW}" if ingress else f"-j {ACCEPT}"
        word = "FROM" if ingress else "TO"
        if _allow_all(rules):
            # the allow-all early return: one ACL allowing everything, no default drop
            filt.add(chain, f"{comment(f'ALLOW-ALL-{word}')} {allow}")
            rules = ()
        for rule in rules:
            peers: list[tuple[str, str]] = []
            for pi, peer in enumerate(rule.peers):
                tag = f"{policy.name}-in-ns-{policy.namespace}-{rule.index}-{pi}{'IN' if ingress else 'OUT'}"
                for specs in _peer_match(policy, peer, sets, tag):
                    peers.append((_match(specs, peer_dir), _describe(specs)))
            if not peers:
                peers = [("", "ALL")]
            ports = [_port_match(p, sets) for p in rule.ports] or [("", "")]
            for peer_spec, peer_text in peers:
                for port_spec, port_text in ports:
                    text = f"ALLOW-{word}-{peer_text}" + (f"-{port_text}" if port_text else "")
                    spec = " ".join(s for s in (port_spec, peer_spec, comment(text), allow) if s)
                    filt.add(chain, spec)
        mark = INGRESS_DROP_MARK if ingress else EGRESS_DROP_MARK
        if not _allow_all(policy.ingress if ingress else policy.egress):
            filt.add(chain, f"{comment('DROP-ALL')} -j MARK --set-xmark 0x{mark:x}/0x{mark:x}")
        label = "TO" if ingress else "FROM"
        filt.add(
            base,
            f"{_match(subject, 'dst' if ingress else 'src')} "
            f"{comment(f'{direction.upper()}-POLICY-{key}-{label}-{_describe(subject)}')} -j {chain}",
        )


def npm_filter(topology: LabTopology, filt: Table, ipsets: IpsetFile) -> list[str]:
    """Append NPM's chains to `filt`; returns the policies skipped (with why)."""
    sets = Sets(topology, ipsets)
    skipped: list[str] = []
    policy_tables: list[NetworkPolicy] = []
    for policy in topology.snapshot.network_policies:
        try:
            _check_translatable(policy)
        except UntranslatableError as e:
            skipped.append(f"NetworkPolicy {policy.key}: {e}")
            continue
        policy_tables.append(policy)

    for name in (AZURE_NPM, INGRESS, INGRESS_ALLOW, EGRESS, ACCEPT):
        filt.chain(name)
    for policy in policy_tables:
        _policy_chains(policy, sets, filt)
    if policy_tables:
        # NPM activates AZURE-NPM only once it has a policy
        filt.add(AZURE_NPM, f"-j {INGRESS}")
        filt.add(AZURE_NPM, f"-j {EGRESS}")
        filt.add(AZURE_NPM, f"-j {ACCEPT}")
    filt.add(
        INGRESS,
        f"-m mark --mark 0x{INGRESS_DROP_MARK:x}/0x{INGRESS_DROP_MARK:x} "
        f"{comment(f'DROP-ON-INGRESS-DROP-MARK-0x{INGRESS_DROP_MARK:x}')} -j DROP",
    )
    filt.add(
        INGRESS_ALLOW,
        f"{comment(f'SET-INGRESS-ALLOW-MARK-0x{INGRESS_ALLOW_MARK:x}')} "
        f"-j MARK --set-xmark 0x{INGRESS_ALLOW_MARK:x}/0x{INGRESS_ALLOW_MARK:x}",
    )
    filt.add(INGRESS_ALLOW, f"-j {EGRESS}")
    filt.add(
        EGRESS,
        f"-m mark --mark 0x{EGRESS_DROP_MARK:x}/0x{EGRESS_DROP_MARK:x} "
        f"{comment(f'DROP-ON-EGRESS-DROP-MARK-0x{EGRESS_DROP_MARK:x}')} -j DROP",
    )
    filt.add(
        EGRESS,
        f"-m mark --mark 0x{INGRESS_ALLOW_MARK:x}/0x{INGRESS_ALLOW_MARK:x} "
        f"{comment(f'ACCEPT-ON-INGRESS-ALLOW-MARK-0x{INGRESS_ALLOW_MARK:x}')} -j {ACCEPT}",
    )
    filt.add(ACCEPT, "-j ACCEPT")
    for s in skipped:
        filt.note(f"NPM skips {s} (fail-open)")
    return skipped


JUMP = f"-m conntrack --ctstate NEW -j {AZURE_NPM}"


def render(topology: LabTopology) -> dict[str, NodeRules]:
    routes = service_routes(topology)
    # NPM's sets and chains are cluster-wide: the same on every node, computed once
    npm_sets = IpsetFile()
    npm_chains = Table("filter")
    npm_filter(topology, npm_chains, npm_sets)
    first = place_azure_chain_first(topology.snapshot.config)
    out: dict[str, NodeRules] = {}
    for node in topology.nodes:
        ipsets = IpsetFile()
        define_sets(topology, ipsets)
        ipsets.extend(npm_sets)
        # positionAzureChainJumpRule (npm/pkg/dataplane/policies/chain-management_linux.go:
        # 601-670): FORWARD line 1 with PlaceAzureChainFirst, else right after the jump to
        # KUBE-SERVICES (SEMANTICS D21)
        mangle, nat, filt = kube_proxy(topology, node, routes, azure_jump=JUMP, azure_first=first)
        if first:
            filt.note("PlaceAzureChainFirst: AZURE-NPM is jumped to before KUBE-FORWARD")
        filt.extend(npm_chains)
        out[node.name] = NodeRules(
            ipset=ipsets.render(),
            iptables=render_tables(mangle, nat, filt),
            nft=RESET_NFT,
        )
    return out


register("npm", render)
