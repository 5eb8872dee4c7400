"""Benchmark how `netparity plan` and `netparity lint` grow with the cluster (issue 19).

    python3 bench/bench_scale.py                          # 1k, 5k and 20k pods
    python3 bench/bench_scale.py --sizes 1k,5k,20k,50k    # and 50,000 pods / 10,000 policies
    python3 bench/bench_scale.py --sizes 20k --only plan --profile plan.prof
    python3 bench/bench_scale.py --sizes 5k --only lint --yaml   # and the YAML form (lint-yaml)
    python3 bench/bench_scale.py --sizes 1k/10n,5k/50n,20k/200n,50k/500n --only lint  # 100 a node
    python3 bench/bench_scale.py --sizes 5k,20k/80n,50k/200n --only lint  # 250 pods a node

Each size is a cluster from bench/gen.py (seed 1; 20 nodes, or the node count after the
slash: 1k/10n, 5k/50n, 20k/200n and 50k/500n are 100 pods a node as on a real AKS cluster;
5k, 20k/80n and 50k/200n are 250, AKS's maximum), written as `kubectl get -o json` writes
a List, then planned and linted by the CLI in a subprocess of its own, as a user runs them:
`netparity plan FILE` and `netparity lint FILE` (fixes built and checked). Per run: wall
time; the CPU time (user + system) of the command and of the helpers its lint forks
(`--jobs`, netparity.lint.parallel); its memory: the peak of the processes' proportional
set sizes summed (PSS: a page a helper shares with the lint counts once), sampled every
50 ms from /proc (less often on a large process: a sample costs at most a twentieth of a
core); and for the lint the connections it judged (its first line says how
many) and the CPU time per 1,000 of them. The goals are wall times, what a user waits
for (the lint's helpers make its CPU time exceed its wall time); the machine is shared,
so the growth ratios use CPU time. Between two sizes the growth per doubling is
2 ** (log(CPU time ratio) / log(size ratio)): 2.0 is linear, 4.0 quadratic. It is shown
for the sizes on 20 nodes (the issue's: the pods a node grow with the cluster, to 2,500 at
50k) and for each density that two sizes share (`series`). Goal (issue 19): 20k pods
planned < 10 s and linted < 15 s, within 1 GB; doubling the cluster at most about doubles
the time.
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen import generate  # noqa: E402

# name: (pods, namespaces, NetworkPolicies, nodes)
SIZES: dict[str, tuple[int, int, int, int]] = {
    "1k": (1_000, 20, 200, 20),
    "5k": (5_000, 100, 1_000, 20),
    "20k": (20_000, 200, 4_000, 20),
    "50k": (50_000, 500, 10_000, 20),
    # a realistic density (issue #15's cluster: 5,000 pods on 50 nodes; AKS allows at most
    # 250 pods a node): 100 pods a node. The rows above keep 20 nodes for comparability.
    "1k/10n": (1_000, 20, 200, 10),
    "5k/50n": (5_000, 100, 1_000, 50),
    "20k/200n": (20_000, 200, 4_000, 200),
    "50k/500n": (50_000, 500, 10_000, 500),
    # AKS's densest (250 pods a node, its maximum)
    "20k/80n": (20_000, 200, 4_000, 80),
    "50k/200n": (50_000, 500, 10_000, 200),
}
GOALS = {"plan": 10.0, "lint": 15.0, "lint-yaml": 15.0}  # seconds at 20k pods
GOALS_5K = {"lint": 3.0, "lint-yaml": 4.0}  # issue 15: lint at 5k pods, JSON and YAML
GOAL_MB = 1024


@dataclass(slots=True)
class Run:
    size: str
    command: str
    seconds: float  # wall
    cpu: float  # user + system seconds of the child
    peak_mb: float  # the peak of the processes' PSS, summed
    exit_code: int
    connections: int = 0  # lint: the connections it judged (its first line says how many)


def write_cluster(size: str, folder: Path) -> Path:
    pods, namespaces, policies, nodes = SIZES[size]
    docs = generate(pods=pods, namespaces=namespaces, policies=policies, nodes=nodes, seed=1)
    path = folder / f"cluster-{size.replace('/', '-')}.json"
    with path.open("w", encoding="utf-8") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": docs}, f, indent=4)
    return path


def run(size: str, command: str, path: Path, profile: str | None) -> Run:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable]
    if profile:
        argv += ["-m", "cProfile", "-o", f"{profile}.{command}.{size}", "-m", "netparity"]
    else:
        argv += ["-m", "netparity"]
    if command == "lint-yaml":  # the same cluster as `kubectl get -o yaml` writes it
        path = path.with_suffix(".yaml")
        if not path.exists():
            import yaml

            docs = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            with path.open("w", encoding="utf-8") as f:
                yaml.dump(docs, f, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))
    argv += [command.removesuffix("-yaml"), str(path)]
    t0 = time.perf_counter()
    # stderr into a file: a pipe read only after stdout could fill and stall the child
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=errfile)
        memory = Memory(proc.pid)
        assert proc.stdout is not None
        first = proc.stdout.readline().decode(errors="replace")
        while proc.stdout.read(1 << 20):  # the rest unread: it can be hundreds of MB
            pass
        proc.stdout.close()
        peak = memory.stop()
        _, status, usage = os.wait4(proc.pid, 0)
        errfile.seek(0)
        err = errfile.read()
    judged = re.search(r"\((\d+) connections evaluated", first)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    code = proc.returncode
    text = err.decode(errors="replace")
    if "Traceback (most recent call last)" in text:
        code = -1  # an uncaught exception also exits 1, like a lint with findings
        sys.stderr.write(text[-2000:])
    elif code not in (0, 1, 3):  # lint: 1 findings, 3 not judged
        sys.stderr.write(text)
    cpu = usage.ru_utime + usage.ru_stime
    connections = int(judged.group(1)) if judged else 0
    # not usage.ru_maxrss: a child's starts at this process's resident size when forked
    return Run(size, command, seconds, cpu, peak / 1024, code, connections)


class Memory:
    """The peak of a process tree's proportional set sizes summed (KiB), sampled from
    /proc every 50 ms (less often where a sample takes long) by a thread of its own,
    until `stop`; at least the process's own
    peak resident size (VmHWM: a peak between two samples), read at each sample and at
    `stop`, before the process is reaped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, _hwm(self.pid))
        return self.peak

    def _sample(self) -> None:
        wait = 0.05
        while not self.done.wait(wait):
            began = time.perf_counter()
            pss = sum(_pss(pid) for pid in _tree(self.pid))
            self.peak = max(self.peak, pss, _hwm(self.pid))
            # reading a large process's PSS walks its page tables: at 1.5 GB in three
            # processes, every 50 ms took most of a core from the command measured (its
            # wall time 54-55 s against 50 s unwatched). At most a twentieth of one here.
            wait = max(0.05, 20 * (time.perf_counter() - began))


def _tree(pid: int) -> list[int]:
    """A process and its descendants (Linux's /proc/PID/task/TID/children)."""
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                for child in f.read().split():
                    out += _tree(int(child))
    except OSError:  # it ended meanwhile
        pass
    return out


def _hwm(pid: int) -> int:
    """A process's peak resident size (KiB; 0 once it is gone)."""
    return _proc_kib(f"/proc/{pid}/status", "VmHWM:")


def _pss(pid: int) -> int:
    """A process's proportional set size (KiB; 0 once it is gone)."""
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def _proc_kib(path: str, field: str) -> int:
    """The kB figure of `field` in a /proc file (0 where the process is gone)."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def per_doubling(small: Run, big: Run) -> float:
    """CPU time growth per doubling of the cluster between two sizes (2.0 = linear)."""
    ratio = SIZES[big.size][0] / SIZES[small.size][0]
    if small.cpu <= 0 or ratio <= 1:
        return float("nan")
    return float(2 ** (math.log(big.cpu / small.cpu) / math.log(ratio)))


def _per(r: Run) -> str:
    """The lint's connections judged, and its CPU time per 1,000 of them."""
    if not r.connections:
        return " | "
    return f"{r.connections:,} | {1000 * r.cpu / r.connections:.2f} s"


def series(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """The runs to compare for growth, smallest cluster first: those on 20 nodes (the
    issue's sizes: pods a node grow with the cluster), then those of one density (pods a
    node, as AKS's maximum of 250 keeps it on a real cluster), where two or more sizes have
    it. A 20-node size of such a density is in both."""
    out: list[tuple[str, list[Run]]] = []
    fixed = [r for r in runs if SIZES[r.size][3] == 20]
    if len(fixed) > 1:
        out.append(("on 20 nodes", fixed))
    densities: dict[int, list[Run]] = {}
    for r in runs:
        pods, _, _, nodes = SIZES[r.size]
        densities.setdefault(pods // nodes, []).append(r)
    for density, mine in sorted(densities.items()):
        if len(mine) > 1:
            out.append((f"at {density} pods a node", mine))
    return [(name, sorted(rs, key=lambda r: SIZES[r.size][0])) for name, rs in out]


def report(runs: list[Run], commands: list[str]) -> str:
    lines = [
        "| pods / namespaces / policies / nodes | command | wall time | CPU time | peak memory "
        "| connections judged | CPU per 1,000 connections | exit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        pods, namespaces, policies, nodes = SIZES[r.size]
        lines.append(
            f"| {pods:,} / {namespaces:,} / {policies:,} / {nodes} | {r.command} | {r.seconds:.1f} s "
            f"| {r.cpu:.1f} s | {r.peak_mb:.0f} MB | {_per(r)} | {r.exit_code} |"
        )
    lines.append("")
    for command in commands:
        mine = [r for r in runs if r.command == command]
        for name, rs in series(mine):
            steps = [
                f"{a.size} -> {b.size}: x{b.cpu / a.cpu:.1f} CPU time "
                f"(x{per_doubling(a, b):.2f} per doubling; wall x{b.seconds / a.seconds:.1f}"
                + (
                    f"; connections judged x{b.connections / a.connections:.1f}"
                    if a.connections
                    else ""
                )
                + ")"
                for a, b in itertools.pairwise(rs)
                if a.cpu > 0 and a.seconds > 0
            ]
            if steps:
                lines.append(f"{command} growth {name}: " + "; ".join(steps))
        for r in mine:
            if r.size.startswith("5k") and command in GOALS_5K:
                ok = r.seconds < GOALS_5K[command]
                lines.append(
                    f"{command} at {r.size}: {r.seconds:.1f} s wall ({r.cpu:.1f} s CPU) "
                    f"(goal < {GOALS_5K[command]:.0f} s: {'met' if ok else 'NOT met'})"
                )
            if r.size.startswith("20k"):
                ok = r.seconds < GOALS[command] and r.peak_mb < GOAL_MB
                lines.append(
                    f"{command} at {r.size}: {r.seconds:.1f} s wall ({r.cpu:.1f} s CPU), "
                    f"{r.peak_mb:.0f} MB "
                    f"(goal < {GOALS[command]:.0f} s, < {GOAL_MB} MB: "
                    f"{'met' if ok else 'NOT met'})"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--sizes",
        default="1k,5k,20k",
        help=f"comma-separated sizes out of {', '.join(SIZES)} (default: %(default)s)",
    )
    p.add_argument("--only", choices=("plan", "lint"), help="run one command only")
    p.add_argument(
        "--yaml", action="store_true", help="also lint each cluster written as YAML (lint-yaml)"
    )
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="do not compile the package's bytecode first (each run then compiles what it "
        "imports where PYTHONDONTWRITEBYTECODE is set)",
    )
    p.add_argument("--profile", metavar="PREFIX", help="cProfile each run into PREFIX.CMD.SIZE")
    p.add_argument("--keep", metavar="DIR", help="write the clusters into DIR and keep them")
    args = p.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"unknown size(s) {', '.join(unknown)}; known: {', '.join(SIZES)}")
    commands = [args.only] if args.only else ["plan", "lint"]
    if args.yaml and "lint" in commands:
        commands.append("lint-yaml")
    if not args.no_compile:
        # as an installed package runs: pip compiles the bytecode when it installs a wheel;
        # a checkout under PYTHONDONTWRITEBYTECODE=1 would compile every module every run
        compileall.compile_dir(ROOT / "netparity", quiet=1)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for size in sizes:
            t0 = time.perf_counter()
            path = write_cluster(size, folder)
            mb = path.stat().st_size / 1e6
            print(
                f"{size}: {path.name} ({mb:.0f} MB) generated in {time.perf_counter() - t0:.1f} s"
            )
            for command in commands:
                r = run(size, command, path, args.profile)
                runs.append(r)
                print(
                    f"  {command}: {r.seconds:.1f} s wall, {r.cpu:.1f} s CPU, "
                    f"peak {r.peak_mb:.0f} MB, exit {r.exit_code}"
                )
                sys.stdout.flush()
    print()
    print(report(sorted(runs, key=lambda r: (commands.index(r.command), 0)), commands))
    return 0 if all(r.exit_code in (0, 1, 3) for r in runs) else 1  # -1: it crashed


if __name__ == "__main__":
    sys.exit(main())
