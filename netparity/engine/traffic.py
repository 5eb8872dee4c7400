"""Endpoints, traffic and verdicts: the values the engine takes and gives.

The endpoint and traffic types live in netparity.model.traffic (neutral: the lab reads
them without the engine) and are re-exported here, so existing imports keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from netparity.model.quick import quick_init
from netparity.model.traffic import DEFAULT_EXTERNAL_IP as DEFAULT_EXTERNAL_IP
from netparity.model.traffic import Endpoint as Endpoint
from netparity.model.traffic import ExternalEndpoint as ExternalEndpoint
from netparity.model.traffic import NodeEndpoint as NodeEndpoint
from netparity.model.traffic import PodEndpoint as PodEndpoint
from netparity.model.traffic import ServiceEndpoint as ServiceEndpoint
from netparity.model.traffic import Traffic as Traffic
from netparity.model.traffic import Via as Via


class PathKind(StrEnum):
    POD_POD = "pod-pod"
    POD_NODE = "pod-node"
    POD_EXTERNAL = "pod-external"
    POD_SERVICE = "pod-service"
    POD_NODEPORT = "pod-nodeport"
    POD_LB = "pod-lb"
    EXTERNAL_POD = "external-pod"
    EXTERNAL_NODEPORT = "external-nodeport"
    EXTERNAL_LB = "external-lb"
    NODE_POD = "node-pod"
    NODE_SERVICE = "node-service"
    NODE_NODE = "node-node"
    EXTERNAL_NODE = "external-node"
    OTHER = "other"


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleRef:
    """A rule that admitted (or denied) traffic: `kind namespace/name direction[index]`."""

    policy: str  # e.g. "NetworkPolicy x/allow-a"
    direction: str  # "ingress", "egress", "ingressDeny", "egressDeny"
    index: int | None = None  # None: the policy as a whole

    def __str__(self) -> str:
        return (
            self.policy if self.index is None else f"{self.policy} {self.direction}[{self.index}]"
        )


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class DirectionResult:
    """One side's decision: who was the subject, who selected it, what admitted or not."""

    direction: str  # "ingress" or "egress"
    subject: str  # pod key, or a description of a non-pod end
    decision: Decision
    why: str  # the reason as a str.format template over the fields below (built lazily)
    peer: object = ""  # what the subject saw at the other end (its str() is used)
    port: str = ""  # e.g. "80/TCP"
    selected_by: tuple[str, ...] = ()
    rules: tuple[RuleRef, ...] = ()  # rules that admitted (allow) or denied (deny rules)
    _reason: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def reason(self) -> str:
        """One sentence: which policies selected the subject and what admitted it, or not
        (written once, when first asked)."""
        text = self._reason
        if text is None:
            text = self.why.format(
                subject=self.subject,
                peer=self.peer,
                port=self.port,
                direction=self.direction,
                rules=", ".join(str(r) for r in self.rules),
                selected=", ".join(self.selected_by),
            )
            object.__setattr__(self, "_reason", text)
        return text


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    decision: Decision
    path: PathKind
    egress: DirectionResult | None = None
    ingress: DirectionResult | None = None
    notes: tuple[str, ...] = ()  # how the path was resolved (service translation, SNAT, ...)
    uncertain: tuple[str, ...] = ()  # [VERIFY] points the verdict depends on
    backend: str | None = None  # the pod key that receives the traffic, if any
    port: int | None = None  # the destination port after resolution (targetPort, named port)
    # D22: a Service without endpoints, which the dataplane rejects: `refused` is this deny
    refused_is_deny: bool = False
    _explanation: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def explanation(self) -> str:
        """The notes, each side's reason and the uncertain points (written once)."""
        text = self._explanation
        if text is None:
            parts = list(self.notes)
            for side in (self.egress, self.ingress):
                if side is not None:
                    parts.append(f"{side.direction}: {side.reason}")
            parts.extend(f"uncertain: {u}" for u in self.uncertain)
            text = "; ".join(parts)
            object.__setattr__(self, "_explanation", text)
        return text
