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

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeapi import KubeAPI, demo_cluster
from kubeapi import pod as kube_pod


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


# --------------------------------------------------------------------------- node reimages
# What a node reimage looks like from the API (AKS upgrades and the Cilium migration): the
# node is cordoned and NotReady and its pods are evicted (twins too), then it leaves the
# cluster (the pod garbage collector removes whatever still stood on it) and comes back,
# possibly under a new name; the controllers recreate the real pods under new names.


def drain(api: KubeAPI, name: str) -> list[dict[str, Any]]:
    """Cordon the node, mark it NotReady and evict every pod on it outside kube-system (as
    `kubectl drain` does); returns the evicted pods as they were."""
    api.do_patch(
        "nodes",
        "",
        name,
        {
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        },
    )
    with api.lock:
        evicted = [
            copy.deepcopy(p)
            for (plural, ns, _), p in sorted(api.store.items())
            if plural == "pods" and ns != "kube-system" and p["spec"].get("nodeName") == name
        ]
    for p in evicted:
        api.do_delete("pods", p["metadata"]["namespace"], p["metadata"]["name"], {})
    return evicted


def remove_node(api: KubeAPI, name: str) -> None:
    """Delete the node; the pod garbage collector removes the pods still bound to it."""
    with api.lock:
        bound = [
            (ns, n)
            for (plural, ns, n), p in sorted(api.store.items())
            if plural == "pods" and p["spec"].get("nodeName") == name
        ]
    for ns, n in bound:
        api.do_delete("pods", ns, n, {})
    api.do_delete("nodes", "", name, {})


def recreate(api: KubeAPI, evicted: dict[str, Any], *, name: str, node_name: str, ip: str) -> None:
    """A controller's new pod for an evicted one: same labels and ports, a new name, node
    and address."""
    meta = evicted["metadata"]
    api.add(
        kube_pod(
            meta["namespace"],
            name,
            meta.get("labels") or {},
            node_name,
            ip,
            evicted["spec"]["containers"][0].get("ports") or [],
        )
    )
