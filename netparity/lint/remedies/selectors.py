"""Remedies that re-select the same pods by other means: ipBlocks over pod IPs, selectors
on labels Cilium leaves out of identities."""

from __future__ import annotations

from typing import Any

from netparity.engine.compile import EGRESS, INGRESS
from netparity.lint.classes import exact_selectors
from netparity.lint.findings import Finding, FixAction, FixWhen
from netparity.lint.remedies.context import NoFix, Proposal, RemedyContext
from netparity.lint.wire import selector_dict


def ipblock_pods(ctx: RemedyContext, finding: Finding) -> Proposal:
    edits: dict[str, dict[str, Any]] = {}
    added: list[str] = []
    for name, direction, index in ctx.refs(finding):
        policy = ctx.policies[name]
        rule = ctx.rule(name, direction, index)
        blocks = tuple(str(pe.ip_block) for pe in rule.peers if pe.ip_block is not None)
        covered = ctx.covered_pods.get(blocks)  # one list per set of blocks (issue 19)
        if covered is None:
            covered = ctx.covered_pods[blocks] = list(
                {
                    p.key: p
                    for pe in rule.peers
                    if pe.ip_block is not None
                    for p in ctx.peer_pods(policy, pe)
                }.values()
            )
        if not covered:
            raise NoFix(f"{name} {direction}[{index}] covers no pod IP")
        d = edits.get(name) or ctx.policy_dict(name)
        edits[name] = d
        peers = ctx.precise_peers(covered, policy.namespace)
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


def identity_labels(ctx: RemedyContext, finding: Finding) -> Proposal:
    edits: dict[str, dict[str, Any]] = {}
    for name in finding.policies:
        policy = ctx.policies.get(name)
        if policy is None:
            continue
        d = ctx.policy_dict(name)
        changed = False
        scope = ctx.label_index(policy.namespace)
        if any(ctx.is_excluded(k) for k in tuple(policy.pod_selector.keys())):
            wanted = ctx.selected(policy, ctx.npm)
            sels = exact_selectors(wanted, scope, ctx.id_labels)
            keys = sorted(k for k in tuple(policy.pod_selector.keys()) if ctx.is_excluded(k))
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
                    if sel is None or not any(ctx.is_excluded(k) for k in tuple(sel.keys())):
                        new_peers.append(wire)
                        continue
                    wanted = ctx.peer_pods(policy, pe)
                    if not wanted:
                        new_peers.append(wire)
                        continue
                    scope_pods = [
                        p
                        for ns in ctx.peer_namespaces(policy, pe)
                        for p in ctx.classes.pods_by_namespace.get(ns, [])
                    ]
                    peer_sels = exact_selectors(wanted, scope_pods, ctx.id_labels)
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
