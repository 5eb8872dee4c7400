"""Records and baselines: one run's observations, with the facts needed to trust them later.

A record holds, per probe id, what the probe means (endpoints, port, protocol, path kind,
scenario, rule, intent), what the engine predicted per dataplane, every try the backend
made, and the judged verdict. It is written atomically (temporary file, fsync, rename) and
read back with a check of its schema; `check_comparable` refuses a baseline that belongs
to another cluster or another plan version with one sentence. The format is documented in
docs/records.md.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from netparity import __version__
from netparity.backend import ClusterFacts, Observed, ProbeResult
from netparity.engine.causes import Cause
from netparity.engine.traffic import (
    Endpoint,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
)
from netparity.errors import RecordError
from netparity.plan.model import Plan, PlannedProbe

RECORD_KIND = "netparity.record"
# Version 2 added `not_run`: the planned probes the backend could not run, each with why.
SCHEMA_VERSION = 2
# Minor versions add fields a reader of the same version may ignore: 1 added each
# prediction's `causes` (why it differs from the plan's current dataplane).
SCHEMA_MINOR = 1
READS_VERSIONS = (1, 2)


class Outcome(StrEnum):
    """A probe's judged verdict over all its tries."""

    ALLOW = "allow"  # connected or refused, and no try timed out
    DENY = "deny"  # every try timed out (the first deny was confirmed by the retries)
    FLAKY = "flaky"  # some tries were let through and some dropped
    ERROR = "error"  # the probe could not run (never counted as a deny)
    NOT_RUN = "not-run"  # the backend cannot run it here (every try `not-run`): no observation


def judge(tries: Sequence[Observed]) -> Outcome:
    """allow if a try got through and none was dropped; deny only if every try was dropped."""
    allowed = any(t in (Observed.CONNECTED, Observed.REFUSED) for t in tries)
    dropped = any(t is Observed.TIMEOUT for t in tries)
    if allowed and dropped:
        return Outcome.FLAKY
    if allowed:
        return Outcome.ALLOW
    if tries and all(t is Observed.TIMEOUT for t in tries):
        return Outcome.DENY
    if tries and all(t is Observed.NOT_RUN for t in tries):
        return Outcome.NOT_RUN
    return Outcome.ERROR


def not_run(results: Sequence[ProbeResult]) -> str | None:
    """Why the backend cannot run a probe at all (every try `not-run`), or None.

    Such a probe is no observation: it is reported as skipped and kept apart in the record
    (`Record.not_run`, with this reason), so that a comparison can tell a connection
    nobody checked from one that kept its verdict; a probe that ran and failed is an
    `error` instead."""
    if results and all(r.observed is Observed.NOT_RUN for r in results):
        return results[-1].error or "the backend cannot run this probe"
    return None


def needs_retry(tries: Sequence[Observed]) -> bool:
    """A deny (or an error) is probed again before it is believed; an allow is final."""
    return bool(tries) and tries[-1] not in (Observed.CONNECTED, Observed.REFUSED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Try:
    observed: Observed
    latency_ms: float | None = None
    error: str | None = None
    address: str | None = None
    source: str | None = None
    token: str | None = None

    @classmethod
    def of(cls, result: ProbeResult) -> Try:
        return cls(
            observed=result.observed,
            latency_ms=result.latency_ms,
            error=result.error,
            address=result.address,
            source=result.source,
            token=result.token,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictionRecord:
    decision: str  # allow | deny | unknown
    explanation: str = ""
    rules: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()
    # why it differs from the plan's current dataplane (netparity.engine.causes); ()
    # where it does not, where nothing explains it, or in a record older than 2.1
    causes: tuple[Cause, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointInfo:
    """An endpoint as a report shows it; `text` is what a probe file would write."""

    text: str
    kind: str  # pod | node | external | service
    namespace: str | None = None
    name: str | None = None  # pod, node or Service name (informational: ids never use it)
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    node: str | None = None
    ip: str | None = None
    via: str | None = None  # clusterip | nodeport | lb, for a Service

    @classmethod
    def of(cls, endpoint: Endpoint) -> EndpointInfo:
        if isinstance(endpoint, PodEndpoint):
            pod = endpoint.pod
            return cls(
                text=pod.key,
                kind="pod",
                namespace=pod.namespace,
                name=pod.name,
                labels=MappingProxyType(dict(sorted(pod.labels.items()))),
                node=pod.node_name,
                ip=pod.ip,
            )
        if isinstance(endpoint, NodeEndpoint):
            return cls(
                text=str(endpoint), kind="node", name=endpoint.node.name, ip=endpoint.node.ip
            )
        if isinstance(endpoint, ExternalEndpoint):
            return cls(text=str(endpoint), kind="external", ip=endpoint.ip)
        svc = endpoint.service
        return cls(
            text=str(endpoint),
            kind="service",
            namespace=svc.namespace,
            name=svc.name,
            node=endpoint.node.name if endpoint.node is not None else None,
            ip=svc.cluster_ip,
            via=str(endpoint.via),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeRecord:
    id: str
    title: str
    kind: str  # the path kind, e.g. pod-pod
    intent: str  # admit | reject | scenario | explicit
    source: EndpointInfo
    destination: EndpointInfo
    port: int | str
    protocol: str
    scenario: str | None = None
    rule: str | None = None
    scenarios: tuple[str, ...] = ()  # every scenario the probe reveals, `scenario` first
    rules: tuple[str, ...] = ()  # every rule it exercises, `rule` first
    source_class: str | None = None  # the equivalence class a pod source stands for
    destination_class: str | None = None
    stands_for: tuple[str, ...] = ()
    predicted: Mapping[str, PredictionRecord] = field(default_factory=lambda: MappingProxyType({}))
    tries: tuple[Try, ...] = ()
    verdict: Outcome = Outcome.ERROR
    expect: str | None = None  # an explicit probe's expectation for the recorded dataplane
    not_run: str | None = None  # why the backend could not run it (a probe of Record.not_run)

    def prediction(self, dataplane: str) -> PredictionRecord | None:
        return self.predicted.get(dataplane)

    @property
    def error(self) -> str | None:
        """The last try's error text, if any try failed."""
        for t in reversed(self.tries):
            if t.error:
                return t.error
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanInfo:
    digest: str
    version: str
    current: str  # the dataplane the predictions call "current"
    target: str  # the dataplane the plan migrates to
    size: int
    coverage: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    cluster: str
    backend: str
    dataplane: str
    dataplane_version: str | None
    phase: str  # pre | post | check
    time: str  # UTC, ISO 8601 with a Z
    plan: PlanInfo
    probes: tuple[ProbeRecord, ...]  # the probes this run observed, in plan order
    not_run: tuple[ProbeRecord, ...] = ()  # the planned probes the backend could not run
    netparity_version: str = __version__
    probe_timeout: float = 2.0
    retries: int = 1
    schema_version: int = SCHEMA_VERSION
    schema_minor: int = SCHEMA_MINOR  # 0: a record older than 2.1, whose predictions lack causes

    def by_id(self) -> Mapping[str, ProbeRecord]:
        """The observed probes by id (not the ones the backend could not run)."""
        return {p.id: p for p in self.probes}

    def not_run_by_id(self) -> Mapping[str, ProbeRecord]:
        return {p.id: p for p in self.not_run}


# --------------------------------------------------------------------------- building


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_version() -> str:
    """The planner's version (PLAN_VERSION): which meaning its probe ids have."""
    from netparity.plan.planner import PLAN_VERSION

    return PLAN_VERSION


def plan_info(plan: Plan, *, version: str | None = None) -> PlanInfo:
    c = plan.coverage
    coverage = {
        "rules_total": c.rules_total,
        "rules_with_admit": c.rules_with_admit,
        "rules_with_reject": c.rules_with_reject,
        "scenarios_present": list(c.scenarios_present),
        "scenarios_probed": list(c.scenarios_probed),
    }
    return PlanInfo(
        digest=plan.digest,
        version=version if version is not None else plan_version(),
        current=plan.current,
        target=plan.target,
        size=len(plan.probes),
        coverage=MappingProxyType(coverage),
    )


def probe_record(
    probe: PlannedProbe,
    tries: Sequence[ProbeResult],
    *,
    expect: str | None = None,
    why_not_run: str | None = None,
) -> ProbeRecord:
    observed = [r.observed for r in tries]
    return ProbeRecord(
        id=probe.id,
        title=probe.title,
        kind=str(probe.kind),
        intent=str(probe.intent),
        source=EndpointInfo.of(probe.traffic.source),
        destination=EndpointInfo.of(probe.traffic.destination),
        port=probe.traffic.port,
        protocol=str(probe.traffic.protocol),
        scenario=str(probe.scenario) if probe.scenario is not None else None,
        rule=probe.rule,
        scenarios=tuple(str(s) for s in probe.scenarios),
        rules=tuple(probe.rules),
        source_class=probe.source_class,
        destination_class=probe.destination_class,
        stands_for=tuple(probe.stands_for),
        predicted=MappingProxyType(
            {
                dp: PredictionRecord(
                    decision=str(p.decision),
                    explanation=p.explanation,
                    rules=tuple(p.rules),
                    uncertain=tuple(p.uncertain),
                    causes=tuple(p.causes),
                )
                for dp, p in sorted(probe.predicted.items())
            }
        ),
        tries=tuple(Try.of(r) for r in tries),
        verdict=Outcome.NOT_RUN if why_not_run is not None else judge(observed),
        expect=expect,
        not_run=why_not_run,
    )


def build_record(
    *,
    facts: ClusterFacts,
    cluster: str,
    plan: Plan,
    results: Mapping[str, Sequence[ProbeResult]],
    phase: str,
    probe_timeout: float,
    retries: int,
    expects: Mapping[str, str] | None = None,
    time: str | None = None,
    exclude: Collection[str] | Mapping[str, str] = (),
) -> Record:
    """The record of one run: every planned probe, in plan order, with all its tries.

    The probes in `exclude` (this backend cannot run them, see `not_run`; a mapping gives
    each one's reason) go to `Record.not_run` instead of `Record.probes`."""
    expects = expects or {}
    reasons: Mapping[str, str] = (
        exclude
        if isinstance(exclude, Mapping)
        else dict.fromkeys(exclude, "the backend cannot run this probe")
    )
    return Record(
        cluster=cluster,
        backend=facts.backend,
        dataplane=facts.dataplane,
        dataplane_version=facts.version,
        phase=phase,
        time=time or utc_now(),
        plan=plan_info(plan),
        probes=tuple(
            probe_record(p, results.get(p.id, ()), expect=expects.get(p.id))
            for p in plan.probes
            if p.id not in reasons
        ),
        not_run=tuple(
            probe_record(
                p, results.get(p.id, ()), expect=expects.get(p.id), why_not_run=reasons[p.id]
            )
            for p in plan.probes
            if p.id in reasons
        ),
        probe_timeout=probe_timeout,
        retries=retries,
    )


# --------------------------------------------------------------------------- JSON


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


# --------------------------------------------------------------------------- files


def cluster_dirname(cluster: str) -> str:
    """A cluster name as a folder name: `lab:demo` -> `lab-demo`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", cluster).strip("-.")
    return name or "cluster"


def default_baseline(report_dir: Path, cluster: str) -> Path:
    return report_dir / cluster_dirname(cluster) / "baseline.json"


def record_path(report_dir: Path, cluster: str, phase: str, time: str) -> Path:
    stamp = time.replace("-", "").replace(":", "")
    folder = report_dir / cluster_dirname(cluster)
    path = folder / f"record-{phase}-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"record-{phase}-{stamp}-{n}.json"
    return path


def write_json_atomic(path: Path, data: Any, *, overwrite: bool = True) -> None:
    """Write JSON to a temporary file beside `path`, fsync it, then rename it into place.

    With overwrite=False an existing file is never replaced (the rename is a hard link,
    which fails if the name exists), so two runs cannot both think they wrote it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise RecordError(
                    f"{path} already exists; it is never overwritten silently"
                ) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_record(record: Record, path: Path, *, overwrite: bool = False) -> None:
    write_json_atomic(path, record_json(record), overwrite=overwrite)


def load_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(f"{path}: no such {what}") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot read the {what} ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise RecordError(
            f"{path}: the {what} is not UTF-8 text (byte offset {e.start}): not a netparity file"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def load_record(path: str | Path) -> Record:
    p = Path(path)
    return record_from_json(load_json(p, "record"), str(p))


def check_comparable(baseline: Record, current: Record, *, source: str = "the baseline") -> None:
    """Refuse, in one sentence, a baseline of another cluster or another plan version, or
    the same record given twice."""
    if baseline.cluster != current.cluster:
        raise RecordError(
            f"{source} belongs to cluster {baseline.cluster!r}, not {current.cluster!r}; "
            "give the baseline of this cluster (--baseline)"
        )
    if baseline.plan.version != current.plan.version:
        raise RecordError(
            f"{source} was planned by plan version {baseline.plan.version} "
            f"(netparity {baseline.netparity_version}), this run by plan version "
            f"{current.plan.version}: record a new baseline before the upgrade"
        )
    if (
        baseline.time == current.time
        and baseline.phase == current.phase
        and baseline.dataplane == current.dataplane
        and baseline.probes == current.probes
    ):
        raise RecordError(
            f"{source} and the current record are the same record (taken {current.time} on "
            f"{current.dataplane}): compare the baseline with a later record"
        )


def observed_text(tries: Iterable[Try]) -> str:
    return ", then ".join(str(t.observed) for t in tries) or "not probed"
