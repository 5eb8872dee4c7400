"""Write parity.html and parity.md for a record or a parity.json (atomically, like records).

`write_reports(source, out_dir)` is what `netparity report` and the pytest hook call; the
lint's findings come from the caller, or from `lint.json` beside the source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from netparity.report.html import render_html
from netparity.report.lintdata import LINT_FILE, LintView, categorize, load_lint
from netparity.report.markdown import render_markdown
from netparity.report.model import Report
from netparity.report.sources import load_report
from netparity.report.timeline import TIMELINE_FILE, with_timeline

HTML_FILE = "parity.html"
MD_FILE = "parity.md"
# Files beside the report that the page links to, where they exist.
LINKED = ("parity.md", "parity.json", "baseline.json", LINT_FILE, TIMELINE_FILE)


def write_text_atomic(path: Path, text: str) -> None:
    """A temporary file beside `path`, fsync, then a rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _links(out_dir: Path) -> dict[str, str]:
    links = {name: name for name in LINKED if (out_dir / name).is_file() or name == MD_FILE}
    for junit in sorted(out_dir.glob("junit-*.xml")):
        links[junit.name] = junit.name
    return links


def write_report(
    report: Report,
    out_dir: Path,
    *,
    lint: LintView | None = None,
    html_url: str | None = None,
    links: Mapping[str, str] | None = None,
) -> list[Path]:
    """Both files for a report already read; returns their paths (HTML first)."""
    report = report.with_rows(categorize(report.rows, lint))
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / HTML_FILE, out_dir / MD_FILE
    md = render_markdown(report, html=html_url or HTML_FILE, lint=lint)
    files = dict(links) if links is not None else _links(out_dir)
    html, md = with_timeline(render_html(report, lint=lint, files=files), md, out_dir)  # watch
    write_text_atomic(md_path, md)
    write_text_atomic(html_path, html)
    return [html_path, md_path]


def write_reports(
    source: Path,
    out_dir: Path,
    *,
    lint: LintView | None = None,
    lint_file: Path | None = None,
    html_url: str | None = None,
) -> list[Path]:
    """parity.html and parity.md in `out_dir` for a record or a parity.json.

    The fixes shown come from `lint`, else from `lint_file`, else from lint.json beside
    the source (where a pytest run wrote it). Raises RecordError for a file that is
    neither a record nor a parity report."""
    report = load_report(source)
    if lint is None:
        candidate = lint_file or source.parent / LINT_FILE
        if lint_file is not None or candidate.is_file():
            lint = load_lint(candidate)
    return write_report(report, out_dir, lint=lint, html_url=html_url)
