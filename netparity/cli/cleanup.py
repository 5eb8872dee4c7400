"""`netparity cleanup --cluster NAME`: remove the probe objects of netparity runs that are over.

A run proves it is still going with its heartbeat (a Lease renewed while it runs, until its
expiry); such runs are left alone unless `--force` says otherwise."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from netparity.cli._common import add_cluster_arguments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cleanup",
        help="remove the probe objects of netparity runs that are over",
        description=(
            "Delete every pod, Service, heartbeat Lease and run anchor labelled "
            "netparity.io/run of every run that is over: its heartbeat stopped, its expiry "
            "(netparity.io/expires) passed, or it never had a heartbeat. Runs still going are "
            "left alone and listed. Nothing without that label is touched."
        ),
    )
    add_cluster_arguments(p)
    p.add_argument(
        "--dry-run", action="store_true", help="list what would be removed, remove nothing"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="remove the objects of runs that are still going too (their probes then fail)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # the Kubernetes client loads only here: `netparity lint` and the others start faster
    from netparity.kube.backend import KubeBackend
    from netparity.kube.cleanup import find_runs

    backend = KubeBackend(args.cluster, kubeconfig=args.kubeconfig)
    name = backend.kube.name
    if args.dry_run:
        try:
            runs = find_runs(backend.kube)
        finally:
            backend.close()
        now = datetime.now(UTC)
        for _, found in sorted(runs.items()):
            why = found.dead(now)
            if why is None and found.heartbeat is not None and not args.force:
                print(f"would leave alone {found.summary()}: still running ({found.alive(now)})")
            else:
                print(f"would remove {found.summary()} ({why or 'no heartbeat'})")
        if not runs:
            print(f"{name}: no netparity objects")
        return 0
    removed, kept = backend.cleanup_all(force=args.force)
    for line in removed:
        print(f"removed {line}")
    for line in kept:
        print(f"left alone {line}: still running; --force removes it")
    if not removed and not kept:
        print(f"{name}: no netparity objects")
    return 0
