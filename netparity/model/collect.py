"""Reading cluster objects as wire dicts into the snapshot's parts: which kinds and
apiVersions are read, which are cluster-scoped, the namespace an object without one takes,
one object per kind and name, and one IP per pod or node. snapshot.py assembles them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from netparity.errors import InputError
from netparity.model._wire import Ctx, as_map, str_map
from netparity.model.ciliumpolicy import CiliumPolicy
from netparity.model.networkpolicy import NetworkPolicy
from netparity.model.objects import Namespace, Node, Pod, Service, ip_address, run_owned
from netparity.model.workloads import (
    ENDPOINT_SLICE_VERSIONS,
    WORKLOAD_KINDS,
    EndpointSlice,
    Workload,
)

# kind -> accepted apiVersions
KINDS: dict[str, frozenset[str]] = {
    "Namespace": frozenset({"v1"}),
    "Pod": frozenset({"v1"}),
    "Node": frozenset({"v1"}),
    "Service": frozenset({"v1"}),
    "ConfigMap": frozenset({"v1"}),
    "NetworkPolicy": frozenset({"networking.k8s.io/v1"}),
    "CiliumNetworkPolicy": frozenset({"cilium.io/v2"}),
    "CiliumClusterwideNetworkPolicy": frozenset({"cilium.io/v2"}),
    "EndpointSlice": ENDPOINT_SLICE_VERSIONS,
    **WORKLOAD_KINDS,
}
# Kinds without a namespace; every other kind read takes --namespace when it has none.
CLUSTER_SCOPED = frozenset({"Namespace", "Node", "CiliumClusterwideNetworkPolicy"})
# ConfigMaps that change enforcement (SEMANTICS.md 0.1); others are skipped.
CONFIG_MAPS = frozenset({"kube-system/azure-npm-config", "kube-system/cilium-config"})


def with_namespace(obj: Mapping[str, Any], namespace: str) -> tuple[Mapping[str, Any], int]:
    """The object with `namespace` where it is of a namespaced kind and names none."""
    kind = obj.get("kind")
    meta = obj.get("metadata")
    if (
        not isinstance(kind, str)
        or kind not in KINDS
        or kind in CLUSTER_SCOPED
        or not isinstance(meta, Mapping)
        or meta.get("namespace")
    ):
        return obj, 0
    return {**obj, "metadata": {**meta, "namespace": namespace}}, 1


_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def kubelet_version(obj: Mapping[str, Any], versions: Counter[str]) -> None:
    status = obj.get("status")
    info = status.get("nodeInfo") if isinstance(status, Mapping) else None
    raw = info.get("kubeletVersion") if isinstance(info, Mapping) else None
    m = _VERSION.match(raw) if isinstance(raw, str) else None
    if m:
        versions[".".join(m.groups())] += 1


def add_more(
    obj: Mapping[str, Any],
    workloads: dict[str, Workload],
    slices: list[EndpointSlice],
    skipped: Counter[str],
) -> None:
    kind = str(obj.get("kind"))
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    label = f"{meta.get('namespace')}/{meta.get('name')}"
    api = obj.get("apiVersion")
    if api not in KINDS[kind]:
        what = "has no apiVersion" if api is None else f"unsupported apiVersion {api!r}"
        raise InputError(
            f"{what} (expected {', '.join(sorted(KINDS[kind]))})",
            kind=kind,
            name=label,
            field="apiVersion",
        )
    labels = meta.get("labels")
    if isinstance(labels, Mapping) and run_owned(labels):
        skipped[f"{kind} (netparity's own)"] += 1
        return
    ctx = Ctx(kind, label)
    if kind == "EndpointSlice":
        slices.append(EndpointSlice.from_dict(obj, ctx))
    else:
        w = Workload.from_dict(obj, ctx)
        workloads[w.key] = w


def check_once(obj: Mapping[str, Any], source: str, seen: dict[tuple[str, str, str], str]) -> None:
    """The API server holds one object per kind, namespace and name: a second one is an error."""
    kind = obj.get("kind")
    meta = obj.get("metadata")
    if not isinstance(kind, str) or kind not in KINDS or not isinstance(meta, Mapping):
        return
    name, ns = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str):
        return
    key = (kind, ns if isinstance(ns, str) else "", name)
    if key in seen:
        where = "earlier in the same file" if seen[key] == source else f"also in {seen[key]}"
        raise InputError(
            f"is defined twice ({where}); a cluster holds one {kind} of that name",
            source=source,
            kind=kind,
            name=f"{ns}/{name}" if ns else name,
            field="metadata.name",
        )
    seen[key] = source


def add(
    obj: Mapping[str, Any],
    namespaces: dict[str, Namespace],
    pods: dict[str, Pod],
    nodes: dict[str, Node],
    services: dict[str, Service],
    policies: dict[str, NetworkPolicy],
    cilium: dict[str, CiliumPolicy],
    config: dict[str, Mapping[str, str]],
    skipped: Counter[str],
) -> None:
    kind = obj.get("kind")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name = meta.get("name")
    ns = meta.get("namespace")
    label = f"{ns}/{name}" if ns else str(name)
    if not isinstance(kind, str):
        raise InputError("has no kind", name=label if name else None, field="kind")
    if kind not in KINDS:
        skipped[kind] += 1
        return
    api = obj.get("apiVersion")
    if api is None:
        raise InputError(
            f"has no apiVersion (expected {', '.join(sorted(KINDS[kind]))})",
            kind=kind,
            name=label,
            field="apiVersion",
        )
    if api not in KINDS[kind]:
        raise InputError(
            f"unsupported apiVersion {api!r} (expected {', '.join(sorted(KINDS[kind]))})",
            kind=kind,
            name=label,
            field="apiVersion",
        )
    ctx = Ctx(kind, label)
    labels = meta.get("labels")
    if isinstance(labels, Mapping) and run_owned(labels):
        skipped[f"{kind} (netparity's own)"] += 1  # a run's object, never the cluster's
        return
    if kind == "Namespace":
        n = Namespace.from_dict(obj, ctx)
        namespaces[n.name] = n
    elif kind == "Pod":
        phase = as_map(obj.get("status"), ctx.sub("status")).get("phase")
        if phase in ("Succeeded", "Failed"):
            skipped["Pod (terminated)"] += 1
            return
        p = Pod.from_dict(obj, ctx)
        pods[p.key] = p
    elif kind == "Node":
        node = Node.from_dict(obj, ctx)
        nodes[node.name] = node
    elif kind == "Service":
        s = Service.from_dict(obj, ctx)
        services[s.key] = s
    elif kind == "NetworkPolicy":
        np_ = NetworkPolicy.from_dict(obj, ctx)
        policies[np_.key] = np_
    elif kind == "ConfigMap":
        key = f"{ns}/{name}"
        if key in CONFIG_MAPS:
            config[key] = MappingProxyType(str_map(obj.get("data"), ctx.sub("data")))
        else:
            skipped[kind] += 1
    else:
        for cp in CiliumPolicy.from_dict(obj, ctx):
            cilium[f"{cp.kind}/{cp.key}"] = cp


def check_unique_ips(pods: Iterable[Pod], nodes: Iterable[Node]) -> None:
    seen: dict[str, str] = {}
    for node in nodes:
        seen[node.ip] = f"Node {node.name}"
    for pod in pods:
        if pod.ip is None or pod.host_network:
            continue
        ip_address(pod.ip)
        if pod.ip in seen:
            raise InputError(
                f"IP {pod.ip} is also used by {seen[pod.ip]}",
                kind="Pod",
                name=pod.key,
                field="status.podIP",
            )
        seen[pod.ip] = f"Pod {pod.key}"
