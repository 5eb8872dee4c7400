"""Parity: every status, predictions, accepts, the JSON, and `netparity compare`'s exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest

from netparity.accept import Acceptance, load_accept
from netparity.backend import Observed
from netparity.cli import main
from netparity.compare import PARITY_SCHEMA_VERSION, Status, compare
from netparity.compare_output import parity_json, render_text
from netparity.errors import InputError, RecordError
from netparity.record import (
    EndpointInfo,
    Outcome,
    PlanInfo,
    PredictionRecord,
    ProbeRecord,
    Record,
    Try,
    judge,
    write_record,
)

C, T, E, N = Observed.CONNECTED, Observed.TIMEOUT, Observed.ERROR, Observed.NOT_RUN


def probe(
    pid: str,
    tries: list[Observed],
    *,
    npm: str = "allow",
    cilium: str = "allow",
    scenario: str | None = None,
    expect: str | None = None,
    dst_class: str | None = None,
) -> ProbeRecord:
    not_run = "no hostNetwork pod here" if tries and all(t is N for t in tries) else None
    return ProbeRecord(
        id=pid,
        title=f"x[app=a] -> y[app={pid}] 80/TCP pod-pod",
        kind="pod-pod",
        intent="scenario" if scenario else "admit",
        source=EndpointInfo(text="x/a-1", kind="pod", namespace="x"),
        destination=EndpointInfo(text=f"y/{pid}-1", kind="pod", namespace="y"),
        port=80,
        protocol="TCP",
        scenario=scenario,
        rule="NetworkPolicy y/p ingress[0]" if scenario else None,
        predicted=MappingProxyType(
            {
                "npm": PredictionRecord(decision=npm, explanation=f"npm says {npm}"),
                "cilium": PredictionRecord(decision=cilium, explanation=f"cilium says {cilium}"),
            }
        ),
        destination_class=dst_class,
        tries=tuple(
            Try(observed=o, error="boom" if o is E else (not_run if o is N else None))
            for o in tries
        ),
        verdict=judge(tries),
        expect=expect,
        not_run=not_run,
    )


def record(dataplane: str, *probes: ProbeRecord, cluster: str = "lab", digest: str = "d") -> Record:
    return Record(
        cluster=cluster,
        backend="lab",
        dataplane=dataplane,
        dataplane_version=None,
        phase="pre" if dataplane == "npm" else "post",
        time="2026-01-01T00:00:00Z" if dataplane == "npm" else "2026-01-02T00:00:00Z",
        plan=PlanInfo(digest=digest, version="1", current="npm", target="cilium", size=len(probes)),
        probes=tuple(p for p in probes if p.not_run is None),
        not_run=tuple(p for p in probes if p.not_run is not None),
    )


def test_each_probe_gets_exactly_one_status() -> None:
    base = record(
        "npm",
        probe("same", [C]),
        probe("lost", [C]),
        probe("gained", [T, T], npm="deny", cilium="deny"),
        probe("pred", [C], cilium="deny", scenario="named-port"),
        probe("flaky", [C]),
        probe("err", [C]),
        probe("gone", [C]),
        probe("unreal", [C], cilium="deny"),
        probe("skipped", [C]),
        probe("never", [N]),
    )
    cur = record(
        "cilium",
        probe("same", [C]),
        probe("lost", [T, T]),
        probe("gained", [C], npm="deny", cilium="deny"),
        probe("pred", [T, T], cilium="deny", scenario="named-port"),
        probe("flaky", [T, C]),
        probe("err", [E, E]),
        probe("fresh", [C]),
        probe("unreal", [C], cilium="deny"),
        probe("skipped", [N]),
        probe("never", [N]),
    )
    parity = compare(base, cur)
    status = {p.id: p.status for p in parity.probes}
    assert status == {
        "same": Status.SAME,
        "lost": Status.LOST,
        "gained": Status.GAINED,
        "pred": Status.PREDICTED,
        "flaky": Status.FLAKY,
        "err": Status.ERROR,
        "fresh": Status.NEW,
        "gone": Status.MISSING,
        "unreal": Status.UNREALIZED,
        "skipped": Status.MISSING,
        "never": Status.NOT_RUN,
    }
    assert not parity.held and parity.exit_code == 1
    assert parity.counts["predicted"] == 1 and parity.counts["accepted"] == 0
    assert parity.counts["missing"] == 2 and parity.counts["not-run"] == 1
    assert parity.counts["unrealized"] == 1
    assert sum(parity.counts.values()) == len(parity.probes) == 11
    by = parity.by_id()
    assert "NOT predicted" in by["lost"].message and "allowed in the baseline" in by["lost"].message
    assert "predicted by the engine" in by["pred"].message
    assert "scenario named-port" in by["pred"].message
    assert "an error is never counted as a deny" in by["err"].message
    assert "timeout, then connected" in by["flaky"].message


def test_a_change_opposite_to_the_prediction_is_not_predicted() -> None:
    base = record("npm", probe("p", [T, T], npm="allow", cilium="deny"))
    cur = record("cilium", probe("p", [C], npm="allow", cilium="deny"))
    (pp,) = compare(base, cur).probes
    assert pp.status is Status.GAINED and not pp.predicted


def test_a_predicted_change_that_did_not_happen_is_unrealized_and_passes() -> None:
    base = record("npm", probe("p", [C], cilium="deny"), probe("q", [C]))
    cur = record("cilium", probe("p", [C], cilium="deny"), probe("q", [C]))
    parity = compare(base, cur)
    pp = parity.by_id()["p"]
    assert pp.status is Status.UNREALIZED and pp.change is Status.SAME and not pp.failed
    assert "predicted allow -> deny, which did not happen" in pp.message
    assert parity.by_id()["q"].status is Status.SAME
    assert parity.held and parity.counts["unrealized"] == 1 and parity.counts["same"] == 1
    text = render_text(parity)
    assert "1 unrealized (predicted to change, did not)" in text.splitlines()[0]
    assert "unrealized (1): predicted to change, did not" in text


def test_an_unknown_prediction_is_no_predicted_change() -> None:
    base = record("npm", probe("p", [C], cilium="unknown"))
    cur = record("cilium", probe("p", [C], cilium="unknown"))
    assert compare(base, cur).probes[0].status is Status.SAME


def test_an_accepted_change_passes_with_its_reason_and_unused_entries_are_noted() -> None:
    base = record("npm", probe("p", [C], cilium="deny", scenario="endport"), probe("q", [C]))
    cur = record("cilium", probe("p", [T, T], cilium="deny", scenario="endport"), probe("q", [C]))
    accepts = {
        "p": Acceptance(id="p", reason="fixed after the upgrade"),
        "zzz": Acceptance(id="zzz", reason="old"),
    }
    parity = compare(base, cur, accepts=accepts)
    pp = parity.by_id()["p"]
    assert pp.status is Status.ACCEPTED and pp.change is Status.LOST and pp.predicted
    assert pp.accepted is not None and pp.accepted.reason == "fixed after the upgrade"
    assert parity.held and parity.exit_code == 0
    assert parity.unused_accepts == ("zzz",)
    assert any("zzz matches no probe of either record" in n for n in parity.notes)


def test_an_accept_entry_never_hides_an_error() -> None:
    base = record("npm", probe("p", [C]))
    cur = record("cilium", probe("p", [E]))
    parity = compare(base, cur, accepts={"p": Acceptance(id="p", reason="r")})
    assert parity.probes[0].status is Status.ERROR and not parity.held


def test_a_probe_file_expectation_accepts_the_change_it_expects() -> None:
    base = record("npm", probe("p", [C], expect="allow"))
    cur = record("cilium", probe("p", [T, T], expect="deny"))
    (pp,) = compare(base, cur).probes
    assert pp.status is Status.ACCEPTED
    assert pp.accepted is not None and "probe file expects deny under cilium" in pp.accepted.reason


def test_records_of_another_cluster_cannot_be_compared() -> None:
    with pytest.raises(RecordError, match="belongs to cluster 'a'"):
        compare(record("npm", cluster="a"), record("cilium", cluster="b"))


def test_the_parity_json_holds_counts_and_every_probe() -> None:
    base = record("npm", probe("p", [C], cilium="deny", scenario="named-port"), probe("q", [C]))
    cur = record("cilium", probe("p", [T, T], cilium="deny", scenario="named-port"), digest="other")
    doc = parity_json(compare(base, cur), baseline_path="b.json", current_path="c.json")
    assert doc["kind"] == "netparity.parity" and doc["schema_version"] == PARITY_SCHEMA_VERSION
    assert doc["held"] is False and doc["exit_code"] == 1
    assert doc["before"] == "npm" and doc["after"] == "cilium"
    assert doc["counts"]["predicted"] == 1 and doc["counts"]["missing"] == 1
    assert doc["baseline"]["path"] == "b.json" and doc["current"]["dataplane"] == "cilium"
    p = doc["probes"][0]
    assert p["status"] == "predicted" and p["change"] == "lost" and p["predicted_change"]
    assert p["before"] == "allow" and p["after"] == "deny"
    assert p["observed_after"][0]["observed"] == "timeout"
    assert p["predicted"]["cilium"]["decision"] == "deny"
    assert doc["probes"][1]["status"] == "missing" and doc["probes"][1]["observed_after"] == []
    assert any("plan changed" in n for n in doc["notes"])
    json.dumps(doc)  # JSON all the way down
    assert "predicted (1):" in render_text(compare(base, cur))


def write_pair(tmp_path: Path, base: Record, cur: Record) -> tuple[str, str]:
    b, c = tmp_path / "baseline.json", tmp_path / "current.json"
    write_record(base, b)
    write_record(cur, c)
    return str(b), str(c)


def test_a_probe_not_run_after_the_upgrade_is_missing_and_fails_unless_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b, c = write_pair(
        tmp_path,
        record("npm", probe("p", [C]), probe("q", [C])),
        record("cilium", probe("p", [N]), probe("q", [C])),
    )
    assert main(["compare", b, c]) == 1
    out = capsys.readouterr().out
    assert out.startswith("parity BROKEN: 1 same, 1 missing")
    assert "missing (1):" in out
    assert "not checked now (cilium): not run: no hostNetwork pod here" in out
    accept = tmp_path / "accept.yaml"
    accept.write_text("- id: p\n  reason: node probes are checked by hand on this cluster\n")
    assert main(["compare", b, c, "--accept", str(accept), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (p,) = [x for x in doc["probes"] if x["id"] == "p"]
    assert p["status"] == "accepted" and p["change"] == "missing" and not p["failed"]
    assert p["before"] == "allow" and p["after"] == "not-run"
    assert p["observed_after"][0]["observed"] == "not-run"


def test_a_probe_removed_from_the_record_fails_the_gate_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's reproduction: the baseline with one probe taken out."""
    base = record("npm", *(probe(f"p{i}", [C]) for i in range(5)))
    cur = record("cilium", *(probe(f"p{i}", [C]) for i in range(4)))
    b, c = write_pair(tmp_path, base, cur)
    assert main(["compare", b, c]) == 1
    out = capsys.readouterr().out
    assert out.startswith("parity BROKEN: 4 same, 1 missing")
    assert "not planned: this run's plan has the baseline's digest, yet its record lacks" in out


def test_a_probe_the_plan_no_longer_has_says_what_went_away() -> None:
    base = record("npm", probe("p", [C], dst_class="y[app=gone]"), probe("q", [C]))
    cur = record("cilium", probe("q", [C], dst_class="y[app=q]"), digest="other")
    pp = compare(base, cur).by_id()["p"]
    assert pp.status is Status.MISSING and pp.failed
    assert "not planned: no probe of this run's plan has its destination class y[app=gone]" in (
        pp.message
    )
    cur = record("cilium", probe("q", [C], dst_class="y[app=gone]"), digest="other")
    assert "not planned: the plan changed since the baseline (digest d -> other)" in (
        compare(base, cur).by_id()["p"].message
    )


def test_a_probe_neither_run_could_run_passes_but_is_counted_and_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b, c = write_pair(
        tmp_path,
        record("npm", probe("p", [N]), probe("q", [C]), probe("r", [N])),
        record("cilium", probe("p", [N]), probe("q", [C]), probe("r", [C]), probe("s", [N])),
    )
    assert main(["compare", b, c]) == 0
    out = capsys.readouterr().out
    assert out.startswith("parity held: 1 same, 1 new, 2 not-run")
    assert "not-run (2):" in out
    assert "neither run could run it (not run: no hostNetwork pod here)" in out
    assert "not in the baseline, and this run could not run it" in out
    assert "new: the baseline could not run it (not run: no hostNetwork pod here)" in out


def test_compare_exits_0_when_parity_held(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b, c = write_pair(tmp_path, record("npm", probe("p", [C])), record("cilium", probe("p", [C])))
    assert main(["compare", b, c]) == 0
    assert capsys.readouterr().out.startswith("parity held: 1 same")


def test_compare_exits_1_on_a_change_and_0_once_it_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b, c = write_pair(
        tmp_path, record("npm", probe("p", [C])), record("cilium", probe("p", [T, T]))
    )
    assert main(["compare", b, c, "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["lost"] == 1
    accept = tmp_path / "accept.yaml"
    accept.write_text("- id: p\n  reason: the team moved it behind the gateway\n")
    assert main(["compare", b, c, "--accept", str(accept)]) == 0
    assert "accepted (1):" in capsys.readouterr().out


def test_compare_exits_2_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b, c = write_pair(
        tmp_path, record("npm", probe("p", [C]), cluster="a"), record("cilium", cluster="b")
    )
    assert main(["compare", b, c]) == 2
    assert "belongs to cluster 'a'" in capsys.readouterr().err
    accept = tmp_path / "accept.yaml"
    accept.write_text("- id: p\n")
    assert main(["compare", b, b, "--accept", str(accept)]) == 2
    assert "field reason: is required for p" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "none.json"), b]) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- id: p\n", "field reason: is required"),
        ("- id: p\n  reason: '  '\n", "field reason: is required"),
        ("- reason: why\n", "field id: is required"),
        ("- id: p\n  reason: a\n  when: now\n", "field when: is not a known field"),
        ("- id: p\n  reason: a\n- id: p\n  reason: b\n", "listed twice"),
        ("id: p\n", "must be a YAML list"),
        ("- [p\n", "malformed YAML"),
    ],
)
def test_a_bad_accept_file_names_the_entry_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "accept.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_accept(path)


def test_an_accept_file_may_be_a_mapping_under_accept(tmp_path: Path) -> None:
    path = tmp_path / "accept.yaml"
    path.write_text("accept:\n  - id: 3f2a\n    reason: known\n    title: a -> b\n")
    assert load_accept(path) == {"3f2a": Acceptance(id="3f2a", reason="known", title="a -> b")}


def test_outcome_values_are_the_record_words() -> None:
    assert [o.value for o in Outcome] == ["allow", "deny", "flaky", "error", "not-run"]


def test_the_demo_never_says_exactly_as_predicted_when_a_predicted_change_did_not_happen() -> None:
    from report_records import make_runs

    from netparity.cli.demo import _explain

    runs = make_runs()  # real records: one predicted change did not happen, one probe missing
    unexpected, lines = _explain(parity_json(runs.parity))
    text = "\n".join(lines)
    assert "exactly as the engine predicted" not in text
    assert "23 probes changed as the engine predicted for npm -> cilium, but 1 predicted " in text
    assert "change did not happen (unrealized" in text
    assert f"did not change: {runs.forced.unrealized}" in text
    assert "1 probes could be run by neither run (not-run)" in text
    assert unexpected == 5  # lost, gained, flaky, error, missing
    assert "1 missing" in text
    held = compare(runs.baseline, runs.baseline, check=False)
    assert _explain(parity_json(held))[1][0].startswith(
        "0 probes changed exactly as the engine predicted"
    )


def test_the_same_record_twice_is_refused_and_swapped_records_are_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from report_records import make_runs

    from netparity.cli import main
    from netparity.record import write_record

    runs = make_runs()
    base, cur = tmp_path / "baseline.json", tmp_path / "post.json"
    write_record(runs.baseline, base)
    write_record(runs.current, cur)
    assert main(["compare", str(base), str(base)]) == 2
    assert "are the same record" in capsys.readouterr().err
    main(["compare", str(cur), str(base)])
    out = capsys.readouterr().out
    assert "WARNING" in out and "swapped" in out
    main(["compare", str(base), str(cur)])
    assert "swapped" not in capsys.readouterr().out
