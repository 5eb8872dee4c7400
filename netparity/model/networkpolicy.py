"""Kubernetes NetworkPolicy (networking.k8s.io/v1), parsed and defaulted as the API server does."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netparity.model._wire import (
    Ctx,
    as_list,
    as_map,
    as_name,
    as_port_number,
    check_fields,
    port_name_problem,
)
from netparity.model.objects import Protocol
from netparity.model.selectors import LabelSelector

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidr(value: Any, ctx: Ctx) -> IPNetwork:
    if not isinstance(value, str):
        raise ctx.error(f"must be a CIDR string, got {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ctx.error(f"invalid CIDR {value!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class IPBlock:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()
    # `cidr` as written ("10.0.0.0/0" is kept: NPM rejects that text, SEMANTICS D20);
    # empty: str(cidr). Not part of equality: the network is the meaning.
    cidr_text: str = field(default="", compare=False)

    @property
    def written(self) -> str:
        """The cidr as the manifest wrote it."""
        return self.cidr_text or str(self.cidr)

    def contains(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if ip.version != self.cidr.version or ip not in self.cidr:
            return False
        return not any(ip in e for e in self.excepts if e.version == ip.version)

    def __str__(self) -> str:
        if not self.excepts:
            return str(self.cidr)
        return f"{self.cidr} except {','.join(str(e) for e in self.excepts)}"

    @classmethod
    def from_dict(cls, raw: Any, ctx: Ctx) -> IPBlock:
        data = as_map(raw, ctx, allow_none=False)
        check_fields(data, frozenset({"cidr", "except"}), ctx)
        if "cidr" not in data:
            raise ctx.sub("cidr").error("is required")
        cidr = parse_cidr(data["cidr"], ctx.sub("cidr"))
        excepts = []
        for i, item in enumerate(as_list(data.get("except"), ctx.sub("except"))):
            net = parse_cidr(item, ctx.sub("except").sub(i))
            if net.version != cidr.version or not net.subnet_of(cidr):  # type: ignore[arg-type]
                raise ctx.sub("except").sub(i).error(f"{net} is not inside the cidr {cidr}")
            excepts.append(net)
        return cls(cidr=cidr, excepts=tuple(excepts), cidr_text=str(data["cidr"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyPeer:
    """One from/to entry. Absent selectors are None; an empty selector is LabelSelector()."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    def __str__(self) -> str:
        if self.ip_block is not None:
            return f"ipBlock {self.ip_block}"
        parts = []
        if self.namespace_selector is not None:
            parts.append(f"namespaceSelector {self.namespace_selector}")
        if self.pod_selector is not None:
            parts.append(f"podSelector {self.pod_selector}")
        return " + ".join(parts)

    @classmethod
    def from_dict(cls, raw: Any, ctx: Ctx) -> PolicyPeer:
        data = as_map(raw, ctx, allow_none=False)
        check_fields(data, frozenset({"podSelector", "namespaceSelector", "ipBlock"}), ctx)
        pod = data.get("podSelector")
        ns = data.get("namespaceSelector")
        block = data.get("ipBlock")
        if block is not None and (pod is not None or ns is not None):
            raise ctx.sub("ipBlock").error(
                "cannot be combined with podSelector or namespaceSelector"
            )
        if block is None and pod is None and ns is None:
            raise ctx.error("must set one of podSelector, namespaceSelector or ipBlock")
        return cls(
            pod_selector=None
            if pod is None
            else LabelSelector.from_dict(pod, ctx.sub("podSelector")),
            namespace_selector=None
            if ns is None
            else LabelSelector.from_dict(ns, ctx.sub("namespaceSelector")),
            ip_block=None if block is None else IPBlock.from_dict(block, ctx.sub("ipBlock")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyPort:
    """A ports entry: port None means every port of the protocol; a str is a named port."""

    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return f"all/{self.protocol}"
        if self.end_port is not None:
            return f"{self.port}-{self.end_port}/{self.protocol}"
        return f"{self.port}/{self.protocol}"

    @classmethod
    def from_dict(cls, raw: Any, ctx: Ctx) -> PolicyPort:
        data = as_map(raw, ctx, allow_none=False)
        check_fields(data, frozenset({"protocol", "port", "endPort"}), ctx)
        protocol = Protocol.parse(data.get("protocol"), ctx.sub("protocol"))
        port_raw = data.get("port")
        port: int | str | None
        if port_raw is None:
            port = None
        elif isinstance(port_raw, str) and not port_raw.isdigit():
            problem = port_name_problem(port_raw)
            if problem:
                raise ctx.sub("port").error(problem)
            port = port_raw
        else:
            port = as_port_number(
                int(port_raw) if isinstance(port_raw, str) else port_raw, ctx.sub("port")
            )
        end_raw = data.get("endPort")
        end_port = None
        if end_raw is not None:
            end_port = as_port_number(end_raw, ctx.sub("endPort"))
            if not isinstance(port, int):
                raise ctx.sub("endPort").error("requires a numeric port")
            if end_port < port:
                raise ctx.sub("endPort").error(f"{end_port} is below port {port}")
        return cls(protocol=protocol, port=port, end_port=end_port)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRule:
    """One ingress or egress rule. Empty peers: all peers. Empty ports: all ports."""

    index: int
    peers: tuple[PolicyPeer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()

    @classmethod
    def from_dict(cls, raw: Any, ctx: Ctx, index: int, peer_field: str) -> PolicyRule:
        data = as_map(raw, ctx)
        check_fields(data, frozenset({peer_field, "ports"}), ctx)
        peers = tuple(
            PolicyPeer.from_dict(p, ctx.sub(peer_field).sub(i))
            for i, p in enumerate(as_list(data.get(peer_field), ctx.sub(peer_field)))
        )
        ports = tuple(
            PolicyPort.from_dict(p, ctx.sub("ports").sub(i))
            for i, p in enumerate(as_list(data.get("ports"), ctx.sub("ports")))
        )
        return cls(index=index, peers=peers, ports=ports)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: frozenset[str]
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def isolates_ingress(self) -> bool:
        return "Ingress" in self.policy_types

    @property
    def isolates_egress(self) -> bool:
        return "Egress" in self.policy_types

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], ctx: Ctx) -> NetworkPolicy:
        meta = as_map(raw.get("metadata"), ctx.sub("metadata"))
        name = as_name(meta.get("name"), ctx.sub("metadata.name"))
        assert name is not None
        namespace = as_name(
            meta.get("namespace") or "default", ctx.sub("metadata.namespace"), label=True
        )
        spec_ctx = ctx.sub("spec")
        spec = as_map(raw.get("spec"), spec_ctx)
        check_fields(spec, frozenset({"podSelector", "policyTypes", "ingress", "egress"}), spec_ctx)
        ingress = tuple(
            PolicyRule.from_dict(r, spec_ctx.sub("ingress").sub(i), i, "from")
            for i, r in enumerate(as_list(spec.get("ingress"), spec_ctx.sub("ingress")))
        )
        egress = tuple(
            PolicyRule.from_dict(r, spec_ctx.sub("egress").sub(i), i, "to")
            for i, r in enumerate(as_list(spec.get("egress"), spec_ctx.sub("egress")))
        )
        types_raw = as_list(spec.get("policyTypes"), spec_ctx.sub("policyTypes"))
        types: set[str] = set()
        for i, t in enumerate(types_raw):
            if t not in ("Ingress", "Egress"):
                raise (
                    spec_ctx.sub("policyTypes")
                    .sub(i)
                    .error(f"unknown policy type {t!r} (expected Ingress or Egress)")
                )
            types.add(t)
        if not types:
            # SetDefaults_NetworkPolicy: Ingress always, Egress when egress rules exist.
            types.add("Ingress")
            if egress:
                types.add("Egress")
        return cls(
            namespace=namespace,
            name=name,
            pod_selector=LabelSelector.from_dict(
                spec.get("podSelector"), spec_ctx.sub("podSelector")
            ),
            policy_types=frozenset(types),
            ingress=ingress,
            egress=egress,
        )
