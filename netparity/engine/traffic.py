"""Endpoints, traffic and verdicts: the values the engine takes and gives."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from netparity.model.objects import Node, Pod, Protocol, Service

# The documented default address of a client outside the cluster (TEST-NET-3, never routed).
DEFAULT_EXTERNAL_IP = "203.0.113.10"


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


class Via(StrEnum):
    CLUSTER_IP = "clusterip"
    NODE_PORT = "nodeport"
    LOAD_BALANCER = "lb"


@dataclass(frozen=True, slots=True, kw_only=True)
class PodEndpoint:
    pod: Pod

    def __str__(self) -> str:
        return self.pod.key


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeEndpoint:
    node: Node

    def __str__(self) -> str:
        return f"node:{self.node.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalEndpoint:
    ip: str

    def __str__(self) -> str:
        return f"ip:{self.ip}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceEndpoint:
    """A Service reached by ClusterIP, or by NodePort / LoadBalancer IP on a receiving node."""

    service: Service
    via: Via = Via.CLUSTER_IP
    node: Node | None = None  # the receiving node (NodePort / LB)
    backend: Pod | None = None  # the backend chosen; None: the first ready backend

    def __str__(self) -> str:
        base = {Via.CLUSTER_IP: "svc", Via.NODE_PORT: "nodeport", Via.LOAD_BALANCER: "lb"}[self.via]
        at = (
            f"@{self.node.name}" if self.node is not None and self.via is not Via.CLUSTER_IP else ""
        )
        return f"{base}:{self.service.key}{at}"


Endpoint = PodEndpoint | NodeEndpoint | ExternalEndpoint | ServiceEndpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class Traffic:
    """A connection attempt. For a Service, `port` is the Service port; for a pod, the
    container port number or name (resolved against the destination pod)."""

    source: Endpoint
    destination: Endpoint
    port: int | str
    protocol: Protocol = Protocol.TCP

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination}:{self.port}/{self.protocol}"


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

    @property
    def reason(self) -> str:
        """One sentence: which policies selected the subject and what admitted it, or not."""
        return self.why.format(
            subject=self.subject,
            peer=self.peer,
            port=self.port,
            direction=self.direction,
            rules=", ".join(str(r) for r in self.rules),
            selected=", ".join(self.selected_by),
        )


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

    @property
    def explanation(self) -> str:
        parts = list(self.notes)
        for side in (self.egress, self.ingress):
            if side is not None:
                parts.append(f"{side.direction}: {side.reason}")
        parts.extend(f"uncertain: {u}" for u in self.uncertain)
        return "; ".join(parts)
