"""Where each probe runs from and goes to on a real cluster: twins, the run's Services, batches.

Pure: it turns targets into a layout (which twins and Services the run needs, which
targets cannot run here and why); addresses are filled in once the objects exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from netparity.backend import Target
from netparity.engine.traffic import (
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Via,
)
from netparity.kube.render import host_key, service_name
from netparity.kube.responder import Responder
from netparity.model.objects import Node, Pod, Protocol, Service, ServiceType

LOCAL = "local"  # the source is this machine (where pytest runs)

# Every reason for an outside probe that is predicted, not run, starts with this.
PREDICTED_ONLY = "predicted only"

NODE_SOURCE = (
    "a node as the source needs a hostNetwork probe pod, which the restricted Pod Security "
    "Standard forbids: not run on kubernetes without --allow-host-network (the lab runs it)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Dest:
    """Where a probe goes, before or after addresses are known."""

    kind: str  # "pod" (a twin), "ip", "svc" (ClusterIP), "nodeport", "lb"
    port: int
    protocol: Protocol
    pod: str | None = None  # "pod": the real pod whose twin answers
    ip: str | None = None  # "ip", "nodeport": the address
    service: str | None = None  # "svc", "nodeport", "lb": the run Service key (ns/name)
    token: str | None = None  # "ip": the name the agent there answers with (the responder)
    # "ip": an essential probe to a real cluster service (the agent's `check`: dns, connect);
    # no token is expected, no twin or Service stands in
    check: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    index: int
    target: Target
    source: str | None = None  # the real pod key whose twin runs it, or LOCAL
    dest: Dest | None = None
    reason: str | None = None  # set: the probe cannot run here


@dataclass(frozen=True, slots=True, kw_only=True)
class RunService:
    key: str  # ns/name of the run's own Service
    service: Service
    backend: Pod
    type: ServiceType


@dataclass(slots=True, kw_only=True)
class Layout:
    twins: dict[str, Pod] = field(default_factory=dict)
    probed_ports: dict[str, set[tuple[int, Protocol]]] = field(default_factory=dict)
    services: dict[str, RunService] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    # --allow-host-network: host probe pods, keyed node:NAME (the run's host namespace)
    hosts: dict[str, Node] = field(default_factory=dict)

    @property
    def namespaces(self) -> list[str]:
        return sorted(
            {p.namespace for p in self.twins.values()}
            | {s.service.namespace for s in self.services.values()}
        )


class _NotRun(Exception):
    pass


@dataclass(slots=True)
class _Planner:
    run_id: str
    backends_of: Callable[[Service], Sequence[Pod]]
    node_named: Callable[[str], Node | None]
    unsafe_twin: Callable[[Pod], str | None]
    allow_load_balancer: bool
    place: Callable[[Pod, Mapping[str, Pod]], str | None]
    responder: Responder | None = None
    external_ip: str | None = None
    layout: Layout = field(default_factory=Layout)
    needs: dict[str, set[Via]] = field(default_factory=dict)
    allow_host_network: bool = False
    place_host: Callable[[str, Mapping[str, Pod]], str | None] = lambda n, t: None

    def why_not(self, pod: Pod, role: str) -> str | None:
        if pod.host_network:
            return (
                f"{role} pod {pod.key} uses the host network: its twin would need hostNetwork, "
                f"which the restricted Pod Security Standard forbids"
                + (
                    " (--allow-host-network probes from it as its node)"
                    if role == "source" and not self.allow_host_network
                    else ""
                )
            )
        return self.unsafe_twin(pod) or self.place(pod, self.layout.twins)

    def host(self, node: Node) -> str:
        """The host probe pod of `node` (--allow-host-network), or why there is none."""
        if not self.allow_host_network:
            raise _NotRun(NODE_SOURCE)
        key = host_key(node.name)
        if key not in self.layout.hosts:
            why = self.place_host(node.name, self.layout.twins)
            if why:
                raise _NotRun(why)
            self.layout.hosts[key] = node
        return key

    def twin(self, pod: Pod, role: str) -> str:
        why = self.why_not(pod, role)
        if why:
            raise _NotRun(why)
        self.layout.twins.setdefault(pod.key, pod)
        self.layout.probed_ports.setdefault(pod.key, set())
        return pod.key

    def source(self, target: Target) -> str:
        src = target.traffic.source
        if isinstance(src, PodEndpoint):
            if src.pod.host_network and self.allow_host_network:
                # a hostNetwork pod sends from its node's network: the node's host probe pod
                node = self.node_named(src.pod.node_name) if src.pod.node_name else None
                if node is None:
                    raise _NotRun(
                        f"source pod {src.pod.key} uses the host network of no known node"
                    )
                return self.host(node)
            return self.twin(src.pod, "source")
        if isinstance(src, ExternalEndpoint):
            if self.external_ip is not None and src.ip != self.external_ip:
                raise _NotRun(
                    f"{PREDICTED_ONLY}: the cluster sees this machine as {self.external_ip} "
                    f"(--external-ip), not as {src.ip}, so traffic from {src.ip} cannot be "
                    f"made here; pass --external-ip {src.ip} only if the cluster sees this "
                    "machine so"
                )
            return LOCAL
        if isinstance(src, NodeEndpoint):
            return self.host(src.node)
        raise _NotRun(f"{src} cannot be a probe source")

    def dest(self, target: Target, source: str) -> Dest:
        t = target.traffic
        dst = t.destination
        if target.check is not None:
            return self.essential_dest(target)
        if isinstance(dst, PodEndpoint):
            pod = dst.pod
            if isinstance(t.port, str):
                cp = pod.named_port(t.port, t.protocol)
                if cp is None:
                    raise _NotRun(f"pod {pod.key} has no {t.protocol} port named {t.port!r}")
                port = cp.port
            else:
                port = t.port
            key = self.twin(pod, "destination")
            self.layout.probed_ports[key].add((port, t.protocol))
            return Dest(kind="pod", port=port, protocol=t.protocol, pod=key)
        if isinstance(t.port, str):
            raise _NotRun(f"a named port ({t.port!r}) means nothing on {dst}")
        if isinstance(dst, NodeEndpoint):
            return Dest(kind="ip", port=t.port, protocol=t.protocol, ip=dst.node.ip)
        if isinstance(dst, ExternalEndpoint):
            if source == LOCAL:
                raise _NotRun(
                    "from outside the cluster to an address outside it: not a cluster probe"
                )
            return self.outside_dest(dst.ip, t.port, t.protocol)
        assert isinstance(dst, ServiceEndpoint)
        return self.service_dest(dst, t.port, t.protocol)

    def essential_dest(self, target: Target) -> Dest:
        """An essential probe goes to the real service, read-only (DESIGN.md: the only probes
        that reach real cluster services): the kube-dns (or API server) Service's own
        ClusterIP, or the node's address for node-local DNS. No twin, no run Service: real
        CoreDNS and the real API server answer, so the agent checks a DNS answer or a TCP
        connect instead of a token."""
        t = target.traffic
        dst = t.destination
        check = target.check
        if isinstance(t.port, str):
            raise _NotRun(f"a named port ({t.port!r}) means nothing on {dst}")
        if isinstance(dst, NodeEndpoint):
            return Dest(kind="ip", port=t.port, protocol=t.protocol, ip=dst.node.ip, check=check)
        if not isinstance(dst, ServiceEndpoint) or dst.via is not Via.CLUSTER_IP:
            raise _NotRun(f"an essential {check} probe goes to a Service's ClusterIP, not {dst}")
        svc = dst.service
        sp = svc.port_named(t.port, t.protocol)
        if sp is None:
            raise _NotRun(f"Service {svc.key} has no {t.protocol} port {t.port}")
        if not svc.cluster_ip or svc.cluster_ip == "None":
            raise _NotRun(f"Service {svc.key} is headless: it has no ClusterIP")
        return Dest(kind="ip", port=sp.port, protocol=sp.protocol, ip=svc.cluster_ip, check=check)

    def outside_dest(self, ip: str, port: int, protocol: Protocol) -> Dest:
        """An address outside the cluster: only the responder, where something answers (a
        timeout where nothing listens would read as a deny, and probing the user's other
        networks is a scan); everything else is predicted only."""
        r = self.responder
        if r is None:
            raise _NotRun(
                f"{PREDICTED_ONLY}: nothing netparity controls answers at the outside address "
                f"{ip}, so a timeout there would not mean a deny; run the agent in serve mode "
                f"on a machine inside the ipBlock and pass --responder ADDRESS[:PORTS] to probe it"
            )
        if ip != r.ip:
            raise _NotRun(
                f"{PREDICTED_ONLY}: the outside address {ip} is not the responder "
                f"({r.ip}, which the ipBlock behind this probe does not hold); nothing "
                "netparity controls answers there"
            )
        if not r.serves(port, protocol):
            raise _NotRun(
                f"{PREDICTED_ONLY}: the responder {r.ip} serves no {protocol} port {port}; "
                f"add it to --responder and to the agent serving there"
            )
        return Dest(kind="ip", port=port, protocol=protocol, ip=ip, token=r.token)

    def service_dest(self, ep: ServiceEndpoint, port: int, protocol: Protocol) -> Dest:
        svc = ep.service
        if svc.type is ServiceType.EXTERNAL_NAME:
            raise _NotRun(f"Service {svc.key} is an ExternalName: no cluster address to probe")
        if not svc.selector:
            raise _NotRun(
                f"Service {svc.key} has no selector: its endpoints are not pods netparity can stand in for"
            )
        sp = svc.port_named(port, protocol)
        if sp is None:
            raise _NotRun(f"Service {svc.key} has no {protocol} port {port}")
        backend = ep.backend
        if backend is None:
            candidates = [p for p in self.backends_of(svc) if not p.host_network]
            if not candidates:
                raise _NotRun(
                    f"Service {svc.key} selects no pod: nothing to stand in for its backend"
                )
            # the first backend whose twin can be placed (a Pending pod's cannot), else the
            # first, whose reason is then the probe's
            backend = next(
                (p for p in candidates if self.why_not(p, "backend") is None), candidates[0]
            )
        target_port = sp.target_port
        if isinstance(target_port, str):
            cp = backend.named_port(target_port, sp.protocol)
            if cp is None:
                raise _NotRun(
                    f"backend pod {backend.key} has no port named {target_port!r} (Service {svc.key})"
                )
            target_port = cp.port
        if ep.via is Via.CLUSTER_IP:
            if not svc.cluster_ip or svc.cluster_ip == "None":
                raise _NotRun(f"Service {svc.key} is headless: it has no ClusterIP")
        elif ep.via is Via.NODE_PORT and svc.type not in (
            ServiceType.NODE_PORT,
            ServiceType.LOAD_BALANCER,
        ):
            raise _NotRun(f"Service {svc.key} is {svc.type}: it has no NodePort")
        elif ep.via is Via.LOAD_BALANCER and svc.type is not ServiceType.LOAD_BALANCER:
            raise _NotRun(f"Service {svc.key} is {svc.type}: it has no LoadBalancer address")
        if ep.via is Via.LOAD_BALANCER and not self.allow_load_balancer:
            raise _NotRun(
                f"probing Service {svc.key} through a LoadBalancer needs --allow-load-balancer "
                f"(an Azure load balancer costs money and minutes)"
            )
        node_ip = None
        if ep.via is Via.NODE_PORT:
            node = ep.node
            if node is None and backend.node_name:
                node = self.node_named(backend.node_name)
            if node is None:
                raise _NotRun(f"no receiving node for the NodePort of Service {svc.key}")
            node_ip = node.ip
        twin = self.twin(backend, "backend")
        self.layout.probed_ports[twin].add((target_port, sp.protocol))
        key = f"{svc.namespace}/{service_name(self.run_id, svc.key, backend.key)}"
        self.needs.setdefault(key, set()).add(ep.via)
        if key not in self.layout.services:
            self.layout.services[key] = RunService(
                key=key, service=svc, backend=backend, type=ServiceType.CLUSTER_IP
            )
        kind = {Via.CLUSTER_IP: "svc", Via.NODE_PORT: "nodeport", Via.LOAD_BALANCER: "lb"}[ep.via]
        return Dest(kind=kind, port=sp.port, protocol=sp.protocol, ip=node_ip, service=key)

    def finish(self) -> Layout:
        for key, rs in list(self.layout.services.items()):
            vias = self.needs.get(key, set())
            if Via.LOAD_BALANCER in vias:
                stype = ServiceType.LOAD_BALANCER
            elif Via.NODE_PORT in vias:
                stype = ServiceType.NODE_PORT
            else:
                stype = ServiceType.CLUSTER_IP
            self.layout.services[key] = RunService(
                key=key, service=rs.service, backend=rs.backend, type=stype
            )
        return self.layout


def plan_layout(
    targets: Sequence[Target],
    *,
    run_id: str,
    backends_of: Callable[[Service], Sequence[Pod]],
    node_named: Callable[[str], Node | None],
    unsafe_twin: Callable[[Pod], str | None] = lambda pod: None,
    allow_load_balancer: bool = False,
    place: Callable[[Pod, Mapping[str, Pod]], str | None] = lambda pod, planned: None,
    responder: Responder | None = None,
    external_ip: str | None = None,
    allow_host_network: bool = False,
    place_host: Callable[[str, Mapping[str, Pod]], str | None] = lambda n, t: None,
) -> Layout:
    """The twins, Services and steps that run `targets` (steps in the order of targets).

    `place(pod, planned_twins)` says why the twin of `pod` cannot be placed (its node, a
    PodDisruptionBudget: netparity.kube.placement), or None. Outside destinations run only
    to `responder` (checked to answer, netparity.kube.responder); outside sources only as
    `external_ip` (the address the cluster sees this machine as; None: any). With
    `allow_host_network`, node sources (and hostNetwork pod sources) run from one host probe
    pod per node, where `place_host(node, planned_twins)` allows it."""
    planner = _Planner(
        run_id,
        backends_of,
        node_named,
        unsafe_twin,
        allow_load_balancer,
        place,
        responder,
        external_ip,
        allow_host_network=allow_host_network,
        place_host=place_host,
    )
    for index, target in enumerate(targets):
        # Plan into a scratch copy so that a target which cannot run adds no twin or Service.
        saved = (
            dict(planner.layout.twins),
            {k: set(v) for k, v in planner.layout.probed_ports.items()},
            dict(planner.layout.services),
            {k: set(v) for k, v in planner.needs.items()},
            dict(planner.layout.hosts),
        )
        try:
            source = planner.source(target)
            dest = planner.dest(target, source)
        except _NotRun as e:
            (
                planner.layout.twins,
                planner.layout.probed_ports,
                planner.layout.services,
                planner.needs,
                planner.layout.hosts,
            ) = saved
            planner.layout.steps.append(Step(index=index, target=target, reason=str(e)))
            continue
        planner.layout.steps.append(Step(index=index, target=target, source=source, dest=dest))
    return planner.finish()


DEADLINE_MARGIN = 600.0  # seconds added to a run's planned length for a twin's deadline
PROBE_TRIES = 3  # the first try, a re-probe of denies, a re-probe of disagreements


def planned_seconds(
    layout: Layout,
    *,
    timeout: float,
    exec_seconds: float,
    max_parallel: int,
    pod_timeout: float,
    lb_timeout: float,
) -> float:
    """How long a run of this layout may take: twins starting, LoadBalancers, and every
    try of every batch (one exec per source, `max_parallel` at once, `exec_seconds` at most)."""
    sources = {s.source for s in layout.steps if s.reason is None}
    waves = math.ceil(len(sources) / max(1, max_parallel))
    lb = any(rs.type is ServiceType.LOAD_BALANCER for rs in layout.services.values())
    return (
        pod_timeout + (lb_timeout if lb else 0.0) + PROBE_TRIES * waves * (exec_seconds + timeout)
    )


def active_deadline(planned: float, max_duration: float | None = None) -> int:
    """A twin's activeDeadlineSeconds: --max-duration when given, else the planned length
    plus a margin (the API lets a deadline be lowered, never raised: choose it up front)."""
    if max_duration is not None:
        return max(1, math.ceil(max_duration))
    return math.ceil(planned + DEADLINE_MARGIN)


def address(
    dest: Dest,
    *,
    twin_ips: Mapping[str, str],
    services: Mapping[str, Mapping[str, object]],
) -> tuple[str, int] | str:
    """(host, port) of a destination once the run's objects exist, or why there is none."""
    if dest.kind == "ip":
        assert dest.ip is not None
        return dest.ip, dest.port
    if dest.kind == "pod":
        assert dest.pod is not None
        ip = twin_ips.get(dest.pod)
        return (ip, dest.port) if ip else f"the twin of pod {dest.pod} has no IP"
    assert dest.service is not None
    obj = services.get(dest.service)
    if obj is None:
        return f"the run's Service {dest.service} does not exist"
    spec = obj.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    if dest.kind == "svc":
        ip = spec.get("clusterIP")
        return (
            (str(ip), dest.port)
            if isinstance(ip, str) and ip != "None"
            else f"Service {dest.service} has no ClusterIP"
        )
    if dest.kind == "nodeport":
        for p in spec.get("ports") or ():
            if (
                isinstance(p, Mapping)
                and p.get("port") == dest.port
                and p.get("protocol", "TCP") == str(dest.protocol)
            ):
                node_port = p.get("nodePort")
                if isinstance(node_port, int):
                    assert dest.ip is not None
                    return dest.ip, node_port
        return f"Service {dest.service} has no nodePort for port {dest.port}/{dest.protocol}"
    status = obj.get("status")
    status = status if isinstance(status, Mapping) else {}
    lb = status.get("loadBalancer")
    for ingress in (lb.get("ingress") if isinstance(lb, Mapping) else None) or ():
        if isinstance(ingress, Mapping):
            host = ingress.get("ip") or ingress.get("hostname")
            if isinstance(host, str):
                return host, dest.port
    return f"Service {dest.service} got no LoadBalancer address"
