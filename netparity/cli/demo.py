"""`netparity demo`: the whole migration on a local lab, in under a minute.

Builds the lab from the example under npm, runs the suites (pre: the baseline), upgrades
the lab to cilium (every pod recreated with a new IP, as `az aks update` does), runs the
suites again (post: the parity gate), explains the result and tears the lab down, also
on Ctrl-C, SIGTERM or SIGHUP (its pytest runs are interrupted too). The whole run holds
the lab: a second demo of the same name is refused, naming this one. Exit 0 when the pre
run passed and every post failure is a change the engine predicted; else 1 (the pre run
disagreeing with the engine, a change nobody predicted, a flaky, failed or missing probe,
any other failing item), saying which phase failed and why.

`--backend kubernetes` runs the same migration through the lab's Kubernetes API
(netparity/cli/demo_api.py): the suites use the context netparity-lab-NAME from the lab's
outside host, and the probes that path did not run are listed with their reasons.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from netparity import interrupts
from netparity.cli import demo_api
from netparity.cli.demo_api import Route
from netparity.engine.dataplane import CURRENT, NEWEST_TARGET, TARGETS
from netparity.errors import ClusterError
from netparity.example import suites_path
from netparity.outdir import check_output_dir
from netparity.record import cluster_dirname
from netparity.run.explain import explain_parity as _explain  # noqa: F401  (its old name here)
from netparity.run.explain import explain_post
from netparity.session import DEFAULT_EXAMPLE, lab_is_up

DEMO_LAB = "demo"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help=f"the migration on a local lab: baseline under {CURRENT}, upgrade to "
        f"{NEWEST_TARGET}, parity (root)",
    )
    p.add_argument(
        "--name", default=DEMO_LAB, help=f"the lab's name (default: {DEMO_LAB}; removed at the end)"
    )
    p.add_argument("--target", default=NEWEST_TARGET, choices=list(TARGETS))
    p.add_argument(
        "--backend",
        choices=("lab", "kubernetes"),
        default="lab",
        help="lab (default): the suites drive the lab itself (--cluster lab:NAME); kubernetes: "
        "through the lab's Kubernetes API (lab up --api, --cluster netparity-lab-NAME from the "
        "lab's outside host), the path a run against AKS takes (docs/lab-api.md)",
    )
    p.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="with --backend kubernetes: the kubeconfig the context netparity-lab-NAME is "
        "added to for the demo and removed from at its end (default: $KUBECONFIG's first "
        "file, else ~/.kube/config)",
    )
    p.add_argument(
        "--report-dir",
        default="reports",
        metavar="DIR",
        help="where the reports go (default reports/)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave the lab up at the end (netparity lab down removes it)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for another process holding the lab (default: refuse at once)",
    )
    p.add_argument(
        "pytest_args",
        nargs="*",
        metavar="PYTEST_ARG",
        help="extra pytest arguments for both runs (after --), e.g. -- -n 4",
    )
    p.set_defaults(func=run)


def _say(text: str) -> None:
    print(
        f"\n\033[1mnetparity demo:\033[0m {text}"
        if sys.stdout.isatty()
        else f"\nnetparity demo: {text}",
        flush=True,
    )


def _pytest(args: list[str], route: Route) -> int:
    """Run the suites as a subprocess with live output (the same command a user types, in
    the route's network namespace); on Ctrl-C or SIGTERM it is interrupted too, and nothing
    it started outlives it."""
    suites = suites_path()  # suites/ of a checkout, or the package data of a wheel
    cmd = [sys.executable, "-m", "pytest", "-p", "netparity.plugin", str(suites), *args]
    print("$ " + " ".join([*route.prefix, "pytest", *cmd[3:]]), flush=True)
    env = dict(route.env or os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return interrupts.run_child([*route.prefix, *cmd], cwd=suites.parent, env=env)


def run(args: argparse.Namespace) -> int:
    from netparity.lab.build import changing, check_lab_name
    from netparity.lab.state import UPGRADER

    if os.geteuid() != 0:
        raise ClusterError("the demo builds a lab of network namespaces and needs root")
    # The whole run holds the lab as its changer: a second demo, `lab up`, `lab down` or
    # `lab upgrade` of this lab is refused (naming this process) until it ends, while its
    # own pytest runs hold it as users beside it (docs/faults.md).
    with changing(check_lab_name(args.name), kind=UPGRADER, wait=args.wait, edit=False):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from netparity.lab import StderrProgress, up
    from netparity.model.snapshot import load_snapshot

    name: str = args.name
    api = args.backend == "kubernetes"
    report_dir = Path(args.report_dir).resolve()
    cluster = demo_api.cluster(name) if api else f"lab:{name}"
    folder = report_dir / cluster_dirname(cluster)
    check_output_dir(folder, "the demo's report folder (--report-dir)")
    started = time.monotonic()
    code = 1
    try:
        _clear_leftovers(name, args.wait)
        _say(
            f"no snapshot given: building lab {name} from the shipped example {DEFAULT_EXAMPLE} under {CURRENT}"
        )
        progress = StderrProgress(name)
        up(load_snapshot([str(DEFAULT_EXAMPLE)]), name=name, dataplane=CURRENT, progress=progress)
        progress.finish()
        route = demo_api.start(name, args.kubeconfig, _say) if api else Route(cluster=cluster)
        code = _migrate(args, route, _common(route.cluster, report_dir, args), folder)
        return code
    except KeyboardInterrupt:
        _say(f"interrupted ({signal.Signals(interrupts.interrupt_signal()).name})")
        code = interrupts.exit_code()
        return code
    finally:
        if args.keep:
            _say(f"lab {name} is still up: `netparity lab down --name {name}` removes it")
        else:
            _remove(name, args.wait, api)
        elapsed = time.monotonic() - started
        _say(f"reports in {folder} ({elapsed:.0f}s); exit {code}")


def _common(cluster: str, report_dir: Path, args: argparse.Namespace) -> list[str]:
    """The pytest arguments of both runs."""
    return [
        *("--cluster", cluster, "--target", args.target, "--report-dir", str(report_dir)),
        *("-p", "no:cacheprovider", "--tb=no", "-rfE"),
        *args.pytest_args,
    ]


def _clear_leftovers(name: str, wait: float) -> None:
    from netparity.lab import down

    if demo_api.stop(name):
        _say(f"the API server of lab {name} was left from an earlier run: stopped it")
    if lab_is_up(name) or lab_left(name):
        _say(f"a lab named {name} is left from an earlier run: removing it first")
        down(name, wait=wait)


def _migrate(args: argparse.Namespace, route: Route, common: list[str], folder: Path) -> int:
    """pre, upgrade, post and the explanation: the demo's exit code."""
    from netparity.lab import StderrProgress, upgrade

    name = args.name
    _say("1/2 before the upgrade: probe every planned connection and record the baseline")
    failures: list[str] = []
    pre = _pytest([*common, "--phase", "pre", "--force"], route)
    if pre not in (0, 1):
        _say(f"the pre run stopped with exit code {pre}")
        return 1
    if pre == 1:
        failures.append(
            "the pre run failed: the lab disagrees with the engine (or with a probe file) "
            "before the upgrade, so the baseline is not trustworthy"
        )
        _say(f"{failures[-1]} (above); the demo goes on, and exits 1")

    _say(f"upgrading lab {name} to {args.target} (every pod recreated with a new IP)")
    progress = StderrProgress(name)
    upgrade(name, args.target, progress=progress)
    progress.finish()
    if route.api:
        demo_api.shown(name)  # the API shows the new pods and the cilium DaemonSet

    _say("2/2 after the upgrade: the same probes, compared with the baseline")
    post = _pytest([*common, "--phase", "post"], route)
    parity_file = folder / "parity.json"
    if post not in (0, 1) or not parity_file.is_file():
        _say(f"the post run stopped with exit code {post} and wrote no parity report")
        return 1
    failures.extend(_post_failures(folder, parity_file, post))
    not_run = demo_api.not_run_lines(folder)
    if not_run:
        _say("not run on this path (nobody checked these connections here)")
        for line in not_run:
            print(line)
    if failures:
        _say("FAILED: " + "; ".join(failures))
    return 1 if failures else 0


def _post_failures(folder: Path, parity_file: Path, post: int) -> list[str]:
    """Explain the post run (parity.json, its JUnit XML); why it fails the demo, if it does."""
    parity = json.loads(parity_file.read_text(encoding="utf-8"))
    lines, failures = explain_post(parity, folder / "junit-post.xml", post)
    _say("what changed")
    for line in lines:
        print(line)
    return failures


def lab_left(name: str) -> bool:
    """Is anything of lab `name` left (a half-built lab, namespaces without a state)?"""
    from netparity.lab.build import netns_prefix
    from netparity.lab.netns import list_netns
    from netparity.lab.state import state_path

    return state_path(name).exists() or bool(list_netns(netns_prefix(name)))


def _remove(name: str, wait: float, api: bool = False) -> None:
    from netparity.lab import down
    from netparity.lab.state import LabBusy

    for _ in range(2):  # a second Ctrl-C during the removal: remove again
        try:
            if api and demo_api.stop(name):  # first: it removes the run's pods, its context
                _say(f"the API server of lab {name} stopped; its context removed")
            down(name, wait=max(wait, 10.0))
        except KeyboardInterrupt:
            continue
        except LabBusy as e:
            _say(f"{e}; lab {name} is left up: `netparity lab down --name {name}` removes it")
            return
        _say(f"lab {name} removed")
        return
