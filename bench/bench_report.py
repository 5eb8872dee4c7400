"""Benchmark: the parity report of a generated 5,000-pod cluster: its size and how fast it opens.

    python3 bench/bench_report.py [--pods 5000] [--namespaces 100] [--policies 1000] [--no-lint]

The planner plans the generated snapshot (bench/gen.py); the baseline is every probe
observed as the engine predicts it under npm, the current run as it predicts under cilium,
with 1% of the unchanged probes forced into lost, gained, flaky and error so that every
section has rows. The lint (unless --no-lint) gives the fixes. The post report
(parity.json) and the pre report (the baseline) are written, then opened from disk in
headless Chromium over the DevTools protocol, three times each: the figure is the median
time from navigation to the load event (the probe table built). Goals (issue 6): under
5 MB, open in under 2 s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from netparity.backend import ClusterFacts, Observed, ProbeResult
from netparity.compare import compare
from netparity.compare_output import parity_json
from netparity.model.snapshot import snapshot_from_dicts
from netparity.plan.model import Plan
from netparity.plan.planner import make_plan
from netparity.record import Record, build_record, record_json, write_json_atomic
from netparity.report import write_reports
from netparity.report.lintdata import LINT_FILE, lint_view, write_lint

from gen import generate
from report_chromium import Chromium

MAX_BYTES = 5_000_000
MAX_SECONDS = 2.0


def record(
    plan: Plan, dataplane: str, phase: str, time_: str, forced: dict[str, list[Observed]]
) -> Record:
    results: dict[str, list[ProbeResult]] = {}
    for p in plan.probes:
        tries = forced.get(p.id)
        if tries is None:
            d = str(p.predicted[dataplane].decision)
            tries = (
                [Observed.CONNECTED]
                if d == "allow"
                else [Observed.TIMEOUT, Observed.TIMEOUT]
                if d == "deny"
                else [Observed.ERROR, Observed.ERROR]
            )
        results[p.id] = [
            ProbeResult(id=p.id, observed=o, latency_ms=1.0 if o is Observed.CONNECTED else None)
            for o in tries
        ]
    return build_record(
        facts=ClusterFacts(name="bench", backend="file", dataplane=dataplane),
        cluster="bench",
        plan=plan,
        results=results,
        phase=phase,
        probe_timeout=2.0,
        retries=1,
        time=time_,
    )


def load(page: Path, workdir: Path, runs: int = 3) -> tuple[float, float]:
    """Median seconds to the load event (wall, over CDP) and the page's own loadEventEnd."""
    walls, navs = [], []
    for _ in range(runs):
        with Chromium(workdir) as browser:  # a fresh browser each time: a cold open
            walls.append(browser.open(page))
            assert browser.eval("document.body.dataset.ready") == "1"
            navs.append(
                browser.eval("performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000
            )
    return statistics.median(walls), statistics.median(navs)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--no-lint", action="store_true", help="skip the lint (no fixes in the page)")
    ap.add_argument("--keep", metavar="DIR", help="write the reports here and keep them")
    args = ap.parse_args()

    t0 = time.perf_counter()
    snapshot = snapshot_from_dicts(
        generate(pods=args.pods, namespaces=args.namespaces, policies=args.policies)
    )
    plan = make_plan(snapshot, current="npm", target="cilium")
    t_plan = time.perf_counter() - t0
    rng = random.Random(6)
    same = [p for p in plan.probes if p.predicted["npm"].decision == p.predicted["cilium"].decision]
    picks = rng.sample(same, max(4, len(same) // 100))
    forced: dict[str, list[Observed]] = {}
    for i, p in enumerate(picks):
        allow = str(p.predicted["cilium"].decision) == "allow"
        forced[p.id] = [
            [Observed.TIMEOUT, Observed.TIMEOUT]
            if allow
            else [Observed.CONNECTED],  # lost / gained
            [Observed.TIMEOUT, Observed.CONNECTED],  # flaky
            [Observed.ERROR, Observed.ERROR],  # error
        ][i % 3]
    baseline = record(plan, "npm", "pre", "2026-11-20T08:00:00Z", {})
    current = record(plan, "cilium", "post", "2026-11-21T09:30:00Z", forced)
    parity = compare(baseline, current)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "baseline.json", record_json(baseline))
        write_json_atomic(
            out / "parity.json", parity_json(parity, baseline_path=str(out / "baseline.json"))
        )
        t_lint = 0.0
        if not args.no_lint:
            from netparity.lint import lint_snapshot

            t = time.perf_counter()
            lint = lint_view(lint_snapshot(snapshot, target="cilium"))
            t_lint = time.perf_counter() - t
            write_lint(lint, out / LINT_FILE)
            findings = f"{len(lint.findings)} lint findings ({t_lint:.1f}s)"
        else:
            findings = "no lint"
        print(
            f"cluster: {args.pods} pods, {args.namespaces} namespaces, {args.policies} policies; "
            f"plan: {len(plan.probes)} probes, {len(plan.classes)} classes ({t_plan:.1f}s); {findings}"
        )
        print(f"parity: {', '.join(f'{v} {k}' for k, v in parity.counts.items() if v)}")
        ok = True
        for name, source, folder in (
            ("post", out / "parity.json", out),
            ("pre", out / "baseline.json", out / "pre"),
        ):
            t = time.perf_counter()
            write_reports(source, folder, lint_file=None if args.no_lint else out / LINT_FILE)
            t_write = time.perf_counter() - t
            html, md = folder / "parity.html", folder / "parity.md"
            size = html.stat().st_size
            wall, nav = load(html, Path(tmp) / f"chromium-{name}")
            ok &= size < MAX_BYTES and wall < MAX_SECONDS
            print(
                f"{name:4}: parity.html {size / 1e6:.2f} MB (goal < {MAX_BYTES / 1e6:.0f} MB), "
                f"parity.md {md.stat().st_size / 1e3:.1f} kB, written in {t_write:.2f}s; "
                f"opens in {wall:.2f}s to the load event (page's loadEventEnd {nav:.2f}s, "
                f"median of 3 cold opens; goal < {MAX_SECONDS:.0f} s)"
            )
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
