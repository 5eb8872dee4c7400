"""The objects one run makes in a cluster: per namespace a heartbeat Lease and a run anchor
(a ConfigMap carrying the agent) that owns everything else, the twins (and host probe pods),
and the run's own Services. Each is made once (a retried create reuses what this run made)
and carries the run's expiry; a twin's activeDeadlineSeconds is what is left of the run's
planned length."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from netparity.errors import ClusterError
from netparity.kube import EXPIRES_ANNOTATION, RUN_LABEL
from netparity.kube.cleanup import Heartbeat, api_time, lease_manifest
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
from netparity.kube.layout import Layout, active_deadline
from netparity.kube.placement import Placement
from netparity.kube.podstate import PodState
from netparity.kube.render import (
    anchor_manifest,
    anchor_name,
    host_namespace_manifest,
    host_namespace_name,
    host_pod_manifest,
    host_pod_name,
    serve_ports,
    service_manifest,
    twin_manifest,
)
from netparity.model.objects import Pod


@dataclass(slots=True)
class Twin:
    pod: Pod
    obj: dict[str, Any] | None = None
    state: PodState | None = None
    failure: str | None = None  # set: this twin will not come; its probes are errors
    ready_at: float | None = None  # time.monotonic() when its IP was known and it listened
    settled: bool = False  # the dataplane has it (Cilium: its endpoint is ready)
    pull_failing_since: float | None = None  # time.monotonic() its image pull first failed
    unschedulable_since: float | None = None  # ... the scheduler first said Unschedulable


@dataclass(slots=True, kw_only=True)
class RunObjects:
    """What one run has made in the cluster, and the making of it."""

    kube: Kube
    run_id: str
    started: datetime
    expires: datetime
    image: str
    lease_seconds: int
    max_parallel: int
    max_duration: float | None
    heartbeat: Heartbeat
    log: Callable[[str], None]
    placement: Placement | None = None
    deadline_at: float | None = None  # monotonic time every twin is gone by
    anchors: dict[str, dict[str, Any]] = field(default_factory=dict)
    twins: dict[str, Twin] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    service_backends: dict[str, str] = field(default_factory=dict)  # run Service -> real pod

    def expiring(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest.setdefault("metadata", {})
        annotations = meta.get("annotations") or {}
        meta["annotations"] = {**annotations, EXPIRES_ANNOTATION: api_time(self.expires)}
        return manifest

    def ensure(self, layout: Layout) -> None:
        """Make what the layout needs and this run has not made yet: anchors first (each
        after its heartbeat), then twins, host probe pods and Services, in parallel."""
        self._ensure_anchors(layout)
        todo = [*self._twin_jobs(layout), *self._host_jobs(layout), *self._service_jobs(layout)]
        if todo:
            self.log(
                f"run {self.run_id}: creating {len(todo)} probe objects with image {self.image}"
            )
        created = self.parallel([partial(self.create_owned, res, m) for res, m, _ in todo])
        for (res, _, key), obj in zip(todo, created, strict=True):
            if res is PODS:
                self.twins[key].obj = obj
            else:
                self.services[key] = obj

    def _ensure_anchors(self, layout: Layout) -> None:
        namespaces = list(layout.namespaces)
        if layout.hosts:  # --allow-host-network: the run's own privileged namespace first
            host_ns = host_namespace_name(self.run_id)
            namespaces.append(host_ns)
            if host_ns not in self.anchors:
                self.create_owned(
                    NAMESPACES, self.expiring(host_namespace_manifest(run_id=self.run_id))
                )
        for ns in namespaces:
            if ns not in self.anchors:
                # the heartbeat first: an anchor is never seen without it
                now = datetime.now(UTC)
                lease = self.create_owned(
                    LEASES,
                    lease_manifest(
                        name=anchor_name(self.run_id),
                        namespace=ns,
                        run_id=self.run_id,
                        now=now,
                        expires=self.expires,
                        seconds=self.lease_seconds,
                    ),
                )
                self.heartbeat.add(lease)
                self.anchors[ns] = self.create_owned(
                    CONFIG_MAPS,
                    self.expiring(
                        anchor_manifest(
                            run_id=self.run_id, namespace=ns, started=self.started.isoformat()
                        )
                    ),
                )

    def _twin_jobs(self, layout: Layout) -> list[tuple[Resource, dict[str, Any], str]]:
        todo: list[tuple[Resource, dict[str, Any], str]] = []
        for key, pod in layout.twins.items():
            if key in self.twins:
                continue
            self.twins[key] = Twin(pod=pod)
            placement = self.placement or Placement()
            manifest = twin_manifest(
                run_id=self.run_id,
                pod=pod,
                anchor_uid=self.anchor_uid(pod.namespace),
                image=self.image,
                ports=serve_ports(pod, sorted(layout.probed_ports.get(key, ()))),
                hostname=placement.hostname(pod),
                deadline=self.deadline(),
                leave_out=placement.leave_out(pod),
            )
            todo.append((PODS, manifest, key))
        return todo

    def _host_jobs(self, layout: Layout) -> list[tuple[Resource, dict[str, Any], str]]:
        todo: list[tuple[Resource, dict[str, Any], str]] = []
        for key, node in layout.hosts.items():
            if key in self.twins:
                continue
            ns, name = host_namespace_name(self.run_id), host_pod_name(self.run_id, node.name)
            # a host probe pod is never a CiliumEndpoint and NPM knows node addresses: settled
            self.twins[key] = Twin(
                pod=Pod(namespace=ns, name=name, node_name=node.name), settled=True
            )
            host = (self.placement or Placement()).nodes.get(node.name)
            manifest = host_pod_manifest(
                run_id=self.run_id,
                node=node.name,
                hostname=host.hostname if host is not None else node.name,
                anchor_uid=self.anchor_uid(ns),
                image=self.image,
                deadline=self.deadline(),
            )
            todo.append((PODS, manifest, key))
        return todo

    def _service_jobs(self, layout: Layout) -> list[tuple[Resource, dict[str, Any], str]]:
        todo: list[tuple[Resource, dict[str, Any], str]] = []
        for key, rs in layout.services.items():
            self.service_backends[key] = rs.backend.key
            if key in self.services:
                continue
            manifest = self.expiring(
                service_manifest(
                    run_id=self.run_id,
                    service=rs.service,
                    backend=rs.backend,
                    anchor_uid=self.anchor_uid(rs.service.namespace),
                    type=rs.type,
                )
            )
            todo.append((SERVICES, manifest, key))
        return todo

    def deadline(self) -> int:
        """activeDeadlineSeconds for a twin made now: what is left of the run's planned length."""
        left_to_expiry = max(60, int((self.expires - datetime.now(UTC)).total_seconds()))
        if self.deadline_at is None:
            return min(active_deadline(0.0, self.max_duration), left_to_expiry)
        return min(max(60, math.ceil(self.deadline_at - time.monotonic())), left_to_expiry)

    def anchor_uid(self, namespace: str) -> str:
        return str(self.anchors[namespace]["metadata"]["uid"])

    def create_owned(self, res: Resource, manifest: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.kube.create(res, manifest)
        except Conflict:
            meta = manifest["metadata"]
            existing = self.kube.get(res, meta["name"], namespace=meta.get("namespace"))
            labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
            if existing is not None and labels.get(RUN_LABEL) == self.run_id:
                return existing  # made by this run already (a retried create): reuse it
            raise ClusterError(
                f"{self.kube.name}: {res.kind} {meta.get('namespace', '-')}/{meta['name']} already exists "
                f"and is not this run's ({RUN_LABEL}={labels.get(RUN_LABEL)!r}); "
                f"remove it with `netparity cleanup --cluster {self.kube.name}`"
            ) from None

    def parallel(self, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
        if not jobs:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.max_parallel, len(jobs)))
        try:
            futures: list[Future[Any]] = [pool.submit(job) for job in jobs]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def twin_label(self, twin: Twin) -> str:
        name = ((twin.obj or {}).get("metadata") or {}).get("name", "?")
        node = twin.pod.node_name or "any node"
        if twin.pod.namespace == host_namespace_name(self.run_id):
            return f"{twin.pod.namespace}/{name} (host probe pod of node {node})"
        return f"{twin.pod.namespace}/{name} (twin of {twin.pod.key}, node {node})"
