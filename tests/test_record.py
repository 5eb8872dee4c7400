"""Records: judging tries, building from a plan, JSON round trip, atomic writes, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netparity.backend import ClusterFacts, Observed, ProbeResult
from netparity.engine.traffic import Decision, PathKind, PodEndpoint, Traffic
from netparity.errors import RecordError
from netparity.plan.model import Coverage, Intent, Plan, PlannedProbe, Prediction, Scenario
from netparity.record import (
    Outcome,
    build_record,
    check_comparable,
    cluster_dirname,
    default_baseline,
    judge,
    load_record,
    needs_retry,
    record_json,
    record_path,
    write_json_atomic,
    write_record,
)
from tests.builders import base_cluster

C, R, T, E, N = (
    Observed.CONNECTED,
    Observed.REFUSED,
    Observed.TIMEOUT,
    Observed.ERROR,
    Observed.NOT_RUN,
)


@pytest.mark.parametrize(
    ("tries", "outcome"),
    [
        ([C], Outcome.ALLOW),
        ([R], Outcome.ALLOW),
        ([T, T], Outcome.DENY),
        ([T], Outcome.DENY),
        ([T, C], Outcome.FLAKY),
        ([T, R], Outcome.FLAKY),
        ([E, E], Outcome.ERROR),
        ([N], Outcome.NOT_RUN),
        ([N, T], Outcome.ERROR),
        ([E, C], Outcome.ALLOW),
        ([T, E], Outcome.ERROR),  # the deny was not confirmed: never counted as a deny
        ([], Outcome.ERROR),
    ],
)
def test_a_verdict_is_judged_over_every_try(tries: list[Observed], outcome: Outcome) -> None:
    assert judge(tries) is outcome


def test_only_denies_and_errors_are_probed_again() -> None:
    assert needs_retry([T])
    assert needs_retry([E])
    assert not needs_retry([C])
    assert not needs_retry([T, R])
    assert not needs_retry([])


def plan_of_two() -> Plan:
    snap = base_cluster()
    a, b, c = snap.pod("x", "a"), snap.pod("x", "b"), snap.pod("y", "c")
    assert a and b and c
    p1 = PlannedProbe(
        id="aaaa00000001",
        title="x[app=a] -> y[app=c] 80/TCP pod-pod",
        kind=PathKind.POD_POD,
        traffic=Traffic(source=PodEndpoint(pod=a), destination=PodEndpoint(pod=c), port=80),
        intent=Intent.ADMIT,
        rule="NetworkPolicy y/p ingress[0]",
        predicted={
            "npm": Prediction(decision=Decision.ALLOW, explanation="admitted by y/p", rules=("r",)),
            "cilium": Prediction(decision=Decision.DENY, explanation="not admitted"),
        },
        scenario=Scenario.IPBLOCK_PODS,
        stands_for=("x/a",),
    )
    p2 = PlannedProbe(
        id="bbbb00000002",
        title="x[app=b] -> y[app=c] http/TCP pod-pod",
        kind=PathKind.POD_POD,
        traffic=Traffic(source=PodEndpoint(pod=b), destination=PodEndpoint(pod=c), port="http"),
        intent=Intent.REJECT,
        predicted={"npm": Prediction(decision=Decision.DENY, explanation="no rule")},
    )
    return Plan(
        probes=(p1, p2),
        coverage=Coverage(
            rules_total=1,
            rules_with_admit=1,
            rules_with_reject=1,
            scenarios_present=("ipblock-pods",),
            scenarios_probed=("ipblock-pods",),
        ),
        digest="d1g35t",
        current="npm",
        target="cilium",
    )


def results(**tries: list[Observed]) -> dict[str, list[ProbeResult]]:
    ids = {"p1": "aaaa00000001", "p2": "bbbb00000002"}
    return {
        ids[k]: [
            ProbeResult(id=ids[k], observed=o, error="boom" if o is E else None, latency_ms=1.5)
            for o in v
        ]
        for k, v in tries.items()
    }


FACTS = ClusterFacts(name="lab", backend="lab", dataplane="npm", version="1.2.3")


def test_a_record_holds_every_probe_with_its_meaning_predictions_and_tries() -> None:
    rec = build_record(
        facts=FACTS,
        cluster="lab",
        plan=plan_of_two(),
        results=results(p1=[C], p2=[T, T]),
        phase="pre",
        probe_timeout=2.0,
        retries=1,
        expects={"bbbb00000002": "deny"},
        time="2026-01-02T03:04:05Z",
    )
    assert [p.id for p in rec.probes] == ["aaaa00000001", "bbbb00000002"]
    p1, p2 = rec.probes
    assert p1.verdict is Outcome.ALLOW and p2.verdict is Outcome.DENY
    assert p1.source.kind == "pod" and p1.source.labels == {"app": "a"}
    assert p1.scenario == "ipblock-pods" and p1.rule == "NetworkPolicy y/p ingress[0]"
    assert p1.predicted["cilium"].decision == "deny"
    assert p2.port == "http" and len(p2.tries) == 2 and p2.expect == "deny"
    assert rec.plan.size == 2 and rec.plan.coverage["rules_total"] == 1
    assert rec.dataplane_version == "1.2.3"


def test_a_probe_the_backend_never_answered_is_an_error() -> None:
    rec = build_record(
        facts=FACTS,
        cluster="lab",
        plan=plan_of_two(),
        results=results(p1=[C]),
        phase="pre",
        probe_timeout=2.0,
        retries=1,
    )
    assert rec.probes[1].verdict is Outcome.ERROR


def test_a_record_survives_its_json_unchanged(tmp_path: Path) -> None:
    rec = build_record(
        facts=FACTS,
        cluster="lab:demo",
        plan=plan_of_two(),
        results=results(p1=[T, C], p2=[E, E]),
        phase="post",
        probe_timeout=1.5,
        retries=1,
    )
    path = tmp_path / "r.json"
    write_record(rec, path)
    again = load_record(path)
    assert again == rec
    assert record_json(again) == json.loads(path.read_text())


def not_run_results(
    reason: str = "no hostNetwork pod on this backend",
) -> dict[str, list[ProbeResult]]:
    out = results(p1=[C])
    out["bbbb00000002"] = [ProbeResult(id="bbbb00000002", observed=N, error=reason)]
    return out


def test_a_record_keeps_the_probes_it_could_not_run_with_their_reason(tmp_path: Path) -> None:
    rec = build_record(
        facts=FACTS,
        cluster="lab",
        plan=plan_of_two(),
        results=not_run_results(),
        phase="post",
        probe_timeout=2.0,
        retries=1,
        exclude={"bbbb00000002": "no hostNetwork pod on this backend"},
    )
    assert [p.id for p in rec.probes] == ["aaaa00000001"]
    (skipped,) = rec.not_run
    assert skipped.id == "bbbb00000002" and skipped.verdict is Outcome.NOT_RUN
    assert skipped.not_run == "no hostNetwork pod on this backend"
    assert len(rec.probes) + len(rec.not_run) == rec.plan.size
    path = tmp_path / "r.json"
    write_record(rec, path)
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 2
    assert doc["not_run"][0]["reason"] == "no hostNetwork pod on this backend"
    assert doc["not_run"][0]["verdict"] == "not-run"
    assert doc["not_run"][0]["title"] == "x[app=b] -> y[app=c] http/TCP pod-pod"
    assert load_record(path) == rec


def test_a_version_1_record_is_still_read_and_stays_version_1(tmp_path: Path) -> None:
    rec = build_record(
        facts=FACTS,
        cluster="lab",
        plan=plan_of_two(),
        results=results(p1=[C], p2=[T, T]),
        phase="pre",
        probe_timeout=2.0,
        retries=1,
    )
    doc = record_json(rec)
    doc["schema_version"] = 1
    del doc["not_run"], doc["schema_minor"]  # neither existed in version 1
    for probe in doc["probes"]:
        for pred in probe["predicted"].values():
            del pred["causes"]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(doc))
    old = load_record(path)
    assert old.schema_version == 1 and old.not_run == () and len(old.probes) == 2
    assert record_json(old) == doc  # written again as what it is


@pytest.mark.parametrize(
    ("where", "verdict", "message"),
    [
        ("probes", "not-run", r"probes\[1\].verdict: is not-run, which only the probes under"),
        ("not_run", "deny", r"not_run\[0\].verdict: must be not-run"),
    ],
)
def test_a_not_run_verdict_belongs_under_not_run(
    tmp_path: Path, where: str, verdict: str, message: str
) -> None:
    rec = build_record(
        facts=FACTS,
        cluster="lab",
        plan=plan_of_two(),
        results=not_run_results(),
        phase="post",
        probe_timeout=2.0,
        retries=1,
        exclude={"bbbb00000002": "why"},
    )
    doc = record_json(rec)
    if where == "probes":
        doc["probes"].append({**doc["not_run"].pop(), "verdict": verdict})
    else:
        doc["not_run"][0]["verdict"] = verdict
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordError, match=message):
        load_record(path)


def test_a_record_is_never_overwritten_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    write_json_atomic(path, {"a": 1}, overwrite=False)
    with pytest.raises(RecordError, match="already exists"):
        write_json_atomic(path, {"a": 2}, overwrite=False)
    assert json.loads(path.read_text()) == {"a": 1}
    write_json_atomic(path, {"a": 3}, overwrite=True)
    assert json.loads(path.read_text()) == {"a": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]  # no temporary left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"kind": "other"}', "is not a netparity record"),
        ('{"kind": "netparity.record", "schema_version": 99}', "schema version 99"),
        (
            '{"kind": "netparity.record", "schema_version": 1, "plan": [], "probes": []}',
            "field plan: must be a mapping",
        ),
    ],
)
def test_an_unusable_record_is_refused_with_one_sentence(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(RecordError, match=message):
        load_record(path)


def test_a_missing_record_says_so(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="no such record"):
        load_record(tmp_path / "nope.json")


def test_a_baseline_of_another_cluster_or_plan_version_is_refused() -> None:
    args = dict(plan=plan_of_two(), results=results(p1=[C]), probe_timeout=2.0, retries=1)
    base = build_record(facts=FACTS, cluster="lab", phase="pre", **args)  # type: ignore[arg-type]
    other = build_record(facts=FACTS, cluster="prod", phase="post", **args)  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="belongs to cluster 'lab', not 'prod'"):
        check_comparable(base, other)
    import dataclasses

    newer = dataclasses.replace(base, plan=dataclasses.replace(base.plan, version="99"))
    with pytest.raises(RecordError, match="plan version 99"):
        check_comparable(newer, base)
    with pytest.raises(RecordError, match="are the same record"):
        check_comparable(base, base)


def test_cluster_names_become_safe_folder_names(tmp_path: Path) -> None:
    assert cluster_dirname("lab:demo") == "lab-demo"
    assert cluster_dirname("arn:aws:eks:eu/x") == "arn-aws-eks-eu-x"
    assert cluster_dirname("::") == "cluster"
    assert default_baseline(tmp_path, "lab") == tmp_path / "lab" / "baseline.json"
    first = record_path(tmp_path, "lab", "pre", "2026-01-02T03:04:05Z")
    assert first.name == "record-pre-20260102T030405Z.json"
    first.parent.mkdir(parents=True)
    first.write_text("{}")
    assert record_path(tmp_path, "lab", "pre", "2026-01-02T03:04:05Z").name.endswith("Z-2.json")
