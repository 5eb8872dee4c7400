"""The snapshot model: the policy-relevant state of a cluster as frozen values.

Everything here is pure: parsing of wire dicts (from YAML files or the live API) into
values, validation with errors naming the object and field, and no I/O beyond reading
the files a user names.
"""

from netparity.model.networkpolicy import IPBlock, NetworkPolicy, PolicyPeer, PolicyPort, PolicyRule
from netparity.model.objects import (
    ContainerPort,
    Namespace,
    Node,
    Pod,
    Protocol,
    Service,
    ServicePort,
)
from netparity.model.selectors import LabelSelector, Requirement
from netparity.model.snapshot import Snapshot, load_snapshot, snapshot_from_dicts

__all__ = [
    "ContainerPort",
    "IPBlock",
    "LabelSelector",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "Pod",
    "PolicyPeer",
    "PolicyPort",
    "PolicyRule",
    "Protocol",
    "Requirement",
    "Service",
    "ServicePort",
    "Snapshot",
    "load_snapshot",
    "snapshot_from_dicts",
]
