"""Parity: a baseline record against a current record, probe by probe, matched by id.

Each probe gets one status: `same`; `unrealized` (the same verdict, though the engine
predicted a change: parity holds, the model was wrong); `lost` (allowed before, denied
now) and `gained` (denied before, allowed now) that nobody predicted or accepted;
`predicted` (a lost or gained change the engine predicted for this migration: the
baseline matched the prediction for the old dataplane and the current run the prediction
for the new one); `accepted` (listed in the accept file, with its reason); `flaky` and
`error` (either side could not establish a verdict); `missing` (observed in the baseline,
not observed now: not run, with the backend's reason, or not planned); `new` (observed
now, not in the baseline's observations); `not-run` (observed by neither run: the backend
could not run it). Parity holds when nothing is lost, gained, predicted, flaky, in error
or missing. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from netparity.accept import Acceptance
from netparity.compare_model import (
    FAILING,
    PARITY_KIND,
    PARITY_READS_VERSIONS,
    PARITY_SCHEMA_VERSION,
    PASSING,
    Parity,
    ProbeParity,
    Status,
)
from netparity.engine.causes import UNEXPLAINED, Cause
from netparity.record import (
    Outcome,
    ProbeRecord,
    Record,
    check_comparable,
    observed_text,
)

__all__ = [
    "FAILING",
    "PARITY_KIND",
    "PARITY_READS_VERSIONS",
    "PARITY_SCHEMA_VERSION",
    "PASSING",
    "Parity",
    "ProbeParity",
    "Status",
    "check_comparable",
    "compare",
]


def _dataplane(named: str, fallback: str, records: list[ProbeRecord]) -> str:
    """The dataplane name predictions use: the record's own if predicted, else the plan's."""
    if any(named in r.predicted for r in records):
        return named
    return fallback


def _decision(probe: ProbeRecord | None, dp: str) -> str | None:
    if probe is None:
        return None
    p = probe.prediction(dp)
    return p.decision if p is not None else None


def _where(probe: ProbeRecord) -> str:
    """The probe's purpose: the scenario and rule the planner chose it for."""
    parts = []
    scenarios = list(
        dict.fromkeys([*([probe.scenario] if probe.scenario else []), *probe.scenarios])
    )
    if scenarios:
        parts.append(f"scenario {', '.join(scenarios)}")
    if probe.rule:
        parts.append(f"rule {probe.rule}")
    return ", ".join(parts) if parts else "no scenario or rule (a probe of the plan's classes)"


def _says_causes(record: Record, before: str) -> bool:
    """Whether the record's causes explain before -> after: they are relative to its plan's
    current dataplane, and only records of 2.1 and later have them."""
    return record.plan.current == before and record.schema_version >= 2 and record.schema_minor >= 1


def causes_text(causes: tuple[Cause, ...]) -> str:
    """The causes of a predicted change, in a few words."""
    if not causes:
        return UNEXPLAINED
    return "; ".join(str(c) for c in causes)


def _why(probe: ProbeRecord, causes: tuple[Cause, ...], known: bool) -> str:
    """Cause first, then purpose ("planned for ...")."""
    purpose = f"planned for {_where(probe)}"
    if not known:  # a record older than 2.1, or predictions relative to another dataplane
        return purpose
    return f"cause {causes_text(causes)} ({purpose})"


def _causes(
    base: ProbeRecord | None, cur: ProbeRecord | None, after: str, origins: tuple[bool, bool]
) -> tuple[tuple[Cause, ...], bool]:
    """The causes of before -> after from the record whose plan's current dataplane is
    `before` (the current run's first), and whether such a record said."""
    for rec, ok in ((cur, origins[1]), (base, origins[0])):
        if rec is None or not ok:
            continue
        pred = rec.prediction(after)
        if pred is not None:
            return pred.causes, True
    return (), False


def _explain(probe: ProbeRecord, dp: str) -> str:
    p = probe.prediction(dp)
    if p is None:
        return f"{dp}: no prediction"
    return f"{dp} predicts {p.decision}" + (f": {p.explanation}" if p.explanation else "")


def _not_planned(base: ProbeRecord, baseline: Record, current: Record) -> str:
    """Why a baseline probe is not in the current run's plan, as far as the records say."""
    if current.schema_version < 2:
        return (
            "not in this run's record, a version-1 record, which leaves out the probes its "
            "backend could not run: not planned or not run"
        )
    planned = [*current.probes, *current.not_run]
    classes = {c for p in planned for c in (p.source_class, p.destination_class) if c}
    rules = {r for p in planned for r in (*([p.rule] if p.rule else []), *p.rules)}
    why = []
    for end, cls in (("source", base.source_class), ("destination", base.destination_class)):
        if cls and cls not in classes:
            why.append(
                f"no probe of this run's plan has its {end} class {cls} "
                "(its pods are gone or relabelled)"
            )
    if base.rule and base.rule not in rules:
        why.append(f"no probe of this run's plan exercises its rule {base.rule}")
    present = current.plan.coverage.get("scenarios_present")
    if base.scenario and isinstance(present, list) and base.scenario not in present:
        why.append(f"scenario {base.scenario} is no longer present in the cluster")
    if why:
        return "; ".join(why)
    if baseline.plan.digest == current.plan.digest:
        return (
            "this run's plan has the baseline's digest, yet its record lacks the probe "
            "(the record is incomplete)"
        )
    return (
        f"the plan changed since the baseline (digest {baseline.plan.digest[:12]} -> "
        f"{current.plan.digest[:12]}) and no longer has this probe"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Judging:
    """One probe being judged: its two records, the observed and predicted verdicts."""

    pid: str
    base: ProbeRecord | None
    cur: ProbeRecord | None
    before: str
    after: str
    accepts: Mapping[str, Acceptance]
    pb: str | None  # predicted under `before`
    pa: str | None  # predicted under `after`
    causes: tuple[Cause, ...]
    known: bool

    @property
    def probe(self) -> ProbeRecord:
        probe = self.cur or self.base
        assert probe is not None
        return probe

    @property
    def b(self) -> Outcome | None:
        return self.base.verdict if self.base is not None else None

    @property
    def a(self) -> Outcome | None:
        return self.cur.verdict if self.cur is not None else None

    def make(
        self,
        status: Status,
        change: Status,
        message: str,
        *,
        predicted: bool = False,
        acceptance: Acceptance | None = None,
    ) -> ProbeParity:
        return ProbeParity(
            id=self.pid,
            title=self.probe.title,
            status=status,
            change=change,
            before=self.b,
            after=self.a,
            predicted_before=self.pb,
            predicted_after=self.pa,
            predicted=predicted,
            accepted=acceptance if status is Status.ACCEPTED else None,
            baseline=self.base,
            current=self.cur,
            message=message,
            causes=self.causes,
            causes_known=self.known,
        )


def _judge_one(
    pid: str,
    base: ProbeRecord | None,
    cur: ProbeRecord | None,
    *,
    before: str,
    after: str,
    accepts: Mapping[str, Acceptance],
    not_planned: str = "",
    origins: tuple[bool, bool] = (False, False),
) -> ProbeParity:
    """One probe's status. `base`/`cur` may be probes their backend could not run
    (`ProbeRecord.not_run`); `not_planned` says why a baseline probe has no `cur`."""
    # Predictions come from the current run's plan (made for this migration), else the baseline's.
    pb = _decision(cur, before) or _decision(base, before)
    pa = _decision(cur, after) or _decision(base, after)
    causes, known = _causes(base, cur, after, origins)
    if pb == pa or pb is None or pa is None:
        causes = ()  # no change predicted: nothing to explain
    j = _Judging(
        pid=pid,
        base=base,
        cur=cur,
        before=before,
        after=after,
        accepts=accepts,
        pb=pb,
        pa=pa,
        causes=causes,
        known=known,
    )
    base_ran = base is not None and base.not_run is None
    cur_ran = cur is not None and cur.not_run is None
    if not base_ran and not cur_ran:
        return _neither_ran(j, not_planned)
    if not base_ran:
        return _only_now(j)
    if not cur_ran:
        return _missing(j, not_planned)
    return _both_ran(j)


def _neither_ran(j: _Judging, not_planned: str) -> ProbeParity:
    base, cur = j.base, j.cur
    if base is not None and cur is not None:
        why = (
            f"not run: {cur.not_run}"
            if base.not_run == cur.not_run
            else f"not run in the baseline: {base.not_run}; not run now: {cur.not_run}"
        )
        text = f"neither run could run it ({why})"
    elif cur is not None:
        text = f"not in the baseline, and this run could not run it (not run: {cur.not_run})"
    else:
        assert base is not None
        text = (
            f"the baseline could not run it (not run: {base.not_run}), and this run's "
            f"plan no longer has it ({not_planned})"
        )
    return j.make(
        Status.NOT_RUN,
        Status.NOT_RUN,
        f"not-run: {text}; no verdict to compare, nobody checked this connection",
    )


def _only_now(j: _Judging) -> ProbeParity:
    """Observed now, not in the baseline's observations."""
    base, cur = j.base, j.cur
    assert cur is not None
    if base is None:
        return j.make(
            Status.NEW, Status.NEW, f"new: not in the baseline; observed {cur.verdict} now"
        )
    return j.make(
        Status.NEW,
        Status.NEW,
        f"new: the baseline could not run it (not run: {base.not_run}); observed {cur.verdict} now",
    )


def _missing(j: _Judging, not_planned: str) -> ProbeParity:
    """Observed in the baseline, not checked now."""
    base, cur = j.base, j.cur
    assert base is not None
    why = f"not run: {cur.not_run}" if cur is not None else f"not planned: {not_planned}"
    what = (
        f"MISSING: observed {base.verdict} in the baseline ({j.before}), not checked now "
        f"({j.after}): {why}"
    )
    acceptance = j.accepts.get(j.pid)
    if acceptance is not None:
        return j.make(
            Status.ACCEPTED,
            Status.MISSING,
            f"accepted ({acceptance.reason}): {what}",
            acceptance=acceptance,
        )
    return j.make(
        Status.MISSING,
        Status.MISSING,
        f"{what}\n  nobody checked this connection after the upgrade: it fails the gate "
        "unless an accept entry covers it",
    )


def _both_ran(j: _Judging) -> ProbeParity:
    base, cur, b, a = j.base, j.cur, j.b, j.a
    assert base is not None and cur is not None
    pb, pa, before, after = j.pb, j.pa, j.before, j.after
    if Outcome.ERROR in (b, a):
        side, rec = ("the baseline", base) if b is Outcome.ERROR else ("this run", cur)
        why = rec.error or observed_text(rec.tries)
        return j.make(
            Status.ERROR,
            Status.ERROR,
            f"error: the probe could not run in {side} ({why}); an error is never counted as a deny",
        )
    if Outcome.FLAKY in (b, a):
        side, rec = ("the baseline", base) if b is Outcome.FLAKY else ("this run", cur)
        return j.make(
            Status.FLAKY,
            Status.FLAKY,
            f"flaky: the verdict changed between tries in {side} ({observed_text(rec.tries)})",
        )
    if b == a:
        decided = ("allow", "deny")
        if pb in decided and pa in decided and pb != pa:
            probe = j.probe
            return j.make(
                Status.UNREALIZED,
                Status.SAME,
                f"unrealized: {a} before ({before}) and now ({after}); the engine predicted "
                f"{pb} -> {pa}, which did not happen: parity holds, the model was wrong "
                f"({_why(probe, j.causes, j.known)})\n  {_explain(probe, before)}\n  {_explain(probe, after)}",
            )
        return j.make(Status.SAME, Status.SAME, f"same: {a} before ({before}) and now ({after})")
    return _changed(j)


def _changed(j: _Judging) -> ProbeParity:
    """Both runs observed a verdict, and they differ: lost or gained, predicted, accepted."""
    b, a, pb, pa, before, after = j.b, j.a, j.pb, j.pa, j.before, j.after
    probe, causes, known = j.probe, j.causes, j.known
    assert j.cur is not None
    change = Status.LOST if b is Outcome.ALLOW else Status.GAINED
    what = (
        f"{change.upper()}: {'allowed' if change is Status.LOST else 'denied'} in the baseline "
        f"({before}), {'denied' if change is Status.LOST else 'allowed'} now ({after})"
    )
    predicted = pb is not None and pa is not None and pb != pa and pb == str(b) and pa == str(a)
    if predicted:
        why = f"predicted by the engine for this migration: {_why(probe, causes, known)}"
    else:
        why = (
            f"NOT predicted: the engine expected {pb or 'nothing'} under {before} and "
            f"{pa or 'nothing'} under {after}; "
            + (_why(probe, causes, known) if known else _where(probe))
        )
    detail = f"\n  {_explain(probe, before)}\n  {_explain(probe, after)}"
    acceptance = j.accepts.get(j.pid)
    if acceptance is None and j.cur.expect is not None and j.cur.expect == str(a):
        acceptance = Acceptance(id=j.pid, reason=f"the probe file expects {a} under {after}")
    if acceptance is not None:
        return j.make(
            Status.ACCEPTED,
            change,
            f"accepted ({acceptance.reason}): {what}\n  {why}{detail}",
            predicted=predicted,
            acceptance=acceptance,
        )
    status = Status.PREDICTED if predicted else change
    return j.make(status, change, f"{what}\n  {why}{detail}", predicted=predicted)


def compare(
    baseline: Record,
    current: Record,
    *,
    accepts: Mapping[str, Acceptance] | None = None,
    check: bool = True,
) -> Parity:
    """Compare probe by probe; raises RecordError for records that cannot be compared."""
    if check:
        check_comparable(baseline, current)
    accepts = accepts or {}
    base_all = [*baseline.probes, *baseline.not_run]
    cur_all = [*current.probes, *current.not_run]
    base_by = {p.id: p for p in base_all}
    cur_by = {p.id: p for p in cur_all}
    every = cur_all + base_all
    before = _dataplane(baseline.dataplane, current.plan.current, every)
    after = _dataplane(current.dataplane, current.plan.target, every)
    # a record's causes are relative to its plan's current dataplane: usable where that is
    # the comparison's "before"
    origins = (_says_causes(baseline, before), _says_causes(current, before))
    out = [
        _judge_one(
            p.id, base_by.get(p.id), p, before=before, after=after, accepts=accepts, origins=origins
        )
        for p in cur_all
    ]
    out += [
        _judge_one(
            p.id,
            p,
            None,
            before=before,
            after=after,
            accepts=accepts,
            not_planned=_not_planned(p, baseline, current),
            origins=origins,
        )
        for p in base_all
        if p.id not in cur_by
    ]
    used = {p.id for p in out if p.status is Status.ACCEPTED}
    unused = tuple(sorted(a for a in accepts if a not in used))
    notes = _notes(baseline, current, unused, out, set(base_by) | set(cur_by))
    counts = {s.value: 0 for s in Status}
    for p in out:
        counts[p.status.value] += 1
    return Parity(
        baseline=baseline,
        current=current,
        before=before,
        after=after,
        probes=tuple(out),
        unused_accepts=unused,
        notes=tuple(notes),
        counts=MappingProxyType(counts),
    )


def _notes(
    baseline: Record,
    current: Record,
    unused: tuple[str, ...],
    out: list[ProbeParity],
    ids: set[str],
) -> list[str]:
    """What the reader of a comparison should know: a changed plan, records on one
    dataplane or swapped, accept entries not needed."""
    notes: list[str] = []
    if baseline.plan.digest != current.plan.digest:
        notes.append(
            f"the plan changed since the baseline (digest {baseline.plan.digest[:12]} -> "
            f"{current.plan.digest[:12]}): the cluster's policies or workloads differ"
        )
    if baseline.dataplane == current.dataplane:
        notes.append(f"both records were taken on the same dataplane ({current.dataplane})")
    if baseline.time > current.time:
        notes.append(
            f"WARNING: the baseline ({baseline.time}) is newer than the current record "
            f"({current.time}): are the two records swapped?"
        )
    if (
        baseline.dataplane != current.dataplane
        and baseline.dataplane == current.plan.target
        and current.dataplane == current.plan.current
    ):
        notes.append(
            f"WARNING: the baseline was taken on {baseline.dataplane}, the migration's target, "
            f"and the current record on {current.dataplane}, its start: are the two records "
            "swapped?"
        )
    for a in unused:
        where = (
            "matches no probe of either record (a typo, or a probe no longer planned?)"
            if a not in ids
            else "did not change"
        )
        if a in ids:
            st = next(p.status for p in out if p.id == a)
            if st in (Status.FLAKY, Status.ERROR):
                where = f"is {st}, which an accept entry never hides"
        notes.append(f"accept entry {a} {where}: it was not needed")
    return notes
