"""The lint's findings pinned: every cluster the tests and benchmarks lint, against a golden.

The golden (tests/data/lint_golden.json.gz) was captured from the lint before it moved onto
the planner's pod classes and enumerator (#14); the refactor must not change a finding.
Where a finding must change on purpose, regenerate the golden with
`NETPARITY_WRITE_GOLDEN=1 python3 -m pytest -p no:xdist tests/test_lint_equivalence.py`
(serially: every case rewrites the one file) and say why in
the commit. The cases: the shipped example under both targets, every snapshot
tests/test_lint.py lints (their wire dicts, tests/data/lint_scenarios.json) and small
clusters from bench/gen.py.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from netparity.lint import lint_snapshot
from netparity.lint.output import report_json
from netparity.model.snapshot import Snapshot, load_snapshot, snapshot_from_dicts

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "lint_golden.json.gz"  # gzip: the JSON is 3.6 MB
SCENARIOS = DATA / "lint_scenarios.json"
EXAMPLE = ROOT / "examples" / "aks-migration.yaml"
# (pods, namespaces, policies, nodes) of bench/gen.py clusters, each under both targets
GENERATED = ((400, 10, 80, 4), (1200, 30, 240, 8))


def _generated(pods: int, namespaces: int, policies: int, nodes: int) -> Snapshot:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from gen import generate
    finally:
        sys.path.remove(str(ROOT / "bench"))
    docs = generate(pods=pods, namespaces=namespaces, policies=policies, nodes=nodes)
    return snapshot_from_dicts(docs)


def _cases() -> list[tuple[str, str]]:
    out = [(f"example@{t}", t) for t in ("cilium", "cilium-1.16")]
    out += [
        (f"gen{'-'.join(map(str, g))}@{t}", t) for g in GENERATED for t in ("cilium", "cilium-1.16")
    ]
    scenarios = json.loads(SCENARIOS.read_text())
    out += [(f"test_lint#{i}@{s['target']}", s["target"]) for i, s in enumerate(scenarios)]
    return out


def _snapshot(name: str) -> Snapshot:
    base = name.split("@", 1)[0]
    if base == "example":
        return load_snapshot([EXAMPLE])
    if base.startswith("gen"):
        pods, namespaces, policies, nodes = map(int, base[3:].split("-"))
        return _generated(pods, namespaces, policies, nodes)
    index = int(base.split("#", 1)[1])
    return snapshot_from_dicts(json.loads(SCENARIOS.read_text())[index]["docs"])


def pinned(name: str, target: str) -> dict[str, Any]:
    """What must not change: every finding as in the JSON output (kind, severity, object,
    traffic, fix), the notes, what was not judged and the findings' counts."""
    data = report_json(lint_snapshot(_snapshot(name), target=target))
    summary = {k: v for k, v in data["summary"].items() if k != "connections"}
    return {
        "summary": summary,
        "notes": data["notes"],
        "not_judged": data["not_judged"],
        "findings": data["findings"],
    }


def _golden() -> dict[str, Any]:
    return dict(json.loads(gzip.decompress(GOLDEN.read_bytes()))) if GOLDEN.exists() else {}


@pytest.mark.parametrize(("name", "target"), _cases(), ids=[n for n, _ in _cases()])
def test_the_lint_finds_what_it_found_before_the_refactor(name: str, target: str) -> None:
    got = pinned(name, target)
    if os.environ.get("NETPARITY_WRITE_GOLDEN"):
        golden = _golden()
        golden[name] = got
        text = json.dumps(golden, indent=1, sort_keys=True) + "\n"
        GOLDEN.write_bytes(gzip.compress(text.encode(), mtime=0))
        return
    want = _golden().get(name)
    assert want is not None, f"{name} has no golden: regenerate it (see the module docstring)"
    assert got["summary"] == want["summary"]
    assert got["notes"] == want["notes"]
    assert got["not_judged"] == want["not_judged"]
    assert [f["id"] for f in got["findings"]] == [f["id"] for f in want["findings"]]
    for mine, theirs in zip(got["findings"], want["findings"], strict=True):
        assert mine == theirs, mine["id"]


def test_the_golden_holds_every_case_and_findings_of_every_kind() -> None:
    golden = _golden()
    assert set(golden) == {n for n, _ in _cases()}
    kinds = {f["kind"] for case in golden.values() for f in case["findings"]}
    assert len(kinds) >= 9, kinds
    assert any(f["fix"] for case in golden.values() for f in case["findings"])
