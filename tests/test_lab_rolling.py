"""`lab upgrade --rolling`: one node at a time, NPM's rules gone from each reimaged node, the
new dataplane enforcing only when every node is back, and the reimage log in the state."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from netparity.backend import Observed
from netparity.example import example_path
from netparity.lab.addressing import plan_topology
from netparity.lab.fabric import apply_rules, default_render
from netparity.lab.rolling import upgrade_rolling, without_policies
from netparity.lab.state import load_state
from netparity.model.snapshot import Snapshot, load_snapshot
from netparity.model.traffic import PodEndpoint

import lab_fixtures

lab_factory = lab_fixtures.lab_factory


def _example() -> Snapshot:
    return load_snapshot([str(example_path())])


def test_a_rolling_upgrade_reimages_node_by_node_and_enforces_at_the_end(lab_factory) -> None:
    snap = _example()
    lab = lab_factory(snap, dataplane="npm")
    before = {p.key: p.ip for p in lab.topology.pods if not p.host_network}
    agents = len(lab.backend.state().agents)
    said: list[str] = []
    upgrade_rolling(lab.name, "cilium", node_delay=0.1, say=said.append)
    state = load_state(lab.name)
    assert state is not None and state.rolling is not None and state.topology is not None
    assert (state.dataplane, state.generation) == ("cilium", 1)
    log = state.rolling
    assert [r.node for r in log.reimages] == [n.name for n in snap.nodes]
    ends = [r.end for r in log.reimages]
    assert all(e is not None for e in ends)
    for earlier, later in zip(log.reimages, log.reimages[1:], strict=False):
        assert earlier.end is not None and earlier.end <= later.start  # one at a time
    assert log.enforced is not None and log.enforced >= max(e for e in ends if e is not None)
    assert sum("reimaging node" in m for m in said) == len(snap.nodes)
    # every pod came back at the address a plain upgrade gives it
    planned = plan_topology(snap, lab=lab.name, dataplane="cilium", generation=1)
    after = {p.key: p.ip for p in state.topology.pods if not p.host_network}
    assert after == {p.key: p.ip for p in planned.pods if not p.host_network}
    assert all(after[k] != ip for k, ip in before.items())
    assert len(state.agents) == agents  # every agent came back, none twice
    # NPM's rules are gone from every node
    for node in state.topology.nodes:
        out = subprocess.run(
            ["ip", "netns", "exec", node.netns, "ipset", "list", "-n"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert not out.strip(), f"{node.name} still has ipsets: {out.split()[:3]}"


def test_a_reimaged_node_does_not_enforce_before_the_last_node_is_back(lab_factory) -> None:
    """What the guide warns of: the rules a reimaged node gets before enforcement begins
    admit what a policy denies (the watch's lab test sees it node by node)."""
    snap = _example()
    lab = lab_factory(snap, dataplane="npm")
    topo = lab.topology
    # find a pair NPM denies (a deny-all namespace exists in the example)
    pods = [p for p in topo.snapshot.pods if p.ip and not p.host_network]
    denied = None
    for src in pods:
        for dst in pods:
            if src.key == dst.key or not dst.ports or src.node_name == dst.node_name:
                continue
            r = lab.probe(
                PodEndpoint(pod=src), PodEndpoint(pod=dst), dst.ports[0].port, timeout=0.5
            )
            if r.observed is Observed.TIMEOUT:
                denied = (src, dst)
                break
        if denied:
            break
    assert denied is not None, "the example has no denied pod pair: this test proves nothing"
    src, dst = denied
    # both nodes without policies, as reimaged nodes before enforcement
    rendered = default_render()(without_policies(dataclasses.replace(topo, dataplane="cilium")))
    try:
        apply_rules(topo, rendered, lambda: None)
        r = lab.probe(PodEndpoint(pod=src), PodEndpoint(pod=dst), dst.ports[0].port, timeout=1.0)
        assert r.observed is Observed.CONNECTED, r
    finally:
        apply_rules(topo, default_render()(topo), lambda: None)
    r = lab.probe(PodEndpoint(pod=src), PodEndpoint(pod=dst), dst.ports[0].port, timeout=0.5)
    assert r.observed is Observed.TIMEOUT, r


def test_node_delay_needs_rolling_on_the_command_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netparity", "lab", "upgrade", "--name", "zz", "--node-delay", "1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--node-delay needs --rolling" in proc.stderr


@pytest.mark.parametrize("delay", [-1.0])
def test_a_negative_node_delay_is_refused(delay: float) -> None:
    from netparity.errors import ClusterError

    with pytest.raises(ClusterError, match="--node-delay"):
        upgrade_rolling("zzneg", "cilium", node_delay=delay)
