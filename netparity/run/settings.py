"""A run's settings, validated (netparity.options resolves them from pytest's options)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from netparity.session import ClusterSpec, KubeOptions


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
    # --phase during (the watch, netparity.watch.during)
    interval: float = 2.0  # --interval: seconds between two rounds
    until_stable: bool = False  # --until-stable
    max_sentinels: int = 500  # --max-sentinels
