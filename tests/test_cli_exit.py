"""The process entry (`netparity`, `python -m netparity`) ends `lint`, `plan` and `predict`
without taking their heap apart (`cli._exit_now`): the same output, exit code and exit
handlers as a normal end; other commands, and `main()` called in a process, end as usual."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

from netparity.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "aks-migration.yaml"

_RUN = """
import atexit, sys
atexit.register(lambda: print("exit handler ran", file=sys.stderr))
sys.argv = ["netparity", *sys.argv[1:]]
from netparity.cli import entry
entry()
"""


def _entry(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RUN, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )


def _in_process(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_lint_ends_fast_with_the_same_output_code_and_exit_handlers() -> None:
    argv = ("lint", str(EXAMPLE), "--format", "json", "--no-progress")
    done = _entry(*argv)
    code, text = _in_process(*argv)
    assert done.returncode == code == 1  # findings
    assert json.loads(done.stdout) == json.loads(text)
    assert done.stdout == text  # flushed whole, byte for byte
    assert "exit handler ran" in done.stderr


def test_plan_ends_fast_and_main_in_a_process_returns() -> None:
    argv = ("plan", str(EXAMPLE), "--format", "json")
    done = _entry(*argv)
    code, text = _in_process(*argv)  # would end this test process if it exited
    assert done.returncode == code == 0
    assert json.loads(done.stdout)["probes"] == json.loads(text)["probes"]
    assert "exit handler ran" in done.stderr


def test_a_failed_command_ends_as_usual() -> None:
    done = _entry("lint", str(ROOT / "no-such-snapshot.yaml"))
    assert done.returncode == 2
    assert "netparity:" in done.stderr and "exit handler ran" in done.stderr
