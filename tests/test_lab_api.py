"""The Kubernetes path with real packets: `netparity lab up --api` under npm, the suites
run against its context `netparity-lab-NAME` (pre), `lab upgrade --dataplane cilium`, the
suites again (post); the same migration on the lab path (`--cluster lab:NAME`) gives the
same verdict for every probe both paths ran; nothing the run created is left in the lab,
and `lab down` ends the API server and removes its context, and only its context.

The suites run from the lab's outside host (`ip netns exec np-NAME-ext0`), where the
API also listens: outside probes are real traffic from outside the cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netparity.kube import RUN_LABEL
from netparity.lab import down, status
from netparity.lab.addressing import netns_prefix
from netparity.lab.netns import list_netns, pid_alive
from netparity.labapi import serve
from netparity.labapi.kubeconfig import context_name

from lab_fixtures import unique_lab_name

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.lab


def _default_sighup() -> None:
    """SIGHUP as a terminal sends it: under `nohup` the tests inherit it ignored, and the
    command (and the API server it starts) would rightly leave it so."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _netparity(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "netparity", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        preexec_fn=_default_sighup,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


class Path2:
    """One migration (pre, upgrade, post) through one backend."""

    def __init__(self, lab: str, cluster: str, reports: Path, env: dict[str, str]) -> None:
        self.lab, self.cluster, self.reports, self.env = lab, cluster, reports, env

    def suites(self, *prefix: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            *prefix,
            *(sys.executable, "-m", "pytest", "suites/", "--cluster", self.cluster),
            *("--report-dir", str(self.reports), "-p", "no:randomly", "-rfE", "--tb=no", "-q"),
        ]
        done = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=self.env
        )
        sys.stdout.write(done.stdout[-3000:])
        return done

    def record(self, phase: str) -> dict[str, Any]:
        folder = self.reports / self.cluster.replace(":", "-")
        path = sorted(folder.glob(f"record-{phase}-*.json"))[-1]
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def parity(self) -> dict[str, Any]:
        folder = self.reports / self.cluster.replace(":", "-")
        data: dict[str, Any] = json.loads((folder / "parity.json").read_text())
        return data


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    other = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "aks-prod", "cluster": {"server": "https://10.1.2.3:443"}}],
        "users": [{"name": "aks-prod", "user": {"token": "keep-me"}}],
        "contexts": [{"name": "aks-prod", "context": {"cluster": "aks-prod", "user": "aks-prod"}}],
        "current-context": "aks-prod",
    }
    path.write_text(yaml.safe_dump(other))
    return path


@pytest.fixture(scope="module")
def api_lab(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path2]:
    if os.geteuid() != 0:
        pytest.fail("the lab API test needs root (it builds network namespaces)")
    name = unique_lab_name("a")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(REPO)}
    try:
        _netparity("lab", "up", "--name", name, "--api", "--kubeconfig", str(kubeconfig), env=env)
        yield Path2(name, context_name(name), tmp_path_factory.mktemp("api-reports"), env)
    finally:
        serve.stop(name)
        down(name, wait=30)


@pytest.fixture(scope="module")
def lab_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path2]:
    name = unique_lab_name("b")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        yield Path2(name, f"lab:{name}", tmp_path_factory.mktemp("lab-reports"), env)
    finally:
        down(name, wait=30)


def _wait_for_generation(lab: str, generation: int) -> None:
    """The API server shows a new generation within a second of the upgrade."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        record = serve.load_record(lab)
        if record is not None and status(lab).generation == generation:
            time.sleep(2 * serve.POLL)
            return
        time.sleep(0.1)
    raise AssertionError(f"lab {lab} never reached generation {generation}")


@pytest.fixture(scope="module")
def migrated(api_lab: Path2, lab_path: Path2) -> tuple[Path2, Path2]:
    outside = serve.outside_host(api_lab.lab)
    assert outside is not None
    in_outside = ("ip", "netns", "exec", outside)
    pre_api = api_lab.suites(*in_outside)
    pre_lab = lab_path.suites()
    assert "pre:" in pre_api.stdout and "pre:" in pre_lab.stdout
    for path in (api_lab, lab_path):
        _netparity("lab", "upgrade", "--name", path.lab, "--dataplane", "cilium", env=path.env)
    _wait_for_generation(api_lab.lab, 1)
    api_lab.suites(*in_outside)
    lab_path.suites()
    return api_lab, lab_path


def test_the_api_shows_the_dataplane_before_and_after_the_upgrade(
    migrated: tuple[Path2, Path2],
) -> None:
    api_lab, _ = migrated
    pre, post = api_lab.record("pre"), api_lab.record("post")
    assert pre["backend"] == "kubernetes" and pre["dataplane"] == "npm"
    assert post["dataplane"].startswith("cilium") and post["dataplane_version"] == "1.17.3"
    # pods were recreated with new names and addresses, as on AKS
    names = {p["source"]["name"] for p in pre["probes"] if p["source"].get("kind") == "pod"}
    renamed = {p["source"]["name"] for p in post["probes"] if p["source"].get("kind") == "pod"}
    assert names and renamed and not names & renamed


def test_both_paths_show_the_same_changes_for_every_probe_both_ran(
    migrated: tuple[Path2, Path2],
) -> None:
    api_lab, lab_path = migrated
    api = {p["id"]: p["status"] for p in api_lab.parity()["probes"]}
    lab = {p["id"]: p["status"] for p in lab_path.parity()["probes"]}
    ran = {"same", "predicted", "lost", "gained", "unrealized"}
    both = sorted(i for i in api.keys() & lab.keys() if api[i] in ran and lab[i] in ran)
    rest = sorted((api.keys() | lab.keys()) - set(both))
    print(f"{len(both)} probes ran on both paths; the rest (id: api / lab):")
    for i in rest:
        print(f"  {i}: {api.get(i, 'absent')} / {lab.get(i, 'absent')}")
    differ = {i: (api[i], lab[i]) for i in both if api[i] != lab[i]}
    assert not differ, differ
    assert len(both) >= 70, both
    assert sum(1 for i in both if api[i] == "predicted") >= 20
    # no change nobody predicted on the Kubernetes path
    assert not [i for i, s in api.items() if s in ("lost", "gained", "unrealized")]


def test_nothing_the_run_created_is_left_and_down_removes_only_its_context(
    migrated: tuple[Path2, Path2], kubeconfig: Path
) -> None:
    api_lab, _ = migrated
    name = api_lab.lab
    state = status(name)
    assert state.topology is not None
    assert not [p.key for p in state.topology.pods if "netparity-" in p.key]
    assert not [s.key for s in state.topology.snapshot.services if RUN_LABEL in s.labels]
    assert not [n for n in list_netns(netns_prefix(name)) if n.startswith(f"np-{name}-r")]
    assert not state.topology.not_ready
    record = serve.load_record(name)
    assert record is not None
    pid = int(str(record["pid"]))
    contexts = [c["name"] for c in yaml.safe_load(kubeconfig.read_text())["contexts"]]
    assert contexts == ["aks-prod", context_name(name)]
    _netparity("lab", "down", "--name", name, env=api_lab.env)
    assert not pid_alive(pid)
    doc = yaml.safe_load(kubeconfig.read_text())
    assert [c["name"] for c in doc["contexts"]] == ["aks-prod"]
    assert doc["current-context"] == "aks-prod" and doc["users"][0]["user"]["token"] == "keep-me"


@pytest.mark.parametrize("how", ["SIGHUP", "lab removed"])
def test_the_server_ends_with_the_lab_or_a_signal_and_cleans_up(how: str, tmp_path: Path) -> None:
    name = unique_lab_name("s")
    kubeconfig = tmp_path / "config"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        _netparity("lab", "up", "--name", name, "--api", "--kubeconfig", str(kubeconfig), env=env)
        record = serve.load_record(name)
        assert record is not None
        pid = int(str(record["pid"]))
        assert yaml.safe_load(kubeconfig.read_text())["current-context"] == context_name(name)
        if how == "SIGHUP":
            os.kill(pid, signal.SIGHUP)
        else:
            down(name)  # not through the CLI: the server sees its lab gone and stops
        deadline = time.monotonic() + 20
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid)
        assert yaml.safe_load(kubeconfig.read_text())["contexts"] == []
    finally:
        serve.stop(name)
        down(name, wait=30)
