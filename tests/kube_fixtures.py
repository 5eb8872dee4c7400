"""pytest fixtures for tests against the loopback API server (tests/kubeapi.py).

Use them from a test module by binding the fixtures to module names:

    import kube_fixtures
    api = kube_fixtures.api                 # a started server with the demo cluster
    kubeconfig = kube_fixtures.kubeconfig   # a kubeconfig file that reaches `api`

    def test_x(api, kubeconfig): ...

A module that needs a differently started server defines its own `api` fixture and still
binds `kubeconfig`, which then reaches that server. Every server is stopped when its fixture
ends, whether the test passed or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeapi import KubeAPI, demo_cluster


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    server = KubeAPI().start()
    try:
        demo_cluster(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(api: KubeAPI, tmp_path: Path) -> str:
    return str(api.kubeconfig(tmp_path / "kubeconfig"))


class Log(list[str]):
    """A backend's `log`: keeps every message it is given, in order."""

    def __call__(self, message: str) -> None:
        self.append(message)
