"""The cause of a change is derived (knob by knob), kept apart from the probe's purpose,
and agrees with the lint."""

from __future__ import annotations

import itertools
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from netparity.backend import ClusterFacts, Observed, ProbeResult
from netparity.compare import compare
from netparity.compare_output import parity_json
from netparity.engine.causes import DECIDING_KNOBS, Cause, CauseFinder
from netparity.engine.dataplane import KNOB_ROWS, Dataplane, get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Decision, PodEndpoint, Traffic
from netparity.lint.findings import KIND_ROWS
from netparity.lint.lint import lint_snapshot
from netparity.model.snapshot import Snapshot, snapshot_from_dicts
from netparity.plan.model import PlannedProbe, Scenario
from netparity.plan.planner import make_plan
from netparity.record import Record, build_record, record_from_json, record_json
from netparity.report.lintdata import NO_SCENARIO_WHY, categorize, cause_category, lint_view
from netparity.report.matrix import build_matrix, natural
from netparity.report.sources import from_record
from tests.builders import netpol, node, ns, pod

BENCH = Path(__file__).resolve().parents[1] / "bench"

# The case: ns13's client may reach ns0's server on 32000-32768 (endPort), and
# anything in 10.0.0.0/8 (an ipBlock that covers every pod address) on every port.
EGRESS = netpol(
    "ns13/egress",
    {
        "podSelector": {"matchLabels": {"app": "app1"}},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "ns0"}
                        },
                        "podSelector": {"matchLabels": {"app": "app13"}},
                    }
                ],
                "ports": [{"port": 32000, "endPort": 32768, "protocol": "TCP"}],
            },
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
        ],
    },
)


def cluster(*policies: dict[str, Any]) -> Snapshot:
    return snapshot_from_dicts(
        [
            ns("ns0"),
            ns("ns2"),
            ns("ns10"),
            ns("ns13"),
            node("n1", "10.224.0.4", "10.244.0.0/24"),
            node("n2", "10.224.0.5", "10.244.1.0/24"),
            pod("ns13/client", "10.244.0.20", "n1", {"app": "app1", "tier": "api"}),
            pod(
                "ns0/server",
                "10.244.1.20",
                "n2",
                {"app": "app13", "tier": "api"},
                [(None, 32000, "TCP")],
            ),
            pod("ns2/a", "10.244.0.30", "n1", {"app": "a"}, [(None, 80, "TCP")]),
            pod("ns10/b", "10.244.1.30", "n2", {"app": "b"}, [(None, 80, "TCP")]),
            *policies,
        ]
    )


def traffic(snap: Snapshot, src: str, dst: str, port: int) -> Traffic:
    pods = {p.key: p for p in snap.pods}
    return Traffic(
        source=PodEndpoint(pod=pods[src]), destination=PodEndpoint(pod=pods[dst]), port=port
    )


def finder(snap: Snapshot, target: str) -> CauseFinder:
    return CauseFinder(
        Engine(snap),
        get_dataplane("npm").with_config(snap.config),
        get_dataplane(target).with_config(snap.config),
    )


def edge_probe(snap: Snapshot, target: str) -> PlannedProbe:
    plan = make_plan(snap, current="npm", target=target)
    (probe,) = [
        p for p in plan.probes if p.title.startswith("ns13[app=app1] -> ns0[app=app13] 31999/TCP")
    ]
    return probe


def test_every_deciding_knob_cites_a_semantics_row() -> None:
    knobs = {f.name for f in fields(Dataplane)} - {"name", "description"}
    assert knobs == set(KNOB_ROWS)
    assert set(DECIDING_KNOBS) < knobs and "end_port" in DECIDING_KNOBS
    assert "end_port_uncertain" not in DECIDING_KNOBS  # it only adds a [VERIFY] note


def test_the_edge_below_an_end_port_range_flips_through_ip_block_not_end_port() -> None:
    snap = cluster(EGRESS)
    probe = edge_probe(snap, "cilium")
    assert probe.scenario is Scenario.ENDPORT  # its purpose: the edge below the range
    assert probe.predicted["npm"].decision is Decision.ALLOW
    assert probe.predicted["cilium"].decision is Decision.DENY
    (cause,) = probe.predicted["cilium"].causes
    assert (cause.knob, cause.row, cause.scenario) == (
        "ipblock_matches_cluster",
        "D2",
        "ipblock-pods",
    )
    assert cause.rule == "NetworkPolicy ns13/egress egress[1]"  # the ipBlock rule, not the range
    assert cause.together == ()
    assert probe.predicted["npm"].causes == ()  # the current dataplane differs from nothing
    # under cilium-1.16 endPort differs too, but ipBlock is still a cause of this edge
    causes_116 = edge_probe(snap, "cilium-1.16").predicted["cilium-1.16"].causes
    assert "ipblock-pods" in {c.scenario for c in causes_116}
    assert {c.scenario for c in causes_116} <= {"ipblock-pods", "endport"}


def test_a_change_with_two_causes_names_both_each_sufficient_alone() -> None:
    # one rule: ipBlock over pods on a port range; 32100 lies inside the range
    both = netpol(
        "ns13/both",
        {
            "podSelector": {"matchLabels": {"app": "app1"}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                    "ports": [{"port": 32000, "endPort": 32768, "protocol": "TCP"}],
                }
            ],
        },
    )
    snap = cluster(both)
    t = traffic(snap, "ns13/client", "ns0/server", 32100)
    causes = finder(snap, "cilium-1.16").causes(t)
    assert {(c.knob, c.row, c.scenario) for c in causes} == {
        ("ipblock_matches_cluster", "D2", "ipblock-pods"),
        ("end_port", "D1", "endport"),
    }
    assert all(c.together == () and c.rule == "NetworkPolicy ns13/both egress[0]" for c in causes)
    # under cilium (endPort honoured) only the ipBlock is a cause
    (only,) = finder(snap, "cilium").causes(t)
    assert only.scenario == "ipblock-pods"


def test_a_change_only_two_differences_together_explain_names_them_together() -> None:
    # the policy at 32100: the range admits it, and so does the ipBlock; under
    # cilium-1.16 neither rule admits it, but each knob alone leaves the other rule admitting
    snap = cluster(EGRESS)
    t = traffic(snap, "ns13/client", "ns0/server", 32100)
    f = finder(snap, "cilium-1.16")
    for knob in ("ipblock_matches_cluster", "end_port"):
        alone = f.engine.evaluate(t, f.profile((knob,)))
        assert alone.decision is Decision.ALLOW
    causes = f.causes(t)
    assert {(c.knob, c.together) for c in causes} == {
        ("ipblock_matches_cluster", ("end_port",)),
        ("end_port", ("ipblock_matches_cluster",)),
    }
    assert "together with end_port" in str(causes[0]) or "together with" in str(causes[1])


def test_traffic_whose_decision_does_not_change_has_no_cause() -> None:
    snap = cluster(EGRESS)
    t = traffic(snap, "ns13/client", "ns0/server", 32000)  # the range admits it everywhere
    assert finder(snap, "cilium").causes(t) == ()


def _record(plan: Any, dataplane: str, time: str) -> Record:
    results = {}
    for p in plan.probes:
        d = p.predicted[dataplane].decision
        tries = [Observed.CONNECTED] if d is Decision.ALLOW else [Observed.TIMEOUT] * 2
        results[p.id] = [ProbeResult(id=p.id, observed=o) for o in tries]
    return build_record(
        facts=ClusterFacts(name="t", backend="file", dataplane=dataplane),
        cluster="t",
        plan=plan,
        results=results,
        phase="pre" if dataplane == "npm" else "post",
        probe_timeout=2.0,
        retries=1,
        time=time,
    )


def test_records_and_the_parity_keep_purpose_and_cause_apart() -> None:
    snap = cluster(EGRESS)
    plan = make_plan(snap, current="npm", target="cilium")
    base = _record(plan, "npm", "2026-01-01T00:00:00Z")
    cur = _record(plan, "cilium", "2026-01-02T00:00:00Z")
    doc = record_json(cur)
    assert doc["schema_version"] == 2 and doc["schema_minor"] == 1
    assert record_from_json(doc) == cur  # causes survive the round trip
    parity = compare(base, cur)
    (edge,) = [p for p in parity.probes if "31999/TCP" in p.title and "ns13" in p.title]
    assert str(edge.status) == "predicted"
    assert "cause ipblock-pods (D2) via NetworkPolicy ns13/egress egress[1]" in edge.message
    assert "planned for scenario endport" in edge.message
    out = next(p for p in parity_json(parity)["probes"] if p["id"] == edge.id)
    assert out["scenario"] == "endport"
    assert [c["scenario"] for c in out["causes"]] == ["ipblock-pods"]
    # a 2.0 baseline and current (no causes) fall back to the purpose and say nothing else
    old = [record_from_json({**record_json(r), "schema_minor": 0}) for r in (base, cur)]
    old_edge = next(p for p in compare(*old).probes if p.id == edge.id)
    assert not old_edge.causes_known and "cause " not in old_edge.message
    assert (
        next(p for p in parity_json(compare(*old))["probes"] if p["id"] == edge.id)["causes"]
        is None
    )


def test_the_report_groups_the_edge_by_its_cause() -> None:
    snap = cluster(EGRESS)
    plan = make_plan(snap, current="npm", target="cilium")
    report = from_record(_record(plan, "npm", "2026-01-01T00:00:00Z"))
    lint = lint_view(lint_snapshot(snap, target="cilium", fixes=False))
    rows = {r.id: r for r in categorize(report.rows, lint)}
    edge = rows[edge_probe(snap, "cilium").id]
    assert edge.scenario == "endport" and edge.category == "ipblock-pods"
    assert not any(r.category == "endport" for r in rows.values())  # no endPort change at all
    assert all(lint.by_id()[f].kind == "ipblock-pods" for f in edge.findings)
    if not edge.findings:  # the lint judges declared ports: 31999 is none; the report says so
        (why,) = edge.no_finding
        assert why.startswith("ipblock-pods (D2) via NetworkPolicy ns13/egress egress[1]: ")
        assert "no ipblock-pods finding on NetworkPolicy ns13/egress" in why


def test_every_lint_kind_of_a_cause_has_its_own_report_section() -> None:
    # a cause the lint has a finding kind for is shown under that kind, never under "other"
    # (the demo's D23 changes were counted as "other" before policy-types had a section)
    for kind, row in KIND_ROWS.items():
        if kind == Scenario.CILIUM_POLICY:  # D13: the lint's own kind; causes say D14
            continue
        cause = Cause(knob="rules_beyond_policy_types", row=row, scenario=str(kind))
        assert cause_category(cause) == kind


def test_the_matrix_orders_namespaces_naturally() -> None:
    assert sorted(["ns10", "ns2", "ns1", "ns10a", "a"], key=natural) == [
        "a",
        "ns1",
        "ns2",
        "ns10",
        "ns10a",
    ]
    deny = [
        netpol(f"{n}/deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
        for n in ("ns2", "ns10")
    ]
    snap = cluster(EGRESS, *deny)
    report = from_record(_record(make_plan(snap), "npm", "2026-01-01T00:00:00Z"))
    matrix = build_matrix(report.rows)
    for axis in (matrix.rows, matrix.cols):
        order = [g for g in dict.fromkeys(e.group for e in axis) if g.startswith("ns")]
        assert order == sorted(order, key=natural)
    cols = [g for g in dict.fromkeys(e.group for e in matrix.cols) if g.startswith("ns")]
    assert cols.index("ns2") < cols.index("ns10")  # lexically ns10 came first


@pytest.fixture(scope="module")
def generated() -> Snapshot:
    sys.path.insert(0, str(BENCH))
    try:
        from gen import generate
    finally:
        sys.path.remove(str(BENCH))
    return snapshot_from_dicts(generate(pods=1500, namespaces=30, policies=300, nodes=6, seed=3))


@pytest.mark.parametrize("target", ["cilium", "cilium-1.16"])
def test_every_cause_shown_has_a_lint_finding_or_says_why(generated: Snapshot, target: str) -> None:
    plan = make_plan(generated, current="npm", target=target)
    report = from_record(_record(plan, "npm", "2026-01-01T00:00:00Z"))
    lint = lint_view(lint_snapshot(generated, target=target, fixes=False))
    by_id = lint.by_id()
    rows = [r for r in categorize(report.rows, lint) if r.category is not None]
    assert rows and all(r.causes for r in rows)  # every predicted change has a cause
    kinds = {f.kind for f in lint.findings}
    shown = 0
    for r in rows:
        for f in r.findings:  # every finding shown is of one of the probe's causes
            assert by_id[f].kind in {c.scenario for c in r.causes}, (r.title, f)
        explained = {n.split(": ", 1)[0] for n in r.no_finding}
        for c in r.causes:
            if str(c) in explained:
                why = next(n for n in r.no_finding if n.startswith(f"{c}: "))
                # the only reasons: a run-owned Service, a Cilium policy (D14), or SCTP
                # dropped whole where no policy is involved (D24: no policy to name)
                assert (
                    "netparity creates for the run" in why
                    or NO_SCENARIO_WHY["D14"] in why
                    or (c.row == "D24" and "no NetworkPolicy is involved" in why)
                ), why
                continue
            shown += 1
            assert c.scenario in kinds, (r.title, str(c))
            group = {c.scenario} | {o.scenario for o in r.causes if o.knob in c.together}
            assert any(by_id[f].kind in group for f in r.findings), (r.title, str(c))
    assert shown > 0
    if target == "cilium":  # endPort is honoured: never a cause, and never a lint finding
        assert "endport" not in kinds
        assert not any(c.scenario == "endport" for r in rows for c in r.causes)
    else:
        assert any(c.scenario == "endport" for r in rows for c in r.causes)


def _every_group(finder: CauseFinder, traffic: Traffic) -> tuple[Cause, ...]:
    """The causes as found before groups were pruned: every knob, then every group."""
    engine, now_dp, then_dp = finder.engine, finder.current, finder.target
    now, then = engine.evaluate(traffic, now_dp), engine.evaluate(traffic, then_dp)
    if now.decision is then.decision:
        return ()
    for size in range(1, 4):
        found: list[Cause] = []
        for group in itertools.combinations(finder.knobs, size):
            v = engine.evaluate(traffic, finder.profile(group))
            if v.decision is then.decision:
                for knob in group:
                    cause = finder._cause(knob, now, v)
                    found.append(replace(cause, together=tuple(k for k in group if k != knob)))
        if found:
            return tuple(found)
    return ()


@pytest.mark.parametrize("target", ["cilium", "cilium-1.16", "cilium-1.19"])
def test_pruned_groups_find_the_causes_every_group_finds(generated: Snapshot, target: str) -> None:
    """The finder skips knobs (and groups) whose evaluation cannot differ from a smaller
    group's; on every changed probe of a generated plan it names what trying every knob
    and every group names, and it does skip most of them."""
    plan = make_plan(generated, current="npm", target=target)
    engine = Engine(generated)
    finder = CauseFinder(engine, get_dataplane("npm"), get_dataplane(target))
    evaluated = 0
    original = engine.evaluate

    def counting(traffic: Traffic, dp: Dataplane) -> Any:
        nonlocal evaluated
        evaluated += 1
        return original(traffic, dp)

    changed = [
        p for p in plan.probes if p.predicted[target].decision != p.predicted["npm"].decision
    ]
    assert len(changed) > 50
    pruned = 0
    for p in changed:
        assert finder.causes(p.traffic) == _every_group(finder, p.traffic), p.title
        evaluated = 0
        engine.evaluate = counting  # type: ignore[method-assign]
        finder.causes(p.traffic)
        del engine.evaluate
        pruned += evaluated
    assert pruned < len(changed) * (len(finder.knobs) + 2) * 0.8
