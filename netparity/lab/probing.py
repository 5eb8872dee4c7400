"""Running resolved lab probes, with the LoadBalancer routes a batch needs set for its length
(serialised per namespace across processes). Two ways, with the same verdicts (the agent's
own probing code either way):

- `run_in_process` (the default): every source's probes at once from this process, each
  socket created inside its source's namespace (`netparity.lab.prober`);
- `run_source`: one `agent.py probe` process per source batch, inside the source's
  namespace (`ip netns exec`), as before; selectable for comparison.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netparity.backend import Observed
from netparity.errors import NetparityError
from netparity.lab import netns as nx
from netparity.lab import prober
from netparity.lab.agents import agent_python
from netparity.lab.resolve import Probe
from netparity.lab.state import log_dir


@dataclass(slots=True)
class SubBatch:
    routes: dict[str, str] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)


def group_batches(probes: Sequence[Probe]) -> dict[str, list[SubBatch]]:
    """Probes by source namespace, in sub-batches whose LoadBalancer routes agree."""
    groups: dict[str, list[SubBatch]] = {}
    for p in probes:
        subs = groups.setdefault(p.source.netns, [])
        for sub in subs:
            if p.lb_route is None or sub.routes.get(*p.lb_route) == p.lb_route[1]:
                break
        else:
            sub = SubBatch()
            subs.append(sub)
        if p.lb_route is not None:
            sub.routes[p.lb_route[0]] = p.lb_route[1]
        sub.probes.append(p)
    return groups


@dataclass(frozen=True, slots=True, kw_only=True)
class Raw:
    observed: Observed
    token: str | None = None
    latency_ms: float | None = None
    error: str | None = None


@contextlib.contextmanager
def _route_lock(lab: str, netns: str) -> Iterator[None]:
    """Serialise LB-route sub-batches of one source namespace across processes."""
    path = log_dir(lab) / f"{netns}.routes.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run_source(
    lab: str, netns: str, subs: list[SubBatch], timeout: float, agent: str
) -> list[tuple[Probe, Raw]]:
    out: list[tuple[Probe, Raw]] = []
    for sub in subs:
        with _route_lock(lab, netns) if sub.routes else contextlib.nullcontext():
            try:
                if sub.routes:
                    nx.ip_batch(
                        [f"route replace {ip}/32 {spec}" for ip, spec in sub.routes.items()],
                        netns=netns,
                        what=f"LoadBalancer routes in {netns}",
                    )
                raws = _agent_probe(netns, sub.probes, timeout, agent)
            except NetparityError as e:
                raws = [Raw(observed=Observed.ERROR, error=str(e)) for _ in sub.probes]
            finally:
                if sub.routes:
                    nx.ip_batch_force([f"route del {ip}/32" for ip in sub.routes], netns=netns)
        out.extend(zip(sub.probes, raws, strict=True))
    return out


def run_in_process(
    lab: str, groups: Mapping[str, list[SubBatch]], timeout: float, agent: str
) -> list[tuple[Probe, Raw]]:
    """Every source's probes from this one process, in rounds: round k runs sub-batch k of
    every source namespace at once (one round unless LoadBalancer routes disagree)."""
    out: list[tuple[Probe, Raw]] = []
    rounds = max((len(subs) for subs in groups.values()), default=0)
    for k in range(rounds):
        batch = sorted((ns, subs[k]) for ns, subs in groups.items() if k < len(subs))
        with contextlib.ExitStack() as stack:
            runnable: list[tuple[str, SubBatch]] = []
            for ns, sub in batch:  # sorted: two runs take the route locks in one order
                if not sub.routes:
                    runnable.append((ns, sub))
                    continue
                stack.enter_context(_route_lock(lab, ns))
                stack.callback(
                    nx.ip_batch_force, [f"route del {ip}/32" for ip in sub.routes], netns=ns
                )
                try:
                    nx.ip_batch(
                        [f"route replace {ip}/32 {spec}" for ip, spec in sub.routes.items()],
                        netns=ns,
                        what=f"LoadBalancer routes in {ns}",
                    )
                except NetparityError as e:
                    out.extend((p, Raw(observed=Observed.ERROR, error=str(e))) for p in sub.probes)
                    continue
                runnable.append((ns, sub))
            try:
                results = prober.probe(
                    [(ns, sub.probes) for ns, sub in runnable], timeout, Path(agent)
                )
            except (OSError, NetparityError) as e:
                why = f"the prober failed: {e}"
                results = [
                    [{"observed": "error", "error": why}] * len(s.probes) for _, s in runnable
                ]
        for (_, sub), items in zip(runnable, results, strict=True):
            out.extend(zip(sub.probes, (raw_of(item) for item in items), strict=True))
    return out


def raw_of(item: Mapping[str, Any]) -> Raw:
    """One result object of the agent's (`probe_one`) as a Raw."""
    try:
        observed = Observed(str(item.get("observed")))
    except ValueError:
        observed = Observed.ERROR
    latency = item.get("latency_ms")
    return Raw(
        observed=observed,
        token=item.get("token"),
        latency_ms=float(latency) if isinstance(latency, int | float) else None,
        error=item.get("error"),
    )


def _agent_probe(netns: str, probes: list[Probe], timeout: float, agent: str) -> list[Raw]:
    doc = {
        "timeout": timeout,
        "targets": prober.target_docs(probes),
    }
    argv = [
        "ip",
        "netns",
        "exec",
        netns,
        *agent_python(),
        agent,
        "probe",
        "--timeout",
        str(timeout),
    ]
    wall = timeout * (math.ceil(len(probes) / 1000) + 1) + 20
    try:
        proc = subprocess.run(
            argv, input=json.dumps(doc), capture_output=True, text=True, timeout=wall, check=False
        )
    except subprocess.TimeoutExpired:
        return [
            Raw(observed=Observed.ERROR, error=f"the agent gave no answer in {wall:.0f} s")
        ] * len(probes)
    by_id: dict[str, Raw] = {}
    problem = None
    for line in proc.stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            problem = f"unreadable agent output: {line[:120]}"
            continue
        if not isinstance(item, dict):
            continue
        if "id" not in item:
            problem = str(item.get("error") or item)
            continue
        by_id[str(item["id"])] = raw_of(item)
    if problem is None and proc.returncode != 0:
        problem = (
            proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        )
    missing = Raw(observed=Observed.ERROR, error=f"the agent in {netns} gave no result ({problem})")
    return [by_id.get(str(i), missing) for i in range(len(probes))]
