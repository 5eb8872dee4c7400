"""Lab probe resolution: each Traffic to a source namespace and a destination address in
a lab's topology (pods, nodes, hosts, Services by ClusterIP, NodePort, LoadBalancer IP),
and who may answer there.

A probe the lab cannot run (unknown pod, unnamed port, a Service as a source) raises
`Unresolved` with the reason; an outside address the lab has no host at raises `NeedHost`.
Pure: it reads a topology, and changes nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from netparity.backend import Target
from netparity.lab.dataplanes.services import pinned_service, selected_pods
from netparity.lab.topology import LabNode, LabPod, LabTopology
from netparity.model.objects import Protocol, Service, ServicePort, ServiceType
from netparity.model.snapshot import Snapshot
from netparity.model.traffic import (
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Via,
)

# Addresses the lab never places an on-demand host at.
_NO_HOST = tuple(
    ipaddress.IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/3", "169.254.1.1/32")
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    netns: str
    label: str
    kind: str  # "pod", "node" (a node or hostNetwork pod), "ext"
    node: str | None = None  # the node namespace's node, for pods and nodes


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    index: int
    source: Source
    host: str
    port: int
    protocol: Protocol
    lb_route: tuple[str, str] | None = None  # (LB IP, "via <node ip>" or "dev eth0")
    # the agent names that may answer there (a connection counts only then); None: unchecked
    expect: frozenset[str] | None = None
    # an essential probe (Target.check): the agent sends a DNS query or a TCP connect alone,
    # as it does to real CoreDNS and the real API server; the answer is then no agent's name
    check: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.protocol}"


class Unresolved(Exception):
    """The lab cannot run this probe: the message says why."""


class NeedHost(Exception):
    def __init__(self, ip: str) -> None:
        super().__init__(ip)
        self.ip = ip


class Index:
    """One topology's lookups (pods by key, nodes by name, hosts by address, lab addresses)."""

    def __init__(self, topo: LabTopology) -> None:
        self.topo = topo
        self.pods = {p.key: p for p in topo.pods}
        self.nodes = {n.name: n for n in topo.nodes}
        self.hosts = {h.ip: h for h in topo.hosts}
        self.node_ips = {n.ip: n for n in topo.nodes}
        self.pod_ips = {p.ip: p for p in topo.pods if not p.host_network}
        self.live_pods = {p.key: p for p in topo.snapshot.pods}
        self.services = {s.key: s for s in topo.snapshot.services}
        self.service_ips = _service_ips(topo.snapshot)

    def pod(self, key: str) -> LabPod:
        pod = self.pods.get(key)
        if pod is None:
            raise Unresolved(f"pod {key} is not in lab {self.topo.lab} (unknown or not scheduled)")
        return pod

    def node(self, name: str) -> LabNode:
        node = self.nodes.get(name)
        if node is None:
            raise Unresolved(f"node {name} is not in lab {self.topo.lab}")
        return node

    def is_lab_address(self, ip: str) -> bool:
        return (
            ip in self.hosts or ip in self.node_ips or ip in self.pod_ips or ip in self.service_ips
        )


def source_of(ix: Index, ep: object) -> Source:
    if isinstance(ep, PodEndpoint):
        pod = ix.pod(ep.pod.key)
        kind = "node" if pod.host_network else "pod"
        return Source(netns=pod.netns, label=f"pod {pod.key}@{pod.node}", kind=kind, node=pod.node)
    if isinstance(ep, NodeEndpoint):
        node = ix.node(ep.node.name)
        return Source(netns=node.netns, label=f"node {node.name}", kind="node", node=node.name)
    if isinstance(ep, ExternalEndpoint):
        host = ix.hosts.get(ep.ip)
        if host is not None:
            return Source(netns=host.netns, label=f"external {host.ip}", kind="ext")
        at_node = ix.node_ips.get(ep.ip)
        if at_node is not None:
            return Source(
                netns=at_node.netns,
                label=f"node {at_node.name}",
                kind="node",
                node=at_node.name,
            )
        at_pod = ix.pod_ips.get(ep.ip)
        if at_pod is not None:
            return Source(
                netns=at_pod.netns,
                label=f"pod {at_pod.key}@{at_pod.node}",
                kind="pod",
                node=at_pod.node,
            )
        if ep.ip in ix.service_ips:
            raise Unresolved(f"{ep.ip} is a Service address in the lab; it cannot send")
        raise NeedHost(_placeable(ep.ip))
    if isinstance(ep, ServiceEndpoint):
        raise Unresolved(f"a Service ({ep.service.key}) cannot be the source of a probe")
    raise Unresolved(f"unknown source endpoint {ep!r}")


def probe_for(ix: Index, index: int, target: Target) -> Probe:
    probe = _probe(ix, index, target)
    if target.check is not None:
        return replace(probe, check=target.check)
    return replace(probe, expect=expected_tokens(ix, target, probe.host))


def _probe(ix: Index, index: int, target: Target) -> Probe:
    t = target.traffic
    src = source_of(ix, t.source)
    dst = t.destination
    protocol = Protocol(t.protocol)
    if isinstance(dst, PodEndpoint):
        pod = ix.pod(dst.pod.key)
        if isinstance(t.port, str):
            live = ix.live_pods.get(pod.key)
            ports = live.ports if live is not None else pod.ports
            named = [cp for cp in ports if cp.name == t.port]
            cp = next((c for c in named if c.protocol is protocol), named[0] if named else None)
            if cp is None:
                raise Unresolved(f"pod {pod.key} has no containerPort named {t.port!r}")
            return Probe(index=index, source=src, host=pod.ip, port=cp.port, protocol=cp.protocol)
        return Probe(index=index, source=src, host=pod.ip, port=t.port, protocol=protocol)
    if isinstance(dst, NodeEndpoint):
        node = ix.node(dst.node.name)
        return Probe(index=index, source=src, host=node.ip, port=_number(t.port), protocol=protocol)
    if isinstance(dst, ExternalEndpoint):
        if not ix.is_lab_address(dst.ip):
            raise NeedHost(_placeable(dst.ip))
        return Probe(index=index, source=src, host=dst.ip, port=_number(t.port), protocol=protocol)
    if isinstance(dst, ServiceEndpoint):
        svc = ix.services.get(dst.service.key)
        if svc is None:
            raise Unresolved(f"Service {dst.service.key} is not in the lab")
        pinned = pinned_run_service(ix, dst)
        if pinned is not None:  # the run's own Service, reaching exactly the backend meant
            svc = ix.services.get(pinned.key)
            if svc is None:
                raise Unresolved(f"the run Service for {dst.service.key} is not in the lab")
        sp = _service_port(svc, t.port, protocol)
        if dst.via is Via.CLUSTER_IP:
            if svc.cluster_ip in (None, "", "None"):
                raise Unresolved(f"Service {svc.key} has no ClusterIP (headless)")
            assert svc.cluster_ip is not None
            return Probe(
                index=index, source=src, host=svc.cluster_ip, port=sp.port, protocol=sp.protocol
            )
        receiving = _receiving(ix, dst, src)
        if dst.via is Via.NODE_PORT:
            if sp.node_port is None:
                raise Unresolved(f"Service {svc.key} port {sp.port} has no nodePort")
            return Probe(
                index=index,
                source=src,
                host=receiving.ip,
                port=sp.node_port,
                protocol=sp.protocol,
            )
        if not svc.load_balancer_ips:
            raise Unresolved(f"Service {svc.key} has no LoadBalancer IP")
        lb = svc.load_balancer_ips[0]
        route: tuple[str, str] | None = None
        if src.kind == "ext":
            route = (lb, f"via {receiving.ip} dev eth0")
        elif src.kind == "node":
            # kube-proxy handles a node's own traffic to an LB IP locally (nat OUTPUT);
            # the route only makes the address routable.
            own = src.node == receiving.name
            route = (lb, "dev eth0 scope link" if own else f"via {receiving.ip} dev eth0")
        return Probe(
            index=index,
            source=src,
            host=lb,
            port=sp.port,
            protocol=sp.protocol,
            lb_route=route,
        )
    raise Unresolved(f"unknown destination endpoint {dst!r}")


def _receiving(ix: Index, dst: ServiceEndpoint, src: Source) -> LabNode:
    """The node that receives NodePort/LB traffic (docs/probes.md): the one named; else,
    for a LoadBalancer IP reached from a pod or node, the source's own node (its packets
    leave through it); else the node of the Service's first backend by pod key."""
    if dst.node is not None:
        return ix.node(dst.node.name)
    if dst.via is Via.LOAD_BALANCER and src.node is not None:
        return ix.node(src.node)
    backend = dst.backend
    if backend is None:
        svc = ix.services.get(dst.service.key, dst.service)
        backend = next(iter(ix.topo.snapshot.backends(svc)), None)
    if backend is not None and backend.key in ix.pods:
        return ix.node(ix.pods[backend.key].node)
    return ix.topo.nodes[0]


def _agent_name(pod: LabPod) -> str:
    """The name a pod's agent answers with: its key, or its node's for a hostNetwork pod."""
    return f"node:{pod.node}" if pod.host_network else pod.key


def expected_tokens(ix: Index, target: Target, host: str) -> frozenset[str] | None:
    """Who may answer a probe to `host` (agents.agent_specs names the agents); None: nobody
    of the lab's (an address outside it), so the answer is not checked."""
    dst = target.traffic.destination
    service: Service | None = None
    if isinstance(dst, ServiceEndpoint):
        service = ix.services.get(dst.service.key, dst.service)
    elif host in ix.pod_ips:
        return frozenset({ix.pod_ips[host].key})
    elif host in ix.node_ips:
        return frozenset({f"node:{ix.node_ips[host].name}"})
    elif host in ix.hosts:
        return frozenset({f"ext:{host}"})
    else:
        service = next(
            (
                s
                for s in ix.services.values()
                if host == s.cluster_ip or host in s.load_balancer_ips
            ),
            None,
        )
    if service is None:
        return None
    names = frozenset(
        _agent_name(ix.pods[p.key])
        for p in ix.live_pods.values()
        if p.key in ix.pods and service.selects(p)
    )
    return names or None


def _number(port: int | str) -> int:
    if isinstance(port, str):
        raise Unresolved(f"named port {port!r} only resolves on a pod")
    return port


def _service_ips(snapshot: Snapshot) -> set[str]:
    ips = {s.cluster_ip for s in snapshot.services if s.cluster_ip not in (None, "", "None")}
    ips |= {ip for s in snapshot.services for ip in s.load_balancer_ips}
    return {ip for ip in ips if ip is not None}


def _placeable(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise Unresolved(f"invalid IP address {ip!r}") from None
    if addr.version != 4 or any(addr in n for n in _NO_HOST):
        raise Unresolved(f"the lab cannot place an external host at {ip}")
    return ip


def pinned_run_service(ix: Index, dst: ServiceEndpoint) -> Service | None:
    """The run Service a probe through `dst` goes to when the Service has several backends
    and the probe means one of them (the lab's kube-proxy would pick its own); else None,
    and the probe goes through the Service itself."""
    if dst.backend is None:
        return None
    svc = ix.services.get(dst.service.key, dst.service)  # the planner's: not added yet
    if svc.type is ServiceType.EXTERNAL_NAME:
        return None
    backends = selected_pods(ix.topo.snapshot, svc)
    if len(backends) < 2 or dst.backend.key not in {p.key for p in backends}:
        return None
    return pinned_service(svc, dst.backend)


def _service_port(svc: Service, ref: int | str, protocol: Protocol) -> ServicePort:
    sp = svc.port_named(ref, protocol)
    if sp is None:
        raise Unresolved(f"Service {svc.key} has no {protocol} port {ref!r}")
    return sp
