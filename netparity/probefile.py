"""Explicit probe files: a public YAML format for connectivity assertions.

    probes:
      - from: x/a            # NAMESPACE/NAME, or NAMESPACE/key=value,key2=value2 (first matching pod)
        to: y/b              # also node:NAME, ip:ADDRESS, svc:NS/NAME, nodeport:NS/NAME@NODE, lb:NS/NAME@NODE
        port: 80             # number, or a container port name
        protocol: TCP        # TCP (default), UDP, SCTP
        expect: allow        # optional: allow | deny, or per dataplane {npm: allow, cilium: deny}

As a source, `external` (DEFAULT_EXTERNAL_IP) or `ip:ADDRESS` is a client outside the
cluster and `node:NAME` is the node's host network. `@NODE` names the node receiving
NodePort/LoadBalancer traffic (default: the node of the first backend). For `svc:`,
`nodeport:` and `lb:` the port is the Service's port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netparity.engine.dataplane import DATAPLANES
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    Decision,
    Endpoint,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Via,
)
from netparity.errors import InputError
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot
from netparity.yamlio import read_yaml

_FIELDS = frozenset({"from", "to", "port", "protocol", "expect", "name"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeSpec:
    """One entry of a probe file, validated but not yet resolved against a cluster."""

    index: int
    source: str
    destination: str
    port: int | str
    protocol: Protocol = Protocol.TCP
    expect: Mapping[str, Decision] | None = None  # dataplane -> expected; "*" for all
    name: str | None = None
    origin: str = "<probes>"

    def expected(self, dataplane: str) -> Decision | None:
        if self.expect is None:
            return None
        return self.expect.get(dataplane, self.expect.get("*"))

    def label(self) -> str:
        return self.name or f"{self.source} -> {self.destination}:{self.port}/{self.protocol}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedProbe:
    spec: ProbeSpec
    traffic: Traffic


def _err(origin: str, index: int, field: str, message: str) -> InputError:
    return InputError(message, source=origin, kind="probe", name=f"#{index + 1}", field=field)


def parse_probes(data: Any, origin: str = "<probes>") -> tuple[ProbeSpec, ...]:
    if not isinstance(data, Mapping) or not isinstance(data.get("probes"), list):
        raise InputError(
            "must be a mapping with a list under `probes`", source=origin, field="probes"
        )
    for key in data:
        if key != "probes":
            raise InputError(
                "is not a known top-level key (a probe file has only `probes`)",
                source=origin,
                field=str(key),
            )
    specs = []
    for i, raw in enumerate(data["probes"]):
        if not isinstance(raw, Mapping):
            raise _err(origin, i, "probes", "each probe must be a mapping")
        for key in raw:
            if key not in _FIELDS:
                raise _err(
                    origin,
                    i,
                    str(key),
                    f"is not a known field (allowed: {', '.join(sorted(_FIELDS))})",
                )
        for req in ("from", "to", "port"):
            if raw.get(req) in (None, ""):
                raise _err(origin, i, req, "is required")
        port = raw["port"]
        if isinstance(port, bool) or not isinstance(port, int | str):
            raise _err(origin, i, "port", f"must be a number or a port name, got {port!r}")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if isinstance(port, int) and not 1 <= port <= 65535:
            raise _err(origin, i, "port", f"port {port} is out of range 1-65535")
        proto_raw = raw.get("protocol", "TCP")
        try:
            protocol = Protocol(str(proto_raw).upper())
        except ValueError:
            raise _err(
                origin, i, "protocol", f"unknown protocol {proto_raw!r} (expected TCP, UDP or SCTP)"
            ) from None
        specs.append(
            ProbeSpec(
                index=i,
                source=str(raw["from"]),
                destination=str(raw["to"]),
                port=port,
                protocol=protocol,
                expect=_parse_expect(raw.get("expect"), origin, i),
                name=str(raw["name"]) if raw.get("name") else None,
                origin=origin,
            )
        )
    return tuple(specs)


def _parse_expect(raw: Any, origin: str, index: int) -> Mapping[str, Decision] | None:
    if raw is None:
        return None

    def one(value: Any, field: str) -> Decision:
        if value not in ("allow", "deny"):
            raise _err(origin, index, field, f"must be allow or deny, got {value!r}")
        return Decision(value)

    if isinstance(raw, str):
        return {"*": one(raw, "expect")}
    if isinstance(raw, Mapping):
        out = {}
        for k, v in raw.items():
            if k not in DATAPLANES:
                raise _err(
                    origin,
                    index,
                    f"expect.{k}",
                    f"unknown dataplane (expected one of {', '.join(DATAPLANES)})",
                )
            out[str(k)] = one(v, f"expect.{k}")
        return out
    raise _err(
        origin, index, "expect", "must be allow, deny, or a mapping of dataplane to allow/deny"
    )


def load_probe_file(path: str | Path) -> tuple[ProbeSpec, ...]:
    return parse_probes(read_yaml(path, "the probe file"), str(path))


def resolve_endpoint(text: str, snapshot: Snapshot, *, as_source: bool) -> Endpoint:
    """Turn `x/a`, `node:N`, `ip:A`, `svc:NS/N`, ... into an endpoint, or raise ValueError."""
    if text == "external":
        return ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP)
    scheme, _, rest = text.partition(":") if ":" in text.split("/")[0] else ("", "", text)
    if scheme == "ip":
        try:
            ipaddress.ip_address(rest)
        except ValueError:
            raise ValueError(f"{rest!r} is not an IP address") from None
        return ExternalEndpoint(ip=rest)
    if scheme == "node":
        node = snapshot.node(rest)
        if node is None:
            raise ValueError(f"names node {rest!r}, which is not in the snapshot")
        return NodeEndpoint(node=node)
    if scheme in ("svc", "nodeport", "lb"):
        if as_source:
            raise ValueError("a Service cannot be a source")
        ref, _, at = rest.partition("@")
        ns, _, name = ref.partition("/")
        svc = snapshot.service(ns, name)
        if svc is None:
            raise ValueError(f"names Service {ref!r}, which is not in the snapshot")
        node = None
        if at:
            node = snapshot.node(at)
            if node is None:
                raise ValueError(f"names node {at!r}, which is not in the snapshot")
        via = {"svc": Via.CLUSTER_IP, "nodeport": Via.NODE_PORT, "lb": Via.LOAD_BALANCER}[scheme]
        if via is Via.CLUSTER_IP and at:
            raise ValueError("`@NODE` applies to nodeport: and lb: only")
        return ServiceEndpoint(service=svc, via=via, node=node)
    if scheme:
        raise ValueError(
            f"unknown endpoint kind {scheme!r} (expected node:, ip:, svc:, nodeport:, lb:)"
        )
    ns, sep, name = text.partition("/")
    if not sep or not ns or not name:
        raise ValueError(f"{text!r} is neither NAMESPACE/NAME nor NAMESPACE/key=value")
    if "=" in name:
        wanted = {}
        for part in name.split(","):
            k, eq, v = part.partition("=")
            if not eq or not k:
                raise ValueError(f"bad label selector {name!r}")
            wanted[k] = v
        for candidate in snapshot.pods:
            if candidate.namespace == ns and all(
                candidate.labels.get(k) == v for k, v in wanted.items()
            ):
                return PodEndpoint(pod=candidate)
        raise ValueError(f"no pod in namespace {ns!r} has labels {name}")
    pod = snapshot.pod(ns, name)
    if pod is None:
        raise ValueError(f"names pod {text!r}, which does not exist in the snapshot")
    return PodEndpoint(pod=pod)


def resolve_probes(specs: Sequence[ProbeSpec], snapshot: Snapshot) -> tuple[ResolvedProbe, ...]:
    out = []
    for spec in specs:
        try:
            src = resolve_endpoint(spec.source, snapshot, as_source=True)
        except ValueError as e:
            raise _err(spec.origin, spec.index, "from", str(e)) from None
        try:
            dst = resolve_endpoint(spec.destination, snapshot, as_source=False)
        except ValueError as e:
            raise _err(spec.origin, spec.index, "to", str(e)) from None
        if isinstance(spec.port, str):
            if not isinstance(dst, PodEndpoint | ServiceEndpoint):
                raise _err(
                    spec.origin,
                    spec.index,
                    "port",
                    f"a port name needs a pod or Service destination, not {spec.destination}",
                )
            if (
                isinstance(dst, PodEndpoint)
                and dst.pod.named_port(spec.port, spec.protocol) is None
            ):
                raise _err(
                    spec.origin,
                    spec.index,
                    "port",
                    f"pod {dst.pod.key} has no {spec.protocol} container port named {spec.port!r}",
                )
        if (
            isinstance(dst, ServiceEndpoint)
            and dst.service.port_named(spec.port, spec.protocol) is None
        ):
            raise _err(
                spec.origin,
                spec.index,
                "port",
                f"Service {dst.service.key} has no {spec.protocol} port {spec.port!r}",
            )
        out.append(
            ResolvedProbe(
                spec=spec,
                traffic=Traffic(
                    source=src, destination=dst, port=spec.port, protocol=spec.protocol
                ),
            )
        )
    return tuple(out)
