"""Remedies for connections to nodes: ipBlocks over node addresses, a pod's own node.

Neither has a NetworkPolicy-only form under Cilium: both propose a CiliumNetworkPolicy to
apply after the upgrade and say why no NetworkPolicy would do.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from netparity.engine.compile import EGRESS
from netparity.lint.classes import exact_selectors
from netparity.lint.findings import Finding, FixAction, FixWhen
from netparity.lint.remedies.context import NoFix, Proposal, RemedyContext
from netparity.lint.wire import selector_dict
from netparity.model.objects import Pod

NO_NP_FOR_NODES = (
    "no NetworkPolicy-only fix exists for node addresses: under Cilium an ipBlock never "
    "matches a node (the host / remote-node identities) and no peer selector selects one; "
    "the only NetworkPolicy form that reaches nodes is a rule without from/to (ports only), "
    "which admits every peer on those ports"
)


def ipblock_nodes(ctx: RemedyContext, finding: Finding) -> Proposal:
    by_policy: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for name, direction, index in ctx.refs(finding):
        by_policy[name].append((direction, index))
    specs: list[dict[str, Any]] = []
    namespace = finding.namespace
    for name, refs in by_policy.items():
        policy = ctx.policies[name]
        spec: dict[str, Any] = {"endpointSelector": selector_dict(policy.pod_selector)}
        for direction, index in refs:
            rule = ctx.rule(name, direction, index)
            item: dict[str, Any] = {
                ("toEntities" if direction == EGRESS else "fromEntities"): ["remote-node"]
            }
            ports = ctx.cnp_ports(rule)
            if ports:
                item["toPorts"] = [{"ports": ports}]
            spec.setdefault(direction, []).append(item)
        specs.append(spec)
    first = ctx.policies[next(iter(by_policy))]
    cnp_name = ctx.free_name("CiliumNetworkPolicy", namespace, f"{first.name}-nodes")
    return Proposal(
        objects=(ctx.cnp(namespace, cnp_name, specs),),
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


def node_egress(ctx: RemedyContext, finding: Finding) -> Proposal:
    affected: dict[str, Pod] = {}
    for t in finding.traffic:
        cls = ctx.classes.of_pod.get(t.pods.example)
        if cls is not None:
            affected.update({p.key: p for p in cls.pods})
    namespace = finding.namespace
    scope = ctx.label_index(namespace)
    selectors: list[dict[str, Any]] | None = None
    for name in finding.policies:
        policy = ctx.policies.get(name)
        if policy is not None and {p.key for p in ctx.selected(policy, ctx.target)} == set(
            affected
        ):
            selectors = [selector_dict(policy.pod_selector)]
            break
    if selectors is None:
        sels = exact_selectors(list(affected.values()), scope, ctx.id_labels)
        if sels is None:
            raise NoFix(
                "the affected pods cannot be told apart from the others in "
                f"{namespace} by labels Cilium keeps, so no endpointSelector selects them"
            )
        selectors = [selector_dict(s) for s in sels]
    specs = [{"endpointSelector": s, "egress": [{"toEntities": ["host"]}]} for s in selectors]
    base = finding.policies[0].split("/", 1)[1] if finding.policies else "pods"
    cnp_name = ctx.free_name("CiliumNetworkPolicy", namespace, f"{base}-own-node")
    return Proposal(
        objects=(ctx.cnp(namespace, cnp_name, specs),),
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
