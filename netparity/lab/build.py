"""The lab's former one-module home, kept so that `netparity.lab.build` imports go on
working. The lab is now one module per concept:

- `netparity.lab.addressing`: pure planning (which namespace, which address);
- `netparity.lab.fabric`: namespaces, links, routes, sysctls and packet filters;
- `netparity.lab.agents`: the probe agents;
- `netparity.lab.lifecycle`: `up`, `down`, `upgrade`, `status`, locks, edits to a ready lab.

New code imports from those modules (or from `netparity.lab`).
"""

from __future__ import annotations

from netparity.lab.addressing import (
    DATAPLANES,
    DEFAULT_LAB,
    LB_CIDR,
    NODE_PORT_RANGE,
    POD_GATEWAY,
    SERVICE_CIDR,
    check_dataplane,
    check_lab_name,
    netns_prefix,
    plan_services,
    plan_topology,
    policy_blocks,
)
from netparity.lab.agents import (
    EXTERNAL_TCP,
    EXTERNAL_UDP,
    KUBELET_PORT,
    AgentSpec,
    agent_path,
    agent_python,
    agent_specs,
    host_agent,
    policy_ports,
    start_agents,
)
from netparity.lab.fabric import HOST_VETH_MAC, Render
from netparity.lab.lifecycle import (
    StderrProgress,
    add_hosts,
    add_services,
    changing,
    down,
    lab_problem,
    list_labs,
    remove_services,
    status,
    up,
    upgrade,
)

_plan_services = plan_services  # the name tests/test_services.py reads

__all__ = [
    "DATAPLANES",
    "DEFAULT_LAB",
    "EXTERNAL_TCP",
    "EXTERNAL_UDP",
    "HOST_VETH_MAC",
    "KUBELET_PORT",
    "LB_CIDR",
    "NODE_PORT_RANGE",
    "POD_GATEWAY",
    "SERVICE_CIDR",
    "AgentSpec",
    "Render",
    "StderrProgress",
    "add_hosts",
    "add_services",
    "agent_path",
    "agent_python",
    "agent_specs",
    "changing",
    "check_dataplane",
    "check_lab_name",
    "down",
    "host_agent",
    "lab_problem",
    "list_labs",
    "netns_prefix",
    "plan_services",
    "plan_topology",
    "policy_blocks",
    "policy_ports",
    "remove_services",
    "start_agents",
    "status",
    "up",
    "upgrade",
]
