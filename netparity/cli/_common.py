"""Helpers the subcommands share: default inputs, tables, JSON output."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import shutil
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

from netparity.engine.dataplane import DATAPLANES, NEWEST_TARGET, TARGETS, older_release
from netparity.errors import InputError
from netparity.example import example_path
from netparity.model.snapshot import Snapshot, load_snapshot
from netparity.model.workloads import AKS_NODE_CIDR, AKS_POD_CIDR

# The shipped example (kept for callers; the commands use it only where they say so).
DEFAULT_EXAMPLE = example_path()
SNAPSHOT_HELP = (
    "YAML/JSON files or folders (kubectl get -o yaml, helm template, kustomize build "
    "output); - reads standard input"
)


def add_snapshot_arguments(p: argparse.ArgumentParser, *, example_default: bool = False) -> None:
    """SNAPSHOT... plus --namespace, --pod-cidr and --node-cidr (docs/lint.md, README)."""
    p.add_argument(
        "snapshot",
        nargs="*",
        metavar="SNAPSHOT",
        help=SNAPSHOT_HELP
        + (" (default: the shipped example, said so)" if example_default else " (required)"),
    )
    p.add_argument(
        "--namespace",
        default="default",
        metavar="NAME",
        help="namespace of objects that name none, as kubectl applies them (default: default)",
    )
    p.add_argument(
        "--pod-cidr",
        metavar="CIDR",
        help=f"pod range assumed where the input has no Nodes (default: {AKS_POD_CIDR}, AKS "
        "Azure CNI Overlay)",
    )
    p.add_argument(
        "--node-cidr",
        metavar="CIDR",
        help=f"node range assumed where the input has no Nodes (default: {AKS_NODE_CIDR})",
    )


KUBECONFIG_HELP = "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"


def add_cluster_arguments(
    p: argparse.ArgumentParser,
    *,
    metavar: str = "CONTEXT",
    help: str = "kubeconfig context, or in-cluster",
) -> None:
    """--cluster (required) and --kubeconfig, as every command that reads a cluster takes them."""
    p.add_argument("--cluster", required=True, metavar=metavar, help=help)
    p.add_argument("--kubeconfig", metavar="PATH", help=KUBECONFIG_HELP)


def add_migration_arguments(
    p: argparse.ArgumentParser, *, current_default: str | None, current_help: str, target_help: str
) -> None:
    """--current (a dataplane) and --target (default: the newest), as plan and rbac take them."""
    p.add_argument(
        "--current", default=current_default, choices=list(DATAPLANES), help=current_help
    )
    p.add_argument("--target", default=NEWEST_TARGET, choices=list(TARGETS), help=target_help)


# AKS pairs Kubernetes minor versions with Cilium (SEMANTICS.md 2.2): 1.31 -> 1.16.x,
# 1.32 and later -> 1.17 or later. Older Kubernetes ran older Cilium, which honours endPort
# no more than 1.16 does: the newest target's older release (cilium-1.16) is the nearest
# dataplane netparity models.


def default_target(snapshot: Snapshot) -> tuple[str, str]:
    """The target the snapshot's Kubernetes version implies, and why (one phrase)."""
    version = snapshot.kubernetes_version
    if version is None:
        return NEWEST_TARGET, "the newest: the snapshot shows no Kubernetes version"
    major, minor = (int(x) for x in version.split(".")[:2])
    if (major, minor) <= (1, 31):
        return older_release(NEWEST_TARGET) or NEWEST_TARGET, (
            f"the nodes run Kubernetes {version}, which AKS pairs with Cilium 1.16 or older"
        )
    return NEWEST_TARGET, f"the nodes run Kubernetes {version}, which AKS pairs with Cilium 1.17+"


def no_snapshot(command: str) -> InputError:
    return InputError(
        f"netparity {command} needs a snapshot: give YAML/JSON files or folders "
        f"(netparity {command} manifests/), or - for standard input "
        f"(helm template ... | netparity {command} -); to try it on the shipped example: "
        f"netparity {command} {example_path()}"
    )


def snapshot_from_args(
    paths: Sequence[str] | argparse.Namespace,
    *,
    command: str = "lint",
    example_default: bool = False,
    say_notes: bool = True,
) -> Snapshot:
    """The snapshot the arguments name. Without one: the shipped example where the command
    keeps it as its default (said so on stderr), else an InputError (exit 2). What was
    assumed about the input (nodes, addresses, namespaces) is said on stderr, one line each."""
    namespace, pod_cidr, node_cidr = "default", None, None
    if isinstance(paths, argparse.Namespace):
        args = paths
        files = list(args.snapshot)
        namespace = getattr(args, "namespace", None) or "default"
        pod_cidr = getattr(args, "pod_cidr", None)
        node_cidr = getattr(args, "node_cidr", None)
    else:
        files = list(paths)
    if not files:
        if not example_default:
            raise no_snapshot(command)
        files = [str(example_path())]
        print(
            f"netparity {command}: no snapshot given: using the shipped example {files[0]}",
            file=sys.stderr,
        )
    snap = load_snapshot(files, namespace=namespace, pod_cidr=pod_cidr, node_cidr=node_cidr)
    for note in snap.notes if say_notes else ():
        print(f"netparity {command}: {note}", file=sys.stderr)
    return snap


def wrap(text: str, width: int) -> list[str]:
    """`textwrap.wrap(text, width, break_on_hyphens=False)`, the same lines, in a greedy
    pass where the text is words between single spaces, none longer than `width` (every
    explanation is; textwrap costs `netparity predict` a second per 20,000 rows)."""
    if (
        not text
        or "  " in text
        or text[0] == " "
        or text[-1] == " "
        or not text.isprintable()  # tabs, newlines: textwrap's own handling
    ):
        return textwrap.wrap(text, width, break_on_hyphens=False)
    lines = []
    start = 0
    while len(text) - start > width:
        cut = text.rfind(" ", start, start + width + 1)  # the line: the words up to it
        if cut < 0:  # a word longer than the line: textwrap breaks it
            return textwrap.wrap(text, width, break_on_hyphens=False)
        lines.append(text[start:cut])
        start = cut + 1
    lines.append(text[start:])
    return lines


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, wrap_last: bool = True) -> str:
    """A plain-text table; the last column wraps to the terminal's width."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[:-1] if wrap_last else row):
            widths[i] = max(widths[i], len(cell))
    term = shutil.get_terminal_size((160, 24)).columns
    lines = []
    fixed = sum(widths[:-1]) + 2 * (len(headers) - 1)
    last_width = max(30, term - fixed) if wrap_last else widths[-1]

    def render(row: Sequence[str]) -> list[str]:
        head = "  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:-1]))
        text = row[-1]
        chunks = wrap(text, last_width) or [""]
        out = [f"{head}  {chunks[0]}".rstrip()]
        out += [" " * (fixed + 2) + c for c in chunks[1:]]
        return out

    lines.extend(render(headers))
    lines.append(
        "  ".join("-" * w for w in widths[:-1])
        + "  "
        + "-" * min(last_width, max(len(headers[-1]), 10))
    )
    for row in rows:
        lines.extend(render(row))
    return "\n".join(lines)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector paused for a command: loading, planning and evaluating make
    millions of objects and no cyclic garbage. At the end they join the oldest generation
    without a pass over them (freeze, unfreeze): its first pass after a pause walked them
    all (0.6 s of CPU for `plan` at 20,000 pods)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
        gc.unfreeze()


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
