"""pytest fixtures for tests that need a lab: `lab_factory` builds labs and always removes them.

Use them from a test module by binding the fixtures to module names:

    import lab_fixtures
    lab_factory = lab_fixtures.lab_factory                 # one lab per test
    module_lab_factory = lab_fixtures.module_lab_factory   # labs shared by a module's tests

    def test_x(lab_factory):
        lab = lab_factory(snapshot, dataplane="npm")       # render: the real dataplanes
        r = lab.probe(PodEndpoint(pod=a), PodEndpoint(pod=b), 80)
        assert r.observed is Observed.CONNECTED and r.token == "x/b"

Lab tests need root; without it they fail loudly, they are never skipped. Every lab a
factory built is torn down when its fixture ends, whether the test passed or not.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from netparity.backend import Observed, ProbeResult, Target
from netparity.engine.traffic import Endpoint, Traffic
from netparity.lab import LabBackend, LabTopology, StderrProgress, down, up, upgrade
from netparity.lab.build import Render
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot

_COUNTER = itertools.count()
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def unique_lab_name(prefix: str = "t") -> str:
    """A lab name no other live process uses: prefix + this pid (base 36) + a counter."""
    pid, digits = os.getpid(), ""
    while pid:
        pid, r = divmod(pid, 36)
        digits = _DIGITS[r] + digits
    n, count = next(_COUNTER), ""
    while True:
        n, r = divmod(n, 36)
        count = _DIGITS[r] + count
        if not n:
            break
    name = f"{prefix}{digits}{count}"
    if len(name) > 8:
        raise RuntimeError(f"lab name {name!r} is too long; use a shorter prefix")
    return name


@dataclass
class Lab:
    """A lab built for a test: its name, its backend, and a one-probe helper."""

    name: str
    backend: LabBackend
    progress: StderrProgress

    @property
    def topology(self) -> LabTopology:
        return self.backend.topology()

    @property
    def snapshot(self) -> Snapshot:
        return self.backend.snapshot()

    def run(self, traffic: Sequence[Traffic], *, timeout: float = 2.0) -> list[ProbeResult]:
        targets = [Target(id=f"t{i}", traffic=t) for i, t in enumerate(traffic)]
        return self.backend.run(targets, timeout=timeout)

    def probe(
        self,
        source: Endpoint,
        destination: Endpoint,
        port: int | str,
        protocol: Protocol = Protocol.TCP,
        *,
        timeout: float = 2.0,
    ) -> ProbeResult:
        traffic = Traffic(source=source, destination=destination, port=port, protocol=protocol)
        return self.run([traffic], timeout=timeout)[0]


@dataclass
class LabFactory:
    """Builds labs (`factory(snapshot, ...)`), upgrades them, and removes them all at the end."""

    names: list[str] = field(default_factory=list)

    def __call__(
        self,
        snapshot: Snapshot,
        *,
        dataplane: str = "npm",
        render: Render | None = None,
        name: str | None = None,
    ) -> Lab:
        name = name or unique_lab_name()
        down(name)  # a lab of this name can only be a leftover of a dead process
        self.names.append(name)
        progress = StderrProgress(name, stream=sys.stderr, interval=1.0)
        up(snapshot, name=name, dataplane=dataplane, render=render, progress=progress)
        return Lab(name=name, backend=LabBackend(name), progress=progress)

    def upgrade(self, lab: Lab, dataplane: str = "cilium", *, render: Render | None = None) -> Lab:
        upgrade(lab.name, dataplane, render=render, progress=lab.progress)
        return lab

    def cleanup(self) -> None:
        errors = []
        for name in reversed(self.names):
            try:
                down(name)
            except Exception as e:  # keep removing the others
                errors.append(f"{name}: {e}")
        self.names.clear()
        if errors:
            raise RuntimeError("lab teardown failed: " + "; ".join(errors))


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (network namespaces); run pytest as root", pytrace=False)


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Build labs in a test; every lab it built is torn down after the test, pass or fail."""
    _require_root()
    factory = LabFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture(scope="module")
def module_lab_factory() -> Iterator[LabFactory]:
    """As `lab_factory`, for labs shared by the tests of one module."""
    _require_root()
    factory = LabFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


def connected(result: ProbeResult, token: str) -> bool:
    return result.observed is Observed.CONNECTED and result.token == token
