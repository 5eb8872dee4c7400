"""The lab's dataplanes: packet filters and Service NAT compiled from a snapshot, per node.

`render(topology)` gives, for every node, the `ipset restore`, `iptables-restore` and
`nft -f` inputs the fabric applies inside the node's namespace, in that order, from the
renderer registered under `topology.dataplane` (registry.py). Each renderer module
registers its dataplanes when imported:
- npm.py: kube-proxy (iptables mode) + Azure NPM v2 (iptables + ipsets);
- cilium.py: Cilium with kube-proxy replacement, as one nft table (two releases); its
  identities and per-pod policy rules are compiled in cilium_policy.py.
All are compiled from `topology.snapshot` alone; the engine is never consulted.
"""

from __future__ import annotations

from collections.abc import Mapping

# isort: off
# Imported for their registrations, in the order the CLI lists the dataplanes.
from netparity.lab.dataplanes import npm
from netparity.lab.dataplanes import cilium

# isort: on
from netparity.lab.dataplanes.registry import DATAPLANES, Render, register, renderer, unregister
from netparity.lab.topology import LabTopology, NodeRules

_BUILT_IN = (npm, cilium)


def render(topology: LabTopology) -> Mapping[str, NodeRules]:
    """The rules of every node of the lab (node name -> rules) for `topology.dataplane`."""
    return renderer(topology.dataplane)(topology)


__all__ = ["DATAPLANES", "Render", "register", "render", "renderer", "unregister"]
