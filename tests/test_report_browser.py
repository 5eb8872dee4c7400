"""parity.html in a real browser: headless Chromium renders it, we look at what it shows.

The report of the example cluster moved from npm to cilium (records made by the
engine-backed backend, with a lost, a gained, a flaky, an error and an accepted probe
forced in) is opened from disk; the test reads the rendered page over the DevTools
protocol: the verdict at the top, the changed cells of the matrix, the probe table after
typing in its filter, after clicking a cell and after sorting, and every request the page
made. Screenshots go to the test's tmp folder. The last test does the same with the lab
demo's own report: the suites run on a lab under npm, the lab upgraded to cilium, the
suites run again (root; the lab is removed at the end).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_records import REPO, Runs, make_runs, write_runs

from netparity.lint import lint_snapshot
from netparity.report import write_reports
from netparity.report.lintdata import LINT_FILE, lint_view, write_lint

from report_chromium import Chromium

# The order of seriousness a cell's colour follows (docs/report.md).
SEVERITY = (
    "lost",
    "gained",
    "predicted",
    "error",
    "flaky",
    "missing",
    "accepted",
    "unrealized",
    "new",
    "not-run",
    "same",
)


@pytest.fixture(scope="module")
def runs() -> Runs:
    return make_runs()


@pytest.fixture(scope="module")
def folder(runs: Runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_runs(runs, out)
    write_lint(lint_view(lint_snapshot(runs.snapshot, target="cilium")), out / LINT_FILE)
    write_reports(out / "parity.json", out)
    write_reports(out / "baseline.json", out / "pre")
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    with Chromium(tmp_path_factory.mktemp("chromium")) as chromium:
        yield chromium


def title(sig: str) -> str:
    """The matrix names a Service once, whichever node receives it."""
    if sig.startswith(("nodeport:", "lb:", "svc:")):
        return sig.split("@", 1)[0]
    return sig


def ends(t: str) -> tuple[str, str]:
    src, rest = t.split(" -> ", 1)
    return title(src), title(rest.rsplit(" ", 2)[0])


def visible_rows(browser: Chromium) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = browser.eval(
        "Array.from(document.querySelectorAll('#probe-rows tr')).filter(r => !r.hidden)"
        ".map(r => ({id: r.id.slice(2), cell: r.dataset.cell, text: r.innerText,"
        " port: r.cells[4].innerText}))"
    )
    return rows


def test_the_parity_page_shows_the_verdict_the_changed_cells_and_a_working_table(
    browser: Chromium, folder: Path, runs: Runs, tmp_path: Path
) -> None:
    seconds = browser.open(folder / "parity.html")
    assert browser.eval("document.body.dataset.ready") == "1"
    browser.screenshot(tmp_path / "parity-top.png")
    browser.screenshot(tmp_path / "parity-full.png", full_page=True)
    print(f"\nloaded in {seconds:.2f}s; screenshots: {tmp_path}/parity-top.png, parity-full.png")

    # the answer, on screen without scrolling
    verdict = browser.eval(
        "(() => { const e = document.getElementById('verdict'), r = e.getBoundingClientRect();"
        " return {text: e.innerText, onScreen: r.top >= 0 && r.bottom <= innerHeight,"
        " colour: getComputedStyle(e.closest('header')).backgroundImage}; })()"
    )
    assert verdict["text"] == "Parity broken" and verdict["onScreen"]
    assert "gradient" in verdict["colour"]
    tiles = browser.eval(
        "Object.fromEntries(Array.from(document.querySelectorAll('.tile'))"
        ".map(t => [t.dataset.status, +t.querySelector('b').innerText]))"
    )
    assert tiles == dict(runs.parity.counts)
    planes = browser.eval(
        "Array.from(document.querySelectorAll('.plane .dp')).map(e => e.innerText)"
    )
    assert planes == ["npm", "cilium"]

    # the matrix: exactly the cells of changed probes are coloured, each by its worst status
    expected: dict[tuple[str, str], str] = {}
    for p in runs.parity.probes:
        key = ends(p.title)
        old = expected.get(key, "same")
        expected[key] = min(old, p.status.value, key=SEVERITY.index)
    changed = {k: v for k, v in expected.items() if v != "same"}
    cells = browser.eval(
        "Array.from(document.querySelectorAll('#mx td.c')).map(td => {"
        " const tr = td.parentElement, col = +td.dataset.cell.split('-')[1] + 1;"
        " const th = document.querySelector('#mx thead tr').cells[col];"
        " return [tr.cells[0].title, th.title, td.dataset.status, td.dataset.cell]; })"
    )
    shown = {(r, c): s for r, c, s, _ in cells if s != "same"}
    assert shown == changed
    assert len(cells) == len(expected)

    # a changed cell leads to its probes: clicking it lists exactly them in the table
    lost_cell = next(cell for r, c, s, cell in cells if s == "lost")
    browser.click(f'#mx td[data-cell="{lost_cell}"]')
    time.sleep(0.1)
    rows = visible_rows(browser)
    lost_key = next(k for k, v in changed.items() if v == "lost")
    assert sorted(r["id"] for r in rows) == sorted(
        p.id for p in runs.parity.probes if ends(p.title) == lost_key
    )
    assert runs.forced.lost in {r["id"] for r in rows}
    assert browser.eval("document.getElementById('cellfilter').hidden") is False
    browser.screenshot(tmp_path / "parity-cell.png")
    browser.click("#clearcell")

    # typing in the filter hides the rows that do not match
    total = len(runs.parity.probes)
    assert len(visible_rows(browser)) == total
    browser.type_into("#filter", "legacy-gateway")
    time.sleep(0.3)
    rows = visible_rows(browser)
    assert 0 < len(rows) < total
    assert all("legacy-gateway" in r["text"] for r in rows)
    want = [
        p.id
        for p in runs.parity.probes
        if "legacy-gateway" in p.title or "legacy-gateway" in (p.probe.rule or "")
    ]
    assert sorted(r["id"] for r in rows) == sorted(want)
    assert (
        browser.eval("document.getElementById('shown').innerText")
        == f"{len(rows)} of {total} probes"
    )
    browser.eval("document.getElementById('probes').scrollIntoView()")
    browser.screenshot(tmp_path / "parity-filtered.png")

    # status select and sorting by port, as numbers
    browser.eval("document.getElementById('filter').value = ''")
    browser.eval(
        "const s = document.getElementById('status'); s.value = '!same';"
        " s.dispatchEvent(new Event('change'))"
    )
    rows = visible_rows(browser)
    assert len(rows) == total - runs.parity.counts["same"]
    browser.click('#probe-table th[data-col="4"]')
    ports = [int(re.match(r"\d+", r["port"]).group()) for r in visible_rows(browser)]  # type: ignore[union-attr]
    assert ports == sorted(ports) and ports[0] < ports[-1]

    # the copy button puts the fix on the clipboard (or selects it where that is refused)
    browser.click("button.copy")
    time.sleep(0.2)
    assert browser.eval("document.querySelector('button.copy').innerText") in (
        "Copied",
        "Selected: press Ctrl+C",
    )

    # nothing but the file itself was fetched
    assert browser.requests() == [(folder / "parity.html").resolve().as_uri()]


def test_the_pre_migration_page_shows_the_predictions_in_chromium(
    browser: Chromium, folder: Path, runs: Runs, tmp_path: Path
) -> None:
    browser.open(folder / "pre" / "parity.html")
    browser.screenshot(tmp_path / "pre-top.png")
    flips = sum(
        1 for p in runs.plan.probes if p.predicted["npm"].decision != p.predicted["cilium"].decision
    )
    text = browser.eval("document.getElementById('verdict').innerText")
    assert text == f"{flips} probes predicted to change under cilium"
    predicted_cells = browser.eval(
        "document.querySelectorAll('#mx td.c[data-status=predicted]').length"
    )
    assert predicted_cells > 0
    browser.eval("document.getElementById('cat-node-egress').scrollIntoView()")
    browser.screenshot(tmp_path / "pre-node-egress.png")
    yaml_blocks = browser.eval(
        "Array.from(document.querySelectorAll('#cat-node-egress pre.yaml')).map(p => p.textContent)"
    )
    assert yaml_blocks and all("kind: CiliumNetworkPolicy" in y for y in yaml_blocks)
    data = json.loads(browser.eval("document.getElementById('probe-data').textContent"))
    assert len(data["rows"]) == len(runs.plan.probes)


def test_changed_probes_beyond_the_first_few_appear_on_a_click_or_a_link(
    browser: Chromium, folder: Path, runs: Runs, tmp_path: Path
) -> None:
    from netparity.report.html import render_html
    from netparity.report.lintdata import categorize, load_lint
    from netparity.report.sources import load_report

    lint = load_lint(folder / LINT_FILE)
    report = load_report(folder / "parity.json")
    report = report.with_rows(categorize(report.rows, lint))
    page = tmp_path / "capped.html"
    page.write_text(render_html(report, lint=lint, cap=2), encoding="utf-8")
    browser.open(page)
    drawn = browser.eval(
        "Array.from(document.querySelectorAll('#cat-external-ingress table.changes tbody tr'))"
        ".map(tr => tr.id.slice(2))"
    )
    assert len(drawn) == 2
    hidden = [r.id for r in report.rows if r.category == "external-ingress" and r.id not in drawn]
    assert hidden and browser.eval(f"document.getElementById('p-{hidden[-1]}') === null")
    # a link to a probe not drawn yet draws it and goes there
    browser.eval(f"location.hash = 'p-{hidden[-1]}'")
    time.sleep(0.2)
    assert browser.eval(f"document.getElementById('p-{hidden[-1]}').offsetParent !== null")
    assert browser.eval(
        "document.querySelectorAll('#cat-external-ingress table.changes tbody tr').length"
    ) == 2 + len(hidden)
    # the button of another section draws the rest of it
    browser.click("#cat-lb-in-cluster button.show-more")
    total = sum(1 for r in report.rows if r.category == "lb-in-cluster")
    assert (
        browser.eval(
            "document.querySelectorAll('#cat-lb-in-cluster table.changes tbody tr').length"
        )
        == total
    )


# --------------------------------------------------------------------------- the lab


def lab_name() -> str:
    digits, pid = "", os.getpid()
    while pid:
        pid, r = divmod(pid, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return ("r" + digits)[:8]


@pytest.fixture(scope="module")
def lab_reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The lab demo: `pytest suites/` on a lab under npm, `netparity lab upgrade` to cilium,
    `pytest suites/` again; the lab is removed at the end, also on failure."""
    if os.geteuid() != 0:
        pytest.fail("the lab report test needs root (it builds network namespaces)")
    from netparity.lab import down

    name = lab_name()
    reports = tmp_path_factory.mktemp("lab-reports")
    down(name)  # a leftover of a killed run with the same pid
    suites = [sys.executable, "-m", "pytest", "suites/", "--cluster", f"lab:{name}"]
    suites += ["--report-dir", str(reports), "-p", "no:cacheprovider", "-q", "--tb=no"]
    try:
        for step in (
            suites,
            [
                sys.executable,
                "-m",
                "netparity",
                "lab",
                "upgrade",
                "--name",
                name,
                "--dataplane",
                "cilium",
            ],
            suites,
        ):
            done = subprocess.run(step, cwd=REPO, capture_output=True, text=True, timeout=900)
            assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
        yield reports / f"lab-{name}"
    finally:
        down(name)


@pytest.mark.lab
def test_the_lab_demos_report_renders_what_its_parity_json_says(
    browser: Chromium, lab_reports: Path, tmp_path: Path
) -> None:
    parity = json.loads((lab_reports / "parity.json").read_text())
    assert parity["baseline"]["backend"] == "lab" and parity["after"] == "cilium"
    browser.open(lab_reports / "parity.html")
    browser.screenshot(tmp_path / "lab-top.png")
    browser.screenshot(tmp_path / "lab-full.png", full_page=True)
    print(f"\nscreenshots: {tmp_path}/lab-top.png, lab-full.png")
    verdict = browser.eval("document.getElementById('verdict').innerText")
    assert verdict == ("Parity held" if parity["held"] else "Parity broken")
    tiles = browser.eval(
        "Object.fromEntries(Array.from(document.querySelectorAll('.tile'))"
        ".map(t => [t.dataset.status, +t.querySelector('b').innerText]))"
    )
    assert tiles == parity["counts"]
    expected: dict[tuple[str, str], str] = {}
    for p in parity["probes"]:
        key = ends(p["title"])
        expected[key] = min(expected.get(key, "same"), p["status"], key=SEVERITY.index)
    cells = browser.eval(
        "Array.from(document.querySelectorAll('#mx td.c')).map(td => {"
        " const col = +td.dataset.cell.split('-')[1] + 1;"
        " const th = document.querySelector('#mx thead tr').cells[col];"
        " return [td.parentElement.cells[0].title, th.title, td.dataset.status]; })"
    )
    assert {(r, c): s for r, c, s in cells if s != "same"} == {
        k: v for k, v in expected.items() if v != "same"
    }
    assert parity["counts"]["predicted"] > 0  # the lab shows the guide's scenarios
    browser.type_into("#filter", "node:own")
    time.sleep(0.3)
    rows = visible_rows(browser)
    assert rows and all("node:own" in r["text"] for r in rows)
    assert len(rows) == sum(1 for p in parity["probes"] if "node:own" in p["title"])
    browser.eval("document.getElementById('probes').scrollIntoView()")
    browser.screenshot(tmp_path / "lab-filtered.png")
    assert browser.requests() == [(lab_reports / "parity.html").resolve().as_uri()]
