"""KubeBackend: probe a real cluster with twin pods that policies see as the real workloads.

Per namespace a run anchor (a ConfigMap carrying the agent) owns every probe object;
twins copy a real pod's labels, containerPorts and node, carry a readiness gate nobody
sets and meet the restricted Pod Security Standard; the run's own Services select only
twins. One exec per source twin runs its whole batch. Everything is removed on close(),
on failure, on Ctrl-C / SIGTERM, and by the next run if this one died.

`KubeBackend` composes one module per concept: what a run makes (`netparity.kube.objects`),
waiting for it and settling (`netparity.kube.waiting`), probing in batches
(`netparity.kube.probing`) and the run's lifetime, heartbeat and clean-up
(`netparity.kube.lifecycle`); it reads the cluster and lays out each round itself.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from netparity.backend import ClusterFacts, Observed, ProbeResult, Progress, Target
from netparity.errors import ClusterError, InputError
from netparity.kube.cleanup import LEASE_SECONDS, Heartbeat
from netparity.kube.client import DEFAULT_QPS, EXEC_HANDSHAKE_TIMEOUT, IN_CLUSTER, Kube
from netparity.kube.cost import Cost, cost_of
from netparity.kube.detect import UNKNOWN, Detected, detect, known_dataplanes
from netparity.kube.layout import (
    LOCAL,
    Layout,
    Step,
    active_deadline,
    plan_layout,
    planned_seconds,
)
from netparity.kube.lifecycle import Lifecycle
from netparity.kube.objects import RunObjects
from netparity.kube.placement import Placement
from netparity.kube.probing import EXEC_SLACK, KUBELET_PORT, Prober
from netparity.kube.read import read_snapshot, write_list
from netparity.kube.render import DEFAULT_IMAGE, check_image, new_run_id
from netparity.kube.responder import Responder
from netparity.kube.waiting import POLL, Waiter
from netparity.model.objects import Pod
from netparity.model.snapshot import Snapshot

__all__ = ["DEFAULT_SETTLE", "EXEC_SLACK", "KUBELET_PORT", "POLL", "KubeBackend"]

# Seconds to let NPM program a new pod IP (it shows no per-pod state) before probing, and
# between a probe and its retry. NPM learns a pod's IP from its pod informer and applies
# ipset and iptables changes in batches, within about a second on a quiet cluster; five
# seconds leave room for a busy API server and NPM's batching, and are paid once per run
# (all twins settle together) and once before each retry round.
DEFAULT_SETTLE = 5.0
# A run's planned length when nobody says (--max-duration), and the margin its expiry adds.
DEFAULT_MAX_DURATION = 2 * 3600.0
EXPIRY_MARGIN = 15 * 60.0
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
        kube_qps: float | None = None,
    ) -> None:
        # outside destinations go only to the responder (checked by the caller), outside
        # sources run only as external_ip (netparity.kube.layout)
        self.responder = responder
        self.external_ip = external_ip
        _check_dataplane(dataplane, max_parallel)
        self.kube = _connect(context, kubeconfig, kube_qps)
        self.probes_run = 0  # probes handed to run(), retries included
        self._told_requests = False
        self.image = check_image(probe_image)
        self.max_parallel = max_parallel
        self.allow_load_balancer = allow_load_balancer
        self.allow_host_network = allow_host_network
        self.pod_timeout = pod_timeout
        self.lb_timeout = lb_timeout
        _check_times(max_duration, settle, wait_ready)
        self.max_duration = max_duration
        self.exec_handshake_timeout = exec_handshake_timeout
        self.settle = settle
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
        self._snapshot: Snapshot | None = None
        self._objects: list[dict[str, Any]] | None = None
        self._detected: Detected | None = None
        self._made = RunObjects(
            kube=self.kube,
            run_id=self.run_id,
            started=self.started,
            expires=self.expires,
            image=self.image,
            lease_seconds=lease_seconds,
            max_parallel=max_parallel,
            max_duration=max_duration,
            heartbeat=self._heartbeat,
            log=self._log,
        )
        self._wait, self._prober, self._life = self._compose()

    def _compose(self) -> tuple[Waiter, Prober, Lifecycle]:
        """The parts that wait for, probe through and remove what `RunObjects` makes."""
        waiter = Waiter(
            self._made,
            pod_timeout=self.pod_timeout,
            lb_timeout=self.lb_timeout,
            settle=self.settle,
            pull_timeout=self.pull_timeout,
            unschedulable_grace=self.unschedulable_grace,
        )
        prober = Prober(
            self._made,
            max_parallel=self.max_parallel,
            exec_handshake_timeout=self.exec_handshake_timeout,
            node_ips=lambda: {n.ip for n in self.snapshot().nodes},
        )
        return waiter, prober, Lifecycle(self._made)

    @property
    def cleanup_errors(self) -> list[str]:
        """What could not be removed at close (each a sentence); empty when all was."""
        return self._life.cleanup_errors

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
        if self._detected.dataplane == UNKNOWN:
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
        if self._life.closed:
            raise ClusterError("this kubernetes backend is closed")
        try:
            return self._run(targets, timeout, progress)
        except BaseException:
            self.close()
            raise

    def _run(
        self, targets: Sequence[Target], timeout: float, progress: Progress | None
    ) -> list[ProbeResult]:
        made = self._made
        layout = self.layout(targets)
        assert made.placement is not None
        for note in made.placement.notes(
            [p for k, p in layout.twins.items() if k not in made.twins]
        ):
            self._log(note)
        if made.deadline_at is None:
            planned = planned_seconds(
                layout,
                timeout=timeout,
                exec_seconds=timeout * 3 + EXEC_SLACK,
                max_parallel=self.max_parallel,
                pod_timeout=self.pod_timeout,
                lb_timeout=self.lb_timeout,
            )
            made.deadline_at = time.monotonic() + active_deadline(planned, self.max_duration)
        results: dict[int, ProbeResult] = {}
        for step in layout.steps:
            reason = step.reason or self._not_outside(step)
            if reason is not None:
                results[step.index] = ProbeResult(
                    id=step.target.id, observed=Observed.NOT_RUN, error=reason
                )
        runnable = [s for s in layout.steps if s.index not in results]
        if any(s.source != LOCAL or (s.dest is not None and s.dest.kind != "ip") for s in runnable):
            if not made.twins and not made.services:  # before anything is placed
                cost = cost_of(
                    layout,
                    runnable=runnable,
                    timeout=timeout,
                    max_parallel=self.max_parallel,
                    settle=self.settle,
                )
                self._log(f"run {self.run_id}: {cost.line()}")
            self._life.arm()
            made.ensure(layout)
            self._wait.twins(layout, progress)
            self._wait.load_balancers(layout)
            self._wait.settle(layout, lambda: self.facts().dataplane)
        batches = self._prober.batches(runnable, results)
        if any(t.id in self._probed for t in targets):
            # a retry: give the dataplane the settle interval since the last try
            wait = self._last_probe + self.settle - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._prober.probe(batches, timeout, results, progress)
        self.probes_run += len(targets)
        self._probed.update(t.id for t in targets)
        self._last_probe = time.monotonic()
        return [results[i] for i in range(len(targets))]

    def layout(self, targets: Sequence[Target]) -> Layout:
        """Where each target runs: twins, the run's Services, steps (reads the cluster once,
        creates nothing)."""
        snap = self.snapshot()
        made = self._made
        if made.placement is None:
            made.placement = Placement.from_objects(self.objects())
        placement = made.placement
        return plan_layout(
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

    def cost(self, targets: Sequence[Target], *, timeout: float, retries: int = 1) -> Cost:
        """What running `targets` will create, exec and take (creates nothing)."""
        layout = self.layout(targets)
        return cost_of(
            layout,
            runnable=[s for s in layout.steps if s.reason is None and not self._not_outside(s)],
            timeout=timeout,
            max_parallel=self.max_parallel,
            settle=self.settle,
            retries=retries,
        )

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

    # ------------------------------------------------------------------ long runs (a watch)

    def refresh(self) -> list[str]:
        """Read the cluster again and forget the twins that are gone (`netparity.kube.rounds`);
        one sentence per twin forgotten."""
        from netparity.kube.rounds import refresh

        return refresh(self)

    def run_round(self, targets: Sequence[Target], *, timeout: float) -> list[ProbeResult]:
        """One round of a watch: place what the targets need, probe what is ready, never
        wait for a twin (`netparity.kube.rounds`)."""
        from netparity.kube.rounds import run_round

        return run_round(self, targets, timeout=timeout)

    # ------------------------------------------------------------------ cleaning up

    def close(self) -> None:
        """Remove every object of this run (idempotent; never raises: failures are logged)."""
        self._life.close()
        if not self._told_requests and self.probes_run:
            self._told_requests = True
            self._log(f"run {self.run_id}: {self.request_line()}")

    def request_line(self) -> str:
        """What the run asked of the API server, per probe and per object created."""
        counts = self.kube.requests
        created = counts.total("create")
        per_probe = counts.total() / self.probes_run if self.probes_run else 0.0
        line = f"{counts.summary()} for {self.probes_run} probes ({per_probe:.2f} a probe"
        if created:
            line += f", {counts.total() / created:.1f} an object created"
        waited = self.kube.limit.waited
        if waited >= 0.05:
            line += f"; {waited:.1f} s held back by --kube-qps {self.kube.limit.qps:g}"
        return line + ")"

    def cleanup_all(self, *, force: bool = False) -> tuple[list[str], list[str]]:
        """Remove the objects of every run that is not running (with `force`: of every run);
        one line per run removed, and one per run left alone, each saying why."""
        return self._life.cleanup_all(force=force)


def _connect(context: str | None, kubeconfig: str | None, kube_qps: float | None) -> Kube:
    """The client, once --kube-qps is checked."""
    qps = DEFAULT_QPS if kube_qps is None else kube_qps
    if not qps > 0:
        raise InputError(f"must be more than 0, got {qps:g}", field="--kube-qps")
    return Kube.connect(context, kubeconfig=kubeconfig, qps=qps)


def _check_dataplane(dataplane: str | None, max_parallel: int) -> None:
    known = known_dataplanes()
    if dataplane is not None and dataplane not in known:
        raise InputError(
            f"unknown dataplane {dataplane!r} (expected one of {', '.join(sorted(known))})",
            field="--dataplane",
        )
    if max_parallel < 1:
        raise InputError(f"must be at least 1, got {max_parallel}", field="--max-parallel")


def _check_times(max_duration: float | None, settle: float, wait_ready: float) -> None:
    if max_duration is not None and max_duration <= 0:
        raise InputError(f"must be positive, got {max_duration:g}", field="--max-duration")
    if not settle >= 0:
        raise InputError(f"must be 0 or more seconds, got {settle:g}", field="--settle")
    if not wait_ready >= 0:
        raise InputError(f"must be 0 or more seconds, got {wait_ready:g}", field="--wait-ready")


def _stderr(message: str) -> None:
    print(f"netparity: {message}", file=sys.stderr, flush=True)
