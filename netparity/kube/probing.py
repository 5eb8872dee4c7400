"""Probing: the steps grouped into one batch per source (a twin, or this machine), one exec
of the agent per batch, its answers checked against the token the destination must answer
with; from outside the cluster a silent address is checked for reachability first."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from netparity.backend import Observed, ProbeResult, Progress
from netparity.kube.agentio import Outcome, batch_document, check_token, parse_output, run_local
from netparity.kube.layout import LOCAL, Step, address
from netparity.kube.objects import RunObjects
from netparity.kube.render import PROBE_COMMAND

EXEC_SLACK = 30.0  # seconds an exec may take beyond the probe timeout (API, Python start)
KUBELET_PORT = 10250  # answers on every node: tells whether this machine reaches a node at all


@dataclass(slots=True)
class Batch:
    source: str  # real pod key, or LOCAL
    steps: list[Step] = field(default_factory=list)
    hosts: dict[int, tuple[str, int]] = field(default_factory=dict)  # step index -> address


class Prober:
    """Runs steps through the twins `RunObjects` made (or from this machine)."""

    def __init__(
        self,
        objects: RunObjects,
        *,
        max_parallel: int,
        exec_handshake_timeout: float,
        node_ips: Callable[[], set[str]],
    ) -> None:
        self.objects = objects
        self.kube = objects.kube
        self.max_parallel = max_parallel
        self.exec_handshake_timeout = exec_handshake_timeout
        self.node_ips = node_ips
        # outside hosts that answered this machine in any batch of the run: a later round
        # (a repeat, a re-probe) whose only probe there times out still counts as reaching it
        self._reached: set[str] = set()
        self._reached_lock = threading.Lock()

    def batches(self, steps: Sequence[Step], results: dict[int, ProbeResult]) -> list[Batch]:
        """One batch per source; a step that cannot run gets its error in `results`."""
        twin_ips: dict[str, str] = {}
        for key, twin in self.objects.twins.items():
            if twin.failure is None and twin.state is not None and twin.state.ip:
                twin_ips[key] = twin.state.ip
        batches: dict[str, Batch] = {}
        for step in steps:
            assert step.source is not None and step.dest is not None
            broken = self._broken(step)
            if broken:
                results[step.index] = ProbeResult(
                    id=step.target.id, observed=Observed.ERROR, error=broken
                )
                continue
            where = address(step.dest, twin_ips=twin_ips, services=self.objects.services)
            if isinstance(where, str):
                results[step.index] = ProbeResult(
                    id=step.target.id, observed=Observed.ERROR, error=where
                )
                continue
            batch = batches.setdefault(step.source, Batch(source=step.source))
            batch.steps.append(step)
            batch.hosts[step.index] = where
        return [batches[k] for k in sorted(batches)]

    def _broken(self, step: Step) -> str | None:
        assert step.dest is not None
        twins = self.objects.twins
        for key in (step.source, step.dest.pod):
            if key and key != LOCAL:
                twin = twins.get(key)
                if twin is None:
                    return f"no probe pod for {key}"
                if twin.failure:
                    return twin.failure
        if step.dest.service:
            backend = twins.get(self.objects.service_backends.get(step.dest.service, ""))
            if backend is not None and backend.failure:
                return backend.failure
        return None

    def probe(
        self,
        batches: Sequence[Batch],
        timeout: float,
        results: dict[int, ProbeResult],
        progress: Progress | None,
    ) -> None:
        """Run the batches, max_parallel at a time, into `results`."""
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

    def _run_batch(self, batch: Batch, timeout: float) -> dict[int, ProbeResult]:
        items: list[dict[str, Any]] = []
        for step in batch.steps:
            host, port = batch.hosts[step.index]
            item: dict[str, Any] = {
                "id": f"t{step.index}",
                "host": host,
                "port": port,
                "protocol": str(step.target.traffic.protocol),
            }
            if step.dest is not None and step.dest.check is not None:
                item["check"] = step.dest.check  # real CoreDNS / API server: no token
            items.append(item)
        source, (stdout, stderr, code, failure, status) = self._exec(batch, timeout, items)
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

    def _exec(
        self, batch: Batch, timeout: float, items: list[dict[str, Any]]
    ) -> tuple[str, tuple[str, str, int | None, str | None, str | None]]:
        """Run the agent on a batch: (where it ran, (stdout, stderr, exit code, failure,
        the API's status message))."""
        document = batch_document(timeout, items)
        limit = timeout * 3 + EXEC_SLACK
        if batch.source == LOCAL:
            stdout, stderr, code = run_local(document, timeout=limit)
            failure = None if code is not None else stderr
            return "this machine (where pytest runs)", (stdout, stderr, code, failure, None)
        twin = self.objects.twins[batch.source]
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
        return source, (res.stdout, res.stderr, res.exit_code, res.error, res.message)

    def _expected_token(self, step: Step) -> str | None:
        """The name the destination's agent answers with (the real pod a twin stands in for);
        None where the answer comes from outside (an IP that no twin holds)."""
        assert step.dest is not None
        if step.dest.check is not None:  # a real cluster service answers: no agent's name
            return None
        if step.dest.token is not None:  # the responder
            return step.dest.token
        if step.dest.kind == "pod":
            return step.dest.pod
        if step.dest.service:
            return self.objects.service_backends.get(step.dest.service)
        return None

    def _reachability(
        self, batch: Batch, out: dict[int, ProbeResult], timeout: float
    ) -> dict[int, ProbeResult]:
        """From outside the cluster a timeout means a deny only if this machine reaches the
        address at all: some probe there answered (in this batch or an earlier one of the
        run), or (a node) its kubelet port answers."""
        answered = {
            batch.hosts[index][0]
            for index, result in out.items()
            if result.observed in (Observed.CONNECTED, Observed.REFUSED)
        }
        with self._reached_lock:
            self._reached |= answered
            answered = set(self._reached)
        silent = sorted(
            {batch.hosts[i][0] for i, r in out.items() if r.observed is Observed.TIMEOUT} - answered
        )
        node_ips = self.node_ips()
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
            controlled = {
                h
                for h, o in control.items()
                if o.observed in (Observed.CONNECTED, Observed.REFUSED)
            }
            with self._reached_lock:
                self._reached |= controlled
            answered |= controlled
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
