"""The sentinel set of a watch: the few probes that show the migration window.

From the plan's probes (and their predictions for the current and the target dataplane),
or from a baseline record's, in this order until `max_sentinels` (default 500) are taken:
1. one probe predicted to change per (cause, namespace) pair: every reason for a change,
   in every namespace it touches, is watched;
2. one admit and one reject probe per rule class (the path kind and the rule's direction:
   `pod-pod ingress`, `pod-external egress`, ...): allowed traffic that could be cut and
   denied traffic that could get through, on every kind of path;
3. the other probes predicted to change.
What does not fit is counted (`left_out`) and said. Probes of `--probes` files are added
beyond the cap. Within a step, probes are taken by id: the same baseline always gives the
same set. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from netparity.plan.model import Plan
from netparity.record.model import Record

DEFAULT_MAX_SENTINELS = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """What the selection needs to know of one probe."""

    id: str
    kind: str  # the path kind, e.g. pod-pod
    intent: str  # admit | reject | scenario | explicit
    rule: str | None = None
    namespace: str | None = None  # of the destination, else the source
    current: str = "unknown"  # the predicted decision on the current dataplane
    target: str = "unknown"  # ... and on the target
    causes: tuple[tuple[str, str | None], ...] = ()  # (cause name, its policy's namespace)

    @property
    def changes(self) -> bool:
        return self.current != self.target

    @property
    def rule_class(self) -> str:
        direction = ""
        if self.rule is not None:
            for word in ("ingress", "egress"):
                if f" {word}" in self.rule:
                    direction = word
                    break
        return f"{self.kind} {direction}".strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class SentinelSet:
    ids: tuple[str, ...]  # sorted
    why: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    left_out: int = 0  # candidates the cap left out
    max_sentinels: int = DEFAULT_MAX_SENTINELS

    def summary(self) -> str:
        text = f"{len(self.ids)} sentinel probes"
        if self.left_out:
            text += f"; {self.left_out} more were left out by --max-sentinels {self.max_sentinels}"
        return text


def candidates_from_plan(plan: Plan) -> list[Candidate]:
    out: list[Candidate] = []
    for p in plan.probes:
        cur = p.predicted.get(plan.current)
        tgt = p.predicted.get(plan.target)
        dst, src = p.traffic.destination, p.traffic.source
        namespace = _namespace(dst) or _namespace(src)
        causes = tuple(
            (c.name, _policy_namespace(c.policy) or namespace) for c in (tgt.causes if tgt else ())
        )
        out.append(
            Candidate(
                id=p.id,
                kind=str(p.kind),
                intent=str(p.intent),
                rule=p.rule,
                namespace=namespace,
                current=str(cur.decision) if cur else "unknown",
                target=str(tgt.decision) if tgt else "unknown",
                causes=causes,
            )
        )
    return out


def candidates_from_record(record: Record) -> list[Candidate]:
    """From a baseline record: its observed probes."""
    current, target = record.plan.current, record.plan.target
    out: list[Candidate] = []
    for p in record.probes:
        cur, tgt = p.predicted.get(current), p.predicted.get(target)
        namespace = p.destination.namespace or p.source.namespace
        causes = tuple(
            (c.name, _policy_namespace(c.policy) or namespace) for c in (tgt.causes if tgt else ())
        )
        out.append(
            Candidate(
                id=p.id,
                kind=p.kind,
                intent=p.intent,
                rule=p.rule,
                namespace=namespace,
                current=cur.decision if cur else "unknown",
                target=tgt.decision if tgt else "unknown",
                causes=causes,
            )
        )
    return out


def _namespace(endpoint: object) -> str | None:
    pod = getattr(endpoint, "pod", None)
    if pod is not None:
        return str(pod.namespace)
    service = getattr(endpoint, "service", None)
    if service is not None:
        return str(service.namespace)
    return None


def _policy_namespace(policy: str | None) -> str | None:
    """ "NetworkPolicy ns/name" -> "ns"; None for a cluster-wide policy or none."""
    if policy is None:
        return None
    _, _, ref = policy.partition(" ")
    return ref.split("/", 1)[0] if "/" in ref else None


def select_sentinels(
    candidates: Sequence[Candidate],
    *,
    max_sentinels: int = DEFAULT_MAX_SENTINELS,
    extra: Iterable[str] = (),
) -> SentinelSet:
    """The sentinel set (module doc); `extra`: ids added beyond the cap (`--probes`)."""
    if max_sentinels < 1:
        raise ValueError(f"max_sentinels must be 1 or more, got {max_sentinels}")
    ordered = sorted(candidates, key=lambda c: c.id)
    chosen: dict[str, str] = {}

    def take(c: Candidate, why: str) -> None:
        if c.id not in chosen and len(chosen) < max_sentinels:
            chosen[c.id] = why

    pairs: dict[tuple[str, str], Candidate] = {}
    for c in ordered:
        if c.changes:
            for name, ns in c.causes or (("unexplained", c.namespace),):
                pairs.setdefault((name, ns or "-"), c)
    for (name, ns), c in sorted(pairs.items()):
        take(c, f"predicted to change ({name} in {ns})")
    classes: dict[tuple[str, str], Candidate] = {}
    for c in ordered:
        if c.intent in ("admit", "reject"):
            classes.setdefault((c.rule_class, c.intent), c)
    for (cls, intent), c in sorted(classes.items()):
        take(c, f"{intent} probe of rule class {cls}")
    for c in ordered:
        if c.changes:
            take(c, "predicted to change")
    wanted = {c.id for c in ordered if c.changes} | {c.id for c in classes.values()}
    wanted |= {c.id for c in pairs.values()}
    left_out = len(wanted - set(chosen))
    known = {c.id for c in ordered}
    for pid in sorted(set(extra)):
        if pid in known and pid not in chosen:
            chosen[pid] = "from --probes"
    return SentinelSet(
        ids=tuple(sorted(chosen)),
        why=MappingProxyType(dict(sorted(chosen.items()))),
        left_out=left_out,
        max_sentinels=max_sentinels,
    )
