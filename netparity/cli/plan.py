"""`netparity plan`: the probes the suites run, with predictions and coverage."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

from netparity.cli._common import (
    KUBECONFIG_HELP,
    add_migration_arguments,
    add_snapshot_arguments,
    collector_paused,
    print_json,
    snapshot_from_args,
    table,
)
from netparity.engine.dataplane import CURRENT, NEWEST_TARGET
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
        current_default=CURRENT,
        current_help=f"the dataplane the cluster runs now (default: {CURRENT})",
        target_help=f"the dataplane it moves to (default: {NEWEST_TARGET})",
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
    p.add_argument(
        "--cluster",
        metavar="CONTEXT",
        help="plan for a live cluster (a kubeconfig context, or in-cluster) instead of SNAPSHOT "
        "files, and say what a run there would create, exec and take; reads only, creates "
        "nothing",
    )
    p.add_argument("--kubeconfig", metavar="PATH", help=KUBECONFIG_HELP)
    p.add_argument(
        "--kube-qps",
        metavar="N",
        type=float,
        help="with --cluster: the most API requests a second (default 20)",
    )
    p.add_argument(
        "--probe-timeout",
        metavar="SECONDS",
        type=float,
        default=2.0,
        help="with --cluster: the probe timeout the run would use, for its time estimate "
        "(default %(default)g)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr: classes built, rules planned, probes predicted "
        "(default: when stderr is a terminal)",
    )
    p.set_defaults(func=run, exit_fast=True)  # nothing to tear down: cli.entry


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
    if args.cluster:
        if args.snapshot:
            raise InputError(
                "give SNAPSHOT files or --cluster, not both (--cluster reads the cluster)",
                field="--cluster",
            )
        return _run_on_cluster(args)
    with collector_paused():
        plan = _plan(args, snapshot_from_args(args, command="plan"))
        _show(args, plan)
    return 0


def _run_on_cluster(args: argparse.Namespace) -> int:
    """Plan from a read of the cluster and say what a run would cost: creates nothing."""
    from netparity.backend import Target
    from netparity.kube.backend import KubeBackend
    from netparity.plan.essential_probes import essential_check

    kube = KubeBackend(
        args.cluster, kubeconfig=args.kubeconfig, dataplane=args.current, kube_qps=args.kube_qps
    )
    try:  # read only: nothing is created, so closing removes nothing
        plan = _plan(args, kube.snapshot())
        targets = [
            Target(id=p.id, traffic=p.traffic, check=essential_check(p)) for p in plan.probes
        ]
        cost = kube.cost(targets, timeout=args.probe_timeout)
        name = kube.kube.name
        read = kube.kube.requests.summary()
    finally:
        kube.close()
    _show(args, plan)
    line = f"a run on {name} {cost.line()} (nothing was created; reading the cluster took {read})"
    print(line, file=sys.stderr if args.format == "json" else sys.stdout)
    return 0


def _plan(args: argparse.Namespace, snapshot: Snapshot) -> Plan:
    from netparity.kube.detect import resolved_target

    # `--target cilium` means the release the snapshot's DaemonSet runs (#20)
    args.target, said = resolved_target(args.target, snapshot)
    if said is not None:
        print(said, file=sys.stderr)
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
        with gc_paused():
            return _make_plan(args, snapshot, explicit, responder, progress)
    finally:
        if progress is not None:
            progress.finish()


def _show(args: argparse.Namespace, plan: Plan) -> None:
    if args.format == "json":
        print_json(plan_json(plan))
        return
    headers = ["ID", "TITLE", "INTENT", "SCENARIO", "RULE", f"{plan.current} -> {plan.target}"]
    print(table(headers, table_rows(plan)))
    print()
    print("\n".join(summary(plan)))
