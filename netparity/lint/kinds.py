"""What the lint's report says around its findings: the kinds' titles, the notes, the
order of SEMANTICS rows, and the D19 check (lint.py)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from netparity.engine.compile import NPRule
from netparity.engine.dataplane import older_release
from netparity.engine.matcher.peer import flatten
from netparity.engine.traffic import Endpoint, PodEndpoint
from netparity.lint.findings import OTHER_KIND
from netparity.model.networkpolicy import PolicyPeer
from netparity.model.selectors import Operator
from netparity.model.snapshot import Snapshot
from netparity.plan.class_index import ClassIndex
from netparity.plan.model import Scenario

if TYPE_CHECKING:
    from netparity.lint.classify import Classifier
    from netparity.lint.lint import Linter

TITLES: dict[str, str] = {
    Scenario.ENDPORT: "the endPort range is not honoured",
    Scenario.IPBLOCK_PODS: "the ipBlock no longer matches pod IPs",
    Scenario.IPBLOCK_NODES: "the ipBlock no longer matches node IPs",
    Scenario.NAMED_PORT: "the named port resolves differently",
    Scenario.NODE_EGRESS: "egress to the pod's own node is policed from now on",
    Scenario.EXTERNAL_INGRESS: "outside traffic through NodePort/LoadBalancer is policed from now on",
    Scenario.IDENTITY_LABELS: "a selector uses a label Cilium leaves out of identities",
    Scenario.SCTP: "SCTP port rules do not match",
    Scenario.POLICY_TYPES: "rules outside policyTypes are enforced",
    Scenario.LB_IN_CLUSTER: "in-cluster traffic to a LoadBalancer IP/NodePort is policed from now on",
    Scenario.UNTRANSLATABLE: "NPM never enforced this policy; the target will",
    Scenario.NS_SELECTOR_OR: "NPM reads a multi-value In/NotIn namespaceSelector as an OR; "
    "the target as the spec (AND)",
    Scenario.LB_SOURCE_RANGES: "in-cluster clients outside loadBalancerSourceRanges reach the "
    "LoadBalancer IP from now on",
    Scenario.ITP_LOCAL: "internalTrafficPolicy Local now keeps a pod's LoadBalancer-IP and own-node "
    "NodePort traffic on its node: pods on a node without a backend are refused",
    OTHER_KIND: "the verdict changes",
}


def notes(snapshot: Snapshot, classes: ClassIndex, linter: Linter, target: str) -> list[str]:
    """The report's notes: the older target, Windows pods, connections not judged or changed
    by Cilium policies already there."""
    notes = []
    older = older_release(target)
    if older is not None and any(
        pp.end_port is not None
        for p in snapshot.network_policies
        for r in (*p.ingress, *p.egress)
        for pp in r.ports
    ):
        notes.append(
            "endPort ranges are honoured by Cilium >= 1.17; lint with --target "
            f"{older} for AKS on Kubernetes 1.31 (D1)"
        )
    if classes.windows_pods:
        notes.append(
            f"{classes.windows_pods} pods on Windows nodes are out of scope (Cilium is Linux-only, D15)"
        )
    if linter.unknown:
        notes.append(
            f"{len(linter.unknown)} connections have an unknown verdict and are not judged, "
            f"e.g. {linter.unknown[0]}"
        )
    negative = negative_namespace_peers(snapshot)
    if negative:
        notes.append(
            f"{len(negative)} NetworkPolicies (e.g. {negative[0]}) have a peer whose "
            "namespaceSelector is only NotIn/DoesNotExist: NPM and Cilium up to 1.18 also match "
            "outside addresses, nodes and hostNetwork pods with it, which the spec does not "
            "(D18; both agree, so it is no migration risk; Cilium 1.19 with "
            "policy-default-local-cluster matches pods only)"
        )
    if linter.unattributed:
        notes.append(
            f"{len(linter.unattributed)} connections change because of Cilium policies already "
            f"in the snapshot, e.g. {linter.unattributed[0]}"
        )
    return notes


def negative_namespace_peers(snapshot: Snapshot) -> list[str]:
    """NetworkPolicies with a peer that an empty label set satisfies on both selectors and
    whose namespaceSelector says only what a namespace is not (D18), in snapshot order."""
    out: list[str] = []
    for p in snapshot.network_policies:
        for rule in (*p.ingress, *p.egress):
            if any(_negative(peer) for peer in rule.peers):
                out.append(p.key)
                break
    return out


def _negative(peer: PolicyPeer) -> bool:
    ns = peer.namespace_selector
    if ns is None or ns.match_labels or not ns.match_expressions:
        return False
    only_not = all(
        r.operator in (Operator.NOT_IN, Operator.DOES_NOT_EXIST) for r in ns.match_expressions
    )
    return only_not and (peer.pod_selector is None or peer.pod_selector.matches({}))


def row_key(row: str) -> tuple[int, str]:
    m = re.match(r"D(\d+)(.*)", row)
    return (int(m.group(1)), m.group(2)) if m else (999, row)


def ns_selector_or(linter: Classifier, peer: Endpoint, rules: list[NPRule]) -> bool:
    """D19: a rule's namespaceSelector decides differently as NPM flattens it (an OR of its
    multi-value In/NotIn, engine.matcher.peer.flatten) and as the target reads it."""
    if linter.npm.ns_selector_flattened == linter.target.ns_selector_flattened:
        return False
    if not isinstance(peer, PodEndpoint) or peer.pod.host_network:
        return False
    labels = linter.engine.snapshot.namespace(peer.pod.namespace).labels
    for rule in rules:
        for pe in rule.peers:
            sel = pe.namespace_selector
            if sel is not None and any(s.matches(labels) for s in flatten(sel)) != sel.matches(
                labels
            ):
                return True
    return False
