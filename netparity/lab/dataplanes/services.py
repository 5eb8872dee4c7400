"""Service routing shared by both dataplanes: which backend each Service port sends to.

Deterministic by design: every Service port sends to ONE backend, the first pod by key
(namespace/name) among the non-hostNetwork pods its selector matches on which the
targetPort resolves (hostNetwork pods, at their node's address, only where it selects no
other pod: D22); for externalTrafficPolicy=Local from outside, the first such pod
on the receiving node. Also the address ranges kube-proxy calls "the cluster".
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from netparity.lab.topology import LabTopology
from netparity.model.objects import RUN_LABEL, Pod, Protocol, Service, ServicePort, ServiceType
from netparity.model.snapshot import Snapshot

IPv4Net = ipaddress.IPv4Network


@dataclass(frozen=True, slots=True, kw_only=True)
class Backend:
    pod: Pod | None  # None: an address outside the pods (the API server's, #23)
    ip: str
    node: str
    port: int  # the resolved targetPort

    @property
    def endpoint(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePortRoute:
    """One port of one Service, with its addresses and the backends it sends to."""

    service: Service
    port: ServicePort
    cluster_ip: str | None  # None: headless or unset
    lb_ips: tuple[str, ...]
    node_port: int | None
    backend: Backend | None  # cluster-wide: the first backend by pod key
    local: Mapping[str, Backend] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def name(self) -> str:
        """kube-proxy's ServicePortName: `ns/name` plus `:port-name` when the port is named."""
        base = f"{self.service.namespace}/{self.service.name}"
        return f"{base}:{self.port.name}" if self.port.name else base

    @property
    def protocol(self) -> Protocol:
        return self.port.protocol

    @property
    def external_local(self) -> bool:
        """externalTrafficPolicy=Local applies (NodePort and LoadBalancer only)."""
        return (
            self.service.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
            and self.service.external_traffic_policy == "Local"
        )

    @property
    def external(self) -> bool:
        """Reachable from outside: has a NodePort or LoadBalancer IPs."""
        return self.node_port is not None or bool(self.lb_ips)

    def local_backend(self, node: str) -> Backend | None:
        return self.local.get(node)


# The run's own Service standing in for a user's Service selects one pod by name with this
# key (the lab's pods are their own twins; on Kubernetes the twin carries a run label,
# probes/templates/service.yaml.j2). Policies never see it: it is not a pod label.
PINNED_POD = "netparity.io/pod"


def pinned_service(svc: Service, backend: Pod) -> Service:
    """A run Service like `svc` (type, ports, traffic policies, loadBalancerSourceRanges)
    that reaches exactly `backend`; its addresses and nodePorts are allocated when the lab adds it."""
    digest = hashlib.sha256(f"{svc.key}|{backend.key}".encode()).hexdigest()[:10]
    return Service(
        namespace=svc.namespace,
        name=f"netparity-pin-{digest}",
        type=svc.type,
        selector=MappingProxyType({PINNED_POD: backend.name}),
        ports=tuple(replace(sp, node_port=None) for sp in svc.ports),
        external_traffic_policy=svc.external_traffic_policy,
        internal_traffic_policy=svc.internal_traffic_policy,
        load_balancer_source_ranges=svc.load_balancer_source_ranges,  # D22, as kube/render.py
        publish_not_ready=True,
        labels=MappingProxyType({RUN_LABEL: "pinned"}),  # the run's own: never the cluster's
    )


def selected_pods(snapshot: Snapshot, svc: Service) -> tuple[Pod, ...]:
    """The pods a Service sends to: its selector's, or the one pod a run Service pins."""
    if svc.selector and PINNED_POD in svc.selector:
        name = svc.selector[PINNED_POD]
        return tuple(
            p
            for p in snapshot.pods
            if p.namespace == svc.namespace and p.name == name and not p.host_network
        )
    return snapshot.backends(svc)


def _target(pod: Pod, sp: ServicePort) -> int | None:
    if isinstance(sp.target_port, int):
        return sp.target_port
    cp = pod.named_port(sp.target_port, sp.protocol)
    return cp.port if cp is not None else None


def _valid_ipv4(value: str | None) -> str | None:
    if not value or value == "None":
        return None
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    return str(addr) if addr.version == 4 else None


def service_routes(topology: LabTopology) -> tuple[ServicePortRoute, ...]:
    """Every port of every (non-ExternalName) Service, in snapshot order."""
    snap = topology.snapshot
    node_of = {p.key: p.node for p in topology.pods}
    out: list[ServicePortRoute] = []
    for svc in snap.services:
        if svc.type is ServiceType.EXTERNAL_NAME:
            continue
        candidates = sorted(
            (
                p
                for p in selected_pods(snap, svc)
                if p.ip is not None
                and _valid_ipv4(p.ip)
                and (svc.publish_not_ready or p.key not in topology.not_ready)
            ),
            key=lambda p: p.key,
        )
        if not candidates and svc.selector and PINNED_POD not in svc.selector:
            # D22: hostNetwork endpoints, at their node's address (kube-proxy DNATs to
            # nodeIP:port; from a pod on that node the packet goes to INPUT)
            candidates = sorted(
                (
                    p
                    for p in snap.pods
                    if p.host_network and p.ip and _valid_ipv4(p.ip) and svc.selects(p)
                ),
                key=lambda p: p.key,
            )
        outside = () if candidates or svc.selector else snap.endpoints.get(svc.key)
        exposed = svc.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
        lb_ips = (
            tuple(ip for ip in (_valid_ipv4(i) for i in svc.load_balancer_ips) if ip)
            if svc.type is ServiceType.LOAD_BALANCER
            else ()
        )
        for sp in svc.ports:
            backends: list[Backend] = []
            for pod in candidates:
                port = _target(pod, sp)
                node = node_of.get(pod.key, pod.node_name or "")
                if port is None or pod.ip is None:
                    continue
                backends.append(Backend(pod=pod, ip=pod.ip, node=node, port=port))
            if outside:  # a selectorless Service's EndpointSlice addresses outside the pods
                port = sp.target_port if isinstance(sp.target_port, int) else sp.port
                backends += [
                    Backend(pod=None, ip=ip, node="", port=port)
                    for ip in outside.outside
                    if _valid_ipv4(ip)
                ]
            local: dict[str, Backend] = {}
            for b in backends:
                local.setdefault(b.node, b)
            out.append(
                ServicePortRoute(
                    service=svc,
                    port=sp,
                    cluster_ip=_valid_ipv4(svc.cluster_ip),
                    lb_ips=lb_ips,
                    node_port=sp.node_port if exposed else None,
                    backend=backends[0] if backends else None,
                    local=MappingProxyType(local),
                )
            )
    return tuple(out)


def pod_ips(topology: LabTopology) -> tuple[str, ...]:
    """IPv4 addresses of every non-hostNetwork pod of the lab, sorted numerically."""
    ips = {
        p.ip
        for p in topology.snapshot.pods
        if not p.host_network and p.ip is not None and _valid_ipv4(p.ip)
    }
    return tuple(sorted(ips, key=lambda s: ipaddress.IPv4Address(s)))


def node_ips(topology: LabTopology) -> tuple[str, ...]:
    return tuple(sorted({n.ip for n in topology.nodes}, key=lambda s: ipaddress.IPv4Address(s)))


def _collapse(nets: Iterable[IPv4Net]) -> tuple[IPv4Net, ...]:
    return tuple(ipaddress.collapse_addresses(sorted(set(nets))))


def pod_ranges(topology: LabTopology) -> tuple[IPv4Net, ...]:
    """The nodes' podCIDRs plus every pod IP they do not cover, collapsed."""
    nets: list[IPv4Net] = []
    for n in topology.nodes:
        if n.pod_cidr:
            net = ipaddress.ip_network(n.pod_cidr, strict=False)
            if isinstance(net, IPv4Net):
                nets.append(net)
    for ip in pod_ips(topology):
        addr = ipaddress.IPv4Address(ip)
        if not any(addr in n for n in nets):
            nets.append(IPv4Net(f"{ip}/32"))
    return _collapse(nets)


def cluster_ranges(topology: LabTopology) -> tuple[IPv4Net, ...]:
    """kube-proxy's "cluster": the pod ranges and the node IPs."""
    nodes = [IPv4Net(f"{ip}/32") for ip in node_ips(topology)]
    return _collapse([*pod_ranges(topology), *nodes])


def ip_sorted(ips: Iterable[str]) -> list[str]:
    return sorted(set(ips), key=lambda s: ipaddress.IPv4Address(s))
