"""KubeAPI: an in-memory Kubernetes API server with a fake scheduler, kubelet and
kube-proxy, on 127.0.0.1 (HTTP, or HTTPS with a certificate).

Its pods run on a *pod host*, the few methods a subclass overrides: `pod_address` (where a
pod lives), `launch` (how its command starts), `release` (what deleting it undoes),
`pod_running` (what the dataplane does once it runs), `exec_prefix` (where an exec runs),
`service_created`/`service_removed` (the Service dataplane). Here they are local
processes on loopback addresses and a TCP proxy; `netparity.labapi.labhost` makes them
lab pods in network namespaces under the lab's dataplane.
"""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from netparity.labapi import kubelet, proxy
from netparity.labapi.admission import PSA_ENFORCE, denial
from netparity.labapi.handler import Handler
from netparity.labapi.rbac import Authorizer
from netparity.labapi.wire import (
    KIND_TO_RESOURCE,
    Fault,
    PodRuntime,
    close_listener,
    merge,
    now,
    status_body,
)

Key = tuple[str, str, str]  # (plural, namespace, name)


def _not_found(plural: str, name: str) -> tuple[int, dict[str, Any]]:
    details = {"name": name, "kind": plural}
    return 404, status_body(404, "NotFound", f'{plural} "{name}" not found', details)


class KubeAPI:
    """An in-memory API server with a fake kubelet and kube-proxy, on 127.0.0.1."""

    # Addresses are handed out across instances, so that one test's sockets never meet the
    # next's. Loopback addresses are shared by every process of the machine (pytest -n,
    # parallel runs): each process starts at its own offset, so two servers rarely hand out
    # one address.
    _addresses = itertools.count((os.getpid() % 120) * 500)

    def __init__(
        self,
        *,
        token: str = "test-token",
        cilium_crds: bool = False,
        exec_protocol: str = "v4.channel.k8s.io",
        pod_start_delay: float = 0.0,
        tls: tuple[Path, Path] | None = None,
        port: int = 0,
    ) -> None:
        self.token = token
        # the ServiceAccount the server serves: its token, checked against its RBAC
        self.account_token: str | None = None
        self.authorizer: Authorizer | None = None
        self.tls = tls  # (certificate, key): serve HTTPS, as in-cluster clients require
        self.cilium_crds = cilium_crds
        self.exec_protocol = exec_protocol
        self.pod_start_delay = pod_start_delay
        self.lock = threading.RLock()
        self.store: dict[Key, dict[str, Any]] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.mutations: list[tuple[str, str, dict[str, Any]]] = []  # (method, plural, object)
        self.execs: list[tuple[str, str, list[str]]] = []  # (namespace, pod, command)
        self.pull_fail_images: set[str] = set()
        # image -> pulls that fail (429 Too Many Requests) before one succeeds
        self.pull_flaky: dict[str, int] = {}
        self.pull_backoff = 0.3  # seconds between a failed pull and the kubelet's next try
        # exec: the handshake never completes (a stuck API-server-to-kubelet tunnel)
        self.exec_hang = False
        # exec: executables the image lacks (the command fails as containerd says)
        self.exec_missing: set[str] = set()
        # agent name (`serve --name`) -> the name it answers with instead (someone else answers)
        self.answer_as: dict[str, str] = {}
        # Cilium (with cilium_crds): seconds until a running pod's CiliumEndpoint is ready
        # with an identity (None: never); when that happened, and when pods ran and execs began
        self.cep_ready_delay: float | None = 0.0
        self.cep_ready_at: dict[str, float] = {}
        self.running_at: dict[str, float] = {}
        self.exec_at: list[tuple[float, str]] = []
        self.stuck_nodes: set[str] = set()
        self.reject_nodes: dict[str, tuple[str, str]] = {}
        self.unschedulable: str | None = None
        self.full_nodes: dict[str, str] = {}  # node -> the scheduler's message for it
        self.safeguards = False  # AKS Deployment Safeguards (Enforcement) on pods
        self.admitted: list[tuple[str, str]] = []  # (pod, Pod Security level it was checked at)
        self.lb_ingress = True
        self.runtimes: dict[str, PodRuntime] = {}  # pod uid -> runtime
        self.proxies: dict[str, list[Any]] = {}  # service uid -> listeners
        self.tmp = Path(tempfile.mkdtemp(prefix="kubeapi-"))
        self._rv = 100
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.api = self  # type: ignore[attr-defined]
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    def start(self) -> KubeAPI:
        t = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="kubeapi", daemon=True
        )
        t.start()
        self._threads.append(t)
        return self

    @property
    def stopping(self) -> bool:  # `stop()` has begun: no pod starts any more
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()
        if self._threads:  # serve_forever runs: shutdown() waits for it to return
            self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            runtimes = list(self.runtimes.values())
            self.runtimes.clear()
            proxies = list(self.proxies.items())
            self.proxies.clear()
        for rt in runtimes:
            self._kill(rt)
        for uid, socks in proxies:
            self.service_removed(uid, socks)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> KubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, path: Path, *, context: str = "test", token: str | None = None) -> Path:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": token or self.token}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "tester"}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        return path

    # ------------------------------------------------------------------ objects

    def _stamp(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta["resourceVersion"] = str(self._rv)

    def add(self, *objs: Mapping[str, Any]) -> None:
        """Put objects in the store as they are (kind and apiVersion required)."""
        with self.lock:
            for raw in objs:
                obj = copy.deepcopy(dict(raw))
                _, _, plural = KIND_TO_RESOURCE[obj["kind"]]
                meta = obj.setdefault("metadata", {})
                self._stamp(obj)
                self.store[(plural, meta.get("namespace", ""), meta["name"])] = obj

    def objects(self, kind: str) -> list[dict[str, Any]]:
        plural = KIND_TO_RESOURCE[kind][2]
        with self.lock:
            return [copy.deepcopy(o) for (p, _, _), o in sorted(self.store.items()) if p == plural]

    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        plural = KIND_TO_RESOURCE[kind][2]
        with self.lock:
            obj = self.store.get((plural, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def fail(
        self,
        method: str,
        pattern: str,
        status: int,
        *,
        times: int = 1_000_000,
        message: str | None = None,
    ) -> Fault:
        f = Fault(method.upper(), pattern, status, times, message)
        self.faults.append(f)
        return f

    def node_ip(self, name: str) -> str | None:
        node = self.store.get(("nodes", "", name))
        if node is None:
            return None
        for addr in node.get("status", {}).get("addresses", []):
            if addr.get("type") == "InternalIP":
                return str(addr["address"])
        return None

    # ------------------------------------------------------------------ verbs

    def _admit_pod(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        ns_labels = self.store[("namespaces", "", namespace)]["metadata"].get("labels") or {}
        level = ns_labels.get(PSA_ENFORCE, "restricted")
        self.admitted.append((name, level))
        return denial(level, name, body, safeguards=self.safeguards)

    def _refuse_create(
        self, plural: str, namespace: str, name: str
    ) -> tuple[int, dict[str, Any]] | None:
        if plural != "namespaces" and ("namespaces", "", namespace) not in self.store:
            details = {"name": namespace, "kind": "namespaces"}
            return 404, status_body(404, "NotFound", f'namespaces "{namespace}" not found', details)
        if (plural, namespace, name) in self.store:
            details = {"name": name, "kind": plural}
            return 409, status_body(
                409, "AlreadyExists", f'{plural} "{name}" already exists', details
            )
        return None

    def do_create(
        self, plural: str, namespace: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            return 422, status_body(422, "Invalid", "metadata.name: Required value")
        if meta.get("namespace", namespace) != namespace:
            message = "the namespace of the object does not match the namespace on the request"
            return 400, status_body(400, "BadRequest", message)
        if plural == "namespaces":  # cluster-scoped
            namespace = ""
            meta.pop("namespace", None)
        else:
            meta["namespace"] = namespace
        with self.lock:
            refused = self._refuse_create(plural, namespace, name)
            if refused is not None:
                return refused
            if plural == "pods":
                denied = self._admit_pod(namespace, name, body)
                if denied is not None:
                    return 403, denied
                body["status"] = {"phase": "Pending", "qosClass": "Burstable"}
            if plural == "services":
                self._allocate_service(body)
            self._stamp(body)
            self.store[(plural, namespace, name)] = body
            self.mutations.append(("POST", plural, copy.deepcopy(body)))
            created = copy.deepcopy(body)
        if plural == "pods":
            self._spawn(self._kubelet, (namespace, name, created["metadata"]["uid"]))
        if plural == "services":
            self._start_proxy(created)
        return 201, created

    def do_delete(
        self, plural: str, namespace: str, name: str, body: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            key = (plural, namespace, name)
            obj = self.store.get(key)
            if obj is None:
                return _not_found(plural, name)
            want_uid = (body.get("preconditions") or {}).get("uid")
            if want_uid and want_uid != obj["metadata"]["uid"]:
                return 409, status_body(
                    409,
                    "Conflict",
                    f"Precondition failed: UID in precondition: {want_uid}, "
                    f"UID in object meta: {obj['metadata']['uid']}",
                )
            self._remove(key)
            if plural == "namespaces":  # the namespace controller empties it
                for inner in [k for k in self.store if k[1] == name]:
                    if inner in self.store:
                        self._remove(inner)
            self.mutations.append(("DELETE", plural, copy.deepcopy(obj)))
            return 200, copy.deepcopy(obj)

    def _remove(self, key: Key) -> None:
        obj = self.store.pop(key)
        uid = obj["metadata"]["uid"]
        rt = self.runtimes.pop(uid, None)
        if rt is not None:
            self._kill(rt)
        socks = self.proxies.pop(uid, None)
        if socks is not None:
            self.service_removed(uid, socks)
        # Garbage collection: dependents whose ownerReferences name this uid.
        for dep_key, dep in list(self.store.items()):
            refs = dep.get("metadata", {}).get("ownerReferences") or ()
            if dep_key in self.store and any(r.get("uid") == uid for r in refs):
                self._remove(dep_key)

    def do_replace(
        self, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """PUT: the whole object, guarded by its resourceVersion (409 if it changed)."""
        with self.lock:
            obj = self.store.get((plural, namespace, name))
            if obj is None:
                return _not_found(plural, name)
            meta = body.setdefault("metadata", {})
            want = meta.get("resourceVersion")
            if want and want != obj["metadata"]["resourceVersion"]:
                return 409, status_body(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                )
            for keep in ("uid", "creationTimestamp"):
                meta[keep] = obj["metadata"][keep]
            meta["namespace"] = namespace
            body.setdefault("kind", obj.get("kind"))
            body.setdefault("apiVersion", obj.get("apiVersion"))
            self._stamp(body)
            self.store[(plural, namespace, name)] = body
            self.mutations.append(("PUT", plural, copy.deepcopy(body)))
            return 200, copy.deepcopy(body)

    def do_patch(
        self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            obj = self.store.get((plural, namespace, name))
            if obj is None:
                return _not_found(plural, name)
            merge(obj, patch)
            self._stamp(obj)
            self.mutations.append(("PATCH", plural, copy.deepcopy(obj)))
            return 200, copy.deepcopy(obj)

    @classmethod
    def _address(cls, prefix: str) -> str:
        n = next(cls._addresses) % 60000 + 10
        return f"{prefix}.{n // 250}.{n % 250 + 1}"

    def _allocate_service(self, svc: dict[str, Any]) -> None:
        spec = svc.setdefault("spec", {})
        stype = spec.get("type", "ClusterIP")
        if not spec.get("clusterIP"):
            spec["clusterIP"] = self.service_address("cluster")
            spec["clusterIPs"] = [spec["clusterIP"]]
        for port in spec.get("ports") or ():
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port["port"])
            if stype in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                port["nodePort"] = 30000 + next(self._addresses) % 2700
        if stype == "LoadBalancer" and self.lb_ingress:
            ingress = [{"ip": self.service_address("load-balancer")}]
            svc["status"] = {"loadBalancer": {"ingress": ingress}}

    # ------------------------------------------------------------------ kubelet

    def _spawn(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _update_pod(
        self, namespace: str, name: str, uid: str, fn: Callable[[dict[str, Any]], None]
    ) -> bool:
        with self.lock:
            pod = self.store.get(("pods", namespace, name))
            if pod is None or pod["metadata"]["uid"] != uid:
                return False
            fn(pod)
            self._stamp(pod)
            return True

    def _kubelet(self, namespace: str, name: str, uid: str) -> None:
        kubelet.run_kubelet(self, namespace, name, uid)

    def _cilium_endpoint(self, namespace: str, name: str, uid: str) -> None:
        kubelet.cilium_endpoint(self, namespace, name, uid)

    def local_argv(self, rt: PodRuntime, argv: list[str]) -> list[str]:
        """A container command as it runs here: python3 -> this Python, mounts -> temp folders."""
        out: list[str] = []
        for i, arg in enumerate(argv):
            if i == 0 and arg == "python3":
                out.append(sys.executable)
                continue
            for mount, local in rt.mounts.items():
                arg = arg.replace(mount.rstrip("/") + "/", local + "/")
            out.append(arg)
        return out

    def _kill(self, rt: PodRuntime) -> None:
        if rt.proc is not None and rt.proc.poll() is None:
            rt.proc.terminate()
            try:
                rt.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                rt.proc.kill()
                rt.proc.wait()
        if rt.proc is not None:
            for stream in (rt.proc.stdout, rt.proc.stderr):
                if stream is not None:
                    stream.close()
        self.release(rt)

    # ------------------------------------------------------------------ the pod host

    def pod_address(self, pod: Mapping[str, Any], node: str, rt: PodRuntime) -> str | None:
        """The pod's address (a hostNetwork pod has its node's); None: it cannot start."""
        del rt
        host = self.node_ip(node) if pod["spec"].get("hostNetwork") else None
        return host or self._address("127.1")

    def launch(self, rt: PodRuntime, argv: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.exec_prefix(rt), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def release(self, rt: PodRuntime) -> None:
        """Undo what pod_address set up (nothing for a loopback address)."""

    def pod_running(self, namespace: str, name: str, uid: str) -> None:
        """What the dataplane does for a pod that runs (Cilium: its CiliumEndpoint)."""
        if self.cilium_crds:
            self._cilium_endpoint(namespace, name, uid)

    def exec_prefix(self, rt: PodRuntime) -> list[str]:
        """What runs a command where the pod is (nothing: here)."""
        del rt
        return []

    def service_address(self, kind: str) -> str:
        return self._address("127.9" if kind == "cluster" else "127.8")

    def service_created(self, svc: Mapping[str, Any]) -> list[Any]:
        proxy.start_proxy(self, svc)
        with self.lock:
            return self.proxies.get(svc["metadata"]["uid"], [])

    def service_removed(self, uid: str, handles: list[Any]) -> None:
        del uid
        for s in handles:
            close_listener(s)

    # ------------------------------------------------------------------ kube-proxy (TCP)

    def _start_proxy(self, svc: dict[str, Any]) -> None:
        handles = self.service_created(svc)
        with self.lock:
            self.proxies[svc["metadata"]["uid"]] = handles

    def endpoints(self, namespace: str, name: str) -> list[str]:
        return proxy.endpoints(self, namespace, name)

    # ------------------------------------------------------------------ exec

    def exec_argv(self, namespace: str, name: str, command: list[str]) -> list[str] | str:
        with self.lock:
            pod = self.store.get(("pods", namespace, name))
            if pod is None:
                return f'pods "{name}" not found'
            if (pod.get("status") or {}).get("phase") != "Running":
                return f"unable to upgrade connection: pod {name} is not running"
            rt = self.runtimes.get(pod["metadata"]["uid"])
        if rt is None:
            return "unable to upgrade connection: container not found"
        self.execs.append((namespace, name, list(command)))
        self.exec_at.append((time.monotonic(), name))
        return [*self.exec_prefix(rt), *self.local_argv(rt, command)]
