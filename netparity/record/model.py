"""The record model: one run's observations, with the facts needed to trust them later.

A record holds, per probe id, what the probe means (endpoints, port, protocol, path kind,
scenario, rule, intent), what the engine predicted per dataplane, every try the backend
made, and the judged verdict. `check_comparable` refuses a baseline that belongs to
another cluster or another plan version with one sentence. Its JSON form is
`netparity.record.jsonio`, its files `netparity.record.files`; docs/records.md.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
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


def judge(tries: Sequence[Observed], *, refused_is_deny: bool = False) -> Outcome:
    """allow if a try got through and none was dropped; deny only if every try was dropped.
    `refused_is_deny`: the destination is a Service without endpoints, which the dataplane
    rejects (SEMANTICS D22, docs/semantics-notes.md): `refused` is that deny."""
    if refused_is_deny:
        tries = [Observed.TIMEOUT if t is Observed.REFUSED else t for t in tries]
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
        verdict=Outcome.NOT_RUN
        if why_not_run is not None
        else judge(
            observed, refused_is_deny=any(p.refused_is_deny for p in probe.predicted.values())
        ),
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
