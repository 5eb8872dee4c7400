"""The lab's shape: which namespace holds which node, pod and external host, at which address.

This is the contract between the fabric (namespaces, links, routes: fabric.py; agents:
agents.py) and the dataplanes (packet filters and service NAT inside node namespaces: dataplanes/).
Pure values; computed from a snapshot by `plan_topology` in addressing.py.

Addressing (all inside the lab, never on a real interface):
- a "vnet" namespace holds one bridge that every node and external host is linked to;
- nodes keep the snapshot's InternalIP (prefix `node_prefix`) on `eth0`;
- pods keep the snapshot's podIP (else one from the node's podCIDR) as a /32 on `eth0`,
  reached from the node through a host route on the pod's veth (`host_ifname`), no bridge,
  as Azure CNI's transparent mode does; the pod's default route points at the node;
- hostNetwork pods live in their node's namespace;
- external hosts keep their address as a /32 on `eth0` with on-link routes to the nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from netparity.model.objects import ContainerPort
from netparity.model.snapshot import Snapshot

# The packet mark kube-proxy uses for "masquerade this" (KUBE-MARK-MASQ).
KUBE_MASQ_MARK = 0x4000


@dataclass(frozen=True, slots=True, kw_only=True)
class LabNode:
    name: str
    netns: str
    ip: str
    pod_cidr: str | None
    uplink: str = "eth0"


@dataclass(frozen=True, slots=True, kw_only=True)
class LabPod:
    key: str  # namespace/name
    node: str
    netns: str  # the pod's own namespace, or the node's for a hostNetwork pod
    ip: str
    host_ifname: str  # the veth end in the node namespace ("" for hostNetwork pods)
    host_network: bool
    ports: tuple[ContainerPort, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LabHost:
    """A host outside the cluster (the default client, every ipBlock address)."""

    name: str
    netns: str
    ip: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LabTopology:
    lab: str
    dataplane: str
    vnet_netns: str
    node_prefix: int
    nodes: tuple[LabNode, ...]
    pods: tuple[LabPod, ...]
    hosts: tuple[LabHost, ...]
    snapshot: Snapshot  # the lab's live state: pods at the addresses they have in the lab
    # pods that are not Ready (a run's pods whose readiness gate nobody sets): no Service
    # sends to them unless it publishes not-ready addresses
    not_ready: frozenset[str] = frozenset()

    def node(self, name: str) -> LabNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def pods_on(self, node: str) -> tuple[LabPod, ...]:
        return tuple(p for p in self.pods if p.node == node)

    def pod(self, key: str) -> LabPod:
        for p in self.pods:
            if p.key == key:
                return p
        raise KeyError(key)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRules:
    """What a dataplane installs in one node namespace, applied in this order."""

    ipset: str = ""  # input for `ipset restore`
    iptables: str = ""  # input for `iptables-restore` (nft backend), all tables it names
    nft: str = ""  # input for `nft -f`


Rendered = Mapping[str, NodeRules]  # node name -> rules
