"""Records for the report's tests: the example cluster probed by the engine-backed backend.

The baseline is the example under npm; the current run is the same cluster under cilium
with a few observations forced (a lost, a gained, a flaky and an error probe nobody
predicted; a predicted change that did not happen; a probe not run after the upgrade,
which is missing; a probe neither run could run) and one predicted change accepted, so
that every status and every section of the report has something in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netparity.accept import Acceptance
from netparity.backend import Observed
from netparity.compare import Parity, compare
from netparity.compare_output import parity_json
from netparity.dryrun import SnapshotBackend
from netparity.model.snapshot import Snapshot, load_snapshot
from netparity.plan.model import Plan
from netparity.plan.planner import make_plan
from netparity.record import Record, build_record, not_run, record_json, write_json_atomic
from netparity.session import probe_all

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "aks-migration.yaml"
CLUSTER = "file:aks-migration"


@dataclass(frozen=True, slots=True, kw_only=True)
class Forced:
    lost: str  # allowed in both predictions, forced to time out now
    gained: str  # denied in both predictions, forced through now
    flaky: str
    error: str
    accepted: str  # a predicted change, accepted
    unrealized: str  # a predicted change that did not happen
    missing: str  # observed in the baseline, not run now
    not_run: str  # run by neither


def probe_run(
    snapshot: Snapshot,
    plan: Plan,
    dataplane: str,
    *,
    phase: str,
    time: str,
    overrides: dict[str, list[Observed]] | None = None,
    reasons: dict[str, str] | None = None,
) -> Record:
    backend = SnapshotBackend(snapshot, dataplane=dataplane, name=CLUSTER, overrides=overrides)
    tries = probe_all(backend, plan.probes, timeout=1.0, retries=1)
    said = reasons or {}
    skipped = {
        pid: said.get(pid, why) for pid, results in tries.items() if (why := not_run(results))
    }
    return build_record(
        facts=backend.facts(),
        cluster=CLUSTER,
        plan=plan,
        results=tries,
        phase=phase,
        probe_timeout=1.0,
        retries=1,
        time=time,
        exclude=skipped,
    )


def choose(plan: Plan) -> Forced:
    def decisions(p: Any) -> tuple[str, str]:
        return str(p.predicted["npm"].decision), str(p.predicted["cilium"].decision)

    same_allow = [p.id for p in plan.probes if decisions(p) == ("allow", "allow")]
    same_deny = [p.id for p in plan.probes if decisions(p) == ("deny", "deny")]
    changes = [p.id for p in plan.probes if decisions(p) == ("allow", "deny")]
    return Forced(
        lost=same_allow[0],
        gained=same_deny[0],
        flaky=same_allow[1],
        error=same_allow[2],
        accepted=changes[-1],
        unrealized=changes[0],
        missing=same_allow[3],
        not_run=same_allow[4],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Runs:
    snapshot: Snapshot
    plan: Plan
    baseline: Record
    current: Record
    parity: Parity
    forced: Forced


def make_runs() -> Runs:
    snapshot = load_snapshot([str(EXAMPLE)])
    plan = make_plan(snapshot, current="npm", target="cilium")
    forced = choose(plan)
    no_host = "no hostNetwork pod can be made on this cluster"
    baseline = probe_run(
        snapshot,
        plan,
        "npm",
        phase="pre",
        time="2026-11-20T08:00:00Z",
        overrides={forced.not_run: [Observed.NOT_RUN]},
        reasons={forced.not_run: no_host},
    )
    current = probe_run(
        snapshot,
        plan,
        "cilium",
        phase="post",
        time="2026-11-21T09:30:00Z",
        overrides={
            forced.lost: [Observed.TIMEOUT],
            forced.gained: [Observed.CONNECTED],
            forced.flaky: [Observed.TIMEOUT, Observed.CONNECTED],
            forced.error: [Observed.ERROR],
            forced.unrealized: [Observed.CONNECTED],
            forced.missing: [Observed.NOT_RUN],
            forced.not_run: [Observed.NOT_RUN],
        },
        reasons={forced.missing: no_host, forced.not_run: no_host},
    )
    accepts = {
        forced.accepted: Acceptance(id=forced.accepted, reason="fixed by PR #123 after the upgrade")
    }
    parity = compare(baseline, current, accepts=accepts)
    return Runs(
        snapshot=snapshot,
        plan=plan,
        baseline=baseline,
        current=current,
        parity=parity,
        forced=forced,
    )


def write_runs(runs: Runs, folder: Path) -> tuple[Path, Path]:
    """baseline.json and parity.json in `folder`."""
    baseline = folder / "baseline.json"
    parity = folder / "parity.json"
    write_json_atomic(baseline, record_json(runs.baseline))
    write_json_atomic(
        parity,
        parity_json(runs.parity, baseline_path=str(baseline), current_path="record-post.json"),
    )
    return baseline, parity
