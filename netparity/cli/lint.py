"""`netparity lint`: the pre-migration lint, with checked fixes written to a folder."""

from __future__ import annotations

import argparse
import sys

from netparity.cli._common import add_snapshot_arguments, snapshot_from_args
from netparity.engine.dataplane import TARGETS
from netparity.lint.lint import lint_snapshot
from netparity.lint.output import render_json, render_junit, render_text, write_fix_dir


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lint",
        help="find the policies and Services whose verdicts change from NPM to Cilium",
        description="Evaluate what every NetworkPolicy and NodePort/LoadBalancer Service "
        "governs under npm and under the target; report each change (exit 1) with a fix "
        "checked against the engine. Exit 0: no finding; 2: bad input.",
    )
    add_snapshot_arguments(p)
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="cilium",
        help="the dataplane the cluster moves to (default: cilium; AKS on Kubernetes 1.31 "
        "runs cilium-1.16)",
    )
    p.add_argument("--format", choices=("text", "json", "junit"), default="text")
    p.add_argument(
        "--fix-dir",
        metavar="DIR",
        help="write one YAML file per fix and an index.yaml into DIR (replaced atomically)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    snapshot = snapshot_from_args(args, command="lint")
    report = lint_snapshot(snapshot, target=args.target)
    files = write_fix_dir(report, args.fix_dir) if args.fix_dir else {}
    if args.format == "json":
        out = render_json(report, files)
    elif args.format == "junit":
        out = render_junit(report, files)
    else:
        out = render_text(report, files)
        if args.fix_dir:
            out += f"\nfixes written to {args.fix_dir} (see {args.fix_dir}/index.yaml)\n"
    sys.stdout.write(out)
    return 1 if report.findings else 0
