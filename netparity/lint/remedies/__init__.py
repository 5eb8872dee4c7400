"""The remedy for each kind of finding: the objects that would restore parity.

One builder per kind turns a finding into a proposal (NetworkPolicies to apply before the
migration, a CiliumNetworkPolicy to apply after it, or a policy to delete), or says why
there is none (`NoFix`). fixes.py checks every proposal against the engine before it is
offered. Edits to one NetworkPolicy accumulate: a builder starts from the last checked
version of the policy.

The builders live by subject (`ports.py`, `selectors.py`, `nodes.py`, `services.py`,
`untranslatable.py`); what they share is `context.py`. A new kind of finding gets its remedy
with a function `(ctx, finding) -> Proposal` and one line in `BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from netparity.lint.findings import Finding
from netparity.lint.probes import ProbeBuilder
from netparity.lint.remedies import (
    cilium_rows,
    itp_local,
    nodes,
    ns_selector,
    ports,
    selectors,
    services,
    source_ranges,
    untranslatable,
)
from netparity.lint.remedies.context import MAX_PEERS, NoFix, Proposal, RemedyContext
from netparity.lint.remedies.nodes import NO_NP_FOR_NODES
from netparity.lint.remedies.ports import MAX_EXPANDED_PORTS
from netparity.plan.model import Scenario

__all__ = [
    "BUILDERS",
    "MAX_EXPANDED_PORTS",
    "MAX_PEERS",
    "NO_NP_FOR_NODES",
    "Builder",
    "NoFix",
    "Proposal",
    "Remedies",
    "RemedyContext",
]

Builder = Callable[[RemedyContext, Finding], Proposal]

# The dispatch table: a finding's kind (a SEMANTICS scenario) to the builder of its remedy.
BUILDERS: dict[str, Builder] = {
    Scenario.ENDPORT: ports.endport,
    Scenario.NAMED_PORT: ports.named_port,
    Scenario.SCTP: ports.sctp,
    Scenario.IPBLOCK_PODS: selectors.ipblock_pods,
    Scenario.IDENTITY_LABELS: selectors.identity_labels,
    Scenario.IPBLOCK_NODES: nodes.ipblock_nodes,
    Scenario.NODE_EGRESS: nodes.node_egress,
    Scenario.EXTERNAL_INGRESS: services.external_ingress,
    Scenario.LB_IN_CLUSTER: services.lb_in_cluster,
    Scenario.UNTRANSLATABLE: untranslatable.untranslatable,
    Scenario.POLICY_TYPES: cilium_rows.policy_types,
    Scenario.NS_SELECTOR_OR: ns_selector.ns_selector_or,
    Scenario.LB_SOURCE_RANGES: source_ranges.lb_source_ranges,
    Scenario.ITP_LOCAL: itp_local.itp_local,
}


class Remedies(RemedyContext):
    """The per-kind builders, bound to what they share (`builders[kind](finding)`)."""

    def __init__(self, probes: ProbeBuilder) -> None:
        super().__init__(probes)
        self.builders: dict[str, Callable[[Finding], Proposal]] = {
            kind: partial(build, self) for kind, build in BUILDERS.items()
        }
