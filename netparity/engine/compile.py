"""Compile policies once: NetworkPolicies and Cilium policies as per-direction targets.

Naming follows policy-assistant's matcher: a compiled policy is a Target with a subject
matcher (which pods it selects), provenance, and per-direction rules, each compiled into a
PeerMatcher and a PortMatcher (netparity/engine/matcher/). Judgement lives in evaluate.py,
path resolution in paths.py.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from netparity.engine.dataplane import Dataplane
from netparity.engine.matcher import (
    CiliumRuleMatcher,
    PeerMatcher,
    PortMatcher,
    compile_cilium_rule,
    compile_np_ports,
    compile_peers,
)
from netparity.engine.matcher.leg import EGRESS as EGRESS
from netparity.engine.matcher.leg import INGRESS as INGRESS
from netparity.engine.traffic import RuleRef
from netparity.model.ciliumpolicy import CiliumPolicy, CiliumRule
from netparity.model.networkpolicy import NetworkPolicy, PolicyPeer, PolicyPort
from netparity.model.selectors import LabelSelector, Requirement

NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABEL_PREFIX = "io.cilium.k8s.namespace.labels."


@dataclass(frozen=True, slots=True, kw_only=True)
class NPRule:
    ref: RuleRef
    peers: tuple[PolicyPeer, ...]  # empty: every peer
    ports: tuple[PolicyPort, ...]  # empty: every port
    peer: PeerMatcher  # `peers` compiled
    port: PortMatcher  # `ports` compiled


@dataclass(frozen=True, slots=True, kw_only=True)
class NPTarget:
    """A compiled NetworkPolicy."""

    name: str  # "NetworkPolicy ns/name"
    namespace: str
    subject: LabelSelector
    isolates: frozenset[str]  # the directions policyTypes names
    ruled: frozenset[str] = frozenset()  # D23: the directions with at least one rule
    rules: dict[str, tuple[NPRule, ...]] = field(default_factory=dict)
    untranslatable: str | None = None  # why NPM would skip it (D11)
    selector_keys: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class CiliumTarget:
    """A compiled CiliumNetworkPolicy / CCNP spec; selectors use Cilium label keys."""

    name: str
    namespace: str | None  # None: clusterwide
    subject: LabelSelector | None  # None: a host policy (nodeSelector), not modelled
    isolates: frozenset[str]  # default deny as Cilium's defaults have it (enableDefaultDeny)
    rules: dict[str, tuple[tuple[RuleRef, CiliumRule], ...]]
    deny_rules: dict[str, tuple[tuple[RuleRef, CiliumRule], ...]]
    endpoints: dict[int, tuple[LabelSelector, ...]]  # id(rule) -> normalised peer selectors
    matchers: dict[int, CiliumRuleMatcher]  # id(rule) -> the rule compiled
    # the directions with any rule: the policy adds its rules there when it selects a pod
    ruled: frozenset[str] = frozenset()
    # requirements its rules add to every endpoint selector of the subject (fromRequires /
    # toRequires, scoped like endpoint selectors); per direction, allow and deny apart
    requires: dict[str, tuple[LabelSelector, ...]] = field(default_factory=dict)
    requires_deny: dict[str, tuple[LabelSelector, ...]] = field(default_factory=dict)
    requires_fields: tuple[str, ...] = ()  # their paths, to say when a version ignores them
    # (dataplane knob, field path): a setting the policy needs, else Cilium refuses it whole
    needs: tuple[tuple[str, str], ...] = ()
    node_selector: LabelSelector | None = None  # a host policy's nodeSelector


# What each knob's setting is called in cilium-config, for explanations.
NEEDED_SETTINGS = {
    "cilium_l7_proxy": "enable-l7-proxy",
    "cilium_icmp_rules": "enable-icmp-rules",
    "cilium_node_selector_labels": "enable-node-selector-labels",
}


def cilium_refusal(target: CiliumTarget, dp: Dataplane) -> str | None:
    """Why Cilium refuses the whole policy under `dp`'s settings (pkg/policy/api/
    rule_validation.go: IngressRule.Validate, EgressRule.Validate, *CommonRule.Validate),
    or why it never applies (a host policy without enable-host-firewall); None: imported."""
    for knob, path in target.needs:
        if not getattr(dp, knob):  # a bool knob named in NEEDED_SETTINGS
            return (
                f"{target.name} is refused by Cilium (no effect): {path} needs "
                f"{NEEDED_SETTINGS[knob]}, which is off on this cluster"
            )
    if target.subject is None and not dp.cilium_host_firewall:
        return (
            f"{target.name} is a host policy (nodeSelector) and has no effect on this cluster: "
            "enable-host-firewall is off (AKS's managed Cilium does not turn it on, SEMANTICS 2.2)"
        )
    return None


def compile_network_policy(policy: NetworkPolicy) -> NPTarget:
    name = f"NetworkPolicy {policy.key}"
    rules: dict[str, tuple[NPRule, ...]] = {}
    for direction, raw in ((INGRESS, policy.ingress), (EGRESS, policy.egress)):
        rules[direction] = tuple(
            NPRule(
                ref=RuleRef(policy=name, direction=direction, index=r.index),
                peers=r.peers,
                ports=r.ports,
                peer=compile_peers(r.peers, policy.namespace),
                port=compile_np_ports(r.ports),
            )
            for r in raw
        )
    return NPTarget(
        name=name,
        namespace=policy.namespace,
        subject=policy.pod_selector,
        isolates=frozenset(t.lower() for t in policy.policy_types),
        ruled=frozenset(d for d, r in rules.items() if r),
        rules=rules,
        untranslatable=_untranslatable(policy),
        selector_keys=frozenset(_all_pod_selector_keys(policy)),
    )


def _all_pod_selector_keys(policy: NetworkPolicy) -> list[str]:
    keys = list(policy.pod_selector.keys())
    for rule in (*policy.ingress, *policy.egress):
        for peer in rule.peers:
            if peer.pod_selector is not None:
                keys.extend(peer.pod_selector.keys())
    return keys


def npm_ipv4(cidr: str) -> bool:
    """NPM's util.IsIPV4 (Azure/azure-container-networking npm/util/util.go:366-384), the
    only check an ipBlock cidr gets (translatePolicy.go:233-235): any text containing
    "/0" other than 0.0.0.0/0 fails (a non-canonical `10.0.0.0/0`, SEMANTICS D20), then the
    address must be IPv4 and the whole a CIDR Go's net.ParseCIDR accepts (host bits allowed)."""
    ip_only = cidr.split("/")
    if "/0" in cidr and ip_only[0] != "0.0.0.0":
        return False
    try:
        address = ipaddress.ip_address(ip_only[0])
    except ValueError:
        return False
    if address.version != 4:
        return False
    if "/" in cidr:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return False
    return True


def _untranslatable(policy: NetworkPolicy) -> str | None:
    """D11/D20: what makes NPM's TranslatePolicy return an error (then the policy is not
    programmed at all), and nothing more (Azure/azure-container-networking
    npm/pkg/controlplane/translation/translatePolicy.go):
    - spec.podSelector is always parsed (TranslatePolicy, :655-658): an invalid In/NotIn
      value there fails;
    - only the directions policyTypes names are translated (:666-678);
    - a direction with an allow-all rule (`{}`) returns before its other rules are read
      (ingressPolicy :575-578, egressPolicy :618-621): nothing in them can fail;
    - otherwise each peer: an ipBlock cidr that util.IsIPV4 rejects (:233-235; IPv6, a
      non-canonical /0), an invalid In/NotIn value in a namespaceSelector
      (flattenNameSpaceSelector, parseSelector.go:80-84) or a podSelector (parsePodSelector,
      :268-272). Label values are checked by regex alone, no 63-character limit."""
    if policy.pod_selector.has_invalid_values():
        return f"a matchExpressions value in spec.podSelector {policy.pod_selector} is not a valid label value"
    for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
        if direction.capitalize() not in policy.policy_types:
            continue
        if any(not r.peers and not r.ports for r in rules):
            continue  # the allow-all early return
        field_name = "from" if direction == "ingress" else "to"
        for rule in rules:
            for i, peer in enumerate(rule.peers):
                where = f"spec.{direction}[{rule.index}].{field_name}[{i}]"
                if peer.ip_block is not None:
                    if not npm_ipv4(peer.ip_block.written):
                        return (
                            f"{where}.ipBlock.cidr {peer.ip_block.written!r} is not what NPM "
                            "takes for IPv4 (util.IsIPV4)"
                        )
                    continue
                for what, sel in (
                    ("namespaceSelector", peer.namespace_selector),
                    ("podSelector", peer.pod_selector),
                ):
                    if sel is not None and sel.has_invalid_values():
                        return (
                            f"a matchExpressions value in {where}.{what} {sel} is not a valid "
                            "label value"
                        )
    return None


def _normalise_key(key: str) -> str:
    for prefix in ("k8s:", "any:", "container:", "unspec:"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _normalise(selector: LabelSelector) -> LabelSelector:
    return LabelSelector(
        match_labels=tuple((_normalise_key(k), v) for k, v in selector.match_labels),
        match_expressions=tuple(
            Requirement(key=_normalise_key(r.key), operator=r.operator, values=r.values)
            for r in selector.match_expressions
        ),
    )


def _scoped(selector: LabelSelector, namespace: str | None) -> LabelSelector:
    """Cilium scopes endpoint selectors to the policy's namespace unless they name one or
    select on namespace labels; a clusterwide policy's selectors require a namespace label
    (pods only). cilium/cilium pkg/k8s/apis/cilium.io/utils/utils.go getEndpointSelector."""
    keys = set(selector.keys())
    if NAMESPACE_KEY in keys:
        return selector
    if namespace is not None and any(k.startswith(NAMESPACE_LABEL_PREFIX) for k in keys):
        return selector
    if namespace is None:
        from netparity.model.selectors import Operator

        return LabelSelector(
            match_labels=selector.match_labels,
            match_expressions=(
                *selector.match_expressions,
                Requirement(key=NAMESPACE_KEY, operator=Operator.EXISTS),
            ),
        )
    return LabelSelector(
        match_labels=(*selector.match_labels, (NAMESPACE_KEY, namespace)),
        match_expressions=selector.match_expressions,
    )


def _subject(selector: LabelSelector, namespace: str | None) -> LabelSelector:
    """A CNP's endpointSelector always applies in the policy's namespace: ParseToCiliumRule
    (pkg/k8s/apis/cilium.io/utils/utils.go) logs "illegal namespace match" and overwrites
    the `k8s:io.kubernetes.pod.namespace` match label with `AddMatch(podPrefixLbl,
    namespace)`. Any other form (no prefix, `any:`, matchExpressions) is not found by
    `GetMatch(podPrefixLbl)` and stays beside the added label: naming another namespace it
    selects nothing. A CCNP's endpointSelector is taken as written."""
    if namespace is None:
        return _normalise(selector)
    kept = LabelSelector(
        match_labels=tuple((k, v) for k, v in selector.match_labels if k != "k8s:" + NAMESPACE_KEY),
        match_expressions=selector.match_expressions,
    )
    norm = _normalise(kept)
    return LabelSelector(
        match_labels=(*norm.match_labels, (NAMESPACE_KEY, namespace)),
        match_expressions=norm.match_expressions,
    )


def compile_cilium_policy(policy: CiliumPolicy) -> CiliumTarget:
    name = f"{policy.kind} {policy.key}"
    subject = None
    if policy.endpoint_selector is not None:
        subject = _subject(policy.endpoint_selector, policy.namespace)
    needs: list[tuple[str, str]] = []
    requires: dict[str, tuple[LabelSelector, ...]] = {}
    requires_deny: dict[str, tuple[LabelSelector, ...]] = {}
    requires_fields: list[str] = []
    ruled: set[str] = set()
    rules: dict[str, tuple[tuple[RuleRef, CiliumRule], ...]] = {}
    deny: dict[str, tuple[tuple[RuleRef, CiliumRule], ...]] = {}
    endpoints: dict[int, tuple[LabelSelector, ...]] = {}
    matchers: dict[int, CiliumRuleMatcher] = {}
    isolates = set()
    for direction, allow, denies, default in (
        (INGRESS, policy.ingress, policy.ingress_deny, policy.default_deny_ingress),
        (EGRESS, policy.egress, policy.egress_deny, policy.default_deny_egress),
    ):
        allow_rules = allow or ()
        rules[direction] = tuple(
            (RuleRef(policy=name, direction=direction, index=r.index), r) for r in allow_rules
        )
        deny[direction] = tuple(
            (RuleRef(policy=name, direction=f"{direction}Deny", index=r.index), r) for r in denies
        )
        for r in (*allow_rules, *denies):
            if r.endpoints is not None:
                endpoints[id(r)] = tuple(
                    _scoped(_normalise(s), policy.namespace) for s in r.endpoints
                )
        for r in (*allow_rules, *denies):
            nodes = tuple(_normalise(s) for s in r.nodes or ())
            matchers[id(r)] = compile_cilium_rule(r, endpoints.get(id(r), ()), nodes)
            where = f"{direction}[{r.index}]"
            needs.extend(("cilium_l7_proxy", f"{path} (an L7 rule)") for path in r.l7[:1])
            if r.icmp:
                needs.append(("cilium_icmp_rules", f"{where}.icmps"))
            if r.nodes is not None:
                word = "fromNodes" if direction == INGRESS else "toNodes"
                needs.append(("cilium_node_selector_labels", f"{where}.{word}"))
        for into, rs in ((requires, allow_rules), (requires_deny, denies)):
            into[direction] = tuple(
                _scoped(_normalise(s), policy.namespace) for r in rs for s in r.requires
            )
            word = "fromRequires" if direction == INGRESS else "toRequires"
            requires_fields.extend(f"{direction}[{r.index}].{word}" for r in rs if r.requires)
        if allow_rules or denies:
            ruled.add(direction)
        if (allow_rules or denies) and default is not False:
            isolates.add(direction)
    return CiliumTarget(
        name=name,
        namespace=policy.namespace,
        subject=subject,
        isolates=frozenset(isolates),
        rules=rules,
        deny_rules=deny,
        endpoints=endpoints,
        matchers=matchers,
        ruled=frozenset(ruled),
        requires=requires,
        requires_deny=requires_deny,
        requires_fields=tuple(requires_fields),
        needs=tuple(needs),
        node_selector=policy.node_selector,
    )
