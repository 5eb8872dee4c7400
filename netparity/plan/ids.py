"""Probe ids and titles derived from meaning: classes, node roles, Services, port, protocol.

An id never contains a pod name, a pod IP or a node name: pods are named by their class
(namespace and distinguishing labels), nodes by their role relative to the pod at the
other end (`own` / `other`), Services by namespace/name and whether the receiving node
is the backend's node. Outside addresses are kept: they come from policies, not pods.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    Endpoint,
    ExternalEndpoint,
    NodeEndpoint,
    PathKind,
    PodEndpoint,
    ServiceEndpoint,
    Via,
)
from netparity.model.objects import Protocol

ID_LENGTH = 12


def digest(text: str, length: int = ID_LENGTH) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def plan_digest(ids: Iterable[str]) -> str:
    return digest("\n".join(ids), 16)


def path_kind(source: Endpoint, destination: Endpoint) -> PathKind:
    """The path kind as the engine names it, from the endpoints alone."""
    src_pod = isinstance(source, PodEndpoint) and not source.pod.host_network
    if isinstance(source, ServiceEndpoint):
        return PathKind.OTHER
    if isinstance(destination, ServiceEndpoint):
        via = destination.via
        if src_pod:
            return {
                Via.CLUSTER_IP: PathKind.POD_SERVICE,
                Via.NODE_PORT: PathKind.POD_NODEPORT,
                Via.LOAD_BALANCER: PathKind.POD_LB,
            }[via]
        return {
            Via.CLUSTER_IP: PathKind.NODE_SERVICE,
            Via.NODE_PORT: PathKind.EXTERNAL_NODEPORT,
            Via.LOAD_BALANCER: PathKind.EXTERNAL_LB,
        }[via]
    dst_pod = isinstance(destination, PodEndpoint) and not destination.pod.host_network
    dst_node = isinstance(destination, NodeEndpoint) or (
        isinstance(destination, PodEndpoint) and destination.pod.host_network
    )
    src_node = isinstance(source, NodeEndpoint) or (
        isinstance(source, PodEndpoint) and source.pod.host_network
    )
    if src_pod:
        if dst_pod:
            return PathKind.POD_POD
        return PathKind.POD_NODE if dst_node else PathKind.POD_EXTERNAL
    if dst_pod:
        return PathKind.NODE_POD if src_node else PathKind.EXTERNAL_POD
    if dst_node:
        return PathKind.NODE_NODE if src_node else PathKind.EXTERNAL_NODE
    return PathKind.OTHER


def _node_of(endpoint: Endpoint) -> str | None:
    if isinstance(endpoint, PodEndpoint):
        return endpoint.pod.node_name
    if isinstance(endpoint, NodeEndpoint):
        return endpoint.node.name
    return None


def _role(node: str | None, relative_to: str | None) -> str:
    if relative_to is None or node is None:
        return "node"
    return "node:own" if node == relative_to else "node:other"


@dataclass(frozen=True, slots=True, kw_only=True)
class Meaning:
    """What a probe means, in words that survive renumbering; `id` is their digest."""

    source: str
    destination: str
    port: int | str
    port_name: str | None
    protocol: Protocol
    kind: PathKind
    id: str = ""

    def __post_init__(self) -> None:
        text = "|".join(
            (
                self.source,
                self.destination,
                str(self.port),
                self.port_name or "",
                self.protocol.value,
                self.kind.value,
            )
        )
        object.__setattr__(self, "id", digest(text))

    @property
    def title(self) -> str:
        port = f"{self.port}({self.port_name})" if self.port_name else str(self.port)
        return f"{self.source} -> {self.destination} {port}/{self.protocol} {self.kind}"


def meaning(
    source: Endpoint,
    destination: Endpoint,
    port: int | str,
    port_name: str | None,
    protocol: Protocol,
    *,
    class_name: Callable[[str], str | None],
    backend_node: str | None = None,
    default_external: str = DEFAULT_EXTERNAL_IP,
) -> Meaning:
    """`class_name(pod key)` names a pod's class; `backend_node` is where a Service's
    traffic lands (for NodePort/LoadBalancer: is the receiving node the backend's node?)."""
    return Meaning(
        source=_signature(source, destination, class_name, backend_node, default_external),
        destination=_signature(destination, source, class_name, backend_node, default_external),
        port=port,
        port_name=port_name,
        protocol=protocol,
        kind=path_kind(source, destination),
    )


def _signature(
    end: Endpoint,
    other: Endpoint,
    class_name: Callable[[str], str | None],
    backend_node: str | None,
    default_external: str = DEFAULT_EXTERNAL_IP,
) -> str:
    if isinstance(end, ExternalEndpoint):
        return "external:default" if end.ip == default_external else f"external:{end.ip}"
    if isinstance(end, ServiceEndpoint):
        svc = end.service
        if end.via is Via.CLUSTER_IP:
            return f"svc:{svc.key}"
        base = {Via.NODE_PORT: "nodeport", Via.LOAD_BALANCER: "lb"}[end.via]
        text = f"{base}:{svc.key}"
        receiving = end.node.name if end.node is not None else backend_node
        if receiving is not None and backend_node is not None:
            text += "@backend-node" if receiving == backend_node else "@other-node"
        client_node = _node_of(other)
        if client_node is not None and receiving is not None:
            text += "/client-on-it" if client_node == receiving else "/client-elsewhere"
        return text
    if isinstance(end, NodeEndpoint) or (isinstance(end, PodEndpoint) and end.pod.host_network):
        other_node = _node_of(other)
        if isinstance(other, PodEndpoint) and other.pod.host_network:
            other_node = other.pod.node_name
        return _role(_node_of(end), other_node)
    assert isinstance(end, PodEndpoint)
    name = class_name(end.pod.key)
    return name if name is not None else f"{end.pod.namespace}[?]"
