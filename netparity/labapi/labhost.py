"""The API server's pods as lab pods: `LabKubeAPI` is `KubeAPI` whose pod host is a lab.

- a pod the run creates is placed by the scheduler (nodeName, nodeSelector, node
  affinity), then wired into the lab (`netparity.lab.runpods`): its own network namespace,
  an address from its node's pod range, its labels and containerPorts in the lab's live
  snapshot; its command (the probe agent) runs inside that namespace;
- the dataplane polices the new address only after `programming_delay` seconds (NPM has
  no per-pod state to show it; under Cilium the pod's CiliumEndpoint turns `ready` then);
- pods whose readiness gate nobody sets are not Ready, so no Service sends to them
  unless it publishes not-ready addresses;
- the run's Services get the lab's addresses and the dataplane's Service NAT;
- `pods/exec` runs the command inside the pod's namespace; deleting a pod removes its
  namespace, routes and rules.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from typing import Any

from netparity.errors import ClusterError
from netparity.lab import lifecycle, runpods
from netparity.labapi import endpoints
from netparity.labapi.handler import Handler
from netparity.labapi.kubelet import ready_condition
from netparity.labapi.server import KubeAPI
from netparity.labapi.wire import PodRuntime
from netparity.model._wire import Ctx
from netparity.model.objects import Pod, Service

DEFAULT_PROGRAMMING_DELAY = 1.0


def _not_ready(pod: Mapping[str, Any]) -> bool:
    """Not Ready once running (a readiness gate nobody sets): no Service's endpoint."""
    return ready_condition(pod)["status"] != "True"


class LabKubeAPI(KubeAPI):
    """KubeAPI over lab `lab` (see the module docstring)."""

    def __init__(
        self, *, lab: str, programming_delay: float = DEFAULT_PROGRAMMING_DELAY, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.lab = lab
        self.programming_delay = programming_delay
        self.cep_ready_delay = None  # ready when the dataplane has policed the pod
        self.lab_errors: list[str] = []
        self._edits = 0  # lab edits so far, and how many the rules on the nodes include
        self._policed = 0
        self._police_lock = threading.Lock()
        self._gone: list[str] = []  # pod keys to remove from the lab
        self._gone_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._gone_wake = threading.Event()

    # ------------------------------------------------------------------ pods

    def pod_address(self, pod: Mapping[str, Any], node: str, rt: PodRuntime) -> str | None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        placed = dict(pod, spec={**pod["spec"], "nodeName": node})
        model = Pod.from_dict(placed, Ctx("Pod", key))
        try:
            lp = runpods.add_pod(self.lab, model, ready=not _not_ready(pod))
        except (ClusterError, ValueError) as e:
            self.lab_errors.append(f"pod {key}: {e}")
            return None
        with self.lock:
            self._edits += 1
        rt.key = key
        rt.netns = lp.netns
        return lp.ip

    def release(self, rt: PodRuntime) -> None:
        """Deleting a pod (under the store's lock) queues its removal from the lab: one
        worker removes what is queued, many pods at once (a namespace, an anchor's twins)."""
        if not rt.key:
            return
        with self._gone_lock:
            self._gone.append(rt.key)
        self._gone_wake.set()
        endpoints.sync(self, rt.key.split("/")[0])

    def _reaper(self) -> None:
        while not self._stopping.is_set():
            self._gone_wake.wait(0.5)
            self.flush()

    def flush(self) -> None:
        """Remove the queued pods from the lab now."""
        with self._flush_lock:
            self._gone_wake.clear()
            with self._gone_lock:
                keys, self._gone = self._gone, []
            if not keys:
                return
            try:
                runpods.remove_pods(self.lab, keys)
            except ClusterError as e:  # the lab is gone (down, upgrade): nothing to remove
                self.lab_errors.append(f"pods {', '.join(keys)}: {e}")

    def start(self) -> LabKubeAPI:
        super().start()
        self._spawn(self._reaper, ())
        return self

    def stop(self) -> None:
        super().stop()
        self.flush()

    def exec_prefix(self, rt: PodRuntime) -> list[str]:
        return ["ip", "netns", "exec", rt.netns] if rt.netns else []

    def launch(self, rt: PodRuntime, argv: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.exec_prefix(rt), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def pod_running(self, namespace: str, name: str, uid: str) -> None:
        endpoints.sync(self, namespace)  # the EndpointSlice controller sees it run
        if self.cilium_crds:
            self._cilium_endpoint(namespace, name, uid)  # waiting for its identity
        self._spawn(self._program, (namespace, name))

    def _program(self, namespace: str, name: str) -> None:
        """After the programming delay, the dataplane polices every pod added so far."""
        time.sleep(self.programming_delay)
        self.police()
        if not self.cilium_crds:
            return
        with self.lock:
            cep = self.store.get(("ciliumendpoints", namespace, name))
            if cep is not None:
                cep["status"] = {"state": "ready", "identity": {"id": 12345}}
                self._stamp(cep)
                self.cep_ready_at[name] = time.monotonic()

    def police(self) -> None:
        """Re-apply the lab's rules if an edit since the last time is not in them."""
        with self._police_lock:
            with self.lock:
                wanted = self._edits
            if self._policed >= wanted:
                return
            try:
                runpods.police(self.lab)
            except ClusterError as e:
                self.lab_errors.append(f"rules: {e}")
                return
            self._policed = wanted

    # ------------------------------------------------------------------ Services

    def _allocate_service(self, svc: dict[str, Any]) -> None:
        """The lab's addresses and nodePorts, and its Service NAT, for a run's Service."""
        meta = svc["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        spec = svc.setdefault("spec", {})
        for port in spec.get("ports") or ():
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port["port"])
        model = Service.from_dict(svc, Ctx("Service", key))
        topology = lifecycle.add_services(self.lab, [model])
        added = topology.snapshot.service(model.namespace, model.name)
        if added is None:
            return
        spec["clusterIP"] = added.cluster_ip
        spec["clusterIPs"] = [added.cluster_ip]
        by_port = {(sp.port, sp.protocol.value): sp.node_port for sp in added.ports}
        for port in spec.get("ports") or ():
            node_port = by_port.get((port["port"], port["protocol"]))
            if node_port:
                port["nodePort"] = node_port
        if added.load_balancer_ips:
            ingress = [{"ip": ip} for ip in added.load_balancer_ips]
            svc["status"] = {"loadBalancer": {"ingress": ingress}}

    def service_created(self, svc: Mapping[str, Any]) -> list[Any]:
        meta = svc["metadata"]
        endpoints.sync(self, meta["namespace"])
        return [f"{meta['namespace']}/{meta['name']}"]

    def service_removed(self, uid: str, handles: list[Any]) -> None:
        del uid
        try:
            lifecycle.remove_services(self.lab, [str(h) for h in handles])
        except ClusterError as e:
            self.lab_errors.append(f"services: {e}")


def forget_run(api: LabKubeAPI) -> None:
    """Forget the run's pods and Services without touching the lab (after `lab upgrade`
    rebuilt it: they are gone with the namespaces it removed)."""
    with api.lock:
        runtimes = list(api.runtimes.values())
        api.runtimes.clear()
        api.proxies.clear()
    for rt in runtimes:
        stopped = dataclasses.replace(rt, key="", netns="")
        api._kill(stopped)


_CLONE_NEWNET = 0x40000000


def socket_in_netns(netns: str, port: int) -> socket.socket:
    """A TCP socket listening on 127.0.0.1:`port` inside network namespace `netns` (made in
    a thread that enters the namespace; a socket stays in the namespace it was made in)."""
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            finally:
                os.close(fd)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen(64)
            made.append(s)
        except BaseException as e:  # handed to the caller
            made.append(e)

    t = threading.Thread(target=make, daemon=True)
    t.start()
    t.join()
    result = made[0]
    if isinstance(result, BaseException):
        raise result
    return result


def serve_in_netns(api: KubeAPI, netns: str) -> ThreadingHTTPServer:
    """The same API at the same URL (https://127.0.0.1:PORT) inside `netns` too: a process
    there (pytest run from the lab's outside host) reaches it with the same kubeconfig."""
    port = int(api.httpd.server_address[1])
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler, bind_and_activate=False)
    httpd.socket.close()
    sock = socket_in_netns(netns, port)
    if api.tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(api.tls[0]), str(api.tls[1]))
        sock = ctx.wrap_socket(sock, server_side=True)
    httpd.socket = sock
    httpd.daemon_threads = True
    httpd.api = api  # type: ignore[attr-defined]
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    return httpd
