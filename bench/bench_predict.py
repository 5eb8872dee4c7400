"""Benchmark `netparity plan` and `netparity predict` as a user runs them (issue 15).

    python3 bench/bench_predict.py                         # 5,000 pods, 50 nodes, 20,000 probes
    python3 bench/bench_predict.py --before /tmp/base      # and the same runs on older code
    python3 bench/bench_predict.py --keep /tmp/pp --profile /tmp/pp/prof

Writes the generated cluster (bench/gen.py, seed 1: 5,000 pods in 100 namespaces, 1,000
policies, 50 nodes) as `kubectl get -o json` and `kubectl get -o yaml` write a List, and a
probe file of `--probes` probes made from that cluster's plan: every planned probe whose
endpoints are in the snapshot (the plan's run-owned Services are not), sent once from its
source class's representative, then again from the class's other pods in turn (round
robin over the planned probes) until there are enough. Then runs, each in a subprocess of
its own: `netparity plan SNAP.json`, `netparity plan SNAP.yaml` and `netparity predict
SNAP.yaml --probes PROBES.yaml` (table output, as a user reads it). Per run: wall time,
the child's CPU time (user + system) and peak resident memory (os.wait4); the best (least
CPU) of `--repeat`. With `--before DIR` (a checkout of older code: `git archive COMMIT |
tar -x -C DIR`) every command runs also with `PYTHONPATH=DIR`, interleaved, so that the
ratio is taken under the same load. Goals (issue 15): plan under 2 s (JSON) and 3 s
(YAML), predict of 20,000 probes under 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from netparity.model.snapshot import snapshot_from_dicts  # noqa: E402
from netparity.plan.planner import make_plan  # noqa: E402

from gen import generate  # noqa: E402

GOALS = {"plan-json": 2.0, "plan-yaml": 3.0, "predict": 3.0}


@dataclass(slots=True)
class Run:
    name: str
    code: str  # "now" or "before"
    seconds: float
    cpu: float
    peak_mb: float
    exit_code: int


def write_snapshot(docs: list[dict[str, Any]], folder: Path) -> tuple[Path, Path]:
    doc = {"apiVersion": "v1", "kind": "List", "items": docs}
    js = folder / "snap.json"
    with js.open("w", encoding="utf-8") as f:
        json.dump(doc, f, indent=4)

    class NoAliases(yaml.CSafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    ym = folder / "snap.yaml"
    ym.write_text(yaml.dump(doc, Dumper=NoAliases, sort_keys=False), encoding="utf-8")
    return js, ym


def probe_entries(docs: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` probe-file entries from the cluster's plan (see the module's docstring)."""
    snapshot = snapshot_from_dicts(docs)
    plan = make_plan(snapshot)
    owned = {f"svc:{s.key}" for s in plan.synthetic_services}
    planned = []
    for p in plan.probes:
        src, dst = str(p.traffic.source), str(p.traffic.destination)
        if dst.split("@")[0].replace("nodeport:", "svc:").replace("lb:", "svc:") in owned:
            continue
        members = [k for k in p.stands_for if k != src] if "/" in src and ":" not in src else []
        planned.append((src, dst, p.traffic.port, str(p.traffic.protocol), members))
    out: list[dict[str, Any]] = []
    turn = 0
    while len(out) < count and planned:
        grew = False
        for src, dst, port, protocol, members in planned:
            if turn == 0:
                frm = src
            elif turn <= len(members):
                frm = members[turn - 1]
            else:
                continue
            grew = True
            out.append({"from": frm, "to": dst, "port": port, "protocol": protocol})
            if len(out) == count:
                break
        if not grew:
            turn = -1  # every class exhausted: start over with the representatives
        turn += 1
    return out


# The child's own peak (VmHWM, read at exit): os.wait4's ru_maxrss would count this
# script's memory too, since a forked child keeps its parent's high-water mark over exec.
_CHILD = """
import atexit, os, runpy, sys
def _peak():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(kb)
atexit.register(_peak)
sys.argv = ["netparity", *sys.argv[1:]]
runpy.run_module("netparity", run_name="__main__", alter_sys=True)
"""


def run(name: str, argv: list[str], code: str, pythonpath: Path, profile: str | None) -> Run:
    peak_file = Path(tempfile.mkstemp(prefix="bench-peak-")[1])
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "BENCH_PEAK_FILE": str(peak_file)}
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-o", f"{profile}.{name}.{code}", "-m", "netparity", *argv]
    else:
        cmd += ["-c", _CHILD, *argv]
    t0 = time.perf_counter()
    # cwd: `python -c` and `-m` put the working directory first on sys.path
    proc = subprocess.Popen(
        cmd, env=env, cwd=pythonpath, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code not in (0, 1):  # predict: 1 where a probe disagrees with its expectation
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    cpu = usage.ru_utime + usage.ru_stime
    text = peak_file.read_text()
    peak_file.unlink()
    peak = int(text) / 1024 if text.strip() else float("nan")
    return Run(name, code, seconds, cpu, peak, exit_code)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--pods", type=int, default=5000)
    p.add_argument("--namespaces", type=int, default=100)
    p.add_argument("--policies", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--probes", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--before", metavar="DIR", type=Path, help="older code to run beside")
    p.add_argument("--keep", metavar="DIR", help="write the files into DIR and keep them")
    p.add_argument("--profile", metavar="PREFIX", help="cProfile each run into PREFIX.NAME.CODE")
    p.add_argument("--only", choices=sorted(GOALS), help="run one command only")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = (Path(args.keep) if args.keep else Path(tmp)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        docs = generate(args.pods, args.namespaces, args.policies, args.nodes, 1)
        js, ym = write_snapshot(docs, folder)
        probes = folder / "probes.yaml"
        entries = probe_entries(docs, args.probes)
        probes.write_text(yaml.safe_dump({"probes": entries}, sort_keys=False), encoding="utf-8")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"bench_predict: {args.pods} pods, {args.namespaces} namespaces, {args.policies} "
            f"policies, {args.nodes} nodes; {js.stat().st_size / 1e6:.1f} MB JSON, "
            f"{ym.stat().st_size / 1e6:.1f} MB YAML; {len(entries)} probes "
            f"({probes.stat().st_size / 1e6:.1f} MB); load average {load}"
        )
        commands = {
            "plan-json": ["plan", str(js)],
            "plan-yaml": ["plan", str(ym)],
            "predict": ["predict", str(ym), "--probes", str(probes)],
        }
        if args.only:
            commands = {args.only: commands[args.only]}
        codes = [("now", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
        best: dict[tuple[str, str], Run] = {}
        for _ in range(max(1, args.repeat)):
            for name, cmd in commands.items():
                for code, path in codes:
                    r = run(name, cmd, code, path, args.profile)
                    if (name, code) not in best or r.cpu < best[name, code].cpu:
                        best[name, code] = r
    print("| command | code | CPU | wall | peak memory | exit | goal |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for (name, code), r in best.items():
        met = r.cpu < GOALS[name]
        ok &= met or code != "now"
        print(
            f"| {name} | {code} | {r.cpu:.2f} s | {r.seconds:.2f} s | {r.peak_mb:.0f} MB "
            f"| {r.exit_code} | < {GOALS[name]:.0f} s: {'met' if met else 'NOT met'} |"
        )
    if args.before:
        for name in commands:
            now, before = best[name, "now"], best[name, "before"]
            print(f"{name}: before/now CPU x{before.cpu / now.cpu:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
