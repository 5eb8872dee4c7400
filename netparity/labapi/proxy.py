"""The fake kube-proxy for TCP on loopback: every Service port (its ClusterIP, its
nodePort on every node address, its LoadBalancer address) forwards each connection to the
Service's first endpoint, which honours `publishNotReadyAddresses`."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netparity.labapi.server import KubeAPI


def start_proxy(api: KubeAPI, svc: Mapping[str, Any]) -> None:
    spec = svc["spec"]
    uid = svc["metadata"]["uid"]
    listeners: list[socket.socket] = []
    node_ips = [ip for ip in (api.node_ip(k[2]) for k in list(api.store) if k[0] == "nodes") if ip]
    for port in spec.get("ports") or ():
        if port.get("protocol", "TCP") != "TCP":
            continue
        addrs = [(spec["clusterIP"], port["port"])]
        if port.get("nodePort"):
            addrs += [(ip, port["nodePort"]) for ip in node_ips]
        for ingress in (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or ():
            addrs.append((ingress["ip"], port["port"]))
        for addr in addrs:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
            s.listen(64)
            listeners.append(s)
            meta = svc["metadata"]
            api._spawn(_accept, (api, s, meta["namespace"], meta["name"], port))
    with api.lock:
        api.proxies[uid] = listeners


def endpoints(api: KubeAPI, namespace: str, name: str) -> list[str]:
    """The addresses a Service forwards to, as the endpoints controller would list them."""
    with api.lock:
        svc = api.store.get(("services", namespace, name))
        if svc is None:
            return []
        spec = svc["spec"]
        selector = spec.get("selector") or {}
        if not selector:
            return []
        out = []
        for (plural, ns, _), pod in sorted(api.store.items()):
            if plural != "pods" or ns != namespace:
                continue
            labels = pod["metadata"].get("labels") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            status = pod.get("status") or {}
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or ()
            )
            if status.get("podIP") and (ready or spec.get("publishNotReadyAddresses")):
                out.append(str(status["podIP"]))
        return out


def _accept(
    api: KubeAPI, listener: socket.socket, namespace: str, name: str, port: Mapping[str, Any]
) -> None:
    while not api._stopping.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        api._spawn(_one, (api, conn, namespace, name, port))


def _one(
    api: KubeAPI, conn: socket.socket, namespace: str, name: str, port: Mapping[str, Any]
) -> None:
    with conn:
        backends = endpoints(api, namespace, name)
        if not backends:
            return  # no endpoints: kube-proxy rejects; here the connection just closes
        target = port.get("targetPort", port["port"])
        if isinstance(target, str):
            target = named_port(api, namespace, backends[0], target)
            if target is None:
                return
        try:
            with socket.create_connection((backends[0], int(target)), timeout=2) as up:
                up.settimeout(2)
                while True:
                    data = up.recv(65536)
                    if not data:
                        break
                    conn.sendall(data)
        except OSError:
            return


def named_port(api: KubeAPI, namespace: str, ip: str, name: str) -> int | None:
    with api.lock:
        for (plural, ns, _), pod in api.store.items():
            if (
                plural == "pods"
                and ns == namespace
                and (pod.get("status") or {}).get("podIP") == ip
            ):
                for c in pod["spec"]["containers"]:
                    for p in c.get("ports") or ():
                        if p.get("name") == name:
                            return int(p["containerPort"])
    return None
