"""Benchmark the planner on a generated cluster: time, plan size against all pairs, coverage.

    python bench/bench_plan.py                       # 5,000 pods, 100 namespaces, 1,000 policies
    python bench/bench_plan.py --nodes 50 --repeat 5
    python bench/bench_plan.py --profile             # cProfile of one planning run

"All pairs" is the truth table a cyclonus-style tool probes: every (source pod, destination
pod) pair on every port/protocol that a pod declares or a policy names.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netparity.model.snapshot import Snapshot, snapshot_from_dicts
from netparity.plan.model import Plan
from netparity.plan.planner import make_plan

from gen import generate

GOAL_SECONDS = 5.0
GOAL_RATIO = 0.02


def all_pairs(snapshot: Snapshot) -> tuple[int, int, int]:
    """(pods, port/protocol pairs, pods x pods x ports)."""
    pods = [p for p in snapshot.pods if not p.host_network]
    ports = {(cp.port, cp.protocol.value) for p in pods for cp in p.ports}
    for pol in snapshot.network_policies:
        for rule in (*pol.ingress, *pol.egress):
            for pp in rule.ports:
                if isinstance(pp.port, int):
                    ports.add((pp.port, pp.protocol.value))
    return len(pods), len(ports), len(pods) * len(pods) * len(ports)


def report(plan: Plan, snapshot: Snapshot, times: list[float], load: float) -> bool:
    n_pods, n_ports, pairs = all_pairs(snapshot)
    size = len(plan.probes)
    ratio = size / pairs if pairs else 0.0
    c = plan.coverage
    best, median = min(times), statistics.median(times)
    sources = len({str(p.traffic.source) for p in plan.probes})
    print(f"snapshot: {snapshot.summary()} (loaded in {load:.2f} s)")
    print(
        f"planning time: best {best:.2f} s, median {median:.2f} s over {len(times)} runs "
        f"(goal < {GOAL_SECONDS:.0f} s)"
    )
    print(
        f"plan size: {size} probes from {sources} sources; {len(plan.classes)} classes, "
        f"{len(plan.synthetic_services)} run-owned Services"
    )
    print("  by intent: " + ", ".join(f"{k} {v}" for k, v in sorted(_count(plan, "intent"))))
    print("  by scenario: " + ", ".join(f"{k} {v}" for k, v in sorted(_count(plan, "scenario"))))
    print(
        f"all pairs: {n_pods} pods x {n_pods} pods x {n_ports} port/protocols = {pairs:,}; "
        f"plan/all = {ratio:.6%} (goal < {GOAL_RATIO:.0%})"
    )
    print(
        f"coverage: rules {c.rules_with_admit}/{c.rules_total} with an admit probe, "
        f"{c.rules_with_reject}/{c.rules_total} with a reject probe; "
        f"scenarios probed {len(c.scenarios_probed)}/{len(c.scenarios_present)} present "
        f"({', '.join(c.scenarios_probed)})"
    )
    for u in c.uncovered[:10]:
        print(f"  uncovered: {u}")
    ok = (
        best < GOAL_SECONDS
        and ratio < GOAL_RATIO
        and c.rules_with_admit == c.rules_total
        and set(c.scenarios_probed) >= set(c.scenarios_present)
    )
    print("goals: " + ("met" if ok else "NOT met"))
    return ok


def _count(plan: Plan, attribute: str) -> list[tuple[str, int]]:
    counts = Counter(str(getattr(p, attribute) or "-") for p in plan.probes)
    return list(counts.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pods", type=int, default=5000)
    p.add_argument("--namespaces", type=int, default=100)
    p.add_argument("--policies", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    args = p.parse_args(argv)
    docs = generate(args.pods, args.namespaces, args.policies, args.nodes, args.seed)
    t0 = time.perf_counter()
    snapshot = snapshot_from_dicts(docs)
    load = time.perf_counter() - t0
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        make_plan(snapshot)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    times = []
    plan = None
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        plan = make_plan(snapshot)
        times.append(time.perf_counter() - t0)
    assert plan is not None
    return 0 if report(plan, snapshot, times, load) else 1


if __name__ == "__main__":
    sys.exit(main())
