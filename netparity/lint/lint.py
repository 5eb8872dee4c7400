"""The pre-migration lint: findings derived from the engine, never from a second rule set.

For every class of pods a NetworkPolicy isolates, and for every NodePort/LoadBalancer
Service, the lint evaluates the connections they govern (see probes.py) under `npm` and
under the target dataplane. Where the governed side's decision differs, the rules that
decided under NPM (or, when nothing did, the policies that isolate under the target) get a
finding whose kind is the SEMANTICS.md row the engine's explanation cites.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from netparity.engine.compile import EGRESS, INGRESS, NPTarget
from netparity.engine.dataplane import (
    CURRENT,
    NEWEST_TARGET,
    TARGETS,
    Dataplane,
    get_dataplane,
)
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import (
    Decision,
    DirectionResult,
    RuleRef,
    Traffic,
    Verdict,
)
from netparity.errors import InputError
from netparity.lint import parallel
from netparity.lint.classify import Classifier
from netparity.lint.findings import (
    OTHER_KIND,
    SHOWN_OTHERS,
    Brief,
    Change,
    Finding,
    LintReport,
    Probe,
)
from netparity.lint.gather import Added, Gatherer, Seen, Why
from netparity.lint.judged import not_judged
from netparity.lint.kinds import notes
from netparity.lint.pair import Needless, same_enumeration
from netparity.lint.pair import same as _same
from netparity.lint.probes import ProbeBuilder
from netparity.lint.tally import NP as _NP
from netparity.lint.tally import Compared as _Compared
from netparity.lint.tally import nps as _nps
from netparity.lint.tally import ns_name as _ns_name
from netparity.lint.tally import service_kind as _service_kind
from netparity.lint.tally import side as _side
from netparity.model.objects import Service
from netparity.model.snapshot import Snapshot
from netparity.plan.class_index import ClassIndex

Progress = Callable[[str, int, int], None]  # (what, done, total), as netparity.backend's


def lint_snapshot(
    snapshot: Snapshot,
    *,
    target: str = NEWEST_TARGET,
    fixes: bool = True,
    progress: Progress | None = None,
    jobs: int | None = None,
) -> LintReport:
    """Lint every NetworkPolicy and NodePort/LoadBalancer Service for the move NPM -> `target`.

    `progress(what, done, total)` hears of the pod classes built, then walked, the Services
    walked and the findings whose fix was checked (`netparity lint --progress`). `jobs`:
    the processes the walk over classes and Services may use (netparity.lint.parallel;
    None: two on a cluster of 2,000 pods or more where two cores are there, else one)."""
    return lint_pair(snapshot, target=target, fixes=fixes, progress=progress, jobs=jobs)[0]


def lint_pair(
    snapshot: Snapshot,
    *,
    target: str = NEWEST_TARGET,
    also: str | None = None,
    fixes: bool = True,
    progress: Progress | None = None,
    jobs: int | None = None,
) -> tuple[LintReport, tuple[Finding, ...]]:
    """`lint_snapshot` for `target`, and the findings (without fixes) a lint for `also`
    would report (without the connections a fix is checked against), from the same work:
    the connections are enumerated once when the two targets differ only in what the
    enumerator never reads (an older release's endPort), and each is evaluated once under
    npm. Empty when `also` is None."""
    report, more = _lint(snapshot, target, also, fixes, progress, jobs, brief=False, shown=None)
    return report, cast(tuple[Finding, ...], more)


def lint_brief(
    snapshot: Snapshot,
    *,
    target: str = NEWEST_TARGET,
    also: str | None = None,
    progress: Progress | None = None,
    jobs: int | None = None,
    shown: int | None = None,
) -> tuple[LintReport, tuple[Brief, ...]]:
    """`lint_pair`, each finding for `also` told only by what it is (`Brief`: id, kind,
    severity; the CLI's note on the older release): their connections are neither
    gathered nor sent between the walk's processes (at 50,000 pods on 20 nodes, 340,000
    of them). `shown`: the reasons (npm's, the target's) of only each finding's first
    `shown` connections are written, the others' left empty (the text and JUnit reports
    show no more: at 50,000 pods on 20 nodes, 680,000 texts of 500 characters not written
    nor sent between the processes), and each connection names as many of the other
    classes it stands for as a text shows (`SHOWN_OTHERS`; the JSON lists up to 20); None:
    all of them."""
    report, more = _lint(snapshot, target, also, True, progress, jobs, brief=True, shown=shown)
    return report, cast(tuple[Brief, ...], more)


def _lint(
    snapshot: Snapshot,
    target: str,
    also: str | None,
    fixes: bool,
    progress: Progress | None,
    jobs: int | None,
    *,
    brief: bool,
    shown: int | None,
) -> tuple[LintReport, tuple[Finding, ...] | tuple[Brief, ...]]:
    """The lint for `target` (the reasons of each finding's first `shown` connections
    written), and the findings for `also` (briefs where `brief`)."""
    report: Progress = progress if progress is not None else _quiet
    for name in (target, also):
        if name is not None and name not in TARGETS:
            raise InputError(
                f"unknown lint target {name!r} (expected one of {', '.join(TARGETS)})",
                field="target",
            )
    npm = get_dataplane(CURRENT).with_config(snapshot.config)
    tgt = get_dataplane(target).with_config(snapshot.config)
    old = None if also is None else get_dataplane(also).with_config(snapshot.config)
    engine = Engine(snapshot)
    classes = ClassIndex(engine, (npm, tgt))
    report("classes built", len(classes.classes), len(classes.classes))
    builder = ProbeBuilder(snapshot, engine, classes, npm, tgt)
    if shown is not None:  # a text report names no more of a connection's other classes
        builder.stands_for_cap = SHOWN_OTHERS
    linter = Linter(engine, npm, tgt, texts=shown is None)
    shared = old is not None and same_enumeration(tgt, old)
    second = Linter(engine, npm, old, expectations=False, brief=brief) if shared and old else None
    needless = Needless(snapshot, tgt, old) if second is not None and old else None
    workers = parallel.default_jobs(snapshot) if jobs is None else jobs
    walk = _Walk(snapshot, classes, builder, linter, second, needless)

    def cilium() -> tuple[list[Finding], list[Finding]]:
        """The Cilium policies' findings: the target's (fixes checked), and the older
        release's where it shares the walk (`second`)."""
        verdicts: dict[tuple[str, str], Verdict] = {}  # npm's, shared by the two targets
        mine = _cilium_findings(snapshot, engine, npm, tgt, fixes, verdicts)
        if old is None or second is None:
            return mine, []
        # npm's verdicts, and the target's where the older release decides alike
        like = (tgt.name, needless.decides_alike) if needless is not None else None
        return mine, _cilium_findings(snapshot, engine, npm, old, False, verdicts, like)

    # needing nothing of the walk, made beside it where there are cores for it
    beside = parallel.Beside(snapshot, cilium, workers)
    try:
        services = walk.run(report, workers)
        # taken first: a helper still there keeps each page this process writes shared,
        # and so copied (the findings made would take half again as long)
        ours, theirs = beside.result()
    finally:
        beside.close()
    findings = linter.findings(target, shown)
    if fixes:
        from netparity.lint.fixes import FixBuilder

        fixer = FixBuilder(builder)
        findings = fixer.attach(findings, report)
        fixer.builders.clear()  # partials of the fixer: a cycle a paused collector keeps
    extra = () if also is None else _also(snapshot, also, second, theirs, jobs, brief)
    findings.extend(ours)
    findings = sorted(findings, key=lambda f: (f.namespace, *f.sort_key()))
    return LintReport(
        target=target,
        findings=tuple(findings),
        sources=snapshot.sources,
        summary=snapshot.summary(),
        policies=len(snapshot.network_policies),
        services=services,
        connections=linter.connections,
        notes=tuple(notes(snapshot, classes, linter, target)),
        not_judged=not_judged(snapshot, linter.unknown_reasons),
    ), extra


def _also(
    snapshot: Snapshot,
    also: str,
    second: Linter | None,
    cilium: list[Finding],
    jobs: int | None,
    brief: bool,
) -> tuple[Finding, ...] | tuple[Brief, ...]:
    """The findings for `also` (briefs where `brief`): the walk's (`second`) and the Cilium
    policies' (`cilium`), or where the targets enumerate differently, a lint of its own."""
    if second is None:
        alone = lint_snapshot(snapshot, target=also, fixes=False, jobs=jobs).findings
        return tuple(f.brief() for f in alone) if brief else alone
    if brief:
        briefs = [*second.briefs(), *(f.brief() for f in cilium)]
        return tuple(sorted(briefs, key=Brief.order))
    more = [*second.findings(also), *cilium]
    return tuple(sorted(more, key=lambda f: (f.namespace, *f.sort_key())))


class _Walk:
    """The lint's units of work: each pod class (both directions), then each Service."""

    def __init__(
        self,
        snapshot: Snapshot,
        classes: ClassIndex,
        builder: ProbeBuilder,
        linter: Linter,
        second: Linter | None,
        needless: Needless | None,
    ) -> None:
        self.snapshot = snapshot
        self.classes = classes.classes
        self.builder = builder
        self.linter = linter
        self.second = second
        self.needless = needless
        self.units = len(self.classes) + len(snapshot.services)

    def run(self, report: Progress, jobs: int) -> int:
        """Every governed connection observed by `linter` (and `second`, sharing npm's
        verdict, and left out where `needless` says it agrees as `linter` did: its count
        of connections is not reported), on `jobs` processes (netparity.lint.parallel);
        the number of Services that govern some."""
        observers = (self.linter,) if self.second is None else (self.linter, self.second)
        return parallel.walk(
            self.snapshot, self.units, self.unit, observers, self.ticker(report), jobs
        )

    def unit(self, i: int) -> int:
        """Unit i observed; 1 for a Service that governs some connection, else 0."""
        builder, linter, second, needless = self.builder, self.linter, self.second, self.needless
        if i < len(self.classes):
            cls = self.classes[i]
            for direction in (INGRESS, EGRESS):
                governing = builder.governing(cls, direction)
                if governing:
                    for probe in builder.subject_probes(cls, direction, governing):
                        vn = linter.observe(probe)
                        if second is not None and not (needless and needless(probe, linter.agreed)):
                            second.follow(linter, probe, None, vn, _same(needless, probe, linter))
            return 0
        svc = self.snapshot.services[i - len(self.classes)]
        probes = builder.service_probes(svc)
        # the target's verdicts the enumerator made (on the same dataplane)
        judged = builder.judged if builder.target is linter.target else {}
        for probe in probes:
            known = judged.get(id(probe))
            vn = linter.observe(probe, svc, vt=None if known is None else known[1])
            if second is not None and not (needless and needless(probe, linter.agreed)):
                second.follow(linter, probe, svc, vn, _same(needless, probe, linter))
        return int(bool(probes))

    def ticker(self, report: Progress) -> Callable[[int], None]:
        """`report` told of the classes, then the Services, observed (`done` units)."""
        classes, services = len(self.classes), len(self.snapshot.services)
        told = [0]

        def tick(done: int) -> None:
            if told[0] < classes:
                report("classes", min(done, classes), classes)
            if done > classes:
                report("services", done - classes, services)
            told[0] = done

        return tick


def _quiet(what: str, done: int, total: int) -> None:
    pass


def _cilium_findings(
    snapshot: Snapshot,
    engine: Engine,
    npm: Dataplane,
    tgt: Dataplane,
    fixes: bool,
    verdicts: dict[tuple[str, str], Verdict],
    like: tuple[str, Callable[[Traffic, Verdict], bool]] | None = None,
) -> list[Finding]:
    """The Cilium policies that cut what NPM allowed (netparity.lint.cilium_findings)."""
    from netparity.lint.cilium_findings import cilium_findings

    return cilium_findings(snapshot, engine, npm, tgt, fixes=fixes, verdicts=verdicts, like=like)


class Linter(Gatherer, Classifier):
    def __init__(
        self,
        engine: Engine,
        npm: Dataplane,
        target: Dataplane,
        *,
        expectations: bool = True,
        brief: bool = False,
        texts: bool = True,
    ) -> None:
        """`expectations`: keep each finding's connections (what its fix is checked
        against); a lint whose findings get no fix leaves them out (memory). `brief`:
        keep only what each finding is (`briefs`), not its connections. `texts`: write
        the reasons of every connection as it is seen, else of those shown (`findings`)."""
        super().__init__(expectations=expectations, brief=brief, texts=texts)
        self.engine = engine
        self.npm = npm
        self.target = target
        self.names = (npm.name, target.name)
        self.targets: dict[str, NPTarget] = {t.name: t for t in engine.np_targets}
        self.connections = 0
        self.agreed: Verdict | None = None  # the target's verdict where the last agreed
        self.last: Verdict | None = None  # the target's verdict on the last connection

    # ---------------------------------------------------------------- observing

    def _compare(
        self, probe: Probe, whole: bool, vn: Verdict | None = None, vt: Verdict | None = None
    ) -> _Compared:
        """The connection under npm and under the target (`vn`, `vt` where known), and the
        probe's side of each (None where `whole`, or where the verdict has no such side)."""
        if vn is None:
            vn = self.engine.evaluate(probe.traffic, self.npm)
        if vt is None:
            vt = self.engine.evaluate(probe.traffic, self.target)
        self.last = vt
        if whole:
            return _Compared(vn=vn, vt=vt, sn=None, st=None)
        return _Compared(vn=vn, vt=vt, sn=_side(vn, probe.side), st=_side(vt, probe.side))

    def kind_of(self, probe: Probe) -> str | None:
        """The kind of change a connection shows, None where both dataplanes agree (or
        either does not know)."""
        c = self._compare(probe, whole=probe.side is None)
        dn, dt = c.decisions
        if dn is dt or Decision.UNKNOWN in (dn, dt):
            return None
        if c.sn is None or c.st is None:
            return _service_kind(c.vt, c.vn)
        change = Change.OUTAGE if dn is Decision.ALLOW else Change.HOLE
        policies, refs = self._attribute(change, c.sn, c.st)
        if not policies:
            return OTHER_KIND
        return str(self._classify(change, probe, c.vt, c.sn, c.st, policies, refs))

    def follow(
        self, other: Linter, probe: Probe, svc: Service | None, vn: Verdict, same: bool
    ) -> None:
        """Observe the connection `other` (the same engine and npm) just observed: where
        this target's verdict is `other`'s (`same`: pair.py `Needless.same_verdict`), what
        observing it adds is what it added to `other` (`effect`), without the work again."""
        if not same:
            self.observe(probe, svc, vn=vn)
            return
        self.connections += 1
        if other.effect is not None:
            self._emit(other.effect)

    def observe(
        self,
        probe: Probe,
        svc: Service | None = None,
        *,
        vn: Verdict | None = None,
        vt: Verdict | None = None,
    ) -> Verdict:
        """One connection under npm and under the target (`vn`, `vt` where known); returns
        npm's verdict. Through a Service (`svc`), the whole verdicts are compared and the
        finding names the Service; else the side the probe was made for, and the policies."""
        c = self._compare(probe, whole=svc is not None, vn=vn, vt=vt)
        vn, vt = c.vn, c.vt
        self.connections += 1
        self.agreed = None
        self.effect = None
        if svc is None and (c.sn is None or c.st is None):
            if vn.decision is not vt.decision:
                self._unknown(str(probe.traffic), vn, vt, self.names)
            else:
                self.agreed = vt
            return vn
        dn, dt = c.decisions
        if dn is dt and dn is not Decision.UNKNOWN:
            self.agreed = vt
            return vn
        if Decision.UNKNOWN in (dn, dt):
            self._unknown(str(probe.traffic), vn, vt, self.names)
            return vn
        change = Change.OUTAGE if dn is Decision.ALLOW else Change.HOLE
        if c.sn is not None and c.st is not None:
            self._policy_change(probe, change, vn, vt, c.sn, c.st)
        elif svc is not None:
            self._service_change(probe, svc, change, vn, vt)
        return vn

    def _policy_change(
        self,
        probe: Probe,
        change: Change,
        vn: Verdict,
        vt: Verdict,
        sn: DirectionResult,
        st: DirectionResult,
    ) -> None:
        policies, refs = self._attribute(change, sn, st)
        if not policies:
            self._emit(("unattributed", (str(probe.traffic),)))
            return
        kind = self._classify(change, probe, vt, sn, st, policies, refs)
        ns = _ns_name(policies[0])[0]
        obj = (
            policies[0]
            if len(policies) == 1
            else "NetworkPolicies " + ", ".join(p.split(" ", 1)[1] for p in policies)
        )
        seen = Seen.of(probe, change, probe.side or "", vn, vt, (sn, st), sn.decision, self.texts)
        self._add(Added(kind, ns, obj, tuple(policies), policies, refs, None, seen))

    def _service_change(
        self, probe: Probe, svc: Service, change: Change, vn: Verdict, vt: Verdict
    ) -> None:
        dn, dt = vn.decision, vt.decision
        kind = _service_kind(vt, vn)
        policies: list[str] = []
        refs: list[RuleRef] = []
        direction = INGRESS
        for side in (vn.egress, vn.ingress):
            if side is not None and side.decision is not dt:
                refs.extend(r for r in side.rules if r.policy.startswith(_NP))
        for side in (vt.egress, vt.ingress):
            if side is not None and side.decision is not dn:
                policies.extend(_nps(side.selected_by))
                direction = side.direction
        policies.extend(r.policy for r in refs)
        obj = f"Service {svc.key}"
        seen = Seen.of(probe, change, direction, vn, vt, None, dn, self.texts)
        self._add(
            Added(str(kind), svc.namespace, obj, (obj,), sorted(set(policies)), refs, svc, seen)
        )

    # ---------------------------------------------------------------- findings

    def findings(self, target: str, shown: int | None = None) -> list[Finding]:
        """The findings gathered, with the reasons of each one's first `shown` connections
        (None: all of them) where they were not written as seen (`texts`); the others'
        are empty."""
        from netparity.lint.assemble import findings

        assert not self.brief, "a brief lint keeps no connections: see briefs()"
        return findings(self.acc, target, shown, self.explain)

    def explain(self, probe: Probe) -> tuple[str, str]:
        """The reasons a finding shows for a connection it holds, npm's and the target's,
        written from their verdicts again (the engine's verdicts are its inputs' alone):
        the probe's side of each, or through a Service (no side), the whole verdicts."""
        vn = self.engine.evaluate(probe.traffic, self.npm)
        vt = self.engine.evaluate(probe.traffic, self.target)
        sn, st = _side(vn, probe.side), _side(vt, probe.side)
        if sn is None or st is None:
            return Why(vn, vt, None).texts()
        return Why(vn, vt, (sn, st)).texts()

    def briefs(self) -> list[Brief]:
        """What each finding is, in the order `findings` makes them."""
        from netparity.lint.assemble import briefs

        return briefs(self.acc)
