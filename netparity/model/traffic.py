"""Endpoints and traffic: a connection attempt between two ends of a cluster.

Neutral value types: the engine predicts for them, the planner and the lint build them,
the backends (the lab, a Kubernetes cluster) run them. (netparity.engine.traffic
re-exports them beside the verdict types.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from netparity.model.objects import Node, Pod, Protocol, Service
from netparity.model.quick import quick_init

# The documented default address of a client outside the cluster (TEST-NET-3, never routed).
DEFAULT_EXTERNAL_IP = "203.0.113.10"


class Via(StrEnum):
    CLUSTER_IP = "clusterip"
    NODE_PORT = "nodeport"
    LOAD_BALANCER = "lb"


@quick_init
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


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalEndpoint:
    ip: str

    def __str__(self) -> str:
        return f"ip:{self.ip}"


@quick_init
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


@quick_init
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
