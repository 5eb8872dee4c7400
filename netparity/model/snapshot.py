"""The Snapshot: load cluster objects from `kubectl get -o yaml` files, folders or dicts."""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from netparity.errors import InputError
from netparity.model._wire import Ctx, as_map, str_map
from netparity.model.ciliumpolicy import CiliumPolicy
from netparity.model.networkpolicy import NetworkPolicy
from netparity.model.objects import (
    NAMESPACE_NAME_LABEL,
    Namespace,
    Node,
    Pod,
    Service,
    frozen_labels,
    run_owned,
)
from netparity.model.workloads import (
    ENDPOINT_SLICE_VERSIONS,
    WORKLOAD_KINDS,
    Endpoints,
    EndpointSlice,
    Workload,
    place,
    resolve_endpoints,
    template_pods,
)
from netparity.yamlio import load_all, read_text

# kind -> accepted apiVersions
_KINDS: dict[str, frozenset[str]] = {
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
STDIN = "-"
# ConfigMaps that change enforcement (SEMANTICS.md 0.1); others are skipped.
CONFIG_MAPS = frozenset({"kube-system/azure-npm-config", "kube-system/cilium-config"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    nodes: tuple[Node, ...] = ()
    services: tuple[Service, ...] = ()
    network_policies: tuple[NetworkPolicy, ...] = ()
    cilium_policies: tuple[CiliumPolicy, ...] = ()
    config: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    skipped: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    sources: tuple[str, ...] = ()
    workloads: tuple[Workload, ...] = ()
    # selectorless Services' backends from their EndpointSlices (Service key -> backends)
    endpoints: Mapping[str, Endpoints] = field(default_factory=lambda: MappingProxyType({}))
    # the kubelets' version ("1.31.4") where the input's nodes show one, else None
    kubernetes_version: str | None = None
    # one line each: what was assumed for the input (nodes, addresses, namespaces)
    notes: tuple[str, ...] = ()

    @property
    def template_pods(self) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.template is not None)

    def namespace(self, name: str) -> Namespace:
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        return Namespace(name=name, labels=frozen_labels({NAMESPACE_NAME_LABEL: name}))

    def pod(self, namespace: str, name: str) -> Pod | None:
        for p in self.pods:
            if p.namespace == namespace and p.name == name:
                return p
        return None

    def node(self, name: str) -> Node | None:
        for n in self.nodes:
            if n.name == name:
                return n
        return None

    def service(self, namespace: str, name: str) -> Service | None:
        for s in self.services:
            if s.namespace == namespace and s.name == name:
                return s
        return None

    def backends(self, service: Service) -> tuple[Pod, ...]:
        if not service.selector and service.key in self.endpoints:
            return self.endpoints[service.key].pods
        return tuple(p for p in self.pods if not p.host_network and service.selects(p))

    def unresolved_services(self) -> tuple[Service, ...]:
        """Services whose backends the input does not show: no selector and no
        EndpointSlice (ExternalName Services have no backends by design)."""
        return tuple(
            s
            for s in self.services
            if not s.selector and s.key not in self.endpoints and s.type != "ExternalName"
        )

    def summary(self) -> str:
        parts = [
            f"{len(self.namespaces)} namespaces",
            f"{len(self.pods)} pods"
            + (
                f" ({len(self.template_pods)} from workload templates)"
                if self.template_pods
                else ""
            ),
            f"{len(self.nodes)} nodes",
            f"{len(self.services)} services",
            f"{len(self.network_policies)} NetworkPolicies",
            f"{len(self.cilium_policies)} Cilium policies",
        ]
        if self.skipped:
            parts.append(
                "skipped " + ", ".join(f"{n} {k}" for k, n in sorted(self.skipped.items()))
            )
        return ", ".join(parts)


def _documents(path: Path) -> Iterator[tuple[str, Any]]:
    text = read_text(path)
    if text.lstrip().startswith("{"):
        # `kubectl get -o json`: JSON is YAML too, but the json module reads it 10x faster.
        try:
            yield str(path), json.loads(text)
            return
        except json.JSONDecodeError as e:
            raise InputError(
                f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}", source=str(path)
            ) from e
    for doc in load_all(text, str(path)):
        if doc is not None:
            yield str(path), doc


def _stdin_documents() -> Iterator[tuple[str, Any]]:
    text = sys.stdin.read()
    if text.lstrip().startswith("{"):
        try:
            yield "<stdin>", json.loads(text)
            return
        except json.JSONDecodeError as e:
            raise InputError(
                f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}", source="<stdin>"
            ) from e
    for doc in load_all(text, "<stdin>"):
        if doc is not None:
            yield "<stdin>", doc


def _files(paths: Sequence[str | Path]) -> Iterator[Path]:
    for raw in paths:
        if str(raw) == STDIN:
            continue
        p = Path(raw)
        if p.is_dir():
            yield from sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix in (".yaml", ".yml", ".json")
            )
        elif p.exists():
            yield p
        else:
            raise InputError("no such file or folder", source=str(p))


def load_snapshot(
    paths: Sequence[str | Path],
    *,
    namespace: str = "default",
    pod_cidr: str | None = None,
    node_cidr: str | None = None,
) -> Snapshot:
    """Load one snapshot from YAML/JSON files and folders (Lists, multi-document, single);
    `-` reads standard input (once)."""
    if sum(1 for p in paths if str(p) == STDIN) > 1:
        raise InputError("standard input ('-') can be read only once", source=STDIN)
    docs: list[tuple[str, Any]] = []
    for raw in paths:
        if str(raw) == STDIN:
            docs.extend(_stdin_documents())
        else:
            for f in _files([raw]):
                docs.extend(_documents(f))
    snap = snapshot_from_dicts(
        docs,
        sources=tuple(str(p) for p in paths),
        namespace=namespace,
        pod_cidr=pod_cidr,
        node_cidr=node_cidr,
    )
    if not (snap.namespaces or snap.nodes or snap.services or snap.network_policies) and not (
        snap.cilium_policies or snap.workloads
    ):
        read = ", ".join(f"{n} {k}" for k, n in snap.skipped.items()) or "nothing"
        raise InputError(
            "holds no object netparity reads (Namespaces, Pods, workloads, Nodes, Services, "
            f"NetworkPolicies, Cilium policies; read: {read}): an empty snapshot would pass "
            "every check without checking anything",
            source=", ".join(str(p) for p in paths) or None,
        )
    return snap


def _flatten(source: str, doc: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if not isinstance(doc, Mapping):
        raise InputError(f"a document must be a mapping, got {type(doc).__name__}", source=source)
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        for item in doc.get("items") or ():
            if not isinstance(item, Mapping):
                raise InputError("a List item must be a mapping", source=source, kind=kind)
            if "kind" not in item and kind != "List":
                item = {**item, "kind": kind[: -len("List")], "apiVersion": doc.get("apiVersion")}
            yield source, item
    else:
        yield source, doc


def snapshot_from_dicts(
    docs: Iterable[Mapping[str, Any] | tuple[str, Any]],
    *,
    sources: tuple[str, ...] = (),
    namespace: str = "default",
    pod_cidr: str | None = None,
    node_cidr: str | None = None,
) -> Snapshot:
    """Build a snapshot from wire dicts (plain dicts, or (source, dict) pairs).

    Objects of a namespaced kind without `metadata.namespace` take `namespace` (as kubectl
    does). Workloads without running pods add template pods; where there are no Nodes,
    an AKS cluster is assumed (netparity.model.workloads.place)."""
    from netparity.model._wire import object_name_problem

    problem = object_name_problem(namespace, label=True)
    if problem:
        raise InputError(problem, field="--namespace")
    namespaces: dict[str, Namespace] = {}
    pods: dict[str, Pod] = {}
    nodes: dict[str, Node] = {}
    services: dict[str, Service] = {}
    policies: dict[str, NetworkPolicy] = {}
    cilium: dict[str, CiliumPolicy] = {}
    config: dict[str, Mapping[str, str]] = {}
    skipped: Counter[str] = Counter()
    workloads: dict[str, Workload] = {}
    slices: list[EndpointSlice] = []
    versions: Counter[str] = Counter()
    defaulted = 0
    seen: dict[tuple[str, str, str], str] = {}  # (kind, namespace, name) -> where it was read
    for entry in docs:
        source, doc = entry if isinstance(entry, tuple) else ("<input>", entry)
        for src, obj in _flatten(source, doc):
            obj, took = _with_namespace(obj, namespace)
            defaulted += took
            _check_once(obj, src, seen)
            try:
                kind = obj.get("kind")
                if kind in WORKLOAD_KINDS or kind == "EndpointSlice":
                    _add_more(obj, workloads, slices, skipped)
                else:
                    _add(obj, namespaces, pods, nodes, services, policies, cilium, config, skipped)
                    if kind == "Node":
                        _kubelet_version(obj, versions)
            except InputError as e:
                raise e.at(source=src) from None
    running = list(pods.values())
    for tp in template_pods(list(workloads.values()), running):
        pods[tp.key] = tp
    notes: list[str] = []
    if defaulted:
        notes.append(
            f"{defaulted} objects without metadata.namespace took namespace {namespace!r} "
            "(--namespace)"
        )
    placement = place(
        [nodes[k] for k in sorted(nodes)],
        [pods[k] for k in sorted(pods)],
        pod_cidr=pod_cidr,
        node_cidr=node_cidr,
    )
    if placement.note:
        notes.append(placement.note)
    nodes = {n.name: n for n in placement.nodes}
    pods = {p.key: p for p in placement.pods}
    for pod in pods.values():
        if pod.namespace not in namespaces:
            namespaces[pod.namespace] = Namespace(
                name=pod.namespace, labels=frozen_labels({NAMESPACE_NAME_LABEL: pod.namespace})
            )
    _check_unique_ips(pods.values(), nodes.values())
    pod_list = tuple(pods[k] for k in sorted(pods))
    svc_list = tuple(services[k] for k in sorted(services))
    return Snapshot(
        namespaces=tuple(namespaces[k] for k in sorted(namespaces)),
        pods=pod_list,
        nodes=tuple(nodes[k] for k in sorted(nodes)),
        services=svc_list,
        network_policies=tuple(policies[k] for k in sorted(policies)),
        cilium_policies=tuple(cilium[k] for k in sorted(cilium)),
        config=MappingProxyType(config),
        skipped=MappingProxyType(dict(sorted(skipped.items()))),
        sources=sources,
        workloads=tuple(workloads[k] for k in sorted(workloads)),
        endpoints=resolve_endpoints(svc_list, slices, pod_list),
        kubernetes_version=versions.most_common(1)[0][0] if versions else None,
        notes=tuple(notes),
    )


def _with_namespace(obj: Mapping[str, Any], namespace: str) -> tuple[Mapping[str, Any], int]:
    """The object with `namespace` where it is of a namespaced kind and names none."""
    kind = obj.get("kind")
    meta = obj.get("metadata")
    if (
        not isinstance(kind, str)
        or kind not in _KINDS
        or kind in CLUSTER_SCOPED
        or not isinstance(meta, Mapping)
        or meta.get("namespace")
    ):
        return obj, 0
    return {**obj, "metadata": {**meta, "namespace": namespace}}, 1


_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def _kubelet_version(obj: Mapping[str, Any], versions: Counter[str]) -> None:
    status = obj.get("status")
    info = status.get("nodeInfo") if isinstance(status, Mapping) else None
    raw = info.get("kubeletVersion") if isinstance(info, Mapping) else None
    m = _VERSION.match(raw) if isinstance(raw, str) else None
    if m:
        versions[".".join(m.groups())] += 1


def _add_more(
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
    if api not in _KINDS[kind]:
        what = "has no apiVersion" if api is None else f"unsupported apiVersion {api!r}"
        raise InputError(
            f"{what} (expected {', '.join(sorted(_KINDS[kind]))})",
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


def _check_once(obj: Mapping[str, Any], source: str, seen: dict[tuple[str, str, str], str]) -> None:
    """The API server holds one object per kind, namespace and name: a second one is an error."""
    kind = obj.get("kind")
    meta = obj.get("metadata")
    if not isinstance(kind, str) or kind not in _KINDS or not isinstance(meta, Mapping):
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


def _add(
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
    if kind not in _KINDS:
        skipped[kind] += 1
        return
    api = obj.get("apiVersion")
    if api is None:
        raise InputError(
            f"has no apiVersion (expected {', '.join(sorted(_KINDS[kind]))})",
            kind=kind,
            name=label,
            field="apiVersion",
        )
    if api not in _KINDS[kind]:
        raise InputError(
            f"unsupported apiVersion {api!r} (expected {', '.join(sorted(_KINDS[kind]))})",
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


def _check_unique_ips(pods: Iterable[Pod], nodes: Iterable[Node]) -> None:
    seen: dict[str, str] = {}
    for node in nodes:
        seen[node.ip] = f"Node {node.name}"
    for pod in pods:
        if pod.ip is None or pod.host_network:
            continue
        ipaddress.ip_address(pod.ip)
        if pod.ip in seen:
            raise InputError(
                f"IP {pod.ip} is also used by {seen[pod.ip]}",
                kind="Pod",
                name=pod.key,
                field="status.podIP",
            )
        seen[pod.ip] = f"Pod {pod.key}"
