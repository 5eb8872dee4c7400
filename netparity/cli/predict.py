"""`netparity predict`: the engine's verdict for each explicit probe under one dataplane."""

from __future__ import annotations

import argparse
from typing import Any

from netparity.cli._common import (
    add_snapshot_arguments,
    collector_paused,
    print_json,
    snapshot_from_args,
    table,
)
from netparity.engine.dataplane import CURRENT, DATAPLANES, get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import DirectionResult, Verdict
from netparity.probefile import ResolvedProbe, load_probe_file, resolve_probes


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("predict", help="predict each probe's verdict under a dataplane")
    add_snapshot_arguments(p)
    p.add_argument(
        "--probes", required=True, metavar="FILE", help="explicit probe file (see docs/probes.md)"
    )
    p.add_argument(
        "--dataplane",
        default=CURRENT,
        choices=list(DATAPLANES),
        help=f"enforcement model (default: {CURRENT})",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run, exit_fast=True)  # nothing to tear down: cli.entry


def _side_json(side: DirectionResult | None) -> dict[str, Any] | None:
    """One direction of a verdict (egress or ingress), or None where it was not judged."""
    if side is None:
        return None
    return {
        "decision": str(side.decision),
        "reason": side.reason,
        "selected_by": list(side.selected_by),
        "rules": [str(r) for r in side.rules],
    }


def verdict_json(probe: ResolvedProbe, verdict: Verdict) -> dict[str, Any]:
    spec = probe.spec
    return {
        "from": spec.source,
        "to": spec.destination,
        "port": spec.port,
        "protocol": str(spec.protocol),
        "verdict": str(verdict.decision),
        "path": str(verdict.path),
        "backend": verdict.backend,
        "resolved_port": verdict.port,
        "explanation": verdict.explanation,
        "egress": _side_json(verdict.egress),
        "ingress": _side_json(verdict.ingress),
        "uncertain": list(verdict.uncertain),
    }


def run(args: argparse.Namespace) -> int:
    with collector_paused():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    snapshot = snapshot_from_args(args, command="predict")
    dataplane = get_dataplane(args.dataplane).with_config(snapshot.config)
    probes = resolve_probes(load_probe_file(args.probes), snapshot)
    engine = Engine(snapshot)
    failed = 0
    out: list[dict[str, Any]] = []
    rows = []
    for probe in probes:
        verdict = engine.evaluate(probe.traffic, dataplane)
        expected = probe.spec.expected(dataplane.name)
        ok = expected is None or expected == verdict.decision
        failed += not ok
        if args.format == "json":
            item = verdict_json(probe, verdict)
            item["expect"] = None if expected is None else str(expected)
            item["ok"] = ok
            out.append(item)
            continue
        mark = "" if expected is None else ("ok" if ok else f"EXPECTED {expected}")
        rows.append(
            [
                probe.spec.source,
                probe.spec.destination,
                f"{probe.spec.port}/{probe.spec.protocol}",
                str(verdict.decision),
                mark,
                verdict.explanation,
            ]
        )
    if args.format == "json":
        print_json(out)
    else:
        print(table(["FROM", "TO", "PORT", "VERDICT", "EXPECT", "EXPLANATION"], rows))
        print(
            f"\n{len(probes)} probes under {dataplane.name}: {failed} disagree with their expectation"
        )
    return 1 if failed else 0
