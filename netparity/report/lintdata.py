"""The lint's findings as a report shows them, and which finding explains which probe.

A pytest run hands the `LintReport` it made to the report writer; it is also written as
`lint.json` beside the records, so that `netparity report` can show the same fixes later
without the cluster. A changed probe is matched to the findings of the policies (or the
Service) it goes through, of its scenario and path kind; the first match names the
probe's change category and offers its remediation YAML.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from netparity.engine.causes import Cause
from netparity.errors import RecordError
from netparity.plan.base import SYNTHETIC_PREFIX
from netparity.record import load_json, write_json_atomic
from netparity.report.model import Row

LINT_KIND = "netparity.lint"
LINT_SCHEMA_VERSION = 1
LINT_FILE = "lint.json"

# The change sections, in the order the report shows them: the guide's five scenarios
# (ipBlock split into pods and nodes, as the lint names them), the other rows of
# SEMANTICS.md, changes the engine predicted without naming a scenario, and changes
# nobody predicted.
GUIDE = (
    "endport",
    "ipblock-pods",
    "ipblock-nodes",
    "named-port",
    "node-egress",
    "external-ingress",
)
OTHER_SCENARIOS = (
    "lb-in-cluster",
    "identity-labels",
    "sctp",
    "untranslatable",
    "policy-types",
    "ns-selector-or",
    "lb-source-ranges",
    "itp-local",
)
# Causes the lint has no scenario for, by their SEMANTICS row (anything else: "other")
ROW_CATEGORIES = {"D14": "cilium-policies"}
PREDICTED_OTHER = "other"
UNEXPLAINED = "unexplained"
CATEGORIES = (
    *GUIDE,
    *OTHER_SCENARIOS,
    *ROW_CATEGORIES.values(),
    PREDICTED_OTHER,
    UNEXPLAINED,
)

# Why the lint has no finding for a cause it has no scenario for, by SEMANTICS row.
NO_SCENARIO_WHY = {
    "D14": "the lint judges NetworkPolicies and Services; a Cilium policy already in the "
    "cluster, which NPM ignores, decides this (the lint's notes count these connections)",
    "D4c": "the lint has no scenario for ingress from the pod's own node (a cilium-config "
    "host policy)",
}

_PORT = re.compile(r"^(\d+)")


@dataclass(frozen=True, slots=True, kw_only=True)
class FixView:
    summary: str
    action: str  # apply | delete
    when: str  # before-migration | after-migration
    explanation: str
    supersedes: tuple[str, ...]
    objects: tuple[str, ...]  # "NetworkPolicy ns/name"
    yaml: str  # ready for `kubectl apply -f -`


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingView:
    id: str
    kind: str
    severity: str  # outage | hole
    namespace: str
    object: str
    policies: tuple[str, ...]  # "ns/name"
    rules: tuple[str, ...]
    service: str | None
    message: str
    changes: tuple[str, ...]  # the changed connections, described
    paths: tuple[str, ...]  # path kinds of those connections
    ports: tuple[str, ...]  # "8080/TCP"
    fix: FixView | None
    no_fix_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LintView:
    target: str
    findings: tuple[FindingView, ...]
    notes: tuple[str, ...] = ()
    summary: str = ""

    def by_id(self) -> Mapping[str, FindingView]:
        return {f.id: f for f in self.findings}


def _policy_name(text: str) -> str:
    return text.split(" ", 1)[1] if text.startswith("NetworkPolicy ") else text


def fix_yaml(objects: Sequence[Mapping[str, Any]], action: str, when: str) -> str:
    verb = "kubectl delete -f -" if action == "delete" else "kubectl apply -f -"
    head = f"# {verb}   ({when.replace('-', ' ')})\n"
    body = yaml.safe_dump_all(
        [dict(o) for o in objects], sort_keys=False, default_flow_style=False, width=100
    )
    return head + body


def lint_view(report: Any) -> LintView:
    """A `netparity.lint.LintReport` as the report shows it."""
    findings = []
    for f in report.findings:
        fix = None
        if f.fix is not None:
            fix = FixView(
                summary=str(f.fix.summary),
                action=str(f.fix.action),
                when=str(f.fix.when),
                explanation=str(f.fix.explanation or ""),
                supersedes=tuple(str(s) for s in f.fix.supersedes),
                objects=tuple(f.fix.object_names()),
                yaml=fix_yaml(f.fix.objects, str(f.fix.action), str(f.fix.when)),
            )
        ports: dict[str, None] = {}
        for t in f.traffic:
            for p in t.ports:
                ports.setdefault(str(p).split(" ", 1)[0], None)
        findings.append(
            FindingView(
                id=str(f.id),
                kind=str(f.kind),
                severity=str(f.severity),
                namespace=str(f.namespace),
                object=str(f.object),
                policies=tuple(_policy_name(str(p)) for p in f.policies),
                rules=tuple(str(r) for r in f.rules),
                service=f.service,
                message=str(f.message),
                changes=tuple(t.describe() for t in f.traffic),
                paths=tuple(dict.fromkeys(str(t.path) for t in f.traffic)),
                ports=tuple(ports),
                fix=fix,
                no_fix_reason=f.no_fix_reason,
            )
        )
    return LintView(
        target=str(report.target),
        findings=tuple(findings),
        # the lint's "not judged" section, one note a line (as `netparity lint` prints it)
        notes=(
            *(str(n) for n in report.notes),
            *(f"not judged: {line}" for line in _not_judged(report)),
        ),
        summary=str(report.summary),
    )


def lint_json(view: LintView) -> dict[str, Any]:
    return {
        "kind": LINT_KIND,
        "schema_version": LINT_SCHEMA_VERSION,
        "target": view.target,
        "summary": view.summary,
        "notes": list(view.notes),
        "findings": [
            {
                "id": f.id,
                "kind": f.kind,
                "severity": f.severity,
                "namespace": f.namespace,
                "object": f.object,
                "policies": list(f.policies),
                "rules": list(f.rules),
                "service": f.service,
                "message": f.message,
                "changes": list(f.changes),
                "paths": list(f.paths),
                "ports": list(f.ports),
                "fix": None
                if f.fix is None
                else {
                    "summary": f.fix.summary,
                    "action": f.fix.action,
                    "when": f.fix.when,
                    "explanation": f.fix.explanation,
                    "supersedes": list(f.fix.supersedes),
                    "objects": list(f.fix.objects),
                    "yaml": f.fix.yaml,
                },
                "no_fix_reason": f.no_fix_reason,
            }
            for f in view.findings
        ],
    }


def _strs(raw: Any, where: str, source: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise RecordError(f"{source}: field {where} must be a list of strings")
    return tuple(raw)


def lint_from_json(data: Any, source: str = "<lint>") -> LintView:
    if not isinstance(data, Mapping) or data.get("kind") != LINT_KIND:
        raise RecordError(f"{source} is not a netparity lint file (no kind: {LINT_KIND})")
    if data.get("schema_version") != LINT_SCHEMA_VERSION:
        raise RecordError(
            f"{source} has lint schema version {data.get('schema_version')!r}; "
            f"this netparity reads version {LINT_SCHEMA_VERSION}"
        )
    findings = []
    raw = data.get("findings")
    if not isinstance(raw, list):
        raise RecordError(f"{source}: field findings must be a list")
    for i, f in enumerate(raw):
        where = f"findings[{i}]"
        if not isinstance(f, Mapping) or not isinstance(f.get("id"), str):
            raise RecordError(f"{source}: field {where}.id must be a string")
        fx = f.get("fix")
        fix = None
        if isinstance(fx, Mapping):
            fix = FixView(
                summary=str(fx.get("summary") or ""),
                action=str(fx.get("action") or "apply"),
                when=str(fx.get("when") or ""),
                explanation=str(fx.get("explanation") or ""),
                supersedes=_strs(fx.get("supersedes"), f"{where}.fix.supersedes", source),
                objects=_strs(fx.get("objects"), f"{where}.fix.objects", source),
                yaml=str(fx.get("yaml") or ""),
            )
        findings.append(
            FindingView(
                id=f["id"],
                kind=str(f.get("kind") or ""),
                severity=str(f.get("severity") or ""),
                namespace=str(f.get("namespace") or ""),
                object=str(f.get("object") or ""),
                policies=_strs(f.get("policies"), f"{where}.policies", source),
                rules=_strs(f.get("rules"), f"{where}.rules", source),
                service=f.get("service") if isinstance(f.get("service"), str) else None,
                message=str(f.get("message") or ""),
                changes=_strs(f.get("changes"), f"{where}.changes", source),
                paths=_strs(f.get("paths"), f"{where}.paths", source),
                ports=_strs(f.get("ports"), f"{where}.ports", source),
                fix=fix,
                no_fix_reason=f.get("no_fix_reason")
                if isinstance(f.get("no_fix_reason"), str)
                else None,
            )
        )
    return LintView(
        target=str(data.get("target") or ""),
        findings=tuple(findings),
        notes=_strs(data.get("notes"), "notes", source),
        summary=str(data.get("summary") or ""),
    )


def load_lint(path: Path) -> LintView:
    return lint_from_json(load_json(path, "lint file"), str(path))


def write_lint(view: LintView, path: Path) -> None:
    write_json_atomic(path, lint_json(view))


# --------------------------------------------------------------------------- matching


def _port_number(text: str) -> str:
    m = _PORT.match(text)
    return m.group(1) if m else text


class Matcher:
    """Finds the lint findings that explain a changed probe."""

    def __init__(self, lint: LintView | None) -> None:
        self.by_policy: dict[str, list[FindingView]] = {}
        self.by_service: dict[str, list[FindingView]] = {}
        for f in lint.findings if lint is not None else ():
            for p in f.policies:
                self.by_policy.setdefault(p, []).append(f)
            if f.service:
                self.by_service.setdefault(f.service, []).append(f)

    def for_cause(self, row: Row, cause: Cause) -> list[FindingView]:
        """The findings of the cause's scenario on its policy, or on the probe's Service."""
        if cause.scenario is None:
            return []
        cands: dict[str, FindingView] = {}
        policy = cause.policy
        if policy is not None and policy.startswith("NetworkPolicy "):
            for f in self.by_policy.get(_policy_name(policy), ()):
                cands.setdefault(f.id, f)
        service = row.service()
        if service is not None:
            for f in self.by_service.get(service, ()):
                cands.setdefault(f.id, f)
        found = [f for f in cands.values() if f.kind == cause.scenario]
        port = f"{_port_number(row.port)}/{row.protocol}"
        found.sort(
            key=lambda f: (bool(f.paths) and row.kind not in f.paths, port not in f.ports, f.id)
        )
        return found

    def findings(self, row: Row) -> list[FindingView]:
        cands: dict[str, FindingView] = {}
        service = row.service()
        if service is not None:
            for f in self.by_service.get(service, ()):
                cands.setdefault(f.id, f)
        for policy in row.policies():
            for f in self.by_policy.get(policy, ()):
                cands.setdefault(f.id, f)
        if not cands:
            return []
        found = [f for f in cands.values() if not f.paths or row.kind in f.paths]
        scenarios = {s for s in (row.scenario, *row.scenarios) if s}
        if scenarios:
            of_kind = [f for f in found if f.kind in scenarios]
            if of_kind:
                found = of_kind
        port = f"{_port_number(row.port)}/{row.protocol}"
        found.sort(
            key=lambda f: (f.kind != row.scenario, port not in f.ports, f.severity != "outage")
        )
        return found


def cause_category(cause: Cause) -> str:
    """The report section of one cause: its lint scenario, else its row's, else other."""
    if cause.scenario in CATEGORIES:
        return cause.scenario
    return ROW_CATEGORIES.get(cause.row, PREDICTED_OTHER)


def categorize(rows: Iterable[Row], lint: LintView | None) -> list[Row]:
    """Each changed probe's sections, by cause (and the findings that explain it).

    Where the source says causes (2.1 and later), a probe's sections are its causes'; each
    cause is matched to the lint findings of its scenario on its policy (or the probe's
    Service), and a cause no finding matches says why. Older sources fall back to the
    probe's purpose (its planned scenario), as before."""
    matcher = Matcher(lint)
    out = []
    for row in rows:
        if not row.changed or row.change == "missing":  # an accepted missing probe: no change
            out.append(row)
            continue
        unexplained = row.status in ("lost", "gained") or (
            row.status == "accepted" and not row.predicted_change
        )
        if row.causes_known:
            found_ids: dict[str, None] = {}
            no_finding: list[str] = []
            for cause in row.causes:
                hits = matcher.for_cause(row, cause)
                if not hits and cause.together:  # a joint cause: the lint files it once
                    group = {cause.knob, *cause.together}
                    for partner in row.causes:
                        if (
                            partner.knob in cause.together
                            and {partner.knob, *partner.together} == group
                        ):
                            hits = hits or matcher.for_cause(row, partner)
                found_ids.update(dict.fromkeys(f.id for f in hits))
                if not hits:
                    no_finding.append(f"{cause}: {no_finding_reason(cause, lint, row)}")
            cats = tuple(dict.fromkeys(cause_category(c) for c in row.causes)) or (PREDICTED_OTHER,)
            if unexplained:
                cats = (UNEXPLAINED, *cats) if row.causes else (UNEXPLAINED,)
            out.append(
                replace(
                    row,
                    category=cats[0],
                    categories=cats,
                    findings=tuple(found_ids),
                    no_finding=tuple(no_finding),
                )
            )
            continue
        found = matcher.findings(row)
        if unexplained:
            category = UNEXPLAINED
        else:
            scenario = row.scenario or next(iter(row.scenarios), None)
            if scenario is None and found:
                scenario = found[0].kind
            category = scenario if scenario in CATEGORIES else PREDICTED_OTHER
        out.append(
            replace(
                row,
                category=category,
                categories=(category,),
                findings=tuple(f.id for f in found),
            )
        )
    return out


def no_finding_reason(cause: Cause, lint: LintView | None, row: Row | None = None) -> str:
    """Why no lint finding stands for a cause."""
    if lint is None:
        return "no lint findings were given"
    service = row.service() if row is not None else None
    if service is not None and service.partition("/")[2].startswith(SYNTHETIC_PREFIX):
        return (
            f"the probe goes through {service}, a NodePort Service netparity creates for the "
            "run: no Service of the cluster exposes these pods so, and the lint judges the "
            "cluster's Services"
        )
    if cause.scenario is None or "cilium_policies" in cause.together:
        key = "D14" if "cilium_policies" in cause.together else cause.row
        return NO_SCENARIO_WHY.get(key, f"the lint has no scenario for {cause.knob} ({key})")
    if cause.rule is None:
        return "no NetworkPolicy is involved, so the lint names no policy for it"
    return (
        f"the lint has no {cause.scenario} finding on {cause.policy} (it judges the ports "
        "pods declare and rules name; a probe at the edge of a rule's ports may be on none)"
    )


def _not_judged(report: Any) -> list[str]:
    nj = getattr(report, "not_judged", None)
    return [] if nj is None else [*nj.lines(limit=None), *nj.listed()]
