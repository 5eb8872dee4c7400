"""`netparity report RECORD|PARITY --out DIR`: parity.html and parity.md from stored files.

A record (before the upgrade) gives the pre-migration report: what was observed and what
the engine predicts the target dataplane will change; a parity.json gives the parity
report. The fixes come from `--lint FILE`, from `--snapshot` (linted here), or from the
lint.json the pytest run left beside the source.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from netparity.engine.dataplane import NEWEST_TARGET, TARGETS
from netparity.errors import InputError
from netparity.outdir import check_output_dir


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="write parity.html and parity.md from a record or a parity.json",
    )
    p.add_argument(
        "source",
        metavar="RECORD|PARITY",
        help="a record (baseline.json, record-*.json) or a parity.json",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where to write parity.html and parity.md (default: the source's folder)",
    )
    p.add_argument(
        "--lint",
        metavar="FILE",
        help="the lint.json whose fixes to show (default: lint.json beside the source)",
    )
    p.add_argument(
        "--snapshot",
        metavar="SNAPSHOT",
        action="append",
        default=[],
        help="lint this snapshot (YAML files or folders) for the fixes instead; may repeat",
    )
    p.add_argument(
        "--target",
        metavar="|".join(TARGETS),
        help="the dataplane --snapshot is linted for (default: the report's own target)",
    )
    p.add_argument(
        "--html-url",
        metavar="URL",
        help="where readers of parity.md find parity.html (e.g. a CI artifact URL); "
        "default: parity.html beside it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from netparity.report.lintdata import LintView, lint_view
    from netparity.report.sources import load_report
    from netparity.report.write import write_report

    source = Path(args.source)
    if args.lint and args.snapshot:
        raise InputError("give either --lint or --snapshot, not both", field="--lint")
    report = load_report(source)
    out = Path(args.out) if args.out else source.parent
    check_output_dir(out, "the report folder (--out)")
    lint: LintView | None = None
    if args.snapshot:
        from netparity.lint import lint_snapshot
        from netparity.model.snapshot import load_snapshot

        target = args.target or (report.after if report.after in TARGETS else NEWEST_TARGET)
        if target not in TARGETS:
            raise InputError(
                f"{target!r} is not a target dataplane (expected {' or '.join(TARGETS)})",
                field="--target",
            )
        lint = lint_view(lint_snapshot(load_snapshot(args.snapshot), target=target))
    else:
        from netparity.report.lintdata import LINT_FILE, load_lint

        candidate = Path(args.lint) if args.lint else source.parent / LINT_FILE
        if args.lint or candidate.is_file():
            lint = load_lint(candidate)
    for path in write_report(report, out, lint=lint, html_url=args.html_url):
        print(path)
    return 0
