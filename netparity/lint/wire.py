"""Model values back to wire dicts (the shape `kubectl apply` takes), for the fixes to edit."""

from __future__ import annotations

from typing import Any

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
