"""`netparity plan`: the probes the suites run, with predictions and coverage."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

from netparity.cli._common import (
    add_migration_arguments,
    add_snapshot_arguments,
    print_json,
    snapshot_from_args,
    table,
)
from netparity.engine.traffic import DEFAULT_EXTERNAL_IP
from netparity.errors import InputError
from netparity.model.snapshot import Snapshot
from netparity.plan.addresses import parse_service_cidr
from netparity.plan.base import Progress
from netparity.plan.export import changes, plan_json, table_rows
from netparity.plan.model import Plan
from netparity.plan.planner import gc_paused, make_plan
from netparity.probefile import ProbeSpec, ResolvedProbe, load_probe_file


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="the probes for a snapshot, predicted per dataplane")
    add_snapshot_arguments(p)
    add_migration_arguments(
        p,
        current_default="npm",
        current_help="the dataplane the cluster runs now (default: npm)",
        target_help="the dataplane it moves to (default: cilium)",
    )
    p.add_argument("--probes", metavar="FILE", help="explicit probes to add (a probe file)")
    p.add_argument(
        "--external-ip",
        metavar="ADDRESS",
        default=DEFAULT_EXTERNAL_IP,
        help="the outside client's address as the cluster sees it (default %(default)s)",
    )
    p.add_argument(
        "--responder",
        metavar="ADDRESS[:PORTS]",
        help="where outside destinations go (as pytest's --responder; not checked here)",
    )
    p.add_argument(
        "--service-cidr", metavar="CIDR", help="the cluster's Service range (default: guessed)"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr: classes built, rules planned, probes predicted "
        "(default: when stderr is a terminal)",
    )
    p.set_defaults(func=run)


def summary(plan: Plan) -> list[str]:
    c = plan.coverage
    pods = sum(len(v) for v in plan.classes.values())
    changed = sum(changes(p, plan.current, plan.target) for p in plan.probes)
    lines = [
        f"{len(plan.probes)} probes for {pods} pods in {len(plan.classes)} classes"
        + (
            f", {len(plan.synthetic_services)} run-owned Services"
            if plan.synthetic_services
            else ""
        )
        + f"; plan {plan.digest}",
        f"rules: {c.rules_with_admit}/{c.rules_total} with an admit probe, "
        f"{c.rules_with_reject}/{c.rules_total} with a reject probe",
        f"scenarios present: {', '.join(c.scenarios_present) or 'none'}; "
        f"probed: {', '.join(c.scenarios_probed) or 'none'}",
        f"{changed} probes are predicted to change between {plan.current} and a target (!)",
    ]
    if c.uncovered:
        lines.append(f"{len(c.uncovered)} rules without an admit probe:")
        lines.extend(f"  {u}" for u in c.uncovered[:20])
        if len(c.uncovered) > 20:
            lines.append(f"  ... and {len(c.uncovered) - 20} more (--format json lists them)")
    return lines


def _make_plan(
    args: argparse.Namespace,
    snapshot: Snapshot,
    explicit: Sequence[ProbeSpec | ResolvedProbe],
    responder: str | None,
    progress: Progress | None,
) -> Plan:
    return make_plan(
        snapshot,
        current=args.current,
        target=args.target,
        explicit=explicit,
        external_ip=args.external_ip,
        responder=responder,
        service_cidr=parse_service_cidr(args.service_cidr) if args.service_cidr else None,
        progress=progress,
    )


def run(args: argparse.Namespace) -> int:
    with gc_paused():  # loading makes many objects and no garbage, as planning does
        snapshot = snapshot_from_args(args, command="plan")
    explicit = load_probe_file(args.probes) if args.probes else ()
    try:
        ipaddress.IPv4Address(args.external_ip)
    except ValueError:
        raise InputError(
            f"{args.external_ip!r} is not an IPv4 address", field="--external-ip"
        ) from None
    responder = None
    if args.responder:
        from netparity.kube.responder import parse_responder

        responder = parse_responder(args.responder).ip
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = None
    if show:
        from netparity.lab.lifecycle import StderrProgress

        progress = StderrProgress("plan", prefix="plan")
    try:
        plan = _make_plan(args, snapshot, explicit, responder, progress)
    finally:
        if progress is not None:
            progress.finish()
    if args.format == "json":
        print_json(plan_json(plan))
        return 0
    headers = ["ID", "TITLE", "INTENT", "SCENARIO", "RULE", f"{plan.current} -> {plan.target}"]
    print(table(headers, table_rows(plan)))
    print()
    print("\n".join(summary(plan)))
    return 0
