"""The checked fix of a `cilium-policy` finding (cilium_findings.py): candidate edits of the
Cilium policy that cuts, each applied to the snapshot and kept only where the engine says
it restores every cut connection under the target.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from netparity.engine.compile import EGRESS, INGRESS, CiliumTarget
from netparity.engine.dataplane import Dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Decision, RuleRef, Traffic
from netparity.lint.findings import Finding, Fix, FixAction, FixWhen
from netparity.lint.tally import side
from netparity.lint.wire import cilium_policy_dict
from netparity.model.ciliumpolicy import CiliumPolicy
from netparity.model.snapshot import Snapshot


class Cut(Protocol):
    """What one Cilium policy cuts (the finding's accumulator)."""

    @property
    def target(self) -> CiliumTarget: ...
    @property
    def refs(self) -> Mapping[RuleRef, None]: ...  # its deny rules that decided
    @property
    def directions(self) -> Mapping[str, None]: ...
    @property
    def cuts(self) -> Sequence[tuple[Traffic, str]]: ...  # (traffic, side)


class CiliumFixer:
    """Finds the first candidate fix the engine confirms, or says why there is none."""

    def __init__(self, snapshot: Snapshot, engine: Engine, tgt: Dataplane) -> None:
        self.snapshot = snapshot
        self.engine = engine
        self.tgt = tgt

    def with_fix(self, finding: Finding, acc: Cut) -> Finding:
        specs = self._specs(acc.target)
        if specs is None:
            return replace(
                finding,
                no_fix_reason="the policy uses fields the lint cannot copy into a fix; "
                + _by_hand(acc),
            )
        tried: list[str] = []
        for fix in self._candidates(acc, specs):
            if self._restores(fix, acc):
                return replace(finding, fix=fix)
            tried.append(fix.summary)
        return replace(
            finding,
            no_fix_reason="no fix restores every cut connection under the engine (tried: "
            + "; ".join(tried)
            + "); "
            + _by_hand(acc),
        )

    def _specs(self, c: CiliumTarget) -> list[CiliumPolicy] | None:
        """Every spec of the policy's object, in order; None where one cannot be copied."""
        kind, _, key = c.name.partition(" ")
        base = key.split("#", 1)[0]
        specs = [
            p
            for p in self.snapshot.cilium_policies
            if p.kind == kind and (f"{p.namespace}/{p.name}" if p.namespace else p.name) == base
        ]
        if not specs or any(
            r.unsupported
            for p in specs
            for r in (*(p.ingress or ()), *(p.egress or ()), *p.ingress_deny, *p.egress_deny)
        ):
            return None
        return sorted(specs, key=lambda p: p.spec_index)

    def _candidates(self, acc: Cut, specs: list[CiliumPolicy]) -> Iterator[Fix]:
        c = acc.target
        which = next(p for p in specs if f"{p.kind} {p.key}" == c.name)
        directions = list(acc.directions)
        if not acc.refs:
            edited = [
                replace(
                    p,
                    default_deny_ingress=False if INGRESS in directions else p.default_deny_ingress,
                    default_deny_egress=False if EGRESS in directions else p.default_deny_egress,
                )
                if p is which
                else p
                for p in specs
            ]
            dd = ", ".join(f"{d}: false" for d in directions)
            yield Fix(
                summary=f"sets enableDefaultDeny: {{{dd}}}: the policy adds its allows to pods "
                "other policies isolate, and isolates none itself",
                action=FixAction.APPLY,
                when=FixWhen.BEFORE,
                objects=(cilium_policy_dict(edited),),
                explanation="Cilium honours enableDefaultDeny only where "
                "enable-non-default-deny-policies is on; the engine checked it under "
                f"{self.tgt.name} with the snapshot's cilium-config",
            )
        if which.namespace is None or len(directions) != 1:
            return
        direction = directions[0]
        subjects = [
            t.subject
            for t in self.engine.np_targets
            if t.namespace == which.namespace and direction in t.isolates
        ]
        if not subjects:
            yield Fix(
                summary=f"deletes the policy: no NetworkPolicy isolates a pod of namespace "
                f"{which.namespace} for {direction}, so it only cuts there",
                action=FixAction.DELETE,
                when=FixWhen.BEFORE,
                objects=(cilium_policy_dict(specs),),
                explanation="keep it where pods are isolated for "
                f"{direction} (copy it into those namespaces)",
            )
            return
        scoped = [replace(which, spec_index=i, endpoint_selector=s) for i, s in enumerate(subjects)]
        others = [p for p in specs if p is not which]
        yield Fix(
            summary=f"scopes endpointSelector to the pods NetworkPolicies already isolate for "
            f"{direction} (one spec per NetworkPolicy podSelector)",
            action=FixAction.APPLY,
            when=FixWhen.BEFORE,
            objects=(cilium_policy_dict([*others, *scoped]),),
            explanation="the policy's rules are unchanged; pods isolated later need the "
            "selector widened",
        )

    def _restores(self, fix: Fix, acc: Cut) -> bool:
        from netparity.lint.fixes import apply_objects

        try:
            fixed = apply_objects(self.snapshot, fix.objects, fix.action)
        except Exception:  # a fix the parser refuses is no fix
            return False
        engine = Engine(fixed, compiled=self.engine)
        for traffic, direction in acc.cuts:
            result = side(engine.evaluate(traffic, self.tgt), direction)
            if result is None or result.decision is not Decision.ALLOW:
                return False
        return True


def _by_hand(acc: Cut) -> str:
    if acc.refs:
        return "remove or narrow the deny rules named, or accept the change (--accept)"
    dd = ", ".join(f"{d}: false" for d in acc.directions)
    return (
        f"add enableDefaultDeny: {{{dd}}} to its spec, scope its endpointSelector to pods "
        "already isolated, or accept the change (--accept)"
    )
