"""A record as JSON and back: the schema of docs/records.md, read with a check of every
field (RecordError naming the field)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from netparity import __version__
from netparity.backend import Observed
from netparity.engine.causes import Cause
from netparity.errors import RecordError
from netparity.record.model import (
    READS_VERSIONS,
    RECORD_KIND,
    EndpointInfo,
    Outcome,
    PlanInfo,
    PredictionRecord,
    ProbeRecord,
    Record,
    Try,
)


def _endpoint_json(e: EndpointInfo) -> dict[str, Any]:
    return {
        "text": e.text,
        "kind": e.kind,
        "namespace": e.namespace,
        "name": e.name,
        "labels": dict(e.labels),
        "node": e.node,
        "ip": e.ip,
        "via": e.via,
    }


def cause_json(c: Cause) -> dict[str, Any]:
    return {
        "knob": c.knob,
        "row": c.row,
        "scenario": c.scenario,
        "rule": c.rule,
        "together": list(c.together),
    }


def cause_from_json(rd: JsonReader, raw: Any, where: str) -> Cause:
    m = rd.map(raw, where)
    return Cause(
        knob=rd.string(m, "knob", where),
        row=rd.string(m, "row", where),
        scenario=rd.string(m, "scenario", where, optional=True),
        rule=rd.string(m, "rule", where, optional=True),
        together=tuple(str(x) for x in rd.sequence(m, "together", where)),
    )


def probe_json(p: ProbeRecord) -> dict[str, Any]:
    return {
        "id": p.id,
        "title": p.title,
        "kind": p.kind,
        "intent": p.intent,
        "source": _endpoint_json(p.source),
        "destination": _endpoint_json(p.destination),
        "port": p.port,
        "protocol": p.protocol,
        "scenario": p.scenario,
        "rule": p.rule,
        "scenarios": list(p.scenarios),
        "rules": list(p.rules),
        "source_class": p.source_class,
        "destination_class": p.destination_class,
        "stands_for": list(p.stands_for),
        "predicted": {
            dp: {
                "decision": pr.decision,
                "explanation": pr.explanation,
                "rules": list(pr.rules),
                "uncertain": list(pr.uncertain),
                "causes": [cause_json(c) for c in pr.causes],
            }
            for dp, pr in p.predicted.items()
        },
        "observed": [
            {
                "observed": str(t.observed),
                "latency_ms": t.latency_ms,
                "error": t.error,
                "address": t.address,
                "source": t.source,
                "token": t.token,
            }
            for t in p.tries
        ],
        "verdict": str(p.verdict),
        "expect": p.expect,
    }


def not_run_json(p: ProbeRecord) -> dict[str, Any]:
    """A probe of `Record.not_run`: the probe's fields and `reason`."""
    return {**probe_json(p), "reason": p.not_run or "the backend cannot run this probe"}


def record_json(r: Record) -> dict[str, Any]:
    """The record as JSON; a version-1 record read earlier stays version 1 (it cannot say
    which probes its backend could not run)."""
    doc: dict[str, Any] = {
        "kind": RECORD_KIND,
        "schema_version": r.schema_version,
        **({"schema_minor": r.schema_minor} if r.schema_version >= 2 else {}),
        "cluster": r.cluster,
        "backend": r.backend,
        "dataplane": r.dataplane,
        "dataplane_version": r.dataplane_version,
        "netparity_version": r.netparity_version,
        "phase": r.phase,
        "time": r.time,
        "settings": {"probe_timeout": r.probe_timeout, "retries": r.retries},
        "plan": {
            "digest": r.plan.digest,
            "version": r.plan.version,
            "current": r.plan.current,
            "target": r.plan.target,
            "size": r.plan.size,
            "coverage": dict(r.plan.coverage),
        },
        "probes": [probe_json(p) for p in r.probes],
    }
    if r.schema_version >= 2:
        doc["not_run"] = [not_run_json(p) for p in r.not_run]
    else:  # version 1 had no causes either
        for probe in doc["probes"]:
            for pred in probe["predicted"].values():
                del pred["causes"]
    return doc


class JsonReader:
    """Typed field access on a decoded record, raising RecordError naming the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> RecordError:
        return RecordError(f"{self.source}: field {where}: {message}")

    def map(self, raw: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(where, "must be a mapping")
        return raw

    def string(
        self, raw: Mapping[str, Any], key: str, where: str, *, optional: bool = False
    ) -> Any:
        value = raw.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}" if where else key, "must be a string")
        return value

    def sequence(self, raw: Mapping[str, Any], key: str, where: str) -> Sequence[Any]:
        value = raw.get(key, [])
        if not isinstance(value, list):
            raise self.fail(f"{where}.{key}" if where else key, "must be a list")
        return value


def _endpoint_from(rd: JsonReader, raw: Any, where: str) -> EndpointInfo:
    m = rd.map(raw, where)
    labels = rd.map(m.get("labels") or {}, f"{where}.labels")
    return EndpointInfo(
        text=rd.string(m, "text", where),
        kind=rd.string(m, "kind", where),
        namespace=rd.string(m, "namespace", where, optional=True),
        name=rd.string(m, "name", where, optional=True),
        labels=MappingProxyType({str(k): str(v) for k, v in sorted(labels.items())}),
        node=rd.string(m, "node", where, optional=True),
        ip=rd.string(m, "ip", where, optional=True),
        via=rd.string(m, "via", where, optional=True),
    )


def _probe_from(rd: JsonReader, raw: Any, index: int, key: str = "probes") -> ProbeRecord:
    where = f"{key}[{index}]"
    m = rd.map(raw, where)
    predicted = {}
    for dp, pr in rd.map(m.get("predicted") or {}, f"{where}.predicted").items():
        pm = rd.map(pr, f"{where}.predicted.{dp}")
        predicted[str(dp)] = PredictionRecord(
            decision=rd.string(pm, "decision", f"{where}.predicted.{dp}"),
            explanation=str(pm.get("explanation") or ""),
            rules=tuple(str(x) for x in rd.sequence(pm, "rules", f"{where}.predicted.{dp}")),
            uncertain=tuple(
                str(x) for x in rd.sequence(pm, "uncertain", f"{where}.predicted.{dp}")
            ),
            causes=tuple(
                cause_from_json(rd, c, f"{where}.predicted.{dp}.causes[{ci}]")
                for ci, c in enumerate(rd.sequence(pm, "causes", f"{where}.predicted.{dp}"))
            ),
        )
    tries = []
    for ti, traw in enumerate(rd.sequence(m, "observed", where)):
        tm = rd.map(traw, f"{where}.observed[{ti}]")
        try:
            observed = Observed(str(tm.get("observed")))
        except ValueError:
            raise rd.fail(
                f"{where}.observed[{ti}].observed", f"unknown observation {tm.get('observed')!r}"
            ) from None
        latency = tm.get("latency_ms")
        tries.append(
            Try(
                observed=observed,
                latency_ms=float(latency) if isinstance(latency, int | float) else None,
                error=rd.string(tm, "error", "", optional=True),
                address=rd.string(tm, "address", "", optional=True),
                source=rd.string(tm, "source", "", optional=True),
                token=rd.string(tm, "token", "", optional=True),
            )
        )
    try:
        verdict = Outcome(str(m.get("verdict")))
    except ValueError:
        raise rd.fail(f"{where}.verdict", f"unknown verdict {m.get('verdict')!r}") from None
    port = m.get("port")
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise rd.fail(f"{where}.port", "must be a number or a port name")
    reason = rd.string(m, "reason", where) if key == "not_run" else None
    if (verdict is Outcome.NOT_RUN) != (key == "not_run"):
        raise rd.fail(
            f"{where}.verdict",
            "is not-run, which only the probes under not_run have"
            if key != "not_run"
            else f"must be not-run for a probe the backend could not run, not {verdict}",
        )
    return ProbeRecord(
        id=rd.string(m, "id", where),
        title=rd.string(m, "title", where),
        kind=rd.string(m, "kind", where),
        intent=rd.string(m, "intent", where),
        source=_endpoint_from(rd, m.get("source"), f"{where}.source"),
        destination=_endpoint_from(rd, m.get("destination"), f"{where}.destination"),
        port=port,
        protocol=rd.string(m, "protocol", where),
        scenario=rd.string(m, "scenario", where, optional=True),
        rule=rd.string(m, "rule", where, optional=True),
        scenarios=tuple(str(x) for x in rd.sequence(m, "scenarios", where)),
        rules=tuple(str(x) for x in rd.sequence(m, "rules", where)),
        source_class=rd.string(m, "source_class", where, optional=True),
        destination_class=rd.string(m, "destination_class", where, optional=True),
        stands_for=tuple(str(x) for x in rd.sequence(m, "stands_for", where)),
        predicted=MappingProxyType(predicted),
        tries=tuple(tries),
        verdict=verdict,
        expect=rd.string(m, "expect", where, optional=True),
        not_run=reason,
    )


def record_from_json(data: Any, source: str = "<record>") -> Record:
    rd = JsonReader(source)
    if not isinstance(data, Mapping) or data.get("kind") != RECORD_KIND:
        raise RecordError(f"{source} is not a netparity record (no kind: {RECORD_KIND})")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in READS_VERSIONS:
        raise RecordError(
            f"{source} has record schema version {version!r}; "
            f"this netparity ({__version__}) reads versions "
            f"{', '.join(str(v) for v in READS_VERSIONS)}"
        )
    minor = data.get("schema_minor")
    plan = rd.map(data.get("plan"), "plan")
    settings = rd.map(data.get("settings") or {}, "settings")
    size = plan.get("size")
    probes = tuple(_probe_from(rd, p, i) for i, p in enumerate(rd.sequence(data, "probes", "")))
    # version 1 kept the probes the backend could not run out of the record altogether
    skipped = (
        tuple(
            _probe_from(rd, p, i, "not_run") for i, p in enumerate(rd.sequence(data, "not_run", ""))
        )
        if version >= 2
        else ()
    )
    seen: set[str] = set()
    for p in (*probes, *skipped):
        if p.id in seen:
            raise rd.fail("probes", f"probe id {p.id} appears twice")
        seen.add(p.id)
    return Record(
        cluster=rd.string(data, "cluster", ""),
        backend=rd.string(data, "backend", ""),
        dataplane=rd.string(data, "dataplane", ""),
        dataplane_version=rd.string(data, "dataplane_version", "", optional=True),
        netparity_version=rd.string(data, "netparity_version", ""),
        phase=rd.string(data, "phase", ""),
        time=rd.string(data, "time", ""),
        plan=PlanInfo(
            digest=rd.string(plan, "digest", "plan"),
            version=rd.string(plan, "version", "plan"),
            current=rd.string(plan, "current", "plan"),
            target=rd.string(plan, "target", "plan"),
            size=size if isinstance(size, int) else len(probes) + len(skipped),
            coverage=MappingProxyType(dict(rd.map(plan.get("coverage") or {}, "plan.coverage"))),
        ),
        probes=probes,
        not_run=skipped,
        probe_timeout=float(settings.get("probe_timeout", 2.0)),
        retries=int(settings.get("retries", 1)),
        schema_version=version,
        schema_minor=minor if isinstance(minor, int) and not isinstance(minor, bool) else 0,
    )
