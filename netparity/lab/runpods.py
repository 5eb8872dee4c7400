"""Pods created in a ready lab (by the lab's API server, netparity.labapi): each in its own
network namespace with a veth to its node, routed from every node and external host, as
the CNI would wire it. The dataplane polices a new pod only when `police` re-applies the
rules (the caller waits its programming delay first); deleting a pod removes its
namespace, its routes and its rules. Every edit is recorded in the lab's state, so that
`lab down` removes what is left and `lab upgrade` (which rebuilds from the original
snapshot) drops them, as reimaging a node does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from netparity.lab import netns as nx
from netparity.lab.fabric import (
    HOST_VETH_MAC,
    apply_rules,
    default_render,
    pod_lines,
    require_root,
)
from netparity.lab.lifecycle import status
from netparity.lab.podplan import plan_run_pod
from netparity.lab.state import lab_lock, save_state
from netparity.lab.topology import LabPod, LabTopology
from netparity.model.objects import Pod
from netparity.model.snapshot import Snapshot


def _wire(topology: LabTopology, lp: LabPod) -> None:
    node = topology.node(lp.node)
    nx.add_netns([lp.netns])
    nx.ip_batch(
        [
            f"link add eth0 netns {lp.netns} type veth peer name {lp.host_ifname} "
            f"netns {node.netns} address {HOST_VETH_MAC}"
        ],
        what=f"pod {lp.key}: veth",
    )
    nx.ip_batch(pod_lines(lp), netns=lp.netns, what=f"pod {lp.key}")
    nx.ip_batch(
        [
            f"link set {lp.host_ifname} up",
            f"route replace {lp.ip}/32 dev {lp.host_ifname} scope link",
        ],
        netns=node.netns,
        what=f"node {node.name}: pod {lp.key}",
    )
    nx.sysctl(
        node.netns,
        {
            f"net.ipv4.conf.{lp.host_ifname}.rp_filter": "0",
            f"net.ipv4.conf.{lp.host_ifname}.proxy_arp": "1",
        },
    )
    via = f"route replace {lp.ip}/32 via {node.ip} dev eth0"
    for other in topology.nodes:
        if other.name != node.name:
            nx.ip_batch([via], netns=other.netns, what=f"node {other.name}: route to {lp.key}")
    for host in topology.hosts:
        nx.ip_batch([via], netns=host.netns, what=f"host {host.ip}: route to {lp.key}")
    nx.wait_links_up([node.netns])


def _with_pod(snapshot: Snapshot, pod: Pod) -> Snapshot:
    pods = tuple(sorted((*snapshot.pods, pod), key=lambda p: p.key))
    return dataclasses.replace(snapshot, pods=pods)


def add_pod(name: str, pod: Pod, *, ready: bool = False) -> LabPod:
    """Wire `pod` (placed: node_name set) into ready lab `name` and record it; its address
    is in the returned LabPod. Not policed yet: call `police` (after the delay)."""
    require_root()
    with lab_lock(name):
        state = status(name)
        assert state.topology is not None
        topology = state.topology
        if any(p.key == pod.key for p in topology.pods):
            raise ValueError(f"pod {pod.key} is already in lab {name}")
        lp = plan_run_pod(topology, pod)
        placed = dataclasses.replace(pod, ip=lp.ip, node_name=lp.node)
        updated = dataclasses.replace(
            topology,
            pods=(*topology.pods, lp),
            snapshot=_with_pod(topology.snapshot, placed),
            not_ready=topology.not_ready if ready else topology.not_ready | {pod.key},
        )
        if not lp.host_network:
            _wire(topology, lp)
        save_state(dataclasses.replace(state, topology=updated))
        return lp


def police(name: str) -> None:
    """Render the lab's rules from its state and apply them on every node (what the
    dataplane does once it has learnt the lab's pods and Services)."""
    require_root()
    with lab_lock(name):
        state = status(name)
        assert state.topology is not None
        apply_rules(state.topology, default_render()(state.topology), lambda: None)


def remove_pods(name: str, keys: Iterable[str]) -> None:
    """Remove pods added by `add_pod`: their processes, namespaces, routes and rules."""
    require_root()
    wanted = set(keys)
    with lab_lock(name):
        state = status(name)
        assert state.topology is not None
        topology = state.topology
        gone = [p for p in topology.pods if p.key in wanted and not p.host_network]
        gone_keys = {p.key for p in topology.pods if p.key in wanted}
        if not gone_keys:
            return
        own = [p.netns for p in gone]
        nx.end_processes_in(own)
        nx.delete_netns(own)
        for lp in gone:
            dead = [f"route del {lp.ip}/32"]
            for ns in (*(n.netns for n in topology.nodes), *(h.netns for h in topology.hosts)):
                nx.ip_batch_force(dead, netns=ns)
        snap = topology.snapshot
        updated = dataclasses.replace(
            topology,
            pods=tuple(p for p in topology.pods if p.key not in gone_keys),
            snapshot=dataclasses.replace(
                snap, pods=tuple(p for p in snap.pods if p.key not in gone_keys)
            ),
            not_ready=topology.not_ready - gone_keys,
        )
        save_state(dataclasses.replace(state, topology=updated))
        apply_rules(updated, default_render()(updated), lambda: None)
