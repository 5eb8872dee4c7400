"""The EndpointSlice controller for the pods created through the API: each selector Service
of a namespace gets an EndpointSlice `NAME-run` of the run-created pods it selects, as
Kubernetes' controller writes them: every pod with an address that runs, `ready` as the
pod's Ready condition (true for all when the Service publishes not-ready addresses), so
a pod whose readiness gate nobody sets is listed not ready and kube-proxy sends it
nothing. The lab's own pods stay in the slices `labobjects` made (`NAME-lab`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netparity.labapi.server import KubeAPI

SUFFIX = "-run"


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True (what kube-proxy and the controller read)."""
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def sync(api: KubeAPI, namespace: str) -> None:
    """Write (or remove) the `-run` EndpointSlice of every selector Service in `namespace`."""
    with api.lock:
        run_pods = [
            p
            for (plural, ns, _), p in sorted(api.store.items())
            if plural == "pods"
            and ns == namespace
            and p["metadata"].get("uid") in api.runtimes
            and (p.get("status") or {}).get("phase") == "Running"
            and (p.get("status") or {}).get("podIP")
        ]
        services = [
            s
            for (plural, ns, _), s in sorted(api.store.items())
            if plural == "services" and ns == namespace and (s.get("spec") or {}).get("selector")
        ]
        for svc in services:
            _write(api, svc, run_pods)


def _write(api: KubeAPI, svc: Mapping[str, Any], run_pods: list[dict[str, Any]]) -> None:
    spec, meta = svc["spec"], svc["metadata"]
    selector: Mapping[str, str] = spec["selector"]
    publish = bool(spec.get("publishNotReadyAddresses"))
    chosen = [
        p
        for p in run_pods
        if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
    ]
    key = ("endpointslices", meta["namespace"], meta["name"] + SUFFIX)
    if not chosen:
        api.store.pop(key, None)
        return
    endpoints = [
        {
            "addresses": [p["status"]["podIP"]],
            "conditions": {
                "ready": publish or pod_ready(p),
                "serving": pod_ready(p),
                "terminating": False,
            },
            "nodeName": p["spec"].get("nodeName"),
            "targetRef": {
                "kind": "Pod",
                "namespace": meta["namespace"],
                "name": p["metadata"]["name"],
                "uid": p["metadata"]["uid"],
            },
        }
        for p in chosen
    ]
    old = api.store.get(key)
    if old is not None and old["endpoints"] == endpoints:
        return
    ports = [
        {
            "name": port.get("name") or "",
            "port": port["targetPort"] if isinstance(port.get("targetPort"), int) else port["port"],
            "protocol": port.get("protocol", "TCP"),
        }
        for port in spec.get("ports") or ()
    ]
    obj: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": meta["name"] + SUFFIX,
            "namespace": meta["namespace"],
            "labels": {
                "kubernetes.io/service-name": meta["name"],
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }
    api._stamp(obj)
    api.store[key] = obj
