"""A run's lifetime in the cluster: before its first object, the clean-up hooks (atexit,
SIGTERM as Ctrl-C) and the removal of earlier interrupted runs' leftovers; at the end
(close, idempotent, never raising), its heartbeat stopped and every object it made
removed; and `netparity cleanup`'s removal of every run that is over."""

from __future__ import annotations

import atexit
import signal
import threading
from types import FrameType
from typing import Any

from netparity.errors import ClusterError
from netparity.kube.cleanup import find_runs, prune_leftovers, remove, remove_all
from netparity.kube.client import CONFIG_MAPS, LEASES
from netparity.kube.objects import RunObjects
from netparity.kube.render import anchor_name


class Lifecycle:
    """Arms the clean-up before a run makes anything, and removes what it made at the end."""

    def __init__(self, objects: RunObjects) -> None:
        self.objects = objects
        self.kube = objects.kube
        self.log = objects.log
        self._lock = threading.RLock()
        self.armed = False
        self.closed = False
        self._prev_sigterm: Any = None
        self.cleanup_errors: list[str] = []

    def arm(self) -> None:
        """Before the first object is made: cleanup hooks, then earlier runs' leftovers."""
        if self.armed:
            return
        self.armed = True
        atexit.register(self.close)
        if threading.current_thread() is threading.main_thread():
            prev = signal.getsignal(signal.SIGTERM)
            if prev in (signal.SIG_DFL, None):
                self._prev_sigterm = prev
                signal.signal(signal.SIGTERM, _interrupt)
        for run, why in prune_leftovers(self.kube, current=self.objects.run_id):
            self.log(
                f"removed the leftovers of an earlier interrupted run: {run.summary()} ({why})"
            )

    def close(self) -> None:
        """Remove every object of this run (idempotent; never raises: failures are logged)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.objects.heartbeat.stop()
            if self.armed:
                self._remove_own()
        finally:
            if (
                self._prev_sigterm is not None
                and threading.current_thread() is threading.main_thread()
            ):
                signal.signal(signal.SIGTERM, self._prev_sigterm)
            atexit.unregister(self.close)
            self.kube.close()

    def _remove_own(self) -> None:
        def failed(message: str) -> None:
            self.cleanup_errors.append(message)

        run_id = self.objects.run_id
        deleted = 0
        listed: set[str] = set()  # uids the listing found (and so deleted, or tried to)
        try:
            for run in find_runs(self.kube, run_id=run_id).values():
                listed |= {str((o.get("metadata") or {}).get("uid")) for _, o in run.objects}
                deleted += remove(self.kube, run, on_error=failed)
        except ClusterError as e:
            failed(str(e))
        # Whatever the listing missed: the heartbeats and the anchors made (the anchors'
        # deletion collects the rest). One delete per object: none twice.
        for lease in self.objects.heartbeat.leases():
            if str(lease["metadata"].get("uid")) in listed:
                continue
            try:
                self.kube.delete(LEASES, lease)
            except ClusterError as e:
                failed(f"{e} (the heartbeat in {lease['metadata'].get('namespace')})")
        for ns, anchor in sorted(self.objects.anchors.items()):
            if str(anchor["metadata"].get("uid")) in listed:
                continue
            try:
                self.kube.delete(CONFIG_MAPS, anchor)
            except ClusterError as e:
                failed(f"{e} ({anchor_name(run_id)} in {ns})")
        if self.cleanup_errors:
            self.log(
                "could not remove every probe object of run "
                f"{run_id}: {self.cleanup_errors[0]}; run `netparity cleanup --cluster {self.kube.name}`"
            )
        elif deleted:
            self.log(f"run {run_id}: removed its {deleted} probe objects")

    def cleanup_all(self, *, force: bool = False) -> tuple[list[str], list[str]]:
        """Remove the objects of every run that is not running (with `force`: of every run);
        one line per run removed, and one per run left alone, each saying why."""
        try:
            removed, kept = remove_all(self.kube, force=force)
            return (
                [f"{run.summary()} ({why})" for run, why in removed],
                [f"{run.summary()} ({why})" for run, why in kept],
            )
        finally:
            self.close()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
