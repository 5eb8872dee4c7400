"""The plugin's options: one resolver per option (the declarations are option_table.py's).

Each resolver reads one option (command line > ini file, where it has an ini twin) and
raises pytest.UsageError naming the bad value, as pytest-xdist and pytest-timeout do;
`resolve_settings` puts them together into the run's `Settings`.
"""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path

import pytest

from netparity.engine.dataplane import TARGETS
from netparity.errors import InputError, NetparityError
from netparity.option_table import (
    DEFAULT_PROBE_RETRIES,
    DEFAULT_PROBE_TIMEOUT,
    DEFAULT_REPORT_DIR,
    DEFAULT_TARGET,
    GROUP,
    GROUP_DESCRIPTION,
    INI_OPTIONS,
    KUBE_VALUE_OPTIONS,
    MORE_VALUE_OPTIONS,
    OLD_RETRIES_INI,
    PHASES,
    RETRIES_INI,
    VALUE_OPTIONS,
    pytest_addoption,
)
from netparity.run.settings import Settings
from netparity.session import ClusterSpec, KubeOptions, parse_cluster

# --------------------------------------------------------------------------- resolvers


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


def _number(
    config: pytest.Config,
    dest: str,
    *,
    ini: str | None,
    low: float,
    high: float,
    what: str,
    whole: bool = False,
) -> float | None:
    """A number from `low` to `high` (None where not given); `what` ends the error."""
    raw, where = _value(config, dest, ini)
    if raw is None:
        return None
    try:
        value = float(int(raw)) if whole else float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise pytest.UsageError(f"netparity: {where} {raw!r} must be {what}")
    return value


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


def resolve_cluster(config: pytest.Config) -> ClusterSpec | None:
    """--cluster, or None; the options that need it are refused without it."""
    raw_cluster = config.getoption("netparity_cluster")
    if raw_cluster is None:
        others = {
            "--phase": config.getoption("netparity_phase"),
            "--baseline": config.getoption("netparity_baseline"),
            "--accept": config.getoption("netparity_accept"),
            "--probes": config.getoption("netparity_probes") or None,
            "--force": config.getoption("netparity_force") or None,
        }
        given = [k for k, v in others.items() if v is not None]
        if given:
            raise pytest.UsageError(
                f"netparity: {', '.join(given)} needs --cluster NAME (lab, lab:NAME, "
                "file:SNAPSHOT.yaml or a kubeconfig context)"
            )
        return None
    try:
        return parse_cluster(str(raw_cluster))
    except NetparityError as e:
        message = e.message if isinstance(e, InputError) else str(e)
        raise pytest.UsageError(f"netparity: --cluster {raw_cluster!r}: {message}") from None


def resolve_phase(config: pytest.Config) -> str:
    phase = str(config.getoption("netparity_phase") or "auto")
    if phase not in PHASES:
        raise pytest.UsageError(f"netparity: --phase {phase!r} is not one of {', '.join(PHASES)}")
    return phase


def resolve_during(config: pytest.Config, phase: str) -> tuple[float, bool, int]:
    """--interval, --until-stable and --max-sentinels: (interval, until_stable,
    max_sentinels); given with another phase than during, refused."""
    interval = _number(
        config,
        "netparity_interval",
        ini="netparity_interval",
        low=0.1,
        high=3600,
        what="a number of seconds from 0.1 to 3600",
    )
    sentinels = _number(
        config,
        "netparity_max_sentinels",
        ini="netparity_max_sentinels",
        low=1,
        high=100_000,
        what="a whole number from 1 to 100000",
        whole=True,
    )
    flag = bool(config.getoption("netparity_until_stable"))
    stable = flag or bool(config.getini("netparity_until_stable"))
    given = [
        name
        for name, value in (
            ("--interval", config.getoption("netparity_interval")),
            ("--max-sentinels", config.getoption("netparity_max_sentinels")),
            ("--until-stable", flag or None),
        )
        if value is not None
    ]
    if given and phase != "during":
        raise pytest.UsageError(
            f"netparity: {', '.join(given)} only applies with --phase during (the watch); "
            f"this run has --phase {phase}"
        )
    return (
        2.0 if interval is None else interval,
        stable,
        500 if sentinels is None else int(sentinels),
    )


def resolve_target(config: pytest.Config) -> str:

    target, where = _value(config, "netparity_target", "netparity_target")
    target = target or DEFAULT_TARGET
    if target not in TARGETS:
        raise pytest.UsageError(
            f"netparity: {where} {target!r} is not a target dataplane "
            f"(expected {' or '.join(TARGETS)})"
        )
    return target


def resolve_probe_timeout(config: pytest.Config) -> float:
    name = "netparity_probe_timeout"
    what = "a number of seconds above 0 and at most 300"
    value = _number(config, name, ini=name, low=math.ulp(0.0), high=300, what=what)
    return DEFAULT_PROBE_TIMEOUT if value is None else value


def resolve_probe_retries(config: pytest.Config) -> int:
    ini = _retries_ini(config)
    what = "a whole number from 0 to 10"
    value = _number(
        config, "netparity_probe_retries", ini=ini, low=0, high=10, what=what, whole=True
    )
    return DEFAULT_PROBE_RETRIES if value is None else int(value)


def resolve_report_dir(config: pytest.Config) -> Path:
    """Relative to the current folder on the command line, to the rootdir in an ini file."""
    raw_dir, where = _value(config, "netparity_report_dir", "netparity_report_dir")
    if raw_dir is None:
        return Path(config.invocation_params.dir) / DEFAULT_REPORT_DIR
    if where.startswith("--"):
        return Path(config.invocation_params.dir) / raw_dir
    return config.rootpath / raw_dir


def resolve_force(config: pytest.Config, phase: str) -> bool:
    force = bool(config.getoption("netparity_force"))
    if force and phase != "pre":
        raise pytest.UsageError(
            "netparity: --force only applies with --phase pre (it replaces the baseline); "
            f"this run has --phase {phase}"
        )
    return force


def resolve_baseline(config: pytest.Config, phase: str) -> Path | None:
    raw_baseline = config.getoption("netparity_baseline")
    if raw_baseline is None:
        return None
    baseline = Path(config.invocation_params.dir) / str(raw_baseline)
    if phase != "pre" and not baseline.is_file():
        raise pytest.UsageError(
            f"netparity: --baseline {raw_baseline!r} does not exist "
            "(a baseline is recorded with --phase pre)"
        )
    return baseline


def resolve_accept(config: pytest.Config) -> Path | None:
    raw_accept, where = _value(config, "netparity_accept", "netparity_accept")
    if raw_accept is None:
        return None
    base = Path(config.invocation_params.dir) if where.startswith("--") else config.rootpath
    accept = base / raw_accept
    if not accept.is_file():
        raise pytest.UsageError(f"netparity: {where} {raw_accept!r}: no such file")
    return accept


def resolve_probes(config: pytest.Config) -> tuple[Path, ...]:
    probes = []
    for raw in config.getoption("netparity_probes") or ():
        p = Path(config.invocation_params.dir) / str(raw)
        if not p.is_file():
            raise pytest.UsageError(f"netparity: --probes {raw!r}: no such file")
        probes.append(p)
    return tuple(probes)


def resolve_dataplane(config: pytest.Config, cluster: ClusterSpec) -> str | None:
    from netparity.engine.dataplane import DATAPLANES

    dataplane = config.getoption("netparity_dataplane")
    if dataplane is not None and dataplane not in DATAPLANES:
        raise pytest.UsageError(
            f"netparity: --dataplane {dataplane!r} is not one of {', '.join(DATAPLANES)}"
        )
    if dataplane is not None and cluster.kind != "kubernetes":
        raise pytest.UsageError(
            f"netparity: --dataplane applies to a Kubernetes cluster; {cluster.text!r} says "
            "its own (a lab's is set by `netparity lab up/upgrade`, a file's by @DATAPLANE)"
        )
    return None if dataplane is None else str(dataplane)


def resolve_max_parallel(config: pytest.Config) -> int:
    what = "a whole number from 1 to 256"
    name = "netparity_max_parallel"
    value = _number(config, name, ini=None, low=1, high=256, what=what, whole=True)
    return 8 if value is None else int(value)


def resolve_kube_qps(config: pytest.Config) -> float | None:
    """None where not given: the client's default (netparity.kube.client.DEFAULT_QPS)."""
    what = "a number of requests a second from 0.1 to 10000"
    name = "netparity_kube_qps"
    return _number(config, name, ini=name, low=0.1, high=10_000, what=what)


def resolve_max_duration(config: pytest.Config) -> float | None:
    what = "a number of seconds from 60 to 604800 (a week)"
    name = "netparity_max_duration"
    return _number(config, name, ini=name, low=60, high=7 * 24 * 3600, what=what)


def resolve_settle(config: pytest.Config) -> float | None:
    what = "a number of seconds from 0 to 600"
    return _number(config, "netparity_settle", ini="netparity_settle", low=0, high=600, what=what)


def resolve_wait_ready(config: pytest.Config) -> float:
    what = "a number of seconds from 0 to 86400"
    name = "netparity_wait_ready"
    value = _number(config, name, ini=name, low=0, high=24 * 3600, what=what)
    return 0.0 if value is None else value


def resolve_external_ip(config: pytest.Config) -> str:
    from netparity.engine.traffic import DEFAULT_EXTERNAL_IP

    external_ip = str(config.getoption("netparity_external_ip") or DEFAULT_EXTERNAL_IP)
    try:
        ipaddress.IPv4Address(external_ip)
    except ValueError:
        raise pytest.UsageError(
            f"netparity: --external-ip {external_ip!r} is not an IPv4 address"
        ) from None
    return external_ip


def resolve_responder(config: pytest.Config) -> tuple[str | None, str | None]:
    """--responder as given, and its address."""
    raw_responder = config.getoption("netparity_responder")
    if raw_responder is None:
        return None, None
    from netparity.kube.responder import parse_responder

    try:
        return str(raw_responder), parse_responder(str(raw_responder)).ip
    except NetparityError as e:
        raise pytest.UsageError(f"netparity: {e}") from None


def resolve_service_cidr(config: pytest.Config) -> ipaddress.IPv4Network | None:
    from netparity.plan.addresses import parse_service_cidr

    raw_cidr = config.getoption("netparity_service_cidr")
    try:
        return parse_service_cidr(str(raw_cidr)) if raw_cidr is not None else None
    except NetparityError as e:
        raise pytest.UsageError(f"netparity: {e}") from None


def resolve_kube(
    config: pytest.Config, cluster: ClusterSpec, *, external_ip: str, responder: str | None
) -> KubeOptions:
    """The Kubernetes backend's options."""
    dataplane = resolve_dataplane(config, cluster)
    max_parallel = resolve_max_parallel(config)
    image, _ = _value(config, "netparity_probe_image", "netparity_probe_image")
    max_duration = resolve_max_duration(config)
    settle = resolve_settle(config)
    wait_ready = resolve_wait_ready(config)
    kube_qps = resolve_kube_qps(config)
    return KubeOptions(
        kube_qps=kube_qps,
        responder=responder,
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


def resolve_settings(config: pytest.Config) -> Settings | None:
    """Every netparity option, validated, or None when no --cluster is given.

    Raises pytest.UsageError naming the bad value."""
    cluster = resolve_cluster(config)
    if cluster is None:
        return None
    phase = resolve_phase(config)
    target = resolve_target(config)
    timeout = resolve_probe_timeout(config)
    retries = resolve_probe_retries(config)
    report_dir = resolve_report_dir(config)
    force = resolve_force(config, phase)
    baseline = resolve_baseline(config, phase)
    accept = resolve_accept(config)
    probes = resolve_probes(config)
    external_ip = resolve_external_ip(config)
    responder_given, responder = resolve_responder(config)
    kube = resolve_kube(config, cluster, external_ip=external_ip, responder=responder_given)
    interval, until_stable, max_sentinels = resolve_during(config, phase)
    if phase == "during" and cluster.kind == "file":
        raise pytest.UsageError(
            f"netparity: --phase during watches a lab or a Kubernetes cluster; {cluster.text!r} "
            "is a snapshot file"
        )
    return Settings(
        interval=interval,
        until_stable=until_stable,
        max_sentinels=max_sentinels,
        responder=responder,
        service_cidr=resolve_service_cidr(config),
        external_ip=external_ip,
        kube=kube,
        cluster=cluster,
        phase=phase,
        baseline=baseline,
        target=target,
        accept=accept,
        probes=probes,
        probe_timeout=timeout,
        retries=retries,
        report_dir=report_dir,
        force=force,
    )


__all__ = [
    "DEFAULT_PROBE_RETRIES",
    "DEFAULT_PROBE_TIMEOUT",
    "DEFAULT_REPORT_DIR",
    "DEFAULT_TARGET",
    "GROUP",
    "GROUP_DESCRIPTION",
    "INI_OPTIONS",
    "KUBE_VALUE_OPTIONS",
    "MORE_VALUE_OPTIONS",
    "OLD_RETRIES_INI",
    "PHASES",
    "RETRIES_INI",
    "VALUE_OPTIONS",
    "pytest_addoption",
    "resolve_accept",
    "resolve_baseline",
    "resolve_cluster",
    "resolve_dataplane",
    "resolve_during",
    "resolve_external_ip",
    "resolve_force",
    "resolve_kube",
    "resolve_kube_qps",
    "resolve_max_duration",
    "resolve_max_parallel",
    "resolve_phase",
    "resolve_probe_retries",
    "resolve_probe_timeout",
    "resolve_probes",
    "resolve_report_dir",
    "resolve_responder",
    "resolve_service_cidr",
    "resolve_settings",
    "resolve_settle",
    "resolve_target",
    "resolve_wait_ready",
]
