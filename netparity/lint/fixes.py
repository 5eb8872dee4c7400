"""Fixes checked against the engine before they are offered.

A fix (built by remedies.py) is applied to the snapshot (its objects re-parsed through
`snapshot_from_dicts`, a new Engine) and every connection its finding names must get NPM's
verdict under the target dataplane (and keep it under NPM, for fixes applied before the
migration). A fix that does not restore parity is not offered: the finding says why.

Edits to one NetworkPolicy accumulate: a later fix of the same policy contains the earlier
changes too (and says which it supersedes), so applying the files in order gives the sum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from netparity.engine.compile import EGRESS, INGRESS
from netparity.engine.dataplane import Dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Decision, PodEndpoint, ServiceEndpoint, Verdict
from netparity.lint.findings import Expectation, Finding, Fix, FixAction, FixWhen
from netparity.lint.lint import Linter
from netparity.lint.remedies import NoFix, Proposal, Remedies
from netparity.model.snapshot import Snapshot, snapshot_from_dicts

MAX_FAILURES_SHOWN = 2


def apply_fix(snapshot: Snapshot, fix: Fix) -> Snapshot:
    """The snapshot with the fix's objects applied (or deleted), re-parsed from wire dicts."""
    return apply_objects(snapshot, fix.objects, fix.action)


def apply_fixes(snapshot: Snapshot, fixes: Iterable[Fix]) -> Snapshot:
    """All fixes in order (a later object replaces an earlier one of the same name)."""
    for fix in fixes:
        snapshot = apply_fix(snapshot, fix)
    return snapshot


def apply_objects(
    snapshot: Snapshot, objects: Sequence[dict[str, Any]], action: FixAction = FixAction.APPLY
) -> Snapshot:
    return apply_each(snapshot, [(objects, action)])


def apply_each(
    snapshot: Snapshot, changes: Sequence[tuple[Sequence[dict[str, Any]], FixAction]]
) -> Snapshot:
    """`apply_objects` for each (objects, action) in turn, the policies indexed once (a
    batch of fixes costs its objects, not its objects times the cluster's policies)."""
    nps = {p.key: p for p in snapshot.network_policies}
    cps = {f"{c.kind}/{c.key}": c for c in snapshot.cilium_policies}
    for objects, action in changes:
        parsed = snapshot_from_dicts(objects)
        if parsed.cilium_policies:  # every spec of a replaced Cilium policy goes
            names = {(c.kind, c.namespace, c.name) for c in parsed.cilium_policies}
            cps = {k: c for k, c in cps.items() if (c.kind, c.namespace, c.name) not in names}
        if action is FixAction.DELETE:
            for p in parsed.network_policies:
                nps.pop(p.key, None)
        else:
            nps.update({p.key: p for p in parsed.network_policies})
            cps.update({f"{c.kind}/{c.key}": c for c in parsed.cilium_policies})
    return replace(
        snapshot,
        network_policies=tuple(nps[k] for k in sorted(nps)),
        cilium_policies=tuple(cps[k] for k in sorted(cps)),
    )


def relevant_part(snapshot: Snapshot, expectations: Sequence[Expectation]) -> Snapshot:
    """The snapshot with only the NetworkPolicies of the namespaces the connections touch.

    A NetworkPolicy selects pods of its own namespace only, so a connection's verdict
    depends on the NetworkPolicies of its two ends' namespaces (a Service's backends are in
    the Service's); every pod, node, Service, namespace and Cilium policy stays. The
    verdicts of these connections are the same as on the whole snapshot, and a new Engine
    compiles a few policies instead of all of them.
    """
    namespaces = _namespaces(expectations)
    return replace(
        snapshot,
        network_policies=tuple(p for p in snapshot.network_policies if p.namespace in namespaces),
    )


def _decision(verdict: Verdict, side: str | None) -> Decision:
    result = verdict.egress if side == EGRESS else verdict.ingress if side == INGRESS else None
    return verdict.decision if result is None else result.decision


def check_expectations(
    snapshot: Snapshot,
    expectations: Sequence[Expectation],
    target: Dataplane,
    npm: Dataplane | None = None,
) -> list[str]:
    """The connections whose verdict under `target` (and `npm`, if given) is not the expected
    one, described; empty when the snapshot restores parity for all of them."""
    return [str(f) for f in _failures(Engine(snapshot), expectations, target, npm)]


def _pack(
    proposed: Sequence[tuple[Finding, Proposal]],
) -> list[list[tuple[Finding, Proposal]]]:
    """First-fit batches in which no fix lies in a namespace another member probes."""
    batches: list[tuple[list[tuple[Finding, Proposal]], set[str], set[str]]] = []
    for f, proposal in proposed:
        f_exp = _namespaces(f.expectations)
        f_obj = {o["metadata"]["namespace"] for o in proposal.objects}
        for members, obj_ns, exp_ns in batches:
            if not (f_obj & exp_ns) and not (f_exp & obj_ns):
                members.append((f, proposal))
                obj_ns |= f_obj
                exp_ns |= f_exp
                break
        else:
            batches.append(([(f, proposal)], set(f_obj), set(f_exp)))
    return [members for members, _, _ in batches]


def _namespaces(expectations: Sequence[Expectation]) -> set[str]:
    out: set[str] = set()
    for e in expectations:
        for end in (e.traffic.source, e.traffic.destination):
            if isinstance(end, PodEndpoint):
                out.add(end.pod.namespace)
            elif isinstance(end, ServiceEndpoint):
                out.add(end.service.namespace)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class _Failure:
    expectation: Expectation
    dataplane: str
    got: Decision
    explanation: str

    def __str__(self) -> str:
        e = self.expectation
        return (
            f"{e.traffic} is {self.got} under {self.dataplane}, not {e.expected} "
            f"({self.explanation})"
        )


def _failures(
    engine: Engine,
    expectations: Sequence[Expectation],
    target: Dataplane,
    npm: Dataplane | None,
) -> list[_Failure]:
    failures: list[_Failure] = []
    for e in expectations:
        for dp in (target, npm):
            if dp is None:
                continue
            verdict = engine.evaluate(e.traffic, dp)
            got = _decision(verdict, e.side)
            if got is not e.expected:
                failures.append(
                    _Failure(
                        expectation=e,
                        dataplane=dp.name,
                        got=got,
                        explanation=verdict.explanation,
                    )
                )
    return failures


class FixBuilder(Remedies):
    """Builds, checks and attaches the fix of each finding, in report order."""

    def attach(
        self,
        findings: Sequence[Finding],
        progress: Callable[[str, int, int], None] | None = None,
    ) -> list[Finding]:
        """Every finding with its checked fix (or the reason it has none), in report order.

        Fixes are checked in batches, one Engine per batch: a batch never holds a fix whose
        objects lie in a namespace another finding of the batch has connections in, so each
        finding's connections see its own fix alone (a NetworkPolicy or a namespaced Cilium
        policy only acts on pods of its namespace). A fix that edits a policy an earlier fix
        edits is built, in a later round, on the checked earlier edit.
        """
        ordered = sorted(findings, key=lambda f: (f.namespace, *f.sort_key()))
        done: dict[str, Finding] = {}
        todo = list(ordered)
        while todo:
            later: list[Finding] = []
            proposed: list[tuple[Finding, Proposal]] = []
            claimed: set[str] = set()
            for f in todo:
                builder = self.builders.get(f.kind)
                if builder is None:
                    done[f.id] = replace(
                        f,
                        no_fix_reason="the lint could not tie this change to a row of "
                        "SEMANTICS.md, so it proposes no fix",
                    )
                    continue
                if claimed & set(f.policies):
                    later.append(f)
                    continue
                try:
                    proposal = builder(f)
                except NoFix as e:
                    done[f.id] = replace(f, no_fix_reason=str(e))
                    continue
                claimed |= set(proposal.edits)
                proposed.append((f, proposal))
            for batch in _pack(proposed):
                self._flush(batch, done)
                if progress is not None:
                    progress("findings checked", len(done), len(ordered))
            todo = later
        if progress is not None:
            progress("findings checked", len(done), len(ordered))
        return [done[f.id] for f in ordered]

    def _flush(self, batch: list[tuple[Finding, Proposal]], done: dict[str, Finding]) -> None:
        if not batch:
            return
        fixed = self.snapshot
        expectations: list[Expectation] = []
        for f, _ in batch:
            expectations.extend(f.expectations)
        # the connections' namespaces first: a batch costs its namespaces' policies, not the
        # cluster's (the same policies as applying to the whole snapshot, then keeping those)
        fixed = relevant_part(fixed, expectations)
        fixed = apply_each(fixed, [(p.objects, p.action) for _, p in batch])
        engine = Engine(relevant_part(fixed, expectations), compiled=self.engine)
        linter = Linter(engine, self.npm, self.target)
        for f, proposal in batch:
            failures = _failures(
                engine,
                f.expectations,
                self.target,
                self.npm if proposal.when is FixWhen.BEFORE else None,
            )
            # A connection that still changes for another reason (another row of SEMANTICS.md,
            # e.g. an endPort range behind an ipBlock) is that reason's finding to fix.
            real: list[_Failure] = []
            others: dict[str, None] = {}
            for failure in failures:
                kind = (
                    linter.kind_of(failure.expectation.probe)
                    if failure.dataplane == self.target.name
                    else None
                )
                if kind is None or kind == f.kind:
                    real.append(failure)
                else:
                    others[kind] = None
            done[f.id] = self._settle(f, proposal, real, tuple(others))

    def _settle(
        self,
        finding: Finding,
        proposal: Proposal,
        failures: list[_Failure],
        other_kinds: tuple[str, ...] = (),
    ) -> Finding:
        if failures:
            shown = "; ".join(str(x) for x in failures[:MAX_FAILURES_SHOWN])
            more = f" (and {len(failures) - MAX_FAILURES_SHOWN} more)" if len(failures) > 2 else ""
            return replace(
                finding,
                no_fix_reason=f"the candidate fix ({proposal.summary}) does not restore parity, "
                f"so none is offered: {shown}{more}",
            )
        supersedes: list[str] = []
        for name in proposal.edits:
            supersedes.extend(self.edited_by[name])
            self.edited_by[name].append(finding.id)
        for obj in proposal.objects:
            meta = obj["metadata"]
            key = f"{obj['kind']} {meta['namespace']}/{meta['name']}"
            if key in proposal.edits:
                self.current[key] = obj
        explanation = proposal.explanation
        if other_kinds:
            explanation += (
                f" Some of these connections also change for another reason "
                f"({', '.join(other_kinds)}): the fix of that finding covers them (lint again "
                "after applying this one)."
            )
        fix = Fix(
            summary=proposal.summary,
            action=proposal.action,
            when=proposal.when,
            objects=proposal.objects,
            explanation=explanation,
            supersedes=tuple(dict.fromkeys(supersedes)),
        )
        return replace(finding, fix=fix, no_fix_reason=proposal.no_np_reason)

    # ---------------------------------------------------------------- helpers
