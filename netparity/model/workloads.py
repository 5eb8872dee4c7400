"""Workloads are pods to be: pod templates, EndpointSlices, and the cluster manifests lack.

A folder of manifests (plain YAML, `helm template`, `kustomize build`) holds Deployments,
StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers, Jobs and CronJobs rather than
pods, and no Nodes or pod IPs. Policies act on the pods those controllers will create, with
the labels the controllers add (`pod-template-hash`, `controller-revision-hash`,
`statefulset.kubernetes.io/pod-name`, the Job labels): those matter to selectors and to
Cilium's identity filter (SEMANTICS D6). A workload with running pods in the input is
represented by them; one without gets template pods (`Pod.template` names the workload),
which are predicted, linted and probed like any other pod.

Where the input has no Node objects, the cluster is assumed to be AKS with Azure CNI Overlay
(`AKS_POD_CIDR`, `AKS_NODE_CIDR`, two Linux nodes); pods without a node or an IP are placed
on the nodes in turn and given addresses from their node's pod range, so own-node and
other-node traffic is evaluated for every class.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from netparity.errors import InputError
from netparity.model._wire import Ctx, as_list, as_map, as_name, as_str, label_map
from netparity.model.objects import Node, Pod, Service, frozen_labels
from netparity.model.selectors import LabelSelector

# kind -> accepted apiVersions
WORKLOAD_KINDS: dict[str, frozenset[str]] = {
    "Deployment": frozenset({"apps/v1"}),
    "StatefulSet": frozenset({"apps/v1"}),
    "DaemonSet": frozenset({"apps/v1"}),
    "ReplicaSet": frozenset({"apps/v1"}),
    "ReplicationController": frozenset({"v1"}),
    "Job": frozenset({"batch/v1"}),
    "CronJob": frozenset({"batch/v1", "batch/v1beta1"}),
}
ENDPOINT_SLICE_VERSIONS = frozenset({"discovery.k8s.io/v1"})
# The ranges AKS gives a cluster with Azure CNI Overlay unless told otherwise
# (`az aks create --network-plugin azure --network-plugin-mode overlay`): pods 10.244.0.0/16,
# nodes in the default virtual network's subnet 10.224.0.0/16 (the first 4 addresses reserved).
AKS_POD_CIDR = "10.244.0.0/16"
AKS_NODE_CIDR = "10.224.0.0/16"
ASSUMED_NODES = ("aks-nodepool1-00000000-vmss000000", "aks-nodepool1-00000000-vmss000001")
# StatefulSet replicas given a pod each (a policy may name any of them by pod-name, D6).
MAX_STATEFULSET_PODS = 10
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes' SafeEncodeString uses


def _hash(*parts: str, length: int = 10) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:length])


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """A controller's pod template, with what tells its running pods apart."""

    kind: str
    namespace: str
    name: str
    selector: LabelSelector | None  # spec.selector (None: the template's labels)
    template: Mapping[str, Any]  # the pod template (metadata, spec), as written
    replicas: int
    indexed: bool = False  # a Job with completionMode Indexed
    owner: str | None = None  # "Kind/name" of the controller that owns this one

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], ctx: Ctx) -> Workload:
        kind = str(raw.get("kind"))
        meta = as_map(raw.get("metadata"), ctx.sub("metadata"))
        name = as_name(meta.get("name"), ctx.sub("metadata.name"))
        namespace = as_name(
            meta.get("namespace") or "default", ctx.sub("metadata.namespace"), label=True
        )
        spec = as_map(raw.get("spec"), ctx.sub("spec"))
        sctx = ctx.sub("spec")
        if kind == "CronJob":
            job = as_map(spec.get("jobTemplate"), sctx.sub("jobTemplate"))
            sctx = sctx.sub("jobTemplate").sub("spec")
            spec = as_map(job.get("spec"), sctx)
        template = as_map(spec.get("template"), sctx.sub("template"))
        if not template:
            raise sctx.sub("template").error("is required: it is the pods' template")
        raw_sel = spec.get("selector")
        selector: LabelSelector | None = None
        if raw_sel:
            if kind == "ReplicationController":  # a plain label map
                selector = LabelSelector(
                    match_labels=tuple(sorted(label_map(raw_sel, sctx.sub("selector")).items()))
                )
            else:
                selector = LabelSelector.from_dict(raw_sel, sctx.sub("selector"))
        replicas = spec.get("replicas", 1)
        if kind in ("Job", "CronJob"):
            replicas = spec.get("parallelism", 1)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            replicas = 1
        owner = None
        for ref in as_list(meta.get("ownerReferences"), ctx.sub("metadata.ownerReferences")):
            if isinstance(ref, Mapping) and ref.get("controller"):
                owner = f"{ref.get('kind')}/{ref.get('name')}"
        return cls(
            kind=kind,
            namespace=namespace,
            name=name,
            selector=selector,
            template=template,
            replicas=replicas,
            indexed=spec.get("completionMode") == "Indexed",
            owner=owner,
        )

    def _template_labels(self, ctx: Ctx) -> dict[str, str]:
        meta = as_map(self.template.get("metadata"), ctx.sub("template.metadata"))
        return label_map(meta.get("labels"), ctx.sub("template.metadata.labels"))

    def represented_by(self, pods: Iterable[Pod]) -> bool:
        """Whether running pods in the input stand for this workload (its selector, else
        its template's labels, picks one of them in its namespace)."""
        ctx = Ctx(self.kind, f"{self.namespace}/{self.name}", "spec")
        sel = self.selector or LabelSelector(
            match_labels=tuple(sorted(self._template_labels(ctx).items()))
        )
        if sel.is_empty:
            return False
        return any(p.namespace == self.namespace and sel.matches(p.labels) for p in pods)

    def pods(self) -> tuple[Pod, ...]:
        """The pods this workload's controller would create (one; a StatefulSet's replicas
        each), with the labels the controllers add, marked as coming from the template."""
        ctx = Ctx(self.kind, f"{self.namespace}/{self.name}", "spec")
        labels = self._template_labels(ctx)
        spec = as_map(self.template.get("spec"), ctx.sub("template.spec"))
        digest = _hash(self.kind, self.namespace, self.name, repr(sorted(labels.items())))
        suffix = _hash(self.name, "pod", length=5)
        per_pod: list[tuple[str, dict[str, str]]] = []
        if self.kind == "Deployment":
            per_pod.append(
                (f"{self.name}-{digest}-{suffix}", {**labels, "pod-template-hash": digest})
            )
        elif self.kind == "StatefulSet":
            revision = f"{self.name}-{digest}"
            for i in range(max(1, min(self.replicas, MAX_STATEFULSET_PODS))):
                per_pod.append(
                    (
                        f"{self.name}-{i}",
                        {
                            **labels,
                            "controller-revision-hash": revision,
                            "statefulset.kubernetes.io/pod-name": f"{self.name}-{i}",
                            "apps.kubernetes.io/pod-index": str(i),
                        },
                    )
                )
        elif self.kind == "DaemonSet":
            per_pod.append(
                (
                    f"{self.name}-{suffix}",
                    {
                        **labels,
                        "controller-revision-hash": digest,
                        "pod-template-generation": "1",
                    },
                )
            )
        elif self.kind in ("Job", "CronJob"):
            job = self.name if self.kind == "Job" else f"{self.name}-{int(digest, 36) % 10**8}"
            uid = hashlib.sha256(f"{self.namespace}/{job}".encode()).hexdigest()
            uid = f"{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:32]}"
            job_labels = {
                **labels,
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": job,
                "controller-uid": uid,
                "job-name": job,
            }
            if self.indexed:
                job_labels["batch.kubernetes.io/job-completion-index"] = "0"
            per_pod.append((f"{job}-{suffix}", job_labels))
        else:  # ReplicaSet, ReplicationController: the template's labels as they are
            per_pod.append((f"{self.name}-{suffix}", labels))
        out = []
        for name, pod_labels in per_pod:
            raw = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": self.namespace, "labels": pod_labels},
                "spec": {
                    k: v for k, v in spec.items() if k in ("containers", "hostNetwork", "nodeName")
                },
            }
            pod = Pod.from_dict(
                raw, Ctx(self.kind, f"{self.namespace}/{self.name}", "spec.template")
            )
            out.append(replace(pod, owner=self.ref, template=self.ref))
        return tuple(out)


def template_pods(workloads: Sequence[Workload], running: Sequence[Pod]) -> tuple[Pod, ...]:
    """The template pods of every workload no running pod stands for. A ReplicaSet owned by
    a Deployment, or a Job owned by a CronJob, in the input is its owner's business."""
    present = {(w.namespace, w.ref) for w in workloads}
    out: list[Pod] = []
    for w in workloads:
        if w.owner is not None and (w.namespace, w.owner) in present:
            continue
        if w.represented_by(running):
            continue
        out.extend(w.pods())
    return tuple(out)


# ------------------------------------------------------------------ EndpointSlices


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSlice:
    namespace: str
    name: str
    service: str | None  # the kubernetes.io/service-name label
    addresses: tuple[str, ...]  # ready (or readiness unknown) endpoints' addresses
    pods: tuple[str, ...] = ()  # targetRef pod keys ("namespace/name")

    @property
    def service_key(self) -> str | None:
        return None if self.service is None else f"{self.namespace}/{self.service}"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], ctx: Ctx) -> EndpointSlice:
        meta = as_map(raw.get("metadata"), ctx.sub("metadata"))
        name = as_name(meta.get("name"), ctx.sub("metadata.name"))
        namespace = as_name(
            meta.get("namespace") or "default", ctx.sub("metadata.namespace"), label=True
        )
        labels = label_map(meta.get("labels"), ctx.sub("metadata.labels"))
        addresses: list[str] = []
        pods: list[str] = []
        for i, ep in enumerate(as_list(raw.get("endpoints"), ctx.sub("endpoints"))):
            ectx = ctx.sub("endpoints").sub(i)
            emap = as_map(ep, ectx, allow_none=False)
            cond = as_map(emap.get("conditions"), ectx.sub("conditions"))
            if cond.get("ready") is False:
                continue
            for j, addr in enumerate(as_list(emap.get("addresses"), ectx.sub("addresses"))):
                text = as_str(addr, ectx.sub("addresses").sub(j), required=True)
                assert text is not None
                try:
                    ipaddress.ip_address(text)
                except ValueError:
                    if raw.get("addressType") == "FQDN":
                        continue
                    raise (
                        ectx.sub("addresses").sub(j).error(f"{text!r} is not an IP address")
                    ) from None
                addresses.append(text)
            ref = as_map(emap.get("targetRef"), ectx.sub("targetRef"))
            if ref.get("kind") == "Pod" and isinstance(ref.get("name"), str):
                pods.append(f"{ref.get('namespace') or namespace}/{ref['name']}")
        return cls(
            namespace=namespace,
            name=name,
            service=labels.get(SERVICE_NAME_LABEL),
            addresses=tuple(addresses),
            pods=tuple(pods),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoints:
    """A selectorless Service's backends from its EndpointSlices: pods, outside addresses."""

    pods: tuple[Pod, ...] = ()
    outside: tuple[str, ...] = ()


def resolve_endpoints(
    services: Sequence[Service], slices: Sequence[EndpointSlice], pods: Sequence[Pod]
) -> Mapping[str, Endpoints]:
    """Service key -> its backends, for Services without a selector that have slices."""
    by_ip = {p.ip: p for p in pods if p.ip and not p.host_network}
    by_key = {p.key: p for p in pods}
    out: dict[str, Endpoints] = {}
    selectorless = {s.key for s in services if not s.selector}
    for key in sorted(selectorless):
        mine = [s for s in slices if s.service_key == key]
        if not mine:
            continue
        found: dict[str, Pod] = {}
        outside: dict[str, None] = {}
        for sl in mine:
            for ref in sl.pods:
                if ref in by_key:
                    found[ref] = by_key[ref]
            for addr in sl.addresses:
                pod = by_ip.get(addr)
                if pod is not None:
                    found[pod.key] = pod
                elif not any(p.ip == addr for p in found.values()):
                    outside[addr] = None
        out[key] = Endpoints(pods=tuple(found[k] for k in sorted(found)), outside=tuple(outside))
    return MappingProxyType(out)


# ------------------------------------------------------------------ assumed cluster


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    nodes: tuple[Node, ...]
    pods: tuple[Pod, ...]
    note: str | None  # one line saying what was assumed, None when nothing was
    assumed_nodes: bool = False
    placed: int = 0
    addressed: int = 0
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _network(text: str, option: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InputError(f"{text!r} is not a CIDR (e.g. 10.244.0.0/16)", field=option) from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 24:
        raise InputError(
            f"{text!r} must be an IPv4 range of at least a /24 (two nodes' worth)", field=option
        )
    return net


def _free(net: ipaddress.IPv4Network, used: set[str], skip: int) -> Iterator[str]:
    for i, addr in enumerate(net.hosts()):
        if i < skip:
            continue
        if str(addr) not in used:
            used.add(str(addr))
            yield str(addr)


def _assumed_nodes(
    pods_net: ipaddress.IPv4Network, nodes_net: ipaddress.IPv4Network, used: set[str]
) -> list[Node]:
    """AKS's Linux nodes where the input has none: addresses from the node range, each a
    /24 (or the pod range's prefix) of the pod range."""
    subnets = pods_net.subnets(new_prefix=max(24, pods_net.prefixlen))
    node_ips = _free(nodes_net, used, 3)  # Azure keeps .1-.3 of a subnet
    return [
        Node(
            name=name,
            ip=next(node_ips),
            pod_cidr=str(next(subnets)),
            labels=frozen_labels(
                {
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": name,
                    "agentpool": "nodepool1",
                }
            ),
        )
        for name in ASSUMED_NODES
    ]


def place(
    nodes: Sequence[Node],
    pods: Sequence[Pod],
    *,
    pod_cidr: str | None = None,
    node_cidr: str | None = None,
) -> Placement:
    """Give the input what manifests lack: nodes (AKS, Azure CNI Overlay, two Linux nodes)
    where it has none, a node for every pod without one, an IP for every pod without one."""
    pods_net = _network(pod_cidr or AKS_POD_CIDR, "--pod-cidr")
    nodes_net = _network(node_cidr or AKS_NODE_CIDR, "--node-cidr")
    if pods_net.overlaps(nodes_net):
        raise InputError(
            f"the pod range {pods_net} overlaps the node range {nodes_net}", field="--pod-cidr"
        )
    assumed = not nodes and bool(pods)
    # Input pods are placed only where the input has no nodes at all: a live cluster's
    # Pending pod stays unscheduled (the backend says so); template pods are always placed.
    need = [
        p for p in pods if (not p.node_name or not p.ip) and (assumed or p.template is not None)
    ]
    used = {n.ip for n in nodes} | {p.ip for p in pods if p.ip}
    out_nodes = list(nodes)
    if assumed:
        out_nodes.extend(_assumed_nodes(pods_net, nodes_net, used))
    linux = [n for n in out_nodes if n.os == "linux"] or out_nodes
    by_name = {n.name: n for n in out_nodes}
    pools: dict[str, Iterator[str]] = {}

    def address(node: Node) -> str:
        if node.name not in pools:
            net = ipaddress.ip_network(node.pod_cidr, strict=False) if node.pod_cidr else pods_net
            assert isinstance(net, ipaddress.IPv4Network)
            pools[node.name] = _free(net, used, 0)
        try:
            return next(pools[node.name])
        except StopIteration:
            raise InputError(f"node {node.name}'s pod range has no free address left") from None

    placed = addressed = 0
    turn = 0
    result: list[Pod] = []
    for pod in pods:
        if (pod.node_name and pod.ip) or not linux or not (assumed or pod.template):
            result.append(pod)
            continue
        node = by_name.get(pod.node_name or "")
        if node is None:
            node = linux[turn % len(linux)]
            turn += 1
            placed += 1
        ip = pod.ip
        if ip is None:
            ip = node.ip if pod.host_network else address(node)
            addressed += 1
        result.append(replace(pod, node_name=node.name, ip=ip))
    note = None
    if assumed:
        note = (
            f"no Node objects in the input: assumed AKS with Azure CNI Overlay, pods "
            f"{pods_net} (--pod-cidr), nodes {nodes_net} (--node-cidr), "
            f"{len(ASSUMED_NODES)} Linux nodes; {placed} pods placed on them in turn, so "
            "own-node and other-node traffic is evaluated for every class"
        )
    elif need:
        note = (
            f"{len(need)} template pods (workloads without a running pod) placed on the Linux "
            "nodes in turn, with addresses from their node's pod range"
        )
    return Placement(
        nodes=tuple(out_nodes),
        pods=tuple(result),
        note=note,
        assumed_nodes=assumed,
        placed=placed,
        addressed=addressed,
    )
