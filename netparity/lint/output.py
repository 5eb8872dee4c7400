"""The lint report as text (for a person), JSON (documented in docs/lint.md), JUnit XML, and
the fix folder (one YAML file per fix plus an index, written atomically)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, TextIO

import yaml

from netparity import __version__
from netparity.engine.dataplane import CURRENT
from netparity.errors import InputError
from netparity.lint.findings import Finding, Fix, FixAction, FixWhen, LintReport
from netparity.lint.json_text import Lazy, dumps_indented, write_indented

SCHEMA_VERSION = 1
INDEX = "index.yaml"
MAX_TEXT_TRAFFIC = 6  # changed-traffic lines shown per finding in text (JSON has all)
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

FOLDERS = {
    (FixAction.APPLY, FixWhen.BEFORE): "before-migration",
    (FixAction.DELETE, FixWhen.BEFORE): "delete-before-migration",
    (FixAction.APPLY, FixWhen.AFTER): "after-migration",
    (FixAction.DELETE, FixWhen.AFTER): "delete-after-migration",
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")[:80]


def fix_files(report: LintReport) -> dict[str, str]:
    """Finding id -> the fix file's path relative to the fix folder, numbered in report order."""
    out: dict[str, str] = {}
    n = 0
    for f in report.findings:
        if f.fix is None:
            continue
        n += 1
        folder = FOLDERS[(f.fix.action, f.fix.when)]
        out[f.id] = f"{folder}/{n:03d}-{_slug(f.id.replace('/', '-'))}.yaml"
    return out


# ---------------------------------------------------------------- text


def render_text(report: LintReport, files: dict[str, str] | None = None) -> str:
    files = files if files is not None else fix_files(report)
    lines = [
        f"netparity lint: NPM -> {report.target}: {len(report.findings)} findings "
        f"({report.outages} outages, {report.holes} holes) over {report.policies} "
        f"NetworkPolicies and {report.services} NodePort/LoadBalancer Services "
        f"({report.connections} connections evaluated under both)",
    ]
    if report.summary:
        lines.append(f"snapshot: {report.summary}")
    for note in report.notes:
        lines.append(f"note: {note}")
    current = None
    for f in report.findings:
        if f.namespace != current:
            current = f.namespace
            lines.append("")
            lines.append(f"namespace {current}")
        lines.extend(_finding_text(f, report.target, files.get(f.id)))
    lines.extend(not_judged_text(report))
    if not report.findings and report.not_judged.complete:
        lines.append("")
        lines.append("no finding: every policy and Service migrates with the same verdicts")
    elif not report.findings:
        lines.append("")
        lines.append(
            "no finding among what was judged, but not everything was judged (above): exit code 3"
        )
    return "\n".join(lines) + "\n"


def not_judged_text(report: LintReport) -> list[str]:
    """The "not judged" section (also in the suites' terminal summary and the report)."""
    nj = report.not_judged
    body = nj.lines()
    listed = nj.listed()
    if not body and not listed:
        return []
    out = ["", "not judged:" if body else "everything was judged; listed:"]
    out.extend(f"  {line}" for line in body)
    if body and listed:
        out.append("  listed (judged):")
    out.extend(f"  {line}" for line in listed)
    return out


def exit_code(report: LintReport) -> int:
    """0 no finding, 1 findings (even when something was not judged), 3 no finding but
    something was not judged; 2 (bad input) is the CLI's."""
    if report.findings:
        return 1
    return 0 if report.not_judged.complete else 3


def _finding_text(f: Finding, target: str, file: str | None) -> list[str]:
    severity = f.severity.upper()
    rows = ", ".join(f.rows)
    out = [f"  {severity} {f.kind} ({rows}) {f.object}: {f.title}"]
    for t in f.traffic[:MAX_TEXT_TRAFFIC]:
        out.append(f"    - {t.describe()}")
        out.append(f"        npm: {t.npm}")
        out.append(f"        {target}: {t.target}")
    if len(f.traffic) > MAX_TEXT_TRAFFIC:
        out.append(f"    ... and {len(f.traffic) - MAX_TEXT_TRAFFIC} more (see --format json)")
    if f.uncertain:
        out.append(f"    uncertain: {'; '.join(f.uncertain)}")
    if f.fix is not None:
        where = f" -> {file}" if file else ""
        out.append(f"    fix ({f.fix.when}, {f.fix.action}){where}: {f.fix.summary}")
        if f.fix.explanation:
            out.append(f"      {f.fix.explanation}")
    if f.no_fix_reason:
        label = "no NetworkPolicy-only fix" if f.fix is not None else "no fix"
        out.append(f"    {label}: {f.no_fix_reason}")
    return out


# ---------------------------------------------------------------- JSON


def fix_json(fix: Fix, file: str | None) -> dict[str, Any]:
    return {
        "file": file,
        "action": str(fix.action),
        "when": str(fix.when),
        "summary": fix.summary,
        "explanation": fix.explanation,
        "objects": list(fix.object_names()),
        "supersedes": list(fix.supersedes),
        "verified": True,
    }


def finding_json(f: Finding, file: str | None = None) -> dict[str, Any]:
    return {
        "id": f.id,
        "kind": f.kind,
        "guide": f.guide,
        "rows": list(f.rows),
        "severity": f.severity,
        "changes": [str(c) for c in f.changes],
        "namespace": f.namespace,
        "object": f.object,
        "policies": list(f.policies),
        "rules": list(f.rules),
        "service": f.service,
        "title": f.title,
        "message": f.message,
        "traffic": [t.to_json() for t in f.traffic],
        "uncertain": list(f.uncertain),
        "fix": None if f.fix is None else fix_json(f.fix, file),
        "no_fix_reason": f.no_fix_reason,
    }


def report_json(report: LintReport, files: dict[str, str] | None = None) -> dict[str, Any]:
    files = files if files is not None else fix_files(report)
    data = _report_head(report, files)
    data["findings"] = [finding_json(f, files.get(f.id)) for f in report.findings]
    return data


def _report_head(report: LintReport, files: dict[str, str]) -> dict[str, Any]:
    """report_json without its findings (their key comes last)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "netparity",
        "version": __version__,
        "current": CURRENT,
        "target": report.target,
        "snapshot": {"sources": list(report.sources), "summary": report.summary},
        "summary": {
            "findings": len(report.findings),
            "outages": report.outages,
            "holes": report.holes,
            "fixes": sum(1 for f in report.findings if f.fix is not None),
            "by_kind": report.by_kind(),
            "policies": report.policies,
            "services": report.services,
            "connections": report.connections,
        },
        "notes": list(report.notes),
        "not_judged": report.not_judged.to_json(),
    }


def render_json(report: LintReport, files: dict[str, str] | None = None) -> str:
    return dumps_indented(report_json(report, files), 2) + "\n"


def write_json(report: LintReport, out: TextIO, files: dict[str, str] | None = None) -> None:
    """`render_json` written to `out` as it is made: one finding's JSON at a time (at
    20,000 pods the text is 144 MB; built whole, it and its parts were the lint's peak)."""
    files = files if files is not None else fix_files(report)
    data: dict[str, Any] = _report_head(report, files)
    findings = (finding_json(f, files.get(f.id)) for f in report.findings)
    data["findings"] = Lazy(findings, plain=True)  # a finding holds no float
    write_indented(data, out.write, 2)
    out.write("\n")


# ---------------------------------------------------------------- JUnit


def render_junit(report: LintReport, files: dict[str, str] | None = None) -> str:
    """One testcase per finding, each failing with the finding's message."""
    files = files if files is not None else fix_files(report)
    n = str(len(report.findings))
    suites = ET.Element("testsuites", name="netparity lint", tests=n, failures=n, errors="0")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"netparity lint npm -> {report.target}",
        tests=n,
        failures=n,
        errors="0",
        skipped="0",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="target", value=report.target)
    ET.SubElement(props, "property", name="snapshot", value=report.summary)
    nj = report.not_judged
    ET.SubElement(props, "property", name="judged_all", value=str(nj.complete).lower())
    if not nj.complete:
        # one skipped testcase: CI shows it without failing on it (the exit code says 3)
        suite.set("tests", str(len(report.findings) + 1))
        suite.set("skipped", "1")
        suites.set("tests", str(len(report.findings) + 1))
        case = ET.SubElement(suite, "testcase", classname="netparity.lint", name="not judged")
        skipped = ET.SubElement(
            case, "skipped", message="netparity could not judge everything in the snapshot"
        )
        skipped.text = "\n".join(not_judged_text(report)).strip("\n")
    for f in report.findings:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"netparity.lint.{f.namespace}",
            name=f"{f.kind} {f.object}",
        )
        failure = ET.SubElement(case, "failure", message=f.message, type=f"{f.kind} {f.severity}")
        failure.text = "\n".join(_finding_text(f, report.target, files.get(f.id)))
    ET.indent(suites)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    )


# ---------------------------------------------------------------- fix folder


def _fix_yaml(f: Finding, target: str) -> str:
    assert f.fix is not None
    fix = f.fix
    verb = "kubectl delete -f" if fix.action is FixAction.DELETE else "kubectl apply -f"
    when = (
        "before the migration (it keeps NPM's verdicts)"
        if fix.when is FixWhen.BEFORE
        else "after `az aks update --network-dataplane cilium` (NPM ignores it)"
    )
    header = [
        f"netparity lint fix for {f.id}",
        f.message,
        f"Fix: {fix.summary}.",
        *_wrap(fix.explanation),
        f"Apply with `{verb} <this file>` {when}.",
        f"Checked: under {target} every connection the finding names gets NPM's verdict again.",
    ]
    if fix.supersedes:
        header.append(f"It includes the changes of: {', '.join(fix.supersedes)}.")
    text = "".join(f"# {line}\n" for line in header)
    docs = [
        yaml.dump(obj, Dumper=_DUMPER, sort_keys=False, default_flow_style=False)
        for obj in fix.objects
    ]
    return text + "---\n".join(docs)


def _wrap(text: str, width: int = 96) -> list[str]:
    out: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        out.append(line)
    return out


def _index(report: LintReport, files: dict[str, str]) -> str:
    header = (
        f"# netparity lint fixes, NPM -> {report.target} ({report.summary}).\n"
        "# Apply the files in order (a later file of the same object includes the earlier one):\n"
        "#   before the migration:  kubectl apply -f before-migration/\n"
        "#                          kubectl delete -f delete-before-migration/\n"
        "#   after `az aks update --network-dataplane cilium`:  kubectl apply -f after-migration/\n"
        "# Each fix was checked: applied to the snapshot, the target's verdicts equal NPM's for\n"
        "# the connections its finding names.\n"
    )
    body = {
        "schema_version": SCHEMA_VERSION,
        "target": report.target,
        "sources": list(report.sources),
        "fixes": [
            {
                "file": files[f.id],
                "finding": f.id,
                "kind": f.kind,
                "object": f.object,
                "severity": f.severity,
                **{
                    k: v
                    for k, v in fix_json(f.fix, files[f.id]).items()
                    if k not in ("file", "explanation")
                },
            }
            for f in report.findings
            if f.fix is not None
        ],
        "without_fix": [
            {"finding": f.id, "kind": f.kind, "object": f.object, "reason": f.no_fix_reason}
            for f in report.findings
            if f.fix is None
        ],
    }
    return header + yaml.safe_dump(body, sort_keys=False, width=100)


def write_fix_dir(report: LintReport, path: str | Path) -> dict[str, str]:
    """Write every fix and the index into `path`, atomically: the files go to a temporary
    folder beside it, which then replaces `path`. `path` must be absent, empty, or a folder a
    previous run wrote (it has an index). Returns finding id -> file."""
    dest = Path(path)
    if dest.exists():
        if not dest.is_dir():
            raise InputError("exists and is not a folder", source=str(dest), field="--fix-dir")
        if any(dest.iterdir()) and not (dest / INDEX).is_file():
            raise InputError(
                f"is not empty and has no {INDEX} (not a netparity fix folder); "
                "choose another folder",
                source=str(dest),
                field="--fix-dir",
            )
    parent = dest.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder ({e.strerror})", source=str(parent)) from e
    files = fix_files(report)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=parent))
    old: Path | None = None
    try:
        for f in report.findings:
            if f.fix is None:
                continue
            target = tmp / files[f.id]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_fix_yaml(f, report.target), encoding="utf-8")
        (tmp / INDEX).write_text(_index(report, files), encoding="utf-8")
        if dest.exists():
            old = parent / f".{dest.name}.old-{os.getpid()}"
            dest.rename(old)
        try:
            tmp.rename(dest)
        except OSError:
            if old is not None:
                old.rename(dest)
                old = None
            raise
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"cannot write the fixes ({e.strerror})", source=str(dest)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return files
