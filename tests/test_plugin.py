"""The pytest plugin, run with pytester on the real suites against `--cluster file:...`.

The dry-run backend answers from the engine under the dataplane the cluster spec names;
a conftest hook (`pytest_netparity_backend`) lets a test override single probes with an
observation table (overrides.json: probe id -> observations per try), so that changes
nobody predicted, flaky probes and errors can be made on purpose.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import netparity.dryrun
import netparity.plan.planner  # noqa: F401  (imported once here: pytester keeps modules imported before a run)
from tests.builders import netpol, node, ns, pod

pytest_plugins = ["pytester"]

# Plugins of this machine that cost seconds per in-process run and do nothing here.
QUIET_PLUGINS = "-p no:cacheprovider -p no:hypothesispytest -p no:benchmark -p no:randomly"

REPO = Path(__file__).resolve().parents[1]

CONFTEST = """
import json, os
from netparity.backend import Observed
from netparity.dryrun import SnapshotBackend

pytest_plugins = ["netparity.plugin"]


def pytest_netparity_backend(config, cluster):
    if not cluster.startswith("file:") or not os.path.exists("overrides.json"):
        return None
    with open("overrides.json") as f:
        table = json.load(f)
    return SnapshotBackend.from_spec(
        cluster, overrides={k: [Observed(o) for o in v] for k, v in table.items()}
    )
"""


def cluster_docs() -> list[dict[str, Any]]:
    """x/a and x/b on n1, y/c on n2; y/c admits 80/TCP from the pod CIDR by ipBlock, which
    NPM matches for pods and Cilium does not (SEMANTICS D2): a predicted outage; and from an
    on-premises range, which both admit."""
    return [
        ns("x", team="a"),
        ns("y", team="b"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("x/a", "10.244.0.10", "n1", {"app": "a"}, [("http", 80, "TCP")]),
        pod("x/b", "10.244.0.11", "n1", {"app": "b"}, [("http", 8080, "TCP")]),
        pod("y/c", "10.244.1.10", "n2", {"app": "c"}, [("http", 80, "TCP")]),
        netpol(
            "y/from-pod-cidr",
            {
                "podSelector": {"matchLabels": {"app": "c"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        # and an on-premises range: outside the cluster, so probed from
                        # outside (an address in the pod CIDR is never outside)
                        "from": [
                            {"ipBlock": {"cidr": "10.244.0.0/16"}},
                            {"ipBlock": {"cidr": "192.168.0.0/16"}},
                        ],
                        "ports": [{"port": 80, "protocol": "TCP"}],
                    }
                ],
            },
        ),
    ]


@pytest.fixture
def suites(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "suites").mkdir()
    for name in ("__init__.py", "test_connectivity.py", "test_explicit.py", "test_lint.py"):
        shutil.copy(REPO / "suites" / name, pytester.path / "suites" / name)
    pytester.makeconftest(CONFTEST)
    (pytester.path / "cluster.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": cluster_docs()})
    )
    pytester.makeini(f"[pytest]\naddopts = {QUIET_PLUGINS}\n")
    return pytester


NPM = "file:cluster.yaml"
CILIUM = "file:cluster.yaml@cilium"


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest("suites/test_connectivity.py", "--cluster", *args)


def baseline(p: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (p.path / "reports" / "file-cluster" / "baseline.json").read_text()
    )
    return data


def parity(p: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (p.path / "reports" / "file-cluster" / "parity.json").read_text()
    )
    return data


def passed(result: pytest.RunResult) -> int:
    return result.parseoutcomes().get("passed", 0)


# --------------------------------------------------------------------------- options


def test_help_shows_every_option_in_one_group(suites: pytest.Pytester) -> None:
    result = suites.runpytest("--help")
    text = result.stdout.str()
    group = text[text.index("netparity: NetworkPolicy parity probes") :]
    group = group[: group.index("\n\n")]
    for option in (
        "--cluster=NAME",
        "--phase=auto|pre|post",
        "--baseline=FILE",
        "--target=cilium|cilium-1.16",
        "--accept=FILE",
        "--probes=FILE",
        "--probe-timeout=SECONDS",
        "--probe-retries=N",
        "--report-dir=DIR",
        "--force",
    ):
        assert option in group, option
    result.stdout.fnmatch_lines(["*netparity_probe_retries (string):*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--phase", "later"], "*--phase 'later' is not one of auto, pre, post*"),
        (["--probe-retries", "-1"], "*--probe-retries '-1' must be a whole number from 0 to 10*"),
        (["--probe-timeout", "0"], "*--probe-timeout '0' must be a number of seconds above 0*"),
        (["--target", "calico"], "*--target 'calico' is not a target dataplane*"),
        (["--baseline", "nope.json"], "*--baseline 'nope.json' does not exist*"),
        (["--force"], "*--force only applies with --phase pre*"),
        (["--phase", "post", "--force"], "*--force only applies with --phase pre*"),
        (["--accept", "none.yaml"], "*--accept 'none.yaml': no such file*"),
        (["--probes", "none.yaml"], "*--probes 'none.yaml': no such file*"),
    ],
)
def test_a_bad_option_is_a_usage_error_naming_the_value(
    suites: pytest.Pytester, args: list[str], message: str
) -> None:
    result = run(suites, NPM, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert not (suites.path / "reports").exists()


def test_a_bad_ini_twin_is_named_as_such(suites: pytest.Pytester) -> None:
    suites.makeini(f"[pytest]\naddopts = {QUIET_PLUGINS}\nnetparity_probe_retries = many\n")
    result = run(suites, NPM)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ini option netparity_probe_retries 'many' must be a whole number*"]
    )


def test_the_command_line_wins_over_the_ini_file(suites: pytest.Pytester) -> None:
    suites.makeini(
        f"[pytest]\naddopts = {QUIET_PLUGINS}\nnetparity_probe_retries = 3\nnetparity_probe_timeout = 7\n"
    )
    result = run(suites, NPM, "--probe-retries", "0")
    result.stdout.fnmatch_lines(["netparity probes: timeout 7s, 0 retries of each deny*"])


def test_options_without_a_cluster_are_refused(suites: pytest.Pytester) -> None:
    result = suites.runpytest("suites", "--phase", "pre")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--phase needs --cluster NAME*"])


def test_without_a_cluster_the_suites_skip(suites: pytest.Pytester) -> None:
    result = suites.runpytest("suites", "-rs")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*the netparity suites run with --cluster NAME*"])


def test_a_bad_cluster_spec_is_a_usage_error(suites: pytest.Pytester) -> None:
    result = run(suites, "file:cluster.yaml@calico")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown dataplane 'calico'*"])
    result = run(suites, "lab:Not_A_Name")
    result.stderr.fnmatch_lines(["*lab name 'Not_A_Name' must be 1 to 8 lowercase*"])


# --------------------------------------------------------------------------- header, pre


def test_the_header_says_cluster_backend_dataplane_phase_baseline_and_plan(
    suites: pytest.Pytester,
) -> None:
    result = run(suites, NPM)
    result.stdout.fnmatch_lines(
        [
            "netparity cluster: file:cluster (backend file, dataplane npm)",
            "netparity phase: pre (auto: this cluster has no baseline yet; this run records it)",
            "netparity baseline: reports/file-cluster/baseline.json (to be written)",
            "netparity plan: * probes for npm -> cilium (digest *); coverage: */* rules with an "
            "admit probe, */* with a deny probe, scenarios probed */*",
            "netparity probes: timeout 2s, 1 retry of each deny; reports in reports",
        ]
    )


def test_probing_happens_once_before_the_items_with_a_progress_line(
    suites: pytest.Pytester,
) -> None:
    result = run(suites, NPM)
    result.stdout.fnmatch_lines(["collected * items", "probing: */* (*s)", "retry 1: */* (*s)"])
    done = [line for line in result.stdout.lines if re.match(r"probing: \d+/\d+ \(", line)]
    assert len(done) == 1


def test_pre_passes_where_observations_match_and_records_the_baseline(
    suites: pytest.Pytester,
) -> None:
    result = run(suites, NPM)
    result.assert_outcomes(passed=passed(result))
    assert result.ret == 0
    base = baseline(suites)
    assert base["kind"] == "netparity.record" and base["phase"] == "pre"
    assert base["cluster"] == "file:cluster" and base["dataplane"] == "npm"
    assert len(base["probes"]) == passed(result) > 0
    records = sorted((suites.path / "reports" / "file-cluster").glob("record-pre-*.json"))
    assert len(records) == 1
    assert json.loads(records[0].read_text()) == base
    result.stdout.fnmatch_lines(
        [
            "*= netparity =*",
            f"pre: {len(base['probes'])} probes on npm: {len(base['probes'])} agree with the predictions",
            "record: reports/file-cluster/record-pre-*.json",
            "baseline: reports/file-cluster/baseline.json (written)",
        ]
    )


def test_a_second_pre_refuses_without_force_and_replaces_with_it(
    suites: pytest.Pytester,
) -> None:
    run(suites, NPM)
    first = baseline(suites)["time"]
    result = run(suites, NPM, "--phase", "pre")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*baseline reports/file-cluster/baseline.json already exists (recorded * on npm)*"]
    )
    result = run(suites, NPM, "--phase", "pre", "--force")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["netparity phase: pre (--phase pre --force: the baseline is replaced)"]
    )
    assert len(list((suites.path / "reports" / "file-cluster").glob("record-pre-*"))) == 2
    assert baseline(suites)["time"] >= first


def test_auto_on_the_same_dataplane_checks_and_keeps_the_baseline(
    suites: pytest.Pytester,
) -> None:
    run(suites, NPM)
    before = (suites.path / "reports" / "file-cluster" / "baseline.json").read_bytes()
    result = run(suites, NPM)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "netparity phase: check (auto: the baseline of * was recorded on npm and the cluster "
            "still runs npm: *the baseline is kept*",
            "baseline: reports/file-cluster/baseline.json (kept)",
        ]
    )
    assert (suites.path / "reports" / "file-cluster" / "baseline.json").read_bytes() == before
    assert list((suites.path / "reports" / "file-cluster").glob("record-check-*.json"))


def test_post_without_a_baseline_is_refused(suites: pytest.Pytester) -> None:
    result = run(suites, CILIUM, "--phase", "post")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--phase post needs a baseline, and there is none at *"])


def first_probe(p: pytest.Pytester, **where: Any) -> dict[str, Any]:
    for probe in baseline(p)["probes"]:
        if all(probe.get(k) == v for k, v in where.items()):
            return dict(probe)
    raise AssertionError(f"no probe with {where}")


def test_pre_fails_where_the_cluster_disagrees_with_the_model(suites: pytest.Pytester) -> None:
    run(suites, NPM)
    allowed = first_probe(suites, verdict="allow")
    (suites.path / "overrides.json").write_text(json.dumps({allowed["id"]: ["timeout"]}))
    result = run(suites, NPM, "--phase", "pre", "--force")
    assert result.ret == 1
    result.assert_outcomes(failed=1, passed=passed(result))
    result.stdout.fnmatch_lines(
        [
            "observed deny (timeout, then timeout), but the engine predicts allow under npm",
            "  why the engine says allow: *",
            f"  probe {allowed['id']} *",
        ]
    )


def test_an_error_is_never_a_deny_and_a_changing_verdict_is_flaky(
    suites: pytest.Pytester,
) -> None:
    run(suites, NPM)
    denied = first_probe(suites, verdict="deny")
    allowed = first_probe(suites, verdict="allow")
    (suites.path / "overrides.json").write_text(
        json.dumps({denied["id"]: ["error"], allowed["id"]: ["timeout", "connected"]})
    )
    result = run(suites, NPM, "--phase", "pre", "--force")
    result.assert_outcomes(failed=2, passed=passed(result))
    result.stdout.fnmatch_lines(
        [
            "ERROR: the probe could not run (forced by the override table); an error is never "
            "counted as a deny",
        ]
    )
    result.stdout.fnmatch_lines(
        ["FLAKY: the verdict changed between tries: timeout, then connected"]
    )
    probes = {p["id"]: p for p in baseline(suites)["probes"]}
    assert probes[denied["id"]]["verdict"] == "error"
    assert [t["observed"] for t in probes[denied["id"]]["observed"]] == ["error", "error"]
    assert probes[allowed["id"]]["verdict"] == "flaky"


def test_probe_retries_zero_believes_the_first_deny(suites: pytest.Pytester) -> None:
    result = run(suites, NPM, "--probe-retries", "0")
    assert "retry 1:" not in result.stdout.str()
    denied = first_probe(suites, verdict="deny")
    assert len(denied["observed"]) == 1


# --------------------------------------------------------------------------- post


def test_post_passes_same_and_fails_predicted_changes_with_their_scenario(
    suites: pytest.Pytester,
) -> None:
    run(suites, NPM)
    result = run(suites, CILIUM)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "netparity phase: post (auto: the baseline of * was recorded on npm, the cluster now "
            "runs cilium)",
        ]
    )
    doc = parity(suites)
    counts = doc["counts"]
    assert counts["predicted"] >= 1
    assert counts["lost"] == counts["gained"] == counts["new"] == counts["missing"] == 0
    result.assert_outcomes(failed=counts["predicted"], passed=counts["same"])
    predicted = [p for p in doc["probes"] if p["status"] == "predicted"]
    assert all(p["scenario"] for p in predicted)
    result.stdout.fnmatch_lines(
        [
            "LOST: allowed in the baseline (npm), denied now (cilium)",
            "  predicted by the engine for this migration: cause ipblock-pods (D2)*(planned for scenario ipblock-pods*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*= netparity =*",
            f"parity BROKEN: {counts['same']} same, {counts['predicted']} predicted (npm -> cilium)",
            # by cause: the probe that flips through ipBlock and lb-in-cluster together counts
            # under each
            f"  predicted: {counts['predicted']} (ipblock-pods 2, external-ingress 1, lb-in-cluster 1)",
            "record: reports/file-cluster/record-post-*.json",
            "parity: reports/file-cluster/parity.json",
        ]
    )


def test_post_fails_a_change_nobody_predicted_as_such(suites: pytest.Pytester) -> None:
    run(suites, NPM)
    steady = next(
        p
        for p in baseline(suites)["probes"]
        if p["verdict"] == "allow" and p["predicted"]["cilium"]["decision"] == "allow"
    )
    (suites.path / "overrides.json").write_text(json.dumps({steady["id"]: ["timeout"]}))
    result = run(suites, CILIUM)
    assert parity(suites)["counts"]["lost"] == 1
    result.stdout.fnmatch_lines(
        [
            "LOST: allowed in the baseline (npm), denied now (cilium)",
            "  NOT predicted: the engine expected allow under npm and allow under cilium*",
        ]
    )


def test_an_accepted_change_passes_and_an_entry_without_reason_is_refused(
    suites: pytest.Pytester,
) -> None:
    run(suites, NPM)
    run(suites, CILIUM)
    changed = [p for p in parity(suites)["probes"] if p["status"] == "predicted"]
    accept = suites.path / "accept.yaml"
    accept.write_text(yaml.safe_dump([{"id": p["id"], "reason": "known: D2"} for p in changed]))
    result = run(suites, CILIUM, "--accept", "accept.yaml")
    assert result.ret == 0
    result.assert_outcomes(passed=passed(result))
    assert parity(suites)["counts"]["accepted"] == len(changed)
    result.stdout.fnmatch_lines(["parity held: * same, * accepted (npm -> cilium)"])

    accept.write_text(yaml.safe_dump([{"id": changed[0]["id"]}]))
    result = run(suites, CILIUM, "--accept", "accept.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*accept.yaml: entry #1: field reason: is required for *"])


def test_a_baseline_of_another_cluster_is_refused(suites: pytest.Pytester) -> None:
    run(suites, NPM)
    shutil.copy(suites.path / "cluster.yaml", suites.path / "other.yaml")
    result = run(
        suites,
        "file:other.yaml@cilium",
        "--baseline",
        "reports/file-cluster/baseline.json",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*baseline reports/file-cluster/baseline.json belongs to cluster 'file:cluster', not "
            "'file:other'*"
        ]
    )


def test_a_corrupt_baseline_is_refused_with_one_sentence(suites: pytest.Pytester) -> None:
    folder = suites.path / "reports" / "file-cluster"
    folder.mkdir(parents=True)
    (folder / "baseline.json").write_text('{"kind": "netparity.record", "schema_version": 7}')
    result = run(suites, CILIUM)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baseline.json has record schema version 7*"])


def test_items_carry_junit_properties(suites: pytest.Pytester) -> None:
    run(suites, NPM)
    result = run(suites, CILIUM, "--junitxml", "junit.xml")
    xml = (suites.path / "junit.xml").read_text()
    for name in (
        "netparity.probe_id",
        "netparity.source",
        "netparity.destination",
        "netparity.port",
        "netparity.protocol",
        "netparity.path_kind",
        "netparity.observed",
        "netparity.baseline",
        "netparity.predicted",
        "netparity.scenario",
    ):
        assert f'name="{name}"' in xml, name
    assert xml.count('name="netparity.probe_id"') == sum(result.parseoutcomes().values())


def test_explicit_probes_get_their_own_items_and_expectations(suites: pytest.Pytester) -> None:
    (suites.path / "probes.yaml").write_text(
        "probes:\n"
        "  - from: x/a\n    to: y/c\n    port: 80\n    expect: {npm: allow, cilium: deny}\n"
        "  - from: x/b\n    to: y/c\n    port: 8080\n    expect: allow\n"
    )
    result = suites.runpytest(
        "suites/test_explicit.py", "--cluster", NPM, "--probes", "probes.yaml"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["the probe file expects allow under npm; observed deny*"])
    result = suites.runpytest(
        "suites/test_explicit.py", "--cluster", CILIUM, "--probes", "probes.yaml"
    )
    # the expected change is accepted by the file's expectation; the wrong one still fails
    result.assert_outcomes(passed=1, failed=1)
    assert parity(suites)["counts"]["accepted"] == 1


def test_a_bad_probe_file_is_a_usage_error(suites: pytest.Pytester) -> None:
    (suites.path / "probes.yaml").write_text(
        "probes:\n  - from: x/nope\n    to: y/c\n    port: 80\n"
    )
    result = suites.runpytest("suites", "--cluster", NPM, "--probes", "probes.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*probes.yaml: probe #1: field from: names pod 'x/nope'*"])


def test_item_ids_are_readable_unique_and_stable(suites: pytest.Pytester) -> None:
    first = suites.runpytest(
        "suites/test_connectivity.py", "--cluster", NPM, "--collect-only", "-q"
    )
    second = suites.runpytest(
        "suites/test_connectivity.py", "--cluster", NPM, "--collect-only", "-q"
    )
    ids = [line for line in first.stdout.lines if "::test_connectivity[" in line]
    assert ids and ids == [line for line in second.stdout.lines if "::test_connectivity[" in line]
    assert len(set(ids)) == len(ids)
    assert any("x[app=a] -> y[app=c] 80/TCP pod-pod" in i or "-> " in i for i in ids)
    assert not (suites.path / "reports").exists()  # collecting only probes nothing


# --------------------------------------------------------------------------- xdist


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """nodeid -> outcome, from the `-rA` short summary."""
    out = {}
    for line in result.stdout.lines:
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "SKIPPED", "XFAIL") and "::test_" in rest:
            out[rest.split(" - ")[0]] = word
    return out


def test_xdist_gives_the_same_outcomes_as_one_process(suites: pytest.Pytester) -> None:
    suites.runpytest("suites/test_connectivity.py", "--cluster", NPM)
    single = suites.runpytest_subprocess("suites", "--cluster", CILIUM, "-rA", "-p", "no:randomly")
    parity_single = parity(suites)
    spread = suites.runpytest_subprocess(
        "suites", "--cluster", CILIUM, "-rA", "-n", "2", "-p", "no:randomly"
    )
    parity_spread = parity(suites)
    assert single.parseoutcomes() == spread.parseoutcomes()
    assert outcomes(single) == outcomes(spread) != {}
    assert parity_single["counts"] == parity_spread["counts"]
    spread.stdout.fnmatch_lines(["netparity phase: post*", "*2 workers*", "probing: *"])
    done = [line for line in spread.stdout.lines if re.match(r"probing: \d+/\d+ \(", line)]
    assert len(done) == 1


def test_each_lint_finding_is_an_expected_failure_with_its_fix(suites: pytest.Pytester) -> None:
    result = suites.runpytest("suites/test_lint.py", "--cluster", NPM, "-rx")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "XFAIL suites/test_lint.py::test_lint?ipblock-pods NetworkPolicy y/from-pod-cidr? - "
            "migration risk (ipblock-pods, outage): *",
            "  fix (*): *",
        ]
    )


def test_kubernetes_options_are_checked_before_anything_runs(suites: pytest.Pytester) -> None:
    result = suites.runpytest("suites", "--cluster", "lab:np", "--dataplane", "cilium")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--dataplane applies to a Kubernetes cluster*"])
    result = suites.runpytest("suites", "--cluster", "prod", "--max-parallel", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--max-parallel '0' must be a whole number from 1 to 256*"])
    result = suites.runpytest("suites", "--cluster", "prod", "--dataplane", "calico")
    result.stderr.fnmatch_lines(["*--dataplane 'calico' is not one of*"])
    result = suites.runpytest("suites", "--cluster", "prod", "--max-duration", "10")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--max-duration '10' must be a number of seconds from 60*"])
    result = suites.runpytest("suites", "--cluster", "prod", "--kube-qps", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--kube-qps '0' must be a number of requests a second*"])


def test_a_probe_the_backend_cannot_run_is_skipped_and_kept_apart_in_the_record(
    suites: pytest.Pytester,
) -> None:
    run(suites, NPM)
    probe = first_probe(suites, verdict="allow")
    (suites.path / "overrides.json").write_text(json.dumps({probe["id"]: ["not-run", "not-run"]}))
    result = run(suites, NPM, "--phase", "pre", "--force", "-rs")
    assert result.ret == 0
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 1 and "failed" not in outcomes
    result.stdout.fnmatch_lines(["SKIPPED * not run on the file backend: *"])
    base = baseline(suites)
    assert probe["id"] not in {p["id"] for p in base["probes"]}
    assert [p["id"] for p in base["not_run"]] == [probe["id"]]
    assert base["not_run"][0]["reason"] and base["not_run"][0]["verdict"] == "not-run"
    # After the upgrade the same probe cannot run either: it passes, and is counted and shown.
    result = run(suites, CILIUM, "--junitxml", "junit.xml")
    doc = parity(suites)
    assert doc["counts"]["new"] == 0 and doc["counts"]["missing"] == 0
    assert doc["counts"]["not-run"] == 1 and len(doc["probes"]) == sum(doc["counts"].values())
    (p,) = [x for x in doc["probes"] if x["id"] == probe["id"]]
    assert p["status"] == "not-run" and not p["failed"]
    assert result.ret == 1  # the predicted changes, not the probe neither run could run
    result.assert_outcomes(
        failed=doc["counts"]["predicted"], passed=doc["counts"]["same"], skipped=1
    )
    result.stdout.fnmatch_lines(
        [
            "parity BROKEN: * 1 not-run (run by neither: the backend cannot run them) *",
            "  not-run: 1 (*)",
            f"    {probe['id']} *: not-run: neither run could run it (not run: *",
        ]
    )
    xml = (suites.path / "junit.xml").read_text()
    assert '<property name="netparity.status" value="not-run" />' in xml


def test_a_probe_observed_before_and_not_run_after_fails_the_post_run(
    suites: pytest.Pytester,
) -> None:
    run(suites, NPM)
    steady = next(
        p
        for p in baseline(suites)["probes"]
        if p["verdict"] == "allow" and p["predicted"]["cilium"]["decision"] == "allow"
    )
    (suites.path / "overrides.json").write_text(json.dumps({steady["id"]: ["not-run"]}))
    result = run(suites, CILIUM, "--junitxml", "junit.xml")
    assert result.ret == 1
    doc = parity(suites)
    assert doc["counts"]["missing"] == 1 and doc["held"] is False
    result.assert_outcomes(failed=doc["counts"]["predicted"] + 1, passed=doc["counts"]["same"])
    result.stdout.fnmatch_lines(
        [
            "MISSING: observed allow in the baseline (npm), not checked now (cilium): not run: *",
            "  nobody checked this connection after the upgrade: it fails the gate unless an "
            "accept entry covers it",
        ]
    )
    result.stdout.fnmatch_lines(["parity BROKEN: * 1 missing (*", "  missing: 1 (*"])
    xml = (suites.path / "junit.xml").read_text()
    case = xml[xml.index(steady["title"].replace(">", "&gt;")) :]
    case = case[: case.index("</testcase>")]
    assert "<failure" in case and "MISSING: observed allow" in case
    accept = suites.path / "accept.yaml"
    accept.write_text(yaml.safe_dump([{"id": steady["id"], "reason": "checked by hand"}]))
    result = run(suites, CILIUM, "--accept", "accept.yaml")
    assert parity(suites)["counts"]["missing"] == 0
    result.assert_outcomes(failed=doc["counts"]["predicted"], passed=doc["counts"]["same"] + 1)


def test_a_baseline_probe_the_post_plan_no_longer_has_is_a_failing_item(
    suites: pytest.Pytester,
) -> None:
    run(suites, NPM)
    gone = [p for p in baseline(suites)["probes"] if p["source_class"] == "x[app=a]"]
    assert gone
    docs = [
        d
        for d in cluster_docs()
        if not (d["kind"] == "Pod" and d["metadata"].get("namespace") == "x")
    ]
    (suites.path / "cluster.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs})
    )
    result = run(suites, CILIUM, "-rf", "--junitxml", "junit.xml")
    assert result.ret == 1
    doc = parity(suites)
    assert doc["counts"]["missing"] == len(gone)
    result.stdout.fnmatch_lines(
        [
            "MISSING: observed * in the baseline (npm), not checked now (cilium): not planned: "
            "no probe of this run's plan has its source class x?app=a? (its pods are gone or "
            "relabelled)",
        ]
    )
    failed = [line for line in result.stdout.lines if line.startswith("FAILED ")]
    for p in gone:
        assert any(p["title"] in line for line in failed), p["title"]
    xml = (suites.path / "junit.xml").read_text()
    assert xml.count('value="not planned"') == len(gone)


def test_a_predicted_change_that_did_not_happen_passes_and_is_counted(
    suites: pytest.Pytester,
) -> None:
    run(suites, NPM)
    run(suites, CILIUM)
    changed = next(p for p in parity(suites)["probes"] if p["status"] == "predicted")
    tries = ["connected"] if changed["before"] == "allow" else ["timeout", "timeout"]
    (suites.path / "overrides.json").write_text(json.dumps({changed["id"]: tries}))
    result = run(suites, CILIUM)
    doc = parity(suites)
    assert doc["counts"]["unrealized"] == 1
    (p,) = [x for x in doc["probes"] if x["id"] == changed["id"]]
    assert p["status"] == "unrealized" and p["change"] == "same" and not p["failed"]
    result.assert_outcomes(failed=doc["counts"]["predicted"], passed=doc["counts"]["same"] + 1)
    result.stdout.fnmatch_lines(
        [
            "parity BROKEN: * 1 unrealized (predicted to change, did not), *",
            "  unrealized: 1 (*, predicted to change, did not)",
        ]
    )


def test_a_pre_probe_the_engine_cannot_predict_is_an_expected_failure_and_counted(
    suites: pytest.Pytester,
) -> None:
    docs = [
        *cluster_docs(),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "y"},
            "spec": {
                "type": "ClusterIP",
                "selector": {"app": "c"},
                "clusterIP": "10.0.0.10",
                "ports": [{"port": 80, "targetPort": "nope", "protocol": "TCP"}],
            },
        },
    ]
    (suites.path / "cluster.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs})
    )
    (suites.path / "probes.yaml").write_text(
        "probes:\n  - from: x/a\n    to: svc:y/web\n    port: 80\n"
    )
    args = ("suites/test_explicit.py", "--cluster", NPM, "--probes", "probes.yaml", "-rx")
    suites.runpytest(*args)
    (unknown,) = [p for p in baseline(suites)["probes"] if p["intent"] == "explicit"]
    assert unknown["predicted"]["npm"]["decision"] == "unknown"
    (suites.path / "overrides.json").write_text(json.dumps({unknown["id"]: ["connected"]}))
    result = suites.runpytest(*args, "--phase", "pre", "--force", "--junitxml", "junit.xml")
    assert result.ret == 0
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "XFAIL *test_explicit* - unpredicted: observed allow (connected); the engine cannot "
            "predict it under npm (*no port named 'nope'*), so nothing checked this observation",
        ]
    )
    result.stdout.fnmatch_lines(
        ["pre: * probes on npm: * 1 cannot be predicted by the engine (xfail)*"]
    )
    xml = (suites.path / "junit.xml").read_text()
    assert 'type="pytest.xfail"' in xml and 'value="unpredicted"' in xml


def test_no_explicit_probes_no_explicit_item(suites: pytest.Pytester) -> None:
    result = suites.runpytest("suites", "--cluster", NPM, "-rA", "--junitxml", "junit.xml")
    assert "NOTSET" not in result.stdout.str()
    xml = (suites.path / "junit.xml").read_text()
    assert "NOTSET" not in xml and "test_explicit" not in xml
    assert "test_connectivity" in xml and "test_lint" in xml
    outcomes = result.parseoutcomes()
    assert "skipped" not in outcomes and outcomes["xfailed"] == 1
    collected = suites.runpytest("suites", "--cluster", NPM, "--collect-only", "-q")
    assert not [line for line in collected.stdout.lines if "test_explicit" in line]


def test_a_bad_external_ip_is_a_usage_error(suites: pytest.Pytester) -> None:
    result = suites.runpytest("suites", "--cluster", NPM, "--external-ip", "10.0.0.300")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--external-ip '10.0.0.300' is not an IPv4 address*"])


@pytest.mark.parametrize("where", ["a-file", "under-a-file", "junit-under-a-file"])
def test_an_unwritable_report_place_is_a_usage_error_before_anything_is_probed(
    suites: pytest.Pytester, where: str
) -> None:
    (suites.path / "blocker").write_text("a regular file\n")
    args = {
        "a-file": ["--report-dir", "blocker"],
        "under-a-file": ["--report-dir", "blocker/reports"],
        "junit-under-a-file": ["--junitxml", "blocker/junit.xml"],
    }[where]
    result = run(suites, NPM, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cannot be written*blocker*is a file, not a folder*"])
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    result.stdout.no_fnmatch_line("*passed*")
    assert not (suites.path / "reports").exists() or where != "a-file"
    assert (suites.path / "blocker").read_text() == "a regular file\n"
