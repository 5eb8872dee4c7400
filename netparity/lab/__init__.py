"""The lab: a sealed local cluster of Linux network namespaces, built from a snapshot.

`up` builds it, `upgrade` renumbers every pod under another dataplane, `down` removes it,
`LabBackend` runs probes in it. The topology contract shared with the dataplanes is in
`netparity.lab.topology`.
"""

from netparity.lab.build import (
    DEFAULT_LAB,
    StderrProgress,
    add_hosts,
    down,
    list_labs,
    plan_topology,
    remove_services,
    status,
    up,
    upgrade,
)
from netparity.lab.dataplanes.registry import DATAPLANES
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
