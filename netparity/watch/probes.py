"""What a watch reads off a planned probe and its result: the nodes and pods it stands on,
and what one sample saw. Shared by the lab's and the Kubernetes watch. Pure: no I/O.
"""

from __future__ import annotations

from netparity.backend import Observed, ProbeResult
from netparity.model.traffic import PodEndpoint
from netparity.plan.model import PlannedProbe
from netparity.watch.timeline import Seen


def seen_of(r: ProbeResult) -> Seen:
    """A connection or a refusal got through the policies; a timeout did not."""
    if r.observed in (Observed.CONNECTED, Observed.REFUSED):
        return Seen.ALLOW
    if r.observed is Observed.TIMEOUT:
        return Seen.DENY
    if r.observed is Observed.NOT_RUN:
        return Seen.NOT_PLACED
    return Seen.ERROR


def nodes_of(p: PlannedProbe) -> tuple[str, ...]:
    """The nodes of the probe's source and destination, each once, source first."""
    out: list[str] = []
    for ep in (p.traffic.source, p.traffic.destination):
        pod = getattr(ep, "pod", None)
        node = getattr(ep, "node", None)
        name = pod.node_name if pod is not None else getattr(node, "name", None)
        if name and name not in out:
            out.append(str(name))
    return tuple(out)


def pods_of(p: PlannedProbe) -> tuple[str, ...]:
    """The keys of the probe's pods (namespace/name), source first."""
    return tuple(
        ep.pod.key
        for ep in (p.traffic.source, p.traffic.destination)
        if isinstance(ep, PodEndpoint)
    )
