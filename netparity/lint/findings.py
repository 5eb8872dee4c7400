"""Lint values: a finding (one policy or Service, one scenario), the traffic it names, its fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from netparity.engine.traffic import Decision, PathKind, RuleRef, Traffic
from netparity.lint.judged import NotJudged
from netparity.model.quick import quick_init
from netparity.plan.connection import Connection
from netparity.plan.groups import PodGroup as PodGroup  # re-exported: lint values name it
from netparity.plan.model import GUIDE_SCENARIOS, Scenario

# Findings whose kind the lint could not tie to a row of SEMANTICS.md (should not happen;
# reported rather than hidden).
OTHER_KIND = "other"

# The other pod classes a connection's text names (`ChangedTraffic.who`; the JSON names up
# to 20: governed_services.MAX_STANDS_FOR).
SHOWN_OTHERS = 3

# The order kinds are listed in within one severity: the guide's five first, as it lists them.
KIND_ORDER: tuple[str, ...] = (
    Scenario.EXTERNAL_INGRESS,
    Scenario.NODE_EGRESS,
    Scenario.IPBLOCK_PODS,
    Scenario.IPBLOCK_NODES,
    Scenario.NAMED_PORT,
    Scenario.ENDPORT,
    Scenario.LB_IN_CLUSTER,
    Scenario.IDENTITY_LABELS,
    Scenario.SCTP,
    Scenario.UNTRANSLATABLE,
    Scenario.CILIUM_POLICY,
    Scenario.POLICY_TYPES,
    Scenario.NS_SELECTOR_OR,
    Scenario.LB_SOURCE_RANGES,
    Scenario.ITP_LOCAL,
    OTHER_KIND,
)

# The SEMANTICS.md row each kind stands for (the explanations may cite more).
KIND_ROWS: dict[str, str] = {
    Scenario.ENDPORT: "D1",
    Scenario.IPBLOCK_PODS: "D2",
    Scenario.IPBLOCK_NODES: "D2",
    Scenario.NAMED_PORT: "D3",
    Scenario.NODE_EGRESS: "D4a",
    Scenario.EXTERNAL_INGRESS: "D5",
    Scenario.IDENTITY_LABELS: "D6",
    Scenario.SCTP: "D8",
    Scenario.LB_IN_CLUSTER: "D5d",
    Scenario.UNTRANSLATABLE: "D11",
    Scenario.CILIUM_POLICY: "D13",
    Scenario.POLICY_TYPES: "D23",
    Scenario.NS_SELECTOR_OR: "D19",
    Scenario.LB_SOURCE_RANGES: "D22",
    Scenario.ITP_LOCAL: "D22",
}


def is_guide_kind(kind: str) -> bool:
    return kind in {str(s) for s in GUIDE_SCENARIOS}


class Change(StrEnum):
    """How a connection's verdict moves from NPM to the target dataplane."""

    OUTAGE = "allow->deny"  # allowed today, cut after the migration: most severe
    HOLE = "deny->allow"  # blocked today, open after the migration

    @property
    def severity(self) -> str:
        return "outage" if self is Change.OUTAGE else "hole"

    @property
    def rank(self) -> int:
        return 0 if self is Change.OUTAGE else 1


class FixAction(StrEnum):
    APPLY = "apply"  # kubectl apply -f
    DELETE = "delete"  # kubectl delete -f


class FixWhen(StrEnum):
    BEFORE = "before-migration"  # NetworkPolicy changes: safe under NPM, keep parity on Cilium
    AFTER = "after-migration"  # CiliumNetworkPolicy: apply once Cilium runs (NPM ignores it)


# One connection the lint evaluated, the side whose verdict it compares, and for whom: the
# planner's enumerator lists them (plan/governed.py).
Probe = Connection


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ChangedTraffic:
    """Connections of one kind that change: who, to/from what, which ports, and why."""

    change: Change
    direction: str  # the side that changed: ingress or egress
    path: PathKind
    pods: PodGroup
    peer: str
    ports: tuple[str, ...]  # "8080/TCP", sorted by number
    npm: str  # why NPM decides as it does (the engine's explanation)
    target: str  # why the target dataplane decides differently
    uncertain: tuple[str, ...] = ()
    from_pods: bool = True  # the pods start the connection (else the peer does)
    others: tuple[PodGroup, ...] = ()  # more pod classes the same holds for (first ones)
    others_pods: int = 0  # pods in all of those classes
    others_classes: int = 0

    def who(self) -> str:
        if not self.others_classes:
            return str(self.pods)
        return (
            f"{self.pods} and {self.others_pods} more pods in {self.others_classes} classes "
            f"({'; '.join(str(g) for g in self.others[:SHOWN_OTHERS])}"
            + ("; ..." if self.others_classes > SHOWN_OTHERS else "")
            + ")"
        )

    def describe(self) -> str:
        arrow = "->" if self.from_pods else "<-"
        return f"{self.change} {self.who()} {arrow} {self.peer} on {', '.join(self.ports)} ({self.path})"

    def to_json(self) -> dict[str, Any]:
        return {
            "change": str(self.change),
            "direction": self.direction,
            "from_pods": self.from_pods,
            "path": str(self.path),
            "pods": self.pods.to_json(),
            "more_pods": {
                "classes": self.others_classes,
                "count": self.others_pods,
                "first": [g.to_json() for g in self.others],
            },
            "peer": self.peer,
            "ports": list(self.ports),
            "npm": self.npm,
            "target": self.target,
            "uncertain": list(self.uncertain),
        }


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Expectation:
    """A connection a fix must restore: the target's decision must become `expected` (NPM's)."""

    probe: Probe
    expected: Decision

    @property
    def traffic(self) -> Traffic:
        return self.probe.traffic

    @property
    def side(self) -> str | None:
        return self.probe.side


@dataclass(frozen=True, slots=True, kw_only=True)
class Fix:
    """Remediation YAML for one finding, checked against the engine before it is written."""

    summary: str  # one sentence: what the objects do
    action: FixAction
    when: FixWhen
    objects: tuple[dict[str, Any], ...]  # wire dicts (kubectl apply / delete)
    explanation: str = ""  # caveats a reader must know before applying it
    supersedes: tuple[str, ...] = ()  # ids of earlier findings whose fix this one includes

    def object_names(self) -> tuple[str, ...]:
        out = []
        for obj in self.objects:
            meta = obj.get("metadata", {})
            out.append(f"{obj.get('kind')} {meta.get('namespace')}/{meta.get('name')}")
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One affected policy (or set of policies) or Service and one scenario."""

    id: str  # stable: kind/namespace/object names
    kind: str  # a Scenario value, or OTHER_KIND
    namespace: str
    object: str  # "NetworkPolicy ns/name", "NetworkPolicies ns/a, b", "Service ns/name"
    policies: tuple[str, ...]  # the NetworkPolicies involved ("NetworkPolicy ns/name")
    rules: tuple[str, ...]  # the rules that decided under NPM (or that now decide)
    service: str | None
    title: str  # what changes, in a few words ("the ipBlock no longer matches pod IPs")
    message: str  # one sentence: object, title, counts, the first connection
    traffic: tuple[ChangedTraffic, ...]
    rows: tuple[str, ...]  # SEMANTICS.md rows cited by the engine's explanations
    uncertain: tuple[str, ...] = ()  # [VERIFY] points the verdicts depend on
    fix: Fix | None = None
    no_fix_reason: str | None = None  # why no (NetworkPolicy-only) fix exists
    expectations: tuple[Expectation, ...] = field(default=(), repr=False)
    rule_refs: tuple[RuleRef, ...] = field(default=(), repr=False)

    @property
    def changes(self) -> tuple[Change, ...]:
        return tuple(sorted({t.change for t in self.traffic}, key=lambda c: c.rank))

    @property
    def severity(self) -> str:
        return self.changes[0].severity if self.changes else "hole"

    @property
    def rank(self) -> int:
        return min((c.rank for c in self.changes), default=1)

    @property
    def guide(self) -> bool:
        return is_guide_kind(self.kind)

    def sort_key(self) -> tuple[int, int, str]:
        return _sort_key(self.rank, self.kind, self.object)

    def brief(self) -> Brief:
        return Brief(self.id, self.kind, self.severity, self.namespace, self.object)


def _sort_key(rank: int, kind: str, obj: str) -> tuple[int, int, str]:
    order = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    return (rank, order, obj)


class Brief(NamedTuple):
    """What a finding is, without its connections (what the CLI's note on an older
    release reads of that release's findings), in the order findings are reported."""

    id: str
    kind: str
    severity: str  # "outage" where some connection is cut, else "hole"
    namespace: str
    object: str

    def order(self) -> tuple[str, int, int, str]:
        """Where the finding comes in a report (a `Finding`'s namespace and sort_key)."""
        return (
            self.namespace,
            *_sort_key(0 if self.severity == "outage" else 1, self.kind, self.object),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LintReport:
    target: str
    findings: tuple[Finding, ...]  # sorted: namespace, then most severe first
    sources: tuple[str, ...] = ()
    summary: str = ""  # the snapshot's summary line
    policies: int = 0  # NetworkPolicies linted
    services: int = 0  # NodePort/LoadBalancer Services linted
    connections: int = 0  # connections evaluated (each under both dataplanes)
    notes: tuple[str, ...] = ()  # what the reader should know about the run itself
    not_judged: NotJudged = field(default_factory=NotJudged)  # netparity.lint.judged

    @property
    def outages(self) -> int:
        return sum(1 for f in self.findings if f.severity == "outage")

    @property
    def holes(self) -> int:
        return sum(1 for f in self.findings if f.severity == "hole")

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: KIND_ORDER.index(kv[0])))
