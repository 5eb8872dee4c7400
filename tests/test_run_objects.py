"""The run's own objects never leak into the next plan (lab and Kubernetes alike).

The planner's run-owned Services (`netparity-*`) carry the `netparity.io/run` label; a lab
run creates them in the lab and removes them at its end, and nothing labelled
`netparity.io/run` is ever read as part of the cluster. The check is the one a new user
did: the same lab, planned again and again (serially and with `-n 2`), gives the same
probe ids and the same lint findings. Needs root; never skipped; the lab is removed at the
end, also on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netparity.lab import LabBackend, down, status
from netparity.lab.build import add_services
from netparity.model.objects import RUN_LABEL, run_owned
from netparity.model.snapshot import load_snapshot, snapshot_from_dicts
from netparity.plan.export import service_json
from netparity.plan.planner import make_plan

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "aks-migration.yaml"


# --------------------------------------------------------------------------- no lab


def _svc(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop"}
    if labels is not None:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"selector": {"app": "api"}, "ports": [{"port": 80}]},
    }


def test_a_service_keeps_its_labels_in_the_model() -> None:
    snap = snapshot_from_dicts([_svc("api", {"app": "api", "tier": "b"})])
    (svc,) = snap.services
    assert dict(svc.labels) == {"app": "api", "tier": "b"}


def test_objects_labelled_with_the_run_label_are_never_read_as_the_clusters() -> None:
    twin = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "np-x", "namespace": "shop", "labels": {RUN_LABEL: "r1"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "a"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.9"},
    }
    run_ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "netparity-host-r1", "labels": {RUN_LABEL: "r1"}},
    }
    snap = snapshot_from_dicts(
        [_svc("api"), _svc("netparity-abc", {RUN_LABEL: "planned"}), twin, run_ns]
    )
    assert [s.key for s in snap.services] == ["shop/api"]
    assert snap.pods == ()
    assert [n.name for n in snap.namespaces] == []
    assert snap.skipped["Service (netparity's own)"] == 1
    assert snap.skipped["Pod (netparity's own)"] == 1


def test_the_planners_own_services_carry_the_run_label_through_export() -> None:
    plan = make_plan(load_snapshot([str(EXAMPLE)]), current="npm", target="cilium")
    assert plan.synthetic_services, "the example should need run-owned Services"
    for svc in plan.synthetic_services:
        assert run_owned(svc.labels), svc.key
        wire = service_json(svc)
        assert RUN_LABEL in wire["metadata"]["labels"]
    # read back as a cluster would: they are not the cluster's
    again = snapshot_from_dicts([service_json(s) for s in plan.synthetic_services])
    assert again.services == ()


# --------------------------------------------------------------------------- a real lab


def _lab_name() -> str:
    digits, pid = "", os.getpid()
    while pid:
        pid, r = divmod(pid, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return ("r" + digits)[:8]


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("the run-objects lab test needs root (it builds network namespaces)")
    name = _lab_name()
    down(name)  # a leftover of a killed run with the same pid
    try:
        yield name
    finally:
        down(name)


class Run:
    """One `pytest suites/ --cluster lab:NAME` run: its probe ids and lint finding ids."""

    def __init__(self, lab: str, reports: Path, *args: str) -> None:
        before = set(reports.glob("*/record-*.json"))
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "suites/",
            "--cluster",
            f"lab:{lab}",
            "--report-dir",
            str(reports),
            "-p",
            "no:randomly",
            "-p",
            "no:hypothesispytest",
            "-p",
            "no:benchmark",
            "-q",
            "--tb=short",
            *args,
        ]
        self.done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
        sys.stdout.write(self.done.stdout[-3000:])
        sys.stderr.write(self.done.stderr[-2000:])
        (record,) = set(reports.glob("*/record-*.json")) - before
        probes = json.loads(record.read_text())["probes"]
        self.ids = sorted(p["id"] for p in probes)
        lint = json.loads((record.parent / "lint.json").read_text())
        self.findings = sorted(f["id"] for f in lint["findings"])
        self.summary = lint["summary"]


def _run_services(lab: str) -> list[str]:
    topo = status(lab).topology
    assert topo is not None
    return [s.key for s in topo.snapshot.services if run_owned(s.labels)]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def first(lab: str, reports: Path) -> Run:
    run = Run(lab, reports)
    assert run.done.returncode == 0, run.done.stdout[-2000:]
    return run


def test_a_lab_run_removes_the_services_it_created_for_itself(lab: str, first: Run) -> None:
    assert any(i for i in first.ids), "the run planned no probes"
    assert _run_services(lab) == []
    # the lab still has its own Services: only the run's went
    topo = status(lab).topology
    assert topo is not None and topo.snapshot.services


def test_the_same_lab_planned_again_gives_the_same_probes_and_findings(
    lab: str, reports: Path, first: Run
) -> None:
    second = Run(lab, reports)
    assert second.done.returncode == 0, second.done.stdout[-2000:]
    assert second.ids == first.ids
    assert second.findings == first.findings
    assert second.summary == first.summary


def test_with_two_workers_the_plan_and_findings_are_the_same(
    lab: str, reports: Path, first: Run
) -> None:
    parallel = Run(lab, reports, "-n", "2")
    assert parallel.done.returncode == 0, parallel.done.stdout[-2000:]
    assert parallel.ids == first.ids
    assert parallel.findings == first.findings
    assert _run_services(lab) == []


def test_services_a_killed_run_left_in_the_lab_are_not_read_and_are_removed(
    lab: str, reports: Path, first: Run
) -> None:
    backend = LabBackend(lab)
    plan = make_plan(backend.snapshot(), current="npm", target="cilium")
    add_services(lab, plan.synthetic_services)  # as a run killed mid-way leaves them
    left = _run_services(lab)
    assert left == sorted(s.key for s in plan.synthetic_services)
    assert not any(run_owned(s.labels) for s in backend.snapshot().services)
    again = Run(lab, reports)
    assert again.done.returncode == 0, again.done.stdout[-2000:]
    assert again.ids == first.ids
    assert again.findings == first.findings
    assert _run_services(lab) == []
