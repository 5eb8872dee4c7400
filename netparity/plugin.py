"""The netparity pytest plugin: options, hooks and items around one run per session.

`pytest suites/ --cluster NAME` reads the cluster, plans, probes every planned probe once
(one batch per source) and then runs one item per probe, per lint finding and per explicit
probe; each item only looks up its verdict. Before the upgrade (phase `pre`) an item
passes where the observation agrees with the engine's prediction, and the run records the
baseline; after it (phase `post`) an item passes where the probe kept its verdict (or the
change is accepted), and the run writes the parity report. Under pytest-xdist the
controller does the reading, planning and probing and hands every verdict to the workers
through `workerinput`, so the output is the same with and without `-n`.

The options and their resolvers are in netparity.options, the run itself (plan, place,
probe, record, judge) in netparity.run, the verdicts in netparity.verdicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from netparity.errors import NetparityError
from netparity.options import (  # noqa: F401  (the option names stay importable here)
    DEFAULT_PROBE_RETRIES,
    DEFAULT_PROBE_TIMEOUT,
    DEFAULT_REPORT_DIR,
    DEFAULT_TARGET,
    GROUP,
    GROUP_DESCRIPTION,
    OLD_RETRIES_INI,
    PHASES,
    RETRIES_INI,
    pytest_addoption,
    resolve_settings,
)
from netparity.run import Run, RunView, Settings, show_path  # noqa: F401
from netparity.session import Stopwatch, open_backend
from netparity.verdicts import ItemVerdict

if TYPE_CHECKING:
    from netparity.backend import Backend

# The parity report (netparity/report/pytest_hook.py): JUnit by default, parity.html and .md.
pytest_plugins = ("netparity.report.pytest_hook",)

SUITES = ("connectivity", "explicit", "lint")
# The argument each suite's test function takes, one item per value.
FIXTURES = {
    "netparity_probe": "connectivity",
    "netparity_explicit": "explicit",
    "netparity_finding": "lint",
}
WORKERINPUT_KEY = "netparity"


class NetparityHookspecs:
    """Hooks netparity adds; a conftest may implement them."""

    @pytest.hookspec(firstresult=True)
    def pytest_netparity_backend(self, config: pytest.Config, cluster: str) -> Backend | None:
        """Return the Backend for `--cluster <cluster>` (with its record name as
        `backend.facts().name`), or None to let netparity choose: lab, file: or kubeconfig."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(NetparityHookspecs)


def _usage(e: NetparityError) -> pytest.UsageError:
    return pytest.UsageError(f"netparity: {e}")


# --------------------------------------------------------------------------- session state


@dataclass(slots=True, kw_only=True)
class State:
    """One session's netparity state (config.stash): the controller's run, or on an xdist
    worker only the view the controller handed over."""

    run: Run | None = None
    worker: bool = False
    view: RunView = field(default_factory=RunView)

    @property
    def settings(self) -> Settings | None:
        return self.run.settings if self.run is not None else None

    @property
    def active(self) -> bool:
        return self.run is not None or self.worker


STATE = pytest.StashKey[State]()
_RESTORE_SIGNALS = pytest.StashKey[Callable[[], None]]()


def _state(config: pytest.Config) -> State:
    return config.stash.get(STATE, State())


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and WORKERINPUT_KEY in workerinput:
        view = RunView.from_json(workerinput[WORKERINPUT_KEY])
        config.stash[STATE] = State(worker=True, view=view)
        return
    settings = resolve_settings(config)
    run = _new_run(config, settings) if settings is not None else None
    config.stash[STATE] = State(run=run, view=run.view if run is not None else RunView())
    if run is not None:
        # a cluster run: SIGTERM and SIGHUP end it as Ctrl-C does (docs/faults.md)
        from netparity.interrupts import install

        config.stash[_RESTORE_SIGNALS] = install()


def _new_run(config: pytest.Config, settings: Settings) -> Run:
    """The session's run: the watch's for --phase during (netparity.watch.during)."""
    if settings.phase != "during":
        return Run(settings=settings)
    from netparity.watch.during import DuringRun

    def say(line: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"netparity watch: {line}")

    return DuringRun(settings=settings, say=say)


def _is_xdist_controller(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin("dsession")


# --------------------------------------------------------------------------- progress


class TerminalProgress:
    """Progress on the terminal: `probing: 120/340`, one line rewritten in place on a tty;
    elsewhere (CI logs) a line when a count starts (if `starts`) and when it completes."""

    def __init__(self, config: pytest.Config, prefix: str = "", *, starts: bool = True) -> None:
        self.tr = config.pluginmanager.get_plugin("terminalreporter")
        self.prefix = prefix
        self.starts = starts
        self.stopwatch = Stopwatch()
        self.counts: dict[str, tuple[int, int]] = {}
        self._seen: set[str] = set()
        self._last = -1.0

    def say(self, line: str) -> None:
        if self.tr is not None:
            self.tr.write_line(line)

    def __call__(self, what: str, done: int, total: int) -> None:
        if self.tr is None:
            return
        first = what not in self._seen
        self._seen.add(what)
        finished = done >= total
        took = f" ({self.stopwatch.seconds():.1f}s)"
        if not bool(self.tr.isatty):
            if finished:
                self.say(f"{self.prefix}{what}: {done}/{total}{took}")
            elif first and self.starts:
                self.say(f"{self.prefix}{what}: {done}/{total}")
            return
        self.counts[what] = (done, total)
        now = self.stopwatch.seconds()
        if not finished and not first and now - self._last < 0.1:
            return
        self._last = now
        line = self.prefix + ", ".join(f"{w}: {d}/{t}" for w, (d, t) in self.counts.items())
        if len(self._seen) == 1 and first:
            self.tr.ensure_newline()
        self.tr.rewrite(line + (took if finished else ""), erase=True)
        if finished:
            self.tr.write("\n")
            self.counts.pop(what)


# --------------------------------------------------------------------------- planning


def _open(config: pytest.Config, run: Run) -> tuple[Backend, str]:
    """The cluster's backend: a conftest's (pytest_netparity_backend) or netparity's own."""
    settings = run.settings
    hooked = config.hook.pytest_netparity_backend(config=config, cluster=settings.cluster.text)
    if hooked is not None:
        return hooked, hooked.facts().name
    progress = TerminalProgress(config, prefix=f"lab {settings.cluster.value}: ", starts=False)
    return open_backend(
        settings.cluster,
        on_bring_up=progress.say,
        lab_progress=progress,
        log=progress.say,
        kube=settings.kube,
    )


def _prepare(config: pytest.Config, run: Run) -> None:
    """Load the inputs, open the backend, plan: a NetparityError is a usage error."""
    xml = getattr(config.option, "xmlpath", None)
    try:
        run.load_inputs(junit=Path(xml) if xml else None)
        if run.settings.phase != "during":  # the watch opens the lab or cluster itself
            run.attach(*_open(config, run))
        run.make_plan()
    except NetparityError as e:
        raise _usage(e) from None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    run = _state(session.config).run
    if run is not None:
        _prepare(session.config, run)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = _state(config)
    if not state.active or state.worker:
        return []
    return [
        f"netparity {line}" if not line.startswith("netparity") else line
        for line in state.view.header
    ]


# --------------------------------------------------------------------------- probing


def pytest_collection_finish(session: pytest.Session) -> None:
    run = _state(session.config).run
    if run is None or session.config.option.collectonly:
        return
    run.probe_and_judge(TerminalProgress(session.config))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: probe once before the first worker starts; hand everything over."""
    config: pytest.Config = node.config
    run = _state(config).run
    if run is None:
        return
    if not config.option.collectonly:
        run.probe_and_judge(TerminalProgress(config))
    node.workerinput[WORKERINPUT_KEY] = run.view.to_json()


# --------------------------------------------------------------------------- items


class Case:
    """One item's parameter: the probe (or finding) key; `check()` asserts its verdict."""

    __slots__ = ("key", "state", "suite", "title")

    def __init__(self, *, suite: str, key: str, title: str, state: State) -> None:
        self.suite = suite
        self.key = key
        self.title = title
        self.state = state

    def __repr__(self) -> str:
        return f"Case({self.suite}, {self.title})"

    def verdict(self) -> ItemVerdict | None:
        if self.state.view.verdicts is None:
            return None
        return self.state.view.verdicts.get(self.key)

    def check(self) -> None:
        if not self.state.active:
            pytest.skip(
                "the netparity suites run with --cluster NAME (lab, lab:NAME, "
                "file:SNAPSHOT.yaml or a kubeconfig context)"
            )
        if self.state.view.failure is not None:
            pytest.fail(f"netparity: {self.state.view.failure}", pytrace=False)
        v = self.verdict()
        if v is None:
            pytest.fail("netparity: this item has no result: the probes did not run", pytrace=False)
        if v.outcome == "failed":
            pytest.fail(v.message, pytrace=False)
        if v.outcome == "skipped":
            # reported at the item, not at this line of the plugin
            raise pytest.skip.Exception(v.message, _use_item_location=True)
        if v.outcome == "xfailed":
            pytest.xfail(v.message)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: object) -> list[Any] | None:
    """No cases, no item: a suite with nothing to check (no `--probes`, no lint finding)
    collects nothing, instead of pytest's empty-parameter-set item (`[NOTSET]`)."""
    state = _state(collector.config)
    if not state.active or not callable(obj) or not collector.funcnamefilter(name):
        return None
    import inspect

    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return None
    for argname, suite in FIXTURES.items():
        if argname in params and not state.view.items.get(suite):
            return []
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for argname, suite in FIXTURES.items():
        if argname not in metafunc.fixturenames:
            continue
        state = _state(metafunc.config)
        if not state.active:
            case = Case(suite=suite, key="", title="no cluster", state=state)
            metafunc.parametrize(argname, [case], ids=["no --cluster"])
            continue
        pairs = state.view.items.get(suite, [])
        cases = [Case(suite=suite, key=k, title=pid, state=state) for k, pid in pairs]
        metafunc.parametrize(argname, cases, ids=[pid for _, pid in pairs])


def _case(item: pytest.Item) -> Case | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for argname in FIXTURES:
        value = callspec.params.get(argname)
        if isinstance(value, Case):
            return value
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    case = _case(item)
    if case is None:
        return
    v = case.verdict()
    if v is not None:
        # once: pytest-retry and pytest-rerunfailures set an item up again for each retry
        present = set(item.user_properties)
        item.user_properties.extend(p for p in v.properties if p not in present)


# --------------------------------------------------------------------------- the end


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = _state(session.config).run
    if run is None:
        return
    if run.record is not None:
        try:
            run.write()
        except NetparityError as e:
            run.view.failure = f"the records could not be written: {e}"
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    run.close()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Also when the session never started (an error or Ctrl-C while planning)."""
    run = _state(config).run
    if run is not None:
        run.close()
    restore = config.stash.get(_RESTORE_SIGNALS, None)
    if restore is not None:
        del config.stash[_RESTORE_SIGNALS]
        restore()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = _state(config).run
    if run is None:
        return
    from netparity.run.summary import summary_lines

    lines = summary_lines(run)
    if lines:
        terminalreporter.write_sep("=", "netparity")
        for line in lines:
            terminalreporter.write_line(line)
