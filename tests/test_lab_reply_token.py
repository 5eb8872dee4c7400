"""The lab counts a connection only when the expected destination answered (runner.py's reply
token check), on a real lab: a DNAT in the source pod's namespace sends the probe to another
pod's agent, which answers with its own name; the probe is an `error` naming who answered.
Root, never skipped; the rule is removed after the probe, and the lab with the test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from netparity.backend import Observed
from netparity.engine.traffic import PodEndpoint
from netparity.lab.topology import LabTopology, NodeRules
from netparity.model.snapshot import Snapshot, snapshot_from_dicts

import lab_fixtures
from lab_fixtures import Lab, LabFactory

lab_factory = lab_fixtures.lab_factory


def _pod(key: str, ip: str, port: int, app: str) -> dict[str, Any]:
    namespace, name = key.split("/")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "c", "ports": [{"containerPort": port, "protocol": "TCP"}]}],
        },
        "status": {"podIP": ip},
    }


SNAP: Snapshot = snapshot_from_dicts(
    [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.224.0.4"}]},
        },
        _pod("x/a", "10.244.0.10", 80, "a"),
        _pod("x/b", "10.244.0.11", 8080, "b"),
        _pod("x/c", "10.244.0.12", 8080, "c"),  # listens on b's port: it can answer for b
    ]
)


def no_policy(topology: LabTopology) -> Mapping[str, NodeRules]:
    """No dataplane rules at all: every connection is let through, so only routing and the
    DNAT below decide who answers."""
    return {}


def endpoint(key: str) -> PodEndpoint:
    pod = SNAP.pod(*key.split("/"))
    assert pod is not None
    return PodEndpoint(pod=pod)


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    return lab_factory(SNAP, render=no_policy)


def _iptables(netns: str, op: str, rule: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "iptables", "-w", "-t", "nat", op, "OUTPUT", *rule],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def to_the_wrong_pod(lab: Lab) -> Iterator[tuple[str, str]]:
    """In x/a's namespace: x/b:8080 -> x/c:8080 (the traffic goes elsewhere). Removed after."""
    topo = lab.topology
    src, b, c = topo.pod("x/a"), topo.pod("x/b"), topo.pod("x/c")
    rule = ["-d", f"{b.ip}/32", "-p", "tcp", "--dport", "8080"]
    rule += ["-j", "DNAT", "--to-destination", f"{c.ip}:8080"]
    added = _iptables(src.netns, "-A", rule)
    assert added.returncode == 0, added.stderr
    try:
        yield b.ip, c.ip
    finally:
        removed = _iptables(src.netns, "-D", rule)
        assert removed.returncode == 0, removed.stderr


def test_the_right_agent_answering_is_connected(lab: Lab) -> None:
    # the control: without the DNAT, x/b's own agent answers and the probe counts
    r = lab.probe(endpoint("x/a"), endpoint("x/b"), 8080)
    assert r.observed is Observed.CONNECTED and r.token == "x/b", r


def test_another_agent_answering_is_an_error_naming_who_answered(
    lab: Lab, to_the_wrong_pod: tuple[str, str]
) -> None:
    b_ip, _ = to_the_wrong_pod
    r = lab.probe(endpoint("x/a"), endpoint("x/b"), 8080)
    assert r.observed is Observed.ERROR, r
    assert r.token == "x/c"  # kept in the result: who really answered
    assert r.error == (
        f"{b_ip}:8080/TCP was answered by 'x/c', not by 'x/b': another agent holds that "
        "address or the traffic went elsewhere, so it is not counted as connected"
    ), r.error
    # the rule changed nothing else: x/c itself still answers as itself
    direct = lab.probe(endpoint("x/a"), endpoint("x/c"), 8080)
    assert direct.observed is Observed.CONNECTED and direct.token == "x/c", direct
