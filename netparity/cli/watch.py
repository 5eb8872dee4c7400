"""`netparity watch --cluster NAME`: probe the sentinel set every interval while a lab
(`lab upgrade --rolling` beside it) or a Kubernetes cluster is migrated, and write
timeline.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from netparity.cli._common import KUBECONFIG_HELP
from netparity.watch.sentinels import DEFAULT_MAX_SENTINELS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "watch",
        help="probe the sentinel set every interval during a migration; write timeline.json",
    )
    p.add_argument("--cluster", required=True, help="lab:NAME, or a kubeconfig context")
    p.add_argument("--kubeconfig", metavar="PATH", help=KUBECONFIG_HELP)
    p.add_argument(
        "--probe-image",
        default=None,
        metavar="IMAGE",
        help="Kubernetes: the probe pods' image (default: the suites' default)",
    )
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="(default: 2)")
    p.add_argument(
        "--until-stable",
        action="store_true",
        help="stop once the target dataplane enforces and every sentinel has its target "
        "prediction for 3 rounds in a row",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Kubernetes: seconds a new probe pod waits before it is probed (default: 5)",
    )
    p.add_argument(
        "--max-duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long (Kubernetes: default 7200; the probe pods' deadline is "
        "this plus 300 s)",
    )
    p.add_argument("--report-dir", type=Path, default=Path("reports"), metavar="DIR")
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="FILE",
        help="the pre run's record (default: DIR/<cluster>/baseline.json if it exists)",
    )
    p.add_argument("--probes", type=Path, action="append", default=[], metavar="FILE")
    p.add_argument(
        "--max-sentinels",
        type=int,
        default=DEFAULT_MAX_SENTINELS,
        metavar="N",
        help=f"(default: {DEFAULT_MAX_SENTINELS})",
    )
    p.add_argument("--target", default="cilium", help="without a baseline (default: cilium)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per probe (default: 1)")
    p.set_defaults(func=cmd_watch)


def cmd_watch(args: argparse.Namespace) -> int:
    from netparity.watch.run import WatchSettings, watch

    settings = WatchSettings(
        cluster=args.cluster,
        interval=args.interval,
        until_stable=args.until_stable,
        max_duration=args.max_duration,
        report_dir=args.report_dir,
        baseline=args.baseline,
        probes=tuple(args.probes),
        max_sentinels=args.max_sentinels,
        target=args.target,
        probe_timeout=args.timeout,
        kubeconfig=args.kubeconfig,
        probe_image=args.probe_image,
        settle=args.settle,
    )
    path = watch(
        settings, say=lambda m: print(f"netparity watch: {m}", file=sys.stderr, flush=True)
    )
    print(path)
    return 0
