"""What a probe item reports, and how it is judged: the verdict types.

`ItemVerdict` is one pytest item's outcome and message with its JUnit properties;
`judge_pre` checks an observation against the engine's prediction (before the upgrade),
`judge_post` a probe's parity with the baseline (after it). The plugin, the run
(netparity.run) and the report judge with the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from netparity.compare import ProbeParity, Status
from netparity.engine.causes import Cause, causes_short
from netparity.record import Outcome, ProbeRecord, observed_text


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemVerdict:
    """What one pytest item reports: passed | failed | skipped | xfailed, and why."""

    outcome: str
    message: str
    properties: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> list[object]:
        return [
            str(self.outcome),
            str(self.message),
            [[str(k), str(v)] for k, v in self.properties],
        ]

    @classmethod
    def from_json(cls, raw: Sequence[object]) -> ItemVerdict:
        outcome, message, props = raw
        assert isinstance(outcome, str) and isinstance(message, str) and isinstance(props, list)
        return cls(
            outcome=outcome, message=message, properties=tuple((str(k), str(v)) for k, v in props)
        )


def _describe(rec: ProbeRecord) -> str:
    where = []
    if rec.scenario:
        where.append(f"scenario {rec.scenario}")
    if rec.rule:
        where.append(f"rule {rec.rule}")
    head = f"probe {rec.id} ({rec.intent}): {rec.title}"
    pods = f"\n  probed from {rec.source.text} to {rec.destination.text}"
    return head + (f"; {', '.join(where)}" if where else "") + pods


def probe_properties(
    rec: ProbeRecord,
    *,
    phase: str,
    status: str,
    baseline: ProbeRecord | None = None,
    causes: Sequence[Cause] = (),
) -> tuple[tuple[str, str], ...]:
    """The JUnit properties of a probe item (the parity report reads the same names)."""
    props = [
        ("netparity.probe_id", rec.id),
        ("netparity.phase", phase),
        ("netparity.status", status),
        ("netparity.source", rec.source.text),
        ("netparity.destination", rec.destination.text),
        ("netparity.port", str(rec.port)),
        ("netparity.protocol", rec.protocol),
        ("netparity.path_kind", rec.kind),
        ("netparity.intent", rec.intent),
        ("netparity.observed", f"{rec.verdict} ({observed_text(rec.tries)})"),
        ("netparity.baseline", "" if baseline is None else str(baseline.verdict)),
        ("netparity.predicted", ", ".join(f"{dp}={p.decision}" for dp, p in rec.predicted.items())),
        ("netparity.scenario", rec.scenario or ""),
        ("netparity.rule", rec.rule or ""),
        ("netparity.cause", causes_short(causes)),
    ]
    return tuple(props)


def judge_pre(
    rec: ProbeRecord, dataplane: str, *, phase: str = "pre", target: str | None = None
) -> ItemVerdict:
    """Before the upgrade: the observation must agree with the prediction for this dataplane
    (or with the probe file's expectation, which wins where given). `target`: the plan's
    target, whose prediction's causes the item's properties name."""
    observed = f"{rec.verdict} ({observed_text(rec.tries)})"
    pred = rec.prediction(dataplane)
    then = rec.prediction(target) if target is not None else None
    causes = then.causes if then is not None else ()

    def verdict(outcome: str, message: str, status: str) -> ItemVerdict:
        return ItemVerdict(
            outcome=outcome,
            message=message,
            properties=probe_properties(rec, phase=phase, status=status, causes=causes),
        )

    if rec.verdict is Outcome.ERROR:
        why = rec.error or "no try completed"
        return verdict(
            "failed",
            f"ERROR: the probe could not run ({why}); an error is never counted as a deny\n  {_describe(rec)}",
            "error",
        )
    if rec.verdict is Outcome.FLAKY:
        return verdict(
            "failed",
            f"FLAKY: the verdict changed between tries: {observed_text(rec.tries)}\n  {_describe(rec)}",
            "flaky",
        )
    if rec.expect is not None:
        if rec.expect != str(rec.verdict):
            return verdict(
                "failed",
                f"the probe file expects {rec.expect} under {dataplane}; observed {observed}\n"
                f"  engine: {pred.decision + ': ' + pred.explanation if pred else 'no prediction'}\n"
                f"  {_describe(rec)}",
                "unexpected",
            )
        return verdict("passed", f"observed {observed}, as the probe file expects", "agrees")
    if pred is None or pred.decision not in ("allow", "deny"):
        # observed and recorded, but not green: nothing checked the observation
        why = pred.explanation if pred is not None else f"no prediction for {dataplane}"
        return verdict(
            "xfailed",
            f"unpredicted: observed {observed}; the engine cannot predict it under {dataplane} "
            f"({why}), so nothing checked this observation\n  {_describe(rec)}",
            "unpredicted",
        )
    if pred.decision != str(rec.verdict):
        return verdict(
            "failed",
            f"observed {observed}, but the engine predicts {pred.decision} under {dataplane}\n"
            f"  why the engine says {pred.decision}: {pred.explanation}\n"
            f"  {_describe(rec)}\n"
            "  the model or the cluster is surprising: look before trusting this baseline",
            "disagrees",
        )
    return verdict("passed", f"observed {observed}, as predicted under {dataplane}", "agrees")


def judge_post(pp: ProbeParity, *, after: str) -> ItemVerdict:
    """After the upgrade: the probe's parity with the baseline decides (plus the probe file's
    expectation for the new dataplane, where given)."""
    rec = pp.probe
    props = probe_properties(
        rec, phase="post", status=str(pp.status), baseline=pp.baseline, causes=pp.causes
    )
    if pp.current is None:  # the baseline's probe: this run did not plan it
        props = tuple((k, "not planned" if k == "netparity.observed" else v) for k, v in props)
    if pp.status is Status.NOT_RUN:
        return ItemVerdict(outcome="skipped", message=pp.message, properties=props)
    if pp.status is Status.MISSING:
        where = _describe(rec).replace("\n  probed from", "\n  probed in the baseline from")
        return ItemVerdict(outcome="failed", message=f"{pp.message}\n  {where}", properties=props)
    if pp.current is None or pp.current.not_run is not None:  # missing, and accepted
        return ItemVerdict(outcome="passed", message=pp.message, properties=props)
    if (
        rec.expect is not None
        and rec.verdict in (Outcome.ALLOW, Outcome.DENY)
        and rec.expect != str(rec.verdict)
    ):
        return ItemVerdict(
            outcome="failed",
            message=f"the probe file expects {rec.expect} under {after}; observed {rec.verdict} "
            f"({observed_text(rec.tries)})\n  parity: {pp.message}\n  {_describe(rec)}",
            properties=props,
        )
    if pp.status is Status.NEW:
        return ItemVerdict(outcome="skipped", message=pp.message, properties=props)
    if pp.status is Status.ACCEPTED:
        return ItemVerdict(outcome="passed", message=pp.message, properties=props)
    if pp.failed:
        return ItemVerdict(
            outcome="failed", message=f"{pp.message}\n  {_describe(rec)}", properties=props
        )
    return ItemVerdict(outcome="passed", message=pp.message, properties=props)


def counts_line(verdicts: Mapping[str, ItemVerdict]) -> str:
    counts: dict[str, int] = {}
    for v in verdicts.values():
        counts[v.outcome] = counts.get(v.outcome, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
