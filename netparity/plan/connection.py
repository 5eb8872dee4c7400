"""One connection the planner and the lint judge (netparity.plan.governed enumerates them)."""

from __future__ import annotations

from dataclasses import dataclass

from netparity.engine.traffic import Traffic
from netparity.model.quick import quick_init
from netparity.plan.groups import PodGroup


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """One connection to judge under both dataplanes, the side whose verdict it compares,
    and for whom."""

    traffic: Traffic
    side: str | None  # "ingress"/"egress": compare that side's decision; None: the whole verdict
    pods: PodGroup  # the governed pods (the policy's subjects, or a Service's clients/backends)
    peer: str  # the other end, described (with a count where it stands for several)
    port: int  # the port number on the pod (after Service translation where known)
    port_label: str  # how a reader sees it: "8080/TCP", "80/TCP (targetPort 8080)"
    from_pods: bool | None = None  # `pods` start the connection (None: egress side does)
    stands_for: tuple[PodGroup, ...] = ()  # more classes every policy sees as `pods` (capped)
    stands_for_pods: int = 0  # pods in all of those classes
    stands_for_classes: int = 0  # how many classes (stands_for lists the first ones)
