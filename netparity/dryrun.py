"""A backend that answers from the engine: `--cluster file:SNAPSHOT.yaml[@DATAPLANE]`.

No packet is sent: each probe is "observed" as the engine predicts it under the named
dataplane (allow -> connected, deny -> timeout, unknown -> error). It runs the whole
flow (plan, record, baseline, parity) on a snapshot file, for dry runs before touching a
cluster and for netparity's own tests. `overrides` (probe id -> observations, one per
try, the last repeating) makes it disagree with the engine on purpose.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from netparity.backend import ClusterFacts, Observed, ProbeResult, Progress, Target
from netparity.engine.dataplane import CURRENT, DATAPLANES, get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Decision
from netparity.errors import InputError
from netparity.model.snapshot import Snapshot, load_snapshot

SCHEME = "file:"


def parse_file_cluster(spec: str) -> tuple[Path, str]:
    """`file:PATH[@DATAPLANE]` -> (path, dataplane); the current one (npm) when none is named."""
    rest = spec.removeprefix(SCHEME)
    path, at, dp = rest.rpartition("@")
    if not at or "/" in dp:
        path, dp = rest, CURRENT
    if not path:
        raise InputError("names no snapshot file (file:SNAPSHOT.yaml[@DATAPLANE])", field="cluster")
    if dp not in DATAPLANES:
        raise InputError(
            f"unknown dataplane {dp!r} in {spec!r} (expected one of {', '.join(DATAPLANES)})",
            field="cluster",
        )
    return Path(path), dp


def file_cluster_name(path: Path) -> str:
    """The cluster a snapshot file stands for: its path as given, without the suffix.

    `file:/a/x.yaml` and `file:/b/x.yaml` are two clusters (two report folders, two
    baselines); `file:x.yaml@npm` and `file:x.yaml@cilium` are one, before and after."""
    return f"file:{path.with_suffix('').as_posix()}"


class SnapshotBackend:
    """A Backend whose observations are the engine's predictions (plus optional overrides)."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        dataplane: str = CURRENT,
        name: str = "snapshot",
        overrides: Mapping[str, Sequence[Observed]] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._dataplane = get_dataplane(dataplane).with_config(snapshot.config)
        self._engine = Engine(snapshot)
        self._name = name
        self._overrides = {k: tuple(v) for k, v in (overrides or {}).items()}
        self._tries: dict[str, int] = defaultdict(int)
        self.batches: list[tuple[str, int]] = []  # (source, size) of every batch run

    @classmethod
    def from_spec(
        cls, spec: str, *, overrides: Mapping[str, Sequence[Observed]] | None = None
    ) -> SnapshotBackend:
        path, dp = parse_file_cluster(spec)
        return cls(
            load_snapshot([str(path)]),
            dataplane=dp,
            name=file_cluster_name(path),
            overrides=overrides,
        )

    def facts(self) -> ClusterFacts:
        return ClusterFacts(name=self._name, backend="file", dataplane=self._dataplane.name)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _observe(self, target: Target) -> ProbeResult:
        n = self._tries[target.id]
        self._tries[target.id] += 1
        forced = self._overrides.get(target.id)
        if forced:
            observed = forced[min(n, len(forced) - 1)]
            return ProbeResult(
                id=target.id,
                observed=observed,
                error="forced by the override table" if observed is Observed.ERROR else None,
                source="engine",
            )
        verdict = self._engine.evaluate(target.traffic, self._dataplane)
        if verdict.decision is Decision.ALLOW:
            return ProbeResult(
                id=target.id, observed=Observed.CONNECTED, latency_ms=0.0, source="engine"
            )
        if verdict.decision is Decision.DENY:
            return ProbeResult(id=target.id, observed=Observed.TIMEOUT, source="engine")
        return ProbeResult(
            id=target.id,
            observed=Observed.ERROR,
            error=f"the engine cannot decide: {verdict.explanation}",
            source="engine",
        )

    def run(
        self, targets: Sequence[Target], *, timeout: float, progress: Progress | None = None
    ) -> list[ProbeResult]:
        groups: dict[str, list[Target]] = {}
        for t in targets:
            groups.setdefault(str(t.traffic.source), []).append(t)
        results: dict[str, ProbeResult] = {}
        done = 0
        for source, batch in groups.items():
            self.batches.append((source, len(batch)))
            for t in batch:
                results[t.id] = self._observe(t)
            done += len(batch)
            if progress is not None:
                progress(source, done, len(targets))
        return [results[t.id] for t in targets]

    def close(self) -> None:
        return None
