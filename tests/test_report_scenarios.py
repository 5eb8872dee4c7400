"""What was probed on this cluster, per scenario: the terminal, parity.md and parity.html.

A green gate must never hide a scenario nobody looked at. The runs here are the example
cluster with the probes a real cluster's backend could not run forced to not-run with
the Kubernetes backend's own reasons (a node source without --allow-host-network, a
LoadBalancer without --allow-load-balancer), in the baseline and after the upgrade, so
that parity holds and only the per-scenario view says what nobody checked.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from report_records import EXAMPLE, REPO, probe_run
from test_plugin import CONFTEST, QUIET_PLUGINS

from netparity.backend import Observed
from netparity.compare import compare
from netparity.compare_output import parity_json
from netparity.kube.layout import NODE_SOURCE
from netparity.model.snapshot import load_snapshot
from netparity.plan.planner import make_plan
from netparity.record import Record, record_json, write_json_atomic
from netparity.report import write_reports
from netparity.report.scenarios import cause_of, scenario_probing, summary_lines
from netparity.report.sources import load_report

pytest_plugins = ["pytester"]

LB = (
    "probing Service shop/web through a LoadBalancer needs --allow-load-balancer "
    "(an Azure load balancer costs money and minutes)"
)


def _runs() -> tuple[Record, Record, set[str], set[str]]:
    snapshot = load_snapshot([str(EXAMPLE)])
    plan = make_plan(snapshot, current="npm", target="cilium")
    node_sources = {p.id for p in plan.probes if str(p.kind).startswith("node-")}
    lbs = {p.id for p in plan.probes if str(p.kind).endswith("-lb")}
    assert node_sources and lbs
    overrides = {pid: [Observed.NOT_RUN] for pid in node_sources | lbs}
    reasons = {**dict.fromkeys(node_sources, NODE_SOURCE), **dict.fromkeys(lbs, LB)}
    runs = [
        probe_run(
            snapshot,
            plan,
            dp,
            phase=phase,
            time=time,
            overrides=overrides,
            reasons=reasons,
        )
        for dp, phase, time in (
            ("npm", "pre", "2026-11-20T08:00:00Z"),
            ("npm", "post", "2026-11-21T09:30:00Z"),
        )
    ]
    return runs[0], runs[1], node_sources, lbs


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    baseline, current, _, _ = _runs()
    out = tmp_path_factory.mktemp("scenarios")
    write_json_atomic(out / "baseline.json", record_json(baseline))
    parity = compare(baseline, current)
    write_json_atomic(out / "parity.json", parity_json(parity))
    return out


def test_causes_name_the_option_or_condition_and_keep_other_reasons() -> None:
    assert cause_of(NODE_SOURCE) == "no --allow-host-network"
    assert cause_of(LB) == "no --allow-load-balancer"
    assert cause_of(
        "this machine got no answer at all from 10.0.0.4: it may not reach the cluster's network"
    ) == ("NodePorts and node addresses unreachable from the runner")
    assert cause_of("the twin of pod a/b would join Service a/s") == (
        "the twin of pod a/b would join Service a/s"
    )
    assert len(cause_of("x" * 500)) == 100


def test_every_guide_scenario_is_listed_probed_partly_or_only_predicted() -> None:
    entries = scenario_probing(
        [
            (("ipblock-nodes",), NODE_SOURCE),
            (("ipblock-nodes",), NODE_SOURCE),
            (("external-ingress",), None),
            (("external-ingress", "lb-in-cluster"), LB),
            (("endport",), None),
        ]
    )
    by = {e.scenario: e for e in entries}
    assert [e.scenario for e in entries][:6] == [
        "endport",
        "ipblock-pods",
        "ipblock-nodes",
        "named-port",
        "node-egress",
        "external-ingress",
    ]
    assert by["endport"].state == "probed"
    assert by["ipblock-pods"].state == "not present"
    assert by["ipblock-nodes"].state == "only predicted"
    assert by["ipblock-nodes"].causes == (("no --allow-host-network", 2),)
    assert by["external-ingress"].state == "partly probed"
    assert by["lb-in-cluster"].state == "only predicted" and not by["lb-in-cluster"].guide
    lines = summary_lines(entries)
    assert lines[0].startswith("scenarios: 3 present but not (fully) probed")
    assert (
        "  ipblock-nodes: only predicted, 0 of 2 probes run; not run: no --allow-host-network (2)"
        in lines
    )
    assert "  ipblock-pods: not present in this cluster (no probe of the plan)" in lines


def test_a_held_parity_still_says_which_scenarios_were_only_predicted(folder: Path) -> None:
    report = load_report(folder / "parity.json")
    assert report.held is True  # nothing changed, every not-run probe was not run before too
    by = {e.scenario: e for e in report.scenario_probing()}
    assert by["ipblock-nodes"].state == "partly probed"
    assert ("no --allow-host-network", 1) in by["ipblock-nodes"].causes
    assert by["external-ingress"].causes == (("no --allow-load-balancer", 6),)
    assert by["endport"].state == "probed"
    write_reports(folder / "parity.json", folder)
    md = (folder / "parity.md").read_text()
    assert "### What was probed on this cluster, per scenario" in md
    assert re.search(
        r"\| external-ingress \| partly probed \| 18 of 24 \| no --allow-load-balancer \(6\) \|", md
    )
    assert "| named-port | probed | 2 of 2 | - |" in md
    html = (folder / "parity.html").read_text()
    top = html[: html.index('<nav class="toc">')]
    assert "Parity held" in top and "not (fully) probed on this cluster" in top
    assert "ipblock-nodes" in top
    row = html[html.index('<tr id="s-ipblock-nodes"') :]
    row = row[: row.index("</tr>")]
    assert "partly probed" in row and "no --allow-host-network" in row
    assert 'href="#scenarios"' in html


def test_the_pre_report_says_it_from_the_record(folder: Path, tmp_path: Path) -> None:
    write_reports(folder / "baseline.json", tmp_path)
    md = (tmp_path / "parity.md").read_text()
    assert "| lb-in-cluster |" in md and "no --allow-load-balancer" in md
    html = (tmp_path / "parity.html").read_text()
    assert '<tr id="s-ipblock-nodes"' in html


def test_the_terminal_says_it_before_and_after_the_upgrade(pytester: pytest.Pytester) -> None:
    (pytester.path / "suites").mkdir()
    for name in ("__init__.py", "test_connectivity.py"):
        shutil.copy(REPO / "suites" / name, pytester.path / "suites" / name)
    pytester.makeconftest(CONFTEST)
    shutil.copy(EXAMPLE, pytester.path / "cluster.yaml")
    pytester.makeini(f"[pytest]\naddopts = {QUIET_PLUGINS}\n")
    _, _, node_sources, _ = _runs()
    (pytester.path / "overrides.json").write_text(
        json.dumps({key: ["not-run"] for key in node_sources})
    )
    want = [
        "*scenarios: 1 present but not (fully) probed on this cluster, only predicted there",
        "  endport: probed, 7 of 7 probes run",
        "  ipblock-nodes: partly probed, 2 of 3 probes run; not run: "
        "the backend cannot run this probe (1)",
        "  external-ingress: probed, 24 of 24 probes run",
    ]
    pre = pytester.runpytest("suites/test_connectivity.py", "--cluster", "file:cluster.yaml")
    pre.stdout.fnmatch_lines(["*pre: * probes on npm*", *want])
    post = pytester.runpytest(
        "suites/test_connectivity.py", "--cluster", "file:cluster.yaml@cilium"
    )
    post.stdout.fnmatch_lines(["*parity*", *want])


def test_the_essential_flows_are_listed_right_after_the_guides_scenarios() -> None:
    entries = scenario_probing(
        [
            (("sctp",), None),
            (("essential",), None),
            (("essential",), NODE_SOURCE),
        ]
    )
    names = [e.scenario for e in entries]
    assert names[6:] == ["essential", "sctp"]
    essential = entries[6]
    assert not essential.guide and essential.state == "partly probed"
    assert (essential.planned, essential.probed) == (2, 1)
