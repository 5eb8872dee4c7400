"""Find and remove netparity's probe objects: this run's, earlier runs' leftovers, or all.

Only objects labelled netparity.io/run are ever touched (the client refuses any other).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from netparity.errors import ClusterError
from netparity.kube import RUN_LABEL
from netparity.kube.client import CONFIG_MAPS, PODS, SERVICES, Kube, Resource

# Deletion order: the pods and Services first, the anchors (which own them) last.
OWNED: tuple[Resource, ...] = (PODS, SERVICES, CONFIG_MAPS)
_NOUNS = {"Pod": "pod", "Service": "Service", "ConfigMap": "anchor"}


@dataclass(slots=True, kw_only=True)
class RunObjects:
    run_id: str
    objects: list[tuple[Resource, dict[str, Any]]] = field(default_factory=list)

    @property
    def created(self) -> datetime | None:
        stamps = [_created(obj) for _, obj in self.objects]
        known = [s for s in stamps if s is not None]
        return min(known) if known else None

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for res, _ in self.objects:
            noun = _NOUNS.get(res.kind, res.kind)
            counts[noun] = counts.get(noun, 0) + 1
        parts = [f"{n} {noun}{'' if n == 1 else 's'}" for noun, n in counts.items()]
        namespaces = sorted({str(_meta(o).get("namespace")) for _, o in self.objects})
        return f"run {self.run_id}: {', '.join(parts)} in namespace{'' if len(namespaces) == 1 else 's'} {', '.join(namespaces)}"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _created(obj: Mapping[str, Any]) -> datetime | None:
    raw = _meta(obj).get("creationTimestamp")
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def find_runs(kube: Kube, *, run_id: str | None = None) -> dict[str, RunObjects]:
    """Every object labelled netparity.io/run (or =run_id), grouped by run."""
    selector = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    runs: dict[str, RunObjects] = {}
    for res in OWNED:
        for obj in kube.list(res, label_selector=selector) or []:
            labels = _meta(obj).get("labels")
            owner = labels.get(RUN_LABEL) if isinstance(labels, Mapping) else None
            if not owner or (run_id and owner != run_id):
                continue  # not ours, whatever the server's selector did
            runs.setdefault(str(owner), RunObjects(run_id=str(owner))).objects.append((res, obj))
    return runs


def remove(kube: Kube, run: RunObjects, *, on_error: Callable[[str], None] | None = None) -> int:
    """Delete a run's objects (pods, Services, then anchors); the number deleted."""
    done = 0
    for res in OWNED:
        for r, obj in run.objects:
            if r is not res:
                continue
            try:
                if kube.delete(res, obj):
                    done += 1
            except ClusterError as e:
                if on_error is None:
                    raise
                on_error(str(e))
    return done


def prune_leftovers(kube: Kube, *, current: str, started: datetime) -> list[RunObjects]:
    """Remove what earlier runs left behind: other run ids, created before this run started."""
    removed: list[RunObjects] = []
    for run_id, run in sorted(find_runs(kube).items()):
        if run_id == current:
            continue
        created = run.created
        if created is not None and created > started:
            continue  # made after this run started: another run's, still going
        remove(kube, run)
        removed.append(run)
    return removed


def remove_all(kube: Kube) -> list[RunObjects]:
    """Remove every netparity object of every run (`netparity cleanup`)."""
    runs = find_runs(kube)
    for _, run in sorted(runs.items()):
        remove(kube, run)
    return [runs[k] for k in sorted(runs)]
