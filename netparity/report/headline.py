"""The top of parity.html: the answer in words (held, broken, or what is predicted) and
the tiles of counts under it, each with the status the table filters on when clicked.
"""

from __future__ import annotations

from dataclasses import dataclass

from netparity.report.model import FAILING, STATUSES, Report
from netparity.report.scenarios import unlooked

STATUS_HELP: dict[str, str] = {
    "same": "the same verdict before and after",
    "lost": "allowed before, denied now, not predicted: an outage",
    "gained": "denied before, allowed now, not predicted: a hole",
    "predicted": "a change the engine predicted for this migration (a known risk)",
    "accepted": "a change listed in the accept file with a reason",
    "flaky": "the verdict changed between tries",
    "error": "the probe could not run (never counted as a deny)",
    "unrealized": "predicted to change, did not: parity holds, the engine was wrong",
    "new": "observed now, not in the baseline's observations",
    "missing": "observed in the baseline, not checked now (not run or not planned)",
    "not-run": "observed by neither run: the backend cannot run it",
}


def _unprobed_aside(report: Report) -> str:
    gaps = unlooked(report.scenario_probing())
    if not gaps:
        return ""
    names = ", ".join(e.scenario for e in gaps)
    return (
        f" {len(gaps)} scenario{'s' if len(gaps) != 1 else ''} present here "
        f"{'were' if len(gaps) != 1 else 'was'} not (fully) probed on this cluster, only "
        f"predicted: {names} (see what was probed)."
    )


def verdict(report: Report) -> dict[str, str]:
    v = _verdict_words(report)
    v["detail"] += _unprobed_aside(report)
    return v


def _verdict_words(report: Report) -> dict[str, str]:
    c = report.counts
    if report.predictions_only:
        flips = c.get("predicted", 0)
        lost = sum(1 for r in report.rows if r.status == "predicted" and r.change == "lost")
        gained = flips - lost
        disagree = sum(report.checks.get(k, 0) for k in ("disagrees", "unexpected"))
        problems = disagree + c.get("flaky", 0) + c.get("error", 0)
        head = (
            f"{flips} probe{'s' if flips != 1 else ''} predicted to change under {report.after}"
            if flips
            else f"No probe is predicted to change under {report.after}"
        )
        detail = (
            f"Baseline on {report.baseline.dataplane} ({report.phase} phase): "
            f"{lost} would be cut (allow → deny), {gained} would open (deny → allow). "
        )
        if problems:
            detail += (
                f"{problems} observation{'s' if problems != 1 else ''} need a look first "
                f"({disagree} disagree with the engine, {c.get('flaky', 0)} flaky, "
                f"{c.get('error', 0)} in error)."
            )
        else:
            detail += "Every observation agrees with the engine."
        tone = "warn" if problems else ("pre" if flips else "ok")
        return {"head": head, "detail": detail, "tone": tone, "short": "prediction"}
    failing = sum(c.get(s, 0) for s in FAILING)
    unrealized = c.get("unrealized", 0)
    not_run = c.get("not-run", 0)
    aside = ""
    if unrealized:
        aside += (
            f" {unrealized} probe{'s' if unrealized != 1 else ''} predicted to change did not "
            "(unrealized): parity holds there, the engine was wrong."
        )
    if not_run:
        aside += (
            f" {not_run} probe{'s' if not_run != 1 else ''} could be run by neither run "
            "(not-run): nobody checked them."
        )
    if report.held:
        accepted = c.get("accepted", 0)
        extra = f" ({accepted} accepted change{'s' if accepted != 1 else ''})" if accepted else ""
        return {
            "head": f"Parity held{extra}",
            "detail": f"Every probe kept its {report.before} verdict under {report.after}, "
            "or its change was accepted." + aside,
            "tone": "ok",
            "short": "held",
        }
    parts = [
        f"{c.get(s, 0)} {s}"
        for s in ("lost", "gained", "predicted", "flaky", "error", "missing")
        if c.get(s, 0)
    ]
    return {
        "head": "Parity broken",
        "detail": f"{failing} probe{'s' if failing != 1 else ''} fail the gate: {', '.join(parts)}. "
        + (
            "Lost and gained changes were not predicted: look at them first. "
            if c.get("lost", 0) or c.get("gained", 0)
            else ""
        )
        + "Fix each change or accept it with a reason."
        + aside,
        "tone": "bad",
        "short": "broken",
    }


CHECK_LABELS = {
    "agrees": "agree",
    "disagrees": "disagree",
    "unexpected": "differ from the probe file's expect",
    "unpredicted": "not predictable (xfail)",
    "not-run": "not run by the backend",
    "error": "in error",
    "flaky": "flaky",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Tile:
    css: str  # the status class that colours it
    label: str
    count: int
    status: str  # what the table filter selects on a click
    failing: bool
    help: str


def tiles(report: Report) -> list[Tile]:
    c = report.counts
    if not report.predictions_only:
        return [
            Tile(
                css=s,
                label=s,
                count=c.get(s, 0),
                status=s,
                failing=s in FAILING and c.get(s, 0) > 0,
                help=STATUS_HELP[s],
            )
            for s in STATUSES
        ]
    lost = sum(1 for r in report.rows if r.status == "predicted" and r.change == "lost")
    gained = c.get("predicted", 0) - lost
    disagree = sum(report.checks.get(k, 0) for k in ("disagrees", "unexpected"))
    after = report.after
    return [
        Tile(
            css="lost",
            label="predicted allow → deny",
            count=lost,
            status="predicted",
            failing=lost > 0,
            help=f"allowed now, {after} is predicted to deny: an outage to fix",
        ),
        Tile(
            css="gained",
            label="predicted deny → allow",
            count=gained,
            status="predicted",
            failing=gained > 0,
            help=f"denied now, {after} is predicted to allow: a hole to fix",
        ),
        Tile(
            css="same",
            label="same",
            count=c.get("same", 0),
            status="same",
            failing=False,
            help=f"the engine predicts the same verdict under {after}",
        ),
        Tile(
            css="predicted",
            label="disagree with the engine",
            count=disagree,
            status="text:disagrees",
            failing=disagree > 0,
            help="observed differently from the engine's prediction",
        ),
        Tile(
            css="flaky",
            label="flaky",
            count=c.get("flaky", 0),
            status="flaky",
            failing=c.get("flaky", 0) > 0,
            help=STATUS_HELP["flaky"],
        ),
        Tile(
            css="error",
            label="error",
            count=c.get("error", 0),
            status="error",
            failing=c.get("error", 0) > 0,
            help=STATUS_HELP["error"],
        ),
    ]
