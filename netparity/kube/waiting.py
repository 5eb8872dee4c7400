"""Waiting for a run's objects: twins running and ready (an image pull that keeps failing
stops the run, a twin the scheduler cannot place fails early), LoadBalancer addresses, and
the dataplane having the twins (settling) before they are probed.

Every wait is one list and then a watch from the list's resourceVersion (`follow`), never
a poll: what it costs the API server is a constant per wait plus one event per change of
the run's own objects, however long the wait."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

from netparity.backend import Progress
from netparity.engine.dataplane import DATAPLANES
from netparity.errors import ClusterError
from netparity.kube import RUN_LABEL, TWIN_LABEL
from netparity.kube.client import (
    CILIUM_ENDPOINTS,
    PODS,
    SERVICES,
    WATCH_SECONDS,
    Gone,
    Kube,
    Resource,
)
from netparity.kube.layout import Layout
from netparity.kube.objects import RunObjects, Twin
from netparity.kube.podstate import LASTING_IMAGE_FAILURES, PodState, Readiness, pod_state
from netparity.kube.render import short_hash
from netparity.model.objects import ServiceType

POLL = 1.0  # kept for callers that pace themselves (backend's --wait-ready)


def follow(
    kube: Kube,
    res: Resource,
    *,
    namespace: str | None = None,
    label_selector: str | None = None,
    deadline: float,
    seen: Callable[[str, dict[str, Any]], None],
    done: Callable[[], bool],
    due: Callable[[], float | None] = lambda: None,
    tick: Callable[[], None] = lambda: None,
) -> bool | None:
    """List once, then watch from the list's resourceVersion, handing every object (listed:
    ADDED; then each event) to `seen`, until `done()` or the monotonic `deadline`.

    `due()` says when time alone may change the outcome (a grace that ends): a watch request
    then ends by it and `tick()` looks again. A watch the server ends is made again from the
    last resourceVersion seen; 410 Gone lists again. True when done, False at the deadline,
    None when the resource does not exist (a CRD that is absent)."""
    found = kube.list_versioned(
        res, namespace=namespace, label_selector=label_selector, missing_ok=True
    )
    if found is None:
        return None
    items, version = found
    for obj in items:
        seen("ADDED", obj)
    while not done():
        now = time.monotonic()
        if now >= deadline:
            return False
        until = min(deadline, due() or deadline, now + WATCH_SECONDS)
        try:
            with contextlib.closing(
                kube.watch(
                    res,
                    namespace=namespace,
                    label_selector=label_selector,
                    resource_version=version,
                    timeout=max(1.0, math.ceil(until - now)),
                )
            ) as events:
                for kind, obj in events:
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    seen(kind, obj)
                    if done():
                        return True
        except Gone:
            relisted = kube.list_versioned(
                res, namespace=namespace, label_selector=label_selector, missing_ok=True
            )
            if relisted is None:
                return None
            items, version = relisted
            for obj in items:
                seen("ADDED", obj)
        tick()
    return True


class Waiter:
    """Waits for what `RunObjects` made, marking the twins that will not come as failed."""

    def __init__(
        self,
        objects: RunObjects,
        *,
        pod_timeout: float,
        lb_timeout: float,
        settle: float,
        pull_timeout: float,
        unschedulable_grace: float,
    ) -> None:
        self.objects = objects
        self.kube = objects.kube
        self.log = objects.log
        self.pod_timeout = pod_timeout
        self.lb_timeout = lb_timeout
        self.settle_seconds = settle
        self.pull_timeout = pull_timeout
        self.unschedulable_grace = unschedulable_grace

    def settle(self, layout: Layout, dataplane: Callable[[], str]) -> None:
        """Probe only once the dataplane has the twins: on Cilium each twin's CiliumEndpoint
        is ready with an identity; elsewhere (NPM shows no per-pod state) the settle
        interval has passed since the twin's IP was known."""
        twins = self.objects.twins
        todo = [
            twins[k]
            for k in sorted(layout.twins)
            if k in twins
            and twins[k].failure is None
            and not twins[k].settled
            and twins[k].ready_at is not None
        ]
        if not todo:
            return
        # a dataplane that enforces Cilium policies (D14) is Cilium: it publishes CiliumEndpoints
        profile = DATAPLANES.get(dataplane())
        if profile is not None and profile.cilium_policies and self._settle_cilium(todo):
            return
        latest = max(t.ready_at or 0.0 for t in todo)
        wait = latest + self.settle_seconds - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for twin in todo:
            twin.settled = True

    def _settle_cilium(self, todo: list[Twin]) -> bool:
        """Wait for each twin's CiliumEndpoint (one list and watch per namespace); False if
        there are none to read (no CRD)."""
        deadline = time.monotonic() + self.pod_timeout
        seen: dict[int, str] = {}
        for ns in sorted({t.pod.namespace for t in todo}):
            pending = {
                str(t.obj["metadata"]["name"]): t
                for t in todo
                if t.pod.namespace == ns and t.obj is not None
            }

            def look(kind: str, cep: dict[str, Any], pending: dict[str, Twin] = pending) -> None:
                twin = pending.get(str((cep.get("metadata") or {}).get("name")))
                if twin is None:
                    return
                state, identity = _endpoint_state(None if kind == "DELETED" else cep)
                seen[id(twin)] = state
                if state == "ready" and identity is not None:
                    twin.settled = True
                    del pending[str(cep["metadata"]["name"])]

            got = follow(
                self.kube,
                CILIUM_ENDPOINTS,
                namespace=ns,
                deadline=deadline,
                seen=look,
                done=lambda pending=pending: not pending,  # type: ignore[misc]
            )
            if got is None:
                self.log(
                    "no CiliumEndpoints to read (the cilium.io/v2 CRD is absent): "
                    f"waiting {self.settle_seconds:g} s (--settle) instead"
                )
                return False
            for twin in pending.values():
                twin.failure = (
                    f"the CiliumEndpoint of probe pod {self.objects.twin_label(twin)} was not "
                    f"ready with an identity after {self.pod_timeout:g} s (state: "
                    f"{seen.get(id(twin))}): Cilium does not enforce policy for it yet"
                )
                self.log(twin.failure)
        return True

    def twins(self, layout: Layout, progress: Progress | None) -> None:
        """Until every twin of the layout is ready or has failed (pod_timeout at most): one
        list of the run's pods, then a watch."""
        twins = self.objects.twins
        pending = {
            (twin.pod.namespace, short_hash(k)): k
            for k, twin in twins.items()
            if (k in layout.twins or k in layout.hosts)
            and twin.failure is None
            and (twin.state is None or twin.state.readiness is not Readiness.READY)
        }
        total = len(layout.twins) + len(layout.hosts)
        if not pending:
            return
        if progress is not None:
            progress("probe pods ready", total - len(pending), total)

        def take(where: tuple[str, str], state: PodState) -> None:
            if self._look(twins[pending[where]], state):
                del pending[where]
                if progress is not None:
                    progress("probe pods ready", total - len(pending), total)

        def seen(kind: str, pod: dict[str, Any]) -> None:
            meta = pod.get("metadata") or {}
            where = (str(meta.get("namespace")), str((meta.get("labels") or {}).get(TWIN_LABEL)))
            if where in pending:
                take(where, pod_state(None if kind == "DELETED" else pod))

        def due() -> float | None:
            """When a grace ends for a twin that is waiting on nothing but time."""
            ends = [
                since + grace
                for key in pending.values()
                for since, grace in (
                    (twins[key].unschedulable_since, self.unschedulable_grace),
                    (twins[key].pull_failing_since, self.pull_timeout),
                )
                if since is not None
            ]
            return min(ends, default=None)

        def tick() -> None:
            for where, key in list(pending.items()):
                state = twins[key].state
                if state is not None:
                    take(where, state)

        done = follow(
            self.kube,
            PODS,
            label_selector=f"{RUN_LABEL}={self.objects.run_id}",
            deadline=time.monotonic() + self.pod_timeout,
            seen=seen,
            done=lambda: not pending,
            due=due,
            tick=tick,
        )
        if done is False:
            for key in sorted(pending.values()):
                twin = twins[key]
                detail = twin.state.detail if twin.state is not None else "no status"
                twin.failure = (
                    f"probe pod {self.objects.twin_label(twin)} was not running after "
                    f"{self.pod_timeout:g} s: {detail}"
                )
                self.log(twin.failure)

    def live_twins(self, namespace: str) -> dict[str, dict[str, Any]]:
        """This run's pods in a namespace, by their twin label (one list: a watch's rounds)."""
        return {
            str((p.get("metadata") or {}).get("labels", {}).get(TWIN_LABEL)): p
            for p in self.kube.list(
                PODS, namespace=namespace, label_selector=f"{RUN_LABEL}={self.objects.run_id}"
            )
            or []
        }

    def _look(self, twin: Twin, state: PodState) -> bool:
        """Take a twin's new state; True when it is waited for no more (ready or failed)."""
        twin.state = state
        if state.readiness is Readiness.IMAGE:
            self._pull_failing(twin, state)
            return False
        if self._unschedulable(twin, state):
            return True
        if state.readiness is Readiness.FAILED:
            twin.failure = f"probe pod {self.objects.twin_label(twin)} failed: {state.detail}"
            self.log(twin.failure)
        if state.readiness is Readiness.READY and twin.ready_at is None:
            twin.ready_at = time.monotonic()
            twin.pull_failing_since = None
        return state.readiness is not Readiness.WAITING

    def _pull_failing(self, twin: Twin, state: PodState) -> None:
        """A pull that fails may pass (a registry's 429): the kubelet retries it. Give up, and
        stop the run (every twin uses the image), only when it keeps failing past
        pull_timeout, or at once when no retry can mend it (an invalid image name)."""
        now = time.monotonic()
        label, image = self.objects.twin_label(twin), self.objects.image
        if twin.pull_failing_since is None:
            twin.pull_failing_since = now
            if state.reason not in LASTING_IMAGE_FAILURES:
                self.log(
                    f"probe pod {label} cannot pull the image {image} yet "
                    f"({state.detail}); the kubelet retries it, netparity gives up after "
                    f"{self.pull_timeout:g} s of failed pulls"
                )
        failing = now - twin.pull_failing_since
        if state.reason in LASTING_IMAGE_FAILURES or failing >= self.pull_timeout:
            how_long = (
                f" (its pulls kept failing for {failing:.0f} s)"
                if state.reason not in LASTING_IMAGE_FAILURES
                else ""
            )
            raise ClusterError(
                f"probe pod {label} cannot pull the image {image}{how_long} "
                f"({state.detail}); mirror it where the cluster can pull from and pass "
                f"--probe-image (a digest pin name@sha256:... is accepted)"
            )

    def _unschedulable(self, twin: Twin, state: PodState) -> bool:
        """True when the scheduler has said Unschedulable for longer than the grace: the twin
        fails now, naming the node and the scheduler's message, instead of at pod_timeout."""
        if state.reason != "Unschedulable":
            twin.unschedulable_since = None
            return False
        now = time.monotonic()
        if twin.unschedulable_since is None:
            twin.unschedulable_since = now
        if now - twin.unschedulable_since < self.unschedulable_grace:
            return False
        node = twin.pod.node_name or "any node"
        twin.failure = (
            f"probe pod {self.objects.twin_label(twin)} cannot be placed: the scheduler says "
            f"{state.detail} (waited {self.unschedulable_grace:g} s for room to free up on "
            f"{node}; a node the autoscaler adds cannot take a twin, which must run on its "
            f"pod's node)"
        )
        self.log(twin.failure)
        return True

    def load_balancers(self, layout: Layout) -> None:
        """Until the run's LoadBalancer Services have an address (lb_timeout at most): one
        list of the run's Services, then a watch."""
        waiting = {k for k, rs in layout.services.items() if rs.type is ServiceType.LOAD_BALANCER}
        if not waiting:
            return

        def seen(kind: str, obj: dict[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            key = f"{meta.get('namespace')}/{meta.get('name')}"
            if key not in waiting or kind == "DELETED":
                return
            self.objects.services[key] = obj
            if ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
                waiting.discard(key)

        follow(
            self.kube,
            SERVICES,
            label_selector=f"{RUN_LABEL}={self.objects.run_id}",
            deadline=time.monotonic() + self.lb_timeout,
            seen=seen,
            done=lambda: not waiting,
        )


def _endpoint_state(cep: dict[str, Any] | None) -> tuple[str, int | None]:
    """A CiliumEndpoint's status.state and identity id ("missing" when there is none yet)."""
    if cep is None:
        return "missing", None
    status = cep.get("status") if isinstance(cep.get("status"), dict) else {}
    assert isinstance(status, dict)
    identity = status.get("identity") if isinstance(status.get("identity"), dict) else {}
    assert isinstance(identity, dict)
    ident = identity.get("id")
    return str(status.get("state") or "no state"), ident if isinstance(ident, int) else None
