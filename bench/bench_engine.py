"""Benchmark: load + compile a generated 5,000-pod / 100-namespace / 1,000-policy snapshot,
then evaluate pod-to-pod probe verdicts on one core.

    python3 bench/bench_engine.py [--pods 5000] [--namespaces 100] [--policies 1000]

Times are CPU seconds of this process (time.process_time), so a busy machine does not
distort them. Goals (issue 2): load and compile under 2 s; at least 50,000 verdicts per second.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import PodEndpoint, Traffic
from netparity.model.snapshot import load_snapshot

from gen import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--verdicts", type=int, default=200_000)
    args = ap.parse_args()
    docs = generate(pods=args.pods, namespaces=args.namespaces, policies=args.policies)
    dump = {"apiVersion": "v1", "kind": "List", "items": docs}
    with tempfile.TemporaryDirectory() as tmp:
        ypath = Path(tmp) / "cluster.yaml"
        ypath.write_text(yaml.safe_dump(dump))
        jpath = Path(tmp) / "cluster.json"
        jpath.write_text(json.dumps(dump))
        t0 = time.process_time()
        load_snapshot([ypath])
        ty = time.process_time() - t0
        t0 = time.process_time()
        snapshot = load_snapshot([jpath])
        t1 = time.process_time()
        engine = Engine(snapshot)
        t2 = time.process_time()
        sizes = (
            f"YAML {ypath.stat().st_size / 1e6:.1f} MB, JSON {jpath.stat().st_size / 1e6:.1f} MB"
        )
    pods = [p for p in snapshot.pods if not p.host_network and p.ports]
    rng = random.Random(1)
    traffic = []
    for _ in range(args.verdicts):
        a, b = rng.choice(pods), rng.choice(pods)
        traffic.append(
            Traffic(source=PodEndpoint(pod=a), destination=PodEndpoint(pod=b), port=b.ports[0].port)
        )
    print(f"snapshot: {snapshot.summary()}")
    print(f"dump: {sizes}; load from YAML: {ty:.2f} s")
    print(
        f"load from JSON (kubectl -o json): {t1 - t0:.2f} s; compile: {t2 - t1:.3f} s; total {t2 - t0:.2f} s"
    )
    for name in ("npm", "cilium"):
        dp = get_dataplane(name)
        start = time.process_time()
        allow = sum(engine.evaluate(t, dp).decision == "allow" for t in traffic)
        took = time.process_time() - start
        print(
            f"{name}: {len(traffic)} verdicts in {took:.2f} s = {len(traffic) / took:,.0f} verdicts/s ({allow} allow)"
        )


if __name__ == "__main__":
    main()
