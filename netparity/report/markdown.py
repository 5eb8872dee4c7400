"""parity.md: the answer in Markdown, short enough for a pull-request comment.

The verdict, the counts, the changes by cause and the first changed probes (the most
serious first), each linking into parity.html by anchor. It stays far below GitHub's
65,536-character limit for a comment however many probes changed.
"""

from __future__ import annotations

from collections import Counter

from netparity.report.lintdata import CATEGORIES, LintView
from netparity.report.matrix import SEVERITY
from netparity.report.model import FAILING, STATUSES, Report, Row, is_problem
from netparity.report.scenarios import unlooked

MAX_ROWS = 30  # changed probes listed; the rest are counted and linked
MAX_CELL = 90  # characters in one table cell


def _cell(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _escaped(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    body = _cell(text).replace("`", "'")
    return f"`{body}`"


def _when(time: str | None) -> str:
    return (time or "-").replace("T", " ").replace("Z", " UTC")


# The list's order: what nobody predicted first, so that MAX_ROWS never hides it behind a
# long run of predicted changes (the matrix keeps SEVERITY for its colours).
_LISTED = (
    *(s for s in SEVERITY if s != "predicted" and SEVERITY.index(s) < SEVERITY.index("accepted")),
    "predicted",
    *SEVERITY[SEVERITY.index("accepted") :],
)


def _rank(row: Row) -> tuple[int, int]:
    """Observations that disagree with the engine first, then surprises, then predictions."""
    surprise = 0 if row.check in ("disagrees", "unexpected") else 1
    return surprise, _LISTED.index(row.status) if row.status in _LISTED else len(_LISTED)


def _scenarios(report: Report) -> list[str]:
    """Per scenario: probed on this cluster, or only predicted there, and why not."""
    entries = report.scenario_probing()
    gaps = unlooked(entries)
    out = ["### What was probed on this cluster, per scenario", ""]
    if gaps:
        out.append(
            f"**{len(gaps)} scenario{'s' if len(gaps) != 1 else ''} present here "
            f"{'were' if len(gaps) != 1 else 'was'} not (fully) probed**: only the engine's "
            "prediction speaks for the probes not run."
        )
        out.append("")
    out.append("| scenario | on this cluster | probes run | why not |")
    out.append("|---|---|---:|---|")
    for e in entries:
        run = f"{e.probed} of {e.planned}" if e.planned else "-"
        out.append(f"| {e.scenario} | {e.state} | {run} | {_escaped(e.why()) or '-'} |")
    out.append("")
    return out


def render_markdown(
    report: Report, *, html: str = "parity.html", lint: LintView | None = None
) -> str:
    """The Markdown page; `html` is where parity.html is (a relative path or a URL)."""
    lines = _headline(report)
    if not report.predictions_only:
        lines.extend(_gate(report))
    lines.extend(_scenarios(report))
    lines.extend(_changes(report, html))
    if lint is not None and lint.findings:
        fixes = sum(1 for f in lint.findings if f.fix is not None)
        lines.append(
            f"**Lint:** {len(lint.findings)} migration finding{'s' if len(lint.findings) != 1 else ''}"
            f" for {lint.target}, {fixes} with remediation YAML "
            f"([fixes by cause]({html}#changes))."
        )
        lines.append("")
    for n in report.notes[:5]:
        lines.append(f"> note: {_cell(n)}")
    if report.notes:
        lines.append("")
    lines.append(
        f"[Full report]({html}) · [matrix]({html}#matrix) · [all {len(report.rows)} probes]"
        f"({html}#probes)"
    )
    return "\n".join(lines) + "\n"


def _headline(report: Report) -> list[str]:
    """The title, who was compared, and the counts as a one-row table."""
    c = report.counts
    lines: list[str] = []
    if report.predictions_only:
        flips = c.get("predicted", 0)
        disagree = sum(report.checks.get(k, 0) for k in ("disagrees", "unexpected"))
        icon = "⚠️" if disagree or c.get("flaky", 0) or c.get("error", 0) else "🔎"
        lines.append(
            f"## {icon} netparity: {flips} probe{'s' if flips != 1 else ''} predicted to change "
            f"under {report.after} · `{report.cluster}`"
        )
        lines.append("")
        lines.append(
            f"Recorded on **{report.baseline.dataplane}** at {_when(report.baseline.time)} "
            f"({report.phase} phase, {report.baseline.backend} backend); the **{report.after}** "
            "side is the engine's prediction."
        )
        lines.append("")
        lost = sum(1 for r in report.rows if r.status == "predicted" and r.change == "lost")
        head = ["probes", "same", "predicted allow → deny", "predicted deny → allow"]
        vals = [len(report.rows), c.get("same", 0), lost, flips - lost]
        head += ["disagree with the engine", "flaky", "error"]
        vals += [disagree, c.get("flaky", 0), c.get("error", 0)]
    else:
        icon = "✅" if report.held else "❌"
        verdict = "Parity held" if report.held else "Parity broken"
        lines.append(f"## {icon} netparity: {verdict} · `{report.cluster}`")
        lines.append("")
        assert report.current is not None
        lines.append(
            f"**{report.before}** (baseline, {_when(report.baseline.time)}) → "
            f"**{report.after}** ({_when(report.current.time)})"
        )
        lines.append("")
        head = list(STATUSES[-1:] + STATUSES[:-1])  # same first, then the failures
        vals = [c.get(s, 0) for s in head]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---:|" * len(head))
    lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    lines.append("")
    return lines


def _gate(report: Report) -> list[str]:
    """What fails the gate, and the statuses that pass it but deserve a word."""
    c = report.counts
    lines: list[str] = []
    failing = sum(c.get(s, 0) for s in FAILING)
    if failing:
        missing = c.get("missing", 0)
        lines.append(
            f"**{failing} probe{'s' if failing != 1 else ''} fail the gate** (exit "
            f"{report.exit_code if report.exit_code is not None else 1}). Fix each change "
            "or accept it with a reason."
            + (
                f" {missing} {'were' if missing != 1 else 'was'} observed in the baseline "
                "and not checked now (missing: not run, or not planned)."
                if missing
                else ""
            )
        )
        lines.append("")
    unrealized = c.get("unrealized", 0)
    if unrealized:
        lines.append(
            f"**{unrealized} predicted change{'s' if unrealized != 1 else ''} did not "
            "happen** (unrealized): parity holds there, the engine was wrong."
        )
        lines.append("")
    not_run = c.get("not-run", 0)
    if not_run:
        lines.append(
            f"**{not_run} probe{'s' if not_run != 1 else ''} could be run by neither "
            "run** (not-run): nobody checked them."
        )
        lines.append("")
    return lines


def _changes(report: Report, html: str) -> list[str]:
    """The changed (or predicted) probes by cause, and the first MAX_ROWS of them."""
    lines: list[str] = []
    changed = [r for r in report.rows if r.category is not None or is_problem(r)]
    if report.predictions_only:
        changed += [
            r for r in report.rows if r.check in ("disagrees", "unexpected") and r not in changed
        ]
    if changed:
        by_cat = Counter(
            c for r in changed if r.category is not None for c in (r.categories or (r.category,))
        )
        causes = [f"{k} {by_cat[k]}" for k in CATEGORIES if by_cat.get(k)]
        if causes:
            several = sum(1 for r in changed if len(r.categories) > 1)
            note = f" ({several} changed for several causes: counted under each)" if several else ""
            lines.append(f"**By cause:** {', '.join(causes)}{note}")
            lines.append("")
        title = "Predicted changes" if report.predictions_only else "Changed probes"
        lines.append(f"### {title}")
        lines.append("")
        arrow = f"{report.before} → {report.after}"
        lines.append(f"| status | probe | source → destination | port | {arrow} | cause |")
        lines.append("|---|---|---|---|---|---|")
        ordered = sorted(changed, key=_rank)
        for r in ordered[:MAX_ROWS]:
            status = r.status
            if report.predictions_only and r.status == "predicted":
                status = f"predicted {r.change}"
            if r.check in ("disagrees", "unexpected"):
                status = f"{status}, {r.check}" if status != "same" else r.check
            anchor = "p" if r.category is not None or is_problem(r) else "d"
            lines.append(
                f"| {status} | [`{r.id}`]({html}#{anchor}-{r.id}) | "
                f"{_code(r.source.signature)} → {_code(r.destination.signature)} | "
                f"{r.port_protocol} {r.kind} | {r.before.verdict or '-'} → {r.after.verdict or '-'} | "
                f"{_cell(', '.join(r.categories) or r.category or r.status)} |"
            )
        if len(ordered) > MAX_ROWS:
            lines.append("")
            lines.append(
                f"… and {len(ordered) - MAX_ROWS} more in [the full report]({html}#changes)."
            )
        lines.append("")
    else:
        lines.append("No probe changed." if not report.predictions_only else "No change predicted.")
        lines.append("")
    return lines
