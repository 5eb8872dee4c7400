"""What a report shows, read from a record (pre/check phase) or a parity.json (post phase).

Both sources become one `Report`: the run facts, the counts, and one `Row` per probe with
its verdict before and after (after = the engine's prediction for the target dataplane
when the source is a record), the rules and explanations that decided each side, and the
probe's meaning parsed from its title (the class or node role, never a pod name).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from netparity.engine.causes import Cause
from netparity.report.scenarios import ScenarioProbing, scenario_probing

# Every parity status, in the order the reports list them (the gate's failures first).
STATUSES = (
    "lost",
    "gained",
    "predicted",
    "flaky",
    "error",
    "missing",
    "accepted",
    "unrealized",
    "new",
    "not-run",
    "same",
)
FAILING = frozenset({"lost", "gained", "predicted", "flaky", "error", "missing"})
CHANGES = frozenset({"lost", "gained", "predicted", "accepted"})
# How a pre-phase observation compares with the engine (session.judge_pre's statuses).
CHECKS = ("disagrees", "unexpected", "error", "flaky", "unpredicted", "not-run", "agrees")

NODES_GROUP = "nodes"
OUTSIDE_GROUP = "outside"
_POLICY = re.compile(r"NetworkPolicy ([A-Za-z0-9.\-]+/[A-Za-z0-9.\-]+)")


NOT_PLANNED = "not planned in this run"


@dataclass(frozen=True, slots=True, kw_only=True)
class End:
    """One end of a probe as the matrix groups it: a namespace (or nodes, outside) and a
    label that survives renumbering (the pod class, the node role, the Service)."""

    signature: str  # from the title: "shop[app=api]", "node:own", "nodeport:web/x@backend-node"
    text: str  # as probed this run (pod key, node name, address)
    kind: str  # pod | node | external | service
    group: str  # namespace, "nodes" or "outside"
    label: str  # within the group

    @property
    def key(self) -> str:
        return f"{self.group}\x1f{self.label}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Side:
    """One side of the comparison: the verdict, what was observed, what the engine said."""

    dataplane: str
    verdict: str | None  # allow | deny | flaky | error | not-run | unknown (a prediction) | None
    observed: str = ""  # "connected, then timeout"; "" when not probed
    predicted: str | None = None  # the engine's decision under this dataplane
    explanation: str = ""
    rules: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()
    is_prediction: bool = False  # the verdict is the engine's prediction, not an observation


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    id: str
    title: str
    kind: str  # path kind
    intent: str
    source: End
    destination: End
    port: str  # "8080", "8080(http)"
    protocol: str
    status: str  # a parity status (pre: "predicted" where the engine predicts a flip)
    change: str  # same | lost | gained | flaky | error | new | missing | not-run
    failed: bool
    predicted_change: bool
    before: Side
    after: Side
    scenario: str | None = None
    scenarios: tuple[str, ...] = ()
    rule: str | None = None
    rules: tuple[str, ...] = ()
    source_class: str | None = None
    destination_class: str | None = None
    stands_for: tuple[str, ...] = ()
    accepted_reason: str | None = None
    message: str = ""
    check: str | None = None  # pre/check phase: agrees | disagrees | unexpected | ...
    category: str | None = None  # the change's section (set with the lint's findings)
    findings: tuple[str, ...] = ()  # ids of the lint findings that explain this probe
    # why the engine predicts before -> after (netparity.engine.causes), where the source
    # says (`causes_known`: a record or parity.json of 2.1 or later)
    causes: tuple[Cause, ...] = ()
    causes_known: bool = False
    categories: tuple[str, ...] = ()  # every cause's section, `category` first
    no_finding: tuple[str, ...] = ()  # "cause: why no lint finding explains it"
    # why this run did not observe it on the cluster (the backend's not-run reason, or
    # "not planned"); None: observed (docs/report.md, "What was probed")
    not_probed: str | None = None

    @property
    def port_protocol(self) -> str:
        return f"{self.port}/{self.protocol}"

    @property
    def changed(self) -> bool:
        return self.status in CHANGES

    def policies(self) -> tuple[str, ...]:
        """Every NetworkPolicy the probe's rules and explanations name ("ns/name")."""
        seen: dict[str, None] = {}
        texts = [
            *self.rules,
            *([self.rule] if self.rule else []),
            *self.before.rules,
            *self.after.rules,
            self.before.explanation,
            self.after.explanation,
        ]
        for text in texts:
            for m in _POLICY.finditer(text):
                seen.setdefault(m.group(1), None)
        return tuple(seen)

    def service(self) -> str | None:
        """The Service ("ns/name") a probe goes through, from its destination signature."""
        sig = self.destination.signature
        for prefix in ("svc:", "nodeport:", "lb:"):
            if sig.startswith(prefix):
                return sig[len(prefix) :].split("@", 1)[0]
        return None


def is_problem(r: Row) -> bool:
    """A probe the reports list apart, beside the changes: flaky, in error, or missing
    (observed in the baseline, not checked now; accepted or not)."""
    return r.status in ("flaky", "error", "missing") or r.change == "missing"


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """The facts of one record: when, where, on what."""

    time: str
    phase: str
    backend: str
    dataplane: str
    dataplane_version: str | None = None
    netparity_version: str = ""
    path: str | None = None
    plan_digest: str = ""
    plan_size: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    source_kind: str  # parity | record
    phase: str  # pre | check | post
    cluster: str
    before: str  # dataplane names as the predictions use them
    after: str
    baseline: Run  # pre: the record itself
    current: Run | None  # pre/check: None (the "after" side is the engine's prediction)
    held: bool | None  # post only
    exit_code: int | None
    counts: Mapping[str, int]
    checks: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    notes: tuple[str, ...] = ()
    unused_accepts: tuple[str, ...] = ()
    coverage: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    rows: tuple[Row, ...] = ()
    source: str = ""

    @property
    def predictions_only(self) -> bool:
        """The "after" side is the engine's prediction (a record before the upgrade)."""
        return self.current is None

    @property
    def failing(self) -> int:
        return sum(self.counts.get(s, 0) for s in FAILING)

    def scenario_probing(self) -> list[ScenarioProbing]:
        """Per scenario: probed on this cluster by the run reported (the current one after
        the upgrade), or only predicted, and why not. Probes this run's plan no longer has
        (missing, not planned) are not its to count."""
        return scenario_probing(
            ((r.scenario, *r.scenarios) if r.scenario else r.scenarios, r.not_probed)
            for r in self.rows
            if r.not_probed != NOT_PLANNED
        )

    def with_rows(self, rows: Sequence[Row]) -> Report:
        return replace(self, rows=tuple(rows))
