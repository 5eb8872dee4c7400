"""The lab's cluster as the API shows it: Namespaces, Nodes, Pods (at their lab
addresses, Running and Ready), Services (with the lab's ClusterIPs, nodePorts and
LoadBalancer addresses), EndpointSlices, the policies as the input gave them, the
dataplane ConfigMaps, and the kube-system DaemonSet and agent pods of the lab's dataplane
(azure-npm or cilium with a version, as `netparity.kube.detect` reads them).

Built from the lab's state: its live snapshot and topology, plus the input files it was
built from for what the snapshot does not keep (policies, workloads, pods' own fields)."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from netparity.lab.state import LabState
from netparity.lab.topology import LabTopology
from netparity.model.objects import Pod, Service
from netparity.model.snapshot import STDIN, Snapshot, _documents, _files, _flatten

KUBE_SYSTEM = "kube-system"
DATAPLANE_IMAGES = {
    "npm": "mcr.microsoft.com/containernetworking/azure-npm:v1.5.45",
    "cilium": "mcr.microsoft.com/oss/cilium/cilium:v1.17.3",
    "cilium-1.16": "mcr.microsoft.com/oss/cilium/cilium:v1.16.6",
    "cilium-1.19": "mcr.microsoft.com/oss/cilium/cilium:v1.19.0",
}
# taken from the input as it is (the lab does not change them)
RAW_KINDS = frozenset(
    {
        "NetworkPolicy",
        "CiliumNetworkPolicy",
        "CiliumClusterwideNetworkPolicy",
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "Job",
        "CronJob",
        "PodDisruptionBudget",
    }
)
AGENTS = ("azure-npm", "cilium")
CLUSTER_SCOPED = frozenset({"Namespace", "Node", "CiliumClusterwideNetworkPolicy"})


def raw_documents(sources: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The input's objects, flattened (Lists), each with its namespace (`default` if none)."""
    for source in sources:
        if source == STDIN:
            continue  # read once, when the lab was built
        for path in _files([Path(source)]):
            for src, doc in _documents(path):
                for _, obj in _flatten(src, doc):
                    out = copy.deepcopy(dict(obj))
                    meta = out.setdefault("metadata", {})
                    if out.get("kind") not in CLUSTER_SCOPED:
                        meta.setdefault("namespace", "default")
                    yield out


def pod_name(pod: Pod, generation: int) -> str:
    """A controller's pod gets a new name after every upgrade (its owner recreates it);
    a bare pod keeps its name."""
    if generation == 0 or pod.owner is None:
        return pod.name
    digest = hashlib.sha256(f"{pod.key}/{generation}".encode()).hexdigest()[:5]
    stem = pod.name.rsplit("-", 1)[0] if "-" in pod.name else pod.name
    return f"{stem}-{digest}"


def _container_ports(pod: Pod) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for cp in pod.ports:
        port: dict[str, Any] = {"containerPort": cp.port, "protocol": cp.protocol.value}
        if cp.name:
            port["name"] = cp.name
        out.append(port)
    return out


def _running_status(ip: str, host_ip: str) -> dict[str, Any]:
    return {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": host_ip,
        "conditions": [
            {"type": t, "status": "True"}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ],
    }


def lab_pod(
    pod: Pod, topology: LabTopology, raw: Mapping[str, Any] | None, generation: int
) -> dict[str, Any]:
    """A pod of the lab: the input's object if it has one (else a pod of the template's
    workload), at its lab address on its lab node, Running and Ready."""
    lp = topology.pod(pod.key)
    node_ip = topology.node(lp.node).ip
    obj: dict[str, Any] = copy.deepcopy(dict(raw)) if raw is not None else {}
    obj.update(apiVersion="v1", kind="Pod")
    meta = obj.setdefault("metadata", {})
    meta.update(name=pod_name(pod, generation), namespace=pod.namespace, labels=dict(pod.labels))
    if raw is None and pod.owner:
        kind, _, owner = pod.owner.partition("/")
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "name": owner,
                "uid": f"lab-{owner}",
                "controller": True,
            }
        ]
    spec = obj.setdefault("spec", {})
    spec["nodeName"] = lp.node
    spec["hostNetwork"] = pod.host_network
    if not spec.get("containers"):
        spec["containers"] = [{"name": "main", "image": "lab", "ports": _container_ports(pod)}]
    obj["status"] = _running_status(lp.ip, node_ip)
    return obj


def _service(svc: Service) -> dict[str, Any]:
    ports = []
    for sp in svc.ports:
        port: dict[str, Any] = {
            "protocol": sp.protocol.value,
            "port": sp.port,
            "targetPort": sp.target_port,
        }
        if sp.name:
            port["name"] = sp.name
        if sp.node_port:
            port["nodePort"] = sp.node_port
        ports.append(port)
    spec: dict[str, Any] = {
        "type": svc.type.value,
        "ports": ports,
        "externalTrafficPolicy": svc.external_traffic_policy,
        "publishNotReadyAddresses": svc.publish_not_ready,
    }
    if svc.cluster_ip:
        spec["clusterIP"] = svc.cluster_ip
        spec["clusterIPs"] = [svc.cluster_ip]
    if svc.selector is not None:
        spec["selector"] = dict(svc.selector)
    if svc.load_balancer_source_ranges is not None:
        spec["loadBalancerSourceRanges"] = list(svc.load_balancer_source_ranges)
    meta: dict[str, Any] = {
        "name": svc.name,
        "namespace": svc.namespace,
        "labels": dict(svc.labels),
    }
    if svc.load_balancer_annotations:
        meta["annotations"] = dict(svc.load_balancer_annotations)
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
    if svc.load_balancer_ips:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in svc.load_balancer_ips]}}
    return obj


def _slice(svc: Service, snapshot: Snapshot, names: Mapping[str, str]) -> dict[str, Any]:
    pods = [p for p in snapshot.backends(svc) if p.ip]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{svc.name}-lab",
            "namespace": svc.namespace,
            "labels": {"kubernetes.io/service-name": svc.name},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [p.ip],
                "conditions": {"ready": True},
                "nodeName": p.node_name,
                "targetRef": {
                    "kind": "Pod",
                    "namespace": p.namespace,
                    "name": names.get(p.key, p.name),
                },
            }
            for p in pods
        ],
        "ports": [
            {
                "name": sp.name or "",
                "port": sp.target_port if isinstance(sp.target_port, int) else sp.port,
                "protocol": sp.protocol.value,
            }
            for sp in svc.ports
        ],
    }


def _node_info(name: str, version: str | None) -> dict[str, str]:
    kubelet = f"v{version or '1.31.0'}"
    info = dict.fromkeys(
        ("bootID", "machineID", "systemUUID"), hashlib.sha256(name.encode()).hexdigest()[:32]
    )
    info.update(
        architecture="amd64",
        containerRuntimeVersion="containerd://1.7.0",
        kernelVersion="netparity-lab",
        kubeProxyVersion=kubelet,
        kubeletVersion=kubelet,
        operatingSystem="linux",
        osImage="netparity lab (network namespaces)",
    )
    return info


def _node(
    topology: LabTopology, snapshot: Snapshot, name: str, version: str | None
) -> dict[str, Any]:
    ln = topology.node(name)
    model = snapshot.node(name)
    labels = dict(model.labels) if model is not None else {}
    labels.setdefault("kubernetes.io/hostname", name)
    labels.setdefault("kubernetes.io/os", "linux")
    spec: dict[str, Any] = {}
    if ln.pod_cidr:
        spec["podCIDR"] = ln.pod_cidr
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ln.ip},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": _node_info(name, version),
        },
    }


def dataplane_objects(dataplane: str, nodes: list[str]) -> list[dict[str, Any]]:
    """The kube-system DaemonSet of the lab's dataplane and its Ready pod on every node."""
    app = "azure-npm" if dataplane == "npm" else "cilium"
    container = "azure-npm" if dataplane == "npm" else "cilium-agent"
    image = DATAPLANE_IMAGES.get(dataplane, DATAPLANE_IMAGES["cilium"])
    n = len(nodes)
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": app, "namespace": KUBE_SYSTEM, "labels": {"k8s-app": app}},
            "spec": {
                "selector": {"matchLabels": {"k8s-app": app}},
                "template": {
                    "metadata": {"labels": {"k8s-app": app}},
                    "spec": {
                        "hostNetwork": True,
                        "containers": [{"name": container, "image": image}],
                    },
                },
            },
            "status": {
                key: 0 if key == "numberMisscheduled" else n
                for key in (
                    "desiredNumberScheduled",
                    "currentNumberScheduled",
                    "numberReady",
                    "updatedNumberScheduled",
                    "numberAvailable",
                    "numberMisscheduled",
                )
            },
        }
    ]
    for node in nodes:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{app}-{node}",
                    "namespace": KUBE_SYSTEM,
                    "labels": {"k8s-app": app},
                },
                "spec": {
                    "nodeName": node,
                    "hostNetwork": True,
                    "containers": [{"name": container, "image": image}],
                },
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            }
        )
    return out


def _config_maps(snapshot: Snapshot) -> list[dict[str, Any]]:
    out = []
    for key, data in sorted(snapshot.config.items()):
        namespace, _, name = key.partition("/")
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": dict(data),
            }
        )
    return out


def _outside_slice(svc: Service, snapshot: Snapshot) -> dict[str, Any]:
    """A selectorless Service's EndpointSlice of addresses outside the pods (the lab's API
    server behind `default/kubernetes`, netparity/lab/apiserver.py)."""
    eps = snapshot.endpoints.get(svc.key)
    obj = _slice(svc, snapshot, {})
    obj["endpoints"] = [
        {"addresses": [ip], "conditions": {"ready": True}} for ip in (eps.outside if eps else ())
    ]
    return obj


def lab_objects(state: LabState) -> list[dict[str, Any]]:
    """Every object the API shows for lab `state` (see the module docstring)."""
    topology = state.topology
    assert topology is not None
    snap = topology.snapshot
    raw = list(raw_documents(state.sources))
    raw_pods = {
        f"{(o.get('metadata') or {}).get('namespace')}/{(o.get('metadata') or {}).get('name')}": o
        for o in raw
        if o.get("kind") == "Pod"
    }
    names: set[str] = {ns.name for ns in snap.namespaces} | {"default", KUBE_SYSTEM}
    out: list[dict[str, Any]] = []
    pods = [p for p in snap.pods if p.labels.get("k8s-app") not in AGENTS]
    names |= {p.namespace for p in pods} | {s.namespace for s in snap.services}
    for name in sorted(names):
        labels = dict(snap.namespace(name).labels)
        out.append(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        )
    node_names = [n.name for n in topology.nodes]
    out += [_node(topology, snap, n, snap.kubernetes_version) for n in node_names]
    pod_names = {p.key: pod_name(p, state.generation) for p in pods}
    out += [lab_pod(p, topology, raw_pods.get(p.key), state.generation) for p in pods]
    out += [_service(s) for s in snap.services]
    out += [_slice(s, snap, pod_names) for s in snap.services if s.selector]
    out += [
        _outside_slice(s, snap)
        for s in snap.services
        if not s.selector and (ep := snap.endpoints.get(s.key)) and ep.outside and not ep.pods
    ]
    out += [o for o in raw if o.get("kind") in RAW_KINDS]
    out += _config_maps(snap)
    out += dataplane_objects(state.dataplane, node_names)
    return out
