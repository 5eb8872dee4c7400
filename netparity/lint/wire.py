"""Model values back to wire dicts (the shape `kubectl apply` takes), for the fixes to edit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netparity.engine.compile import EGRESS, INGRESS
from netparity.model.ciliumpolicy import CiliumPolicy, CiliumRule
from netparity.model.networkpolicy import IPBlock, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule
from netparity.model.selectors import LabelSelector


def selector_dict(selector: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if selector.match_labels:
        out["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        exprs = []
        for r in selector.match_expressions:
            item: dict[str, Any] = {"key": r.key, "operator": str(r.operator)}
            if r.values:
                item["values"] = sorted(r.values)
            exprs.append(item)
        out["matchExpressions"] = exprs
    return out


def ip_block_dict(block: IPBlock) -> dict[str, Any]:
    out: dict[str, Any] = {"cidr": str(block.cidr)}
    if block.excepts:
        out["except"] = [str(e) for e in block.excepts]
    return out


def peer_dict(peer: PolicyPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.ip_block is not None:
        out["ipBlock"] = ip_block_dict(peer.ip_block)
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = selector_dict(peer.namespace_selector)
    if peer.pod_selector is not None:
        out["podSelector"] = selector_dict(peer.pod_selector)
    return out


def port_dict(port: PolicyPort) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": str(port.protocol)}
    if port.port is not None:
        out["port"] = port.port
    if port.end_port is not None:
        out["endPort"] = port.end_port
    return out


def rule_dict(rule: PolicyRule, direction: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.peers:
        out["from" if direction == "ingress" else "to"] = [peer_dict(p) for p in rule.peers]
    if rule.ports:
        out["ports"] = [port_dict(p) for p in rule.ports]
    return out


def network_policy_dict(policy: NetworkPolicy) -> dict[str, Any]:
    """The policy as a manifest; what the model does not keep (labels, annotations) is absent."""
    spec: dict[str, Any] = {
        "podSelector": selector_dict(policy.pod_selector),
        "policyTypes": [t for t in ("Ingress", "Egress") if t in policy.policy_types],
    }
    if policy.ingress:
        spec["ingress"] = [rule_dict(r, "ingress") for r in policy.ingress]
    if policy.egress:
        spec["egress"] = [rule_dict(r, "egress") for r in policy.egress]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": policy.name, "namespace": policy.namespace},
        "spec": spec,
    }


# The field names of a Cilium rule's peers and ports, by direction.
_CILIUM_FIELDS = {
    INGRESS: ("fromEndpoints", "fromEntities", "fromCIDRSet", "toPorts"),
    EGRESS: ("toEndpoints", "toEntities", "toCIDRSet", "toPorts"),
}


def cilium_policy_dict(specs: Sequence[CiliumPolicy]) -> dict[str, Any]:
    first = specs[0]
    meta: dict[str, Any] = {"name": first.name}
    if first.namespace is not None:
        meta["namespace"] = first.namespace
    out: dict[str, Any] = {"apiVersion": "cilium.io/v2", "kind": first.kind, "metadata": meta}
    bodies = [_cilium_spec_dict(p) for p in specs]
    if len(bodies) == 1:
        out["spec"] = bodies[0]
    else:
        out["specs"] = bodies
    return out


def _cilium_spec_dict(p: CiliumPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.endpoint_selector is not None:
        out["endpointSelector"] = selector_dict(p.endpoint_selector)
    if p.node_selector is not None:
        out["nodeSelector"] = selector_dict(p.node_selector)
    for key, rules, direction in (
        ("ingress", p.ingress, INGRESS),
        ("egress", p.egress, EGRESS),
        ("ingressDeny", p.ingress_deny or None, INGRESS),
        ("egressDeny", p.egress_deny or None, EGRESS),
    ):
        if rules is not None:
            out[key] = [_cilium_rule_dict(r, direction) for r in rules]
    dd = {
        k: v
        for k, v in (("ingress", p.default_deny_ingress), ("egress", p.default_deny_egress))
        if v is not None
    }
    if dd:
        out["enableDefaultDeny"] = dd
    return out


def _cilium_rule_dict(rule: CiliumRule, direction: str) -> dict[str, Any]:
    endpoints, entities, cidrs, ports = _CILIUM_FIELDS[direction]
    out: dict[str, Any] = {}
    if rule.endpoints is not None:
        out[endpoints] = [selector_dict(s) for s in rule.endpoints]
    if rule.entities:
        out[entities] = [str(e) for e in rule.entities]
    if rule.cidrs:
        out[cidrs] = [ip_block_dict(b) for b in rule.cidrs]
    if rule.ports:
        items = []
        for cp in rule.ports:
            item: dict[str, Any] = {"port": "0" if cp.port is None else str(cp.port)}
            if cp.end_port:
                item["endPort"] = cp.end_port
            item["protocol"] = str(cp.protocol)
            items.append(item)
        out[ports] = [{"ports": items}]
    return out
