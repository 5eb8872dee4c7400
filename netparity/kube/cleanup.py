"""Find and remove netparity's probe objects: this run's, dead runs' leftovers, or all.

Only objects labelled netparity.io/run are ever touched (the client refuses any other).
A run is alive while its heartbeat beats: one coordination.k8s.io Lease per namespace of
the run, renewed while it runs (`Heartbeat`). Another run or `netparity cleanup` removes
a run's objects only when the run is dead: its heartbeat is stale, its expiry
(`netparity.io/expires`, the run's planned length plus a margin) has passed, or it has no
heartbeat at all and was made more than `NO_HEARTBEAT_AGE` ago. Clocks: the heartbeat's
renewTime is written by the running machine's clock and read by another's, so the lease
lasts long enough (`LEASE_SECONDS`) to absorb the skew of machines kept in time by NTP.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from netparity.errors import ClusterError
from netparity.kube import EXPIRES_ANNOTATION, RUN_LABEL
from netparity.kube.client import (
    CONFIG_MAPS,
    LEASES,
    NAMESPACES,
    PODS,
    SERVICES,
    Conflict,
    Kube,
    Resource,
)

# Deletion order: the pods and Services first, the heartbeat, the anchors (which own the rest),
# then the run's own Namespace (--allow-host-network's host probe pods live there).
OWNED: tuple[Resource, ...] = (PODS, SERVICES, LEASES, CONFIG_MAPS, NAMESPACES)
_NOUNS = {
    "Pod": "pod",
    "Service": "Service",
    "ConfigMap": "anchor",
    "Lease": "heartbeat",
    "Namespace": "namespace",
}
# A heartbeat not renewed for this long is stale; renewed every quarter of it.
LEASE_SECONDS = 120
# Objects of a run without any heartbeat (made by an older netparity, or before its Lease was
# readable) are left alone this long unless their expiry says otherwise.
NO_HEARTBEAT_AGE = timedelta(hours=1)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def parse_time(raw: object) -> datetime | None:
    """An API timestamp (`2024-01-02T03:04:05Z`, MicroTime with fractions) in UTC, or None."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def api_time(when: datetime) -> str:
    """A Time value: `2024-01-02T03:04:05Z`."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(when: datetime) -> str:
    """A MicroTime value (what a Lease's renewTime holds): `2024-01-02T03:04:05.000000Z`."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _created(obj: Mapping[str, Any]) -> datetime | None:
    return parse_time(_meta(obj).get("creationTimestamp"))


def _seconds(delta: timedelta) -> str:
    return f"{max(0, int(delta.total_seconds()))} s"


@dataclass(slots=True, kw_only=True)
class RunObjects:
    run_id: str
    objects: list[tuple[Resource, dict[str, Any]]] = field(default_factory=list)

    @property
    def created(self) -> datetime | None:
        stamps = [_created(obj) for _, obj in self.objects]
        known = [s for s in stamps if s is not None]
        return min(known) if known else None

    @property
    def expires(self) -> datetime | None:
        """The latest expiry any of its objects carries (None: none says)."""
        stamps = [
            parse_time((_meta(obj).get("annotations") or {}).get(EXPIRES_ANNOTATION))
            for _, obj in self.objects
        ]
        known = [s for s in stamps if s is not None]
        return max(known) if known else None

    @property
    def heartbeat(self) -> tuple[datetime, int] | None:
        """The latest renewal of its Leases and their duration (seconds), None without one."""
        best: tuple[datetime, int] | None = None
        for res, obj in self.objects:
            if res is not LEASES:
                continue
            spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
            assert isinstance(spec, Mapping)
            renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
            renewed = renewed or _created(obj)
            duration = spec.get("leaseDurationSeconds")
            if renewed is None:
                continue
            seconds = duration if isinstance(duration, int) and duration > 0 else LEASE_SECONDS
            if best is None or renewed > best[0]:
                best = (renewed, seconds)
        return best

    def dead(self, now: datetime) -> str | None:
        """Why this run is over and its objects may go, or None while it may be running."""
        expires = self.expires
        if expires is not None and now >= expires:
            return f"expired {_seconds(now - expires)} ago"
        beat = self.heartbeat
        if beat is not None:
            renewed, seconds = beat
            if now - renewed > timedelta(seconds=seconds):
                return f"its heartbeat stopped {_seconds(now - renewed)} ago"
            return None
        created = self.created
        if created is not None and now - created > NO_HEARTBEAT_AGE:
            return f"no heartbeat, made {_seconds(now - created)} ago"
        return None

    def alive(self, now: datetime) -> str:
        """Why this run counts as running (for the message that leaves it alone)."""
        beat = self.heartbeat
        if beat is not None:
            text = f"heartbeat {_seconds(now - beat[0])} ago"
        else:
            text = f"no heartbeat yet, made {_seconds(now - (self.created or now))} ago"
        if self.expires is not None:
            text += f", expires {api_time(self.expires)}"
        return text

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for res, _ in self.objects:
            noun = _NOUNS.get(res.kind, res.kind)
            counts[noun] = counts.get(noun, 0) + 1
        parts = [f"{n} {noun}{'' if n == 1 else 's'}" for noun, n in counts.items()]
        namespaces = sorted(
            {str(_meta(o).get("namespace") or _meta(o).get("name")) for _, o in self.objects}
        )
        return f"run {self.run_id}: {', '.join(parts)} in namespace{'' if len(namespaces) == 1 else 's'} {', '.join(namespaces)}"


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
    """Delete a run's objects (pods, Services, heartbeats, then anchors); the number deleted."""
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


def prune_leftovers(
    kube: Kube, *, current: str, now: datetime | None = None
) -> list[tuple[RunObjects, str]]:
    """Remove what dead runs left behind (see `RunObjects.dead`); each with why it was dead.
    Runs that may still be going are left alone, whenever they started."""
    now = now or datetime.now(UTC)
    removed: list[tuple[RunObjects, str]] = []
    for run_id, run in sorted(find_runs(kube).items()):
        if run_id == current:
            continue
        why = run.dead(now)
        if why is None:
            continue
        remove(kube, run)
        removed.append((run, why))
    return removed


def remove_all(
    kube: Kube, *, force: bool = False, now: datetime | None = None
) -> tuple[list[tuple[RunObjects, str]], list[tuple[RunObjects, str]]]:
    """`netparity cleanup`: remove every run that does not prove it is running (a fresh
    heartbeat, not expired); with `force` every run. Returns (removed, left alone), each
    run with why."""
    now = now or datetime.now(UTC)
    runs = find_runs(kube)
    removed: list[tuple[RunObjects, str]] = []
    kept: list[tuple[RunObjects, str]] = []
    for _, run in sorted(runs.items()):
        why = run.dead(now)
        if why is None and run.heartbeat is not None and not force:
            kept.append((run, run.alive(now)))
            continue
        remove(kube, run)
        removed.append((run, why or ("--force" if run.heartbeat is not None else "no heartbeat")))
    return removed, kept


# --------------------------------------------------------------------------- the heartbeat


def lease_manifest(
    *, name: str, namespace: str, run_id: str, now: datetime, expires: datetime, seconds: int
) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {RUN_LABEL: run_id, "app.kubernetes.io/managed-by": "netparity"},
            "annotations": {
                EXPIRES_ANNOTATION: api_time(expires),
                "netparity.io/note": (
                    "Heartbeat of a running netparity run: while it is renewed, other runs "
                    "and `netparity cleanup` leave the run's objects alone."
                ),
            },
        },
        "spec": {
            "holderIdentity": f"{socket.gethostname()}/{os.getpid()}/{run_id}"[:128],
            "leaseDurationSeconds": seconds,
            "acquireTime": micro_time(now),
            "renewTime": micro_time(now),
        },
    }


class Heartbeat:
    """Renews a run's Leases every quarter of their duration until stopped or expired."""

    def __init__(
        self,
        kube: Kube,
        *,
        expires: datetime,
        seconds: int,
        log: Callable[[str], None],
    ) -> None:
        self.kube = kube
        self.expires = expires
        self.seconds = seconds
        self._log = log
        self._leases: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0

    def add(self, lease: dict[str, Any]) -> None:
        with self._lock:
            self._leases[str(_meta(lease).get("namespace"))] = lease
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="netparity heartbeat", daemon=True
            )
            self._thread.start()

    def leases(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._leases[k] for k in sorted(self._leases)]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=15)

    def _loop(self) -> None:
        interval = max(0.2, self.seconds / 4)
        while not self._stop.wait(interval):
            now = datetime.now(UTC)
            if now >= self.expires:
                self._log(
                    f"the run passed its expiry ({api_time(self.expires)}): its heartbeat stops, "
                    f"and other runs may remove its objects"
                )
                return
            self.renew(now)

    def renew(self, now: datetime) -> None:
        for lease in self.leases():
            meta = _meta(lease)
            body = dict(lease)
            body["spec"] = {**(lease.get("spec") or {}), "renewTime": micro_time(now)}
            try:
                try:
                    fresh = self.kube.replace(LEASES, body)
                except Conflict:  # changed since: renew the current version
                    current = self.kube.get(
                        LEASES, str(meta.get("name")), namespace=str(meta.get("namespace"))
                    )
                    if current is None:
                        raise ClusterError("it was deleted") from None
                    current["spec"] = {**(current.get("spec") or {}), "renewTime": micro_time(now)}
                    fresh = self.kube.replace(LEASES, current)
            except ClusterError as e:
                self.failures += 1
                if self.failures in (1, 10, 100):
                    self._log(
                        f"cannot renew the run's heartbeat in namespace {meta.get('namespace')}: {e}"
                    )
                continue
            with self._lock:
                self._leases[str(meta.get("namespace"))] = fresh
