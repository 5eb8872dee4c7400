"""`netparity demo`: the whole migration on a local lab, in under a minute.

Builds the lab from the example under npm, runs the suites (pre: the baseline), upgrades
the lab to cilium (every pod recreated with a new IP, as `az aks update` does), runs the
suites again (post: the parity gate), explains the result and tears the lab down, also
on Ctrl-C, SIGTERM or SIGHUP (its pytest runs are interrupted too). The whole run holds
the lab: a second demo of the same name is refused, naming this one. Exit 0 when the pre
run passed and every post failure is a change the engine predicted; else 1 (the pre run
disagreeing with the engine, a change nobody predicted, a flaky, failed or missing probe,
any other failing item), saying which phase failed and why.
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


def _pytest(args: list[str]) -> int:
    """Run the suites as a subprocess with live output (the same command a user types); on
    Ctrl-C or SIGTERM it is interrupted too, and nothing it started outlives it."""
    suites = suites_path()  # suites/ of a checkout, or the package data of a wheel
    cmd = [sys.executable, "-m", "pytest", "-p", "netparity.plugin", str(suites), *args]
    print("$ " + " ".join(["pytest", *cmd[3:]]), flush=True)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return interrupts.run_child(cmd, cwd=suites.parent, env=env)


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
    from netparity.lab import StderrProgress, down, up, upgrade
    from netparity.model.snapshot import load_snapshot

    name: str = args.name
    report_dir = Path(args.report_dir).resolve()
    cluster = f"lab:{name}"
    folder = report_dir / cluster_dirname(cluster)
    check_output_dir(folder, "the demo's report folder (--report-dir)")
    common = [
        "--cluster",
        cluster,
        "--target",
        args.target,
        "--report-dir",
        str(report_dir),
        "-p",
        "no:cacheprovider",
        "--tb=no",
        "-rfE",
        *args.pytest_args,
    ]
    started = time.monotonic()
    code = 1
    try:
        if lab_is_up(name) or lab_left(name):
            _say(f"a lab named {name} is left from an earlier run: removing it first")
            down(name, wait=args.wait)
        _say(
            f"no snapshot given: building lab {name} from the shipped example {DEFAULT_EXAMPLE} under {CURRENT}"
        )
        progress = StderrProgress(name)
        up(load_snapshot([str(DEFAULT_EXAMPLE)]), name=name, dataplane=CURRENT, progress=progress)
        progress.finish()

        _say("1/2 before the upgrade: probe every planned connection and record the baseline")
        failures: list[str] = []
        pre = _pytest([*common, "--phase", "pre", "--force"])
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

        _say("2/2 after the upgrade: the same probes, compared with the baseline")
        post = _pytest([*common, "--phase", "post"])
        parity_file = folder / "parity.json"
        if post not in (0, 1) or not parity_file.is_file():
            _say(f"the post run stopped with exit code {post} and wrote no parity report")
            return 1
        failures.extend(_post_failures(folder, parity_file, post))
        if failures:
            _say("FAILED: " + "; ".join(failures))
        code = 1 if failures else 0
        return code
    except KeyboardInterrupt:
        _say(f"interrupted ({signal.Signals(interrupts.interrupt_signal()).name})")
        code = interrupts.exit_code()
        return code
    finally:
        if args.keep:
            _say(f"lab {name} is still up: `netparity lab down --name {name}` removes it")
        else:
            _remove(name, args.wait)
        elapsed = time.monotonic() - started
        _say(f"reports in {folder} ({elapsed:.0f}s); exit {code}")


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


def _remove(name: str, wait: float) -> None:
    from netparity.lab import down
    from netparity.lab.state import LabBusy

    for _ in range(2):  # a second Ctrl-C during the removal: remove again
        try:
            down(name, wait=max(wait, 10.0))
        except KeyboardInterrupt:
            continue
        except LabBusy as e:
            _say(f"{e}; lab {name} is left up: `netparity lab down --name {name}` removes it")
            return
        _say(f"lab {name} removed")
        return
