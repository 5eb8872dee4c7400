"""The lab's dataplanes: packet filters and Service NAT compiled from a snapshot, per node.

`render(topology)` gives, for every node, the `ipset restore`, `iptables-restore` and
`nft -f` inputs the fabric applies inside the node's namespace, in that order:
- `npm`: kube-proxy (iptables mode) + Azure NPM v2 (iptables + ipsets), see npm.py;
- `cilium`, `cilium-1.16`: Cilium with kube-proxy replacement, as one nft table, see cilium.py.
Both are compiled from `topology.snapshot` alone; the engine is never consulted.
"""

from __future__ import annotations

from collections.abc import Mapping

from netparity.errors import InputError
from netparity.lab.dataplanes import cilium, npm
from netparity.lab.topology import LabTopology, NodeRules

DATAPLANES = ("npm", "cilium", "cilium-1.16")


def render(topology: LabTopology) -> Mapping[str, NodeRules]:
    """The rules of every node of the lab (node name -> rules) for `topology.dataplane`."""
    if topology.dataplane == "npm":
        return npm.render(topology)
    if topology.dataplane in ("cilium", "cilium-1.16"):
        return cilium.render(topology, honour_end_port=topology.dataplane == "cilium")
    raise InputError(
        f"unknown dataplane {topology.dataplane!r} (the lab enforces {', '.join(DATAPLANES)})",
        field="dataplane",
    )


__all__ = ["DATAPLANES", "render"]
