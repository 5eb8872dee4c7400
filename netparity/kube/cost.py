"""What a Kubernetes run will cost, said before it places anything: the objects it will
create (twins, host probe pods, the run's Services, a heartbeat and an anchor per
namespace), the exec batches it will run, the API requests and a time estimate.

`KubeBackend` prints it before its first object; `netparity plan --cluster NAME` prints
the same from a read of the cluster, creating nothing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from netparity.kube.layout import LOCAL, Layout, Step
from netparity.model.objects import ServiceType

# Seconds a twin typically takes to run on AKS (schedule, pull python:3.12-slim on a node
# that lacks it, start the agent), an Azure LoadBalancer to get its address, and an exec
# beyond its probes (the websocket, Python's start).
TWIN_START = 20.0
LB_START = 60.0
EXEC_OVERHEAD = 2.0
# The snapshot's reads, the dataplane's detection and the clean-ups' lists: about this
# many requests whatever the plan.
FIXED_REQUESTS = 35


@dataclass(frozen=True, slots=True, kw_only=True)
class Cost:
    twins: int
    host_pods: int
    services: int
    load_balancers: int
    namespaces: tuple[str, ...]
    probes: int
    not_run: int
    batches: int  # exec batches: one per source twin
    local: bool  # some probes run from this machine (no exec)
    seconds: float
    requests: int

    @property
    def objects(self) -> int:
        """Every object the run creates (each namespace: a heartbeat Lease and an anchor)."""
        return self.twins + self.host_pods + self.services + 2 * len(self.namespaces)

    def line(self) -> str:
        ns = self.namespaces
        shown = ", ".join(ns[:5]) + (f" and {len(ns) - 5} more" if len(ns) > 5 else "")
        what = [f"{self.twins} twin{'s' if self.twins != 1 else ''}"]
        if self.host_pods:
            what.append(f"{self.host_pods} host probe pods")
        if self.services:
            lb = f" ({self.load_balancers} LoadBalancer)" if self.load_balancers else ""
            what.append(f"{self.services} Service{'s' if self.services != 1 else ''}{lb}")
        not_run = f", {self.not_run} not run" if self.not_run else ""
        return (
            f"will create {', '.join(what)} and a heartbeat and an anchor in each of "
            f"{len(ns)} namespace{'s' if len(ns) != 1 else ''} ({shown or 'none'}): "
            f"{self.objects} objects; {self.batches} exec batch{'es' if self.batches != 1 else ''} "
            f"{'(and one from this machine) ' if self.local else ''}"
            f"for {self.probes} probes{not_run}, each round; about {_duration(self.seconds)} and "
            f"{self.requests} API requests"
        )


def cost_of(
    layout: Layout,
    *,
    runnable: Sequence[Step] | None = None,
    timeout: float,
    max_parallel: int,
    settle: float,
    retries: int = 1,
) -> Cost:
    """The cost of running `layout` (its first try and `retries` rounds of re-probes);
    `runnable`: the steps that will run (default: those the layout gave no reason)."""
    if runnable is None:
        runnable = [s for s in layout.steps if s.reason is None]
    sources = {s.source for s in runnable}
    lbs = sum(1 for rs in layout.services.values() if rs.type is ServiceType.LOAD_BALANCER)
    namespaces = tuple(layout.namespaces) + (("(the run's own)",) if layout.hosts else ())
    waves = math.ceil(len(sources) / max(1, max_parallel))
    placed = bool(layout.twins or layout.hosts)
    seconds = (
        (TWIN_START + settle if placed else 0.0)
        + (LB_START if lbs else 0.0)
        + (1 + retries) * waves * (timeout + EXEC_OVERHEAD)
        + retries * settle
    )
    objects = len(layout.twins) + len(layout.hosts) + len(layout.services) + 2 * len(namespaces)
    return Cost(
        twins=len(layout.twins),
        host_pods=len(layout.hosts),
        services=len(layout.services),
        load_balancers=lbs,
        namespaces=namespaces,
        probes=len(layout.steps),
        not_run=len(layout.steps) - len(runnable),
        batches=len(sources - {LOCAL}),
        local=LOCAL in sources,
        seconds=seconds,
        # create and delete each object; one exec per source and round; fixed reads
        requests=2 * objects + (1 + retries) * len(sources - {LOCAL}) + FIXED_REQUESTS,
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    return f"{math.ceil(seconds / 60)} min"
