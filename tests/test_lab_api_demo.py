"""`netparity demo --backend kubernetes`: the whole migration through the lab's Kubernetes
API (lab up --api under npm, the suites against context netparity-lab-NAME from the lab's
outside host, lab upgrade to cilium, the suites again, the report); exit 0 with only
predicted changes; the probes the API path did not run are listed with their reasons; the
lab, its API server and its context are gone at the end, also when the demo is stopped by
SIGTERM. Needs root; never skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from netparity.lab import down
from netparity.lab.addressing import netns_prefix
from netparity.lab.netns import list_netns
from netparity.labapi import serve
from netparity.labapi.kubeconfig import context_name
from netparity.session import lab_is_up

from lab_fixtures import unique_lab_name

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.lab

OTHER = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "aks-prod", "cluster": {"server": "https://10.1.2.3:443"}}],
    "users": [{"name": "aks-prod", "user": {"token": "keep-me"}}],
    "contexts": [{"name": "aks-prod", "context": {"cluster": "aks-prod", "user": "aks-prod"}}],
    "current-context": "aks-prod",
}


def _demo(name: str, tmp_path: Path) -> list[str]:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump(OTHER))
    return [
        *(sys.executable, "-m", "netparity", "demo", "--name", name),
        *("--backend", "kubernetes", "--kubeconfig", str(kubeconfig)),
        *("--report-dir", str(tmp_path / "reports"), "--"),
        *("-p", "no:randomly", "-p", "no:hypothesispytest", "-p", "no:benchmark"),
    ]


def _assert_nothing_left(name: str, tmp_path: Path) -> None:
    assert not lab_is_up(name)
    assert not list_netns(netns_prefix(name))
    assert serve.load_record(name) is None
    doc = yaml.safe_load((tmp_path / "config").read_text())
    assert [c["name"] for c in doc["contexts"]] == ["aks-prod"]
    assert doc["current-context"] == "aks-prod" and doc["users"][0]["user"]["token"] == "keep-me"


def test_the_demo_runs_the_migration_through_the_lab_api_and_removes_everything(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.fail("the demo needs root (it builds network namespaces)")
    name = unique_lab_name("k")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        done = subprocess.run(
            _demo(name, tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        sys.stdout.write(done.stdout[-6000:])
        _assert_nothing_left(name, tmp_path)  # before the clean-up below hides a leftover
    finally:
        serve.stop(name)
        down(name, wait=30)
    out = done.stdout
    assert f"context {context_name(name)} in {tmp_path / 'config'}" in out
    assert f"$ ip netns exec np-{name}-ext0 pytest" in out
    assert "changed exactly as the engine predicted for npm -> cilium" in out
    assert "nothing else changed" in out
    # the probes the API path did not run, and why: LoadBalancers without the flag, nodes
    folder = tmp_path / "reports" / f"netparity-lab-{name}"
    parity = json.loads((folder / "parity.json").read_text())
    not_run = [p for p in parity["probes"] if p["status"] == "not-run"]
    assert not_run and "by the kubernetes backend here, by reason:" in out
    for p in not_run:
        assert f"      {p['id']} {p['title']}" in out
    assert "needs --allow-load-balancer" in out and "without --allow-host-network" in out
    assert parity["counts"]["predicted"] >= 20
    assert all(parity["counts"][k] == 0 for k in ("lost", "gained", "error", "flaky"))
    records = sorted(folder.glob("record-*.json"))
    backends = {json.loads(r.read_text())["backend"] for r in records}
    assert backends == {"kubernetes"}, backends
    assert out.rstrip().endswith("exit 0") and done.returncode == 0, done.stderr[-3000:]


def test_sigterm_during_the_demo_removes_the_lab_its_server_and_its_context(
    tmp_path: Path,
) -> None:
    name = unique_lab_name("k")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "out.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            _demo(name, tmp_path), cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while "1/2 before the upgrade" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert serve.load_record(name) is not None  # the API server runs
        time.sleep(3)  # the pre run has started creating its twins
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        _assert_nothing_left(name, tmp_path)  # before the clean-up below hides a leftover
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        serve.stop(name)
        down(name, wait=30)
    text = log.read_text()
    sys.stdout.write(text[-3000:])
    assert "interrupted (SIGTERM)" in text and code == 128 + signal.SIGTERM
    assert f"lab {name} removed" in text


def test_every_probe_not_run_in_either_phase_is_listed_once_with_its_reason(
    tmp_path: Path,
) -> None:
    """The demo's list of what the API path did not run covers both phases: a probe not
    run before the upgrade only (so its post verdict is "new") is listed too, and says so."""
    from netparity.cli.demo_api import not_run_lines

    lb = "LoadBalancer needs --allow-load-balancer"
    host = "not run on kubernetes without --allow-host-network"

    def record(phase: str, *entries: tuple[str, str]) -> None:
        doc = {
            "backend": "kubernetes",
            "not_run": [{"id": i, "title": f"title of {i}", "reason": r} for i, r in entries],
        }
        (tmp_path / f"record-{phase}-20260101.json").write_text(json.dumps(doc))

    assert not_run_lines(tmp_path) == []
    record("pre", ("aaa", lb), ("bbb", host), ("ccc", lb))
    record("post", ("aaa", lb), ("ccc", lb), ("ddd", host))
    assert not_run_lines(tmp_path) == [
        "4 probes were not run by the kubernetes backend here, by reason:",
        f"  2 x {lb}",
        "      aaa title of aaa",
        "      ccc title of ccc",
        f"  2 x {host}",
        "      bbb title of bbb (only pre)",
        "      ddd title of ddd (only post)",
    ]
    (tmp_path / "record-pre-20260101.json").write_text("{")  # unreadable: said, not skipped
    lines = not_run_lines(tmp_path)
    assert lines[0].startswith("the pre record ") and lines[0].endswith("cannot be read")
    assert "      ddd title of ddd" in lines  # one phase read: nothing is "only" there
