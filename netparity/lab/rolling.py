"""`lab upgrade --rolling`: a dataplane change one node at a time, as AKS reimages a node
pool (Microsoft's guide: "Cilium will begin enforcing network policies only after all
nodes are reimaged").

Each node in turn: its pods leave the lab's state (a watch sees them as not placed), every
process in its namespaces ends, NPM's rules are removed from it, its pods come back at new
addresses (the addresses a plain `upgrade` gives them), and the node gets the new
dataplane's Service handling without any policy; the nodes not reimaged yet keep NPM,
which learns the new addresses. When every node is back, the new dataplane enforces on
all of them at once. The reimage log (per node: start, end; when enforcement began) is
kept in the lab's state (`LabState.rolling`).

It runs beside users (a watch) as an upgrader, never beside another changer; it takes the
edit lock one node at a time, so that a user may add its hosts and Services between nodes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

from netparity.errors import ClusterError
from netparity.interrupts import checkpoint
from netparity.lab.addressing import DEFAULT_LAB, check_dataplane, check_lab_name, plan_topology
from netparity.lab.agents import agent_specs, start_agents
from netparity.lab.fabric import Render, apply_rules, default_render, reimage_node, require_root
from netparity.lab.lifecycle import _clear_leftovers, _teardown, changing
from netparity.lab.state import (
    UPGRADER,
    LabState,
    Reimage,
    Rolling,
    lab_lock,
    load_state,
    save_state,
)
from netparity.lab.topology import LabPod, LabTopology, NodeRules

Say = Callable[[str], None]


def without_policies(topology: LabTopology) -> LabTopology:
    """The lab as a dataplane that does not enforce yet sees it: no policy at all (Services
    are still translated)."""
    snap = dataclasses.replace(topology.snapshot, network_policies=(), cilium_policies=())
    return dataclasses.replace(topology, snapshot=snap)


def _with_pods(topology: LabTopology, node: str, new: tuple[LabPod, ...]) -> LabTopology:
    """`topology` with the pods of `node` replaced by `new` (the lab's snapshot too)."""
    order = {p.key: i for i, p in enumerate(topology.pods)}
    kept = [p for p in topology.pods if p.node != node]
    pods = tuple(sorted((*kept, *new), key=lambda p: order.get(p.key, len(order))))
    ips = {p.key: p.ip for p in new if not p.host_network}
    snap = topology.snapshot
    spods = tuple(dataclasses.replace(p, ip=ips[p.key]) if p.key in ips else p for p in snap.pods)
    return dataclasses.replace(topology, pods=pods, snapshot=dataclasses.replace(snap, pods=spods))


def _draining(topology: LabTopology, node: str) -> LabTopology:
    """The lab while `node` is reimaged: none of its pods is placed."""
    return dataclasses.replace(topology, pods=tuple(p for p in topology.pods if p.node != node))


def _rules(
    topology: LabTopology, source: str, target: str, done: set[str], render: Render
) -> Mapping[str, NodeRules]:
    """Every node's rules mid-upgrade: NPM (`source`) where the node is not reimaged yet,
    `target` without policies where it is."""
    old = render(dataclasses.replace(topology, dataplane=source))
    new = render(without_policies(dataclasses.replace(topology, dataplane=target)))
    return {n.name: (new if n.name in done else old)[n.name] for n in topology.nodes}


def upgrade_rolling(
    name: str = DEFAULT_LAB,
    dataplane: str = "cilium",
    *,
    node_delay: float = 0.0,
    render: Render | None = None,
    say: Say | None = None,
    wait: float = 0.0,
) -> LabTopology:
    """Reimage lab `name` one node at a time onto `dataplane`, then enforce (module doc).
    The lab's generation goes up by one; its pods end at the addresses `upgrade` gives
    them. On any failure or interrupt the lab is removed (it is half-migrated)."""
    check_lab_name(name)
    check_dataplane(dataplane)
    require_root()
    if node_delay < 0:
        raise ClusterError(f"--node-delay must be 0 or more, got {node_delay:g}")
    tell: Say = say if say is not None else (lambda _m: None)
    draw = render or default_render()
    with changing(name, kind=UPGRADER, wait=wait, edit=False):
        with lab_lock(name):
            state = _clear_leftovers(name, for_up=False)
            if state is None or state.original is None or state.topology is None:
                raise ClusterError(
                    f"there is no lab named {name}; build it with `netparity lab up` first"
                )
            source = state.dataplane
            generation = state.generation + 1
            planned = plan_topology(
                state.original, lab=name, dataplane=dataplane, generation=generation
            )
            draw(planned)  # a target that cannot be rendered fails before anything changes
            _check_addresses(state.topology, planned)
            rolling = Rolling(source=source, target=dataplane, start=time.time())
            save_state(dataclasses.replace(state, rolling=rolling))
        try:
            nodes = [n.name for n in planned.nodes]
            done: set[str] = set()
            for i, node in enumerate(nodes):
                tell(f"reimaging node {node} ({i + 1}/{len(nodes)})")
                started = time.monotonic()
                _reimage(name, node, planned, source, dataplane, done, draw)
                done.add(node)
                tell(
                    f"node {node} is back on {dataplane} (not enforcing yet), "
                    f"in {time.monotonic() - started:.1f} s"
                )
                if node_delay:
                    time.sleep(node_delay)
            checkpoint("rolling:enforce")
            with lab_lock(name):
                state = _current(name)
                assert state.topology is not None and state.rolling is not None
                final = dataclasses.replace(state.topology, dataplane=dataplane)
                apply_rules(final, draw(final), lambda: None)
                save_state(
                    dataclasses.replace(
                        state,
                        dataplane=dataplane,
                        generation=generation,
                        topology=final,
                        rolling=dataclasses.replace(state.rolling, enforced=time.time()),
                    )
                )
            tell(f"every node is reimaged: {dataplane} enforces network policies")
            return final
        except BaseException:
            with lab_lock(name):
                _teardown(name)
            raise


def _current(name: str) -> LabState:
    state = load_state(name)
    if state is None or state.topology is None:
        raise ClusterError(f"lab {name} was removed during its rolling upgrade")
    return state


def _reimage(
    name: str,
    node: str,
    planned: LabTopology,
    source: str,
    target: str,
    done: set[str],
    draw: Render,
) -> None:
    with lab_lock(name):
        state = _current(name)
        topo = state.topology
        assert topo is not None and state.rolling is not None
        gone = {topo.node(node).netns, *(p.netns for p in topo.pods_on(node))}
        entry = Reimage(node=node, start=time.time())
        rolling = dataclasses.replace(state.rolling, reimages=(*state.rolling.reimages, entry))
        save_state(
            dataclasses.replace(
                state,
                topology=_draining(topo, node),
                agents=tuple(a for a in state.agents if a.netns not in gone),
                rolling=rolling,
            )
        )
        checkpoint("rolling:node")
        after = _with_pods(topo, node, planned.pods_on(node))
        reimage_node(topo, after, node)
        apply_rules(after, _rules(after, source, target, done | {node}, draw), lambda: None)
        back = {after.node(node).netns, *(p.netns for p in after.pods_on(node))}
        specs = [s for s in agent_specs(after) if s.netns in back]
        agents = start_agents(name, specs)
        state = _current(name)
        assert state.rolling is not None
        reimages = tuple(
            dataclasses.replace(r, end=time.time()) if r == entry else r
            for r in state.rolling.reimages
        )
        save_state(
            dataclasses.replace(
                state,
                topology=after,
                agents=(*state.agents, *agents),
                rolling=dataclasses.replace(state.rolling, reimages=reimages),
            )
        )


def _check_addresses(current: LabTopology, planned: LabTopology) -> None:
    """A pod's new address must not be one that another pod still has mid-upgrade."""
    old = {p.ip: p.key for p in current.pods if not p.host_network}
    for p in planned.pods:
        if not p.host_network and p.ip in old and old[p.ip] != p.key:
            raise ClusterError(
                f"lab {current.lab}: pod {p.key}'s new address {p.ip} is still pod "
                f"{old[p.ip]}'s until its node is reimaged; use `netparity lab upgrade` "
                "without --rolling"
            )
