"""`netparity snapshot --cluster NAME -o FILE`: dump a live cluster for offline work."""

from __future__ import annotations

import argparse
import sys

import yaml

from netparity.cli._common import add_cluster_arguments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "snapshot",
        help="read a live cluster's policy-relevant objects into a YAML file",
        description=(
            "Read namespaces, pods, nodes, Services, NetworkPolicies, Cilium policies and the "
            "enforcement ConfigMaps of a cluster (read only) and write them as one `kind: List` "
            "YAML file that every other command accepts."
        ),
    )
    add_cluster_arguments(p)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="where to write the YAML ('-': stdout)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # the Kubernetes client loads only here: `netparity lint` and the others start faster
    from netparity.kube.backend import KubeBackend
    from netparity.kube.read import as_list_document

    backend = KubeBackend(args.cluster, kubeconfig=args.kubeconfig)
    try:
        if args.output == "-":
            snap = backend.snapshot()
            objs = backend.objects()
            yaml.safe_dump(as_list_document(objs), sys.stdout, sort_keys=False, allow_unicode=True)
        else:
            snap = backend.write_snapshot(args.output)
            print(f"wrote {args.output}: {snap.summary()}", file=sys.stderr)
    finally:
        backend.close()
    return 0
