"""Plan and lint pinned against goldens: the same probes, ids, predictions and findings (#19).

The goldens under tests/data/ (plan-golden-*.jsonl.gz, gzipped JSON lines, and
lint-golden-*.json.gz, `netparity lint --format json`) were captured before the planner
was made to scale; any change to what a plan holds on these clusters shows here as a diff.
Regenerate them only on purpose (a changed probe meaning also bumps PLAN_VERSION):

    PYTHONPATH=$PWD python3 tests/test_plan_golden.py --update
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from netparity.lint import lint_snapshot
from netparity.lint.output import render_json
from netparity.model.snapshot import snapshot_from_dicts
from netparity.plan.export import probe_json
from netparity.plan.model import Plan
from netparity.plan.planner import make_plan

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
sys.path.insert(0, str(ROOT / "bench"))

from gen import generate  # noqa: E402

Docs = list[dict[str, Any]]


def _example() -> Docs:
    data = yaml.safe_load((ROOT / "examples" / "aks-migration.yaml").read_text(encoding="utf-8"))
    return list(data["items"])


CLUSTERS: dict[str, Callable[[], Docs]] = {
    "example": _example,
    "gen-300": lambda: generate(pods=300, namespaces=8, policies=60, nodes=3, seed=1),
    "gen-1000": lambda: generate(pods=1000, namespaces=20, policies=200, nodes=5, seed=2),
    "gen-1000-bench": lambda: generate(pods=1000, namespaces=20, policies=200, nodes=20, seed=1),
    "gen-600-aks": lambda: generate(
        pods=600, namespaces=10, policies=150, nodes=4, seed=3,
        service_cidr="10.0.0.0/16", vnet_egress=12,
    ),
}  # fmt: skip


def lines(plan: Plan) -> list[str]:
    """One JSON line for the plan's head (digest, coverage, classes), then one per probe."""
    c = plan.coverage
    head = {
        "digest": plan.digest,
        "coverage": {
            "rules_total": c.rules_total,
            "rules_with_admit": c.rules_with_admit,
            "rules_with_reject": c.rules_with_reject,
            "scenarios_present": list(c.scenarios_present),
            "scenarios_probed": list(c.scenarios_probed),
            "uncovered": list(c.uncovered),
        },
        "classes": {name: list(keys) for name, keys in plan.classes.items()},
        "synthetic_services": [s.key for s in plan.synthetic_services],
    }
    out = [json.dumps(head, sort_keys=True)]
    for p in plan.probes:
        doc = probe_json(p)
        for name, pred in p.predicted.items():
            doc["predicted"][name]["causes"] = [str(c) for c in pred.causes]
        out.append(json.dumps(doc, sort_keys=True))
    return out


def golden(name: str) -> Path:
    return DATA / f"plan-golden-{name}.jsonl.gz"


def read_golden(name: str) -> list[str]:
    return gzip.decompress(golden(name).read_bytes()).decode("utf-8").splitlines()


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_the_plan_equals_its_golden(name: str) -> None:
    want = read_golden(name)
    got = lines(make_plan(snapshot_from_dicts(CLUSTERS[name]())))
    assert got[0] == want[0], "digest, coverage or classes changed"
    want_ids = [json.loads(w)["id"] for w in want[1:]]
    got_ids = [json.loads(g)["id"] for g in got[1:]]
    assert got_ids == want_ids, "probe ids or their order changed"
    for g, w in zip(got[1:], want[1:], strict=True):
        assert g == w


def test_a_changed_plan_differs_from_its_golden() -> None:
    """The comparison can fail: one policy fewer gives another head line."""
    docs = [d for d in CLUSTERS["example"]() if d.get("kind") != "NetworkPolicy"]
    want = read_golden("example")
    assert lines(make_plan(snapshot_from_dicts(docs)))[0] != want[0]


# gen-1000 and gen-600-aks are not linted: the lint's named-port remedy raises IndexError
# on them (lint/remedies.py _named_port, reported in issue 19's work; not a planner matter)
LINTED = ("example", "gen-300", "gen-1000-bench")


def lint_golden(name: str) -> Path:
    return DATA / f"lint-golden-{name}.json.gz"


def lint_text(name: str) -> str:
    return render_json(lint_snapshot(snapshot_from_dicts(CLUSTERS[name]()))) + "\n"


@pytest.mark.parametrize("name", LINTED)
def test_the_lint_equals_its_golden(name: str) -> None:
    want = json.loads(gzip.decompress(lint_golden(name).read_bytes()))
    got = json.loads(lint_text(name))
    assert len(got["findings"]) == len(want["findings"])
    for g, w in zip(got["findings"], want["findings"], strict=True):
        assert g == w
    assert got == want


def _update() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for name, make in CLUSTERS.items():
        text = "\n".join(lines(make_plan(snapshot_from_dicts(make())))) + "\n"
        golden(name).write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
        print(f"{golden(name)}: {text.count(chr(10)) - 1} probes")
    for name in LINTED:
        text = lint_text(name)
        lint_golden(name).write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
        print(f"{lint_golden(name)}: {len(json.loads(text)['findings'])} findings")


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        _update()


# --- progress (issue 19) ----------------------------------------------------------------------


def test_planning_reports_classes_rules_and_probes_as_it_goes() -> None:
    seen: list[tuple[str, int, int]] = []
    plan = make_plan(
        snapshot_from_dicts(CLUSTERS["gen-300"]()),
        progress=lambda what, done, total: seen.append((what, done, total)),
    )
    stages = list(dict.fromkeys(what for what, _, _ in seen))
    assert stages == ["classes built", "rules planned", "probes predicted"]
    last = {what: (done, total) for what, done, total in seen}
    assert last["classes built"] == (len(plan.classes), len(plan.classes))
    assert last["rules planned"] == (plan.coverage.rules_total, plan.coverage.rules_total)
    assert last["probes predicted"] == (len(plan.probes), len(plan.probes))
    predicted = [done for what, done, _ in seen if what == "probes predicted"]
    assert predicted == sorted(predicted) and predicted[0] == 1


def test_plan_shows_progress_on_stderr_when_asked_and_not_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from netparity.cli import main

    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"kind": "List", "items": CLUSTERS["example"]()}))
    assert main(["plan", str(path), "--format", "json"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""  # stderr is not a terminal here
    assert main(["plan", str(path), "--format", "json", "--progress"]) == 0
    shown = capsys.readouterr()
    assert json.loads(shown.out) == json.loads(quiet.out)
    lines = shown.err.splitlines()
    assert lines and all(line.startswith("plan: classes built ") for line in lines)
    assert re.search(r"probes predicted (\d+)/\1$", lines[-1]), lines[-1]
