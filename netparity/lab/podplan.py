"""Where a pod created in a ready lab lives (pure): its own network namespace and veth,
an address from its node's pod range that nothing in the lab uses, as the CNI's IPAM
would hand out. The fabric (`netparity.lab.runpods`) builds what this plans."""

from __future__ import annotations

import ipaddress

from netparity.errors import ClusterError
from netparity.lab.addressing import POD_GATEWAY, node_net
from netparity.lab.topology import LabPod, LabTopology
from netparity.model.objects import Pod

RUN_POD_TAG = "r"  # a run pod's namespace np-LAB-rN and veth azrN


def run_pod_index(lp: LabPod) -> int | None:
    tail = lp.netns.rsplit("-", 1)[-1]
    if tail.startswith(RUN_POD_TAG) and tail[len(RUN_POD_TAG) :].isdigit():
        return int(tail[len(RUN_POD_TAG) :])
    return None


def _used(topology: LabTopology) -> set[int]:
    used = {int(ipaddress.IPv4Address(POD_GATEWAY))}
    used |= {int(ipaddress.IPv4Address(n.ip)) for n in topology.nodes}
    used |= {int(ipaddress.IPv4Address(p.ip)) for p in topology.pods}
    used |= {int(ipaddress.IPv4Address(h.ip)) for h in topology.hosts}
    for svc in topology.snapshot.services:
        for addr in (svc.cluster_ip, *svc.load_balancer_ips):
            if addr and addr != "None":
                used.add(int(ipaddress.ip_address(addr)))
    return used


def plan_run_pod(topology: LabTopology, pod: Pod) -> LabPod:
    """The place of `pod` (placed on a node of the lab) in the lab: a hostNetwork pod is
    its node's namespace and address; any other gets a namespace, a veth and the first free
    address of its node's podCIDR (of the node subnet without one)."""
    if pod.node_name is None:
        raise ClusterError(f"pod {pod.key} is not placed on a node")
    try:
        node = topology.node(pod.node_name)
    except KeyError:
        raise ClusterError(f"pod {pod.key} asks for node {pod.node_name}, not in the lab") from None
    if pod.host_network:
        return LabPod(
            key=pod.key,
            node=node.name,
            netns=node.netns,
            ip=node.ip,
            host_ifname="",
            host_network=True,
            ports=pod.ports,
        )
    pool = ipaddress.IPv4Network(node.pod_cidr) if node.pod_cidr else node_net(topology)
    used = _used(topology)
    first, last = int(pool.network_address) + 4, int(pool.broadcast_address) - 1
    free = next((x for x in range(first, last + 1) if x not in used), None)
    if free is None:
        raise ClusterError(f"the pod range {pool} of node {node.name} has no free address")
    index = max((i for p in topology.pods if (i := run_pod_index(p)) is not None), default=-1)
    return LabPod(
        key=pod.key,
        node=node.name,
        netns=f"np-{topology.lab}-{RUN_POD_TAG}{index + 1}",
        ip=str(ipaddress.IPv4Address(free)),
        host_ifname=f"az{RUN_POD_TAG}{index + 1}",
        host_network=False,
        ports=pod.ports,
    )
