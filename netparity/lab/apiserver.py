"""The lab's API server: the `default/kubernetes` Service and where its EndpointSlice sends.

On AKS the API server is outside the cluster's pods and nodes (a managed control plane, its
address in the `default/kubernetes` EndpointSlice), and Cilium gives that address the
`kube-apiserver` identity (SEMANTICS D28). A snapshot that lacks the Service or its
endpoints gets both here, at LAB_API_IP, so that the planner's essential `connect` probes
(#23) have a real destination; the lab runs an external host at every API server address,
whose agent accepts on 443 like the other outside hosts, and serves the Service and its
EndpointSlice through its API (netparity/labapi).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from types import MappingProxyType

from netparity.model.objects import Protocol, Service, ServicePort
from netparity.model.snapshot import Snapshot
from netparity.model.workloads import Endpoints

API_SERVICE = "default/kubernetes"
API_PORT = 443
# A documentation address outside every lab range (nodes, pods, Services, LoadBalancers), as
# AKS's public API server address is outside the cluster's.
LAB_API_IP = "198.51.100.10"
_CLUSTER_IP = "10.0.0.1"  # the first address of the Service range, as on AKS


def _ipv4(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 4
    except ValueError:
        return False


def apiserver_ips(snapshot: Snapshot) -> tuple[str, ...]:
    """The API server's IPv4 addresses outside the pods: the `default/kubernetes` endpoints."""
    eps = snapshot.endpoints.get(API_SERVICE)
    return tuple(ip for ip in eps.outside if _ipv4(ip)) if eps is not None else ()


def with_apiserver(snapshot: Snapshot) -> Snapshot:
    """`snapshot` with the `default/kubernetes` Service (443/TCP) and, where it has no
    endpoints, an EndpointSlice address LAB_API_IP; unchanged where both are there."""
    svc = next((s for s in snapshot.services if s.key == API_SERVICE), None)
    changes: dict[str, object] = {}
    if svc is None:
        taken = {s.cluster_ip for s in snapshot.services} | {p.ip for p in snapshot.pods}
        taken |= {n.ip for n in snapshot.nodes}
        svc = Service(
            namespace="default",
            name="kubernetes",
            cluster_ip=None if _CLUSTER_IP in taken else _CLUSTER_IP,
            ports=(
                ServicePort(
                    name="https", protocol=Protocol.TCP, port=API_PORT, target_port=API_PORT
                ),
            ),
            labels=MappingProxyType({"component": "apiserver", "provider": "kubernetes"}),
        )
        changes["services"] = (*snapshot.services, svc)
    eps = snapshot.endpoints.get(API_SERVICE)
    if not svc.selector and (eps is None or not (eps.pods or apiserver_ips(snapshot))):
        changes["endpoints"] = MappingProxyType(
            {**snapshot.endpoints, API_SERVICE: Endpoints(outside=(LAB_API_IP,))}
        )
    return dataclasses.replace(snapshot, **changes) if changes else snapshot  # type: ignore[arg-type]
