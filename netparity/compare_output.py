"""A parity as people and pipelines read it: parity.json, the one-line summary, the text of
`netparity compare`, and changes counted by cause. The comparison itself is
netparity.compare; this module only renders what it decided."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netparity.compare import (
    FAILING,
    PARITY_KIND,
    PARITY_SCHEMA_VERSION,
    PASSING,
    Parity,
    ProbeParity,
    Status,
)
from netparity.record import SCHEMA_MINOR, Record


def _record_summary(r: Record, path: str | None) -> dict[str, Any]:
    return {
        "path": path,
        "time": r.time,
        "phase": r.phase,
        "backend": r.backend,
        "dataplane": r.dataplane,
        "dataplane_version": r.dataplane_version,
        "netparity_version": r.netparity_version,
        "plan_digest": r.plan.digest,
        "plan_size": r.plan.size,
    }


def parity_json(
    parity: Parity, *, baseline_path: str | None = None, current_path: str | None = None
) -> dict[str, Any]:
    from netparity.record import cause_json, probe_json

    probes = []
    for p in parity.probes:
        rec = p.probe
        body = probe_json(rec)
        probes.append(
            {
                "id": p.id,
                "title": p.title,
                "status": str(p.status),
                "change": str(p.change),
                "failed": p.failed,
                "before": None if p.before is None else str(p.before),
                "after": None if p.after is None else str(p.after),
                "predicted_change": p.predicted,
                "predicted_before": p.predicted_before,
                "predicted_after": p.predicted_after,
                "accepted_reason": p.accepted.reason if p.accepted else None,
                "message": p.message,
                "kind": rec.kind,
                "intent": rec.intent,
                "source": body["source"],
                "destination": body["destination"],
                "port": rec.port,
                "protocol": rec.protocol,
                "scenario": rec.scenario,
                "rule": rec.rule,
                "scenarios": list(rec.scenarios),
                "rules": list(rec.rules),
                "causes": [cause_json(c) for c in p.causes] if p.causes_known else None,
                "source_class": rec.source_class,
                "destination_class": rec.destination_class,
                "stands_for": list(rec.stands_for),
                "predicted": body["predicted"],
                "observed_before": [] if p.baseline is None else probe_json(p.baseline)["observed"],
                "observed_after": [] if p.current is None else probe_json(p.current)["observed"],
            }
        )
    return {
        "kind": PARITY_KIND,
        "schema_version": PARITY_SCHEMA_VERSION,
        "schema_minor": SCHEMA_MINOR,
        "cluster": parity.current.cluster,
        "held": parity.held,
        "exit_code": parity.exit_code,
        "before": parity.before,
        "after": parity.after,
        "baseline": _record_summary(parity.baseline, baseline_path),
        "current": _record_summary(parity.current, current_path),
        "counts": dict(parity.counts),
        "notes": list(parity.notes),
        "unused_accepts": list(parity.unused_accepts),
        "probes": probes,
    }


# What a status means, where its name alone does not say it.
MEANING = {
    Status.UNREALIZED: "predicted to change, did not",
    Status.MISSING: "observed in the baseline, not checked now",
    Status.NOT_RUN: "run by neither: the backend cannot run them",
}


def by_cause(group: Sequence[ProbeParity]) -> str:
    """Probes counted by the cause of their change ("ipblock-pods 3, endport 1"): a probe
    with several causes counts under each; a change no difference explains is
    "unexplained", one the engine did not predict "not predicted", one whose records
    cannot say (older than 2.1) its purpose, "planned for SCENARIO"."""
    by: dict[str, int] = {}
    for p in group:
        if p.causes:
            keys = list(dict.fromkeys(c.name for c in p.causes))
        elif p.predicted_before == p.predicted_after or None in (
            p.predicted_before,
            p.predicted_after,
        ):
            keys = ["not predicted"]
        elif p.causes_known:
            keys = ["unexplained"]
        else:
            keys = [f"planned for {p.probe.scenario or 'no scenario'}"]
        for k in keys:
            by[k] = by.get(k, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(by.items(), key=lambda kv: (-kv[1], kv[0])))


def summary_line(parity: Parity) -> str:
    held = "parity held" if parity.held else "parity BROKEN"
    counts = ", ".join(
        f"{v} {k}" + (f" ({MEANING[Status(k)]})" if Status(k) in MEANING else "")
        for k, v in parity.counts.items()
        if v
    )
    return f"{held}: {counts or 'no probes'} ({parity.before} -> {parity.after})"


def render_text(parity: Parity) -> str:
    """The comparison as plain text: the verdict, the counts, then every non-`same` probe."""
    lines = [summary_line(parity)]
    lines.append(
        f"baseline {parity.baseline.time} on {parity.baseline.dataplane}, "
        f"current {parity.current.time} on {parity.current.dataplane}, "
        f"cluster {parity.current.cluster}"
    )
    lines.extend(f"note: {n}" for n in parity.notes)
    order = [s for s in (*FAILING, *PASSING) if s is not Status.SAME]
    for status in order:
        group = [p for p in parity.probes if p.status is status]
        if not group:
            continue
        lines.append("")
        meaning = f" {MEANING[status]}" if status in MEANING else ""
        lines.append(f"{status} ({len(group)}):{meaning}")
        for p in group:
            lines.append(f"  {p.id}  {p.title}")
            lines.append(f"      {p.message}")
    return "\n".join(lines)
