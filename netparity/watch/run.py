"""`netparity watch`: probe the sentinel set every interval while a lab or a Kubernetes
cluster is migrated, and keep the timeline (`timeline.json` in the cluster's report folder,
rewritten after every round, so that an interrupted watch keeps what it recorded).

A lab is held as a user (`lab upgrade --rolling` changes it beside it); its probes are
planned once, their ids by meaning, and each round reads the lab's state again, so pods that
came back at new addresses are found by name. On Kubernetes (`netparity.watch.kube`) the
twins are placed by the Kubernetes backend and re-placed as nodes come and go; probes are
planned again where pods or nodes changed, keeping their ids by meaning. A probe whose pod
is absent or whose node is being reimaged is "not placed" for that round, never a deny.
Each probe runs once a round (no retries: a round is a point in time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from netparity.backend import Target
from netparity.errors import InputError
from netparity.model.snapshot import Snapshot
from netparity.plan.model import PlannedProbe
from netparity.watch.probes import nodes_of, pods_of, seen_of
from netparity.watch.sentinels import (
    DEFAULT_MAX_SENTINELS,
    SentinelSet,
    candidates_from_plan,
    candidates_from_record,
    select_sentinels,
)
from netparity.watch.timeline import NodeChange, Sample, Seen, Timeline, WatchedProbe, timeline_json

STABLE_ROUNDS = 3  # --until-stable: rounds in a row at the target's predictions, enforcing


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchSettings:
    cluster: str
    interval: float = 2.0
    until_stable: bool = False
    max_duration: float | None = None
    report_dir: Path = Path("reports")
    baseline: Path | None = None
    probes: tuple[Path, ...] = ()
    max_sentinels: int = DEFAULT_MAX_SENTINELS
    target: str = "cilium"
    probe_timeout: float = 1.0
    # Kubernetes only: the kubeconfig (default: $KUBECONFIG, ~/.kube/config), the probe
    # image, the seconds a new twin settles before it is probed (default: the backend's)
    kubeconfig: str | None = None
    probe_image: str | None = None
    settle: float | None = None


@dataclass(slots=True, kw_only=True)
class _Watched:
    probe: PlannedProbe
    why: str
    nodes: list[str]  # every node its pods stood on (a re-placed probe adds its new ones)
    samples: list[Sample] = field(default_factory=list)

    def see_nodes(self, nodes: Sequence[str]) -> None:
        self.nodes.extend(n for n in nodes if n not in self.nodes)


def watch(settings: WatchSettings, *, say: Callable[[str], None] | None = None) -> Path:
    """Watch a lab or a Kubernetes cluster (module doc) until interrupted, stable or out of
    time; returns the path of timeline.json (also written when interrupted, then the
    interrupt goes on)."""
    w = Watch(settings, say=say)
    try:
        w.prepare()
        return w.loop()
    finally:
        w.close()


class Watch:
    """One watch: `prepare` (open the lab or cluster, choose the sentinels), `loop` (probe
    them every interval, write timeline.json), `close`. `netparity watch` and the suites'
    `--phase during` both drive it."""

    def __init__(self, settings: WatchSettings, *, say: Callable[[str], None] | None = None):
        self.settings = settings
        self.tell: Callable[[str], None] = say if say is not None else (lambda _m: None)
        self.source: _Source | None = None
        self.watched: list[_Watched] = []
        self.chosen: SentinelSet | None = None
        self.current = ""
        self.target = ""
        self.cluster = ""
        self.out = Path()
        self.limit: float | None = settings.max_duration
        self.header: list[str] = []
        self.timeline: Timeline | None = None  # the last one written

    def prepare(self) -> None:
        from netparity.outdir import check_output_dir
        from netparity.plan.planner import make_plan
        from netparity.probefile import load_probe_file, resolve_probes
        from netparity.record import cluster_dirname, default_baseline, load_record
        from netparity.session import parse_cluster

        settings, tell = self.settings, self.tell
        _check_settings(settings)
        spec = parse_cluster(settings.cluster)
        if spec.kind == "file":
            raise InputError(
                f"{spec.text!r}: a snapshot file cannot be watched: give lab:NAME or a "
                "kubeconfig context",
                field="--cluster",
            )
        self.cluster = spec.text
        folder = settings.report_dir / cluster_dirname(spec.text)
        check_output_dir(folder, "the report folder (--report-dir)")
        self.out = folder / "timeline.json"
        specs = [s for path in settings.probes for s in load_probe_file(path)]
        self.source = source = self._open_source(spec.kind, spec.value)
        snapshot = source.snapshot()
        baseline_path = settings.baseline or default_baseline(settings.report_dir, spec.text)
        baseline = None
        if settings.baseline is not None or baseline_path.is_file():
            baseline = load_record(baseline_path)
        current = baseline.plan.current if baseline is not None else source.current()
        target = baseline.plan.target if baseline is not None else settings.target
        self.current, self.target = current, target
        resolved = resolve_probes(specs, snapshot)
        plan = make_plan(snapshot, current=current, target=target, explicit=resolved)
        extra = {p.id for p in plan.probes if str(p.intent) == "explicit"}
        cands = candidates_from_record(baseline) if baseline else candidates_from_plan(plan)
        self.chosen = chosen = select_sentinels(
            cands, max_sentinels=settings.max_sentinels, extra=extra
        )
        by_id = {p.id: p for p in plan.probes}
        self.watched = [
            _Watched(probe=by_id[i], why=chosen.why[i], nodes=list(nodes_of(by_id[i])))
            for i in chosen.ids
            if i in by_id
        ]

        def replan(snap: Snapshot) -> dict[str, PlannedProbe]:
            """The probes by id as the cluster is now (ids by meaning)."""
            try:
                now = resolve_probes(specs, snap)
            except InputError:  # an explicit probe's pod is away: its probe is not placed
                now = ()
            again = make_plan(snap, current=current, target=target, explicit=now)
            return {p.id: p for p in again.probes}

        source.replan = replan
        source.replan_first(by_id, snapshot)
        where = f"lab {spec.value}" if spec.kind == "lab" else f"cluster {spec.text}"
        line = (
            f"watching {len(self.watched)} sentinel probes of {where} ({current} -> "
            f"{target}) every {settings.interval:g} s"
            + (f"; {chosen.left_out} left out by --max-sentinels" if chosen.left_out else "")
            + (f"; baseline {baseline_path}" if baseline else "; no baseline: the plan's")
        )
        self.header.append(line)
        tell(line)

    def _open_source(self, kind: str, value: str) -> _Source:
        """The lab, or the Kubernetes cluster (whose watch stops at --max-duration, by
        default the backend's longest run)."""
        if kind == "lab":
            return _LabSource(value)
        from netparity.kube.backend import DEFAULT_MAX_DURATION
        from netparity.watch.kube import KubeSource

        settings = self.settings
        if self.limit is None:
            self.limit = DEFAULT_MAX_DURATION
            self.tell(
                f"no --max-duration: on Kubernetes the watch stops after {self.limit:g} s "
                "(its probe pods' deadline is set when they are made)"
            )
        return KubeSource(
            value,
            max_duration=self.limit,
            kubeconfig=settings.kubeconfig,
            probe_image=settings.probe_image,
            settle=settings.settle,
            log=self.tell,
        )

    def _timeline(self, start: float, end: float, why: str) -> Timeline:
        source, chosen = self.source, self.chosen
        assert source is not None and chosen is not None
        current, target = self.current, self.target
        return Timeline(
            cluster=self.cluster,
            current=current,
            target=target,
            start=start,
            end=end,
            interval=self.settings.interval,
            probes=tuple(
                WatchedProbe(
                    id=w.probe.id,
                    title=w.probe.title,
                    current=_decision(w.probe, current),
                    target=_decision(w.probe, target),
                    nodes=tuple(w.nodes),
                    why=w.why,
                    samples=tuple(w.samples),
                )
                for w in self.watched
            ),
            nodes=source.node_changes(start),
            enforced=source.enforced(start),
            stopped=why,
            left_out=chosen.left_out,
            max_sentinels=chosen.max_sentinels,
        )

    def loop(self) -> Path:
        """Probe every interval until interrupted, stable or out of time; timeline.json after
        every round and at the end (also when interrupted, then the interrupt goes on)."""
        from netparity.record import write_json_atomic

        source, settings, target = self.source, self.settings, self.target
        assert source is not None
        start = time.time()
        stopped = "interrupted"
        stable = 0

        def write(why: str) -> None:
            self.timeline = self._timeline(start, time.time(), why)
            write_json_atomic(self.out, timeline_json(self.timeline))

        try:
            while True:
                began = time.time()
                source.round(self.watched, began, settings.probe_timeout, target)
                write("running")
                at_target = all(
                    w.samples and w.samples[-1].verdict.value == _decision(w.probe, target)
                    for w in self.watched
                    if _decision(w.probe, target) in ("allow", "deny")
                )
                stable = stable + 1 if source.enforcing(target) and at_target else 0
                if settings.until_stable and stable >= STABLE_ROUNDS:
                    stopped = "stable"
                    break
                now = time.time()
                if self.limit is not None and now - start >= self.limit:
                    stopped = "max-duration"
                    break
                time.sleep(max(0.0, began + settings.interval - now))
        finally:
            write(stopped)
            self.tell(f"timeline: {self.out} ({stopped})")
        return self.out

    def close(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            source.close()


class _Source(Protocol):
    """What the watch asks of a lab or a cluster."""

    replan: Callable[[Snapshot], Mapping[str, PlannedProbe]] | None

    def snapshot(self) -> Snapshot: ...
    def current(self) -> str: ...
    def replan_first(self, planned: Mapping[str, PlannedProbe], snap: Snapshot) -> None: ...
    def round(self, watched: Sequence[Any], began: float, timeout: float, target: str) -> None: ...
    def node_changes(self, start: float) -> tuple[NodeChange, ...]: ...
    def enforced(self, start: float) -> float | None: ...
    def enforcing(self, target: str) -> bool: ...
    def close(self) -> None: ...


class _LabSource:
    """A lab, held as a user while `lab upgrade --rolling` changes it; its pods keep their
    names (and nodes) across a reimage, so the probes are planned once. Its state is read
    once after each round (as the lab's lock allows), and the round's timeline from it."""

    def __init__(self, name: str) -> None:
        from netparity.lab import LabBackend

        self.backend = LabBackend(name, hold=True)
        self.replan: Callable[[Snapshot], Mapping[str, PlannedProbe]] | None = None
        self._state: Any = None

    def snapshot(self) -> Snapshot:
        return self.backend.snapshot()

    def current(self) -> str:
        return self.backend.facts().dataplane

    def replan_first(self, planned: Mapping[str, PlannedProbe], snap: Snapshot) -> None:
        return None

    def round(self, watched: Sequence[Any], began: float, timeout: float, target: str) -> None:
        self._state = _round(self.backend, watched, began, timeout)

    def _rolling(self, start: float) -> Any:
        state = self._state if self._state is not None else self.backend.state()
        rolling = state.rolling
        if rolling is None or (rolling.enforced is not None and rolling.enforced < start):
            return None
        return rolling

    def node_changes(self, start: float) -> tuple[NodeChange, ...]:
        rolling = self._rolling(start)
        if rolling is None:
            return ()
        return tuple(
            NodeChange(node=r.node, start=r.start, end=r.end, dataplane=rolling.target)
            for r in rolling.reimages
        )

    def enforced(self, start: float) -> float | None:
        rolling = self._rolling(start)
        return None if rolling is None else rolling.enforced

    def enforcing(self, target: str) -> bool:
        state = self._state if self._state is not None else self.backend.state()
        return bool(
            state.dataplane == target
            and (state.rolling is None or state.rolling.enforced is not None)
        )

    def close(self) -> None:
        self.backend.close()


def _check_settings(settings: WatchSettings) -> None:
    if not settings.interval > 0:
        raise InputError(f"must be positive, got {settings.interval:g}", field="--interval")
    if settings.max_duration is not None and not settings.max_duration > 0:
        raise InputError(f"must be positive, got {settings.max_duration:g}", field="--max-duration")
    if settings.max_sentinels < 1:
        raise InputError(
            f"must be 1 or more, got {settings.max_sentinels}", field="--max-sentinels"
        )


def _decision(p: PlannedProbe, dataplane: str) -> str:
    pred = p.predicted.get(dataplane)
    return "unknown" if pred is None else str(pred.decision)


def _round(backend: object, watched: Sequence[_Watched], began: float, timeout: float) -> Any:
    """One round: every placed probe once; not placed where a pod or node is away. Returns
    the lab's state after the round."""
    from netparity.lab import LabBackend

    assert isinstance(backend, LabBackend)
    before = backend.state()
    topo = before.topology
    assert topo is not None
    pods = {p.key for p in topo.pods}
    busy = set(before.rolling.reimaging()) if before.rolling is not None else set()
    run: list[_Watched] = []
    for w in watched:
        away = [k for k in pods_of(w.probe) if k not in pods]
        if away or busy & set(w.nodes):
            why = f"pod {away[0]} is not placed" if away else "its node is being reimaged"
            w.samples.append(Sample(time=began, verdict=Seen.NOT_PLACED, detail=why))
        else:
            run.append(w)
    # the pods' nodes as the lab has them now (a pod's node never changes on reimage)
    targets = [Target(id=w.probe.id, traffic=w.probe.traffic) for w in run]
    results = backend.run(targets, timeout=timeout) if targets else []
    after = backend.state()
    # a node that went down while this round ran: its probes saw that, not a policy
    moved: set[str] = set(busy)
    if after.rolling is not None:
        moved |= {
            r.node for r in after.rolling.reimages if r.end is None or r.start >= began - timeout
        }
    for w, r in zip(run, results, strict=True):
        seen = seen_of(r)
        if seen is not Seen.ALLOW and moved & set(w.nodes):
            w.samples.append(
                Sample(
                    time=began, verdict=Seen.NOT_PLACED, detail="its node was reimaged meanwhile"
                )
            )
            continue
        w.samples.append(
            Sample(time=began, verdict=seen, detail=r.error if seen is Seen.ERROR else None)
        )
    return after


__all__ = ["Watch", "WatchSettings", "watch"]
