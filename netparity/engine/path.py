"""A resolved path (paths.py): the legs policy judges, or the decision the path alone makes."""

from __future__ import annotations

from dataclasses import dataclass

from netparity.engine.matcher.leg import Leg
from netparity.engine.traffic import Decision, PathKind
from netparity.model.objects import Pod


# Built for every resolved verdict: plain slotted (not frozen), like `Leg`.
@dataclass(slots=True, kw_only=True)
class Path:
    kind: PathKind
    legs: tuple[Leg, ...] = ()
    notes: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()
    backend: Pod | None = None
    port: int | None = None
    decided: Decision | None = None  # set when the path alone decides (bypass, no backend)
    reason: str = ""
    # D22: the destination is a Service without endpoints, which the dataplane rejects: a
    # probe's `refused` is that rejection (a deny), not a port nobody listens on
    refused_is_deny: bool = False
