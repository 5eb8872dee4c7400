"""netparity among the pytest plugins teams already use (issue #10).

pytest-retry, pytest-rerunfailures, pytest-timeout, pytest-randomly and pytest-xdist are
installed into a virtual environment of this module's own, made in a temporary folder:
pytest-randomly reorders every test of a session once it is installed, so it must never
enter the main test environment. The environment sees the main one's packages
(`--system-site-packages`), so only the plugins it lacks are downloaded, from PyPI, with
pip's cache off: nothing is kept outside the temporary folder. Where the environment
cannot be made, the tests fail; they never skip.

In it, `pytest suites/ --cluster file:...` (a dry run) must start, and a pre run under npm
and a post run under cilium must give the same items, outcomes, records, parity and exit
codes plainly, under pytest-randomly, under pytest-xdist and with pytest-retry's and
pytest-rerunfailures' retries on.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import netparity.plugin

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "aks-migration.yaml"
PROBES = REPO / "examples" / "probes.yaml"

# distribution name -> the name `pytest -VV` lists it under
PLUGINS = {
    "pytest-retry": "pytest-retry",
    "pytest-rerunfailures": "pytest-rerunfailures",
    "pytest-timeout": "pytest-timeout",
    "pytest-randomly": "pytest-randomly",
    "pytest-xdist": "pytest-xdist",
}
PIP_SECONDS = 300
RUN_SECONDS = 180


# --------------------------------------------------------------------------- the environment


@dataclass(frozen=True, slots=True, kw_only=True)
class Venv:
    python: Path
    env: dict[str, str]

    def run(self, args: list[str], cwd: Path, timeout: float = RUN_SECONDS) -> Any:
        return subprocess.run(
            [str(self.python), *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _clean_env() -> dict[str, str]:
    """This process's environment without what pytest (or xdist) set for the outer run,
    with the worktree's netparity first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("PYTHONPATH", None)
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PIP_NO_CACHE_DIR"] = "1"  # cache nothing outside the temporary folder
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _fail(what: str, proc: Any) -> None:
    pytest.fail(
        f"coexistence venv: {what} failed (exit {proc.returncode}); PyPI must be reachable "
        f"for this test:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A virtual environment with the five plugins; the main environment is left alone."""
    root = tmp_path_factory.mktemp("coexistence-venv")
    env = _clean_env()
    # --without-pip: no ensurepip needed (Debian's python3 lacks it without python3-venv);
    # pip itself comes from the main environment, and installs into this one.
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if made.returncode != 0:
        _fail("python3 -m venv", made)
    python = root / "bin" / "python"
    # Where the main interpreter is itself a venv, --system-site-packages would reach past
    # it: add its site-packages (and their .pth files, editable installs) explicitly.
    if sys.prefix != sys.base_prefix:
        site_dir = Path(
            sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)})
        )
        site_dir.mkdir(parents=True, exist_ok=True)
        outer = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
        (site_dir / "_netparity_outer.pth").write_text(
            "".join(f"import site; site.addsitedir({d!r})\n" for d in outer)
        )
    v = Venv(python=python, env=env)
    pip = v.run(["-m", "pip", "install", "--quiet", *PLUGINS], cwd=root, timeout=PIP_SECONDS)
    if pip.returncode != 0:
        _fail("pip install " + " ".join(PLUGINS), pip)
    version = v.run(["-m", "pytest", "-VV", "-p", "no:cacheprovider"], cwd=root)
    listed = version.stdout + version.stderr
    absent = [name for name in PLUGINS.values() if f"{name}-" not in listed]
    if version.returncode != 0 or absent:
        pytest.fail(
            f"coexistence venv: pytest -VV does not list {absent} (exit {version.returncode}):"
            f"\n{listed[-3000:]}",
            pytrace=False,
        )
    return v


def test_pytest_randomly_stays_out_of_the_main_environment() -> None:
    """It reorders every test of every session once installed (ISSUES.md #10)."""
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("pytest-randomly")


# --------------------------------------------------------------------------- names


class _Recorder:
    """Stands in for pytest's parser: records the option strings and ini names we add."""

    def __init__(self) -> None:
        self.options: list[str] = []
        self.ini: list[str] = []

    def getgroup(self, name: str, description: str = "") -> _Recorder:
        return self

    def addoption(self, *opts: str, **attrs: Any) -> None:
        self.options.extend(opts)

    def addini(self, name: str, help: str, **attrs: Any) -> None:
        self.ini.append(name)


def _help_names(text: str) -> tuple[set[str], set[str]]:
    """The option strings and ini names that `pytest --help` lists."""
    options_part, _, ini_part = text.partition("[pytest] configuration options")
    options: set[str] = set()
    for line in options_part.splitlines():
        if re.match(r"^  -", line):
            head = re.split(r"\s{2,}", line.strip())[0]
            options.update(re.findall(r"(?<![\w=-])(--?[A-Za-z][\w-]*)", head))
    ini = set(re.findall(r"(?m)^  ([\w.-]+) \(\w+\):", ini_part))
    return options, ini


def test_no_option_or_ini_name_of_ours_is_taken_by_the_five(venv: Venv, tmp_path: Path) -> None:
    ours = _Recorder()
    netparity.plugin.pytest_addoption(ours)  # type: ignore[arg-type]
    assert "--probe-retries" in ours.options and "--retries" not in ours.options
    assert "netparity_probe_retries" in ours.ini

    bare = venv.run(["-m", "pytest", "--help", "-p", "no:cacheprovider"], cwd=tmp_path)
    assert bare.returncode == 0, bare.stderr
    theirs, their_ini = _help_names(bare.stdout)
    # the five are loaded and the help was read: pytest-retry's --retries, xdist's -n, ...
    assert {"--retries", "--reruns", "--timeout", "--randomly-seed", "-n"} <= theirs
    assert {"retries", "reruns", "timeout"} <= their_ini
    assert not set(ours.options) & theirs, "option taken by another plugin"
    assert not set(ours.ini) & their_ini, "ini name taken by another plugin"

    # and pytest starts with netparity among them, each --retries where it belongs
    both = venv.run(
        ["-m", "pytest", "--help", "-p", "no:cacheprovider", "-p", "netparity.plugin"],
        cwd=tmp_path,
    )
    assert both.returncode == 0, both.stderr[-3000:]
    group = both.stdout[both.stdout.index("netparity: NetworkPolicy parity probes") :]
    group = group[: group.index("\n\n")]
    assert "--probe-retries=N" in group and not re.search(r"(?m)^  --retries", group)
    assert re.search(r"(?m)^  --retries=", both.stdout)


# --------------------------------------------------------------------------- runs


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's checkout: the suites, the conftest that loads netparity, a snapshot."""
    shutil.copytree(
        REPO / "suites", tmp_path / "suites", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["netparity.plugin"]\n')
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    shutil.copy(EXAMPLE, tmp_path / "cluster.yaml")
    shutil.copy(PROBES, tmp_path / "probes.yaml")
    return tmp_path


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    exit_code: int
    order: list[str]  # the items in the order they ran (JUnit)
    outcomes: dict[str, Any]  # item -> (outcome, properties)
    record: Any
    parity: Any
    output: str


TIME_KEYS = {"time", "latency_ms", "path", "timestamp"}


def _timeless(value: Any) -> Any:
    """A JSON document without its time fields (and the paths, which name the run's folder)."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in TIME_KEYS}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def _junit(path: Path) -> tuple[list[str], dict[str, Any]]:
    order: list[str] = []
    outcomes: dict[str, Any] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        item = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = tag
        props = [(p.get("name"), p.get("value")) for p in case.iter("property")]
        order.append(item)
        outcomes[item] = (outcome, props)
    return order, outcomes


def _run(venv: Venv, project: Path, mode: str, phase: str, flags: list[str]) -> Run:
    dataplane = "npm" if phase == "pre" else "cilium"
    reports = project / "reports" / mode
    proc = venv.run(
        [
            "-m",
            "pytest",
            "suites/",
            "--cluster",
            f"file:cluster.yaml@{dataplane}",
            "--phase",
            phase,
            "--probes",
            "probes.yaml",
            "--report-dir",
            str(reports),
            "--probe-retries",
            "2",
            "--timeout",
            "300",
            "-rA",
            *flags,
        ],
        cwd=project,
    )
    output = proc.stdout + proc.stderr
    folder = reports / "file-cluster"
    assert (folder / f"junit-{phase}.xml").is_file(), f"{mode} {phase}: no JUnit\n{output[-4000:]}"
    order, outcomes = _junit(folder / f"junit-{phase}.xml")
    records = sorted(folder.glob(f"record-{phase}-*.json"))
    assert len(records) == 1, (mode, phase, records)
    parity = folder / "parity.json"
    return Run(
        exit_code=proc.returncode,
        order=order,
        outcomes=outcomes,
        record=_timeless(json.loads(records[0].read_text())),
        parity=_timeless(json.loads(parity.read_text())) if phase == "post" else None,
        output=output,
    )


MODES = {
    "plain": ["-p", "no:randomly"],
    "randomly": ["-p", "randomly", "--randomly-seed=1234"],
    "xdist": ["-p", "randomly", "--randomly-seed=99", "-n", "2"],
    # only a post run: nothing fails before the upgrade, so nothing would be retried
    "retries": [
        "-p",
        "no:randomly",
        "--retries",
        "1",
        "--reruns",
        "1",
        "--baseline",
        "reports/plain/file-cluster/baseline.json",
    ],
}


def test_randomly_xdist_and_retries_change_no_item_record_or_exit_code(
    venv: Venv, project: Path
) -> None:
    runs = {
        (mode, phase): _run(venv, project, mode, phase, flags)
        for mode, flags in MODES.items()
        for phase in ("pre", "post")
        if (mode, phase) != ("retries", "pre")
    }
    pre, post = runs["plain", "pre"], runs["plain", "post"]
    # the plain runs have substance: a green pre, a red post (the predicted changes fail)
    assert pre.exit_code == 0, pre.output[-4000:]
    assert post.exit_code == 1, post.output[-4000:]
    assert "netparity probes: timeout 2s, 2 retries of each deny" in pre.output
    assert pre.record["settings"]["retries"] == 2
    post_outcomes = [o for o, _ in post.outcomes.values()]
    assert post_outcomes.count("failure") > 0 and post_outcomes.count("passed") > 0
    assert any("test_explicit[" in item for item in pre.order)
    assert any("test_lint[" in item for item in pre.order)
    assert len(pre.record["probes"]) > 50

    for (mode, phase), run in runs.items():
        base = runs["plain", phase]
        where = f"{mode} {phase}"
        assert run.exit_code == base.exit_code, f"{where}\n{run.output[-4000:]}"
        assert sorted(set(run.order)) == sorted(base.order), where
        twice = {item for item in run.order if run.order.count(item) > 1}
        if mode == "retries":  # JUnit lists a retried item again: only the failed ones
            failed = {item for item, (o, _) in base.outcomes.items() if o == "failure"}
            assert twice == failed, where
        else:
            assert not twice, f"{where}: items ran twice"
        assert run.outcomes == base.outcomes, where
        assert run.record == base.record, where  # probes in plan order, same verdicts
        assert run.parity == base.parity, where

    # pytest-randomly did reorder the items (else the comparison above proves nothing)
    for phase in ("pre", "post"):
        assert runs["randomly", phase].order != runs["plain", phase].order
    # xdist did hand the items to two workers
    assert "created: 2/2 workers" in runs["xdist", "post"].output
    # and the retry plugins did run again the items that failed, which failed again
    assert re.search(r"\d+ retried", runs["retries", "post"].output)
    assert re.search(r"\d+ rerun", runs["retries", "post"].output)


# --------------------------------------------------------------------------- the old ini name


@pytest.fixture
def suites(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copytree(
        REPO / "suites", pytester.path / "suites", ignore=shutil.ignore_patterns("__pycache__")
    )
    pytester.makeconftest('pytest_plugins = ["netparity.plugin"]\n')
    shutil.copy(EXAMPLE, pytester.path / "cluster.yaml")
    return pytester


QUIET = "-p no:cacheprovider -p no:hypothesispytest -p no:benchmark -p no:randomly"


def test_the_old_ini_name_is_still_read_with_a_warning(suites: pytest.Pytester) -> None:
    suites.makeini(f"[pytest]\naddopts = {QUIET}\nnetparity_retries = 0\n")
    result = suites.runpytest("suites/test_connectivity.py", "--cluster", "file:cluster.yaml")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "netparity probes: timeout 2s, 0 retries of each deny*",
            "*PytestDeprecationWarning: netparity: ini option netparity_retries is renamed "
            "netparity_probe_retries*",
        ]
    )


def test_both_ini_names_set_is_a_usage_error(suites: pytest.Pytester) -> None:
    suites.makeini(
        f"[pytest]\naddopts = {QUIET}\nnetparity_retries = 0\nnetparity_probe_retries = 3\n"
    )
    result = suites.runpytest("suites/test_connectivity.py", "--cluster", "file:cluster.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ini options netparity_retries and netparity_probe_retries are both set*"]
    )


def test_the_old_option_is_no_longer_ours(suites: pytest.Pytester) -> None:
    """Without pytest-retry, --retries is unknown: it never silently sets the probe retries."""
    suites.makeini(f"[pytest]\naddopts = {QUIET}\n")
    result = suites.runpytest(
        "suites/test_connectivity.py", "--cluster", "file:cluster.yaml", "--retries", "3"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --retries*"])
