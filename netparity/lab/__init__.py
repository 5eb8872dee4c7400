"""The lab: a sealed local cluster of Linux network namespaces, built from a snapshot.

`up` builds it, `upgrade` renumbers every pod under another dataplane, `down` removes it,
`LabBackend` runs probes in it. The topology contract shared with the dataplanes is in
`netparity.lab.topology`. One module per concept: `addressing` (pure planning), `fabric`
(namespaces, links, routes, rules), `agents` (probe agents), `lifecycle` (up, down,
upgrade, status, locks); `netparity.lab.build` re-exports them for older imports.
"""

from netparity.lab.addressing import DATAPLANES, DEFAULT_LAB, plan_topology
from netparity.lab.lifecycle import (
    StderrProgress,
    add_hosts,
    down,
    list_labs,
    remove_services,
    status,
    up,
    upgrade,
)
from netparity.lab.runner import LabBackend
from netparity.lab.topology import LabHost, LabNode, LabPod, LabTopology, NodeRules

__all__ = [
    "DATAPLANES",
    "DEFAULT_LAB",
    "LabBackend",
    "LabHost",
    "LabNode",
    "LabPod",
    "LabTopology",
    "NodeRules",
    "StderrProgress",
    "add_hosts",
    "down",
    "list_labs",
    "plan_topology",
    "remove_services",
    "status",
    "up",
    "upgrade",
]
