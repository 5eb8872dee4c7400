"""The project's own gates: the layer contract, lint, format and strict types.

They run the same tools a developer runs, so a change that breaks the pure core's
layering (an import of kubernetes, pytest, jinja2 or subprocess from the model, engine
or planner) or the types fails the suite, not just a reviewer's eye.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["netparity", "tests", "bench", "probes", "suites"]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed (bash scripts/setup installs the dev tools)")
    return found


def test_the_pure_core_keeps_its_layer_contract() -> None:
    result = run(tool("lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr
    # every contract of pyproject.toml (the pure core, the neutral facts, the pure lab
    # addressing...) is checked and kept
    with (ROOT / "pyproject.toml").open("rb") as f:
        contracts = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    assert len(contracts) >= 3
    assert f"{len(contracts)} kept, 0 broken" in result.stdout


def test_ruff_finds_nothing_and_the_code_is_formatted() -> None:
    check = run(sys.executable, "-m", "ruff", "check", *PATHS)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = run(sys.executable, "-m", "ruff", "format", "--check", *PATHS)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_passes() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
