"""The parity report: parity.html, parity.md, lint.json, JUnit and the schemas they keep to.

Reports are built from records of the example cluster made by the engine-backed backend
(with a lost, a gained, a flaky, an error and an accepted probe forced in), and from two
real `pytest suites/ --cluster file:...` runs (before under npm, after under cilium).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
import xmlschema
import yaml
from report_records import REPO, Runs, make_runs, write_runs

from netparity.cli import main
from netparity.dryrun import file_cluster_name
from netparity.lint import lint_snapshot
from netparity.record import cluster_dirname
from netparity.report import write_reports
from netparity.report.lintdata import (
    LINT_FILE,
    UNEXPLAINED,
    categorize,
    lint_from_json,
    lint_json,
    lint_view,
    write_lint,
)
from netparity.report.markdown import MAX_ROWS, render_markdown
from netparity.report.matrix import build_matrix
from netparity.report.model import Report, Row
from netparity.report.sources import load_report

pytest_plugins = ["pytester"]

SCHEMAS = REPO / "docs" / "schemas"


@pytest.fixture(scope="module")
def runs() -> Runs:
    return make_runs()


@pytest.fixture(scope="module")
def lint(runs: Runs) -> Any:
    return lint_view(lint_snapshot(runs.snapshot, target="cilium"))


@pytest.fixture(scope="module")
def written(runs: Runs, lint: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """baseline.json, parity.json and lint.json, and the reports of the parity."""
    folder = tmp_path_factory.mktemp("report")
    write_runs(runs, folder)
    write_lint(lint, folder / LINT_FILE)
    write_reports(folder / "parity.json", folder)
    return folder


def page(folder: Path) -> str:
    return (folder / "parity.html").read_text(encoding="utf-8")


def section(text: str, id_: str) -> str:
    """The HTML of a top-level <section id=...>, or of one cause section (id cat-...)."""
    start = text.index(f'id="{id_}"')
    stops = ['\n<section id="']
    if id_.startswith("cat-"):
        stops.append('\n  <section class="cat')
    found = [e for e in (text.find(stop, start) for stop in stops) if e != -1]
    return text[start : min(found)]


def ids_in(fragment: str) -> set[str]:
    return set(re.findall(r'<tr id="p-([0-9a-f]+)"', fragment))


def categorized(runs: Runs, lint: Any, tmp_path: Path) -> Report:
    _, parity = write_runs(runs, tmp_path)
    report = load_report(parity)
    return report.with_rows(categorize(report.rows, lint))


# --------------------------------------------------------------------------- the page


def test_the_page_opens_with_the_verdict_the_counts_and_both_runs(
    written: Path, runs: Runs
) -> None:
    text = page(written)
    top = text[: text.index('<nav class="toc">')]
    assert '<h1 id="verdict" data-verdict="broken">Parity broken</h1>' in top
    for status, n in runs.parity.counts.items():
        assert re.search(rf'data-status="{status}"[^>]*><b>{n}</b><span>{status}</span>', top), (
            status
        )
    assert "npm" in top and "cilium" in top
    assert "2026-11-20 08:00:00 UTC" in top and "2026-11-21 09:30:00 UTC" in top
    assert "CI gate: exit 1 (fails)" in top


def test_a_held_parity_says_so_in_green(runs: Runs, tmp_path: Path) -> None:
    from netparity.compare import compare
    from netparity.compare_output import parity_json
    from netparity.record import write_json_atomic

    same = compare(runs.baseline, runs.baseline, check=False)
    write_json_atomic(tmp_path / "parity.json", parity_json(same))
    write_reports(tmp_path / "parity.json", tmp_path)
    text = page(tmp_path)
    assert 'data-verdict="held">Parity held</h1>' in text
    assert 'class="verdict tone-ok"' in text
    assert "✅ netparity: Parity held" in (tmp_path / "parity.md").read_text()


def test_every_changed_probe_is_in_exactly_one_cause_section(written: Path, runs: Runs) -> None:
    text = page(written)
    changes = section(text, "changes")
    seen: Counter[str] = Counter()
    for m in re.finditer(r'<section class="cat[^"]*" id="cat-([a-z-]+)">', changes):
        body = section(text, f"cat-{m.group(1)}")
        seen.update(ids_in(body))
    expected = {
        p.id
        for p in runs.parity.probes
        if p.status.value in ("lost", "gained", "predicted", "accepted")
    }
    assert set(seen) == expected
    assert all(n == 1 for n in seen.values())


def test_a_change_nobody_predicted_is_unexplained_even_where_it_has_a_scenario(
    written: Path, runs: Runs
) -> None:
    body = section(page(written), f"cat-{UNEXPLAINED}")
    assert ids_in(body) == {runs.forced.lost, runs.forced.gained}
    assert "Unexplained changes" in body


def test_a_predicted_change_sits_under_its_scenario_with_the_rules_of_both_sides(
    written: Path, runs: Runs
) -> None:
    text = page(written)
    probe = next(
        p
        for p in runs.parity.probes
        if p.status.value == "predicted" and p.probe.scenario == "ipblock-nodes"
    )
    body = section(text, "cat-ipblock-nodes")
    assert probe.id in ids_in(body)
    row = body[body.index(f'<tr id="p-{probe.id}"') :]
    row = row[: row.index("</tr>")]
    rules_before = probe.probe.predicted["npm"].rules
    assert rules_before and all(html.escape(r) in row for r in rules_before)
    assert "timeout, then timeout" in row  # what was observed after


def test_flaky_error_and_missing_probes_have_their_own_section(written: Path, runs: Runs) -> None:
    body = section(page(written), "problems")
    assert ids_in(body) == {runs.forced.flaky, runs.forced.error, runs.forced.missing}
    assert "timeout, then connected" in body
    assert "not checked now (cilium): not run: no hostNetwork pod can be made" in body


def test_a_predicted_change_that_did_not_happen_and_probes_nobody_ran_are_shown(
    written: Path, runs: Runs
) -> None:
    text = page(written)
    top = text[: text.index('<nav class="toc">')]
    assert "1 probe predicted to change did not (unrealized)" in top
    assert "1 probe could be run by neither run (not-run)" in top
    assert re.search(r'data-status="unrealized"[^>]*title="predicted to change, did not', top)
    table = json.loads(
        text[text.index('id="probe-data"') :].split(">", 1)[1].split("</script>", 1)[0]
    )
    status = {table["strings"][r[1]]: table["strings"][r[0]] for r in table["rows"]}
    assert status[runs.forced.unrealized] == "unrealized"
    assert status[runs.forced.not_run] == "not-run"
    assert status[runs.forced.missing] == "missing"


def test_an_accepted_change_shows_its_reason(written: Path, runs: Runs) -> None:
    text = page(written)
    row = text[text.index(f'<tr id="p-{runs.forced.accepted}"') :]
    assert "accepted: fixed by PR #123 after the upgrade" in row[: row.index("</tr>")]


def test_the_remediation_yaml_is_the_lints_objects_ready_to_apply(
    written: Path, runs: Runs
) -> None:
    text = page(written)
    report = lint_snapshot(runs.snapshot, target="cilium")
    fixes = {f.id: f.fix for f in report.findings if f.fix is not None}
    shown = re.findall(
        # within one finding: a finding without a fix must not take the next one's YAML
        r'<details class="finding" id="f-([^"]+)"[^>]*>(?:(?!</details>).)*?'
        r'<pre class="yaml"[^>]*><code>(.*?)</code></pre>',
        text,
        re.S,
    )
    assert shown
    for fid, code in shown:
        fix = fixes[html.unescape(fid)]
        yaml_text = html.unescape(code)
        assert yaml_text.startswith(f"# kubectl {fix.action} -f -")
        assert list(yaml.safe_load_all(yaml_text)) == [dict(o) for o in fix.objects]


def test_a_lint_finding_is_shown_with_the_probes_of_its_policy(written: Path, runs: Runs) -> None:
    text = page(written)
    finding = "ipblock-pods/ipblock-test/allow-from-pod-cidr"
    assert f'<details class="finding" id="f-{finding}" open>' in text
    rows = re.findall(r'<tr id="p-([0-9a-f]+)">(.*?)</tr>', text, re.S)
    probes = {pid for pid, body in rows if f'href="#f-{finding}"' in body}
    assert probes
    for pid in probes:
        p = runs.parity.by_id()[pid]
        assert "ipblock-test/allow-from-pod-cidr" in " ".join(
            (
                *p.probe.rules,
                *p.probe.predicted["npm"].rules,
                p.probe.predicted["cilium"].explanation,
            )
        )


def test_the_page_fetches_nothing(written: Path) -> None:
    text = page(written)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert "<script src" not in text
    assert "<style>" in text and "<script>" in text


def test_the_matrix_marks_the_cells_of_changed_probes(written: Path, runs: Runs) -> None:
    text = page(written)
    matrix = text[
        text.index('<table class="mx"') : text.index("</table>", text.index('<table class="mx"'))
    ]
    statuses = re.findall(r'<td class="c st-([a-z]+)', matrix)
    assert Counter(statuses)["lost"] == 1 and Counter(statuses)["gained"] == 1
    assert Counter(statuses)["predicted"] >= 5
    links = re.findall(
        r'data-status="(?:lost|gained|predicted)"[^>]*><a href="#p-([0-9a-f]+)"', matrix
    )
    failing = {p.id for p in runs.parity.probes if p.failed}
    assert links and set(links) <= failing


def test_the_probe_table_data_holds_every_probe_once(written: Path, runs: Runs) -> None:
    text = page(written)
    raw = text[text.index('<script type="application/json" id="probe-data">') :]
    raw = raw[raw.index(">") + 1 : raw.index("</script>")]
    data = json.loads(raw)
    strings = data["strings"]
    rows = [[strings[i] for i in r] for r in data["rows"]]
    assert [r[1] for r in rows] == [p.id for p in runs.parity.probes]
    assert Counter(r[0] for r in rows) == Counter(p.status.value for p in runs.parity.probes)
    assert len(strings) == len(set(strings))


def test_a_record_before_the_upgrade_gives_the_predictions_and_the_fixes(
    written: Path, runs: Runs, tmp_path: Path
) -> None:
    write_reports(written / "baseline.json", tmp_path, lint_file=written / LINT_FILE)
    text = page(tmp_path)
    flips = sum(
        1 for p in runs.plan.probes if p.predicted["npm"].decision != p.predicted["cilium"].decision
    )
    assert f'data-verdict="prediction">{flips} probes predicted to change under cilium</h1>' in text
    assert "predicted by the engine · not upgraded yet" in text
    assert "Every observation agrees with the engine." in text
    changed: set[str] = set()
    for key in re.findall(r'<section class="cat[^"]*" id="cat-([a-z-]+)">', text):
        changed |= ids_in(section(text, f"cat-{key}"))
    assert len(changed) == flips
    assert text.count('<pre class="yaml"') >= 5
    md = (tmp_path / "parity.md").read_text()
    assert f"{flips} probes predicted to change under cilium" in md


def test_a_pre_observation_that_disagrees_with_the_engine_is_listed_first(
    runs: Runs, tmp_path: Path
) -> None:
    from report_records import probe_run

    from netparity.backend import Observed
    from netparity.record import record_json, write_json_atomic

    probe = runs.forced.lost
    record = probe_run(
        runs.snapshot,
        runs.plan,
        "npm",
        phase="pre",
        time="2026-11-20T08:00:00Z",
        overrides={probe: [Observed.TIMEOUT]},
    )
    write_json_atomic(tmp_path / "baseline.json", record_json(record))
    write_reports(tmp_path / "baseline.json", tmp_path)
    text = page(tmp_path)
    assert 'class="verdict tone-warn"' in text
    body = text[text.index('id="disagreements"') : text.index('id="matrix"')]
    assert f'<tr id="d-{probe}">' in body
    assert f"[`{probe}`](parity.html#d-{probe})" in (tmp_path / "parity.md").read_text()


# --------------------------------------------------------------------------- the matrix


def row(**kw: Any) -> Row:
    from netparity.report.model import Side
    from netparity.report.sources import end_of

    base: dict[str, Any] = {
        "id": "0" * 12,
        "title": "a[app=x] -> b[app=y] 80/TCP pod-pod",
        "kind": "pod-pod",
        "intent": "admit",
        "source": end_of("a[app=x]", {}),
        "destination": end_of("b[app=y]", {}),
        "port": "80",
        "protocol": "TCP",
        "status": "same",
        "change": "same",
        "failed": False,
        "predicted_change": False,
        "before": Side(dataplane="npm", verdict="allow"),
        "after": Side(dataplane="cilium", verdict="allow"),
    }
    base.update(kw)
    return Row(**base)


def test_a_cell_takes_the_colour_of_its_most_serious_probe_and_one_chip_per_port() -> None:
    from netparity.report.model import Side

    rows = [
        row(id="a" * 12),
        row(id="b" * 12, port="443", status="accepted"),
        row(id="c" * 12, port="443", status="lost", after=Side(dataplane="cilium", verdict="deny")),
    ]
    m = build_matrix(rows)
    (cell,) = m.cells.values()
    assert cell.status == "lost" and cell.target == "c" * 12 and cell.changed == 2
    assert [(c.label, c.before, c.after, c.status) for c in cell.chips] == [
        ("443/TCP", "allow", "mixed", "lost"),
        ("80/TCP", "allow", "allow", "same"),
    ]


def test_the_matrix_shows_one_row_per_namespace_when_classes_are_many() -> None:
    from netparity.report.sources import end_of

    rows = [
        row(
            id=f"{i:012x}",
            source=end_of(f"ns{i % 3}[app=a{i}]", {}),
            destination=end_of("node:own", {}),
        )
        for i in range(30)
    ]
    m = build_matrix(rows, max_axis=10)
    assert m.row_level == "namespace" and [e.group for e in m.rows] == ["ns0", "ns1", "ns2"]
    assert m.col_level == "class" and [e.title for e in m.cols] == ["node:own"]
    assert sum(c.count for c in m.cells.values()) == 30


def test_services_are_one_column_whatever_node_receives_them() -> None:
    from netparity.report.sources import end_of

    info = {"kind": "service"}
    a = end_of("nodeport:web/web-admin@backend-node/client-on-it", info)
    b = end_of("nodeport:web/web-admin@other-node", info)
    assert a.key == b.key and a.group == "web" and a.label == "nodeport:web-admin"
    m = build_matrix([row(destination=a), row(id="1" * 12, destination=b)])
    assert [e.title for e in m.cols] == ["nodeport:web/web-admin"]


# --------------------------------------------------------------------------- markdown


def test_markdown_links_each_changed_probe_into_the_page_by_an_anchor_that_exists(
    written: Path,
) -> None:
    md = (written / "parity.md").read_text()
    text = page(written)
    anchors = re.findall(r"\(parity\.html#([a-z]-[0-9a-f]+)\)", md)
    # lost, gained, flaky, error, missing, accepted and the predicted changes: more than
    # MAX_ROWS, so the list is cut; what nobody predicted is listed before the predictions
    listed = re.findall(r"^\| (lost|gained|flaky|error|missing|accepted|predicted) \|", md, re.M)
    assert len(anchors) == len(listed) == MAX_ROWS
    assert listed[:5] == ["lost", "gained", "error", "flaky", "missing"]
    assert set(listed[5:]) == {"predicted"}
    assert re.search(r"… and \d+ more in \[the full report\]", md)
    for a in anchors:
        assert f'id="{a}"' in text, a
    assert md.startswith("## ❌ netparity: Parity broken · `file:aks-migration`")
    assert (
        "| same | lost | gained | predicted | flaky | error | missing | accepted | unrealized "
        "| new | not-run |" in md
    )
    counts = json.loads((written / "parity.json").read_text())["counts"]
    assert counts["predicted"] > 20 and counts["same"] > 50
    order = ("same", "lost", "gained", "predicted", "flaky", "error", "missing", "accepted")
    row = " | ".join(str(counts[k]) for k in (*order, "unrealized", "new", "not-run"))
    assert f"| {row} |" in md
    assert row.startswith(
        f"{counts['same']} | 1 | 1 | {counts['predicted']} | 1 | 1 | 1 | 1 | 1 | 0 | 1"
    )
    assert "1 was observed in the baseline and not checked now (missing: not run" in md
    assert "**1 predicted change did not happen** (unrealized)" in md
    assert "**1 probe could be run by neither run** (not-run)" in md


def test_markdown_stays_a_pull_request_comment_however_many_probes_changed(
    runs: Runs, lint: Any, tmp_path: Path
) -> None:
    report = categorized(runs, lint, tmp_path)
    many = [
        replace(r, id=f"{i:012x}", status="lost", change="lost", category=UNEXPLAINED)
        for i, r in enumerate(report.rows * 60)
    ]
    md = render_markdown(report.with_rows(many), html="https://ci.example/artifacts/parity.html")
    assert len(md) < 20_000
    assert md.count("https://ci.example/artifacts/parity.html#p-") == MAX_ROWS
    assert f"… and {len(many) - MAX_ROWS} more" in md


def test_a_pipe_in_a_name_does_not_break_the_markdown_table(
    runs: Runs, lint: Any, tmp_path: Path
) -> None:
    report = categorized(runs, lint, tmp_path)
    rows = [replace(r, title=r.title) for r in report.rows]
    rows[0] = replace(rows[0], status="lost", category=UNEXPLAINED, rule="a|b")
    from netparity.report.sources import end_of

    rows[0] = replace(rows[0], source=end_of("ns[app=a|b]", {}))
    md = render_markdown(report.with_rows(rows))
    line = next(x for x in md.splitlines() if rows[0].id in x)
    assert line.count("|") - line.count("\\|") == 7


# --------------------------------------------------------------------------- lint.json


def test_lint_json_reads_back_as_written(lint: Any) -> None:
    assert lint_from_json(json.loads(json.dumps(lint_json(lint)))) == lint


def test_a_report_without_lint_says_how_to_get_the_fixes(runs: Runs, tmp_path: Path) -> None:
    _, parity = write_runs(runs, tmp_path)
    write_reports(parity, tmp_path)
    text = page(tmp_path)
    assert '<pre class="yaml"' not in text
    assert "pass <code>--snapshot</code> to <code>netparity report</code>" in text


# --------------------------------------------------------------------------- the CLI


def test_the_cli_regenerates_the_reports_with_the_fixes_beside_the_source(
    written: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(written / "parity.json"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / "out" / "parity.html"), str(tmp_path / "out" / "parity.md")]
    assert '<pre class="yaml"' in page(tmp_path / "out")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_the_cli_lints_a_snapshot_for_the_fixes(written: Path, tmp_path: Path) -> None:
    shutil.copy(written / "baseline.json", tmp_path / "baseline.json")  # no lint.json beside it
    args = [
        "report",
        str(tmp_path / "baseline.json"),
        "--snapshot",
        str(REPO / "examples" / "aks-migration.yaml"),
    ]
    assert main(args) == 0
    assert '<pre class="yaml"' in page(tmp_path)


def test_the_cli_refuses_a_file_that_is_neither_a_record_nor_a_parity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "lint.json"
    bad.write_text('{"kind": "netparity.lint"}')
    assert main(["report", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "is neither a netparity record nor a parity report" in err
    assert not (tmp_path / "parity.html").exists()


def test_the_cli_names_the_bad_field_of_a_broken_parity(
    written: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads((written / "parity.json").read_text())
    data["probes"][3]["status"] = "vanished"
    (tmp_path / "parity.json").write_text(json.dumps(data))
    assert main(["report", str(tmp_path / "parity.json")]) == 2
    assert "field probes[3].status: unknown status 'vanished'" in capsys.readouterr().err


def test_a_version_1_parity_is_still_reported_and_an_unknown_version_refused(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from netparity.compare import compare
    from netparity.compare_output import parity_json

    old = parity_json(compare(runs.baseline, runs.baseline, check=False))
    old["schema_version"] = 1
    for key in ("unrealized", "not-run"):
        del old["counts"][key]
    (tmp_path / "parity.json").write_text(json.dumps(old))
    assert main(["report", str(tmp_path / "parity.json")]) == 0
    assert 'data-verdict="held">Parity held</h1>' in page(tmp_path)
    old["schema_version"] = 3
    (tmp_path / "parity.json").write_text(json.dumps(old))
    assert main(["report", str(tmp_path / "parity.json")]) == 2
    assert "parity schema version 3; this netparity reads versions 1, 2" in (
        capsys.readouterr().err
    )


# --------------------------------------------------------------------------- schemas


@pytest.fixture(scope="module")
def parity_schema() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / "parity.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(SCHEMAS / "junit.xsd"))


def test_parity_json_with_every_status_validates_against_its_schema(
    written: Path, parity_schema: jsonschema.protocols.Validator
) -> None:
    data = json.loads((written / "parity.json").read_text())
    assert {p["status"] for p in data["probes"]} >= {
        "lost",
        "gained",
        "predicted",
        "accepted",
        "flaky",
        "error",
        "same",
    }
    assert list(parity_schema.iter_errors(data)) == []


def test_the_parity_schema_rejects_what_docs_records_md_forbids(
    written: Path, parity_schema: jsonschema.protocols.Validator
) -> None:
    data = json.loads((written / "parity.json").read_text())
    for path, value in (
        (("probes", 0, "status"), "vanished"),
        (("counts", "lost"), -1),
        (("exit_code",), 2),
        (("probes", 0, "undocumented"), 1),
        (("baseline", "time"), "yesterday"),
    ):
        bad = json.loads(json.dumps(data))
        target = bad
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert not parity_schema.is_valid(bad), path


def test_the_junit_schema_rejects_a_misplaced_or_nameless_element(
    junit_schema: xmlschema.XMLSchema,
) -> None:
    ok = '<testsuites><testsuite name="s" tests="1"><testcase name="a"><properties><property name="p" value="v"/></properties><failure message="m">trace</failure><system-out>x</system-out></testcase></testsuite></testsuites>'
    assert junit_schema.is_valid(ok)
    assert not junit_schema.is_valid(ok.replace('<testcase name="a">', "<testcase>"))
    assert not junit_schema.is_valid(ok.replace('tests="1"', 'tests="one"'))
    assert not junit_schema.is_valid(ok.replace("<failure", "<properties/><failure"))
    assert not junit_schema.is_valid(
        ok.replace("<testsuites>", "<suites>").replace("</testsuites>", "</suites>")
    )


@pytest.mark.parametrize("family", ["xunit1", "xunit2"])
def test_pytests_junit_with_failures_output_and_properties_validates(
    pytester: pytest.Pytester, junit_schema: xmlschema.XMLSchema, family: str
) -> None:
    pytester.makeini(f"[pytest]\njunit_family = {family}\njunit_logging = all\n")
    pytester.makepyfile(
        """
        import pytest
        def test_pass(record_property):
            record_property("netparity.probe_id", "abc123")
            print("out")
        def test_fail():
            assert 1 == 2, "no"
        @pytest.mark.xfail
        def test_xfail():
            assert False
        def test_skip():
            pytest.skip("why")
        @pytest.fixture
        def broken():
            raise RuntimeError("setup")
        def test_error(broken):
            pass
        """
    )
    result = pytester.runpytest("--junitxml=junit.xml")
    result.assert_outcomes(passed=1, failed=1, xfailed=1, skipped=1, errors=1)
    junit_schema.validate(str(pytester.path / "junit.xml"))


# --------------------------------------------------------------------------- a pytest run


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`pytest suites/` before (npm) and after (cilium) on a snapshot file; the report folder."""
    tmp = tmp_path_factory.mktemp("suites")
    snapshot = tmp / "demo.yaml"
    shutil.copy(REPO / "examples" / "aks-migration.yaml", snapshot)
    reports = tmp / "reports"
    for cluster in (f"file:{snapshot}", f"file:{snapshot}@cilium"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "suites/",
                "--cluster",
                cluster,
                "--report-dir",
                str(reports),
                "-p",
                "no:cacheprovider",
                "-q",
                "--tb=no",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
        assert "report: " in done.stdout and "not written" not in done.stdout, done.stdout[-2000:]
    yield reports / cluster_dirname(file_cluster_name(snapshot))


def test_a_pytest_run_writes_every_report_into_the_cluster_folder(suite_runs: Path) -> None:
    names = {p.name for p in suite_runs.iterdir()}
    assert {
        "baseline.json",
        "parity.json",
        "parity.html",
        "parity.md",
        "lint.json",
        "junit-pre.xml",
        "junit-post.xml",
    } <= names
    assert not [n for n in names if n.startswith(".")]
    text = page(suite_runs)
    assert 'data-verdict="broken">Parity broken</h1>' in text
    assert '<a class="file" href="junit-post.xml">' in text and '<pre class="yaml"' in text


def test_the_runs_junit_is_schema_valid_named_by_phase_with_every_probe_property(
    suite_runs: Path, junit_schema: xmlschema.XMLSchema
) -> None:
    parity = json.loads((suite_runs / "parity.json").read_text())
    for phase in ("pre", "post"):
        path = suite_runs / f"junit-{phase}.xml"
        junit_schema.validate(str(path))
        tree: Any = junit_schema.to_dict(str(path))
        (suite,) = tree["testsuite"]
        assert suite["@name"] == f"netparity-{phase}"
        cases = [c for c in suite["testcase"] if "properties" in c]
        probe_cases = [
            c
            for c in cases
            if any(p["@name"] == "netparity.probe_id" for p in c["properties"]["property"])
        ]
        assert len(probe_cases) == len([p for p in parity["probes"] if p["status"] != "missing"])
        for c in probe_cases:
            names = {p["@name"] for p in c["properties"]["property"]}
            assert {
                "netparity.probe_id",
                "netparity.source",
                "netparity.destination",
                "netparity.port",
                "netparity.protocol",
                "netparity.path_kind",
                "netparity.observed",
                "netparity.baseline",
                "netparity.predicted",
                "netparity.scenario",
            } <= names
    post_tree: Any = junit_schema.to_dict(str(suite_runs / "junit-post.xml"))
    post = post_tree["testsuite"][0]
    assert int(post["@failures"]) == sum(1 for p in parity["probes"] if p["failed"])


def test_the_runs_parity_json_validates_against_its_schema(
    suite_runs: Path, parity_schema: jsonschema.protocols.Validator
) -> None:
    assert (
        list(parity_schema.iter_errors(json.loads((suite_runs / "parity.json").read_text()))) == []
    )


def test_an_explicit_junitxml_keeps_its_path_and_gets_the_phase_as_suite_name(
    suite_runs: Path, tmp_path: Path
) -> None:
    snapshot = suite_runs.parent.parent / "demo.yaml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "suites/",
            "--cluster",
            f"file:{snapshot}@cilium",
            "--report-dir",
            str(tmp_path / "r"),
            "--phase",
            "pre",
            "--junitxml",
            str(tmp_path / "mine.xml"),
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert 'name="netparity-pre"' in (tmp_path / "mine.xml").read_text()
    assert not list((tmp_path / "r").rglob("junit-*.xml"))


def test_probes_only_in_one_run_are_new_or_missing_in_the_table_and_the_matrix(
    runs: Runs, tmp_path: Path
) -> None:
    from netparity.compare import compare
    from netparity.compare_output import parity_json
    from netparity.record import write_json_atomic

    kept = runs.baseline.probes[5:]
    baseline = replace(
        runs.baseline, probes=kept, plan=replace(runs.baseline.plan, digest="0" * 16)
    )
    current = replace(runs.current, probes=runs.current.probes[:-3])
    parity = compare(baseline, current)
    # 3 probes left out of the current record, and the one its backend could not run
    assert parity.counts["new"] == 5 and parity.counts["missing"] == 3 + 1
    write_json_atomic(tmp_path / "parity.json", parity_json(parity))
    write_reports(tmp_path / "parity.json", tmp_path)
    text = page(tmp_path)
    assert re.search(r'data-status="new"[^>]*><b>5</b>', text)
    assert re.search(r'data-status="missing"[^>]*><b>4</b>', text)
    assert "the plan changed since the baseline" in text
    matrix = text[
        text.index('<table class="mx"') : text.index("</table>", text.index('<table class="mx"'))
    ]
    assert 'class="k b-none a-' in matrix or 'a-none"' in matrix
