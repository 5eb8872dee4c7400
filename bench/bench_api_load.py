"""The API load of a whole Kubernetes run, counted against the loopback API server.

    python bench/bench_api_load.py                    # the example's plan and a generated one
    python bench/bench_api_load.py --pods 400 --namespaces 8 --policies 80 --nodes 4
    python bench/bench_api_load.py --example-only

A run (as `pytest suites/ --cluster NAME` makes it: the plan's probes, one retry round)
against tests/kubeapi.py, whose fake kubelet starts each twin's agent on a loopback
address. It prints the requests the client made by verb (netparity.kube.client counts them),
cross-checked against the server's own log, and the figures #15 asks for:

- requests per probe: every request of the run over the probes it ran (tries included);
- requests per object created: the requests that make, wait for and remove the run's
  objects (creates, their waits, deletes, the heartbeat, the clean-up's lists) over the
  objects created; the snapshot's reads and the execs are counted apart;
- exec batches: one exec per source batch, never one per probe.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from netparity.example import example_path  # noqa: E402
from netparity.kube.backend import KubeBackend  # noqa: E402
from netparity.model.snapshot import snapshot_from_dicts  # noqa: E402
from netparity.plan.planner import make_plan  # noqa: E402
from netparity.session import probe_all  # noqa: E402

from gen import generate  # noqa: E402
from kubeapi import KIND_TO_RESOURCE, KubeAPI  # noqa: E402


def server_counts(requests: list[tuple[str, str]]) -> Counter[str]:
    """The server's own log, by verb (what the client's counter must agree with)."""
    out: Counter[str] = Counter()
    for method, path in requests:
        if method == "GET":
            base, _, query = path.partition("?")
            name_part = base.rstrip("/").split("/")
            if base.endswith("/exec"):
                out["exec"] += 1
            elif "watch=" in query.lower():
                out["watch"] += 1
            elif len(name_part) >= 2 and name_part[-2] in _PLURALS:
                out["get"] += 1
            else:
                out["list"] += 1
        else:
            out[{"POST": "create", "PUT": "replace", "DELETE": "delete"}.get(method, method)] += 1
    return out


_PLURALS = {plural for _, _, plural in KIND_TO_RESOURCE.values()}


def on_loopback(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes' InternalIPs moved to 127.0.2.N (the fake kube-proxy listens on them), and
    labelled with their hostname as every kubelet labels its node."""
    out = []
    n = 0
    for obj in objects:
        if obj.get("kind") == "Node":
            obj = copy.deepcopy(obj)
            n += 1
            labels = obj.setdefault("metadata", {}).setdefault("labels", {})
            labels.setdefault("kubernetes.io/hostname", obj["metadata"]["name"])
            for addr in obj.get("status", {}).get("addresses", []):
                if addr.get("type") == "InternalIP":
                    addr["address"] = f"127.0.2.{n}"
        out.append(obj)
    return out


def measure(
    name: str, objects: list[dict[str, Any]], *, timeout: float, qps: float
) -> dict[str, Any]:
    objects = on_loopback(objects)
    snapshot = snapshot_from_dicts(objects, sources=(name,))
    plan = make_plan(snapshot, current="npm", target="cilium")
    supported = [o for o in objects if o.get("kind") in KIND_TO_RESOURCE]
    with tempfile.TemporaryDirectory() as tmp, KubeAPI() as api:
        api.add(*supported)
        kubeconfig = str(api.kubeconfig(Path(tmp) / "kubeconfig"))
        log: list[str] = []
        start = time.monotonic()
        backend = KubeBackend(
            "test",
            kubeconfig=kubeconfig,
            dataplane="npm",
            settle=0.0,
            log=log.append,
            kube_qps=qps,
            max_parallel=8,
        )
        try:
            backend.snapshot()
            reads = backend.kube.requests.total()
            tries = probe_all(backend, plan.probes, timeout=timeout, retries=1, dataplane="npm")
        finally:
            backend.close()
        seconds = time.monotonic() - start
        counts = backend.kube.requests
        by_verb = counts.by_verb()
        served = server_counts(api.requests)
    probes = backend.probes_run
    created = counts.total("create")
    execs = counts.total("exec")
    handling = counts.total() - reads - execs
    twins = sum(
        1
        for (verb, res), n in counts.counts().items()
        if verb == "create" and res == "pods"
        for _ in range(n)
    )
    return {
        "case": name,
        "probes": len(plan.probes),
        "tries": probes,
        "ran": sum(1 for t in tries.values() if t and t[-1].observed.value != "not-run"),
        "twins": twins,
        "created": created,
        "total": counts.total(),
        "reads": reads,
        "execs": execs,
        "by_verb": by_verb,
        "server": dict(served),
        "per_probe": counts.total() / probes if probes else 0.0,
        "per_probe_no_reads": (counts.total() - reads) / probes if probes else 0.0,
        "per_object": handling / created if created else 0.0,
        "seconds": seconds,
        "line": backend.request_line(),
        "observed": Counter(t[-1].observed.value for t in tries.values() if t),
        "errors": Counter((t[-1].error or "")[:150] for t in tries.values() if t and t[-1].error),
    }


def show(r: dict[str, Any]) -> None:
    verbs = ", ".join(f"{v} {n}" for v, n in r["by_verb"].items())
    print(f"== {r['case']}")
    print(
        f"  {r['probes']} planned probes, {r['tries']} tries (retries included), "
        f"{r['twins']} twins, {r['created']} objects created, {r['seconds']:.1f} s"
    )
    print(f"  client: {r['total']} requests ({verbs})")
    print(f"  server: {sum(r['server'].values())} requests ({dict(sorted(r['server'].items()))})")
    print(f"  last tries: {dict(sorted(r['observed'].items()))}")
    for error, n in r["errors"].most_common(2):
        print(f"    {n} x {error}")
    print(
        f"  snapshot reads {r['reads']}, exec batches {r['execs']}, "
        f"object handling {r['total'] - r['reads'] - r['execs']}"
    )
    print(
        f"  requests per probe: {r['per_probe']:.3f} ({r['per_probe_no_reads']:.3f} without the "
        f"snapshot's reads); per object created: {r['per_object']:.2f} (execs apart)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pods", type=int, default=300)
    p.add_argument("--namespaces", type=int, default=6)
    p.add_argument("--policies", type=int, default=60)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--timeout", type=float, default=0.5, help="probe timeout (default 0.5 s)")
    p.add_argument("--kube-qps", type=float, default=200.0, help="the client's rate bound")
    p.add_argument("--example-only", action="store_true")
    args = p.parse_args(argv)
    example = [
        d
        for d in (yaml.safe_load(example_path().read_text(encoding="utf-8")) or {}).get("items", [])
    ]
    results = [measure("example", example, timeout=args.timeout, qps=args.kube_qps)]
    if not args.example_only:
        generated = generate(
            pods=args.pods, namespaces=args.namespaces, policies=args.policies, nodes=args.nodes
        )
        name = f"generated {args.pods} pods/{args.namespaces} ns/{args.policies} policies"
        results.append(measure(name, generated, timeout=args.timeout, qps=args.kube_qps))
    for r in results:
        show(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
