"""The backend contract: what the lab and the Kubernetes backend both provide.

A backend places probe agents and runs batches of probes; it never judges them. The
flow above it (plan, record, compare) only sees these values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from netparity.model.snapshot import Snapshot
from netparity.model.traffic import Traffic


class Observed(StrEnum):
    CONNECTED = "connected"  # the connection (or datagram exchange) succeeded
    REFUSED = "refused"  # the network let it through; nothing listened
    TIMEOUT = "timeout"  # dropped
    ERROR = "error"  # the probe itself failed: never counted as a deny
    NOT_RUN = "not-run"  # the backend cannot run this probe here (said why in `error`)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One probe to run: an id the caller chose and the traffic it means."""

    id: str
    traffic: Traffic
    # an essential probe to a real cluster service (DNS, the API server): "dns" (a DNS query
    # that must get an answer) or "connect" (a TCP connect alone); None: a token probe
    check: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    id: str
    observed: Observed
    token: str | None = None  # who answered (the agent's name)
    latency_ms: float | None = None
    error: str | None = None
    address: str | None = None  # where the probe went, e.g. "10.244.1.5:8080/TCP"
    source: str | None = None  # where it ran from, e.g. "pod x/a@node-1"

    @property
    def allowed(self) -> bool | None:
        """allow (True), deny (False) or unknown (None): refused means the network let it in."""
        if self.observed in (Observed.CONNECTED, Observed.REFUSED):
            return True
        if self.observed is Observed.TIMEOUT:
            return False
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterFacts:
    name: str
    backend: str  # "lab" or "kubernetes"
    dataplane: str  # "npm", "cilium", "cilium-1.16", "spec", or "unknown"
    version: str | None = None  # e.g. the Cilium or NPM version


def token_mismatch(token: str | None, expected: str, where: str) -> str | None:
    """Why a connection that answered with `token` is not one to `expected` (the agent's
    name there), or None. Both backends count a connection only when this is None."""
    if token == expected:
        return None
    if token is None:
        return (
            f"{where} accepted the connection but did not answer with the probe agent's name "
            f"(expected {expected!r}): something else answered there (a sidecar proxy, another "
            f"pod on a reused IP), so it is not counted as connected"
        )
    return (
        f"{where} was answered by {token!r}, not by {expected!r}: another agent holds that "
        f"address or the traffic went elsewhere, so it is not counted as connected"
    )


Progress = Callable[[str, int, int], None]  # (what, done, total)


class Backend(Protocol):
    def facts(self) -> ClusterFacts: ...

    def snapshot(self) -> Snapshot: ...

    def run(
        self, targets: Sequence[Target], *, timeout: float, progress: Progress | None = None
    ) -> list[ProbeResult]:
        """Run every target (one batch per source), results in the order of `targets`."""
        ...

    def close(self) -> None: ...
