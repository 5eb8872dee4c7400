"""parity.html: one self-contained page (inline CSS and JavaScript, nothing fetched).

At the top the answer (parity held or not, the counts, the two dataplanes and times);
then the connectivity matrix, one section per change category with the rules that
decided each side and the lint's remediation YAML, and the full probe table (built in the
browser from embedded JSON, sortable and filterable without a server). The answer and its
tiles are `headline.py`'s; the page's jinja2 environment and sections are here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from netparity import __version__
from netparity.report.headline import CHECK_LABELS, STATUS_HELP, tiles, verdict
from netparity.report.lintdata import (
    CATEGORIES,
    GUIDE,
    PREDICTED_OTHER,
    UNEXPLAINED,
    FindingView,
    LintView,
)
from netparity.report.matrix import SEVERITY, Matrix, build_matrix
from netparity.report.model import FAILING, STATUSES, Report, Row, is_problem

# Section titles and one line on each cause: the guide's numbering for its five scenarios.
CATEGORY_TITLES: dict[str, tuple[str, str]] = {
    "endport": (
        "Guide 1 · endPort port ranges",
        "A rule with endPort admits a range of ports; Cilium before 1.17 reads only the "
        "first port of the range (D1).",
    ),
    "ipblock-pods": (
        "Guide 2 · ipBlock over pod addresses",
        "Cilium matches pods by identity, never by ipBlock: an ipBlock that covers pod IPs "
        "stops admitting those pods (D2).",
    ),
    "ipblock-nodes": (
        "Guide 2 · ipBlock over node addresses",
        "Under Cilium node addresses are the host / remote-node entities: an ipBlock "
        "covering node IPs no longer matches them (D2).",
    ),
    "named-port": (
        "Guide 3 · named ports",
        "A named port resolves on the destination pods under Cilium, where NPM resolved it "
        "differently (D3).",
    ),
    "node-egress": (
        "Guide 4 · egress to the pod's own node",
        "NPM never polices a pod's traffic to its own node; Cilium does, so egress policies "
        "now need to admit the host (D4a).",
    ),
    "external-ingress": (
        "Guide 5 · outside traffic through NodePort / LoadBalancer",
        "NPM sees such traffic after SNAT to the node; Cilium sees the real client, so "
        "ingress policies now judge it (D5).",
    ),
    "lb-in-cluster": (
        "In-cluster traffic to a LoadBalancer IP or NodePort",
        "NPM skipped policy when client and backend shared a node; Cilium always polices it (D5d).",
    ),
    "identity-labels": (
        "Labels left out of Cilium identities",
        "A selector uses a label Cilium does not put in identities (D6).",
    ),
    "sctp": ("SCTP port rules", "SCTP port rules behave differently (D8)."),
    "untranslatable": (
        "Policies NPM never enforced",
        "NPM skipped these policies; the target enforces them (D11).",
    ),
    "policy-types": (
        "Rules outside policyTypes",
        "NPM ignores rules under a direction that policyTypes leaves out; Cilium enforces "
        "them, isolating a direction that was open (D23).",
    ),
    "ns-selector-or": (
        "namespaceSelector In/NotIn read as an OR by NPM",
        "NPM splits a multi-value In/NotIn of a namespaceSelector into one selector per value "
        "and ORs them (NotIn [a, b] admits every namespace); Cilium reads it as the spec (D19).",
    ),
    "lb-source-ranges": (
        "loadBalancerSourceRanges and in-cluster clients",
        "kube-proxy applies a LoadBalancer's loadBalancerSourceRanges to every client of its "
        "IP; Cilium only to clients outside the cluster, so pods and nodes outside the ranges "
        "get through (D22).",
    ),
    "itp-local": (
        "internalTrafficPolicy Local on a pod's LoadBalancer IP and NodePort",
        "kube-proxy sends a pod's connections to a Service's LoadBalancer IP and NodePort to "
        "every endpoint; Cilium applies internalTrafficPolicy Local to them (its internal "
        "scope), so pods on a node without a backend are refused (D22).",
    ),
    "cilium-policies": (
        "Cilium policies already in the cluster",
        "NPM ignores CiliumNetworkPolicies; Cilium enforces them from the migration on (D14). "
        "The lint reports those that cut what NPM allowed as cilium-policy findings.",
    ),
    "essential": (
        "DNS and the API server",
        "Essential flows, probed from every class at the real kube-dns Service (or node-local "
        "DNS) and the API server, read-only: a cut here breaks everything at once (D13).",
    ),
    PREDICTED_OTHER: (
        "Other predicted changes",
        "The engine predicts these changes, but no single difference between the dataplanes "
        "(nor a group of up to three) explains them, or the lint has no scenario for it.",
    ),
    UNEXPLAINED: (
        "Unexplained changes",
        "Nobody predicted these: an outage (lost) or a hole (gained) to look at first.",
    ),
}

# The full probe table's columns (the JSON rows carry them in this order).
TABLE_COLUMNS = (
    "status",
    "probe",
    "source",
    "destination",
    "port",
    "path",
    "before",
    "after",
    "predicted",
    "scenario",
    "rule",
)


OPEN_FIXES = 8  # a cause with at most this many findings shows their YAML unfolded
CAP = 40  # changed probes drawn per section when the page opens; the rest on a click


@dataclass(frozen=True, slots=True, kw_only=True)
class Category:
    key: str
    title: str
    why: str
    rows: tuple[Row, ...]  # grouped by the finding that explains them, most severe first
    findings: tuple[tuple[FindingView, int], ...]  # the findings these probes hit, and how many
    unmatched_findings: tuple[FindingView, ...]  # the lint's findings of this kind no probe hit
    guide: bool
    also: tuple[Row, ...] = ()  # probes this cause changes too, drawn under their first cause

    @property
    def open_fixes(self) -> bool:
        return len(self.findings) <= OPEN_FIXES


def _asset(name: str) -> str:
    return resources.files("netparity.report").joinpath("templates", name).read_text("utf-8")


_ENV: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("netparity.report", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        env.filters["when"] = when
        env.filters["rules_or"] = rules_or
        env.filters["decisive"] = decisive
        _ENV = env
    return _ENV


def when(time: str | None) -> str:
    """2026-11-26T19:08:19Z -> 2026-11-26 19:08:19 UTC."""
    if not time:
        return "-"
    return time.replace("T", " ").replace("Z", " UTC")


def rules_or(side: Any, limit: int = 220) -> str:
    """The rules that decided one side, or the explanation's gist where no rule decided."""
    if side.rules:
        return "; ".join(side.rules)
    text: str = side.explanation or "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decisive(side: Any) -> str:
    """The explanation with the side that decided first: for a deny the direction no rule
    admits, for an allow the rules that admit (the engine writes egress first)."""
    text: str = side.explanation or ""
    head, sep, tail = text.partition("; ingress: ")
    if not sep or not head.startswith("egress: "):
        return text or "no prediction"
    egress, ingress = head, "ingress: " + tail
    verdict = side.predicted if side.is_prediction else side.verdict
    key = "admitted by" if verdict == "allow" else "no rule admits"
    if key in ingress and key not in egress:
        return f"{ingress}; {egress}"
    return text


def _json_script(data: Any) -> Markup:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("</", "<\\/").replace("<!--", "<\\!--")
    return Markup(text)


def _categories(report: Report, lint: LintView | None) -> list[Category]:
    findings = lint.by_id() if lint is not None else {}
    by_cat: dict[str, list[Row]] = {}
    also: dict[str, list[Row]] = {}
    for r in report.rows:
        if r.category is not None:
            by_cat.setdefault(r.category, []).append(r)
            for other in r.categories:
                if other != r.category:
                    also.setdefault(other, []).append(r)
    out = []
    for key in CATEGORIES:
        rows = by_cat.get(key, [])
        groups: dict[str | None, list[Row]] = {}
        for r in rows:
            groups.setdefault(r.findings[0] if r.findings else None, []).append(r)
        hit = {k for k in groups if k is not None}
        of_kind = tuple(f for f in (lint.findings if lint else ()) if f.kind == key)
        if not rows and not also.get(key) and not of_kind and key not in GUIDE:
            continue
        hits = sorted(
            ((findings[k], len(v)) for k, v in groups.items() if k is not None),
            key=lambda fn: (fn[0].severity != "outage", fn[0].object),
        )
        ordered = [r for f, _ in hits for r in groups[f.id]] + list(groups.get(None, []))
        title, why = CATEGORY_TITLES.get(key, (key, ""))
        out.append(
            Category(
                key=key,
                title=title,
                why=why,
                rows=tuple(ordered),
                findings=tuple(hits),
                unmatched_findings=tuple(f for f in of_kind if f.id not in hit),
                guide=key in GUIDE,
                also=tuple(also.get(key, ())),
            )
        )
    return out


def _anchor(r: Row) -> str:
    """The prefix of the probe's entry above the table: p (a change, a flaky probe or an
    error), d (a pre-phase disagreement), or "" (none)."""
    if r.category is not None or is_problem(r):
        return "p"
    if r.check in ("disagrees", "unexpected"):
        return "d"
    return ""


def _table_rows(report: Report, matrix: Matrix) -> list[list[Any]]:
    out: list[list[Any]] = []
    for r in report.rows:
        predicted = (
            f"{r.before.predicted or '?'} → {r.after.predicted or '?'}"
            if (r.before.predicted or r.after.predicted)
            else ""
        )
        out.append(
            [
                r.status,
                r.id,
                r.source.signature,
                r.destination.signature,
                r.port_protocol,
                r.kind,
                r.before.verdict or "",
                r.after.verdict or "",
                predicted,
                ", ".join(dict.fromkeys(s for s in (r.scenario, *r.scenarios) if s)),
                (r.rule or "").removeprefix("NetworkPolicy "),
                matrix.cell_of.get(r.id, ""),
                _anchor(r),
                r.check or "",
            ]
        )
    return out


def _interned(rows: list[list[Any]]) -> dict[str, Any]:
    """The table's rows with every cell an index into one list of strings (half the bytes:
    sources, destinations, rules and verdicts repeat)."""
    strings: dict[str, int] = {}
    out = [[strings.setdefault(str(cell), len(strings)) for cell in r] for r in rows]
    return {"columns": TABLE_COLUMNS, "strings": list(strings), "rows": out}


def render_html(
    report: Report,
    *,
    lint: LintView | None = None,
    files: Mapping[str, str] | None = None,
    max_axis: int | None = None,
    cap: int = CAP,
) -> str:
    """The page, as text. `files` names the sibling files to link (label -> relative path)."""
    matrix = build_matrix(report.rows, **({"max_axis": max_axis} if max_axis else {}))
    categories = _categories(report, lint)
    problems: Sequence[Row] = [r for r in report.rows if is_problem(r)]
    disagreements = [r for r in report.rows if r.check in ("disagrees", "unexpected")]
    findings = lint.by_id() if lint is not None else {}
    template = environment().get_template("parity.html.j2")
    return template.render(
        r=report,
        lint=lint,
        findings=findings,
        verdict=verdict(report),
        statuses=STATUSES,
        tiles=tiles(report),
        check_labels=CHECK_LABELS,
        status_help=STATUS_HELP,
        failing=FAILING,
        severity=SEVERITY,
        matrix=matrix,
        categories=categories,
        scenarios=report.scenario_probing(),
        scenario_titles={k: v[0] for k, v in CATEGORY_TITLES.items()},
        changed_total=sum(len(c.rows) for c in categories),
        problems=problems,
        disagreements=disagreements,
        files=dict(files or {}),
        columns=TABLE_COLUMNS,
        cap=cap,
        table_json=_json_script(_interned(_table_rows(report, matrix))),
        css=Markup(_asset("report.css")),
        js=Markup(_asset("report.js")),
        version=__version__,
    )
