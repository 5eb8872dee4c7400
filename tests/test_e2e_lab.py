"""End to end on the lab: `pytest suites/ --cluster lab:NAME` before and after the upgrade.

One lab built from examples/aks-migration.yaml (by the plugin itself: no lab is up when
the first run starts), probed under npm (pre: the baseline), upgraded to cilium (every pod
renumbered), probed again (post). Needs root; never skipped; the lab and any filter the
test adds are removed at the end, also on failure.
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
import yaml

from netparity.lab import LabBackend, down

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[1]


def lab_name() -> str:
    digits, pid = "", os.getpid()
    while pid:
        pid, r = divmod(pid, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return ("e" + digits)[:8]


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("the end-to-end lab test needs root (it builds network namespaces)")
    name = lab_name()
    down(name)  # a leftover of a killed run with the same pid
    try:
        yield name
    finally:
        down(name, wait=30)  # a suites run that is still ending holds the lab as a user


class Runs:
    def __init__(self, name: str, reports: Path) -> None:
        self.name = name
        self.reports = reports
        self.folder = reports / f"lab-{name}"

    def pytest(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "suites/",
            "--cluster",
            f"lab:{self.name}",
            "--report-dir",
            str(self.reports),
            "-p",
            "no:randomly",
            "-p",
            "no:hypothesispytest",
            "-p",
            "no:benchmark",
            "-rfE",
            "--tb=no",
            *args,
        ]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
        sys.stdout.write(done.stdout[-6000:])
        sys.stderr.write(done.stderr[-3000:])
        return done

    def json(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / name).read_text())
        return data

    def first_post(self) -> dict[str, Any]:
        """The first post run's parity (saved before later runs rewrite parity.json)."""
        return self.json("first-post-parity.json")

    def changes(self) -> list[dict[str, Any]]:
        return [p for p in self.first_post()["probes"] if p["status"] != "same"]


@pytest.fixture(scope="module")
def runs(lab: str, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(lab, tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def pre(runs: Runs) -> subprocess.CompletedProcess[str]:
    return runs.pytest()


@pytest.fixture(scope="module")
def post(runs: Runs, pre: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "netparity",
            "lab",
            "upgrade",
            "--name",
            runs.name,
            "--dataplane",
            "cilium",
        ],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    done = runs.pytest()
    (runs.folder / "first-post-parity.json").write_bytes((runs.folder / "parity.json").read_bytes())
    return done


def test_pre_builds_the_lab_passes_and_records_the_baseline(
    runs: Runs, pre: subprocess.CompletedProcess[str]
) -> None:
    assert f"no lab named {runs.name} is up: building it from" in pre.stdout
    assert "netparity phase: pre (auto: this cluster has no baseline yet" in pre.stdout
    assert pre.returncode == 0, "pre: the lab disagrees with the engine (output above)"
    base = runs.json("baseline.json")
    assert base["cluster"] == f"lab:{runs.name}" and base["dataplane"] == "npm"
    assert base["probes"] and all(p["verdict"] in ("allow", "deny") for p in base["probes"])
    assert list(runs.folder.glob("record-pre-*.json"))


def test_post_fails_exactly_on_the_predicted_scenario_probes(
    runs: Runs, post: subprocess.CompletedProcess[str]
) -> None:
    assert "netparity phase: post (auto: the baseline of " in post.stdout
    assert post.returncode == 1
    parity = runs.first_post()
    counts = parity["counts"]
    assert (counts["lost"], counts["gained"], counts["flaky"], counts["error"]) == (0, 0, 0, 0)
    predicted = {p["id"] for p in parity["probes"] if p["status"] == "predicted"}
    expected = {
        p["id"]
        for p in parity["probes"]
        if p["predicted"]["npm"]["decision"] != p["predicted"]["cilium"]["decision"]
    }
    assert predicted == expected and predicted
    for p in parity["probes"]:
        if p["status"] == "predicted":
            assert p["scenario"] and p["causes"], p["title"]
            assert "predicted by the engine for this migration: cause" in p["message"]
    failed = [line for line in post.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == len(predicted)


def test_after_renumbering_every_baseline_probe_is_found_by_id(
    runs: Runs, post: subprocess.CompletedProcess[str]
) -> None:
    parity = runs.first_post()
    assert parity["counts"]["new"] == 0 and parity["counts"]["missing"] == 0
    base = {p["id"]: p for p in runs.json("baseline.json")["probes"]}
    assert {p["id"] for p in parity["probes"]} == set(base)
    (current,) = sorted(runs.folder.glob("record-post-*.json"))
    now = json.loads(current.read_text())
    moved = [
        p
        for p in now["probes"]
        if p["source"]["kind"] == "pod" and p["source"]["ip"] != base[p["id"]]["source"]["ip"]
    ]
    assert moved, "the upgrade renumbered no pod: the renumbering check proves nothing"


def test_with_the_predicted_changes_accepted_post_passes(
    runs: Runs, post: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    predicted = [p for p in runs.changes() if p["status"] == "predicted"]
    accept = tmp_path / "accept.yaml"
    accept.write_text(
        yaml.safe_dump(
            [{"id": p["id"], "reason": f"known migration risk: {p['scenario']}"} for p in predicted]
        )
    )
    done = runs.pytest("--accept", str(accept))
    assert done.returncode == 0
    assert "parity held:" in done.stdout
    assert runs.json("parity.json")["counts"]["accepted"] == len(predicted)


def test_a_change_nobody_predicted_fails_as_unexpected(
    runs: Runs, post: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    parity = runs.first_post()
    (current,) = sorted(runs.folder.glob("record-post-*.json"))[-1:]
    records = {p["id"]: p for p in json.loads(current.read_text())["probes"]}
    victim = next(
        records[p["id"]]
        for p in parity["probes"]
        if p["status"] == "same"
        and p["after"] == "allow"
        and p["kind"] == "pod-pod"
        and p["protocol"] == "TCP"
        and isinstance(p["port"], int)
    )
    dst = victim["destination"]
    node = LabBackend(runs.name).topology().node(dst["node"])
    accept = tmp_path / "accept.yaml"
    accept.write_text(
        yaml.safe_dump(
            [
                {"id": p["id"], "reason": "known"}
                for p in runs.changes()
                if p["status"] == "predicted"
            ]
        )
    )
    nft = ["ip", "netns", "exec", node.netns, "nft"]
    subprocess.run(
        [
            *nft,
            "-f",
            "-",
        ],
        input=(
            "table inet netparity_e2e {\n"
            "  chain forward {\n"
            "    type filter hook forward priority -400; policy accept;\n"
            f"    ip daddr {dst['ip']} tcp dport {victim['port']} drop\n"
            "  }\n"
            "}\n"
        ),
        text=True,
        check=True,
    )
    try:
        done = runs.pytest("--accept", str(accept))
    finally:
        subprocess.run([*nft, "delete", "table", "inet", "netparity_e2e"], check=True)
    assert done.returncode == 1
    after = runs.json("parity.json")
    lost = [p for p in after["probes"] if p["status"] == "lost"]
    assert victim["id"] in {p["id"] for p in lost}
    assert after["counts"]["gained"] == 0 and after["counts"]["predicted"] == 0
    for p in lost:
        assert not p["predicted_change"]
        assert "NOT predicted" in p["message"]
        assert p["port"] == victim["port"] or p["destination"]["kind"] == "service"
    assert "parity BROKEN:" in done.stdout


def demo(name: str, reports: Path, *pytest_args: str) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "netparity",
                "demo",
                "--name",
                name,
                "--report-dir",
                str(reports),
                "--",
                "-p",
                "no:hypothesispytest",
                "-p",
                "no:benchmark",
                *pytest_args,
            ],
            cwd=reports,  # the demo runs the suites from the repository, wherever it starts
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        down(name, wait=30)  # a demo killed by the timeout: its pytest run may still be ending
    sys.stdout.write(done.stdout[-4000:])
    return done


def test_the_demo_runs_the_migration_explains_it_and_removes_its_lab(tmp_path: Path) -> None:
    from netparity.session import lab_is_up

    name = "d" + lab_name()[1:]
    done = demo(name, tmp_path)
    assert "changed exactly as the engine predicted for npm -> cilium" in done.stdout
    assert "nothing else changed" in done.stdout
    assert f"lab {name} removed" in done.stdout
    assert done.returncode == 0
    assert not lab_is_up(name)
    assert (tmp_path / f"lab-{name}" / "parity.json").is_file()
    assert (tmp_path / f"lab-{name}" / "baseline.json").is_file()


def test_the_demo_exits_1_when_the_pre_run_fails(tmp_path: Path) -> None:
    """A probe file that expects deny under npm where the lab allows: the pre run fails,
    the post run only has the predicted changes; the demo must not exit 0."""
    probes = tmp_path / "probes.yaml"
    probes.write_text(
        "probes:\n"
        "  - from: egress-lockdown/app=report-worker\n"
        "    to: kube-system/k8s-app=kube-dns\n"
        "    port: 53\n"
        "    expect: {npm: deny}\n"
    )
    name = "f" + lab_name()[1:]
    done = demo(name, tmp_path, "--probes", str(probes))
    assert (
        "FAILED suites/test_explicit.py::test_explicit[egress-lockdown[app=report-worker] -> "
        "kube-system[k8s-app=kube-dns] 53/TCP pod-pod]" in done.stdout
    )
    assert "the pre run failed: the lab disagrees with the engine (or with a probe file)" in (
        done.stdout
    )
    assert "changed exactly as the engine predicted for npm -> cilium" in done.stdout
    assert "FAILED: the pre run failed" in done.stdout
    assert done.stdout.rstrip().endswith("exit 1")
    assert done.returncode == 1
