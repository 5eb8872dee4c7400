"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (cilium.io/v2), the parts we model.

Every field beyond plain L3/L4 (L7 rules, toFQDNs, toServices, requirements, ...) is listed
by path in ``unsupported`` (the lab skips such rules). The engine reads the finer fields:
``requires``, ``icmp``, ``nodes``, ``fqdns``, ``l3_unknown`` (a peer set it cannot resolve),
``l7`` (rules that need the L7 proxy) and ``conditions`` (what may still refuse traffic the
L3/L4 part admits), so that only verdicts depending on them become ``unknown``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from netparity.model._wire import Ctx, as_list, as_map, as_str
from netparity.model.networkpolicy import IPBlock, IPNetwork, parse_cidr
from netparity.model.selectors import LabelSelector


class Entity(StrEnum):
    ALL = "all"
    WORLD = "world"
    WORLD_IPV4 = "world-ipv4"
    WORLD_IPV6 = "world-ipv6"
    CLUSTER = "cluster"
    HOST = "host"
    REMOTE_NODE = "remote-node"
    KUBE_APISERVER = "kube-apiserver"
    INIT = "init"
    HEALTH = "health"
    UNMANAGED = "unmanaged"
    INGRESS = "ingress"


class CiliumProtocol(StrEnum):
    ANY = "ANY"
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


@dataclass(frozen=True, slots=True, kw_only=True)
class CiliumPort:
    port: int | str | None  # None or 0: all ports; str: a named port
    end_port: int | None = None
    protocol: CiliumProtocol = CiliumProtocol.ANY

    def __str__(self) -> str:
        p = "all" if self.port is None else str(self.port)
        if self.end_port:
            p += f"-{self.end_port}"
        return f"{p}/{self.protocol}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CiliumRule:
    """One ingress/egress(/Deny) rule: L3 peers OR'd, then toPorts (empty: all ports)."""

    index: int
    endpoints: tuple[LabelSelector, ...] | None = None
    entities: tuple[Entity, ...] = ()
    cidrs: tuple[IPBlock, ...] = ()
    ports: tuple[CiliumPort, ...] = ()
    unsupported: tuple[str, ...] = ()
    requires: tuple[LabelSelector, ...] = ()  # fromRequires / toRequires
    icmp: bool = False  # `icmps`: the rule's L4 part is ICMP only (never with toPorts)
    nodes: tuple[LabelSelector, ...] | None = None  # fromNodes / toNodes
    fqdns: str | None = None  # the toFQDNs path
    l3_unknown: tuple[str, ...] = ()  # toServices, toGroups, CIDR groups: peers not resolved
    l7: tuple[str, ...] = ()  # toPorts[].rules.http/kafka/dns paths (need the L7 proxy)
    conditions: tuple[str, ...] = ()  # L7, authentication, serverNames, TLS: may still refuse

    @property
    def has_l3(self) -> bool:
        return (
            self.endpoints is not None
            or bool(self.entities)
            or bool(self.cidrs)
            or self.nodes is not None
            or self.fqdns is not None
            or bool(self.l3_unknown)
        )


_PEER_FIELDS = {
    "ingress": ("fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet"),
    "egress": ("toEndpoints", "toEntities", "toCIDR", "toCIDRSet"),
}
_UNSUPPORTED = {
    "ingress": ("fromRequires", "fromGroups", "fromNodes", "icmps", "authentication"),
    "egress": (
        "toRequires",
        "toGroups",
        "toNodes",
        "toFQDNs",
        "toServices",
        "icmps",
        "authentication",
    ),
}


def _parse_rule(raw: Any, ctx: Ctx, index: int, direction: str) -> CiliumRule:
    data = as_map(raw, ctx)
    ep_f, ent_f, cidr_f, cidrset_f = _PEER_FIELDS[direction]
    known = {ep_f, ent_f, cidr_f, cidrset_f, "toPorts", *_UNSUPPORTED[direction]}
    unsupported: list[str] = []
    l3_unknown: list[str] = []
    conditions: list[str] = []
    l7: list[str] = []
    for key in data:
        if key not in known:
            raise ctx.sub(str(key)).error("is not a known field of a Cilium rule")
        if key in _UNSUPPORTED[direction] and data[key]:
            unsupported.append(f"{ctx.path}.{key}")
            if key in ("toServices", "toGroups", "fromGroups"):
                l3_unknown.append(f"{ctx.path}.{key}")
            elif key == "authentication":
                conditions.append(f"{ctx.path}.{key}")
    req_f = "fromRequires" if direction == "ingress" else "toRequires"
    requires = _selectors(data.get(req_f), ctx.sub(req_f))
    nodes_f = "fromNodes" if direction == "ingress" else "toNodes"
    nodes = _selectors(data[nodes_f], ctx.sub(nodes_f)) if data.get(nodes_f) else None
    fqdns = f"{ctx.path}.toFQDNs" if data.get("toFQDNs") else None
    endpoints = None
    if ep_f in data and data[ep_f] is not None:
        endpoints = _selectors(data[ep_f], ctx.sub(ep_f))
    entities = []
    for i, e in enumerate(as_list(data.get(ent_f), ctx.sub(ent_f))):
        try:
            entities.append(Entity(str(e)))
        except ValueError:
            raise ctx.sub(ent_f).sub(i).error(f"unknown entity {e!r}") from None
    cidrs = _parse_cidrs(data, ctx, cidr_f, cidrset_f, unsupported, l3_unknown)
    ports = _parse_to_ports(data, ctx, unsupported, conditions, l7)
    return CiliumRule(
        index=index,
        endpoints=endpoints,
        entities=tuple(entities),
        cidrs=tuple(cidrs),
        ports=tuple(ports),
        unsupported=tuple(unsupported),
        requires=requires,
        icmp=bool(data.get("icmps")),
        nodes=nodes,
        fqdns=fqdns,
        l3_unknown=tuple(l3_unknown),
        l7=tuple(l7),
        conditions=tuple(conditions),
    )


def _selectors(raw: Any, ctx: Ctx) -> tuple[LabelSelector, ...]:
    """A list of Cilium label selectors (keys as Cilium writes them)."""
    return tuple(
        LabelSelector.from_dict(s, ctx.sub(i), kubernetes_keys=False)
        for i, s in enumerate(as_list(raw, ctx))
    )


def _parse_cidrs(
    data: Mapping[str, Any],
    ctx: Ctx,
    cidr_f: str,
    cidrset_f: str,
    unsupported: list[str],
    l3_unknown: list[str],
) -> list[IPBlock]:
    """A rule's CIDR peers (toCIDR/fromCIDR and the CIDR sets); a CIDR group reference is
    noted as unsupported."""
    cidrs = [
        IPBlock(cidr=parse_cidr(c, ctx.sub(cidr_f).sub(i)))
        for i, c in enumerate(as_list(data.get(cidr_f), ctx.sub(cidr_f)))
    ]
    for i, item in enumerate(as_list(data.get(cidrset_f), ctx.sub(cidrset_f))):
        ictx = ctx.sub(cidrset_f).sub(i)
        m = as_map(item, ictx, allow_none=False)
        if "cidrGroupRef" in m or "cidrGroupSelector" in m:
            unsupported.append(f"{ictx.path}.cidrGroupRef")
            l3_unknown.append(f"{ictx.path}.cidrGroupRef")
            continue
        excepts: list[IPNetwork] = [
            parse_cidr(e, ictx.sub("except").sub(j))
            for j, e in enumerate(as_list(m.get("except"), ictx.sub("except")))
        ]
        cidrs.append(
            IPBlock(cidr=parse_cidr(m.get("cidr"), ictx.sub("cidr")), excepts=tuple(excepts))
        )
    return cidrs


def _parse_to_ports(
    data: Mapping[str, Any], ctx: Ctx, unsupported: list[str], conditions: list[str], l7: list[str]
) -> list[CiliumPort]:
    """A rule's toPorts; what else a port rule holds (L7 rules, SNI, ...) is noted."""
    ports: list[CiliumPort] = []
    for i, pr in enumerate(as_list(data.get("toPorts"), ctx.sub("toPorts"))):
        pctx = ctx.sub("toPorts").sub(i)
        pm = as_map(pr, pctx, allow_none=False)
        for key in pm:
            if key != "ports" and pm[key]:
                unsupported.append(f"{pctx.path}.{key}")
                conditions.append(f"{pctx.path}.{key}")
                if key == "rules":
                    kinds = as_map(pm[key], pctx.sub(key))
                    l7.extend(
                        f"{pctx.path}.rules.{k}" for k in ("http", "kafka", "dns") if kinds.get(k)
                    )
        for j, pp in enumerate(as_list(pm.get("ports"), pctx.sub("ports"))):
            ppctx = pctx.sub("ports").sub(j)
            ppm = as_map(pp, ppctx, allow_none=False)
            port = _parse_cilium_port(ppm.get("port"), ppctx.sub("port"))
            end = ppm.get("endPort")
            end_port = None
            if end not in (None, 0):
                if not isinstance(end, int) or not 1 <= end <= 65535:
                    raise ppctx.sub("endPort").error(f"must be a port number, got {end!r}")
                if not isinstance(port, int) or end < port:
                    raise ppctx.sub("endPort").error(f"{end} is below port {port}")
                end_port = end
            proto_raw = as_str(ppm.get("protocol"), ppctx.sub("protocol")) or "ANY"
            try:
                proto = CiliumProtocol(proto_raw.upper())
            except ValueError:
                raise ppctx.sub("protocol").error(f"unknown protocol {proto_raw!r}") from None
            ports.append(CiliumPort(port=port, end_port=end_port, protocol=proto))
        if not pm.get("ports"):
            ports.append(CiliumPort(port=None))
    return ports


def _parse_cilium_port(raw: Any, ctx: Ctx) -> int | str | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.isdigit():
        value = int(raw)
    elif isinstance(raw, str) and raw:
        return raw
    else:
        raise ctx.error(f"must be a port number or name, got {raw!r}")
    if value == 0:
        return None
    if not 1 <= value <= 65535:
        raise ctx.error(f"port {value} is out of range 1-65535")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class CiliumPolicy:
    """One spec of a CNP (namespace set) or CCNP (namespace None)."""

    kind: str
    namespace: str | None
    name: str
    spec_index: int
    endpoint_selector: LabelSelector | None
    node_selector: LabelSelector | None = None
    ingress: tuple[CiliumRule, ...] | None = None
    egress: tuple[CiliumRule, ...] | None = None
    ingress_deny: tuple[CiliumRule, ...] = ()
    egress_deny: tuple[CiliumRule, ...] = ()
    default_deny_ingress: bool | None = None
    default_deny_egress: bool | None = None

    @property
    def key(self) -> str:
        base = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return base if self.spec_index == 0 else f"{base}#{self.spec_index}"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], ctx: Ctx) -> tuple[CiliumPolicy, ...]:
        kind = str(raw.get("kind"))
        meta = as_map(raw.get("metadata"), ctx.sub("metadata"))
        name = as_str(meta.get("name"), ctx.sub("metadata.name"), required=True)
        assert name is not None
        namespace = None
        if kind == "CiliumNetworkPolicy":
            namespace = as_str(meta.get("namespace"), ctx.sub("metadata.namespace")) or "default"
        specs: list[tuple[Ctx, Mapping[str, Any]]] = []
        if raw.get("spec") is not None:
            specs.append((ctx.sub("spec"), as_map(raw["spec"], ctx.sub("spec"))))
        for i, s in enumerate(as_list(raw.get("specs"), ctx.sub("specs"))):
            specs.append((ctx.sub("specs").sub(i), as_map(s, ctx.sub("specs").sub(i))))
        if not specs:
            raise ctx.sub("spec").error("is required")
        out = []
        for index, (sctx, spec) in enumerate(specs):
            known = {
                "endpointSelector",
                "nodeSelector",
                "ingress",
                "egress",
                "ingressDeny",
                "egressDeny",
                "description",
                "labels",
                "enableDefaultDeny",
            }
            for key in spec:
                if key not in known:
                    raise sctx.sub(str(key)).error("is not a known field of a Cilium policy spec")
            ep = spec.get("endpointSelector")
            nodesel = spec.get("nodeSelector")
            if (ep is None) == (nodesel is None):
                raise sctx.error("must set exactly one of endpointSelector and nodeSelector")
            dd = as_map(spec.get("enableDefaultDeny"), sctx.sub("enableDefaultDeny"))

            def rules(
                field: str, direction: str, s: Mapping[str, Any] = spec, c: Ctx = sctx
            ) -> tuple[CiliumRule, ...] | None:
                if field not in s or s[field] is None:
                    return None
                return tuple(
                    _parse_rule(r, c.sub(field).sub(i), i, direction)
                    for i, r in enumerate(as_list(s[field], c.sub(field)))
                )

            out.append(
                cls(
                    kind=kind,
                    namespace=namespace,
                    name=name,
                    spec_index=index,
                    endpoint_selector=None
                    if ep is None
                    else LabelSelector.from_dict(
                        ep, sctx.sub("endpointSelector"), kubernetes_keys=False
                    ),
                    node_selector=None
                    if nodesel is None
                    else LabelSelector.from_dict(
                        nodesel, sctx.sub("nodeSelector"), kubernetes_keys=False
                    ),
                    ingress=rules("ingress", "ingress"),
                    egress=rules("egress", "egress"),
                    ingress_deny=rules("ingressDeny", "ingress") or (),
                    egress_deny=rules("egressDeny", "egress") or (),
                    default_deny_ingress=dd.get("ingress"),
                    default_deny_egress=dd.get("egress"),
                )
            )
        return tuple(out)
