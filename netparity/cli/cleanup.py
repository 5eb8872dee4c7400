"""`netparity cleanup --cluster NAME`: remove every probe object netparity left in a cluster."""

from __future__ import annotations

import argparse

from netparity.kube.backend import KubeBackend
from netparity.kube.cleanup import find_runs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cleanup",
        help="remove every netparity probe object from a cluster",
        description=(
            "Delete every pod, Service and run anchor labelled netparity.io/run, of every run. "
            "Nothing without that label is touched."
        ),
    )
    p.add_argument(
        "--cluster", required=True, metavar="CONTEXT", help="kubeconfig context, or in-cluster"
    )
    p.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list what would be removed, remove nothing"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    backend = KubeBackend(args.cluster, kubeconfig=args.kubeconfig)
    if args.dry_run:
        try:
            runs = find_runs(backend.kube)
        finally:
            backend.close()
        for _, found in sorted(runs.items()):
            print(f"would remove {found.summary()}")
        if not runs:
            print(f"{backend.kube.name}: no netparity objects")
        return 0
    removed = backend.cleanup_all()
    for line in removed:
        print(f"removed {line}")
    if not removed:
        print(f"{backend.kube.name}: no netparity objects")
    return 0
