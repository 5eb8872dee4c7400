"""The remedy for a policy NPM could not translate and never enforced: delete it."""

from __future__ import annotations

from netparity.lint.findings import Change, Finding, FixAction, FixWhen
from netparity.lint.remedies.context import NoFix, Proposal, RemedyContext
from netparity.lint.wire import network_policy_dict


def untranslatable(ctx: RemedyContext, finding: Finding) -> Proposal:
    objs = []
    reasons = []
    for name in finding.policies:
        t = ctx.targets.get(name)
        if t is not None and t.untranslatable:
            objs.append(network_policy_dict(ctx.policies[name]))
            reasons.append(f"{name}: {t.untranslatable}")
    if not objs:
        raise NoFix("NPM translates every policy involved")
    outage = any(c is Change.OUTAGE for c in finding.changes)
    return Proposal(
        objects=tuple(objs),
        action=FixAction.DELETE,
        when=FixWhen.BEFORE,
        summary="deletes the policy NPM never enforced",
        explanation="NPM could not translate it and never enforced it ("
        + "; ".join(reasons)
        + "); Cilium will. Deleting it keeps today's behaviour. To keep the policy instead, "
        + (
            "accept that these connections will be cut"
            if outage
            else "accept that these connections change"
        )
        + " and probe them after the migration.",
    )
