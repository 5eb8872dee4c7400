"""`pytest suites/ --cluster NAME --phase during`, with pytester, against the loopback API
server: the watch runs from the plugin, writes timeline.json and JUnit into the cluster's
report folder, and gives one item per sentinel. The loopback server enforces no policy,
so every probe both dataplanes deny connects: an exposure window, which fails its item
unless the accept file lists the probe. Also: the watch's options are refused with
another phase."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from netparity.accept import Acceptance
from netparity.kube import RUN_LABEL
from netparity.kube.backend import KubeBackend
from netparity.plan.planner import make_plan
from netparity.watch.during import judge_during
from netparity.watch.sentinels import candidates_from_plan, select_sentinels
from netparity.watch.timeline import timeline_from_json

import kube_fixtures
from kubeapi import KubeAPI, demo_cluster, migrating

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
QUIET_PLUGINS = "-p no:cacheprovider -p no:hypothesispytest -p no:benchmark -p no:randomly"


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    server = KubeAPI().start()
    try:
        demo_cluster(server, dataplane="npm")
        migrating(server, reimaged=set())
        yield server
    finally:
        server.stop()


kubeconfig = kube_fixtures.kubeconfig


@pytest.fixture
def suites(
    pytester: pytest.Pytester, kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    (pytester.path / "suites").mkdir()
    for name in ("__init__.py", "test_connectivity.py", "test_explicit.py", "test_lint.py"):
        shutil.copy(REPO / "suites" / name, pytester.path / "suites" / name)
    pytester.makeconftest('pytest_plugins = ["netparity.plugin"]\n')
    pytester.makeini(f"[pytest]\naddopts = {QUIET_PLUGINS}\n")
    monkeypatch.setenv("KUBECONFIG", kubeconfig)  # the context "test" reaches the server
    return pytester


def _sentinels(kubeconfig: str) -> tuple[set[str], set[str]]:
    """The sentinel ids, and those of them both dataplanes deny (exposed on loopback)."""
    with KubeBackend("test", kubeconfig=kubeconfig, dataplane="npm") as b:
        snap = b.snapshot()
    plan = make_plan(snap, current="npm", target="cilium")
    chosen = set(select_sentinels(candidates_from_plan(plan)).ids)
    denied = {
        p.id
        for p in plan.probes
        if p.id in chosen and {str(p.predicted[d].decision) for d in ("npm", "cilium")} == {"deny"}
    }
    return chosen, denied


def test_phase_during_fails_the_sentinels_with_an_unaccepted_window(
    suites: pytest.Pytester, api: KubeAPI, kubeconfig: str
) -> None:
    chosen, denied = _sentinels(kubeconfig)
    assert denied, "the demo cluster has a probe both dataplanes deny"
    (suites.path / "accept.yaml").write_text(
        yaml.safe_dump([{"id": "000000000000", "reason": "some other probe"}])
    )
    result = suites.runpytest_subprocess(
        *("suites", "--cluster", "test", "--phase", "during", "--interval", "2"),
        *("--max-duration", "60", "--settle", "0", "--probe-timeout", "0.5"),
        *("--accept", "accept.yaml", "-rf"),  # an accept file that lists no window
    )
    folder = suites.path / "reports" / "test"
    doc = json.loads((folder / "timeline.json").read_text())
    assert doc["stopped"] == "max-duration"
    assert {p["id"] for p in doc["probes"]} == chosen
    exposed = {w["probe"] for w in doc["windows"]}
    assert exposed and exposed <= denied, doc["windows"]
    assert all(w["kind"] == "exposure" for w in doc["windows"])
    # one item per sentinel, in JUnit with its probe id
    outcome: dict[str, str] = {}
    for case in ET.parse(folder / "junit-during.xml").getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        bad = case.find("failure") is not None
        skipped = case.find("skipped") is not None
        outcome[str(props["netparity.probe_id"])] = (
            "failed" if bad else "skipped" if skipped else "passed"
        )
        assert props["netparity.phase"] == "during"
    assert set(outcome) == chosen
    assert {k for k, v in outcome.items() if v == "failed"} == exposed
    assert {v for k, v in outcome.items() if k not in exposed} == {"passed"}
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*window(s) during the migration*", "*exposure from*"])
    assert "phase: during" in result.stdout.str()
    # the same timeline with the window's probe accepted: its item passes, saying why
    tl = timeline_from_json(doc)
    accepted = sorted(exposed)[0]
    why = Acceptance(id=accepted, reason="the loopback server enforces nothing")
    verdicts = judge_during(tl, {accepted: why})
    assert verdicts[accepted].outcome == "passed"
    assert "accepted: the loopback server enforces nothing" in verdicts[accepted].message
    assert judge_during(tl, {})[accepted].outcome == "failed"
    left = [o for k in ("Pod", "Service", "Lease") for o in api.objects(k)]
    assert not [o for o in left if RUN_LABEL in (o["metadata"].get("labels") or {})]


@pytest.mark.parametrize(
    "args",
    [["--interval", "2"], ["--until-stable"], ["--max-sentinels", "5"]],
)
def test_the_watch_options_need_phase_during(suites: pytest.Pytester, args: list[str]) -> None:
    result = suites.runpytest("suites", "--cluster", "test", "--phase", "pre", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*only applies with --phase during*"])


def test_phase_during_refuses_a_snapshot_file(suites: pytest.Pytester) -> None:
    (suites.path / "c.yaml").write_text("apiVersion: v1\nkind: List\nitems: []\n")
    result = suites.runpytest("suites", "--cluster", "file:c.yaml", "--phase", "during")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--phase during watches a lab or a Kubernetes cluster*"])
