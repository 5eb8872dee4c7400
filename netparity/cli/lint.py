"""`netparity lint`: the pre-migration lint, with checked fixes written to a folder."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from netparity.cli._common import (
    add_snapshot_arguments,
    collector_paused,
    default_target,
    snapshot_from_args,
)
from netparity.engine.dataplane import NEWEST_TARGET, TARGETS, older_release
from netparity.lint.findings import Brief, LintReport
from netparity.lint.lint import lint_brief
from netparity.lint.output import (
    MAX_TEXT_TRAFFIC,
    exit_code,
    render_junit,
    render_text,
    write_fix_dir,
    write_json,
)
from netparity.lint.parallel import MAX_JOBS
from netparity.model.snapshot import Snapshot

OLDER_TARGET = older_release(NEWEST_TARGET) or NEWEST_TARGET


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lint",
        help="find the policies and Services whose verdicts change from NPM to Cilium",
        description="Evaluate what every NetworkPolicy and NodePort/LoadBalancer Service "
        "governs under npm and under the target; report each change (exit 1) with a fix "
        "checked against the engine. Exit 0: no finding and everything judged; 1: "
        "findings; 2: bad input; 3: no finding, but something was not judged.",
    )
    add_snapshot_arguments(p)
    p.add_argument(
        "--target",
        choices=TARGETS,
        default=None,
        help="the dataplane the cluster moves to (default: the Cilium AKS pairs with the "
        "nodes' Kubernetes version, cilium-1.16 for 1.31 and older; cilium where the "
        "snapshot shows no version)",
    )
    p.add_argument("--format", choices=("text", "json", "junit"), default="text")
    p.add_argument(
        "--fix-dir",
        metavar="DIR",
        help="write one YAML file per fix and an index.yaml into DIR (replaced atomically)",
    )
    p.add_argument(
        "--accept",
        metavar="FILE",
        help="accept file (the gate's: a YAML list of {id, reason}); a finding whose id it "
        "lists is accepted: left out of the findings and named in a note",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr: classes built, classes walked, Services walked, "
        "findings checked "
        "(default: when stderr is a terminal)",
    )
    p.add_argument(
        "--jobs",
        type=_jobs,
        default=None,
        metavar="N",
        help="processes the walk over pod classes and Services may use, 1 to 8 (default: 2 "
        "for 2,000 pods or more where two cores are there, else 1); the findings are the "
        "same whatever N is",
    )
    p.set_defaults(func=run, exit_fast=True)  # nothing to tear down: cli.entry


def _jobs(text: str) -> int:
    if text not in {str(n) for n in range(1, MAX_JOBS + 1)}:
        raise argparse.ArgumentTypeError(f"must be a number from 1 to {MAX_JOBS}, not {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    """The lint with Python's cycle collector paused from loading to writing, as `plan` and
    `predict` do (`collector_paused`: millions of acyclic objects, nothing for it to find)."""
    with collector_paused():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    snapshot = snapshot_from_args(args, command="lint", say_notes=False)
    notes = list(snapshot.notes)
    target = args.target
    from netparity.kube.detect import resolved_target

    # `--target cilium` (or none) means the release the snapshot's DaemonSet runs (#20)
    detected, said = resolved_target(target or NEWEST_TARGET, snapshot)
    if said is not None:
        target = detected
        notes.append(said)
    elif target is None:
        target, why = default_target(snapshot)
        notes.append(f"target {target}: {why} (--target overrides)")
    # the older release's findings come from the same pass (netparity.lint.lint.lint_pair)
    also = OLDER_TARGET if args.target is None and target == NEWEST_TARGET else None
    report, older = _lint(args, snapshot, target, also)
    if args.accept:
        report = _accept(report, args.accept)
    if also is not None:
        notes.extend(_older(report, older))
    report = replace(report, notes=(*notes, *report.notes))
    files = write_fix_dir(report, args.fix_dir) if args.fix_dir else {}
    if args.format == "json":
        write_json(report, sys.stdout, files)  # as it is made: the text can be 100s of MB
        return exit_code(report)
    if args.format == "junit":
        out = render_junit(report, files)
    else:
        out = render_text(report, files)
        if args.fix_dir:
            out += f"\nfixes written to {args.fix_dir} (see {args.fix_dir}/index.yaml)\n"
    sys.stdout.write(out)
    return exit_code(report)


def _lint(
    args: argparse.Namespace, snapshot: Snapshot, target: str, also: str | None
) -> tuple[LintReport, tuple[Brief, ...]]:
    """The lint (and the findings of a lint for `also`), progress on stderr if asked."""
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = None
    if show:
        from netparity.lab.lifecycle import StderrProgress

        progress = StderrProgress("lint", prefix="lint")
    try:
        # the text and JUnit reports show a few connections of each finding: only their
        # reasons are written (JSON has every one)
        shown = None if args.format == "json" else MAX_TEXT_TRAFFIC
        return lint_brief(
            snapshot, target=target, also=also, progress=progress, jobs=args.jobs, shown=shown
        )
    finally:
        if progress is not None:
            progress.finish()


def _accept(report: LintReport, path: str) -> LintReport:
    """The report without the findings the accept file lists (a note names each)."""
    from netparity.accept import load_accept
    from netparity.lint.cilium_findings import accepted

    kept, notes = accepted(report.findings, load_accept(path))
    return replace(report, findings=tuple(kept), notes=(*report.notes, *notes))


def _older(report: LintReport, older: tuple[Brief, ...]) -> list[str]:
    """What linting for cilium-1.16 (AKS on Kubernetes 1.31) adds, in one line."""
    seen = {f.id for f in report.findings}
    extra = [(b.kind, b.severity) for b in older if b.id not in seen]
    if not extra:
        return [f"under {OLDER_TARGET} (AKS on Kubernetes 1.31): the same findings"]
    counts: dict[str, int] = {}
    for kind, severity in extra:
        key = f"{kind} {severity}s"
        counts[key] = counts.get(key, 0) + 1
    return [
        f"under {OLDER_TARGET} (AKS on Kubernetes 1.31) also: "
        + ", ".join(f"{n} {k}" for k, n in counts.items())
        + f" (lint with --target {OLDER_TARGET} for the details)"
    ]
