"""Benchmark of the lab fabric (root): build time, allowed probes per second, and a batch of
mixed probes (half dropped by an iptables DROP rule) against its timeout.

    sudo python bench/bench_lab.py [--nodes 3] [--pods 60] [--probes 1200] [--timeout 2]

The allowed probes (from every pod: 60 sources) run three ways in the same run, each
twice, the best kept (the first `--per-probe` of them once, per probe: it is slow): the one-process prober (the default), one agent process per source
batch (`prober="agent"`), and one agent process per probe (how exec-per-probe tools work).

Uses a generated snapshot (pods serve TCP 80 and 8080, UDP 53) and a stub dataplane whose
only rule drops TCP 8080 in every node's FORWARD chain, so that half of the mixed batch
times out. `--rules real` builds with netparity.lab.dataplanes instead (no drop rule).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netparity.backend import Observed, Target
from netparity.engine.traffic import PodEndpoint, Traffic
from netparity.lab import LabBackend, LabTopology, NodeRules, down, up, upgrade
from netparity.lab.agents import agent_path
from netparity.lab.build import Render
from netparity.lab.probing import SubBatch, run_source
from netparity.lab.resolve import Index, probe_for
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot, snapshot_from_dicts

DROPPED_PORT = 8080


def generate(nodes: int, pods: int) -> Snapshot:
    docs: list[dict[str, Any]] = []
    for i in range(nodes):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": f"aks-bench-{i}"},
                "spec": {"podCIDR": f"10.244.{i}.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": f"10.224.0.{4 + i}"}]},
            }
        )
    for j in range(pods):
        node = j % nodes
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"p{j}",
                    "namespace": f"ns{j % 6}",
                    "labels": {"app": f"a{j % 10}"},
                },
                "spec": {
                    "nodeName": f"aks-bench-{node}",
                    "containers": [
                        {
                            "name": "c",
                            "ports": [
                                {"name": "http", "containerPort": 80},
                                {"name": "alt", "containerPort": DROPPED_PORT},
                                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            ],
                        }
                    ],
                },
                "status": {"podIP": f"10.244.{node}.{10 + j // nodes}"},
            }
        )
    return snapshot_from_dicts(docs)


def stub_render(drop: bool) -> Render:
    def render(topology: LabTopology) -> Mapping[str, NodeRules]:
        if not drop:
            return {}
        rules = f"*filter\n-A FORWARD -p tcp --dport {DROPPED_PORT} -j DROP\nCOMMIT\n"
        return {n.name: NodeRules(iptables=rules) for n in topology.nodes}

    return render


def targets(snapshot: Snapshot, count: int, *, mixed: bool) -> list[Target]:
    pods = list(snapshot.pods)
    out = []
    for i in range(count):
        src = pods[i % len(pods)]
        dst = pods[(i * 7 + 3) % len(pods)]
        if dst is src:
            dst = pods[(i + 1) % len(pods)]
        if mixed and i % 2:
            port, proto = DROPPED_PORT, Protocol.TCP
        else:
            port, proto = (80, Protocol.TCP) if i % 4 != 2 else (53, Protocol.UDP)
        traffic = Traffic(
            source=PodEndpoint(pod=src), destination=PodEndpoint(pod=dst), port=port, protocol=proto
        )
        out.append(Target(id=f"b{i}", traffic=traffic))
    return out


def _one_process_per_probe(
    backend: LabBackend, allowed: list[Target], timeout: float, parallel: int
) -> int:
    """Each probe in an agent process of its own (`parallel` at once): the exec-per-probe way."""
    ix = Index(backend.topology())
    probes = [probe_for(ix, i, t) for i, t in enumerate(allowed)]
    agent = str(agent_path())
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        runs = pool.map(
            lambda p: run_source(
                backend.name, p.source.netns, [SubBatch(probes=[p])], timeout, agent
            ),
            probes,
        )
        return sum(r.observed is Observed.CONNECTED for batch in runs for _, r in batch)


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--pods", type=int, default=60)
    ap.add_argument("--probes", type=int, default=1200)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument(
        "--per-probe", type=int, default=300, help="probes run one process each (the slow way)"
    )
    ap.add_argument("--parallel", type=int, default=32, help="source batches run at once")
    ap.add_argument("--rules", choices=("stub", "real"), default="stub")
    ap.add_argument("--name", default="bench")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_lab: needs root (network namespaces)", file=sys.stderr)
        return 2
    snap = generate(args.nodes, args.pods)
    drop = args.rules == "stub"
    render: Render | None = stub_render(drop) if drop else None
    down(args.name)
    figures: list[tuple[str, str]] = []
    try:
        t0 = time.monotonic()
        up(snap, name=args.name, render=render)
        figures.append(
            (
                f"lab up ({args.nodes} nodes, {args.pods} pods, {args.rules} rules)",
                f"{time.monotonic() - t0:.2f} s",
            )
        )
        backend = LabBackend(args.name, parallel=args.parallel, prober="process")
        agents = LabBackend(args.name, parallel=args.parallel, prober="agent")

        allowed = targets(snap, args.probes, mixed=False)
        backend.run(allowed[:20], timeout=args.timeout)  # warm ARP/neighbour caches
        batches = len({str(t.traffic.source) for t in allowed})
        lat: list[float] = []
        for label, way in (
            ("the one-process prober", backend),
            ("one agent process per source batch", agents),
            ("one agent process per probe", None),
        ):
            best = (float("inf"), 0.0, 0.0, 0)
            for _ in range(1 if way is None else 2):
                t0, cpu0, own0 = time.monotonic(), _child_cpu(), time.process_time()
                if way is None:
                    ok = _one_process_per_probe(
                        backend, allowed[: args.per_probe], args.timeout, args.parallel
                    )
                else:
                    res = way.run(allowed, timeout=args.timeout)
                    ok = sum(r.observed is Observed.CONNECTED for r in res)
                    if way is backend:
                        lat = [r.latency_ms for r in res if r.latency_ms is not None]
                took = time.monotonic() - t0
                best = min(best, (took, _child_cpu() - cpu0, time.process_time() - own0, ok))
            took, cpu, own, ok = best
            count = len(allowed) if way is not None else min(args.per_probe, len(allowed))
            figures.append(
                (
                    f"{count} allowed probes from {batches} sources, {label} ({ok} connected)",
                    f"{took:.2f} s = {count / took:.0f} probes/s; CPU {own:.2f} s "
                    f"here + {cpu:.2f} s in children",
                )
            )
        if lat:
            figures.append(
                (
                    "  connect latency median / p99",
                    f"{statistics.median(lat):.1f} / {sorted(lat)[int(len(lat) * 0.99) - 1]:.1f} ms",
                )
            )

        one = [
            Target(
                id=t.id,
                traffic=Traffic(
                    source=allowed[0].traffic.source,
                    destination=t.traffic.destination,
                    port=t.traffic.port,
                    protocol=t.traffic.protocol,
                ),
            )
            for t in allowed
            if t.traffic.destination != allowed[0].traffic.source
        ]
        t0 = time.monotonic()
        res = backend.run(one, timeout=args.timeout)
        took = time.monotonic() - t0
        ok = sum(r.observed is Observed.CONNECTED for r in res)
        figures.append(
            (
                f"{len(one)} allowed probes from ONE source ({ok} connected)",
                f"{took:.2f} s = {len(one) / took:.0f} probes/s",
            )
        )

        mixed = targets(snap, args.probes, mixed=True)
        t0 = time.monotonic()
        res = backend.run(mixed, timeout=args.timeout)
        took = time.monotonic() - t0
        counts: dict[str, int] = {}
        for r in res:
            counts[str(r.observed)] = counts.get(str(r.observed), 0) + 1
        figures.append(
            (
                f"{len(mixed)} mixed probes, timeout {args.timeout:g} s",
                f"{took:.2f} s ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})",
            )
        )

        t0 = time.monotonic()
        upgrade(args.name, "cilium", render=render)
        figures.append(("lab upgrade (every pod renumbered)", f"{time.monotonic() - t0:.2f} s"))
    finally:
        t0 = time.monotonic()
        down(args.name)
        figures.append(("lab down", f"{time.monotonic() - t0:.2f} s"))
    width = max(len(k) for k, _ in figures)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"bench_lab on {os.cpu_count()} CPUs (load average {load}), parallel={args.parallel}")
    for k, v in figures:
        print(f"  {k.ljust(width)}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
