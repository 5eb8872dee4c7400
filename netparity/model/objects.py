"""Namespaces, pods, nodes and Services: the parts of a cluster that policies act on."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from netparity.model._wire import (
    Ctx,
    as_list,
    as_map,
    as_name,
    as_port_name,
    as_port_number,
    as_str,
    label_key_problem,
    label_map,
    label_value_problem,
    object_name_problem,
    port_name_problem,
    str_map,
)
from netparity.model.quick import quick_init

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# The cloud provider's load balancer settings live in annotations under this prefix.
CLOUD_LB_ANNOTATION_PREFIX = "service.beta.kubernetes.io/"


# Every object a run creates (twins, anchors, the run's Services, the planner's own
# Services) carries this label; nothing carrying it is ever read as part of the cluster.
RUN_LABEL = "netparity.io/run"


def run_owned(labels: Mapping[str, str] | None) -> bool:
    """Whether an object with these labels is netparity's own (a run created it)."""
    return labels is not None and RUN_LABEL in labels


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"

    @classmethod
    def parse(cls, value: Any, ctx: Ctx) -> Protocol:
        if value is None:
            return cls.TCP
        if not isinstance(value, str):
            raise ctx.error(f"must be TCP, UDP or SCTP, got {value!r}")
        try:
            return cls(value.upper())
        except ValueError:
            raise ctx.error(f"unknown protocol {value!r} (expected TCP, UDP or SCTP)") from None


def frozen_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(sorted(labels.items())))


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], ctx: Ctx) -> Namespace:
        meta = as_map(raw.get("metadata"), ctx.sub("metadata"))
        name = as_name(meta.get("name"), ctx.sub("metadata.name"), label=True)
        assert name is not None
        labels = label_map(meta.get("labels"), ctx.sub("metadata.labels"))
        labels.setdefault(NAMESPACE_NAME_LABEL, name)
        return cls(name=name, labels=frozen_labels(labels))


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerPort:
    name: str | None
    port: int
    protocol: Protocol = Protocol.TCP


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    node_name: str | None = None
    ip: str | None = None
    host_network: bool = False
    ports: tuple[ContainerPort, ...] = ()
    owner: str | None = None  # "Kind/name" of the controller, for display
    # "Kind/name" of the workload whose pod template this pod stands for (no pod of it was
    # running in the input; netparity.model.workloads); None for a pod that exists.
    template: str | None = None
    # spec.serviceAccountName (the admission plugin fills in `default`): Cilium's identity
    # label io.cilium.k8s.policy.serviceaccount (SEMANTICS D28).
    service_account: str = "default"
    key: str = field(init=False, repr=False, compare=False)  # "namespace/name"

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")

    def named_port(self, name: str, protocol: Protocol | None = None) -> ContainerPort | None:
        for cp in self.ports:
            if cp.name == name and (protocol is None or cp.protocol is protocol):
                return cp
        return None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], ctx: Ctx) -> Pod:
        return _plain_pod(raw) or cls.read(raw, ctx)

    @classmethod
    def read(cls, raw: Mapping[str, Any], ctx: Ctx) -> Pod:
        """`from_dict` of any pod: each field checked, a problem named with its field."""
        meta = as_map(raw.get("metadata"), ctx.sub("metadata"))
        spec = as_map(raw.get("spec"), ctx.sub("spec"))
        status = as_map(raw.get("status"), ctx.sub("status"))
        name = as_name(meta.get("name"), ctx.sub("metadata.name"))
        namespace = as_name(
            meta.get("namespace") or "default", ctx.sub("metadata.namespace"), label=True
        )
        assert name is not None
        ports: list[ContainerPort] = []
        for ci, container in enumerate(as_list(spec.get("containers"), ctx.sub("spec.containers"))):
            cctx = ctx.sub("spec.containers").sub(ci)
            cmap = as_map(container, cctx, allow_none=False)
            for pi, port in enumerate(as_list(cmap.get("ports"), cctx.sub("ports"))):
                pctx = cctx.sub("ports").sub(pi)
                pmap = as_map(port, pctx, allow_none=False)
                number = pmap.get("containerPort")
                if (
                    isinstance(number, bool)
                    or not isinstance(number, int)
                    or not 1 <= number <= 65535
                ):
                    raise pctx.sub("containerPort").error(
                        f"must be a port number 1-65535, got {number!r}"
                    )
                ports.append(
                    ContainerPort(
                        name=as_port_name(pmap.get("name"), pctx.sub("name")),
                        port=number,
                        protocol=Protocol.parse(pmap.get("protocol"), pctx.sub("protocol")),
                    )
                )
        ip = as_str(status.get("podIP"), ctx.sub("status.podIP"))
        if ip is not None:
            _check_ip(ip, ctx.sub("status.podIP"))
        owner = None
        for ref in as_list(meta.get("ownerReferences"), ctx.sub("metadata.ownerReferences")):
            if isinstance(ref, Mapping) and ref.get("controller"):
                owner = f"{ref.get('kind')}/{ref.get('name')}"
        return cls(
            namespace=namespace,
            name=name,
            labels=frozen_labels(label_map(meta.get("labels"), ctx.sub("metadata.labels"))),
            node_name=as_str(spec.get("nodeName"), ctx.sub("spec.nodeName")),
            ip=ip or None,
            host_network=bool(spec.get("hostNetwork", False)),
            ports=tuple(ports),
            owner=owner,
            service_account=as_str(
                spec.get("serviceAccountName") or spec.get("serviceAccount"),
                ctx.sub("spec.serviceAccountName"),
            )
            or "default",
        )


_PROTOCOLS = {None: Protocol.TCP, "TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}


def _plain_pod(raw: Mapping[str, Any]) -> Pod | None:
    """`Pod.read` of a pod in the plain shape the API server writes (plain dicts and lists,
    every field of the type and syntax it allows), without a context object per field
    (issue 19: Pod.read was half of loading 20,000 pods); None for anything else, which
    `Pod.read` then reads or names the field of (tests/test_plain_pod.py)."""
    meta, spec, status = raw.get("metadata"), raw.get("spec"), raw.get("status")
    if type(meta) is not dict or type(spec) is not dict or type(status) not in (dict, type(None)):
        return None
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if type(name) is not str or type(namespace) is not str:
        return None
    if object_name_problem(name) or object_name_problem(namespace, label=True):
        return None
    labels = meta.get("labels")
    labels = {} if labels is None else labels
    if type(labels) is not dict or not all(
        type(k) is str
        and type(v) is str
        and not label_key_problem(k)
        and not label_value_problem(v)
        for k, v in labels.items()
    ):
        return None
    ports = _plain_ports(spec.get("containers"))
    ip = status.get("podIP") if status else None
    owners = meta.get("ownerReferences")
    owners = [] if owners is None else owners
    node, account = (
        spec.get("nodeName"),
        spec.get("serviceAccountName") or spec.get("serviceAccount"),
    )
    if (
        ports is None
        or type(owners) is not list
        or not all(type(v) in (str, type(None)) for v in (ip, node, account))
    ):
        return None
    if ip is not None:
        try:
            ip_address(ip)
        except ValueError:
            return None
    owner = None
    for ref in owners:
        if isinstance(ref, Mapping) and ref.get("controller"):
            owner = f"{ref.get('kind')}/{ref.get('name')}"
    return Pod(
        namespace=namespace,
        name=name,
        labels=frozen_labels(labels),
        node_name=node,
        ip=ip or None,
        host_network=bool(spec.get("hostNetwork", False)),
        ports=ports,
        owner=owner,
        service_account=account or "default",
    )


def _plain_ports(containers: Any) -> tuple[ContainerPort, ...] | None:
    """The containers' ports in the plain shape (`_plain_pod`), or None."""
    if containers is None:
        return ()
    if type(containers) is not list:
        return None
    out: list[ContainerPort] = []
    for c in containers:
        ports = c.get("ports") if type(c) is dict else False
        if ports is None:
            continue
        if type(ports) is not list:
            return None
        for p in ports:
            if type(p) is not dict:
                return None
            number, name, proto = p.get("containerPort"), p.get("name"), p.get("protocol")
            if type(number) is not int or not 1 <= number <= 65535:
                return None
            if type(proto) not in (str, type(None)) or proto not in _PROTOCOLS:
                return None
            if name is not None and (type(name) is not str or port_name_problem(name)):
                return None
            out.append(ContainerPort(name=name, port=number, protocol=_PROTOCOLS[proto]))
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    name: str
    ip: str
    pod_cidr: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def os(self) -> str:
        return self.labels.get("kubernetes.io/os", "linux")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], ctx: Ctx) -> Node:
        meta = as_map(raw.get("metadata"), ctx.sub("metadata"))
        spec = as_map(raw.get("spec"), ctx.sub("spec"))
        status = as_map(raw.get("status"), ctx.sub("status"))
        name = as_name(meta.get("name"), ctx.sub("metadata.name"))
        assert name is not None
        ip = None
        for i, addr in enumerate(as_list(status.get("addresses"), ctx.sub("status.addresses"))):
            amap = as_map(addr, ctx.sub("status.addresses").sub(i), allow_none=False)
            if amap.get("type") == "InternalIP" and ip is None:
                ip = as_str(amap.get("address"), ctx.sub("status.addresses").sub(i).sub("address"))
        if ip is None:
            raise ctx.sub("status.addresses").error("has no InternalIP address")
        _check_ip(ip, ctx.sub("status.addresses"))
        pod_cidr = as_str(spec.get("podCIDR"), ctx.sub("spec.podCIDR"))
        if pod_cidr is not None:
            try:
                ipaddress.ip_network(pod_cidr, strict=False)
            except ValueError:
                raise ctx.sub("spec.podCIDR").error(f"invalid CIDR {pod_cidr!r}") from None
        return cls(
            name=name,
            ip=ip,
            pod_cidr=pod_cidr,
            labels=frozen_labels(label_map(meta.get("labels"), ctx.sub("metadata.labels"))),
        )


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
    EXTERNAL_NAME = "ExternalName"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    name: str | None
    protocol: Protocol
    port: int
    target_port: int | str
    node_port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    namespace: str
    name: str
    type: ServiceType = ServiceType.CLUSTER_IP
    selector: Mapping[str, str] | None = None
    cluster_ip: str | None = None
    ports: tuple[ServicePort, ...] = ()
    external_traffic_policy: str = "Cluster"
    load_balancer_ips: tuple[str, ...] = ()
    publish_not_ready: bool = False
    # What decides a load balancer's path and exposure (None: the field is absent).
    load_balancer_annotations: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({})
    )  # the service.beta.kubernetes.io/* annotations, as written
    load_balancer_class: str | None = None
    load_balancer_source_ranges: tuple[str, ...] | None = None  # () : present and empty
    internal_traffic_policy: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, pod: Pod) -> bool:
        if not self.selector or pod.namespace != self.namespace:
            return False
        return all(pod.labels.get(k) == v for k, v in self.selector.items())

    def port_named(self, ref: int | str, protocol: Protocol | None = None) -> ServicePort | None:
        """The port entry with this number (or name) and protocol. One number may be
        exposed over several protocols (kube-dns: 53/UDP and 53/TCP), so a lookup by
        number names the protocol; without one, the first entry with the number."""
        for sp in self.ports:
            named = sp.port == ref if isinstance(ref, int) else sp.name == ref
            if named and (protocol is None or sp.protocol is protocol):
                return sp
        return None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], ctx: Ctx) -> Service:
        meta = as_map(raw.get("metadata"), ctx.sub("metadata"))
        spec = as_map(raw.get("spec"), ctx.sub("spec"))
        status = as_map(raw.get("status"), ctx.sub("status"))
        name = as_name(meta.get("name"), ctx.sub("metadata.name"), label=True)
        assert name is not None
        type_raw = as_str(spec.get("type"), ctx.sub("spec.type")) or "ClusterIP"
        try:
            stype = ServiceType(type_raw)
        except ValueError:
            raise ctx.sub("spec.type").error(f"unknown Service type {type_raw!r}") from None
        ports = [
            _service_port(item, ctx.sub("spec.ports").sub(i))
            for i, item in enumerate(as_list(spec.get("ports"), ctx.sub("spec.ports")))
        ]
        lb = as_map(status.get("loadBalancer"), ctx.sub("status.loadBalancer"))
        lb_ips = []
        for i, ing in enumerate(as_list(lb.get("ingress"), ctx.sub("status.loadBalancer.ingress"))):
            ip = as_map(ing, ctx.sub("status.loadBalancer.ingress").sub(i)).get("ip")
            if isinstance(ip, str):
                lb_ips.append(ip)
        selector = spec.get("selector")
        etp = as_str(spec.get("externalTrafficPolicy"), ctx.sub("spec.externalTrafficPolicy"))
        annotations = {
            k: v
            for k, v in as_map(meta.get("annotations"), ctx.sub("metadata.annotations")).items()
            if isinstance(k, str) and k.startswith(CLOUD_LB_ANNOTATION_PREFIX)
        }
        ranges = _source_ranges(spec.get("loadBalancerSourceRanges"), ctx)
        return cls(
            namespace=as_name(
                meta.get("namespace") or "default", ctx.sub("metadata.namespace"), label=True
            ),
            name=name,
            type=stype,
            selector=frozen_labels(label_map(selector, ctx.sub("spec.selector")))
            if selector
            else None,
            cluster_ip=as_str(spec.get("clusterIP"), ctx.sub("spec.clusterIP")),
            ports=tuple(ports),
            external_traffic_policy=etp or "Cluster",
            load_balancer_ips=tuple(lb_ips),
            publish_not_ready=bool(spec.get("publishNotReadyAddresses", False)),
            load_balancer_annotations=frozen_labels(
                str_map(annotations, ctx.sub("metadata.annotations"))
            ),
            load_balancer_class=as_str(
                spec.get("loadBalancerClass"), ctx.sub("spec.loadBalancerClass")
            ),
            load_balancer_source_ranges=tuple(ranges) if ranges is not None else None,
            internal_traffic_policy=as_str(
                spec.get("internalTrafficPolicy"), ctx.sub("spec.internalTrafficPolicy")
            ),
            labels=frozen_labels(label_map(meta.get("labels"), ctx.sub("metadata.labels"))),
        )


def _service_port(item: Any, pctx: Ctx) -> ServicePort:
    """One entry of a Service's spec.ports, with targetPort a number or a name."""
    pmap = as_map(item, pctx, allow_none=False)
    port = as_port_number(pmap.get("port"), pctx.sub("port"))
    target = pmap.get("targetPort", port)
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    if isinstance(target, int):
        target = as_port_number(target, pctx.sub("targetPort"))
    elif not isinstance(target, str):
        raise pctx.sub("targetPort").error(f"must be a number or a name, got {target!r}")
    node_port = pmap.get("nodePort")
    if node_port is not None:
        node_port = as_port_number(node_port, pctx.sub("nodePort"))
    return ServicePort(
        name=as_str(pmap.get("name"), pctx.sub("name")),
        protocol=Protocol.parse(pmap.get("protocol"), pctx.sub("protocol")),
        port=port,
        target_port=target,
        node_port=node_port,
    )


def _source_ranges(ranges_raw: Any, ctx: Ctx) -> list[str] | None:
    """spec.loadBalancerSourceRanges as given (each a valid CIDR), or None if absent."""
    ranges = None
    if ranges_raw is not None:
        rctx = ctx.sub("spec.loadBalancerSourceRanges")
        ranges = []
        for i, item in enumerate(as_list(ranges_raw, rctx)):
            cidr = as_str(item, rctx.sub(i), required=True)
            assert cidr is not None
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise rctx.sub(i).error(f"invalid CIDR {cidr!r}") from None
            ranges.append(cidr.strip())
    return ranges


@lru_cache(maxsize=1 << 17)
def ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """`ipaddress.ip_address`, each text parsed once: a snapshot's pod and node IPs are read
    in several passes (loading, the classes, the enumerator, the fixes). Raises ValueError."""
    return ipaddress.ip_address(text)


def _check_ip(value: str, ctx: Ctx) -> None:
    try:
        ip_address(value)
    except ValueError:
        raise ctx.error(f"invalid IP address {value!r}") from None
