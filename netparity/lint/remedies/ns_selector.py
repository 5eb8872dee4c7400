"""Remedies for the findings of SEMANTICS rows beyond the guide's five (#20).

D19 (`ns-selector-or`): NPM splits a namespaceSelector's multi-value In/NotIn into one
selector per value and ORs them (Azure/azure-container-networking npm/pkg/controlplane/
translation/parseSelector.go:21-142, flattenNameSpaceSelector and zipMatchExprs); Cilium
reads the selector as the spec does (AND). The rewrite spells NPM's reading out as separate
peers, each with single-value expressions, which both dataplanes read alike: today's
behaviour is kept under Cilium, and nothing changes under NPM.
"""

from __future__ import annotations

import copy
from itertools import product
from typing import Any

from netparity.engine.compile import INGRESS
from netparity.lint.findings import Finding, FixAction, FixWhen
from netparity.lint.remedies.context import NoFix, Proposal, RemedyContext


def _set_op(expr: dict[str, Any]) -> bool:
    return expr.get("operator") in ("In", "NotIn") and len(expr.get("values") or []) > 1


def flattened_selector_dicts(selector: dict[str, Any]) -> list[dict[str, Any]]:
    """A namespaceSelector (wire form) as NPM flattens it: one selector per combination of
    the values of its multi-value In/NotIn expressions, in NPM's order (base expressions
    first, then one value of each multi-value expression, values in the written order)."""
    exprs = list(selector.get("matchExpressions") or [])
    base = [e for e in exprs if not _set_op(e)]
    multi = [e for e in exprs if _set_op(e)]
    if not multi:
        return [copy.deepcopy(selector)]
    choices = [
        [{"key": e["key"], "operator": e["operator"], "values": [v]} for v in e["values"]]
        for e in multi
    ]
    out = []
    for combo in product(*choices):
        flat: dict[str, Any] = {}
        if selector.get("matchLabels"):
            flat["matchLabels"] = dict(selector["matchLabels"])
        flat["matchExpressions"] = [copy.deepcopy(e) for e in base] + list(combo)
        out.append(flat)
    return out


def ns_selector_or(ctx: RemedyContext, finding: Finding) -> Proposal:
    """D19: each peer whose namespaceSelector NPM flattens becomes the peers NPM made of it."""
    edits: dict[str, dict[str, Any]] = {}
    spelled: list[str] = []
    for name, direction, index in ctx.refs(finding):
        d = edits.get(name) or ctx.policy_dict(name)
        edits[name] = d
        field = "from" if direction == INGRESS else "to"
        wire_rule = d["spec"][direction][index]
        peers: list[dict[str, Any]] = []
        for peer in wire_rule.get(field) or []:
            nsel = peer.get("namespaceSelector")
            flat = flattened_selector_dicts(nsel) if nsel is not None else [nsel]
            if len(flat) == 1:
                peers.append(peer)
                continue
            spelled.append(f"{name} {direction}[{index}]: {len(flat)} peers")
            peers.extend({**copy.deepcopy(peer), "namespaceSelector": f} for f in flat)
        wire_rule[field] = peers
    if not spelled:
        raise NoFix("no rule involved has a multi-value In/NotIn in a namespaceSelector")
    return Proposal(
        objects=tuple(edits.values()),
        action=FixAction.APPLY,
        when=FixWhen.BEFORE,
        summary="spells NPM's reading of the namespaceSelector out as one peer per value ("
        + "; ".join(spelled)
        + ")",
        explanation="NPM splits a multi-value In/NotIn of a namespaceSelector into one selector "
        "per value and ORs them (SEMANTICS D19), so `NotIn [a, b]` admits every namespace; "
        f"{ctx.target.name} reads it as the spec does (neither a nor b). Listing NPM's "
        "selectors as separate peers keeps today's behaviour on both. If the spec's meaning "
        "was intended, NPM never enforced it: drop this fix and accept that these connections "
        "will be cut.",
        edits=tuple(edits),
    )
