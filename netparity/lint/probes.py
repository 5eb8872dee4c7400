"""The connections the lint judges: the planner's enumerator (plan/governed.py,
plan/governed_services.py, and lint/source_ranges.py, lint/itp_local.py for D22) over the planner's pod classes (plan/class_index.py)."""

from __future__ import annotations

from netparity.engine.compile import NPTarget
from netparity.lint.findings import Probe
from netparity.lint.itp_local import ItpLocalTraffic
from netparity.model.objects import Service
from netparity.plan.classes import PodClass


class ProbeBuilder(ItpLocalTraffic):
    """The enumerator under the lint's names (remedies read its indexes too)."""

    def subject_probes(
        self, cls: PodClass, direction: str, governing: list[NPTarget]
    ) -> list[Probe]:
        return self.subject_connections(cls, direction, governing)

    def service_probes(self, svc: Service) -> list[Probe]:
        known = self.service_connections(svc)
        return known + self.source_range_connections(svc, known) + self.itp_local_connections(svc)
