"""KubeBackend: probe a real cluster with twin pods that policies see as the real workloads.

Per namespace a run anchor (a ConfigMap carrying the agent) owns every probe object;
twins copy a real pod's labels, containerPorts and node, carry a readiness gate nobody
sets and meet the restricted Pod Security Standard; the run's own Services select only
twins. One exec per source twin runs its whole batch. Everything is removed on close(),
on failure, on Ctrl-C / SIGTERM, and by the next run if this one died.
"""

from __future__ import annotations

import atexit
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from types import FrameType
from typing import Any

from netparity.backend import ClusterFacts, Observed, ProbeResult, Progress, Target
from netparity.errors import ClusterError, InputError
from netparity.kube import EXPIRES_ANNOTATION, RUN_LABEL, TWIN_LABEL
from netparity.kube.agentio import (
    Outcome,
    batch_document,
    check_token,
    parse_output,
    run_local,
)
from netparity.kube.cleanup import (
    LEASE_SECONDS,
    Heartbeat,
    api_time,
    find_runs,
    lease_manifest,
    prune_leftovers,
    remove,
    remove_all,
)
from netparity.kube.client import (
    CILIUM_ENDPOINTS,
    CONFIG_MAPS,
    EXEC_HANDSHAKE_TIMEOUT,
    IN_CLUSTER,
    LEASES,
    NAMESPACES,
    PODS,
    SERVICES,
    Conflict,
    Kube,
    Resource,
)
from netparity.kube.detect import DATAPLANES, Detected, detect
from netparity.kube.layout import (
    LOCAL,
    Layout,
    Step,
    active_deadline,
    address,
    plan_layout,
    planned_seconds,
)
from netparity.kube.placement import Placement
from netparity.kube.podstate import LASTING_IMAGE_FAILURES, PodState, Readiness, pod_state
from netparity.kube.read import read_snapshot, write_list
from netparity.kube.render import (
    DEFAULT_IMAGE,
    PROBE_COMMAND,
    anchor_manifest,
    anchor_name,
    check_image,
    host_namespace_manifest,
    host_namespace_name,
    host_pod_manifest,
    host_pod_name,
    new_run_id,
    serve_ports,
    service_manifest,
    short_hash,
    twin_manifest,
)
from netparity.kube.responder import Responder
from netparity.model.objects import Pod, ServiceType
from netparity.model.snapshot import Snapshot

EXEC_SLACK = 30.0  # seconds an exec may take beyond the probe timeout (API, Python start)
POLL = 1.0
# Seconds to let NPM program a new pod IP (it shows no per-pod state) before probing, and
# between a probe and its retry. NPM learns a pod's IP from its pod informer and applies
# ipset and iptables changes in batches, within about a second on a quiet cluster; five
# seconds leave room for a busy API server and NPM's batching, and are paid once per run
# (all twins settle together) and once before each retry round.
DEFAULT_SETTLE = 5.0
# A run's planned length when nobody says (--max-duration), and the margin its expiry adds.
DEFAULT_MAX_DURATION = 2 * 3600.0
EXPIRY_MARGIN = 15 * 60.0
KUBELET_PORT = 10250  # answers on every node: tells whether this machine reaches a node at all
# --wait-ready: how often the migration window is looked at again, and how often it is told
WAIT_POLL = 10.0
WAIT_TELL = 60.0
# A failing image pull is given up only when it keeps failing this long: the kubelet retries
# a pull after 10, 20, 40 s (doubling up to 5 min), so 120 s hold four tries, enough for a
# registry's 429 (Too Many Requests) or a throttled ACR to pass.
PULL_TIMEOUT = 120.0
# A twin the scheduler reports Unschedulable fails after this grace instead of pod_timeout.
# Twins require one named node (kubernetes.io/hostname), so a node the cluster autoscaler
# adds can never take them; only room freed on that node can (pods finishing or deleted),
# and the scheduler retries at once on such an event. 15 s cover a scheduler retry after a
# deletion and a busy API server, not a node scale-up (which could not help).
UNSCHEDULABLE_GRACE = 15.0


def _stderr(message: str) -> None:
    print(f"netparity: {message}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class _Twin:
    pod: Pod
    obj: dict[str, Any] | None = None
    state: PodState | None = None
    failure: str | None = None  # set: this twin will not come; its probes are errors
    ready_at: float | None = None  # time.monotonic() when its IP was known and it listened
    settled: bool = False  # the dataplane has it (Cilium: its endpoint is ready)
    pull_failing_since: float | None = None  # time.monotonic() its image pull first failed
    unschedulable_since: float | None = None  # ... the scheduler first said Unschedulable


@dataclass(slots=True)
class _Batch:
    source: str  # real pod key, or LOCAL
    steps: list[Step] = field(default_factory=list)
    hosts: dict[int, tuple[str, int]] = field(default_factory=dict)  # step index -> address


class KubeBackend:
    """The kubernetes backend (see the module docstring). Use as a context manager."""

    def __init__(
        self,
        context: str | None,
        *,
        kubeconfig: str | None = None,
        probe_image: str = DEFAULT_IMAGE,
        max_parallel: int = 8,
        allow_load_balancer: bool = False,
        allow_host_network: bool = False,
        dataplane: str | None = None,
        pod_timeout: float = 180.0,
        lb_timeout: float = 300.0,
        exec_handshake_timeout: float = EXEC_HANDSHAKE_TIMEOUT,
        settle: float = DEFAULT_SETTLE,
        lease_seconds: int = LEASE_SECONDS,
        log: Callable[[str], None] | None = None,
        max_duration: float | None = None,
        wait_ready: float = 0.0,
        wait_poll: float = WAIT_POLL,
        pull_timeout: float = PULL_TIMEOUT,
        unschedulable_grace: float = UNSCHEDULABLE_GRACE,
        responder: Responder | None = None,
        external_ip: str | None = None,
    ) -> None:
        # outside destinations go only to the responder (checked by the caller), outside
        # sources run only as external_ip (netparity.kube.layout)
        self.responder = responder
        self.external_ip = external_ip
        if dataplane is not None and dataplane not in DATAPLANES:
            raise InputError(
                f"unknown dataplane {dataplane!r} (expected one of {', '.join(sorted(DATAPLANES))})",
                field="--dataplane",
            )
        if max_parallel < 1:
            raise InputError(f"must be at least 1, got {max_parallel}", field="--max-parallel")
        self.kube = Kube.connect(context, kubeconfig=kubeconfig)
        self.image = check_image(probe_image)
        self.max_parallel = max_parallel
        self.allow_load_balancer = allow_load_balancer
        self.allow_host_network = allow_host_network
        self.pod_timeout = pod_timeout
        self.lb_timeout = lb_timeout
        if max_duration is not None and max_duration <= 0:
            raise InputError(f"must be positive, got {max_duration:g}", field="--max-duration")
        self.max_duration = max_duration
        self._placement: Placement | None = None
        self._deadline_at: float | None = None  # monotonic time every twin is gone by
        self.exec_handshake_timeout = exec_handshake_timeout
        if not settle >= 0:
            raise InputError(f"must be 0 or more seconds, got {settle:g}", field="--settle")
        self.settle = settle
        if not wait_ready >= 0:
            raise InputError(f"must be 0 or more seconds, got {wait_ready:g}", field="--wait-ready")
        self.wait_ready = wait_ready
        self.wait_poll = wait_poll
        self.pull_timeout = pull_timeout
        self.unschedulable_grace = unschedulable_grace
        self._probed: set[str] = set()  # target ids probed already: a second try is a retry
        self._last_probe = 0.0  # time.monotonic() when the last probing round ended
        self._override = dataplane
        self._log = log if log is not None else _stderr
        self.started = datetime.now(UTC).replace(microsecond=0)
        self.run_id = new_run_id(self.started)
        # Anchors, Services and heartbeats carry this expiry (the heartbeat keeps a live run's
        # objects from being removed before it); twins get activeDeadlineSeconds from the
        # planned length (`_deadline`), never past it.
        longest = max_duration if max_duration is not None else DEFAULT_MAX_DURATION
        self.expires = self.started + timedelta(seconds=longest + EXPIRY_MARGIN)
        self.lease_seconds = lease_seconds
        self._heartbeat = Heartbeat(
            self.kube, expires=self.expires, seconds=lease_seconds, log=self._log
        )
        self._lock = threading.RLock()
        self._snapshot: Snapshot | None = None
        self._objects: list[dict[str, Any]] | None = None
        self._detected: Detected | None = None
        self._anchors: dict[str, dict[str, Any]] = {}
        self._twins: dict[str, _Twin] = {}
        self._services: dict[str, dict[str, Any]] = {}
        self._service_backends: dict[str, str] = {}  # run Service key -> real backend pod key
        self._armed = False
        self._closed = False
        self._prev_sigterm: Any = None
        self.cleanup_errors: list[str] = []

    def _expiring(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest.setdefault("metadata", {})
        annotations = meta.get("annotations") or {}
        meta["annotations"] = {**annotations, EXPIRES_ANNOTATION: api_time(self.expires)}
        return manifest

    def __enter__(self) -> KubeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def facts(self) -> ClusterFacts:
        if self._override is not None:
            return ClusterFacts(name=self.kube.name, backend="kubernetes", dataplane=self._override)
        if self._detected is None:
            self._detected = self._detect_ready()
        if self._detected.window is not None:
            waited = (
                f"; it still was after waiting {self.wait_ready:g} s (--wait-ready)"
                if self.wait_ready
                else "; run once the upgrade has finished, or wait for it with --wait-ready SECONDS"
            )
            raise ClusterError(
                f"{self.kube.name}: the cluster is in the middle of the migration to Cilium "
                f"({self._detected.window.describe()}): policy enforcement is inconsistent while "
                f"nodes are reimaged and Cilium enforces only once every node is, so probes now "
                f"would report noise{waited}"
            )
        if self._detected.dataplane == "unknown":
            raise ClusterError(
                f"{self.kube.name}: cannot tell which dataplane enforces NetworkPolicy: "
                f"{self._detected.evidence}. Say it with --dataplane "
                f"(npm, cilium, or cilium-1.16 for Cilium before 1.17)"
            )
        return ClusterFacts(
            name=self.kube.name,
            backend="kubernetes",
            dataplane=self._detected.dataplane,
            version=self._detected.version,
        )

    def _detect_ready(self) -> Detected:
        """Detect the dataplane; with --wait-ready, until the cluster is out of the migration
        window or the time is up, saying how far it got."""
        found = detect(self.kube)
        if found.window is None or not self.wait_ready:
            return found
        start = time.monotonic()
        told, last = -math.inf, ""
        while found.window is not None:
            waited = time.monotonic() - start
            now = found.window.progress()
            if now != last or waited - told >= WAIT_TELL:
                self._log(
                    f"{self.kube.name}: the migration to Cilium is under way ({now}): waiting "
                    f"for every node, {waited:.0f} s of {self.wait_ready:g} s (--wait-ready)"
                )
                told, last = waited, now
            left = self.wait_ready - waited
            if left <= 0:
                return found
            time.sleep(min(self.wait_poll, left))
            found = detect(self.kube)
        self._log(
            f"{self.kube.name}: the migration window is over after "
            f"{time.monotonic() - start:.0f} s: {found.evidence}"
        )
        return found

    @property
    def evidence(self) -> str:
        """What the dataplane detection saw (for the run header)."""
        if self._override is not None:
            return f"--dataplane {self._override}"
        self.facts()
        assert self._detected is not None
        return self._detected.evidence

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot, self._objects = read_snapshot(self.kube)
        return self._snapshot

    def objects(self) -> list[dict[str, Any]]:
        """The wire dicts the snapshot was read from (what `netparity snapshot` writes)."""
        self.snapshot()
        assert self._objects is not None
        return self._objects

    def write_snapshot(self, path: Any) -> Snapshot:
        """Write what was read as a `kind: List` YAML file (atomically)."""
        snap = self.snapshot()
        assert self._objects is not None
        write_list(self._objects, path)
        return snap

    # ------------------------------------------------------------------ safety

    def _arm(self) -> None:
        """Before the first object is made: cleanup hooks, then earlier runs' leftovers."""
        if self._armed:
            return
        self._armed = True
        atexit.register(self.close)
        if threading.current_thread() is threading.main_thread():
            prev = signal.getsignal(signal.SIGTERM)
            if prev in (signal.SIG_DFL, None):
                self._prev_sigterm = prev
                signal.signal(signal.SIGTERM, _interrupt)
        for run, why in prune_leftovers(self.kube, current=self.run_id):
            self._log(
                f"removed the leftovers of an earlier interrupted run: {run.summary()} ({why})"
            )

    def _unsafe_twin(self, snap: Snapshot) -> Callable[[Pod], str | None]:
        nodes = {n.name: n for n in snap.nodes}

        def check(pod: Pod) -> str | None:
            node = nodes.get(pod.node_name or "")
            if node is not None and node.os != "linux":
                return (
                    f"pod {pod.key} runs on {node.os} node {node.name}: probe pods run the Linux "
                    f"agent image, so it is not probed"
                )
            for svc in snap.services:
                if svc.publish_not_ready and svc.selects(pod):
                    return (
                        f"a twin of pod {pod.key} would join Service {svc.key}'s endpoints "
                        f"(publishNotReadyAddresses: true) and receive real traffic: not probed"
                    )
            if pod.node_name and nodes and pod.node_name not in nodes:
                return (
                    f"node {pod.node_name} (where pod {pod.key} ran) is not in the cluster any more"
                )
            return None

        return check

    # ------------------------------------------------------------------ running

    def run(
        self, targets: Sequence[Target], *, timeout: float, progress: Progress | None = None
    ) -> list[ProbeResult]:
        if self._closed:
            raise ClusterError("this kubernetes backend is closed")
        try:
            return self._run(targets, timeout, progress)
        except BaseException:
            self.close()
            raise

    def _run(
        self, targets: Sequence[Target], timeout: float, progress: Progress | None
    ) -> list[ProbeResult]:
        snap = self.snapshot()
        if self._placement is None:
            self._placement = Placement.from_objects(self.objects())
        placement = self._placement
        layout = plan_layout(
            targets,
            run_id=self.run_id,
            backends_of=snap.backends,
            node_named=snap.node,
            unsafe_twin=self._unsafe_twin(snap),
            allow_load_balancer=self.allow_load_balancer,
            place=placement.refuse,
            responder=self.responder,
            external_ip=self.external_ip,
            allow_host_network=self.allow_host_network,
            place_host=placement.check_host,
        )
        for note in placement.notes([p for k, p in layout.twins.items() if k not in self._twins]):
            self._log(note)
        if self._deadline_at is None:
            planned = planned_seconds(
                layout,
                timeout=timeout,
                exec_seconds=timeout * 3 + EXEC_SLACK,
                max_parallel=self.max_parallel,
                pod_timeout=self.pod_timeout,
                lb_timeout=self.lb_timeout,
            )
            self._deadline_at = time.monotonic() + active_deadline(planned, self.max_duration)
        results: dict[int, ProbeResult] = {}
        for step in layout.steps:
            reason = step.reason or self._not_outside(step)
            if reason is not None:
                results[step.index] = ProbeResult(
                    id=step.target.id, observed=Observed.NOT_RUN, error=reason
                )
        runnable = [s for s in layout.steps if s.index not in results]
        if any(s.source != LOCAL or (s.dest is not None and s.dest.kind != "ip") for s in runnable):
            self._arm()
            self._ensure_objects(layout)
            self._wait_twins(layout, progress)
            self._wait_load_balancers(layout)
            self._settle(layout)
        batches = self._batches(runnable, results)
        if any(t.id in self._probed for t in targets):
            # a retry: give the dataplane the settle interval since the last try
            wait = self._last_probe + self.settle - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._probe(batches, timeout, results, progress)
        self._probed.update(t.id for t in targets)
        self._last_probe = time.monotonic()
        return [results[i] for i in range(len(targets))]

    def _not_outside(self, step: Step) -> str | None:
        """In the cluster (`--cluster in-cluster`, the Job) a probe "from outside" would start
        in the runner's own pod: pod traffic, which policies treat as such, not outside
        traffic. It is not run, and says so."""
        if step.source != LOCAL or self.kube.name != IN_CLUSTER:
            return None
        return (
            "this run is inside the cluster (--cluster in-cluster): a probe from outside would "
            "start in the runner's own pod, which is pod traffic, not traffic from outside the "
            "cluster; run the suites from a machine outside the cluster for it"
        )

    # ------------------------------------------------------------------ settling

    def _settle(self, layout: Layout) -> None:
        """Probe only once the dataplane has the twins: on Cilium each twin's CiliumEndpoint
        is ready with an identity; elsewhere (NPM shows no per-pod state) the settle
        interval has passed since the twin's IP was known."""
        todo = [
            self._twins[k]
            for k in sorted(layout.twins)
            if k in self._twins
            and self._twins[k].failure is None
            and not self._twins[k].settled
            and self._twins[k].ready_at is not None
        ]
        if not todo:
            return
        if self.facts().dataplane.startswith("cilium") and self._settle_cilium(todo):
            return
        latest = max(t.ready_at or 0.0 for t in todo)
        wait = latest + self.settle - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for twin in todo:
            twin.settled = True

    def _settle_cilium(self, todo: list[_Twin]) -> bool:
        """Wait for each twin's CiliumEndpoint; False if there are none to read (no CRD)."""
        deadline = time.monotonic() + self.pod_timeout
        pending = {id(t): t for t in todo}
        seen: dict[int, str] = {}
        polls = 0
        while pending:
            for ns in sorted({t.pod.namespace for t in pending.values()}):
                endpoints = self.kube.list(CILIUM_ENDPOINTS, namespace=ns, missing_ok=True)
                if endpoints is None:
                    self._log(
                        "no CiliumEndpoints to read (the cilium.io/v2 CRD is absent): "
                        f"waiting {self.settle:g} s (--settle) instead"
                    )
                    return False
                by_name = {str((e.get("metadata") or {}).get("name")): e for e in endpoints}
                for key, twin in list(pending.items()):
                    if twin.pod.namespace != ns or twin.obj is None:
                        continue
                    state, identity = _endpoint_state(by_name.get(twin.obj["metadata"]["name"]))
                    seen[key] = state
                    if state == "ready" and identity is not None:
                        twin.settled = True
                        del pending[key]
            if not pending:
                return True
            if time.monotonic() >= deadline:
                for key, twin in pending.items():
                    twin.failure = (
                        f"the CiliumEndpoint of probe pod {self._twin_label(twin)} was not ready "
                        f"with an identity after {self.pod_timeout:g} s (state: {seen.get(key)}): "
                        f"Cilium does not enforce policy for it yet"
                    )
                    self._log(twin.failure)
                return True
            time.sleep(min(POLL, 0.1 * 2**polls))
            polls += 1
        return True

    def _ensure_objects(self, layout: Layout) -> None:
        namespaces = list(layout.namespaces)
        if layout.hosts:  # --allow-host-network: the run's own privileged namespace first
            host_ns = host_namespace_name(self.run_id)
            namespaces.append(host_ns)
            if host_ns not in self._anchors:
                self._create_owned(
                    NAMESPACES, self._expiring(host_namespace_manifest(run_id=self.run_id))
                )
        for ns in namespaces:
            if ns not in self._anchors:
                # the heartbeat first: an anchor is never seen without it
                now = datetime.now(UTC)
                lease = self._create_owned(
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
                self._heartbeat.add(lease)
                self._anchors[ns] = self._create_owned(
                    CONFIG_MAPS,
                    self._expiring(
                        anchor_manifest(
                            run_id=self.run_id, namespace=ns, started=self.started.isoformat()
                        )
                    ),
                )
        todo: list[tuple[Resource, dict[str, Any], str]] = []
        for key, pod in layout.twins.items():
            if key in self._twins:
                continue
            self._twins[key] = _Twin(pod=pod)
            placement = self._placement or Placement()
            manifest = twin_manifest(
                run_id=self.run_id,
                pod=pod,
                anchor_uid=self._anchor_uid(pod.namespace),
                image=self.image,
                ports=serve_ports(pod, sorted(layout.probed_ports.get(key, ()))),
                hostname=placement.hostname(pod),
                deadline=self._deadline(),
                leave_out=placement.leave_out(pod),
            )
            todo.append((PODS, manifest, key))
        for key, node in layout.hosts.items():
            if key in self._twins:
                continue
            ns, name = host_namespace_name(self.run_id), host_pod_name(self.run_id, node.name)
            # a host probe pod is never a CiliumEndpoint and NPM knows node addresses: settled
            self._twins[key] = _Twin(
                pod=Pod(namespace=ns, name=name, node_name=node.name), settled=True
            )
            host = (self._placement or Placement()).nodes.get(node.name)
            manifest = host_pod_manifest(
                run_id=self.run_id,
                node=node.name,
                hostname=host.hostname if host is not None else node.name,
                anchor_uid=self._anchor_uid(ns),
                image=self.image,
                deadline=self._deadline(),
            )
            todo.append((PODS, manifest, key))
        for key, rs in layout.services.items():
            self._service_backends[key] = rs.backend.key
            if key in self._services:
                continue
            manifest = self._expiring(
                service_manifest(
                    run_id=self.run_id,
                    service=rs.service,
                    backend=rs.backend,
                    anchor_uid=self._anchor_uid(rs.service.namespace),
                    type=rs.type,
                )
            )
            todo.append((SERVICES, manifest, key))
        if todo:
            self._log(
                f"run {self.run_id}: creating {len(todo)} probe objects with image {self.image}"
            )
        created = self._parallel([partial(self._create_owned, res, m) for res, m, _ in todo])
        for (res, _, key), obj in zip(todo, created, strict=True):
            if res is PODS:
                self._twins[key].obj = obj
            else:
                self._services[key] = obj

    def _deadline(self) -> int:
        """activeDeadlineSeconds for a twin made now: what is left of the run's planned length."""
        left_to_expiry = max(60, int((self.expires - datetime.now(UTC)).total_seconds()))
        if self._deadline_at is None:
            return min(active_deadline(0.0, self.max_duration), left_to_expiry)
        return min(max(60, math.ceil(self._deadline_at - time.monotonic())), left_to_expiry)

    def _anchor_uid(self, namespace: str) -> str:
        return str(self._anchors[namespace]["metadata"]["uid"])

    def _create_owned(self, res: Resource, manifest: dict[str, Any]) -> dict[str, Any]:
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

    def _parallel(self, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
        if not jobs:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.max_parallel, len(jobs)))
        try:
            futures: list[Future[Any]] = [pool.submit(job) for job in jobs]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _wait_twins(self, layout: Layout, progress: Progress | None) -> None:
        pending = {
            k
            for k, twin in self._twins.items()
            if (k in layout.twins or k in layout.hosts)
            and twin.failure is None
            and (twin.state is None or twin.state.readiness is not Readiness.READY)
        }
        total = len(layout.twins) + len(layout.hosts)
        deadline = time.monotonic() + self.pod_timeout
        polls = 0
        while pending:
            by_ns: dict[str, list[str]] = {}
            for key in pending:
                by_ns.setdefault(self._twins[key].pod.namespace, []).append(key)
            for ns, keys in sorted(by_ns.items()):
                live = {
                    str((p.get("metadata") or {}).get("labels", {}).get(TWIN_LABEL)): p
                    for p in self.kube.list(
                        PODS, namespace=ns, label_selector=f"{RUN_LABEL}={self.run_id}"
                    )
                    or []
                }
                for key in keys:
                    twin = self._twins[key]
                    state = pod_state(live.get(short_hash(key)))
                    twin.state = state
                    if state.readiness is Readiness.IMAGE:
                        self._pull_failing(twin, state)
                        continue
                    if self._unschedulable(twin, state):
                        pending.discard(key)
                        continue
                    if state.readiness is Readiness.FAILED:
                        twin.failure = f"probe pod {self._twin_label(twin)} failed: {state.detail}"
                        self._log(twin.failure)
                    if state.readiness is Readiness.READY and twin.ready_at is None:
                        twin.ready_at = time.monotonic()
                        twin.pull_failing_since = None
                    if state.readiness is not Readiness.WAITING:
                        pending.discard(key)
            if progress is not None:
                progress("probe pods ready", total - len(pending), total)
            if not pending:
                break
            if time.monotonic() >= deadline:
                for key in sorted(pending):
                    twin = self._twins[key]
                    detail = twin.state.detail if twin.state is not None else "no status"
                    twin.failure = (
                        f"probe pod {self._twin_label(twin)} was not running after "
                        f"{self.pod_timeout:g} s: {detail}"
                    )
                    self._log(twin.failure)
                return
            time.sleep(min(POLL, 0.1 * 2**polls))
            polls += 1

    def _pull_failing(self, twin: _Twin, state: PodState) -> None:
        """A pull that fails may pass (a registry's 429): the kubelet retries it. Give up, and
        stop the run (every twin uses the image), only when it keeps failing past
        pull_timeout, or at once when no retry can mend it (an invalid image name)."""
        now = time.monotonic()
        if twin.pull_failing_since is None:
            twin.pull_failing_since = now
            if state.reason not in LASTING_IMAGE_FAILURES:
                self._log(
                    f"probe pod {self._twin_label(twin)} cannot pull the image {self.image} yet "
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
                f"probe pod {self._twin_label(twin)} cannot pull the image {self.image}{how_long} "
                f"({state.detail}); mirror it where the cluster can pull from and pass "
                f"--probe-image (a digest pin name@sha256:... is accepted)"
            )

    def _unschedulable(self, twin: _Twin, state: PodState) -> bool:
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
            f"probe pod {self._twin_label(twin)} cannot be placed: the scheduler says "
            f"{state.detail} (waited {self.unschedulable_grace:g} s for room to free up on "
            f"{node}; a node the autoscaler adds cannot take a twin, which must run on its "
            f"pod's node)"
        )
        self._log(twin.failure)
        return True

    def _twin_label(self, twin: _Twin) -> str:
        name = ((twin.obj or {}).get("metadata") or {}).get("name", "?")
        node = twin.pod.node_name or "any node"
        if twin.pod.namespace == host_namespace_name(self.run_id):
            return f"{twin.pod.namespace}/{name} (host probe pod of node {node})"
        return f"{twin.pod.namespace}/{name} (twin of {twin.pod.key}, node {node})"

    def _wait_load_balancers(self, layout: Layout) -> None:
        waiting = [k for k, rs in layout.services.items() if rs.type is ServiceType.LOAD_BALANCER]
        deadline = time.monotonic() + self.lb_timeout
        while waiting:
            still: list[str] = []
            for key in waiting:
                ns, name = key.split("/", 1)
                obj = self.kube.get(SERVICES, name, namespace=ns)
                if obj is not None:
                    self._services[key] = obj
                ingress = ((obj or {}).get("status") or {}).get("loadBalancer", {}).get("ingress")
                if not ingress:
                    still.append(key)
            waiting = still
            if not waiting or time.monotonic() >= deadline:
                return
            time.sleep(POLL * 3)

    # ------------------------------------------------------------------ probing

    def _batches(self, steps: Sequence[Step], results: dict[int, ProbeResult]) -> list[_Batch]:
        twin_ips: dict[str, str] = {}
        for key, twin in self._twins.items():
            if twin.failure is None and twin.state is not None and twin.state.ip:
                twin_ips[key] = twin.state.ip
        batches: dict[str, _Batch] = {}
        for step in steps:
            assert step.source is not None and step.dest is not None
            broken = self._broken(step)
            if broken:
                results[step.index] = ProbeResult(
                    id=step.target.id, observed=Observed.ERROR, error=broken
                )
                continue
            where = address(step.dest, twin_ips=twin_ips, services=self._services)
            if isinstance(where, str):
                results[step.index] = ProbeResult(
                    id=step.target.id, observed=Observed.ERROR, error=where
                )
                continue
            batch = batches.setdefault(step.source, _Batch(source=step.source))
            batch.steps.append(step)
            batch.hosts[step.index] = where
        return [batches[k] for k in sorted(batches)]

    def _broken(self, step: Step) -> str | None:
        assert step.dest is not None
        for key in (step.source, step.dest.pod):
            if key and key != LOCAL:
                twin = self._twins.get(key)
                if twin is None:
                    return f"no probe pod for {key}"
                if twin.failure:
                    return twin.failure
        if step.dest.service:
            backend = self._twins.get(self._service_backends.get(step.dest.service, ""))
            if backend is not None and backend.failure:
                return backend.failure
        return None

    def _probe(
        self,
        batches: Sequence[_Batch],
        timeout: float,
        results: dict[int, ProbeResult],
        progress: Progress | None,
    ) -> None:
        total = sum(len(b.steps) for b in batches)
        done = 0
        if progress is not None and total:
            progress("probes", 0, total)
        if not batches:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.max_parallel, len(batches)))
        try:
            futures = {pool.submit(self._run_batch, b, timeout): b for b in batches}
            for future, batch in futures.items():
                for index, result in future.result().items():
                    results[index] = result
                done += len(batch.steps)
                if progress is not None:
                    progress("probes", done, total)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _run_batch(self, batch: _Batch, timeout: float) -> dict[int, ProbeResult]:
        items: list[dict[str, Any]] = []
        for step in batch.steps:
            host, port = batch.hosts[step.index]
            items.append(
                {
                    "id": f"t{step.index}",
                    "host": host,
                    "port": port,
                    "protocol": str(step.target.traffic.protocol),
                }
            )
        document = batch_document(timeout, items)
        limit = timeout * 3 + EXEC_SLACK
        if batch.source == LOCAL:
            source = "this machine (where pytest runs)"
            stdout, stderr, code = run_local(document, timeout=limit)
            failure = None if code is not None else stderr
            status: str | None = None
        else:
            twin = self._twins[batch.source]
            assert twin.obj is not None
            meta = twin.obj["metadata"]
            source = f"pod {meta['namespace']}/{meta['name']} (twin of {batch.source})@{twin.state.node if twin.state else '?'}"
            res = self.kube.exec(
                meta["namespace"],
                meta["name"],
                list(PROBE_COMMAND),
                stdin=document,
                timeout=limit,
                container="agent",
                handshake_timeout=self.exec_handshake_timeout,
            )
            stdout, stderr, code, failure = res.stdout, res.stderr, res.exit_code, res.error
            status = res.message
        outcomes, complaint = parse_output(stdout, [str(it["id"]) for it in items])
        out: dict[int, ProbeResult] = {}
        for step in batch.steps:
            host, port = batch.hosts[step.index]
            where = f"{host}:{port}/{step.target.traffic.protocol}"
            outcome = outcomes.get(f"t{step.index}")
            if outcome is None:
                why = (
                    failure
                    or complaint
                    or (stderr.strip().splitlines() or [status or "no result"])[-1]
                )
                if code not in (0, None) and not failure:
                    why = f"the agent exited with code {code}: {why}"
                outcome = Outcome(observed=Observed.ERROR, error=f"the probe did not run: {why}")
            outcome = check_token(outcome, self._expected_token(step), where)
            out[step.index] = ProbeResult(
                id=step.target.id,
                observed=outcome.observed,
                token=outcome.token,
                latency_ms=outcome.latency_ms,
                error=outcome.error,
                address=where,
                source=source,
            )
        if batch.source == LOCAL:
            out = self._reachability(batch, out, timeout)
        return out

    def _expected_token(self, step: Step) -> str | None:
        """The name the destination's agent answers with (the real pod a twin stands in for);
        None where the answer comes from outside (an IP that no twin holds)."""
        assert step.dest is not None
        if step.dest.token is not None:  # the responder
            return step.dest.token
        if step.dest.kind == "pod":
            return step.dest.pod
        if step.dest.service:
            return self._service_backends.get(step.dest.service)
        return None

    def _reachability(
        self, batch: _Batch, out: dict[int, ProbeResult], timeout: float
    ) -> dict[int, ProbeResult]:
        """From outside the cluster a timeout means a deny only if this machine reaches the
        address at all: some probe there answered, or (a node) its kubelet port answers."""
        answered: set[str] = set()
        for index, result in out.items():
            if result.observed in (Observed.CONNECTED, Observed.REFUSED):
                answered.add(batch.hosts[index][0])
        silent = sorted(
            {batch.hosts[i][0] for i, r in out.items() if r.observed is Observed.TIMEOUT} - answered
        )
        node_ips = {n.ip for n in self.snapshot().nodes}
        checks = [
            {"id": host, "host": host, "port": KUBELET_PORT, "protocol": "TCP"}
            for host in silent
            if host in node_ips
        ]
        if checks:
            stdout, _, _ = run_local(
                batch_document(min(timeout, 3.0), checks), timeout=timeout + EXEC_SLACK
            )
            control, _ = parse_output(stdout, [str(c["id"]) for c in checks])
            answered |= {
                h
                for h, o in control.items()
                if o.observed in (Observed.CONNECTED, Observed.REFUSED)
            }
        fixed: dict[int, ProbeResult] = {}
        for index, result in out.items():
            host = batch.hosts[index][0]
            if result.observed is Observed.TIMEOUT and host not in answered:
                result = ProbeResult(
                    id=result.id,
                    observed=Observed.NOT_RUN,
                    error=(
                        f"this machine got no answer at all from {host}: it may not reach the "
                        f"cluster's network, so a timeout would not mean a deny (run the suites "
                        f"from inside the network, or as a Job)"
                    ),
                    address=result.address,
                    source=result.source,
                )
            fixed[index] = result
        return fixed

    # ------------------------------------------------------------------ cleaning up

    def close(self) -> None:
        """Remove every object of this run (idempotent; never raises: failures are logged)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._heartbeat.stop()
            if self._armed:
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

        deleted = 0
        try:
            for run in find_runs(self.kube, run_id=self.run_id).values():
                deleted += remove(self.kube, run, on_error=failed)
        except ClusterError as e:
            failed(str(e))
        # Whatever the listing missed: the heartbeats and the anchors made (the anchors'
        # deletion collects the rest).
        for lease in self._heartbeat.leases():
            try:
                self.kube.delete(LEASES, lease)
            except ClusterError as e:
                failed(f"{e} (the heartbeat in {lease['metadata'].get('namespace')})")
        for ns, anchor in sorted(self._anchors.items()):
            try:
                self.kube.delete(CONFIG_MAPS, anchor)
            except ClusterError as e:
                failed(f"{e} ({anchor_name(self.run_id)} in {ns})")
        if self.cleanup_errors:
            self._log(
                "could not remove every probe object of run "
                f"{self.run_id}: {self.cleanup_errors[0]}; run `netparity cleanup --cluster {self.kube.name}`"
            )
        elif deleted:
            self._log(f"run {self.run_id}: removed its {deleted} probe objects")

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


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
