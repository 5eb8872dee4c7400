"""The loopback Kubernetes API server for the tests: `netparity.labapi` (moved there so
that `netparity lab up --api` serves the same code), re-exported under its old names, plus
the small clusters the tests build in it (`demo_cluster`, `migrating`, `cluster_services`).

- list / get / create / delete / merge-patch for the kinds netparity uses, label selectors,
  `Status` bodies, ownerReference garbage collection, Pod Security and Safeguards-like
  admission, a fake scheduler, kubelet and TCP kube-proxy, pods/exec over a websocket:
  see netparity/labapi/.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from netparity.labapi import (
    BASELINE_CAPABILITIES,
    KIND_TO_RESOURCE,
    PSA_ENFORCE,
    RESOURCES,
    SAFE_SYSCTLS,
    WATCH_POLL,
    WS_GUID,
    Fault,
    KubeAPI,
    PodRuntime,
    baseline_violations,
    list_page,
    node_matches,
    now,
    pod_security_violations,
    restricted_violations,
    safeguards_violations,
    selector_matches,
    serve_watch,
    status_body,
    ws_frame,
    ws_read_frame,
)

__all__ = [
    "BASELINE_CAPABILITIES",
    "KIND_TO_RESOURCE",
    "PSA_ENFORCE",
    "RESOURCES",
    "SAFE_SYSCTLS",
    "WATCH_POLL",
    "WS_GUID",
    "Fault",
    "KubeAPI",
    "PodRuntime",
    "baseline_violations",
    "cluster_services",
    "demo_cluster",
    "list_page",
    "migrating",
    "node",
    "node_matches",
    "now",
    "pod",
    "pod_security_violations",
    "restricted_violations",
    "running",
    "safeguards_violations",
    "selector_matches",
    "serve_watch",
    "status_body",
    "ws_frame",
    "ws_read_frame",
]


@contextlib.contextmanager
def running(**kw: Any) -> Iterator[KubeAPI]:
    api = KubeAPI(**kw).start()
    try:
        yield api
    finally:
        api.stop()


# --------------------------------------------------------------------------- a small cluster


def node(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {"podCIDR": f"10.244.{ip.rsplit('.', 1)[1]}.0/24"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ]
        },
    }


def pod(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    node_name: str,
    ip: str,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{name}-rs",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                }
            ],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
        },
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "main", "image": "nginx:1.27", "ports": ports or []}],
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.2.1"},
    }


def demo_cluster(
    api: KubeAPI, *, dataplane: str = "cilium", cilium_version: str = "v1.16.5"
) -> None:
    """Two nodes, a web pod behind a NodePort Service, a client, a policy, a dataplane."""
    api.add(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"team": "shop"}},
        },
        node("node-1", "127.0.2.1"),
        node("node-2", "127.0.2.2"),
        pod(
            "shop",
            "web-1",
            {"app": "web", "pod-template-hash": "abc"},
            "node-1",
            "127.0.3.1",
            [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
            ],
        ),
        pod("shop", "client-1", {"app": "client"}, "node-2", "127.0.3.2"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "clusterIP": "127.0.7.1",
                "externalTrafficPolicy": "Cluster",
                "ports": [
                    {
                        "name": "http",
                        "port": 80,
                        "targetPort": "http",
                        "protocol": "TCP",
                        "nodePort": 31080,
                    }
                ],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web-from-client", "namespace": "shop"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                        "ports": [{"port": "http"}],
                    }
                ],
            },
        },
    )
    if dataplane == "cilium":
        image = f"mcr.microsoft.com/oss/cilium/cilium:{cilium_version}"
        api.add(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "cilium", "namespace": "kube-system"},
                "spec": {
                    "selector": {"matchLabels": {"k8s-app": "cilium"}},
                    "template": {
                        "metadata": {"labels": {"k8s-app": "cilium"}},
                        "spec": {
                            "hostNetwork": True,
                            "containers": [{"name": "cilium-agent", "image": image}],
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cilium-config", "namespace": "kube-system"},
                "data": {"enable-policy": "default"},
            },
        )
    elif dataplane == "npm":
        api.add(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "azure-npm", "namespace": "kube-system"},
                "spec": {
                    "selector": {"matchLabels": {"k8s-app": "azure-npm"}},
                    "template": {
                        "metadata": {"labels": {"k8s-app": "azure-npm"}},
                        "spec": {
                            "hostNetwork": True,
                            "containers": [
                                {
                                    "name": "azure-npm",
                                    "image": "mcr.microsoft.com/containernetworking/azure-npm:v1.5.45",
                                }
                            ],
                        },
                    },
                },
            }
        )


CILIUM_IMAGE = "mcr.microsoft.com/oss/cilium/cilium:v1.17.3"
NPM_IMAGE = "mcr.microsoft.com/containernetworking/azure-npm:v1.5.45"


def _agent_pod(name: str, app: str, image: str, node_name: str, ready: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": app}},
        "spec": {"nodeName": node_name, "containers": [{"name": app, "image": image}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def migrating(
    api: KubeAPI, *, reimaged: set[str], reimaging: frozenset[str] | set[str] = frozenset()
) -> None:
    """A cluster in the middle of `az aks update --network-dataplane cilium`, as AKS shows it:
    the cilium DaemonSet scheduled only on reimaged nodes (their agents Ready), azure-npm still
    on the others; a node being reimaged is cordoned and NotReady. `reimaged` = every node:
    the migration is over (azure-npm gone, every node schedulable and Ready)."""
    with api.lock:
        nodes = sorted(k[2] for k in api.store if k[0] == "nodes")
        for key in [
            k for k in api.store if k[0] in ("pods", "daemonsets") and k[1] == "kube-system"
        ]:
            api.store.pop(key)
    linux = nodes  # the demo clusters' nodes are all Linux
    done = all(n in reimaged for n in linux)
    for name in nodes:
        with api.lock:
            obj = api.store[("nodes", "", name)]
            obj.setdefault("spec", {})["unschedulable"] = name in reimaging
            obj.setdefault("status", {})["conditions"] = [
                {"type": "Ready", "status": "False" if name in reimaging else "True"}
            ]
            if not obj["spec"]["unschedulable"]:
                del obj["spec"]["unschedulable"]
    ready = [n for n in linux if n in reimaged]
    api.add(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "cilium", "namespace": "kube-system"},
            "spec": {
                "template": {
                    "spec": {
                        "nodeSelector": {"kubernetes.azure.com/ebpf-dataplane": "cilium"},
                        "containers": [{"name": "cilium-agent", "image": CILIUM_IMAGE}],
                    }
                }
            },
            "status": {
                "desiredNumberScheduled": len(ready),
                "currentNumberScheduled": len(ready),
                "numberReady": len(ready),
                "updatedNumberScheduled": len(ready),
                "numberAvailable": len(ready),
            },
        },
        *(_agent_pod(f"cilium-{n}", "cilium", CILIUM_IMAGE, n, True) for n in ready),
    )
    if not done:
        left = [n for n in linux if n not in reimaged]
        api.add(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "azure-npm", "namespace": "kube-system"},
                "spec": {
                    "template": {
                        "spec": {"containers": [{"name": "azure-npm", "image": NPM_IMAGE}]}
                    }
                },
                "status": {"desiredNumberScheduled": len(left), "numberReady": len(left)},
            },
            *(_agent_pod(f"azure-npm-{n}", "azure-npm", NPM_IMAGE, n, True) for n in left),
        )


# --------------------------------------------------------------------------- real cluster services


def cluster_services(api: KubeAPI) -> tuple[str, str]:
    """kube-system/kube-dns and default/kubernetes as a cluster has them, answered for real on
    loopback: the DNS Service's ClusterIP is served by the probe agent as a DNS server
    (`serve --dns-answer`, UDP and TCP 53; it answers with the API server's ClusterIP), and
    the API server's ClusterIP forwards 443/TCP to this API server. A CoreDNS pod is in the
    store (never started): a run must not twin it. Returns (DNS ClusterIP, API ClusterIP)."""
    dns_ip, api_ip = api._address("127.6"), api._address("127.6")
    host, port = api.httpd.server_address[:2]
    api.add(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
        pod(
            "kube-system",
            "coredns-1",
            {"k8s-app": "kube-dns"},
            "node-1",
            "127.0.3.53",
            [
                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
            ],
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {
                "selector": {"k8s-app": "kube-dns"},
                "clusterIP": dns_ip,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"},
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {
                "clusterIP": api_ip,
                "ports": [{"name": "https", "port": 443, "targetPort": port, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [str(host)], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
    )
    agent = Path(__file__).resolve().parents[1] / "probes" / "agent.py"
    proc = subprocess.Popen(
        [
            *(sys.executable, str(agent), "serve", "--name", "coredns", "--bind", dns_ip),
            *("--udp", "53", "--tcp", "53", "--dns-answer", api_ip),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with api.lock:
        api.runtimes["cluster:coredns"] = PodRuntime(uid="cluster:coredns", ip=dns_ip, proc=proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", (
        proc.stderr.read() if proc.stderr else ""
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((api_ip, 443))
    listener.listen(16)
    with api.lock:
        api.proxies["cluster:kubernetes"] = [listener]
    api._spawn(_forward_accept, (api, listener, (str(host), int(port))))
    return dns_ip, api_ip


def _forward_accept(api: KubeAPI, listener: socket.socket, upstream: tuple[str, int]) -> None:
    """The API server's ClusterIP: each connection piped both ways to the API server."""
    while not api._stopping.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            up = socket.create_connection(upstream, timeout=2)
        except OSError:
            conn.close()
            continue
        for a, b in ((conn, up), (up, conn)):
            api._spawn(_pipe, (a, b))


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
