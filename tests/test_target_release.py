"""`--target cilium` means the release the cluster runs, where that is known (ISSUES #20):
a kube-system/cilium DaemonSet in the snapshot (lint, plan) or the live detection (the
suites); else the newest that AKS runs. Another target is taken as given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from netparity.cli import main
from netparity.engine.dataplane import NEWEST_TARGET, target_for

from lab_fixtures import LabFactory, lab_factory  # noqa: F401


def daemonset(name: str, container: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": name}},
            "template": {
                "metadata": {"labels": {"k8s-app": name}},
                "spec": {
                    "hostNetwork": True,
                    "containers": [{"name": container, "image": image}],
                },
            },
        },
    }


def folder(tmp_path: Path, name: str, *extra: dict[str, Any]) -> Path:
    ranges = {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]}],
    }
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "c", "image": "x", "ports": [{"containerPort": 8050}]}
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "ranges", "namespace": "shop"},
            "spec": ranges,
        },
        *extra,
    ]
    out = tmp_path / name
    out.mkdir()
    for i, doc in enumerate(docs):
        (out / f"{i:02d}.yaml").write_text(yaml.safe_dump(doc))
    return out


def lint(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    main(["lint", *argv, "--format", "json"])
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_the_newest_target_stands_for_the_detected_cilium_release_and_nothing_else() -> None:
    assert NEWEST_TARGET == "cilium"
    assert target_for("cilium", "cilium-1.19") == "cilium-1.19"
    assert target_for("cilium", "cilium-1.16") == "cilium-1.16"
    assert target_for("cilium", "cilium") == "cilium"
    assert target_for("cilium", None) == "cilium"
    assert target_for("cilium", "npm") == "cilium"  # not a Cilium release: the newest
    assert target_for("cilium", "unknown") == "cilium"
    assert target_for("cilium-1.16", "cilium-1.19") == "cilium-1.16"  # named: as given


def test_lint_and_plan_take_the_release_of_the_snapshots_cilium_daemonset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = "mcr.microsoft.com/oss/cilium/cilium:v{}@sha256:00"
    new = folder(tmp_path, "c119", daemonset("cilium", "cilium-agent", image.format("1.19.1")))
    for argv in ((str(new),), (str(new), "--target", "cilium")):
        out = lint(capsys, *argv)
        assert out["target"] == "cilium-1.19", argv
        said = [n for n in out["notes"] if n.startswith("target cilium-1.19")]
        assert len(said) == 1 and "Cilium 1.19.1" in said[0]
    out = lint(capsys, str(new), "--target", "cilium-1.16")
    assert out["target"] == "cilium-1.16"  # a named release is taken as given
    # the detected release beats the Kubernetes version's guess: endPort is cut under 1.16
    old = folder(tmp_path, "c116", daemonset("cilium", "cilium-agent", image.format("1.16.6")))
    out = lint(capsys, str(old))
    assert out["target"] == "cilium-1.16" and "endport" in out["summary"]["by_kind"]
    # NPM's DaemonSet says nothing about the target: the newest, as before
    npm = folder(tmp_path, "npm", daemonset("azure-npm", "azure-npm", "mcr/azure-npm:v1.6.0"))
    assert lint(capsys, str(npm), "--target", "cilium")["target"] == "cilium"
    # plan says it in one line and plans for the detected release
    main(["plan", str(new), "--format", "json"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["target"] == "cilium-1.19"
    lines = [x for x in captured.err.splitlines() if x.startswith("target cilium-1.19")]
    assert len(lines) == 1


def test_the_suites_plan_for_the_release_the_lab_runs(
    lab_factory: LabFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Upgraded to cilium-1.19, the lab reports that release; the suites' default target
    (`cilium`) then stands for it, and the run's header says so in one line."""
    import subprocess
    import sys

    from netparity.model.snapshot import snapshot_from_dicts

    from builders import netpol, node, ns, pod

    http = [("http", 8080, "TCP")]
    snap = snapshot_from_dicts(
        [
            ns("a"),
            node("n1", "10.224.0.4", "10.244.0.0/24"),
            pod("a/client", "10.244.0.10", "n1", {"app": "client"}, http),
            pod("a/web", "10.244.0.11", "n1", {"app": "web"}, http),
            netpol("a/web", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}),
        ]
    )
    lab = lab_factory(snap, dataplane="npm")
    lab_factory.upgrade(lab, "cilium-1.19")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "suites/",
        "--cluster",
        f"lab:{lab.name}",
        "--report-dir",
        str(tmp_path),
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "--tb=no",
    ]
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    lines = [x for x in out.splitlines() if "target: cilium-1.19" in x]
    assert len(lines) == 1, out[:4000]
    assert "-> cilium-1.19" in out, out[-3000:]  # the plan line: current -> target
