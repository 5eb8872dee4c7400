"""The Snapshot: load cluster objects from `kubectl get -o yaml` files, folders or dicts."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from netparity.errors import InputError
from netparity.model.ciliumpolicy import CiliumPolicy
from netparity.model.collect import (
    CONFIG_MAPS,
    add,
    add_more,
    check_once,
    check_unique_ips,
    kubelet_version,
    with_namespace,
)
from netparity.model.networkpolicy import NetworkPolicy
from netparity.model.objects import (
    NAMESPACE_NAME_LABEL,
    Namespace,
    Node,
    Pod,
    Service,
    frozen_labels,
)
from netparity.model.workloads import (
    WORKLOAD_KINDS,
    Endpoints,
    EndpointSlice,
    Workload,
    place,
    resolve_endpoints,
    template_pods,
)
from netparity.yamlio import load_all, read_text

__all__ = ["CONFIG_MAPS", "Snapshot", "load_snapshot", "snapshot_from_dicts"]

STDIN = "-"


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
    # pods, nodes and Services by key, built on first look-up (a probe file names thousands)
    _index: dict[str, dict[Any, Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def template_pods(self) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.template is not None)

    def namespace(self, name: str) -> Namespace:
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        return Namespace(name=name, labels=frozen_labels({NAMESPACE_NAME_LABEL: name}))

    def _by(self, kind: str) -> dict[Any, Any]:
        """The first of each key (as the linear searches found them), built once."""
        index = self._index.get(kind)
        if index is None:
            index = {}
            if kind == "pods":
                for p in self.pods:
                    index.setdefault((p.namespace, p.name), p)
            elif kind == "namespaces":  # the pods of each namespace, in order
                grouped: dict[str, list[Pod]] = {}
                for p in self.pods:
                    grouped.setdefault(p.namespace, []).append(p)
                index = {ns: tuple(pods) for ns, pods in grouped.items()}
            elif kind == "nodes":
                for n in self.nodes:
                    index.setdefault(n.name, n)
            else:
                for s in self.services:
                    index.setdefault((s.namespace, s.name), s)
            self._index[kind] = index
        return index

    def pod(self, namespace: str, name: str) -> Pod | None:
        found: Pod | None = self._by("pods").get((namespace, name))
        return found

    def node(self, name: str) -> Node | None:
        found: Node | None = self._by("nodes").get(name)
        return found

    def service(self, namespace: str, name: str) -> Service | None:
        found: Service | None = self._by("services").get((namespace, name))
        return found

    def backends(self, service: Service) -> tuple[Pod, ...]:
        if not service.selector and service.key in self.endpoints:
            return self.endpoints[service.key].pods
        # a Service selects pods of its own namespace only
        pods = self._by("namespaces").get(service.namespace, ())
        return tuple(p for p in pods if not p.host_network and service.selects(p))

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
            obj, took = with_namespace(obj, namespace)
            defaulted += took
            check_once(obj, src, seen)
            try:
                kind = obj.get("kind")
                if kind in WORKLOAD_KINDS or kind == "EndpointSlice":
                    add_more(obj, workloads, slices, skipped)
                else:
                    add(obj, namespaces, pods, nodes, services, policies, cilium, config, skipped)
                    if kind == "Node":
                        kubelet_version(obj, versions)
            except InputError as e:
                raise e.at(source=src) from None
    notes: list[str] = []
    if defaulted:
        notes.append(
            f"{defaulted} objects without metadata.namespace took namespace {namespace!r} "
            "(--namespace)"
        )
    nodes, pods = _placed(nodes, pods, workloads, namespaces, notes, pod_cidr, node_cidr)
    check_unique_ips(pods.values(), nodes.values())
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


def _placed(
    nodes: dict[str, Node],
    pods: dict[str, Pod],
    workloads: dict[str, Workload],
    namespaces: dict[str, Namespace],
    notes: list[str],
    pod_cidr: str | None,
    node_cidr: str | None,
) -> tuple[dict[str, Node], dict[str, Pod]]:
    """The nodes and pods once workloads without running pods add template pods and every
    pod has a node (`place`); a namespace that only pods name is added to `namespaces`."""
    for tp in template_pods(list(workloads.values()), list(pods.values())):
        pods[tp.key] = tp
    placement = place(
        [nodes[k] for k in sorted(nodes)],
        [pods[k] for k in sorted(pods)],
        pod_cidr=pod_cidr,
        node_cidr=node_cidr,
    )
    if placement.note:
        notes.append(placement.note)
    for pod in placement.pods:
        if pod.namespace not in namespaces:
            namespaces[pod.namespace] = Namespace(
                name=pod.namespace, labels=frozen_labels({NAMESPACE_NAME_LABEL: pod.namespace})
            )
    return {n.name: n for n in placement.nodes}, {p.key: p for p in placement.pods}
