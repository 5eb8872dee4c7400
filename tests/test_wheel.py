"""An installed netparity carries the probe agent and the manifests (probes/) as package
data: build the wheel from a copy of the checkout, install it in a fresh virtual
environment outside the checkout, and render a twin pod there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from (everything else in the checkout is not packaged).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "netparity", "probes", "examples", "suites")

RENDER = r"""
import json, sys
import netparity
from netparity.kube.render import (
    agent_source, anchor_manifest, probes_dir, rbac_source, serve_ports, twin_manifest,
)
from netparity.model.objects import ContainerPort, Pod, frozen_labels

pod = Pod(namespace="shop", name="web-1", labels=frozen_labels({"app": "web"}),
          node_name="node-1", ports=(ContainerPort(name="http", port=8080),))
twin = twin_manifest(run_id="20260101-120000-abcd", pod=pod, anchor_uid="u",
                     image="python:3.12-slim", ports=serve_ports(pod))
anchor = anchor_manifest(run_id="20260101-120000-abcd", namespace="shop", started="t")
print(json.dumps({
    "netparity": netparity.__file__,
    "probes": str(probes_dir().joinpath("agent.py")),
    "twin": twin,
    "agent": agent_source(),
    "anchor_agent": anchor["data"]["agent.py"],
    "rbac": rbac_source(),
}))
"""


def _run(argv: list[str], cwd: Path, env: dict[str, str], code: int = 0) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == code, (
        f"{argv[:4]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout + done.stderr


@pytest.mark.timeout(600)
def test_an_installed_wheel_renders_a_twin_from_its_own_probes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path / "dist"
    # Build isolation fetches the build requirements (setuptools, wheel) from the index.
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        tmp_path,
        env,
    )
    (wheel,) = dist.glob("netparity-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        tmp_path,
        env,
    )
    shutil.rmtree(src)  # nothing of a checkout is left to import from
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = json.loads(_run([str(python), "-c", RENDER], work, env))

    site = venv / "lib"
    assert Path(out["netparity"]).is_relative_to(site), out["netparity"]
    assert Path(out["probes"]).is_relative_to(site), out["probes"]
    assert not Path(out["netparity"]).is_relative_to(REPO)
    # the same files as the checkout's probes/
    assert out["agent"] == (REPO / "probes" / "agent.py").read_text(encoding="utf-8")
    assert out["anchor_agent"] == out["agent"]
    assert out["rbac"] == (REPO / "probes" / "rbac.yaml").read_text(encoding="utf-8")
    twin = out["twin"]
    assert twin["kind"] == "Pod" and twin["metadata"]["labels"]["app"] == "web"
    assert twin["spec"]["containers"][0]["readinessProbe"]["exec"]["command"][2] == "health"

    # the example and the suites travel as package data: lint refuses without a snapshot
    # and names the packaged example; the example lints; the packaged suites run (the
    # demo's pytest step, against the example as a file cluster)
    refused = _run([str(python), "-m", "netparity", "lint"], work, env, code=2)
    example = refused.strip().rsplit(" ", 1)[-1]
    assert Path(example).is_relative_to(site) and Path(example).name == "aks-migration.yaml"
    assert not list(work.iterdir())  # the refusal wrote nothing
    linted = _run(
        [str(python), "-m", "netparity", "lint", example, "--format", "json"], work, env, code=1
    )
    assert json.loads(linted[: linted.rindex("}") + 1])["summary"]["findings"] > 0
    where = _run(
        [str(python), "-c", "from netparity.example import suites_path; print(suites_path())"],
        work,
        env,
    ).strip()
    assert Path(where).is_relative_to(site) and (Path(where) / "test_lint.py").is_file()
    ran = _run(
        [
            str(python),
            "-m",
            "pytest",
            "-p",
            "netparity.plugin",
            where,
            "-q",
            "-p",
            "no:cacheprovider",
            "--cluster",
            f"file:{example}",
            "--phase",
            "pre",
            "--report-dir",
            str(work / "reports"),
            "-k",
            "lint",
        ],
        work,
        env,
        code=0,
    )
    assert "xfailed" in ran, ran[-2000:]
