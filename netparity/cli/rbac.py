"""`netparity rbac --cluster NAME`: the narrowed RBAC of a run, as YAML to apply.

Reads cluster-wide (a read-only ClusterRole), detects in kube-system (named objects only),
and writes only in the namespaces the plan puts twins and Services in (a Role each).
`--cluster file:SNAPSHOT.yaml` works offline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from netparity.backend import Target
from netparity.cli._common import add_cluster_arguments, add_migration_arguments
from netparity.engine.dataplane import DATAPLANES, NEWEST_TARGET
from netparity.errors import InputError
from netparity.kube.rbac import (
    DEFAULT_SUBJECT,
    HOST_NETWORK_ROLE,
    KUBE_SYSTEM,
    manifests,
    parse_subject,
    plan_namespaces,
    render_yaml,
)
from netparity.model.snapshot import Snapshot
from netparity.plan.essential_probes import essential_check
from netparity.plan.model import Plan
from netparity.plan.planner import make_plan
from netparity.probefile import ProbeSpec, load_probe_file, resolve_probes
from netparity.session import parse_cluster


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rbac",
        help="print the narrowed RBAC a run needs (Roles only where the plan writes)",
        description=(
            "Plan the run as `pytest suites/ --cluster NAME` would and print, as YAML for "
            "`kubectl apply -f -`: a read-only ClusterRole (the snapshot, the cleanup), a "
            "kube-system Role for the dataplane detection (named objects only), and per "
            "namespace the plan needs a Role to create, exec into and delete the run's pods, "
            "Services and anchors, each bound to --subject. Cluster-wide `pods create` plus "
            "`pods/exec` reaches kube-system, which is close to cluster-admin: this is the "
            "narrower set."
        ),
    )
    add_cluster_arguments(
        p,
        metavar="NAME",
        help="kubeconfig context, in-cluster, or file:SNAPSHOT.yaml[@DATAPLANE] (offline)",
    )
    add_migration_arguments(
        p,
        current_default=None,
        current_help="the dataplane the plan starts from (default: the cluster's, npm for a file)",
        target_help="the dataplane the plan moves to (default: cilium)",
    )
    p.add_argument(
        "--probes",
        action="append",
        default=[],
        metavar="FILE",
        help="explicit probe files the run adds (repeatable), as the plugin's --probes",
    )
    p.add_argument(
        "--allow-load-balancer",
        action="store_true",
        help="as the plugin's option: the run may create LoadBalancer Services",
    )
    p.add_argument(
        "--allow-host-network",
        action="store_true",
        help="as the plugin's option: also print the opt-in cluster-wide ClusterRole "
        "netparity-host-network (namespaces create/delete, and the run's objects in the "
        "namespace it creates for its hostNetwork probe pods)",
    )
    p.add_argument(
        "--subject",
        default=DEFAULT_SUBJECT,
        metavar="KIND:NAME",
        help="who runs the suites: serviceaccount:NS/NAME, user:NAME or group:NAME "
        "(an Entra ID group's object id); default %(default)s",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the YAML here, not to stdout")
    p.set_defaults(func=run)


def _read(args: argparse.Namespace) -> tuple[Snapshot, str, str]:
    """(snapshot, the dataplane it runs, the cluster's name)."""
    spec = parse_cluster(args.cluster)
    if spec.kind == "lab":
        raise InputError(
            f"{args.cluster!r} is a lab, which has no RBAC: give a kubeconfig context or "
            "file:SNAPSHOT.yaml",
            field="--cluster",
        )
    if spec.kind == "file":
        from netparity.dryrun import SnapshotBackend

        backend = SnapshotBackend.from_spec(spec.value)
        return backend.snapshot(), backend.facts().dataplane, backend.facts().name
    from netparity.kube.backend import KubeBackend

    kube = KubeBackend(spec.value, kubeconfig=args.kubeconfig, dataplane=args.current)
    try:  # read only: nothing is created, so closing removes nothing
        return kube.snapshot(), kube.facts().dataplane, kube.kube.name
    finally:
        kube.close()


def run(args: argparse.Namespace) -> int:
    subject = parse_subject(args.subject)
    specs: list[ProbeSpec] = []
    for path in args.probes:
        specs.extend(load_probe_file(path))
    snapshot, dataplane, name = _read(args)
    current = args.current or dataplane
    if current not in DATAPLANES:
        raise InputError(
            f"the cluster's dataplane is {current!r}: name the one the plan starts from",
            field="--current",
        )
    plan = make_plan(
        snapshot,
        current=current,
        target=args.target,
        explicit=resolve_probes(specs, snapshot),
    )
    namespaces = _namespaces(snapshot, plan, args.allow_load_balancer, args.allow_host_network)
    header = [
        f"netparity rbac for cluster {name}: {len(plan.probes)} probes "
        f"({plan.current} -> {plan.target}, plan {plan.digest[:12]})",
        f"write Roles in {len(namespaces)} namespaces: {', '.join(namespaces) or 'none'}",
        "read-only cluster-wide: namespaces, nodes, pods, services, configmaps (list), "
        "networkpolicies, Cilium policies",
    ]
    if KUBE_SYSTEM in namespaces:
        header.append(
            "WARNING: the plan twins kube-system pods (such as kube-dns), so this subject may "
            "create pods in kube-system and exec into pods there; RBAC cannot limit that to "
            "netparity's own pods: review it, or run where kube-system pods are not probed"
        )
    if args.allow_host_network:
        header.append(
            f"WARNING: --allow-host-network binds the ClusterRole {HOST_NETWORK_ROLE} "
            "cluster-wide: namespaces create/delete, and pods create/delete and pods/exec in "
            "every namespace (the run's own namespace does not exist before the run, so RBAC "
            "cannot name it); with a namespace at the privileged Pod Security level this "
            "amounts to root on the nodes: bind it only for the runs that need node sources"
        )
    header.append(
        "a namespace the plan gains later (new workloads, new probes) needs this printed again"
    )
    text = render_yaml(manifests(namespaces, subject, host_network=args.allow_host_network), header)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}: {header[1]}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _namespaces(snapshot: Snapshot, plan: Plan, allow_lb: bool, allow_host: bool) -> list[str]:
    """Where a run of `plan` creates objects."""
    targets = [Target(id=p.id, traffic=p.traffic, check=essential_check(p)) for p in plan.probes]
    return plan_namespaces(
        snapshot, targets, allow_load_balancer=allow_lb, allow_host_network=allow_host
    )


def lab_rbac(snapshot: Snapshot, dataplane: str) -> str:
    """The RBAC a lab's API server enforces for the ServiceAccount of probes/rbac.yaml: what
    `netparity rbac --cluster file:SNAPSHOT` prints for the lab's snapshot (its dataplane,
    the newest target, the suites' default options)."""
    plan = make_plan(snapshot, current=dataplane, target=NEWEST_TARGET)
    namespaces = _namespaces(snapshot, plan, False, False)
    header = [f"the lab's RBAC for {DEFAULT_SUBJECT}: write Roles in {', '.join(namespaces)}"]
    return render_yaml(manifests(namespaces, parse_subject(DEFAULT_SUBJECT)), header)
