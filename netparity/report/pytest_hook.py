"""The report's part of a pytest run: JUnit XML on by default, parity.html/.md at the end.

Loaded by netparity.plugin (`pytest_plugins`). Once the plugin has planned (its
`pytest_sessionstart`), JUnit goes to `REPORT_DIR/<cluster>/junit-<phase>.xml` unless
`--junitxml` names another file or `-p no:junitxml` turns it off, and its suite is named
by phase (`netparity-pre`, `netparity-post`, `netparity-check`) unless the ini option
`junit_suite_name` names it. After the plugin has written the record (and the parity),
this module writes `lint.json`, `parity.html` and `parity.md` beside them. A report that
cannot be written is said in the summary and never changes the run's outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DEFAULT_SUITE = "pytest"  # pytest's own junit_suite_name default
JUNIT = pytest.StashKey[Path]()  # where this run's JUnit XML goes


def _state(config: pytest.Config) -> Any:
    """The controller's run (netparity.run.Run), or None (no --cluster, or an xdist worker)."""
    from netparity.plugin import STATE

    state = config.stash.get(STATE, None)
    return state.run if state is not None else None


def suite_name(phase: str) -> str:
    return f"netparity-{phase}"


def junit_path(report_dir: Path, cluster: str, phase: str) -> Path:
    from netparity.record import cluster_dirname

    return report_dir / cluster_dirname(cluster) / f"junit-{phase}.xml"


def _logxml(config: pytest.Config) -> Any:
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - pytest moved it
        return None
    return config.stash.get(xml_key, None)


def enable_junit(config: pytest.Config, path: Path, suite: str) -> Path | None:
    """Turn pytest's JUnit writer on for `path` (as --junitxml would), or name the suite of
    the one the user asked for. Returns where the XML goes, or None when it is off."""
    if config.pluginmanager.is_blocked("junitxml"):
        return None
    explicit_suite = config.getini("junit_suite_name") != DEFAULT_SUITE
    xml = _logxml(config)
    if xml is not None:  # --junitxml given: the user's file, our suite name
        if not explicit_suite:
            xml.suite_name = suite
        return Path(xml.logfile)
    try:
        from _pytest.junitxml import LogXML, xml_key
    except ImportError:  # pragma: no cover
        return None
    xml = LogXML(
        str(path),
        config.option.junitprefix,
        config.getini("junit_suite_name") if explicit_suite else suite,
        config.getini("junit_logging"),
        config.getini("junit_duration_report"),
        config.getini("junit_family"),
        config.getini("junit_log_passing_tests"),
    )
    config.stash[xml_key] = xml  # junitxml's pytest_unconfigure unregisters it
    config.pluginmanager.register(xml)
    xml.pytest_sessionstart()  # the session has started: start its clock now
    return path


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """After the plugin's planning: JUnit by default into the cluster's report folder."""
    config = session.config
    state = _state(config)
    if state is None or not state.phase:
        return
    if config.option.collectonly:
        return
    path = junit_path(state.settings.report_dir, state.cluster, state.phase)
    written = enable_junit(config, path, suite_name(state.phase))
    if written is not None:
        config.stash[JUNIT] = written


def _source(state: Any) -> tuple[dict[str, Any], str]:
    """The JSON to report on (parity.json as written, else built again) and its path."""
    import json

    from netparity.compare_output import parity_json
    from netparity.record import cluster_dirname, record_json

    folder = state.settings.report_dir / cluster_dirname(state.cluster)
    if state.phase == "post" and state.parity is not None:
        path = folder / "parity.json"
        if any(w.startswith("parity:") for w in state.written) and path.is_file():
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data, str(path)
        return parity_json(state.parity, baseline_path=str(state.baseline_path)), str(path)
    source = next((w.split(": ", 1)[1] for w in state.written if w.startswith("record: ")), "")
    return record_json(state.record), source


def write_session_reports(state: Any) -> list[Path]:
    """lint.json, parity.html and parity.md for the run the plugin just recorded."""
    from netparity.record import cluster_dirname
    from netparity.report.lintdata import LINT_FILE, lint_view, write_lint
    from netparity.report.sources import report_from_json
    from netparity.report.write import write_report

    folder = state.settings.report_dir / cluster_dirname(state.cluster)
    lint = lint_view(state.lint) if state.lint is not None else None
    written: list[Path] = []
    if lint is not None:
        write_lint(lint, folder / LINT_FILE)
        written.append(folder / LINT_FILE)
    data, source = _source(state)
    report = report_from_json(data, source=source)
    return written + write_report(report, folder, lint=lint)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the plugin wrote the record (and JUnit its XML): the human-readable reports."""
    state = _state(session.config)
    if state is None or state.record is None:
        return
    from netparity.run import show_path as _show

    junit = session.config.stash.get(JUNIT, None)
    if junit is not None and junit.is_file():
        state.written.append(f"junit: {_show(junit)}")
    try:
        paths = write_session_reports(state)
    except Exception as e:  # the report never changes the gate; say why it is missing
        state.written.append(f"report: not written ({type(e).__name__}: {e})")
        return
    for p in paths:
        if p.suffix in (".html", ".md"):
            state.written.append(f"report: {_show(p)}")
