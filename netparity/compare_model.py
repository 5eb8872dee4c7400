"""The values of a comparison: each probe's status (`Status`, `ProbeParity`) and the whole
(`Parity`), with the statuses that fail the gate. compare.py judges; compare_output.py
renders; both read these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from netparity.accept import Acceptance
from netparity.engine.causes import Cause
from netparity.record import Outcome, ProbeRecord, Record

PARITY_KIND = "netparity.parity"
# Version 2 added the statuses `unrealized` and `not-run`, and `missing` fails the gate;
# minor 1 (`schema_minor`, as the record's) added each probe's `causes`.
PARITY_SCHEMA_VERSION = 2
PARITY_READS_VERSIONS = (1, 2)


class Status(StrEnum):
    SAME = "same"
    UNREALIZED = "unrealized"  # predicted to change, did not
    LOST = "lost"
    GAINED = "gained"
    PREDICTED = "predicted"
    ACCEPTED = "accepted"
    FLAKY = "flaky"
    ERROR = "error"
    NEW = "new"
    MISSING = "missing"
    NOT_RUN = "not-run"


# The statuses that break parity (the CI gate), in the order reports list them.
FAILING = (
    Status.LOST,
    Status.GAINED,
    Status.PREDICTED,
    Status.FLAKY,
    Status.ERROR,
    Status.MISSING,
)
# The statuses that pass, in the order reports list them (after FAILING).
PASSING = (Status.UNREALIZED, Status.ACCEPTED, Status.NEW, Status.NOT_RUN, Status.SAME)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeParity:
    id: str
    title: str
    status: Status
    change: Status  # what happened, before predictions and accepts: same/lost/gained/flaky/...
    before: Outcome | None
    after: Outcome | None
    predicted_before: str | None  # the engine's decision under the baseline's dataplane
    predicted_after: str | None  # ... and under the current one
    predicted: bool  # the engine predicted this change (before != after, both matched)
    accepted: Acceptance | None
    baseline: ProbeRecord | None
    current: ProbeRecord | None
    message: str
    # why the engine predicts before != after: the dataplane differences that flip it;
    # `causes_known` False where the records cannot say (older than 2.1)
    causes: tuple[Cause, ...] = ()
    causes_known: bool = False

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    @property
    def probe(self) -> ProbeRecord:
        record = self.current or self.baseline
        assert record is not None
        return record


@dataclass(frozen=True, slots=True, kw_only=True)
class Parity:
    baseline: Record
    current: Record
    before: str  # the baseline's dataplane (as predictions name it)
    after: str  # the current dataplane (as predictions name it)
    probes: tuple[ProbeParity, ...]
    unused_accepts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def held(self) -> bool:
        return not any(p.failed for p in self.probes)

    def by_id(self) -> Mapping[str, ProbeParity]:
        return {p.id: p for p in self.probes}

    @property
    def exit_code(self) -> int:
        return 0 if self.held else 1
