"""Name the scenario of a change the engine predicts, from the verdicts' explanations.

Probes planned for a rule (not for a scenario) can still change on migration; their
scenario comes from what decided them: the SEMANTICS row the explanation cites, or the
NetworkPolicy rule that admitted the traffic under the current dataplane and not under
the target (an ipBlock peer over a pod or a node, a named port).
"""

from __future__ import annotations

from netparity.engine.compile import EGRESS, INGRESS, NPRule
from netparity.engine.evaluate import Engine
from netparity.engine.matcher.peer import flatten
from netparity.engine.service_d22 import ITP_LOCAL_MARK, SOURCE_RANGES_MARK
from netparity.engine.traffic import (
    DirectionResult,
    NodeEndpoint,
    PathKind,
    PodEndpoint,
    Traffic,
    Verdict,
)
from netparity.plan.model import Scenario

_EXTERNAL = (PathKind.EXTERNAL_LB, PathKind.EXTERNAL_NODEPORT)
_IN_CLUSTER = (PathKind.POD_LB, PathKind.POD_NODEPORT)


def infer_scenario(
    engine: Engine, traffic: Traffic, current: Verdict, target: Verdict
) -> Scenario | None:
    """The scenario of a predicted change, or None where the verdicts do not change."""
    if current.decision == target.decision:
        return None
    now = current.explanation
    then = " ".join((target.explanation, *target.uncertain))
    if "(D11)" in now:
        return Scenario.UNTRANSLATABLE
    if "(D4a)" in now:
        return Scenario.NODE_EGRESS
    if SOURCE_RANGES_MARK in now:
        return Scenario.LB_SOURCE_RANGES  # D22: NPM's kube-proxy dropped it, Cilium does not
    if current.path in _IN_CLUSTER and ITP_LOCAL_MARK in then and ITP_LOCAL_MARK not in now:
        return Scenario.ITP_LOCAL  # D22: Cilium keeps a pod's LB-IP/NodePort traffic local
    if current.path in _IN_CLUSTER and "(D5d)" in now + then:
        return Scenario.LB_IN_CLUSTER
    if current.path in _EXTERNAL:
        return Scenario.EXTERNAL_INGRESS
    if "(D8)" in then or "(D24)" in then:
        return Scenario.SCTP
    if "(D1)" in then:
        return Scenario.ENDPORT
    for direction, side_now, side_then in (
        (EGRESS, current.egress, target.egress),
        (INGRESS, current.ingress, target.ingress),
    ):
        if side_now is None or side_then is None or side_now.decision == side_then.decision:
            continue
        found = _from_rules(engine, traffic, direction, side_now)
        if found is not None:
            return found
        if side_now.selected_by != side_then.selected_by:
            beyond = {t.name for t in engine.np_targets if direction not in t.isolates}
            if beyond.intersection(side_then.selected_by):
                return Scenario.POLICY_TYPES  # D23: rules outside policyTypes are enforced
            return Scenario.IDENTITY_LABELS  # D6: Cilium's labels select other pods
    return None


def _from_rules(
    engine: Engine, traffic: Traffic, direction: str, side: DirectionResult
) -> Scenario | None:
    peer = traffic.destination if direction == EGRESS else traffic.source
    for ref in side.rules:
        rule = _rule(engine, ref.policy, direction, ref.index)
        if rule is None:
            continue
        if any(isinstance(p.port, str) for p in rule.ports):
            return Scenario.NAMED_PORT
        if isinstance(peer, PodEndpoint) and not peer.pod.host_network:
            labels = engine.namespace_labels(peer.pod.namespace)
            for p in rule.peers:
                sel = p.namespace_selector
                if sel is not None and any(f.matches(labels) for f in flatten(sel)) != (
                    sel.matches(labels)
                ):
                    return Scenario.NS_SELECTOR_OR  # D19
        if any(p.ip_block is not None for p in rule.peers):
            node = isinstance(peer, NodeEndpoint) or (
                isinstance(peer, PodEndpoint) and peer.pod.host_network
            )
            return Scenario.IPBLOCK_NODES if node else Scenario.IPBLOCK_PODS
    return None


def _rule(engine: Engine, policy: str, direction: str, index: int | None) -> NPRule | None:
    for target in engine.np_targets:
        if target.name == policy:
            for rule in target.rules.get(direction, ()):
                if rule.ref.index == index:
                    return rule
    return None
