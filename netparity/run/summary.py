"""The run's closing text (pytest's terminal summary under `netparity`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netparity.record import ProbeRecord, Record
from netparity.run.core import Run
from netparity.verdicts import counts_line

WORDS = {
    "agrees": "agree with the predictions",
    "disagrees": "disagree with the predictions",
    "unexpected": "contradict their probe file",
    "unpredicted": "cannot be predicted by the engine (xfail)",
    "not-run": "could not be run by the backend (skipped)",
    "error": "could not run",
    "flaky": "flaky",
}


def summary_lines(run: Run) -> list[str]:
    lines: list[str] = []
    if run.view.failure is not None:
        lines.append(f"netparity: {run.view.failure}")
    if run.parity is not None:
        lines.extend(_parity_lines(run))
    elif run.record is not None and run.view.verdicts is not None:
        lines.extend(_check_lines(run, run.record, run.view.verdicts))
    if run.record is not None:
        lines.extend(_predicted_only(run.record.not_run))
        lines.extend(_scenario_lines(run.record))
    if run.lint is not None:  # the lint's "not judged" section, as `netparity lint` prints it
        from netparity.lint.output import not_judged_text

        lines.extend(line for line in not_judged_text(run.lint) if line)
    lines.extend(run.written)
    return lines


def _parity_lines(run: Run) -> list[str]:
    from netparity.compare import FAILING, PASSING, Status
    from netparity.compare_output import MEANING, by_cause, summary_line

    parity = run.parity
    assert parity is not None
    lines = [summary_line(parity)]
    for status in (*FAILING, *PASSING):
        group = [p for p in parity.probes if p.status is status]
        if not group or status is Status.SAME:
            continue
        detail = by_cause(group)
        meaning = f", {MEANING[status]}" if status in MEANING else ""
        lines.append(f"  {status}: {len(group)} ({detail}{meaning})")
        if status in (Status.MISSING, Status.NOT_RUN):
            lines.extend(f"    {p.id} {p.title}: {p.message.splitlines()[0]}" for p in group[:20])
            if len(group) > 20:
                lines.append(f"    ... and {len(group) - 20} more (parity.json)")
    lines.extend(f"  note: {n}" for n in parity.notes)
    return lines


def _check_lines(run: Run, record: Record, verdicts: Any) -> list[str]:
    every = (*record.probes, *record.not_run)
    probe_verdicts = {r.id: verdicts[r.id] for r in every if r.id in verdicts}
    by_status: dict[str, int] = {}
    for v in probe_verdicts.values():
        word = dict(v.properties).get("netparity.status", v.outcome)
        by_status[word] = by_status.get(word, 0) + 1
    detail = ", ".join(f"{n} {WORDS.get(k, k)}" for k, n in sorted(by_status.items()))
    lines = [
        f"{run.phase}: {len(every)} probes on {record.dataplane}: "
        f"{detail or counts_line(probe_verdicts)}"
    ]
    bad = sum(n for k, n in by_status.items() if k not in ("agrees", "unpredicted", "not-run"))
    if bad and run.phase == "pre":
        lines.append(
            f"the baseline holds what was observed: look at the {bad} failures above "
            "before trusting it (--phase pre --force records it again)"
        )
    return lines


def _predicted_only(not_run: Sequence[ProbeRecord]) -> list[str]:
    """The rules whose outside probes were predicted, not probed (netparity.kube.layout's
    PREDICTED_ONLY reasons), each with its probes' count and first reason."""
    by_rule: dict[str, list[ProbeRecord]] = {}
    for p in not_run:
        if (p.not_run or "").startswith("predicted only"):
            for rule in p.rules or (p.rule or "no rule (a scenario probe)",):
                by_rule.setdefault(rule, []).append(p)
    if not by_rule:
        return []
    n = len(by_rule)
    out = [f"predicted only, not probed (outside addresses): {n} rule{'s' if n != 1 else ''}"]
    for rule in sorted(by_rule)[:30]:
        probes = by_rule[rule]
        reason = (probes[0].not_run or "").split(";")[0]
        out.append(f"  {rule}: {len(probes)} probe{'s' if len(probes) != 1 else ''} ({reason})")
    if len(by_rule) > 30:
        out.append(f"  ... and {len(by_rule) - 30} more rules (the record's not_run)")
    return out


def _scenario_lines(record: Record) -> list[str]:
    """Per scenario: probed on this cluster by this run, or only predicted, and why not
    (from the record: its probes' scenarios and the not-run reasons)."""
    from netparity.report.scenarios import scenario_probing, summary_lines

    entries = scenario_probing(
        ((p.scenario, *p.scenarios) if p.scenario else p.scenarios, p.not_run)
        for p in (*record.probes, *record.not_run)
    )
    return summary_lines(entries)
