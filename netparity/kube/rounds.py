"""Rounds of a run that goes on while the cluster changes (`netparity watch` on Kubernetes).

A suites' run places its twins once and waits for them. A watch probes the same targets
every few seconds while nodes are drained, reimaged or replaced, so each round:

- `refresh` reads the cluster again and forgets the twins that are gone: removed (a
  drain evicts them, a deleted node's pods are collected), ended, failed, on a node that
  is not in the cluster any more, or standing in for a real pod that is gone or moved to
  another node (a ReplicaSet's pod comes back under a new name). The twin's pod and the
  run's Services selecting it are deleted; the next round places a new twin where the
  real pod now is;
- `run_round` places what the targets need and probes only what is ready: it never
  waits for a twin (a twin still starting or settling, or one that cannot be placed,
  makes its probes NOT_RUN with the reason), so that a round stays a point in time.

Both use the very objects, layout, placement, deadlines and batches of `KubeBackend`;
the twins' activeDeadlineSeconds come from the backend's `max_duration` (a watch sets it
to cover its `--max-duration` plus a margin).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from netparity.backend import Observed, ProbeResult, Target
from netparity.errors import ClusterError
from netparity.kube import RUN_LABEL
from netparity.kube.client import PODS, SERVICES
from netparity.kube.layout import LOCAL, Step, active_deadline, plan_layout
from netparity.kube.placement import Placement
from netparity.kube.podstate import Readiness, pod_state
from netparity.kube.render import HOST_KEY_PREFIX, short_hash

if TYPE_CHECKING:
    from netparity.kube.backend import KubeBackend


def live_pods(backend: KubeBackend) -> dict[tuple[str, str], dict[str, Any]]:
    """This run's pods in every namespace, by (namespace, name)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for p in backend.kube.list(PODS, label_selector=f"{RUN_LABEL}={backend.run_id}") or []:
        meta = p.get("metadata") or {}
        out[(str(meta.get("namespace")), str(meta.get("name")))] = p
    return out


def refresh(backend: KubeBackend) -> list[str]:
    """Read the cluster again (the next `snapshot()` is a new one) and forget the twins that
    are gone (module doc); one sentence per twin forgotten."""
    made = backend._made
    backend._snapshot = None
    backend._objects = None
    backend._detected = None
    made.placement = None
    if not made.twins:
        return []
    snap = backend.snapshot()
    nodes = {n.name for n in snap.nodes}
    real = {p.key: p for p in snap.pods}
    live = live_pods(backend)
    dropped: list[str] = []
    for key, twin in sorted(made.twins.items()):
        meta = (twin.obj or {}).get("metadata") or {}
        obj = live.get((str(meta.get("namespace")), str(meta.get("name"))))
        why = _gone(key, twin.pod.node_name, obj, nodes, real)
        if why is None and twin.failure is not None:
            why = twin.failure
        if why is None:
            continue
        label = made.twin_label(twin)
        if obj is not None:
            _delete(backend, PODS, obj)
        del made.twins[key]
        for skey, backend_key in list(made.service_backends.items()):
            if backend_key == key:
                service = made.services.pop(skey, None)
                del made.service_backends[skey]
                if service is not None:
                    _delete(backend, SERVICES, service)
        dropped.append(f"probe pod {label} {why}")
    return dropped


def _gone(
    key: str,
    node: str | None,
    obj: dict[str, Any] | None,
    nodes: set[str],
    real: dict[str, Any],
) -> str | None:
    if obj is None:
        return "was removed (evicted, or its node was deleted)"
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return "is being deleted"
    phase = (obj.get("status") or {}).get("phase")
    if phase in ("Failed", "Succeeded"):
        reason = (obj.get("status") or {}).get("reason")
        return f"ended ({phase}{': ' + str(reason) if reason else ''})"
    if node is not None and node not in nodes:
        return f"stood on node {node}, which is not in the cluster any more"
    if key.startswith(HOST_KEY_PREFIX):
        return None
    pod = real.get(key)
    if pod is None:
        return f"stands in for pod {key}, which is not in the cluster any more"
    if pod.node_name != node:
        return f"stands in for pod {key}, which now runs on node {pod.node_name}"
    return None


def _delete(backend: KubeBackend, res: Any, obj: dict[str, Any]) -> None:
    try:
        backend.kube.delete(res, obj)
    except ClusterError as e:  # removed at close at the latest
        backend._log(f"could not remove {res.kind} {obj['metadata'].get('name')}: {e}")


def run_round(
    backend: KubeBackend, targets: Sequence[Target], *, timeout: float
) -> list[ProbeResult]:
    """Place what the targets need and probe what is ready, without waiting (module doc)."""
    if backend._life.closed:
        raise ClusterError("this kubernetes backend is closed")
    try:
        return _round(backend, targets, timeout)
    except BaseException:
        backend.close()
        raise


def _round(backend: KubeBackend, targets: Sequence[Target], timeout: float) -> list[ProbeResult]:
    snap = backend.snapshot()
    made = backend._made
    if made.placement is None:
        made.placement = Placement.from_objects(backend.objects())
    placement = made.placement
    layout = plan_layout(
        targets,
        run_id=backend.run_id,
        backends_of=snap.backends,
        node_named=snap.node,
        unsafe_twin=backend._unsafe_twin(snap),
        allow_load_balancer=backend.allow_load_balancer,
        place=placement.refuse,
        responder=backend.responder,
        external_ip=backend.external_ip,
        allow_host_network=backend.allow_host_network,
        place_host=placement.check_host,
    )
    if made.deadline_at is None:
        made.deadline_at = time.monotonic() + active_deadline(0.0, backend.max_duration)
    results: dict[int, ProbeResult] = {}
    for step in layout.steps:
        reason = step.reason or backend._not_outside(step)
        if reason is not None:
            results[step.index] = ProbeResult(
                id=step.target.id, observed=Observed.NOT_RUN, error=reason
            )
    runnable = [s for s in layout.steps if s.index not in results]
    if any(s.source != LOCAL or (s.dest is not None and s.dest.kind != "ip") for s in runnable):
        backend._life.arm()
        made.ensure(layout)
        _look(backend, [*layout.twins, *layout.hosts])
    ready: list[Step] = []
    for step in runnable:
        waiting = _waiting_for(backend, step)
        if waiting is not None:
            results[step.index] = ProbeResult(
                id=step.target.id, observed=Observed.NOT_RUN, error=waiting
            )
        else:
            ready.append(step)
    batches = backend._prober.batches(ready, results)
    backend._prober.probe(batches, timeout, results, None)
    return [results[i] for i in range(len(targets))]


def _look(backend: KubeBackend, keys: Sequence[str]) -> None:
    """One look at the twins not yet ready; a ready one settles `settle` seconds after its
    IP was known (NPM shows no per-pod state; during a migration neither does a node
    without Cilium)."""
    made, waiter = backend._made, backend._wait
    pending = [
        k
        for k in keys
        if (t := made.twins.get(k)) is not None
        and t.failure is None
        and (t.state is None or t.state.readiness is not Readiness.READY)
    ]
    for ns in sorted({made.twins[k].pod.namespace for k in pending}):
        live = waiter.live_twins(ns)
        for key in pending:
            twin = made.twins[key]
            if twin.pod.namespace == ns:
                waiter._look(twin, pod_state(live.get(short_hash(key))))
    now = time.monotonic()
    for key in keys:
        found = made.twins.get(key)
        if found is not None and not found.settled and found.ready_at is not None:
            found.settled = now >= found.ready_at + backend.settle


def _waiting_for(backend: KubeBackend, step: Step) -> str | None:
    """Why a step's twins are not ready to probe yet (None: they are)."""
    made = backend._made
    keys: list[str | None] = [step.source]
    if step.dest is not None:
        keys.append(step.dest.pod)
        if step.dest.service:
            keys.append(made.service_backends.get(step.dest.service))
    for key in keys:
        if not key or key == LOCAL:
            continue
        twin = made.twins.get(key)
        if twin is None:
            return f"no probe pod for {key} yet"
        if twin.failure is not None:
            return f"not placed: {twin.failure}"
        if twin.state is None or twin.state.readiness is not Readiness.READY:
            detail = twin.state.detail if twin.state is not None else "just created"
            return f"probe pod {made.twin_label(twin)} is starting ({detail})"
        if not twin.settled:
            left = math.ceil((twin.ready_at or 0.0) + backend.settle - time.monotonic())
            return f"probe pod {made.twin_label(twin)} is settling ({max(0, left)} s left)"
    return None
