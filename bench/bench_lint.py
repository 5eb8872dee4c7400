"""Benchmark: `netparity lint` of a generated 5,000-pod / 100-namespace / 1,000-policy snapshot.

    python3 bench/bench_lint.py [--pods 5000] [--namespaces 100] [--policies 1000]
                                [--nodes 20] [--target cilium] [--repeat 1]

The snapshot comes from bench/gen.py. Times are CPU seconds of this process
(time.process_time), so a busy machine does not distort them: the lint itself (probes,
verdicts under npm and the target, findings) and the fixes (built and each checked against
a new Engine), then writing the fix folder. Goal (issue 3): the lint with its fixes under 10 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netparity.engine.dataplane import TARGETS
from netparity.lint import lint_snapshot
from netparity.lint.output import write_fix_dir
from netparity.model.snapshot import snapshot_from_dicts

from gen import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--target", choices=TARGETS, default="cilium")
    ap.add_argument("--repeat", type=int, default=1, help="runs; the best is reported")
    args = ap.parse_args()
    docs = generate(
        pods=args.pods, namespaces=args.namespaces, policies=args.policies, nodes=args.nodes
    )
    t0 = time.process_time()
    snapshot = snapshot_from_dicts(docs)
    parse = time.process_time() - t0
    print(f"snapshot: {snapshot.summary()} (parsed from wire dicts in {parse:.2f} s)")
    best_lint = best_total = float("inf")
    for _ in range(args.repeat):
        t0 = time.process_time()
        bare = lint_snapshot(snapshot, target=args.target, fixes=False)
        t1 = time.process_time()
        report = lint_snapshot(snapshot, target=args.target)
        t2 = time.process_time()
        best_lint = min(best_lint, t1 - t0)
        best_total = min(best_total, t2 - t1)
    assert len(bare.findings) == len(report.findings)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.process_time()
        files = write_fix_dir(report, Path(tmp) / "fixes")
        written = time.process_time() - t0
    kinds = Counter(f.kind for f in report.findings)
    fixed = sum(1 for f in report.findings if f.fix is not None)
    print(
        f"lint npm -> {args.target}: {report.connections} connections evaluated under both, "
        f"{len(report.findings)} findings ({report.outages} outages, {report.holes} holes): "
        + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    )
    print(f"lint without fixes: {best_lint:.2f} s CPU")
    print(
        f"lint with fixes: {best_total:.2f} s CPU ({fixed} fixes built and checked; "
        f"{len(report.findings) - fixed} findings say why none) "
        f"[goal < 10 s: {'met' if best_total < 10 else 'MISSED'}]"
    )
    print(f"fix folder: {len(files)} files written in {written:.2f} s CPU")


if __name__ == "__main__":
    main()
