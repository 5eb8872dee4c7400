"""One netparity run: plan, place, probe, record, judge, without pytest.

`Run(settings)` loads its inputs (`load_inputs`), reads the cluster through an open backend
and plans (`plan`: phase, plan, header, items, lint findings), probes the whole plan once
and judges every item (`probe_and_judge`: the backend places its probes), writes the record,
the baseline or the parity (`write`) and closes the backend (`close`). The pytest plugin
drives it on the controller and turns its `view` into items; errors that stop a run are
NetparityErrors (RunRefused where the run cannot go on as asked).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netparity.errors import NetparityError, RecordError
from netparity.run.phase import RunRefused, choose_phase, show_path
from netparity.run.settings import Settings
from netparity.run.view import RunView
from netparity.session import param_ids, probe_all
from netparity.verdicts import ItemVerdict, judge_post, judge_pre, probe_properties

if TYPE_CHECKING:
    from netparity.accept import Acceptance
    from netparity.backend import Backend, ClusterFacts, Progress
    from netparity.compare import Parity
    from netparity.plan.model import Plan
    from netparity.probefile import ProbeSpec
    from netparity.record import Record


@dataclass(slots=True, kw_only=True)
class Run:
    """One run's state on the controller; `view` is what the items see."""

    settings: Settings
    view: RunView = field(default_factory=RunView)
    backend: Backend | None = None
    cluster: str = ""
    facts: ClusterFacts | None = None
    phase: str = ""
    baseline_path: Path | None = None
    baseline: Record | None = None
    accepts: Mapping[str, Acceptance] = field(default_factory=dict)
    explicit: tuple[ProbeSpec, ...] = ()
    expects: dict[str, str] = field(default_factory=dict)
    plan: Plan | None = None
    findings: list[tuple[str, str, ItemVerdict]] = field(default_factory=list)
    lint: Any = None  # the LintReport, whose fixes the parity report shows
    record: Record | None = None
    parity: Parity | None = None
    written: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------- plan

    def load_inputs(self, *, junit: Path | None = None) -> None:
        """Where results go (checked before a lab is built or anything is placed or probed),
        the accept file and the explicit probe files."""
        from netparity.accept import load_accept
        from netparity.outdir import check_output_dir
        from netparity.probefile import load_probe_file

        settings = self.settings
        check_output_dir(settings.report_dir, "the report folder (--report-dir)")
        if junit is not None:
            check_output_dir(junit.resolve().parent, "the JUnit file's folder (--junitxml)")
        accepts = load_accept(settings.accept) if settings.accept else {}
        specs: list[ProbeSpec] = []
        for path in settings.probes:
            specs.extend(load_probe_file(path))
        self.accepts = accepts
        self.explicit = tuple(specs)

    def attach(self, backend: Backend, cluster: str) -> None:
        """The open backend of the cluster and the cluster's name in records."""
        self.backend, self.cluster = backend, cluster

    def make_plan(self) -> None:
        """Read the cluster, choose the phase, plan; fills the header and the item lists."""
        from netparity.engine.dataplane import target_for
        from netparity.outdir import check_output_dir
        from netparity.plan.planner import make_plan
        from netparity.probefile import resolve_probes
        from netparity.record import cluster_dirname, plan_version

        settings, backend = self.settings, self.backend
        assert backend is not None
        self.facts = facts = backend.facts()
        snapshot = backend.snapshot()
        check_output_dir(
            settings.report_dir / cluster_dirname(self.cluster), "the cluster's report folder"
        )
        version = f" {facts.version}" if facts.version else ""
        self.view.header.append(
            f"cluster: {self.cluster} (backend {facts.backend}, dataplane {facts.dataplane}"
            f"{version})"
        )
        chosen = choose_phase(settings, self.cluster, facts)
        self.phase, self.baseline_path, self.baseline = (
            chosen.name,
            chosen.baseline_path,
            chosen.baseline,
        )
        self.view.header.append(chosen.header)
        base = self.baseline if self.phase == "post" else None
        current = base.dataplane if base is not None else facts.dataplane
        if base is not None and base.plan.version != plan_version():
            raise RunRefused(
                f"the baseline {show_path(self.baseline_path)} was planned by plan version "
                f"{base.plan.version}, this netparity plans version {plan_version()}: "
                "its probes cannot be matched; record a new baseline before the upgrade"
            )
        resolved = resolve_probes(list(self.explicit), snapshot)
        # `--target cilium` means the release the cluster runs where it is known (#20)
        target = target_for(settings.target, facts.dataplane)
        if target != settings.target:
            self.view.header.append(
                f"target: {target}, the release the cluster runs (--target {settings.target} "
                "means the detected release)"
            )
        self.plan = make_plan(
            snapshot,
            current=current,
            target=target,
            explicit=resolved,
            external_ip=settings.external_ip,
            responder=settings.responder,
            service_cidr=settings.service_cidr,
        )
        explicit_ids = self._explicit_expectations(resolved, facts.dataplane)
        self.view.header.extend(self._plan_header())
        self._items(explicit_ids)
        self.findings = self._lint(snapshot)
        self.view.items["lint"] = _keyed([(key, title) for key, title, _ in self.findings])

    def _plan_header(self) -> list[str]:
        settings, facts, plan = self.settings, self.facts, self.plan
        assert facts is not None and plan is not None
        lines = []
        if facts.backend == "kubernetes":
            lines.append(
                f"outside probes: only to the responder {settings.kube.responder}, which answered"
                if settings.kube.responder
                else "outside probes: predicted only (no --responder: nothing netparity "
                "controls answers outside the cluster)"
            )
        where = {"pre": "to be written", "check": "kept"}.get(self.phase, "read")
        lines.append(f"baseline: {show_path(self.baseline_path)} ({where})")
        c = plan.coverage
        lines.append(
            f"plan: {len(plan.probes)} probes for {plan.current} -> {plan.target} "
            f"(digest {plan.digest[:12]}); coverage: {c.rules_with_admit}/{c.rules_total} rules "
            f"with an admit probe, {c.rules_with_reject}/{c.rules_total} with a deny probe, "
            f"scenarios probed {len(c.scenarios_probed)}/{len(c.scenarios_present)}"
            + (f" ({', '.join(c.scenarios_probed)})" if c.scenarios_probed else "")
        )
        post = self.phase == "post"
        if post and self.baseline is not None and self.baseline.plan.digest != plan.digest:
            lines.append(
                "plan: differs from the baseline's (the cluster's policies or workloads "
                "changed): probes only in one run are reported as new or missing"
            )
        if post and facts.dataplane != plan.target:
            known = any(facts.dataplane in p.predicted for p in plan.probes)
            after = facts.dataplane if known else plan.target
            lines.append(
                f"plan: the cluster reports dataplane {facts.dataplane}, the plan's target is "
                f"{plan.target} (--target): changes are judged against the predictions for "
                f"{after}"
            )
        specs = self.explicit
        extra = f", {len(specs)} explicit probes from {len(settings.probes)} files" if specs else ""
        accepted = (
            f", {len(self.accepts)} accepted changes from {settings.accept}"
            if settings.accept
            else ""
        )
        lines.append(
            f"probes: timeout {settings.probe_timeout:g}s, {settings.retries} "
            f"{'retry' if settings.retries == 1 else 'retries'} of each deny{extra}{accepted}; "
            f"reports in {show_path(settings.report_dir)}"
        )
        return lines

    def _items(self, explicit_ids: set[str]) -> None:
        plan = self.plan
        assert plan is not None
        connectivity = [(p.id, p.title) for p in plan.probes if p.id not in explicit_ids]
        explicit = [(p.id, p.title) for p in plan.probes if p.id in explicit_ids]
        if self.phase == "post" and self.baseline is not None:
            # A baseline probe this plan no longer has is missing: it gets an item, which fails.
            planned = {p.id for p in plan.probes}
            for rec in (*self.baseline.probes, *self.baseline.not_run):
                if rec.id not in planned:
                    group = explicit if rec.intent == "explicit" else connectivity
                    group.append((rec.id, rec.title))
        self.view.items["connectivity"] = _keyed(connectivity)
        self.view.items["explicit"] = _keyed(explicit)

    def _explicit_expectations(self, resolved: Sequence[Any], dataplane: str) -> set[str]:
        """The ids of the explicit probes; notes each one's expectation for this dataplane.

        The planner carries a probe file's `expect` on the planned probe (also where it
        merged the explicit probe with a planned one); a plan without it is matched by
        traffic."""
        assert self.plan is not None
        ids: set[str] = set()
        for p in self.plan.probes:
            if str(p.intent) == "explicit" or p.expect is not None:
                ids.add(p.id)
            if p.expect is not None:
                expected = p.expect.get(dataplane, p.expect.get("*"))
                if expected is not None:
                    self.expects[p.id] = str(expected)
        for r in resolved:
            pid = next((p.id for p in self.plan.probes if p.traffic == r.traffic), None)
            if pid is None or pid in self.expects:
                continue
            ids.add(pid)
            expected = r.spec.expected(dataplane)
            if expected is not None:
                self.expects[pid] = str(expected)
        return ids

    def _lint(self, snapshot: Any) -> list[tuple[str, str, ItemVerdict]]:
        from netparity.lint import lint_snapshot

        target = self.plan.target if self.plan is not None else self.settings.target
        self.lint = lint_snapshot(snapshot, target=target)
        return lint_items(self.lint, self.phase)

    # ------------------------------------------------------------------- probe and judge

    def probe_and_judge(self, progress: Progress | None = None) -> None:
        """Probe the whole plan once, build the record (and the parity), judge every item."""
        from netparity.record import build_record, not_run

        if self.view.verdicts is not None or self.view.failure is not None:
            return
        settings, plan, backend, facts = self.settings, self.plan, self.backend, self.facts
        assert plan is not None and backend is not None and facts is not None
        try:
            tries = probe_all(
                backend,
                plan.probes,
                timeout=settings.probe_timeout,
                retries=settings.retries,
                progress=progress,
                dataplane=facts.dataplane,
            )
        except NetparityError as e:
            self._fail(f"probing failed: {e}")
            return
        skipped = {pid: why for pid, results in tries.items() if (why := not_run(results))}
        self.record = build_record(
            facts=facts,
            cluster=self.cluster,
            plan=plan,
            results=tries,
            phase=self.phase,
            probe_timeout=settings.probe_timeout,
            retries=settings.retries,
            expects=self.expects,
            exclude=skipped,
        )
        try:
            verdicts = self._judge()
        except RecordError as e:
            self._fail(str(e))
            return
        for key, _, verdict in self.findings:
            verdicts[key] = verdict
        self.view.verdicts = verdicts

    def _fail(self, why: str) -> None:
        self.view.failure = why
        self.view.verdicts = {}

    def _judge(self) -> dict[str, ItemVerdict]:
        from netparity.compare import compare

        record, plan, facts = self.record, self.plan, self.facts
        assert record is not None and plan is not None and facts is not None
        verdicts: dict[str, ItemVerdict] = {}
        if self.phase == "post":
            assert self.baseline is not None
            self.parity = parity = compare(self.baseline, record, accepts=self.accepts)
            for pp in parity.probes:
                verdicts[pp.id] = judge_post(pp, after=parity.after)
            return verdicts
        for rec in record.probes:
            verdicts[rec.id] = judge_pre(rec, plan.current, phase=self.phase, target=plan.target)
        for rec in record.not_run:
            verdicts[rec.id] = ItemVerdict(
                outcome="skipped",
                message=f"not run on the {facts.backend} backend: {rec.not_run}",
                properties=probe_properties(rec, phase=self.phase, status="not-run"),
            )
        return verdicts

    # ------------------------------------------------------------------- record

    def write(self) -> None:
        """The record, and the baseline (pre) or the parity (post); says each in `written`."""
        from netparity.compare_output import parity_json
        from netparity.record import (
            cluster_dirname,
            record_json,
            record_path,
            write_json_atomic,
            write_record,
        )

        settings, record = self.settings, self.record
        assert record is not None
        path = record_path(settings.report_dir, self.cluster, self.phase, record.time)
        write_record(record, path)
        self.written.append(f"record: {show_path(path)}")
        if self.phase == "pre":
            assert self.baseline_path is not None
            write_json_atomic(self.baseline_path, record_json(record), overwrite=settings.force)
            self.written.append(f"baseline: {show_path(self.baseline_path)} (written)")
        elif self.phase == "post":
            assert self.parity is not None
            out = settings.report_dir / cluster_dirname(self.cluster) / "parity.json"
            parity = parity_json(
                self.parity, baseline_path=str(self.baseline_path), current_path=str(path)
            )
            write_json_atomic(out, parity)
            self.written.append(f"parity: {show_path(out)}")
        else:
            self.written.append(f"baseline: {show_path(self.baseline_path)} (kept)")

    def close(self) -> None:
        backend, self.backend = self.backend, None
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.close()


def _keyed(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(zip([k for k, _ in pairs], param_ids(pairs), strict=True))


def lint_items(report: Any, phase: str) -> list[tuple[str, str, ItemVerdict]]:
    """One item per lint finding: a known migration risk, reported as an expected failure."""
    out: list[tuple[str, str, ItemVerdict]] = []
    for f in report.findings:
        lines = [f"migration risk ({f.kind}, {f.severity}): {f.message}"]
        for t in f.traffic:
            lines.append(f"  {t.describe()}")
        if f.fix is not None:
            lines.append(
                f"  fix ({f.fix.when}): {f.fix.summary}: {', '.join(f.fix.object_names())}"
            )
        elif f.no_fix_reason:
            lines.append(f"  no NetworkPolicy fix: {f.no_fix_reason}")
        props = (
            ("netparity.lint_id", f.id),
            ("netparity.phase", phase),
            ("netparity.scenario", str(f.kind)),
            ("netparity.severity", f.severity),
            ("netparity.object", f.object),
        )
        message = "\n".join(lines)
        out.append(
            (
                f"lint:{f.id}",
                f"{f.kind} {f.object}",
                ItemVerdict(outcome="xfailed", message=message, properties=props),
            )
        )
    return out
