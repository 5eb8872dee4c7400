"""What the linter gathers per finding while it observes connections, and the small
readings of verdicts and policy names it needs (netparity.lint.lint)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from netparity.engine.compile import EGRESS, INGRESS
from netparity.engine.service_d22 import ITP_LOCAL_MARK, SOURCE_RANGES_MARK
from netparity.engine.traffic import Decision, DirectionResult, PathKind, RuleRef, Verdict
from netparity.lint.findings import OTHER_KIND, Change, Expectation, PodGroup, Probe
from netparity.model.objects import Service
from netparity.model.quick import quick_init
from netparity.plan.model import Scenario

_TAG = re.compile(r"\((D\d+[a-z]?)\)")  # a SEMANTICS.md row cited
NP = "NetworkPolicy "  # how the engine names a NetworkPolicy
_SERVICE_PATHS = frozenset(
    {PathKind.EXTERNAL_NODEPORT, PathKind.EXTERNAL_LB, PathKind.POD_NODEPORT, PathKind.POD_LB}
)


def side(verdict: Verdict, direction: str | None) -> DirectionResult | None:
    """The direction of a verdict a connection was made for (None: the whole verdict)."""
    if direction == EGRESS:
        return verdict.egress
    if direction == INGRESS:
        return verdict.ingress
    return None


def nps(names: tuple[str, ...] | list[str]) -> list[str]:
    """The NetworkPolicies among policy names (Cilium policies left out)."""
    return [n for n in names if n.startswith(NP)]


def ns_name(policy: str) -> tuple[str, str]:
    """(namespace, name) of "NetworkPolicy ns/name"."""
    ns, _, name = policy.split(" ", 1)[1].partition("/")
    return ns, name


@dataclass(slots=True)
class Entry:
    """One row of a finding: a change seen from one group of pods, on one path."""

    from_pods: bool
    npm: str
    target: str
    others: tuple[PodGroup, ...] = ()
    others_pods: int = 0
    others_classes: int = 0
    ports: dict[tuple[int, str], None] = field(default_factory=dict)
    uncertain: dict[str, None] = field(default_factory=dict)
    unwritten: Probe | None = None  # whose reasons npm and target are, not yet written


@dataclass(slots=True)
class Acc:
    """What the linter gathers for one finding before it is made."""

    kind: str
    namespace: str
    object: str
    policies: dict[str, None] = field(default_factory=dict)
    refs: dict[RuleRef, None] = field(default_factory=dict)
    service: Service | None = None
    entries: dict[tuple[Change, str, PathKind, PodGroup, str], Entry] = field(default_factory=dict)
    expectations: list[Expectation] = field(default_factory=list)
    rows: dict[str, None] = field(default_factory=dict)
    uncertain: dict[str, None] = field(default_factory=dict)
    changes: dict[Change, None] = field(default_factory=dict)  # a brief lint's (gather.py)


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Compared:
    """A connection under npm and under the target, and the side of each compared."""

    vn: Verdict
    vt: Verdict
    sn: DirectionResult | None  # the probe's side under npm (None: compare whole verdicts)
    st: DirectionResult | None

    @property
    def decisions(self) -> tuple[Decision, Decision]:
        if self.sn is None or self.st is None:
            return self.vn.decision, self.vt.decision
        return self.sn.decision, self.st.decision


def service_kind(vt: Verdict, vn: Verdict | None = None) -> str:
    """The kind of a change seen through a Service path (D5, D5d), from the target's path;
    D22 where NPM's kube-proxy dropped it outside loadBalancerSourceRanges (`vn`)."""
    if vn is not None and _marked(vn, SOURCE_RANGES_MARK):
        return str(Scenario.LB_SOURCE_RANGES)
    if (
        vt.path in (PathKind.POD_NODEPORT, PathKind.POD_LB)
        and _marked(vt, ITP_LOCAL_MARK)
        and (vn is None or not _marked(vn, ITP_LOCAL_MARK))
    ):
        return str(Scenario.ITP_LOCAL)  # D22: Cilium's internal scope keeps it local
    if vt.path in (PathKind.EXTERNAL_NODEPORT, PathKind.EXTERNAL_LB):
        return str(Scenario.EXTERNAL_INGRESS)
    if vt.path in _SERVICE_PATHS:
        return str(Scenario.LB_IN_CLUSTER)
    return OTHER_KIND


def _marked(v: Verdict, mark: str) -> bool:
    """Whether the verdict's path said `mark` (engine.service_d22): its notes, where the
    path's reasons go, without writing the whole explanation (issue 19: 110,000 Service
    connections at 20,000 pods)."""
    return any(mark in note for note in v.notes)


def tags(v: Verdict) -> list[str]:
    """The SEMANTICS.md rows ("D5d") the verdict's explanation cites, read from the parts
    it is written from (its notes, each side's template, the uncertain points) without
    writing it: a reason's fields (pod, node and policy names, ports) cite no row."""
    out: list[str] = []
    for text in v.notes:
        if "(D" in text:
            out += _text_tags(text)
    for side in (v.egress, v.ingress):
        if side is not None and "(D" in side.why:
            out += _text_tags(side.why)
    for text in v.uncertain:
        if "(D" in text:
            out += _text_tags(text)
    return out


@functools.lru_cache(maxsize=4096)
def _text_tags(text: str) -> tuple[str, ...]:
    """The rows a text cites (the same notes and templates come back on many verdicts)."""
    return tuple(_TAG.findall(text))
