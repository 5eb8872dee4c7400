"""The lab backend: resolves each Traffic to a source namespace and a destination address in
the lab's live state (`netparity.lab.resolve`), adds what the run needs (external hosts,
its own Services), and runs the probes (`netparity.lab.probing`): by default every source at
once from this one process (`netparity.lab.prober`); with `prober="agent"` (or
NETPARITY_LAB_PROBER=agent) one `agent.py probe` process per source batch, in parallel.

A probe the lab cannot run (unknown pod, unnamed port, a Service as a source) is an
`error` with the reason, never a deny.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from netparity.backend import (
    ClusterFacts,
    Observed,
    ProbeResult,
    Progress,
    Target,
    token_mismatch,
)
from netparity.errors import ClusterError, NetparityError
from netparity.interrupts import checkpoint
from netparity.lab.addressing import DEFAULT_LAB, check_lab_name
from netparity.lab.agents import agent_path
from netparity.lab.lifecycle import (
    add_hosts,
    add_services,
    lab_problem,
    remove_services,
    status,
)
from netparity.lab.probing import Raw, group_batches, run_in_process, run_source
from netparity.lab.resolve import Index, NeedHost, Probe, Unresolved, pinned_run_service, probe_for
from netparity.lab.state import READY, USER, LabState, hold, state_path
from netparity.lab.topology import LabTopology
from netparity.model.objects import run_owned
from netparity.model.snapshot import Snapshot
from netparity.model.traffic import (
    ExternalEndpoint,
    ServiceEndpoint,
)


class Prober(enum.StrEnum):
    """How the lab runs probes: the same agent code and verdicts either way."""

    PROCESS = "process"  # every source from this one process, sockets made in each namespace
    AGENT = "agent"  # one `agent.py probe` process per source batch (the previous way)


PROBER_ENV = "NETPARITY_LAB_PROBER"


def default_prober() -> Prober:
    value = os.environ.get(PROBER_ENV, Prober.PROCESS)
    try:
        return Prober(value)
    except ValueError:
        raise ClusterError(f"{PROBER_ENV}={value!r}: expected one of {', '.join(Prober)}") from None


class LabBackend:
    """The `Backend` for a built lab; reads the lab's state on each call (upgrades show).

    `prober` picks how probes run (default: `NETPARITY_LAB_PROBER`, else one process for
    every source). With the agent, `parallel` bounds the source batches (agent processes)
    running at once: a batch mostly waits (on its timeout when something is dropped), so it
    is well above the CPU count.
    """

    def __init__(
        self,
        name: str = DEFAULT_LAB,
        *,
        parallel: int = 32,
        hold: bool = False,
        wait: float = 0.0,
        prober: Prober | str | None = None,
    ) -> None:
        self.name = check_lab_name(name)
        self.parallel = max(1, parallel)
        self.prober = default_prober() if prober is None else Prober(prober)
        self._cache: tuple[int, LabState] | None = None
        self._run_services: set[str] = set()  # the run's own Services this backend probed
        self._hold: contextlib.ExitStack | None = None
        if hold:
            self.hold(wait=wait)

    def hold(self, *, wait: float = 0.0) -> None:
        """Hold the lab as a user until close() (`lab probe`, a suites run): refused while
        a changer builds or removes it, and refused for a broken lab (docs/faults.md)."""
        if self._hold is not None:
            return
        status(self.name)  # no lab: say so before a lock file is made for it
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(hold(self.name, USER, wait=wait))
            problem = lab_problem(status(self.name))
            if problem is not None:
                raise ClusterError(problem)
        except BaseException:
            stack.close()
            raise
        self._hold = stack
        checkpoint("lab:held")

    # -- state

    def state(self) -> LabState:
        try:
            mtime = state_path(self.name).stat().st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        if self._cache is None or self._cache[0] != mtime:
            self._cache = (mtime, status(self.name))
        return self._cache[1]

    def topology(self) -> LabTopology:
        topo = self.state().topology
        assert topo is not None
        return topo

    def facts(self) -> ClusterFacts:
        st = self.state()
        return ClusterFacts(name=self.name, backend="lab", dataplane=st.dataplane, version=None)

    def snapshot(self) -> Snapshot:
        """The lab as the cluster: without the Services a run created for itself
        (labelled netparity.io/run), which are never the cluster's own."""
        snap = self.topology().snapshot
        if not any(run_owned(s.labels) for s in snap.services):
            return snap
        return dataclasses.replace(
            snap, services=tuple(s for s in snap.services if not run_owned(s.labels))
        )

    def close(self) -> None:
        """Remove the run's own Services this backend created or probed, as the
        Kubernetes backend removes its run's objects at the end."""
        keys, self._run_services = sorted(self._run_services), set()
        self._cache = None
        if keys:
            with contextlib.suppress(ClusterError):  # the lab is gone: nothing to remove
                remove_services(self.name, keys)
        held, self._hold = self._hold, None
        if held is not None:
            held.close()

    # -- running

    def _resolve(self, targets: Sequence[Target], results: list[ProbeResult | None]) -> list[Probe]:
        """Resolve every target not yet answered; unknown external addresses get a host."""
        ix = Index(self.topology())
        self._run_services.update(
            t.traffic.destination.service.key
            for t in targets
            if isinstance(t.traffic.destination, ServiceEndpoint)
            and run_owned(t.traffic.destination.service.labels)
        )
        extra = {
            t.traffic.destination.service.key: t.traffic.destination.service
            for t in targets
            if isinstance(t.traffic.destination, ServiceEndpoint)
            and t.traffic.destination.service.key not in ix.services
        }
        for t in targets:  # a user's Service with several backends: one run Service each
            dst = t.traffic.destination
            if isinstance(dst, ServiceEndpoint):
                pinned = pinned_run_service(ix, dst)
                if pinned is not None:
                    self._run_services.add(pinned.key)  # removed at the end, as any run's
                    if pinned.key not in ix.services:
                        extra.setdefault(dst.service.key + "|" + pinned.key, pinned)
        if extra:  # the run's own Services (the planner's): created like a run would
            try:
                # never on an address the run probes as outside (it must be a host)
                outside = {
                    ep.ip
                    for t in targets
                    for ep in (t.traffic.source, t.traffic.destination)
                    if isinstance(ep, ExternalEndpoint)
                }
                ix = Index(
                    add_services(
                        self.name, [extra[k] for k in sorted(extra)], avoid=sorted(outside)
                    )
                )
            except NetparityError as e:
                wanted = {k.split("|")[0] for k in extra}
                for i, t in enumerate(targets):
                    dst = t.traffic.destination
                    if isinstance(dst, ServiceEndpoint) and dst.service.key in wanted:
                        results[i] = _error(t, f"cannot create Service {dst.service.key}: {e}")
        probes: list[Probe] = []
        missing: dict[int, str] = {}
        for i, target in enumerate(targets):
            if results[i] is not None:
                continue
            try:
                probes.append(probe_for(ix, i, target))
            except NeedHost as need:
                missing[i] = need.ip
            except Unresolved as e:
                results[i] = _error(target, str(e))
        if not missing:
            return probes
        try:
            ix = Index(add_hosts(self.name, sorted(set(missing.values()))))
        except NetparityError as e:
            for i, ip in missing.items():
                results[i] = _error(targets[i], f"cannot add an external host at {ip}: {e}")
            return probes
        for i in sorted(missing):
            try:
                probes.append(probe_for(ix, i, targets[i]))
            except (NeedHost, Unresolved) as e:
                results[i] = _error(targets[i], str(e))
        return probes

    def run(
        self, targets: Sequence[Target], *, timeout: float, progress: Progress | None = None
    ) -> list[ProbeResult]:
        """Run every target (all sources at once, or one agent process per source batch);
        results in input order."""
        results: list[ProbeResult | None] = [None] * len(targets)
        if not targets:
            return []
        try:
            if not timeout > 0:
                raise ClusterError(f"probe timeout must be positive, got {timeout}")
            st = self.state()
            if st.status != READY:
                raise ClusterError(f"lab {self.name} is {st.status} (process {st.pid}), not ready")
            probes = self._resolve(targets, results)
            agent = str(agent_path())
        except NetparityError as e:
            return [_error(t, str(e)) for t in targets]
        groups = group_batches(probes)
        total = len(probes)
        done = 0
        if progress is not None:
            progress("probes", 0, total)

        def record(batch: list[tuple[Probe, Raw]]) -> None:
            nonlocal done
            for p, r in batch:
                observed, error = r.observed, r.error
                if observed is Observed.CONNECTED and p.expect is not None:
                    why = _wrong_answer(r.token, p.expect, p.address)
                    if why is not None:
                        observed, error = Observed.ERROR, why
                results[p.index] = ProbeResult(
                    id=targets[p.index].id,
                    observed=observed,
                    token=r.token,
                    latency_ms=r.latency_ms,
                    error=error,
                    address=p.address,
                    source=p.source.label,
                )
            done += len(batch)
            if progress is not None:
                progress("probes", done, total)

        if groups and self.prober is Prober.PROCESS:
            record(run_in_process(self.name, groups, timeout, agent))
        elif groups:
            with ThreadPoolExecutor(max_workers=min(self.parallel, len(groups))) as pool:
                futures = [
                    pool.submit(run_source, self.name, ns, subs, timeout, agent)
                    for ns, subs in groups.items()
                ]
                try:
                    for f in as_completed(futures):
                        record(f.result())
                except BaseException:  # Ctrl-C, SIGTERM: sources not started never start
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        return [
            r if r is not None else _error(targets[i], "the lab returned no result")
            for i, r in enumerate(results)
        ]


def _wrong_answer(token: str | None, expect: frozenset[str], where: str) -> str | None:
    if token in expect:
        return None
    return token_mismatch(token, " or ".join(sorted(expect)), where)


def _error(target: Target, reason: str) -> ProbeResult:
    return ProbeResult(id=target.id, observed=Observed.ERROR, error=reason)
