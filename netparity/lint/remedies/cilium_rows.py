"""Fixes for the lint's findings on the Cilium rows of SEMANTICS D18-D27 (issue #20).

D23 (`policy-types`): Cilium translates every `spec.ingress` / `spec.egress` rule whatever
`policyTypes` says, so a direction NPM leaves open becomes isolated by rules nobody has
ever enforced. Today's behaviour is kept by deleting those rules: NPM ignores them already
(the change is safe before the migration), and Cilium then has nothing to translate there.
"""

from __future__ import annotations

from netparity.lint.findings import Finding, FixAction, FixWhen
from netparity.lint.remedies.context import NoFix, Proposal, RemedyContext

_SPEC_FIELD = {"Ingress": "ingress", "Egress": "egress"}


def policy_types(ctx: RemedyContext, finding: Finding) -> Proposal:
    """D23: drop the rules of each direction the policy's policyTypes leaves out."""
    edits: dict[str, dict[str, object]] = {}
    dropped: list[str] = []
    for name in finding.policies:
        policy = ctx.policies.get(name)
        if policy is None:
            continue
        d = ctx.policy_dict(name)
        spec = d["spec"]
        for direction, key in _SPEC_FIELD.items():
            if direction not in policy.policy_types and spec.get(key):
                dropped.append(f"{name} spec.{key} ({len(spec[key])} rule(s))")
                del spec[key]
                edits[name] = d
    if not edits:
        raise NoFix("no NetworkPolicy involved lists rules outside its policyTypes")
    return Proposal(
        objects=tuple(edits.values()),
        action=FixAction.APPLY,
        when=FixWhen.BEFORE,
        summary="removes the rules of the directions policyTypes leaves out: " + "; ".join(dropped),
        explanation="NPM (and the Kubernetes spec) ignore rules under a direction that "
        "policyTypes does not list; Cilium translates and enforces them (D23), isolating a "
        "direction that is open today. Removing them keeps today's behaviour on both. If the "
        "rules were meant, add the direction to policyTypes instead, and expect the "
        "connections they do not admit to be cut.",
        edits=tuple(edits),
    )
