"""The connections the lint judges: the planner's enumerator (plan/governed.py,
plan/governed_services.py) over the planner's pod classes, as the lint's `Probe`s."""

from __future__ import annotations

from netparity.engine.compile import NPTarget
from netparity.lint.findings import Probe
from netparity.model.objects import Service
from netparity.plan.classes import PodClass
from netparity.plan.governed import Connection
from netparity.plan.governed_services import ServiceTraffic


def _probe(c: Connection) -> Probe:
    return Probe(
        traffic=c.traffic,
        side=c.side,
        pods=c.pods,
        peer=c.peer,
        port=c.port,
        port_label=c.port_label,
        from_pods=c.from_pods,
        stands_for=c.stands_for,
        stands_for_pods=c.stands_for_pods,
        stands_for_classes=c.stands_for_classes,
    )


class ProbeBuilder(ServiceTraffic):
    """The enumerator, answering in the lint's values (remedies read its indexes too)."""

    def subject_probes(
        self, cls: PodClass, direction: str, governing: list[NPTarget]
    ) -> list[Probe]:
        return [_probe(c) for c in self.subject_connections(cls, direction, governing)]

    def service_probes(self, svc: Service) -> list[Probe]:
        return [_probe(c) for c in self.service_connections(svc)]
