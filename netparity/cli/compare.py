"""`netparity compare BASELINE CURRENT`: the parity of two records, offline, with the gate's exit code.

Exit 0 when parity held, 1 when something changed that nobody accepted (including
predicted changes, flaky probes and errors), 2 when the input cannot be used (a record of
another cluster or plan version, a malformed accept file).
"""

from __future__ import annotations

import argparse

from netparity.accept import load_accept
from netparity.cli._common import print_json
from netparity.compare import compare
from netparity.compare_output import parity_json, render_text
from netparity.record import load_record


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compare",
        help="compare a baseline record with a later record (exit 0 parity, 1 changes, 2 bad input)",
    )
    p.add_argument("baseline", metavar="BASELINE", help="the baseline record (baseline.json)")
    p.add_argument("current", metavar="CURRENT", help="a later record (record-post-*.json)")
    p.add_argument(
        "--accept", metavar="FILE", help="accept file: a YAML list of {id, reason} entries"
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    accepts = load_accept(args.accept) if args.accept else {}
    baseline = load_record(args.baseline)
    current = load_record(args.current)
    parity = compare(baseline, current, accepts=accepts)
    if args.format == "json":
        print_json(parity_json(parity, baseline_path=args.baseline, current_path=args.current))
    else:
        print(render_text(parity))
    return parity.exit_code
