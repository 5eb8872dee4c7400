"""The one-process prober against the per-batch agent, on the same real lab (root, never
skipped): the same verdicts for allowed, refused and dropped probes, TCP and UDP, from many
sources at once; a dropped probe costs one timeout in parallel with the others."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from netparity.backend import Observed, Target
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    Traffic,
)
from netparity.errors import ClusterError
from netparity.lab import LabBackend
from netparity.lab import netns as nx
from netparity.lab.netns import NETNS_DIR
from netparity.lab.prober import _Namespace
from netparity.lab.runner import PROBER_ENV, Prober
from netparity.lab.topology import LabTopology, NodeRules
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot, snapshot_from_dicts

import lab_fixtures
from lab_fixtures import Lab, LabFactory, unique_lab_name

module_lab_factory = lab_fixtures.module_lab_factory

DROPPED_TCP, DROPPED_UDP = 8080, 54
PODS = 6


def _snapshot() -> Snapshot:
    docs: list[dict[str, Any]] = []
    for i, name in enumerate(("n1", "n2")):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name},
                "spec": {"podCIDR": f"10.244.{i}.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": f"10.224.0.{4 + i}"}]},
            }
        )
    for j in range(PODS):
        node = j % 2
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{j}", "namespace": "x", "labels": {"app": f"a{j}"}},
                "spec": {
                    "nodeName": f"n{node + 1}",
                    "containers": [
                        {
                            "name": "c",
                            "ports": [
                                {"containerPort": 80},
                                {"containerPort": DROPPED_TCP},
                                {"containerPort": 53, "protocol": "UDP"},
                                {"containerPort": DROPPED_UDP, "protocol": "UDP"},
                            ],
                        }
                    ],
                },
                "status": {"podIP": f"10.244.{node}.{10 + j}"},
            }
        )
    return snapshot_from_dicts(docs)


def drop_render(topology: LabTopology) -> Mapping[str, NodeRules]:
    """A stand-in dataplane that drops TCP 8080 and UDP 54 between pods."""
    rules = (
        "*filter\n"
        f"-A FORWARD -p tcp --dport {DROPPED_TCP} -j DROP\n"
        f"-A FORWARD -p udp --dport {DROPPED_UDP} -j DROP\n"
        "COMMIT\n"
    )
    return {n.name: NodeRules(iptables=rules) for n in topology.nodes}


@pytest.fixture(scope="module")
def lab(module_lab_factory: LabFactory) -> Lab:
    return module_lab_factory(_snapshot(), render=drop_render)


# (port, protocol, what every way must see)
KINDS = [
    (80, Protocol.TCP, Observed.CONNECTED),
    (81, Protocol.TCP, Observed.REFUSED),
    (DROPPED_TCP, Protocol.TCP, Observed.TIMEOUT),
    (53, Protocol.UDP, Observed.CONNECTED),
    (55, Protocol.UDP, Observed.REFUSED),
    (DROPPED_UDP, Protocol.UDP, Observed.TIMEOUT),
]


def _targets(snap: Snapshot) -> tuple[list[Target], list[Observed | None]]:
    pods = list(snap.pods)
    targets: list[Target] = []
    expected: list[Observed | None] = []
    for i, src in enumerate(pods):  # every pod a source, to every other pod, every kind
        for j, dst in enumerate(pods):
            if i == j:
                continue
            for port, proto, want in KINDS:
                t = Traffic(
                    source=PodEndpoint(pod=src),
                    destination=PodEndpoint(pod=dst),
                    port=port,
                    protocol=proto,
                )
                targets.append(Target(id=f"{src.name}-{dst.name}-{port}{proto}", traffic=t))
                expected.append(want)
    node = snap.nodes[0]
    outside = ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP)
    for k, (src, dst, port) in enumerate(
        [
            (PodEndpoint(pod=pods[0]), NodeEndpoint(node=node), 10250),
            (outside, PodEndpoint(pod=pods[1]), 80),
            (PodEndpoint(pod=pods[2]), outside, 443),
        ]
    ):
        t = Traffic(source=src, destination=dst, port=port, protocol=Protocol.TCP)
        targets.append(Target(id=f"extra{k}", traffic=t))
        expected.append(Observed.CONNECTED)
    return targets, expected


def test_the_prober_and_the_agent_give_the_same_verdicts_on_the_same_lab(lab: Lab) -> None:
    targets, expected = _targets(lab.snapshot)
    by_way = {
        way: LabBackend(lab.name, prober=way).run(targets, timeout=1.0)
        for way in (Prober.PROCESS, Prober.AGENT)
    }
    for way, results in by_way.items():
        seen = [r.observed for r in results]
        wrong = [(t.id, s, e) for t, s, e in zip(targets, seen, expected, strict=True) if s != e]
        assert not wrong, (way, wrong[:5])
    process, agent = by_way[Prober.PROCESS], by_way[Prober.AGENT]
    assert [(r.id, r.observed, r.token, r.address, r.source) for r in process] == [
        (r.id, r.observed, r.token, r.address, r.source) for r in agent
    ]
    tokens = {r.token for r in process if r.observed is Observed.CONNECTED}
    assert {f"x/p{j}" for j in range(PODS)} <= tokens  # each answer came from its pod


def test_dropped_probes_from_every_source_cost_one_timeout_in_parallel(lab: Lab) -> None:
    pods = list(lab.snapshot.pods)
    targets = [
        Target(
            id=f"d{i}-{j}-{k}",
            traffic=Traffic(
                source=PodEndpoint(pod=pods[i]),
                destination=PodEndpoint(pod=pods[j]),
                port=DROPPED_TCP if k % 2 else DROPPED_UDP,
                protocol=Protocol.TCP if k % 2 else Protocol.UDP,
            ),
        )
        for i in range(PODS)
        for j in range(PODS)
        if i != j
        for k in range(8)
    ]
    t0 = time.monotonic()
    results = LabBackend(lab.name, prober=Prober.PROCESS).run(targets, timeout=1.5)
    took = time.monotonic() - t0
    assert {r.observed for r in results} == {Observed.TIMEOUT}
    assert 1.5 <= took < 5.5, f"{len(targets)} dropped probes took {took:.1f} s"


def test_a_socket_made_for_a_namespace_lives_there_and_the_thread_comes_back(lab: Lab) -> None:
    pod = lab.topology.pods[0]
    here = os.readlink("/proc/thread-self/ns/net")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open(NETNS_DIR / pod.netns, os.O_RDONLY)
    try:
        with _Namespace(fd, home).socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((pod.ip, 0))  # the pod's address exists only in its namespace
        with socket.socket() as outside, pytest.raises(OSError):
            outside.bind((pod.ip, 0))
    finally:
        os.close(fd)
        os.close(home)
    assert os.readlink("/proc/thread-self/ns/net") == here
    assert threading.current_thread() is threading.main_thread()


def test_the_prober_is_chosen_by_option_or_environment(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LabBackend(lab.name).prober is Prober.PROCESS
    monkeypatch.setenv(PROBER_ENV, "agent")
    assert LabBackend(lab.name).prober is Prober.AGENT
    assert LabBackend(lab.name, prober="process").prober is Prober.PROCESS
    monkeypatch.setenv(PROBER_ENV, "fast")
    with pytest.raises(
        ClusterError, match="NETPARITY_LAB_PROBER='fast': expected one of process, agent"
    ):
        LabBackend(lab.name)


def test_an_agent_that_cannot_be_imported_makes_each_probe_an_error_naming_it(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "agent.py"
    fake.write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setenv("NETPARITY_AGENT", str(fake))
    targets, _ = _targets(lab.snapshot)
    results = LabBackend(lab.name).run(targets[:4], timeout=1.0)
    assert [r.observed for r in results] == [Observed.ERROR] * 4
    assert all(f"cannot load the probe agent {fake}" in (r.error or "") for r in results)


def test_links_count_as_up_only_once_the_kernel_carries_traffic_over_them() -> None:
    """A lab is ready only when its bridge ports forward: `ip link set up` returns before
    the kernel acts on a veth's carrier, and a probe sent in between is a false timeout
    (the ARP request is dropped and sent again only a second later)."""
    lab_fixtures._require_root()
    hub, leaf = (f"np-{unique_lab_name('w')}-{n}" for n in ("hub", "leaf"))
    nx.add_netns([hub, leaf])
    try:
        nx.ip_batch(
            [
                "link add br0 type bridge stp_state 0 forward_delay 0",
                "link set br0 up",
                f"link add p0 type veth peer name eth0 netns {leaf}",
                "link set p0 master br0",
                "link set p0 up",
            ],
            netns=hub,
        )
        # The far end is down: the port can never forward, and waiting says which link.
        with pytest.raises(ClusterError, match=rf"links not up after 0 s: {hub}/p0 is "):
            nx.wait_links_up([hub], timeout=0.2)
        nx.ip_batch(["link set eth0 up"], netns=leaf)
        nx.wait_links_up([hub])
        port = nx.run(["bridge", "-n", hub, "link", "show", "dev", "p0"])
        assert "state forwarding" in port, port
    finally:
        nx.delete_netns([hub, leaf])
