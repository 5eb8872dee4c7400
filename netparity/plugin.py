"""The netparity pytest plugin: options, one probe run per session, items that assert on it.

`pytest suites/ --cluster NAME` reads the cluster, plans, probes every planned probe once
(one batch per source) and then runs one item per probe, per lint finding and per explicit
probe; each item only looks up its verdict. Before the upgrade (phase `pre`) an item
passes where the observation agrees with the engine's prediction, and the run records the
baseline; after it (phase `post`) an item passes where the probe kept its verdict (or the
change is accepted), and the run writes the parity report. Under pytest-xdist the
controller does the reading, planning and probing and hands every verdict to the workers
through `workerinput`, so the output is the same with and without `-n`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from netparity.errors import InputError, NetparityError, RecordError
from netparity.session import (
    ClusterSpec,
    ItemVerdict,
    KubeOptions,
    Stopwatch,
    counts_line,
    judge_post,
    judge_pre,
    open_backend,
    param_ids,
    parse_cluster,
    probe_all,
    probe_properties,
)

if TYPE_CHECKING:
    from netparity.accept import Acceptance
    from netparity.backend import Backend, ClusterFacts
    from netparity.compare import Parity
    from netparity.plan.model import Plan
    from netparity.probefile import ProbeSpec
    from netparity.record import ProbeRecord, Record

# The parity report (netparity/report/pytest_hook.py): JUnit by default, parity.html and .md.
pytest_plugins = ("netparity.report.pytest_hook",)

GROUP = "netparity"
GROUP_DESCRIPTION = "netparity: NetworkPolicy parity probes (pytest suites/ --cluster NAME)"

HELP_CLUSTER = (
    "the cluster to probe: lab or lab:NAME (a local lab of network namespaces; built from "
    "examples/aks-migration.yaml under npm if none is up), file:SNAPSHOT.yaml[@DATAPLANE] "
    "(a dry run: the engine answers every probe), or a kubeconfig context"
)
HELP_PHASE = (
    "auto (default): pre where this cluster has no baseline, post where it has one and "
    "the dataplane changed; pre: check against the predictions and record the baseline; "
    "post: compare with the baseline"
)
HELP_BASELINE = "the baseline record (default: REPORT_DIR/<cluster>/baseline.json)"
HELP_TARGET = "the dataplane the cluster moves to: cilium (default) or cilium-1.16"
HELP_ACCEPT = "accept file: a YAML list of {id, reason}, changes reviewed and accepted (they pass)"
HELP_PROBES = "an explicit probe file (docs/probes.md); may be given more than once"
HELP_PROBE_TIMEOUT = "seconds a probe waits before it counts as dropped (default 2)"
HELP_PROBE_RETRIES = (
    "how many times a deny is probed again before it is believed (default 1); "
    "was --retries, which pytest-retry defines"
)
HELP_REPORT_DIR = "where records, the baseline and the parity report go (default reports/)"
HELP_FORCE = "with --phase pre: replace an existing baseline"
HELP_DATAPLANE = (
    "the dataplane the cluster runs, overriding what is detected in kube-system "
    "(npm, cilium, cilium-1.16, spec)"
)
HELP_PROBE_IMAGE = (
    "Kubernetes: the image of the probe pods (needs python3; mirrors and digest pins "
    "such as registry/python@sha256:... are fine; default python:3.12-slim)"
)
HELP_SETTLE = (
    "Kubernetes: seconds to let the dataplane program new probe pods before probing when it "
    "shows no per-pod state (NPM; Cilium is waited for through its CiliumEndpoints), and "
    "between a probe and its retry (default 5)"
)
HELP_WAIT_READY = (
    "Kubernetes: a cluster in the middle of the migration to Cilium (azure-npm and cilium "
    "both present, or Cilium not ready on every Linux node) is refused; wait up to this "
    "many seconds for it to finish instead (default 0: refuse at once)"
)
HELP_MAX_PARALLEL = "Kubernetes: how many probe batches run at once (default 8)"
HELP_MAX_DURATION = (
    "Kubernetes: the longest the run may take, in seconds; probe pods are removed by the "
    "cluster after it even if pytest is killed (their activeDeadlineSeconds; default: the "
    "run's planned length plus 10 minutes). Give it for long runs"
)
HELP_EXTERNAL_IP = (
    "the address the cluster sees when the machine running pytest connects from outside "
    "(after any NAT): the planner predicts outside traffic from it; default 203.0.113.10, "
    "a documentation address that suits the lab"
)
HELP_RESPONDER = (
    "Kubernetes: ADDRESS[:PORTS] of a machine outside the cluster that its pods reach, "
    "running `python3 probes/agent.py serve --name netparity-responder --tcp PORTS "
    "[--udp PORTS]` (PORTS: 443,8080-8081,53/udp; default 80,443,8080,8443,53/udp). "
    "Checked to answer before probing; outside probes go only there (every ipBlock holding "
    "it), the others are predicted only. Give the same one to every phase"
)
HELP_SERVICE_CIDR = (
    "the cluster's Service range (az aks show --query networkProfile.serviceCidr) where the "
    "ClusterIPs do not show it: no outside address is chosen inside it"
)
HELP_ALLOW_LB = (
    "Kubernetes: let the run create its own LoadBalancer Services (they cost money and "
    "minutes on AKS); without it, LoadBalancer probes are reported as not run"
)
HELP_ALLOW_HOST_NETWORK = (
    "Kubernetes: probe node sources from one hostNetwork pod per node, in a namespace of "
    "the run at the privileged Pod Security level (no added capabilities, no listening "
    "port; needs namespace create/delete: netparity rbac --allow-host-network); without "
    "it, node sources are reported as not run"
)

PHASES = ("auto", "pre", "post")
DEFAULT_TARGET = "cilium"
DEFAULT_PROBE_TIMEOUT = 2.0
DEFAULT_PROBE_RETRIES = 1
DEFAULT_REPORT_DIR = "reports"
SUITES = ("connectivity", "explicit", "lint")
# The argument each suite's test function takes, one item per value.
FIXTURES = {
    "netparity_probe": "connectivity",
    "netparity_explicit": "explicit",
    "netparity_finding": "lint",
}
WORKERINPUT_KEY = "netparity"
RETRIES_INI = "netparity_probe_retries"
OLD_RETRIES_INI = "netparity_retries"  # the ini twin of --retries, before --probe-retries


# --------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, GROUP_DESCRIPTION)
    group.addoption("--cluster", dest="netparity_cluster", metavar="NAME", help=HELP_CLUSTER)
    group.addoption("--phase", dest="netparity_phase", metavar="auto|pre|post", help=HELP_PHASE)
    group.addoption("--baseline", dest="netparity_baseline", metavar="FILE", help=HELP_BASELINE)
    group.addoption(
        "--target", dest="netparity_target", metavar="cilium|cilium-1.16", help=HELP_TARGET
    )
    group.addoption("--accept", dest="netparity_accept", metavar="FILE", help=HELP_ACCEPT)
    group.addoption(
        "--probes",
        dest="netparity_probes",
        metavar="FILE",
        action="append",
        default=[],
        help=HELP_PROBES,
    )
    group.addoption(
        "--probe-timeout",
        dest="netparity_probe_timeout",
        metavar="SECONDS",
        help=HELP_PROBE_TIMEOUT,
    )
    # Not --retries: pytest-retry defines it, and argparse refuses a second definition,
    # so pytest could not start at all with both plugins installed (README: renamed options).
    group.addoption(
        "--probe-retries", dest="netparity_probe_retries", metavar="N", help=HELP_PROBE_RETRIES
    )
    group.addoption(
        "--report-dir", dest="netparity_report_dir", metavar="DIR", help=HELP_REPORT_DIR
    )
    group.addoption(
        "--force", dest="netparity_force", action="store_true", default=False, help=HELP_FORCE
    )
    group.addoption("--dataplane", dest="netparity_dataplane", metavar="NAME", help=HELP_DATAPLANE)
    group.addoption(
        "--probe-image", dest="netparity_probe_image", metavar="IMAGE", help=HELP_PROBE_IMAGE
    )
    group.addoption(
        "--max-parallel", dest="netparity_max_parallel", metavar="N", help=HELP_MAX_PARALLEL
    )
    group.addoption("--settle", dest="netparity_settle", metavar="SECONDS", help=HELP_SETTLE)
    group.addoption(
        "--wait-ready", dest="netparity_wait_ready", metavar="SECONDS", help=HELP_WAIT_READY
    )
    group.addoption(
        "--max-duration", dest="netparity_max_duration", metavar="SECONDS", help=HELP_MAX_DURATION
    )
    group.addoption(
        "--external-ip", dest="netparity_external_ip", metavar="ADDRESS", help=HELP_EXTERNAL_IP
    )
    group.addoption(
        "--responder", dest="netparity_responder", metavar="ADDRESS[:PORTS]", help=HELP_RESPONDER
    )
    group.addoption(
        "--service-cidr", dest="netparity_service_cidr", metavar="CIDR", help=HELP_SERVICE_CIDR
    )
    group.addoption(
        "--allow-load-balancer",
        dest="netparity_allow_lb",
        action="store_true",
        default=False,
        help=HELP_ALLOW_LB,
    )
    group.addoption(
        "--allow-host-network",
        dest="netparity_allow_host_network",
        action="store_true",
        default=False,
        help=HELP_ALLOW_HOST_NETWORK,
    )
    parser.addini(
        "netparity_allow_host_network", HELP_ALLOW_HOST_NETWORK, type="bool", default=False
    )
    parser.addini("netparity_probe_image", HELP_PROBE_IMAGE)
    parser.addini("netparity_target", HELP_TARGET)
    parser.addini("netparity_accept", HELP_ACCEPT)
    parser.addini("netparity_probe_timeout", HELP_PROBE_TIMEOUT)
    parser.addini("netparity_probe_retries", HELP_PROBE_RETRIES)
    # The ini twin's old name collides with nothing: still read, with a warning.
    parser.addini(OLD_RETRIES_INI, f"renamed {RETRIES_INI} (still read, with a warning)")
    parser.addini("netparity_report_dir", HELP_REPORT_DIR)
    parser.addini("netparity_max_duration", HELP_MAX_DURATION)
    parser.addini("netparity_settle", HELP_SETTLE)
    parser.addini("netparity_wait_ready", HELP_WAIT_READY)


class NetparityHookspecs:
    """Hooks netparity adds; a conftest may implement them."""

    @pytest.hookspec(firstresult=True)
    def pytest_netparity_backend(self, config: pytest.Config, cluster: str) -> Backend | None:
        """Return the Backend for `--cluster <cluster>` (with its record name as
        `backend.facts().name`), or None to let netparity choose: lab, file: or kubeconfig."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(NetparityHookspecs)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    cluster: ClusterSpec
    phase: str
    baseline: Path | None  # given on the command line
    target: str
    accept: Path | None
    probes: tuple[Path, ...]
    probe_timeout: float
    retries: int
    report_dir: Path
    force: bool
    external_ip: str = "203.0.113.10"
    kube: KubeOptions = field(default_factory=KubeOptions)
    responder: str | None = None  # its address (--responder ADDRESS[:PORTS])
    service_cidr: ipaddress.IPv4Network | None = None


def _value(config: pytest.Config, dest: str, ini: str | None) -> tuple[str | None, str]:
    """A setting's raw value and where it came from: command line > ini file."""
    raw = config.getoption(dest)
    if raw is not None:
        return str(raw), "--" + dest.removeprefix("netparity_").replace("_", "-")
    if ini is not None:
        value = config.getini(ini)
        if isinstance(value, str) and value.strip():
            return value.strip(), f"ini option {ini}"
    return None, ""


def _retries_ini(config: pytest.Config) -> str:
    """The ini option that holds the probe retries: its old name only where the new one is
    not set (both set is an error); the old name is read with a deprecation warning."""
    new, old = (config.getini(n) for n in (RETRIES_INI, OLD_RETRIES_INI))
    if not (isinstance(old, str) and old.strip()):
        return RETRIES_INI
    if isinstance(new, str) and new.strip():
        raise pytest.UsageError(
            f"netparity: ini options {OLD_RETRIES_INI} and {RETRIES_INI} are both set; "
            f"{OLD_RETRIES_INI} is the old name of {RETRIES_INI}: keep only {RETRIES_INI}"
        )
    config.issue_config_time_warning(
        pytest.PytestDeprecationWarning(
            f"netparity: ini option {OLD_RETRIES_INI} is renamed {RETRIES_INI} "
            "(like --retries, now --probe-retries); rename it in your ini file"
        ),
        stacklevel=2,
    )
    return OLD_RETRIES_INI


def resolve_settings(config: pytest.Config) -> Settings | None:
    """Every netparity option, validated, or None when no --cluster is given.

    Raises pytest.UsageError naming the bad value."""
    raw_cluster = config.getoption("netparity_cluster")
    others = {
        "--phase": config.getoption("netparity_phase"),
        "--baseline": config.getoption("netparity_baseline"),
        "--accept": config.getoption("netparity_accept"),
        "--probes": config.getoption("netparity_probes") or None,
        "--force": config.getoption("netparity_force") or None,
    }
    if raw_cluster is None:
        given = [k for k, v in others.items() if v is not None]
        if given:
            raise pytest.UsageError(
                f"netparity: {', '.join(given)} needs --cluster NAME (lab, lab:NAME, "
                "file:SNAPSHOT.yaml or a kubeconfig context)"
            )
        return None
    try:
        cluster = parse_cluster(str(raw_cluster))
    except NetparityError as e:
        raise pytest.UsageError(f"netparity: --cluster {raw_cluster!r}: {_message(e)}") from None

    phase = str(config.getoption("netparity_phase") or "auto")
    if phase not in PHASES:
        raise pytest.UsageError(f"netparity: --phase {phase!r} is not one of {', '.join(PHASES)}")

    from netparity.engine.dataplane import TARGETS

    target, where = _value(config, "netparity_target", "netparity_target")
    target = target or DEFAULT_TARGET
    if target not in TARGETS:
        raise pytest.UsageError(
            f"netparity: {where} {target!r} is not a target dataplane "
            f"(expected {' or '.join(TARGETS)})"
        )

    raw_timeout, where = _value(config, "netparity_probe_timeout", "netparity_probe_timeout")
    timeout = DEFAULT_PROBE_TIMEOUT
    if raw_timeout is not None:
        try:
            timeout = float(raw_timeout)
        except ValueError:
            timeout = math.nan
        if not (0 < timeout <= 300):
            raise pytest.UsageError(
                f"netparity: {where} {raw_timeout!r} must be a number of seconds above 0 "
                "and at most 300"
            )

    raw_retries, where = _value(config, "netparity_probe_retries", _retries_ini(config))
    retries = DEFAULT_PROBE_RETRIES
    if raw_retries is not None:
        try:
            retries = int(raw_retries)
        except ValueError:
            retries = -1
        if not 0 <= retries <= 10:
            raise pytest.UsageError(
                f"netparity: {where} {raw_retries!r} must be a whole number from 0 to 10"
            )

    raw_dir, where = _value(config, "netparity_report_dir", "netparity_report_dir")
    if raw_dir is None:
        report_dir = Path(config.invocation_params.dir) / DEFAULT_REPORT_DIR
    elif where.startswith("--"):
        report_dir = Path(config.invocation_params.dir) / raw_dir
    else:
        report_dir = config.rootpath / raw_dir

    force = bool(config.getoption("netparity_force"))
    if force and phase != "pre":
        raise pytest.UsageError(
            "netparity: --force only applies with --phase pre (it replaces the baseline); "
            f"this run has --phase {phase}"
        )

    baseline: Path | None = None
    raw_baseline = config.getoption("netparity_baseline")
    if raw_baseline is not None:
        baseline = Path(config.invocation_params.dir) / str(raw_baseline)
        if phase != "pre" and not baseline.is_file():
            raise pytest.UsageError(
                f"netparity: --baseline {raw_baseline!r} does not exist "
                "(a baseline is recorded with --phase pre)"
            )

    raw_accept, where = _value(config, "netparity_accept", "netparity_accept")
    accept: Path | None = None
    if raw_accept is not None:
        base = Path(config.invocation_params.dir) if where.startswith("--") else config.rootpath
        accept = base / raw_accept
        if not accept.is_file():
            raise pytest.UsageError(f"netparity: {where} {raw_accept!r}: no such file")

    probes = []
    for raw in config.getoption("netparity_probes") or ():
        p = Path(config.invocation_params.dir) / str(raw)
        if not p.is_file():
            raise pytest.UsageError(f"netparity: --probes {raw!r}: no such file")
        probes.append(p)

    dataplane = config.getoption("netparity_dataplane")
    from netparity.engine.dataplane import DATAPLANES

    if dataplane is not None and dataplane not in DATAPLANES:
        raise pytest.UsageError(
            f"netparity: --dataplane {dataplane!r} is not one of {', '.join(DATAPLANES)}"
        )
    if dataplane is not None and cluster.kind != "kubernetes":
        raise pytest.UsageError(
            f"netparity: --dataplane applies to a Kubernetes cluster; {cluster.text!r} says "
            "its own (a lab's is set by `netparity lab up/upgrade`, a file's by @DATAPLANE)"
        )
    raw_parallel = config.getoption("netparity_max_parallel")
    max_parallel = 8
    if raw_parallel is not None:
        try:
            max_parallel = int(raw_parallel)
        except ValueError:
            max_parallel = 0
        if not 1 <= max_parallel <= 256:
            raise pytest.UsageError(
                f"netparity: --max-parallel {raw_parallel!r} must be a whole number from 1 to 256"
            )
    image, _ = _value(config, "netparity_probe_image", "netparity_probe_image")
    raw_duration, where = _value(config, "netparity_max_duration", "netparity_max_duration")
    max_duration: float | None = None
    if raw_duration is not None:
        try:
            max_duration = float(raw_duration)
        except ValueError:
            max_duration = 0.0
        if not 60 <= max_duration <= 7 * 24 * 3600:
            raise pytest.UsageError(
                f"netparity: {where} {raw_duration!r} must be a number of seconds "
                "from 60 to 604800 (a week)"
            )
    from netparity.engine.traffic import DEFAULT_EXTERNAL_IP

    external_ip = str(config.getoption("netparity_external_ip") or DEFAULT_EXTERNAL_IP)
    try:
        ipaddress.IPv4Address(external_ip)
    except ValueError:
        raise pytest.UsageError(
            f"netparity: --external-ip {external_ip!r} is not an IPv4 address"
        ) from None
    raw_settle, where = _value(config, "netparity_settle", "netparity_settle")
    settle: float | None = None
    if raw_settle is not None:
        try:
            settle = float(raw_settle)
        except ValueError:
            settle = -1.0
        if not 0 <= settle <= 600:
            raise pytest.UsageError(
                f"netparity: {where} {raw_settle!r} must be a number of seconds from 0 to 600"
            )
    raw_wait, where = _value(config, "netparity_wait_ready", "netparity_wait_ready")
    wait_ready = 0.0
    if raw_wait is not None:
        try:
            wait_ready = float(raw_wait)
        except ValueError:
            wait_ready = -1.0
        if not 0 <= wait_ready <= 24 * 3600:
            raise pytest.UsageError(
                f"netparity: {where} {raw_wait!r} must be a number of seconds from 0 to 86400"
            )
    from netparity.plan.addresses import parse_service_cidr

    raw_responder = config.getoption("netparity_responder")
    raw_cidr = config.getoption("netparity_service_cidr")
    try:
        responder = None
        if raw_responder is not None:
            from netparity.kube.responder import parse_responder

            responder = parse_responder(str(raw_responder)).ip
        service_cidr = parse_service_cidr(str(raw_cidr)) if raw_cidr is not None else None
    except NetparityError as e:
        raise _usage(e) from None
    kube = KubeOptions(
        responder=str(raw_responder) if raw_responder is not None else None,
        external_ip=external_ip,
        settle=settle,
        wait_ready=wait_ready,
        probe_image=image,
        max_parallel=max_parallel,
        allow_load_balancer=bool(config.getoption("netparity_allow_lb")),
        allow_host_network=bool(
            config.getoption("netparity_allow_host_network")
            or config.getini("netparity_allow_host_network")
        ),
        dataplane=dataplane,
        max_duration=max_duration,
    )

    return Settings(
        responder=responder,
        service_cidr=service_cidr,
        external_ip=external_ip,
        kube=kube,
        cluster=cluster,
        phase=phase,
        baseline=baseline,
        target=target,
        accept=accept,
        probes=tuple(probes),
        probe_timeout=timeout,
        retries=retries,
        report_dir=report_dir,
        force=force,
    )


def _show(path: Path | None) -> str:
    """A path as the user would type it: relative to the current folder where it is inside."""
    if path is None:
        return "-"
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _message(e: NetparityError) -> str:
    return e.message if isinstance(e, InputError) else str(e)


def _usage(e: NetparityError) -> pytest.UsageError:
    return pytest.UsageError(f"netparity: {e}")


# --------------------------------------------------------------------------- session state


@dataclass(slots=True, kw_only=True)
class State:
    """One session's netparity state (config.stash): the controller fills it, workers read it."""

    settings: Settings | None
    worker: bool = False
    header: list[str] = field(default_factory=list)
    items: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # suite -> (key, id)
    verdicts: dict[str, ItemVerdict] | None = None
    failure: str | None = None  # why no probe could be judged
    summary: list[str] = field(default_factory=list)
    # controller only
    backend: Backend | None = None
    cluster: str = ""
    facts: ClusterFacts | None = None
    phase: str = ""
    baseline_path: Path | None = None
    baseline: Record | None = None
    accepts: Mapping[str, Acceptance] = field(default_factory=dict)
    explicit: tuple[ProbeSpec, ...] = ()
    expects: dict[str, str] = field(default_factory=dict)
    plan: Plan | None = None
    findings: list[tuple[str, str, ItemVerdict]] = field(default_factory=list)
    lint: Any = None  # the LintReport, whose fixes the parity report shows
    record: Record | None = None
    parity: Parity | None = None
    written: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.settings is not None or self.worker

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "items": {k: [list(p) for p in v] for k, v in self.items.items()},
            "verdicts": None
            if self.verdicts is None
            else {k: v.to_json() for k, v in self.verdicts.items()},
            "failure": self.failure,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> State:
        verdicts = raw.get("verdicts")
        return cls(
            settings=None,
            worker=True,
            header=list(raw.get("header") or []),
            items={k: [(str(a), str(b)) for a, b in v] for k, v in raw["items"].items()},
            verdicts=None
            if verdicts is None
            else {k: ItemVerdict.from_json(v) for k, v in verdicts.items()},
            failure=raw.get("failure"),
        )


STATE = pytest.StashKey[State]()
_RESTORE_SIGNALS = pytest.StashKey[Callable[[], None]]()


def _state(config: pytest.Config) -> State:
    return config.stash.get(STATE, State(settings=None))


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and WORKERINPUT_KEY in workerinput:
        config.stash[STATE] = State.from_json(workerinput[WORKERINPUT_KEY])
        return
    config.stash[STATE] = State(settings=resolve_settings(config))
    if config.stash[STATE].settings is not None:
        # a cluster run: SIGTERM and SIGHUP end it as Ctrl-C does (docs/faults.md)
        from netparity.interrupts import install

        config.stash[_RESTORE_SIGNALS] = install()


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


# --------------------------------------------------------------------------- preparing


def _open(config: pytest.Config, state: State) -> None:
    settings = state.settings
    assert settings is not None
    hooked = config.hook.pytest_netparity_backend(config=config, cluster=settings.cluster.text)
    if hooked is not None:
        state.backend = hooked
        state.cluster = hooked.facts().name
        return
    progress = TerminalProgress(config, prefix=f"lab {settings.cluster.value}: ", starts=False)
    state.backend, state.cluster = open_backend(
        settings.cluster,
        on_bring_up=progress.say,
        lab_progress=progress,
        log=progress.say,
        kube=settings.kube,
    )


def _choose_phase(state: State) -> str:
    """pre | post | check (pre-style checks, the baseline kept); sets the baseline fields."""
    from netparity.record import default_baseline, load_record

    settings, facts = state.settings, state.facts
    assert settings is not None and facts is not None
    path = settings.baseline or default_baseline(settings.report_dir, state.cluster)
    state.baseline_path = path
    exists = path.is_file()
    if exists:
        try:
            state.baseline = load_record(path)
        except RecordError as e:
            if settings.phase == "pre" and settings.force:
                state.baseline = None
            else:
                raise _usage(e) from None
    base = state.baseline
    if base is not None and base.cluster != state.cluster:
        raise pytest.UsageError(
            f"netparity: the baseline {_show(path)} belongs to cluster {base.cluster!r}, not "
            f"{state.cluster!r}; give this cluster's baseline with --baseline"
        )
    if settings.phase == "pre":
        if exists and not settings.force:
            when = f" (recorded {base.time} on {base.dataplane})" if base is not None else ""
            raise pytest.UsageError(
                f"netparity: the baseline {_show(path)} already exists{when}; --phase post compares "
                "with it, --phase pre --force replaces it"
            )
        state.header.append(
            f"phase: pre (--phase pre{' --force: the baseline is replaced' if exists else ''})"
        )
        return "pre"
    if settings.phase == "post":
        if base is None:
            raise pytest.UsageError(
                f"netparity: --phase post needs a baseline, and there is none at {_show(path)}; "
                "record it with --phase pre before the upgrade"
            )
        same = " (the dataplane did not change)" if base.dataplane == facts.dataplane else ""
        state.header.append(
            f"phase: post (--phase post): compared with the baseline of {base.time} "
            f"on {base.dataplane}{same}"
        )
        return "post"
    if base is None:
        state.header.append(
            "phase: pre (auto: this cluster has no baseline yet; this run records it)"
        )
        return "pre"
    if base.dataplane != facts.dataplane:
        state.header.append(
            f"phase: post (auto: the baseline of {base.time} was recorded on {base.dataplane}, "
            f"the cluster now runs {facts.dataplane})"
        )
        return "post"
    state.header.append(
        f"phase: check (auto: the baseline of {base.time} was recorded on {base.dataplane} and "
        f"the cluster still runs {facts.dataplane}: probes are checked against the "
        "predictions like pre, the baseline is kept; --phase pre --force replaces it)"
    )
    return "check"


def _prepare(config: pytest.Config, state: State) -> None:
    """Read the cluster, choose the phase, plan; fills the header and the item lists."""
    from netparity.accept import load_accept
    from netparity.outdir import check_output_dir
    from netparity.plan.planner import make_plan
    from netparity.probefile import load_probe_file, resolve_probes
    from netparity.record import cluster_dirname, plan_version

    settings = state.settings
    assert settings is not None
    try:  # where results go, before a lab is built or anything is placed or probed
        check_output_dir(settings.report_dir, "the report folder (--report-dir)")
        xml = getattr(config.option, "xmlpath", None)
        if xml:
            check_output_dir(Path(xml).resolve().parent, "the JUnit file's folder (--junitxml)")
    except NetparityError as e:
        raise _usage(e) from None
    try:
        accepts = load_accept(settings.accept) if settings.accept else {}
        specs: list[ProbeSpec] = []
        for path in settings.probes:
            specs.extend(load_probe_file(path))
    except NetparityError as e:
        raise _usage(e) from None
    state.accepts = accepts
    state.explicit = tuple(specs)
    try:
        _open(config, state)
        assert state.backend is not None
        state.facts = facts = state.backend.facts()
        snapshot = state.backend.snapshot()
        check_output_dir(
            settings.report_dir / cluster_dirname(state.cluster), "the cluster's report folder"
        )
    except NetparityError as e:
        raise _usage(e) from None
    version = f" {facts.version}" if facts.version else ""
    state.header.append(
        f"cluster: {state.cluster} (backend {facts.backend}, dataplane {facts.dataplane}{version})"
    )
    state.phase = _choose_phase(state)
    current = (
        state.baseline.dataplane if state.phase == "post" and state.baseline else facts.dataplane
    )
    if (
        state.phase == "post"
        and state.baseline is not None
        and state.baseline.plan.version != plan_version()
    ):
        raise pytest.UsageError(
            f"netparity: the baseline {_show(state.baseline_path)} was planned by plan version "
            f"{state.baseline.plan.version}, this netparity plans version {plan_version()}: "
            "its probes cannot be matched; record a new baseline before the upgrade"
        )
    try:
        resolved = resolve_probes(specs, snapshot)
        plan = make_plan(
            snapshot,
            current=current,
            target=settings.target,
            explicit=resolved,
            external_ip=settings.external_ip,
            responder=settings.responder,
            service_cidr=settings.service_cidr,
        )
    except NetparityError as e:
        raise _usage(e) from None
    state.plan = plan
    if facts.backend == "kubernetes":
        state.header.append(
            f"outside probes: only to the responder {settings.kube.responder}, which answered"
            if settings.kube.responder
            else "outside probes: predicted only (no --responder: nothing netparity controls "
            "answers outside the cluster)"
        )
    explicit_ids = _explicit_expectations(state, resolved, facts.dataplane)
    where = "to be written" if state.phase == "pre" else "read"
    if state.phase == "check":
        where = "kept"
    state.header.append(f"baseline: {_show(state.baseline_path)} ({where})")
    c = plan.coverage
    state.header.append(
        f"plan: {len(plan.probes)} probes for {plan.current} -> {plan.target} "
        f"(digest {plan.digest[:12]}); coverage: {c.rules_with_admit}/{c.rules_total} rules with "
        f"an admit probe, {c.rules_with_reject}/{c.rules_total} with a deny probe, scenarios "
        f"probed {len(c.scenarios_probed)}/{len(c.scenarios_present)}"
        + (f" ({', '.join(c.scenarios_probed)})" if c.scenarios_probed else "")
    )
    if (
        state.baseline is not None
        and state.phase == "post"
        and state.baseline.plan.digest != plan.digest
    ):
        state.header.append(
            "plan: differs from the baseline's (the cluster's policies or workloads changed): "
            "probes only in one run are reported as new or missing"
        )
    if state.phase == "post" and facts.dataplane != plan.target:
        known = any(facts.dataplane in p.predicted for p in plan.probes)
        after = facts.dataplane if known else plan.target
        state.header.append(
            f"plan: the cluster reports dataplane {facts.dataplane}, the plan's target is "
            f"{plan.target} (--target): changes are judged against the predictions for {after}"
        )
    extra = f", {len(specs)} explicit probes from {len(settings.probes)} files" if specs else ""
    accepted = (
        f", {len(accepts)} accepted changes from {settings.accept}" if settings.accept else ""
    )
    state.header.append(
        f"probes: timeout {settings.probe_timeout:g}s, {settings.retries} "
        f"{'retry' if settings.retries == 1 else 'retries'} of each deny{extra}{accepted}; "
        f"reports in {_show(settings.report_dir)}"
    )
    connectivity = [(p.id, p.title) for p in plan.probes if p.id not in explicit_ids]
    explicit = [(p.id, p.title) for p in plan.probes if p.id in explicit_ids]
    if state.phase == "post" and state.baseline is not None:
        # A baseline probe this plan no longer has is missing: it gets an item, which fails.
        planned = {p.id for p in plan.probes}
        for rec in (*state.baseline.probes, *state.baseline.not_run):
            if rec.id not in planned:
                (explicit if rec.intent == "explicit" else connectivity).append((rec.id, rec.title))
    state.items["connectivity"] = _keyed(connectivity)
    state.items["explicit"] = _keyed(explicit)
    state.findings = _lint(snapshot, settings.target, state.phase, keep=state)
    state.items["lint"] = _keyed([(key, title) for key, title, _ in state.findings])


def _keyed(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(zip([k for k, _ in pairs], param_ids(pairs), strict=True))


def _explicit_expectations(state: State, resolved: Sequence[Any], dataplane: str) -> set[str]:
    """The ids of the explicit probes; notes each one's expectation for this dataplane.

    The planner carries a probe file's `expect` on the planned probe (also where it merged
    the explicit probe with a planned one); a plan without it is matched by traffic."""
    assert state.plan is not None
    ids: set[str] = set()
    for p in state.plan.probes:
        if str(p.intent) == "explicit" or p.expect is not None:
            ids.add(p.id)
        if p.expect is not None:
            expected = p.expect.get(dataplane, p.expect.get("*"))
            if expected is not None:
                state.expects[p.id] = str(expected)
    for r in resolved:
        pid = next((p.id for p in state.plan.probes if p.traffic == r.traffic), None)
        if pid is None or pid in state.expects:
            continue
        ids.add(pid)
        expected = r.spec.expected(dataplane)
        if expected is not None:
            state.expects[pid] = str(expected)
    return ids


def _lint(
    snapshot: Any, target: str, phase: str, keep: State | None = None
) -> list[tuple[str, str, ItemVerdict]]:
    """One item per lint finding: a known migration risk, reported as an expected failure."""
    from netparity.lint import lint_snapshot

    try:
        report = lint_snapshot(snapshot, target=target)
    except NetparityError as e:
        raise _usage(e) from None
    if keep is not None:
        keep.lint = report
    out: list[tuple[str, str, ItemVerdict]] = []
    for f in report.findings:
        lines = [f"migration risk ({f.kind}, {f.severity}): {f.message}"]
        for t in f.traffic:
            lines.append(f"  {t.describe()}")
        if f.fix is not None:
            lines.append(
                f"  fix ({f.fix.when}): {f.fix.summary}: {', '.join(f.fix.object_names())}"
            )
        elif f.no_fix_reason:
            lines.append(f"  no NetworkPolicy fix: {f.no_fix_reason}")
        props = (
            ("netparity.lint_id", f.id),
            ("netparity.phase", phase),
            ("netparity.scenario", str(f.kind)),
            ("netparity.severity", f.severity),
            ("netparity.object", f.object),
        )
        out.append(
            (
                f"lint:{f.id}",
                f"{f.kind} {f.object}",
                ItemVerdict(outcome="xfailed", message="\n".join(lines), properties=props),
            )
        )
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    state = _state(session.config)
    if state.settings is None or state.worker:
        return
    _prepare(session.config, state)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = _state(config)
    if not state.active or state.worker:
        return []
    return [
        f"netparity {line}" if not line.startswith("netparity") else line for line in state.header
    ]


# --------------------------------------------------------------------------- probing


def _probe_and_judge(config: pytest.Config, state: State) -> None:
    """Probe the whole plan once, build the record (and the parity), judge every item."""
    from netparity.compare import compare
    from netparity.record import build_record, not_run

    if state.verdicts is not None or state.failure is not None:
        return
    settings, plan, backend, facts = state.settings, state.plan, state.backend, state.facts
    assert settings is not None and plan is not None and backend is not None and facts is not None
    progress = TerminalProgress(config)
    try:
        tries = probe_all(
            backend,
            plan.probes,
            timeout=settings.probe_timeout,
            retries=settings.retries,
            progress=progress,
            dataplane=facts.dataplane,
        )
    except NetparityError as e:
        state.failure = f"probing failed: {e}"
        state.verdicts = {}
        return
    skipped = {pid: why for pid, results in tries.items() if (why := not_run(results))}
    record = build_record(
        facts=facts,
        cluster=state.cluster,
        plan=plan,
        results=tries,
        phase=state.phase,
        probe_timeout=settings.probe_timeout,
        retries=settings.retries,
        expects=state.expects,
        exclude=skipped,
    )
    state.record = record
    verdicts: dict[str, ItemVerdict] = {}
    if state.phase == "post":
        assert state.baseline is not None
        try:
            parity = compare(state.baseline, record, accepts=state.accepts)
        except RecordError as e:
            state.failure = str(e)
            state.verdicts = {}
            return
        state.parity = parity
        for pp in parity.probes:
            verdicts[pp.id] = judge_post(pp, after=parity.after)
    else:
        for rec in record.probes:
            verdicts[rec.id] = judge_pre(rec, plan.current, phase=state.phase, target=plan.target)
        for rec in record.not_run:
            verdicts[rec.id] = ItemVerdict(
                outcome="skipped",
                message=f"not run on the {facts.backend} backend: {rec.not_run}",
                properties=probe_properties(rec, phase=state.phase, status="not-run"),
            )
    for key, _, verdict in state.findings:
        verdicts[key] = verdict
    state.verdicts = verdicts


def pytest_collection_finish(session: pytest.Session) -> None:
    state = _state(session.config)
    if state.settings is None or state.worker or session.config.option.collectonly:
        return
    _probe_and_judge(session.config, state)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: probe once before the first worker starts; hand everything over."""
    config: pytest.Config = node.config
    state = _state(config)
    if state.settings is None:
        return
    if not config.option.collectonly:
        _probe_and_judge(config, state)
    node.workerinput[WORKERINPUT_KEY] = state.to_json()


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
        if self.state.verdicts is None:
            return None
        return self.state.verdicts.get(self.key)

    def check(self) -> None:
        if not self.state.active:
            pytest.skip(
                "the netparity suites run with --cluster NAME (lab, lab:NAME, "
                "file:SNAPSHOT.yaml or a kubeconfig context)"
            )
        if self.state.failure is not None:
            pytest.fail(f"netparity: {self.state.failure}", pytrace=False)
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
        if argname in params and not state.items.get(suite):
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
        pairs = state.items.get(suite, [])
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


def _write(state: State) -> None:
    from netparity.compare import parity_json
    from netparity.record import (
        cluster_dirname,
        record_json,
        record_path,
        write_json_atomic,
        write_record,
    )

    settings, record = state.settings, state.record
    assert settings is not None and record is not None
    path = record_path(settings.report_dir, state.cluster, state.phase, record.time)
    write_record(record, path)
    state.written.append(f"record: {_show(path)}")
    if state.phase == "pre":
        assert state.baseline_path is not None
        write_json_atomic(state.baseline_path, record_json(record), overwrite=settings.force)
        state.written.append(f"baseline: {_show(state.baseline_path)} (written)")
    elif state.phase == "post":
        assert state.parity is not None
        out = settings.report_dir / cluster_dirname(state.cluster) / "parity.json"
        write_json_atomic(
            out,
            parity_json(
                state.parity,
                baseline_path=str(state.baseline_path),
                current_path=str(path),
            ),
        )
        state.written.append(f"parity: {_show(out)}")
    else:
        state.written.append(f"baseline: {_show(state.baseline_path)} (kept)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = _state(session.config)
    if state.settings is None or state.worker:
        return
    if state.record is not None:
        try:
            _write(state)
        except NetparityError as e:
            state.failure = f"the records could not be written: {e}"
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _close(state)


def _close(state: State) -> None:
    backend, state.backend = state.backend, None
    if backend is not None:
        with contextlib.suppress(Exception):
            backend.close()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Also when the session never started (an error or Ctrl-C while planning)."""
    _close(_state(config))
    restore = config.stash.get(_RESTORE_SIGNALS, None)
    if restore is not None:
        del config.stash[_RESTORE_SIGNALS]
        restore()


def _summary(state: State) -> list[str]:
    from netparity.compare import FAILING, MEANING, PASSING, Status, by_cause, summary_line

    lines: list[str] = []
    if state.failure is not None:
        lines.append(f"netparity: {state.failure}")
    if state.parity is not None:
        parity = state.parity
        lines.append(summary_line(parity))
        for status in (*FAILING, *PASSING):
            group = [p for p in parity.probes if p.status is status]
            if not group or status is Status.SAME:
                continue
            detail = by_cause(group)
            meaning = f", {MEANING[status]}" if status in MEANING else ""
            lines.append(f"  {status}: {len(group)} ({detail}{meaning})")
            if status in (Status.MISSING, Status.NOT_RUN):
                lines.extend(
                    f"    {p.id} {p.title}: {p.message.splitlines()[0]}" for p in group[:20]
                )
                if len(group) > 20:
                    lines.append(f"    ... and {len(group) - 20} more (parity.json)")
        lines.extend(f"  note: {n}" for n in parity.notes)
    elif state.record is not None and state.verdicts is not None:
        every = (*state.record.probes, *state.record.not_run)
        probe_verdicts = {r.id: state.verdicts[r.id] for r in every if r.id in state.verdicts}
        by_status: dict[str, int] = {}
        for v in probe_verdicts.values():
            word = dict(v.properties).get("netparity.status", v.outcome)
            by_status[word] = by_status.get(word, 0) + 1
        words = {
            "agrees": "agree with the predictions",
            "disagrees": "disagree with the predictions",
            "unexpected": "contradict their probe file",
            "unpredicted": "cannot be predicted by the engine (xfail)",
            "not-run": "could not be run by the backend (skipped)",
            "error": "could not run",
            "flaky": "flaky",
        }
        detail = ", ".join(f"{n} {words.get(k, k)}" for k, n in sorted(by_status.items()))
        lines.append(
            f"{state.phase}: {len(every)} probes on {state.record.dataplane}: "
            f"{detail or counts_line(probe_verdicts)}"
        )
        bad = sum(n for k, n in by_status.items() if k not in ("agrees", "unpredicted", "not-run"))
        if bad and state.phase == "pre":
            lines.append(
                f"the baseline holds what was observed: look at the {bad} failures above "
                "before trusting it (--phase pre --force records it again)"
            )
    if state.record is not None:
        lines.extend(_predicted_only(state.record.not_run))
        lines.extend(_scenario_lines(state.record))
    if state.lint is not None:  # the lint's "not judged" section, as `netparity lint` prints it
        from netparity.lint.output import not_judged_text

        lines.extend(line for line in not_judged_text(state.lint) if line)
    lines.extend(state.written)
    return lines


def _predicted_only(not_run: Sequence[ProbeRecord]) -> list[str]:
    """The rules whose outside probes were predicted, not probed (netparity.kube.layout's
    PREDICTED_ONLY reasons), each with its probes' count and first reason."""
    by_rule: dict[str, list[ProbeRecord]] = {}
    for p in not_run:
        if (p.not_run or "").startswith("predicted only"):
            for rule in p.rules or (p.rule or "no rule (a scenario probe)",):
                by_rule.setdefault(rule, []).append(p)
    if not by_rule:
        return []
    n = len(by_rule)
    out = [f"predicted only, not probed (outside addresses): {n} rule{'s' if n != 1 else ''}"]
    for rule in sorted(by_rule)[:30]:
        probes = by_rule[rule]
        reason = (probes[0].not_run or "").split(";")[0]
        out.append(f"  {rule}: {len(probes)} probe{'s' if len(probes) != 1 else ''} ({reason})")
    if len(by_rule) > 30:
        out.append(f"  ... and {len(by_rule) - 30} more rules (the record's not_run)")
    return out


def _scenario_lines(record: Any) -> list[str]:
    """Per scenario: probed on this cluster by this run, or only predicted, and why not
    (from the record: its probes' scenarios and the not-run reasons)."""
    from netparity.report.scenarios import scenario_probing, summary_lines

    entries = scenario_probing(
        ((p.scenario, *p.scenarios) if p.scenario else p.scenarios, p.not_run)
        for p in (*record.probes, *record.not_run)
    )
    return summary_lines(entries)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = _state(config)
    if state.settings is None or state.worker:
        return
    lines = _summary(state)
    if lines:
        terminalreporter.write_sep("=", "netparity")
        for line in lines:
            terminalreporter.write_line(line)
