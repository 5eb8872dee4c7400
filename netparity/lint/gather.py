"""What observing one connection adds to a lint's findings (an effect), and adding it.

The Linter (netparity.lint.lint) decides what a connection adds; `Gatherer` adds it, or
logs it where the walk runs on two processes (netparity.lint.parallel): a logged effect
is added later, in the walk's order, and may cross a pipe, so it holds no verdicts but
what the finding keeps of them (`Seen`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from netparity.engine.compile import EGRESS
from netparity.engine.traffic import Decision, DirectionResult, PathKind, RuleRef, Verdict
from netparity.lint.findings import Change, Expectation, Probe
from netparity.lint.tally import Acc, Entry, tags
from netparity.model.objects import Service

# ("add" | "brief" | "unknown" | "unattributed", its arguments)
Effect = tuple[str, tuple[Any, ...]]


class Why:
    """The reasons a finding shows for a connection, written when first needed: the
    sides' (npm's, the target's), else the whole verdicts' explanations."""

    __slots__ = ("sides", "vn", "vt")

    def __init__(
        self, vn: Verdict, vt: Verdict, sides: tuple[DirectionResult, DirectionResult] | None
    ) -> None:
        self.vn, self.vt, self.sides = vn, vt, sides

    def texts(self) -> tuple[str, str]:
        if self.sides is None:
            return self.vn.explanation, self.vt.explanation
        return self.sides[0].reason, self.sides[1].reason


@dataclass(frozen=True, slots=True)
class Seen:
    """One changed connection, as its finding keeps it."""

    probe: Probe
    change: Change
    direction: str
    path: PathKind  # the target's
    why: Why | tuple[str, str] | None  # None: written later, where shown (`Gatherer.texts`)
    uncertain: tuple[str, ...]  # npm's, then the target's
    rows: tuple[str, ...]  # the SEMANTICS.md rows npm's and the target's verdicts cite
    expected: Decision

    @classmethod
    def of(
        cls,
        probe: Probe,
        change: Change,
        direction: str,
        vn: Verdict,
        vt: Verdict,
        sides: tuple[DirectionResult, DirectionResult] | None,
        expected: Decision,
        texts: bool = True,
    ) -> Seen:
        return cls(
            probe=probe,
            change=change,
            direction=direction,
            path=vt.path,
            why=Why(vn, vt, sides) if texts else None,
            uncertain=(*vn.uncertain, *vt.uncertain),
            rows=(*tags(vn), *tags(vt)),
            expected=expected,
        )

    def written(self) -> Seen:
        """The same, its reasons written (no verdicts held: what a pipe carries)."""
        if isinstance(self.why, Why):
            return Seen(
                probe=self.probe,
                change=self.change,
                direction=self.direction,
                path=self.path,
                why=self.why.texts(),
                uncertain=self.uncertain,
                rows=self.rows,
                expected=self.expected,
            )
        return self


class Added(NamedTuple):
    """A changed connection, into the finding of (kind, namespace, key)."""

    kind: str
    ns: str
    obj: str  # the finding's object ("NetworkPolicy ns/name", "Service ns/name")
    key: tuple[str, ...]
    policies: list[str]
    refs: list[RuleRef]
    svc: Service | None
    seen: Seen


def written(effect: Effect) -> Effect:
    """An effect with its reasons written (`Seen.written`)."""
    what, args = effect
    if what != "add":
        return effect
    added = cast(Added, args)
    return what, added._replace(seen=added.seen.written())


class Gatherer:
    """A lint's findings as they are gathered, one effect at a time."""

    def __init__(self, *, expectations: bool, brief: bool = False, texts: bool = True) -> None:
        """`brief`: keep what each finding is, not its connections (`briefs`). `texts`:
        write each connection's reasons as it is seen; else only those of the connections
        a report shows, when it is made (`assemble.findings`)."""
        self.keep_expectations = expectations
        self.brief = brief
        self.texts = texts
        self.acc: dict[tuple[str, str, tuple[str, ...]], Acc] = {}
        self.effect: Effect | None = None  # what the last connection added (`follow`)
        self.log: list[Effect] | None = None  # effects logged, not added (`_emit`)
        self.unknown: list[str] = []
        self.unknown_reasons: list[tuple[str, str]] = []  # (connection, why), "not judged"
        self.unattributed: list[str] = []

    def _emit(self, effect: Effect) -> None:
        """What observing a connection adds: kept in `effect`, and added to the findings,
        or logged where `log` is a list (added later, in the walk's order, by `apply`). A
        brief lint keeps of a changed connection its finding and its change."""
        if self.brief and effect[0] == "add":
            a = cast(Added, effect[1])
            effect = ("brief", (a.kind, a.ns, a.key, a.obj, a.svc, a.seen.change))
        self.effect = effect
        if self.log is None:
            self.apply(effect)
        else:
            self.log.append(effect)

    def apply(self, effect: Effect) -> None:
        what, args = effect
        if what == "add":
            self._apply_add(cast(Added, args))
        elif what == "brief":
            self._apply_brief(*args)
        elif what == "unknown":
            self.unknown.append(args[0])
            self.unknown_reasons.append(args)
        else:
            self.unattributed.append(*args)

    def _unknown(self, traffic: str, vn: Verdict, vt: Verdict, names: tuple[str, str]) -> None:
        """A connection whose verdict one dataplane (named in `names`) does not know."""
        why = "; ".join(
            f"{name}: {v.explanation}"
            for name, v in zip(names, (vn, vt), strict=True)
            if v.decision is Decision.UNKNOWN
        )
        self._emit(("unknown", (traffic, why or vn.explanation)))

    def _add(self, added: Added) -> None:
        self._emit(("add", added))

    def _apply_add(self, a: Added) -> None:
        """A changed connection into its finding."""
        k = (a.kind, a.ns, a.key)
        acc = self.acc.get(k)
        if acc is None:
            acc = self.acc[k] = Acc(kind=a.kind, namespace=a.ns, object=a.obj)
        if a.svc is not None:
            acc.service = a.svc
        acc.policies.update(dict.fromkeys(a.policies))
        acc.refs.update(dict.fromkeys(a.refs))
        self._record(acc, a.seen)

    def _apply_brief(
        self,
        kind: str,
        ns: str,
        key: tuple[str, ...],
        obj: str,
        svc: Service | None,
        change: Change,
    ) -> None:
        acc = self.acc.get((kind, ns, key))
        if acc is None:
            acc = self.acc[kind, ns, key] = Acc(kind=kind, namespace=ns, object=obj)
        if svc is not None:
            acc.service = svc
        acc.changes[change] = None

    def _record(self, acc: Acc, seen: Seen) -> None:
        """One connection of a finding (its reasons written once per row)."""
        probe = seen.probe
        key = (seen.change, seen.direction, seen.path, probe.pods, probe.peer)
        entry = acc.entries.get(key)
        if entry is None:
            from_pods = probe.from_pods
            why = seen.why
            npm, target = (
                ("", "") if why is None else why if isinstance(why, tuple) else why.texts()
            )
            entry = acc.entries[key] = Entry(
                from_pods=(probe.side == EGRESS) if from_pods is None else from_pods,
                npm=npm,
                target=target,
                others=probe.stands_for,
                others_pods=probe.stands_for_pods,
                others_classes=probe.stands_for_classes,
                unwritten=probe if why is None else None,
            )
        entry.ports[(probe.port, probe.port_label)] = None
        entry.uncertain.update(dict.fromkeys(seen.uncertain))
        acc.uncertain.update(dict.fromkeys(seen.uncertain))
        acc.rows.update(dict.fromkeys(seen.rows))
        if self.keep_expectations:
            acc.expectations.append(Expectation(probe=probe, expected=seen.expected))
