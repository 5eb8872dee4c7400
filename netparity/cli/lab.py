"""`netparity lab up|upgrade|status|down|probe`: the sealed local lab of network namespaces."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from netparity.backend import Observed, ProbeResult, Target
from netparity.cli._common import add_snapshot_arguments, print_json, snapshot_from_args, table
from netparity.engine.dataplane import CURRENT, NEWEST_TARGET
from netparity.errors import InputError
from netparity.lab import (
    DATAPLANES,
    DEFAULT_LAB,
    LabBackend,
    StderrProgress,
    down,
    status,
    up,
    upgrade,
)
from netparity.lab.build import lab_problem
from netparity.lab.state import LabState


def _name_arg(q: argparse.ArgumentParser, *, wait: bool = True) -> None:
    q.add_argument(
        "--name",
        default=DEFAULT_LAB,
        help=f"lab name, 1-8 lowercase letters or digits (default: {DEFAULT_LAB})",
    )
    if wait:
        q.add_argument(
            "--wait",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="wait up to SECONDS for another process holding the lab "
            "(default: refuse at once, naming it)",
        )


def _add_up(lab_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = lab_sub.add_parser("up", help="build a lab from a snapshot")
    add_snapshot_arguments(q, example_default=True)
    q.add_argument("--dataplane", default=CURRENT, choices=DATAPLANES, help=f"(default: {CURRENT})")
    q.add_argument(
        "--api",
        action="store_true",
        help="serve the lab as a Kubernetes API (loopback, TLS, a token) and add the context "
        "netparity-lab-NAME to the kubeconfig (docs/lab-api.md)",
    )
    q.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="with --api: the kubeconfig to add the context to (default: $KUBECONFIG, "
        "else ~/.kube/config); other contexts are left as they are",
    )
    q.add_argument(
        "--programming-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="with --api: seconds before the dataplane polices a pod the API created (default: 1)",
    )
    _name_arg(q)
    q.set_defaults(func=cmd_up)


def _add_upgrade(lab_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = lab_sub.add_parser(
        "upgrade",
        help="recreate every pod (new IPs) under another dataplane, as az aks update does",
    )
    q.add_argument(
        "--dataplane",
        default=NEWEST_TARGET,
        choices=DATAPLANES,
        help=f"(default: {NEWEST_TARGET})",
    )
    q.add_argument(
        "--rolling",
        action="store_true",
        help="reimage one node at a time; the new dataplane enforces only when every node "
        "is done (as AKS does); the reimage log is kept in the lab's state",
    )
    q.add_argument(
        "--node-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --rolling: wait SECONDS after each node (default: 0)",
    )
    _name_arg(q)
    q.set_defaults(func=cmd_upgrade)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lab", help="build, upgrade, inspect, probe and remove a local lab (root)")
    lab_sub = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    _add_up(lab_sub)
    _add_upgrade(lab_sub)

    q = lab_sub.add_parser("status", help="nodes, pods, hosts and addresses of a lab")
    q.add_argument("--format", choices=("table", "json"), default="table")
    _name_arg(q, wait=False)
    q.set_defaults(func=cmd_status)

    q = lab_sub.add_parser("down", help="remove a lab (namespaces, agents, state)")
    _name_arg(q)
    q.set_defaults(func=cmd_down)

    q = lab_sub.add_parser("probe", help="run an explicit probe file in a lab")
    q.add_argument("--probes", required=True, metavar="FILE", help="explicit probe file")
    q.add_argument("--format", choices=("table", "json"), default="table")
    q.add_argument("--timeout", type=float, default=2.0, help="seconds per probe (default: 2)")
    _name_arg(q)
    q.set_defaults(func=cmd_probe)


def _summary(state: LabState) -> str:
    topo = state.topology
    assert topo is not None
    pods = len(topo.pods)
    return (
        f"{len(topo.nodes)} nodes, {pods} pods, {len(topo.hosts)} external hosts, "
        f"dataplane {state.dataplane}, generation {state.generation}"
    )


def cmd_up(args: argparse.Namespace) -> int:
    snapshot = snapshot_from_args(args, command="lab up", example_default=True)
    progress = StderrProgress(args.name)
    start = time.monotonic()
    try:
        up(snapshot, name=args.name, dataplane=args.dataplane, progress=progress, wait=args.wait)
    finally:
        progress.finish()
    st = status(args.name)
    print(f"lab {args.name} up: {_summary(st)}, in {time.monotonic() - start:.1f} s")
    if args.api:
        from netparity.cli.rbac import lab_rbac
        from netparity.labapi import serve
        from netparity.labapi.kubeconfig import context_name, default_kubeconfig

        kubeconfig = Path(args.kubeconfig) if args.kubeconfig else default_kubeconfig()
        assert st.topology is not None
        rbac = lab_rbac(st.topology.snapshot, st.dataplane)
        url = serve.start(
            args.name, kubeconfig, programming_delay=args.programming_delay, rbac=rbac
        )
        print(
            f"lab {args.name} API: {url}, context {context_name(args.name)} in {kubeconfig} "
            f"(`netparity lab down --name {args.name}` stops it)"
        )
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    start = time.monotonic()
    if args.rolling:
        from netparity.lab.rolling import upgrade_rolling

        upgrade_rolling(
            args.name,
            args.dataplane,
            node_delay=args.node_delay,
            say=lambda m: print(f"lab {args.name}: {m}", file=sys.stderr, flush=True),
            wait=args.wait,
        )
        st = status(args.name)
        print(
            f"lab {args.name} upgraded node by node: {_summary(st)}, "
            f"in {time.monotonic() - start:.1f} s"
        )
        return 0
    if args.node_delay:
        raise InputError("--node-delay needs --rolling")
    progress = StderrProgress(args.name)
    try:
        upgrade(args.name, args.dataplane, progress=progress, wait=args.wait)
    finally:
        progress.finish()
    st = status(args.name)
    print(f"lab {args.name} upgraded: {_summary(st)}, in {time.monotonic() - start:.1f} s")
    return 0


def status_json(state: LabState) -> dict[str, Any]:
    topo = state.topology
    assert topo is not None
    return {
        "name": state.name,
        "dataplane": state.dataplane,
        "generation": state.generation,
        "status": state.status,
        "pid": state.pid,
        "sources": list(state.sources),
        "build_seconds": state.build_seconds,
        "node_prefix": topo.node_prefix,
        "nodes": [
            {"name": n.name, "ip": n.ip, "pod_cidr": n.pod_cidr, "netns": n.netns}
            for n in topo.nodes
        ],
        "pods": [
            {
                "key": p.key,
                "node": p.node,
                "ip": p.ip,
                "host_network": p.host_network,
                "netns": p.netns,
                "ports": [
                    f"{c.port}/{c.protocol}" + (f" ({c.name})" if c.name else "") for c in p.ports
                ],
            }
            for p in topo.pods
        ],
        "hosts": [{"name": h.name, "ip": h.ip, "netns": h.netns} for h in topo.hosts],
        "services": [
            {
                "key": s.key,
                "type": str(s.type),
                "cluster_ip": s.cluster_ip,
                "load_balancer_ips": list(s.load_balancer_ips),
                "ports": [
                    {"port": sp.port, "protocol": str(sp.protocol), "node_port": sp.node_port}
                    for sp in s.ports
                ],
            }
            for s in topo.snapshot.services
        ],
        "agents": len(state.agents),
    }


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 for a lab that is ready or being built; 1 for a broken one, with one sentence
    on stderr saying how to repair it (its builder died, its namespaces or agents are gone)."""
    st = status(args.name)
    problem = lab_problem(st)
    if args.format == "json":
        doc = status_json(st)
        doc["health"] = "broken" if problem else ("ready" if st.status == "ready" else st.status)
        doc["problem"] = problem
        print_json(doc)
        return _broken(problem)
    topo = st.topology
    assert topo is not None
    took = f" in {st.build_seconds:.1f} s" if st.build_seconds is not None else ""
    if problem is not None:
        what = "broken"
    elif st.status == "ready":
        what = f"ready, built by process {st.pid}{took}"
    else:
        what = f"{st.status} by process {st.pid}"
    print(
        f"lab {st.name}: {what}, dataplane {st.dataplane}, generation {st.generation}, "
        f"{len(st.agents)} agents"
    )
    if st.sources:
        print(f"from: {', '.join(st.sources)}")
    rows: list[list[str]] = []
    for n in topo.nodes:
        rows.append(["node", n.name, "", f"{n.ip}/{topo.node_prefix}", n.netns, n.pod_cidr or ""])
    for p in topo.pods:
        ports = ", ".join(f"{c.port}/{c.protocol}" for c in p.ports)
        kind = "pod (hostNetwork)" if p.host_network else "pod"
        rows.append([kind, p.key, p.node, p.ip, p.netns, ports])
    for h in topo.hosts:
        rows.append(["external", h.name, "", h.ip, h.netns, ""])
    for s in topo.snapshot.services:
        ips = [s.cluster_ip or "", *s.load_balancer_ips]
        ports = ", ".join(
            f"{sp.port}/{sp.protocol}" + (f" nodePort {sp.node_port}" if sp.node_port else "")
            for sp in s.ports
        )
        rows.append([f"service ({s.type})", s.key, "", " ".join(i for i in ips if i), "", ports])
    print(table(["KIND", "NAME", "NODE", "IP", "NAMESPACE", "PORTS"], rows))
    return _broken(problem)


def _broken(problem: str | None) -> int:
    if problem is None:
        return 0
    sys.stdout.flush()
    print(f"netparity: {problem}", file=sys.stderr)
    return 1


def cmd_down(args: argparse.Namespace) -> int:
    from netparity.labapi import serve

    if serve.stop(args.name):  # first: it removes the pods a run left, then its context
        print(f"lab {args.name} API stopped")
    if down(args.name, wait=args.wait):
        print(f"lab {args.name} removed")
    else:
        print(f"lab {args.name}: nothing to remove")
    return 0


def _judged(result: ProbeResult) -> str:
    allowed = result.allowed
    return "error" if allowed is None else ("allow" if allowed else "deny")


def cmd_probe(args: argparse.Namespace) -> int:

    backend = LabBackend(args.name, hold=True, wait=args.wait)  # a user: refused if broken
    try:
        return _probe(args, backend)
    finally:
        backend.close()


def _probe(args: argparse.Namespace, backend: LabBackend) -> int:
    from netparity.probefile import load_probe_file, resolve_probes

    facts = backend.facts()
    specs = load_probe_file(args.probes)
    resolved = resolve_probes(specs, backend.snapshot())
    targets = [Target(id=str(i), traffic=rp.traffic) for i, rp in enumerate(resolved)]
    progress = StderrProgress(args.name)
    try:
        results = backend.run(targets, timeout=args.timeout, progress=progress)
        # A deny is confirmed by a retry; one that changes is flaky.
        retry = [t for t, r in zip(targets, results, strict=True) if r.observed is Observed.TIMEOUT]
        again = {r.id: r for r in backend.run(retry, timeout=args.timeout)} if retry else {}
    finally:
        progress.finish()
    rows: list[dict[str, Any]] = []
    failed = 0
    for rp, first in zip(resolved, results, strict=True):
        second = again.get(first.id)
        flaky = second is not None and second.observed is not Observed.TIMEOUT
        final = second if second is not None and flaky else first
        judged = "flaky" if flaky else _judged(final)
        expected = rp.spec.expected(facts.dataplane)
        ok = None if expected is None else (judged == str(expected))
        if judged in ("error", "flaky") or ok is False:
            failed += 1
        rows.append(
            {
                "probe": rp.spec.label(),
                "lab": args.name,
                "dataplane": facts.dataplane,
                "from": rp.spec.source,
                "to": rp.spec.destination,
                "port": rp.spec.port,
                "protocol": str(rp.spec.protocol),
                "observed": str(final.observed),
                "verdict": judged,
                "expected": None if expected is None else str(expected),
                "ok": ok,
                "token": final.token,
                "address": final.address,
                "source": final.source,
                "latency_ms": final.latency_ms,
                "error": final.error,
            }
        )
    if args.format == "json":
        print_json(rows)  # one object per probe, in order, as `netparity predict` prints
    else:
        print(
            table(
                ["#", "PROBE", "OBSERVED", "VERDICT", "EXPECTED", "DETAIL"],
                [
                    [
                        str(i + 1),
                        r["probe"],
                        r["observed"],
                        r["verdict"],
                        ""
                        if r["expected"] is None
                        else f"{r['expected']} {'ok' if r['ok'] else 'MISMATCH'}",
                        _detail(r),
                    ]
                    for i, r in enumerate(rows)
                ],
            )
        )
        print(
            f"lab {args.name} ({facts.dataplane}): {len(rows)} probes, "
            f"{sum(1 for r in rows if r['ok'])} as expected, {failed} mismatched, errors or flaky"
        )
    return 1 if failed else 0


def _detail(row: dict[str, Any]) -> str:
    parts = [f"{row['source']} -> {row['address']}" if row["address"] else ""]
    if row["token"]:
        parts.append(f"answered by {row['token']}")
    if row["error"]:
        parts.append(str(row["error"]))
    return "; ".join(p for p in parts if p)
