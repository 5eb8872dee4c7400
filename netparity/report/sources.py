"""Where a report comes from: a record (the pre phase) or a parity.json (the post phase),
read into the report's model (netparity.report.model), with their titles and ends parsed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from netparity.compare import PARITY_KIND, PARITY_READS_VERSIONS, PARITY_SCHEMA_VERSION
from netparity.errors import RecordError
from netparity.record import (
    RECORD_KIND,
    JsonReader,
    Outcome,
    ProbeRecord,
    Record,
    cause_from_json,
    load_json,
    observed_text,
    record_from_json,
)
from netparity.report.model import (
    CHECKS,
    FAILING,
    NODES_GROUP,
    NOT_PLANNED,
    OUTSIDE_GROUP,
    STATUSES,
    End,
    Report,
    Row,
    Run,
    Side,
)

# --------------------------------------------------------------------------- titles


def split_title(title: str) -> tuple[str, str, str, str] | None:
    """`SRC -> DST PORT/PROTO KIND` -> (SRC, DST, PORT/PROTO, KIND), or None."""
    head, sep, rest = title.partition(" -> ")
    if not sep:
        return None
    parts = rest.rsplit(" ", 2)
    if len(parts) != 3 or "/" not in parts[1]:
        return None
    return head, parts[0], parts[1], parts[2]


def end_of(signature: str, info: Mapping[str, Any]) -> End:
    """Group and label an endpoint by its meaning (the title's words for it)."""
    text = str(info.get("text") or signature)
    kind = str(info.get("kind") or "pod")
    sig = signature or text
    if sig == "node" or sig.startswith("node:"):
        return End(signature=sig, text=text, kind=kind, group=NODES_GROUP, label=sig)
    if sig.startswith("external:") or sig.startswith("ip:") or sig == "external":
        label = sig.partition(":")[2] or sig
        return End(signature=sig, text=text, kind=kind, group=OUTSIDE_GROUP, label=label)
    for prefix in ("svc:", "nodeport:", "lb:"):
        if sig.startswith(prefix):
            # one entry per Service: which node receives it is a variant the chips merge
            ns, _, rest = sig[len(prefix) :].partition("/")
            name = rest.split("@", 1)[0]
            return End(signature=sig, text=text, kind=kind, group=ns, label=f"{prefix}{name}")
    m = re.fullmatch(r"([^\[\]/ ]+)\[(.*)\]", sig)
    if m:
        return End(signature=sig, text=text, kind=kind, group=m.group(1), label=m.group(2) or "*")
    namespace = info.get("namespace")
    if isinstance(namespace, str) and namespace:
        label = str(info.get("name") or sig)
        return End(signature=sig, text=text, kind=kind, group=namespace, label=label)
    group = NODES_GROUP if kind == "node" else OUTSIDE_GROUP
    return End(signature=sig, text=text, kind=kind, group=group, label=sig)


def _ends(title: str, source: Mapping[str, Any], destination: Mapping[str, Any]) -> tuple[End, End]:
    parts = split_title(title)
    src_sig = parts[0] if parts else str(source.get("text") or "?")
    dst_sig = parts[1] if parts else str(destination.get("text") or "?")
    return end_of(src_sig, source), end_of(dst_sig, destination)


def _port(title: str, port: object) -> str:
    parts = split_title(title)
    if parts is not None:
        return parts[2].rsplit("/", 1)[0]
    return str(port)


# --------------------------------------------------------------------------- records


def _prediction(
    rec: ProbeRecord, dp: str
) -> tuple[str | None, str, tuple[str, ...], tuple[str, ...]]:
    p = rec.prediction(dp)
    if p is None:
        return None, "", (), ()
    return p.decision, p.explanation, tuple(p.rules), tuple(p.uncertain)


def _endpoint_dict(rec: ProbeRecord, which: str) -> dict[str, Any]:
    e = rec.source if which == "source" else rec.destination
    return {"text": e.text, "kind": e.kind, "namespace": e.namespace, "name": e.name}


def from_record(record: Record, *, source: str = "") -> Report:
    """A record before (or without) the upgrade: observations, and what the engine predicts
    the target dataplane will make of each probe."""
    before, after = record.plan.current, record.plan.target
    rows: list[Row] = []
    counts = dict.fromkeys(STATUSES, 0)
    checks = dict.fromkeys(CHECKS, 0)
    for rec in (*record.probes, *record.not_run):
        row, check = _pre_row(record, rec, before, after)
        checks[check] = checks.get(check, 0) + 1
        counts[row.status] += 1
        rows.append(row)
    notes = []
    if record.dataplane != before:
        notes.append(
            f"the record was taken on {record.dataplane}; its predictions compare {before} "
            f"with {after}"
        )
    return Report(
        source_kind="record",
        phase=record.phase,
        cluster=record.cluster,
        before=before,
        after=after,
        baseline=Run(
            time=record.time,
            phase=record.phase,
            backend=record.backend,
            dataplane=record.dataplane,
            dataplane_version=record.dataplane_version,
            netparity_version=record.netparity_version,
            path=source or None,
            plan_digest=record.plan.digest,
            plan_size=record.plan.size,
        ),
        current=None,
        held=None,
        exit_code=None,
        counts=MappingProxyType(counts),
        checks=MappingProxyType({k: v for k, v in checks.items()}),
        notes=tuple(notes),
        coverage=MappingProxyType(dict(record.plan.coverage)),
        rows=tuple(rows),
        source=source,
    )


def _pre_row(record: Record, rec: ProbeRecord, before: str, after: str) -> tuple[Row, str]:
    """One probe of a record as a row (its observation, and the target's prediction), and
    how the observation checks against the engine."""
    from netparity.verdicts import ItemVerdict, judge_pre

    pb, eb, rb, ub = _prediction(rec, before)
    pa, ea, ra, ua = _prediction(rec, after)
    pred_after = rec.prediction(after)
    verdict = str(rec.verdict)
    if rec.not_run is not None:
        judged = ItemVerdict(
            outcome="skipped",
            message=f"not run on the {record.backend} backend: {rec.not_run}",
        )
        check = "not-run"
    else:
        judged = judge_pre(rec, record.dataplane, phase=record.phase, target=after)
        check = dict(judged.properties).get("netparity.status", "agrees")
    flip = pb in ("allow", "deny") and pa in ("allow", "deny") and pb != pa
    if rec.not_run is not None:
        status = change = "not-run"
    elif rec.verdict is Outcome.ERROR:
        status = change = "error"
    elif rec.verdict is Outcome.FLAKY:
        status = change = "flaky"
    elif flip:
        status, change = "predicted", ("lost" if pb == "allow" else "gained")
    else:
        status = change = "same"
    src, dst = _ends(rec.title, _endpoint_dict(rec, "source"), _endpoint_dict(rec, "destination"))
    return (
        Row(
            id=rec.id,
            title=rec.title,
            kind=rec.kind,
            intent=rec.intent,
            source=src,
            destination=dst,
            port=_port(rec.title, rec.port),
            protocol=rec.protocol,
            status=status,
            change=change,
            failed=judged.outcome == "failed",
            predicted_change=flip,
            before=Side(
                dataplane=record.dataplane,
                verdict=verdict,
                observed=observed_text(rec.tries),
                predicted=pb,
                explanation=eb,
                rules=rb,
                uncertain=ub,
            ),
            after=Side(
                dataplane=after,
                verdict=pa or "unknown",
                predicted=pa,
                explanation=ea,
                rules=ra,
                uncertain=ua,
                is_prediction=True,
            ),
            scenario=rec.scenario,
            scenarios=rec.scenarios,
            rule=rec.rule,
            rules=rec.rules,
            source_class=rec.source_class,
            destination_class=rec.destination_class,
            stands_for=rec.stands_for,
            message=judged.message,
            check=check,
            causes=pred_after.causes if pred_after is not None and flip else (),
            causes_known=record.schema_version >= 2 and record.schema_minor >= 1,
            not_probed=rec.not_run,
        ),
        check,
    )


# --------------------------------------------------------------------------- parity


class _Fields(JsonReader):
    """Typed access to a decoded parity.json, raising RecordError naming the field."""

    def text(self, raw: Mapping[str, Any], key: str, where: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}" if where else key, "must be a string")
        return value

    def opt(self, raw: Mapping[str, Any], key: str, where: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}" if where else key, "must be a string or null")
        return value

    def strs(self, raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise self.fail(f"{where}.{key}" if where else key, "must be a list of strings")
        return tuple(value)


def _tries_text(raw: Any) -> str:
    if not isinstance(raw, list) or not raw:
        return ""
    return ", then ".join(str(t.get("observed")) for t in raw if isinstance(t, Mapping))


def _run(f: _Fields, raw: Any, where: str) -> Run:
    m = f.map(raw, where)
    size = m.get("plan_size")
    return Run(
        time=f.text(m, "time", where),
        phase=f.text(m, "phase", where),
        backend=f.text(m, "backend", where),
        dataplane=f.text(m, "dataplane", where),
        dataplane_version=f.opt(m, "dataplane_version", where),
        netparity_version=f.opt(m, "netparity_version", where) or "",
        path=f.opt(m, "path", where),
        plan_digest=f.opt(m, "plan_digest", where) or "",
        plan_size=size if isinstance(size, int) else 0,
    )


def _parity_row(f: _Fields, raw: Any, index: int, before: str, after: str) -> Row:
    where = f"probes[{index}]"
    m = f.map(raw, where)
    title = f.text(m, "title", where)
    status = f.text(m, "status", where)
    if status not in STATUSES:
        raise f.fail(f"{where}.status", f"unknown status {status!r}")
    predicted = f.map(m.get("predicted") or {}, f"{where}.predicted")

    def side(dp: str, verdict: str | None, tries: Any) -> Side:
        p = predicted.get(dp)
        pm = p if isinstance(p, Mapping) else {}
        decision = pm.get("decision")
        return Side(
            dataplane=dp,
            verdict=verdict,
            observed=_tries_text(tries),
            predicted=decision if isinstance(decision, str) else None,
            explanation=str(pm.get("explanation") or ""),
            rules=tuple(str(x) for x in pm.get("rules") or ()),
            uncertain=tuple(str(x) for x in pm.get("uncertain") or ()),
        )

    source = f.map(m.get("source"), f"{where}.source")
    destination = f.map(m.get("destination"), f"{where}.destination")
    src, dst = _ends(title, source, destination)
    port = m.get("port")
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise f.fail(f"{where}.port", "must be a number or a port name")
    return Row(
        id=f.text(m, "id", where),
        title=title,
        kind=f.text(m, "kind", where),
        intent=f.opt(m, "intent", where) or "",
        source=src,
        destination=dst,
        port=_port(title, port),
        protocol=f.text(m, "protocol", where),
        status=status,
        change=f.opt(m, "change", where) or status,
        failed=bool(m.get("failed", status in FAILING)),
        predicted_change=bool(m.get("predicted_change")),
        before=side(before, f.opt(m, "before", where), m.get("observed_before")),
        after=side(after, f.opt(m, "after", where), m.get("observed_after")),
        scenario=f.opt(m, "scenario", where),
        scenarios=f.strs(m, "scenarios", where),
        rule=f.opt(m, "rule", where),
        rules=f.strs(m, "rules", where),
        source_class=f.opt(m, "source_class", where),
        destination_class=f.opt(m, "destination_class", where),
        stands_for=f.strs(m, "stands_for", where),
        accepted_reason=f.opt(m, "accepted_reason", where),
        message=f.opt(m, "message", where) or "",
        causes=tuple(
            cause_from_json(f, c, f"{where}.causes[{i}]")
            for i, c in enumerate(f.sequence(m, "causes", where) if m.get("causes") else ())
        ),
        causes_known=m.get("causes") is not None,
        not_probed=_not_probed(
            f.opt(m, "after", where), m.get("observed_after"), f.opt(m, "message", where) or ""
        ),
    )


def _not_probed(after: str | None, tries: Any, message: str) -> str | None:
    """Why the current run did not observe a parity row, or None when it did: the record's
    reason as the comparison quotes it, else the last try's error."""
    if after is None:
        return NOT_PLANNED
    if after != "not-run":
        return None
    first = message.split("\n", 1)[0]
    for marker in ("not run now: ", "not run: "):
        at = first.find(marker)
        if at != -1:
            text = first[at + len(marker) :].split("); no verdict to compare", 1)[0].strip()
            if text:
                return text
    for t in reversed(tries if isinstance(tries, list) else []):
        if isinstance(t, Mapping) and isinstance(t.get("error"), str) and t["error"]:
            return str(t["error"])
    return "the backend cannot run this probe"


def from_parity(data: Any, *, source: str = "<parity>") -> Report:
    """A parity.json (docs/records.md) as a report."""
    f = _Fields(source)
    if not isinstance(data, Mapping) or data.get("kind") != PARITY_KIND:
        raise RecordError(f"{source} is not a netparity parity report (no kind: {PARITY_KIND})")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in PARITY_READS_VERSIONS:
        raise RecordError(
            f"{source} has parity schema version {version!r}; this netparity reads versions "
            f"{', '.join(str(v) for v in PARITY_READS_VERSIONS)} (writes {PARITY_SCHEMA_VERSION})"
        )
    before, after = f.text(data, "before", ""), f.text(data, "after", "")
    raw_probes = data.get("probes")
    if not isinstance(raw_probes, list):
        raise f.fail("probes", "must be a list")
    rows = [_parity_row(f, p, i, before, after) for i, p in enumerate(raw_probes)]
    counts = dict.fromkeys(STATUSES, 0)
    raw_counts = f.map(data.get("counts") or {}, "counts")
    for k, v in raw_counts.items():
        if not isinstance(v, int):
            raise f.fail(f"counts.{k}", "must be a whole number")
        counts[str(k)] = v
    held = data.get("held")
    exit_code = data.get("exit_code")
    return Report(
        source_kind="parity",
        phase="post",
        cluster=f.text(data, "cluster", ""),
        before=before,
        after=after,
        baseline=_run(f, data.get("baseline"), "baseline"),
        current=_run(f, data.get("current"), "current"),
        held=bool(held) if isinstance(held, bool) else not any(r.failed for r in rows),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        counts=MappingProxyType(counts),
        notes=f.strs(data, "notes", ""),
        unused_accepts=f.strs(data, "unused_accepts", ""),
        rows=tuple(rows),
        source=source,
    )


def load_report(path: Path) -> Report:
    """A record or a parity.json, told apart by its `kind`."""
    data = load_json(path, "record or parity report")
    return report_from_json(data, source=str(path))


def report_from_json(data: Any, *, source: str) -> Report:
    kind = data.get("kind") if isinstance(data, Mapping) else None
    if kind == PARITY_KIND:
        return from_parity(data, source=source)
    if kind == RECORD_KIND:
        return from_record(record_from_json(data, source), source=source)
    raise RecordError(
        f"{source} is neither a netparity record nor a parity report "
        f"(its kind is {kind!r}, expected {RECORD_KIND} or {PARITY_KIND})"
    )
