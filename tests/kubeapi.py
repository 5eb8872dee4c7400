"""A real HTTP server on 127.0.0.1 that speaks enough of the Kubernetes API for the tests.

- list / get / create / delete / merge-patch for the kinds netparity uses, label selectors,
  `Status` bodies for 401/403/404/409/500, ownerReference garbage collection;
- Pod Security admission from the namespace's `pod-security.kubernetes.io/enforce` label
  (restricted, baseline or privileged; a namespace without the label gets restricted, the
  stricter choice), 403 like the real one; Namespaces can be created and deleted (deleting
  one removes everything in it, as the namespace controller does);
- with `safeguards = True`, a Deployment-Safeguards-like admission (Gatekeeper's 403);
- a fake scheduler (nodeSelector, required node affinity, `full_nodes` reported as
  Unschedulable; twins tolerate every taint, so a cordon does not stop it) and kubelet: a pod with a reachable node gets a loopback IP (127.1.N.M),
  its ConfigMap volumes are written to a temp folder and its command runs as a local
  process (the probe agent, bound to the pod IP) -- or it fails the way the test asked
  (image pull, unschedulable, rejected by the node, never started), or pulls its image
  only after `pull_flaky[image]` failed pulls (429 Too Many Requests, then back-off);
- a fake kube-proxy for TCP: every Service port (ClusterIP 127.9.N.M, NodePort on the node
  IPs 127.0.2.N) forwards to the Service's endpoints, which honour `publishNotReadyAddresses`;
- the pods/exec subresource over a websocket (v4.channel.k8s.io or v5.channel.k8s.io),
  running the command locally with its stdin, stdout, stderr and exit status.

Faults are injected per request (method + path pattern -> status). Everything it starts
stops with `stop()`; nothing listens anywhere but loopback.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import itertools
import json
import os
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

# (group, version, plural) -> (kind, namespaced)
RESOURCES: dict[tuple[str, str, str], tuple[str, bool]] = {
    ("", "v1", "namespaces"): ("Namespace", False),
    ("", "v1", "nodes"): ("Node", False),
    ("", "v1", "pods"): ("Pod", True),
    ("", "v1", "services"): ("Service", True),
    ("", "v1", "configmaps"): ("ConfigMap", True),
    ("networking.k8s.io", "v1", "networkpolicies"): ("NetworkPolicy", True),
    ("apps", "v1", "daemonsets"): ("DaemonSet", True),
    ("policy", "v1", "poddisruptionbudgets"): ("PodDisruptionBudget", True),
    ("apps", "v1", "deployments"): ("Deployment", True),
    ("apps", "v1", "statefulsets"): ("StatefulSet", True),
    ("apps", "v1", "replicasets"): ("ReplicaSet", True),
    ("", "v1", "replicationcontrollers"): ("ReplicationController", True),
    ("batch", "v1", "jobs"): ("Job", True),
    ("batch", "v1", "cronjobs"): ("CronJob", True),
    ("discovery.k8s.io", "v1", "endpointslices"): ("EndpointSlice", True),
    ("coordination.k8s.io", "v1", "leases"): ("Lease", True),
    ("cilium.io", "v2", "ciliumendpoints"): ("CiliumEndpoint", True),
    ("cilium.io", "v2", "ciliumnetworkpolicies"): ("CiliumNetworkPolicy", True),
    ("cilium.io", "v2", "ciliumclusterwidenetworkpolicies"): (
        "CiliumClusterwideNetworkPolicy",
        False,
    ),
}
KIND_TO_RESOURCE = {kind: key for key, (kind, _) in RESOURCES.items()}
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
    }
)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": dict(details or {}),
        "code": code,
    }


def selector_matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    if not selector:
        return True
    for term in (t.strip() for t in selector.split(",")):
        if not term:
            continue
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term not in labels:
            return False
    return True


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """The `restricted` Pod Security Standard (latest), as the admission plugin checks it."""
    spec = pod.get("spec") or {}
    out: list[str] = []
    for field_name in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field_name):
            out.append(f"{field_name}=true")
    psc = spec.get("securityContext") or {}
    for sysctl in psc.get("sysctls") or ():
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"forbidden sysctl {sysctl.get('name')}")
    for vol in spec.get("volumes") or ():
        if not set(vol) - {"name"} <= {
            "configMap",
            "secret",
            "emptyDir",
            "projected",
            "downwardAPI",
            "csi",
            "persistentVolumeClaim",
            "ephemeral",
        }:
            out.append(f"restricted volume type in {vol.get('name')}")
    for c in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("privileged"):
            out.append(f"container {name} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(
                f'container "{name}" must set securityContext.allowPrivilegeEscalation=false'
            )
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            out.append(f'container "{name}" must set securityContext.capabilities.drop=["ALL"]')
        if set(caps.get("add") or ()) - {"NET_BIND_SERVICE"}:
            out.append(f'container "{name}" adds capabilities')
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            out.append(f'container "{name}" must set runAsNonRoot=true')
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f'container "{name}" must not set runAsUser=0')
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(
                f'container "{name}" must set seccompProfile.type to RuntimeDefault or Localhost'
            )
        for port in c.get("ports") or ():
            if port.get("hostPort"):
                out.append(f'container "{name}" uses hostPort')
    return out


PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
# Capabilities the baseline level lets a container add (Pod Security Standards, baseline).
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)


def baseline_violations(pod: Mapping[str, Any]) -> list[str]:
    """The `baseline` Pod Security Standard (latest): host namespaces, privileged
    containers, capabilities beyond the default set, hostPath volumes, host ports, unsafe
    sysctls."""
    spec = pod.get("spec") or {}
    out: list[str] = []
    for field_name in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field_name):
            out.append(f"host namespaces ({field_name}=true)")
    for sysctl in (spec.get("securityContext") or {}).get("sysctls") or ():
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"forbidden sysctl {sysctl.get('name')}")
    for vol in spec.get("volumes") or ():
        if "hostPath" in vol:
            out.append(f"hostPath volume {vol.get('name')}")
    for c in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("privileged"):
            out.append(f'privileged (container "{name}" must not set privileged=true)')
        added = set((sc.get("capabilities") or {}).get("add") or ()) - BASELINE_CAPABILITIES
        if added:
            out.append(f'non-default capabilities (container "{name}" adds {sorted(added)})')
        for port in c.get("ports") or ():
            if port.get("hostPort"):
                out.append(f'hostPort (container "{name}" uses hostPort)')
    return out


def pod_security_violations(level: str, pod: Mapping[str, Any]) -> list[str]:
    """What the Pod Security admission denies at `level` (restricted includes baseline)."""
    if level == "privileged":
        return []
    if level == "baseline":
        return baseline_violations(pod)
    return restricted_violations(pod)


def safeguards_violations(pod: Mapping[str, Any]) -> list[str]:
    """What AKS Deployment Safeguards (Enforcement; Azure Policy's Gatekeeper constraints)
    deny in a pod, as far as it applies to pods that netparity creates: readiness and
    liveness probes, CPU and memory requests and limits, a pinned image (no `:latest`, no
    missing tag), no host namespaces, no privileged containers."""
    spec = pod.get("spec") or {}
    out: list[str] = []
    for field_name in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field_name):
            out.append(f"{field_name} is not allowed")
    for c in spec.get("containers") or ():
        name = c.get("name")
        for probe in ("readinessProbe", "livenessProbe"):
            p = c.get(probe) or {}
            if not {"exec", "httpGet", "tcpSocket", "grpc"} & set(p):
                out.append(f"Container <{name}> in your Pod has no <{probe}>")
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if not (resources.get(kind) or {}).get(res):
                    out.append(f"container <{name}> has no resource {kind[:-1]} for {res}")
        image = str(c.get("image") or "")
        tail = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in tail or tail.endswith(":latest")):
            out.append(f"container <{name}> uses an image without a pinned tag: {image}")
        if (c.get("securityContext") or {}).get("privileged"):
            out.append(f"container <{name}> is privileged")
    return out


def _unschedulable(message: str) -> Any:
    def fn(p: dict[str, Any]) -> None:
        p["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ]

    return fn


def node_matches(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """nodeSelector and required node affinity (In, NotIn, Exists, DoesNotExist) on labels."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True

    def term_ok(term: Mapping[str, Any]) -> bool:
        for e in term.get("matchExpressions") or ():
            key, op, values = e["key"], e["operator"], e.get("values") or []
            if op == "In" and labels.get(key) not in values:
                return False
            if op == "NotIn" and labels.get(key) in values:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
        return True

    return any(term_ok(t) for t in terms)


@dataclass
class Fault:
    method: str
    pattern: str  # regex searched in the path (with the query string)
    status: int
    times: int = 1_000_000
    message: str | None = None
    hits: int = 0


@dataclass
class PodRuntime:
    uid: str
    ip: str
    proc: subprocess.Popen[str] | None = None
    mounts: dict[str, str] = field(default_factory=dict)  # mountPath -> local folder


# --------------------------------------------------------------------------- websocket


def ws_read_frame(rfile: Any) -> tuple[int, bytes] | None:
    head = rfile.read(2)
    if len(head) < 2:
        return None
    opcode = head[0] & 0x0F
    masked = head[1] & 0x80
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", rfile.read(2))
    elif length == 127:
        (length,) = struct.unpack(">Q", rfile.read(8))
    mask = rfile.read(4) if masked else b""
    data = rfile.read(length)
    if masked:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return opcode, data


def ws_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
    return head + payload


# --------------------------------------------------------------------------- the server


class KubeAPI:
    """An in-memory API server with a fake kubelet and kube-proxy, on 127.0.0.1."""

    # Addresses are handed out across instances, so that one test's sockets never meet the next's.
    # Loopback addresses are shared by every process of the machine (pytest -n, parallel
    # runs): each process starts at its own offset, so two servers rarely hand out one address.
    _addresses = itertools.count((os.getpid() % 120) * 500)

    def __init__(
        self,
        *,
        token: str = "test-token",
        cilium_crds: bool = False,
        exec_protocol: str = "v4.channel.k8s.io",
        pod_start_delay: float = 0.0,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.token = token
        self.tls = tls  # (certificate, key): serve HTTPS, as in-cluster clients require
        self.cilium_crds = cilium_crds
        self.exec_protocol = exec_protocol
        self.pod_start_delay = pod_start_delay
        self.lock = threading.RLock()
        self.store: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, ns, name) -> obj
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
        self.proxies: dict[str, list[socket.socket]] = {}  # service uid -> listeners
        self.tmp = Path(tempfile.mkdtemp(prefix="kubeapi-"))
        self._rv = 100
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
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

    def stop(self) -> None:
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            runtimes = list(self.runtimes.values())
            self.runtimes.clear()
            proxies = [s for socks in self.proxies.values() for s in socks]
            self.proxies.clear()
        for rt in runtimes:
            self._kill(rt)
        for s in proxies:
            _close_listener(s)
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
                group_version = obj["apiVersion"]
                _, _, plural = KIND_TO_RESOURCE[obj["kind"]]
                del group_version
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

    def do_create(
        self, plural: str, namespace: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            return 422, status_body(422, "Invalid", "metadata.name: Required value")
        if meta.get("namespace", namespace) != namespace:
            return 400, status_body(
                400,
                "BadRequest",
                "the namespace of the object does not match the namespace on the request",
            )
        if plural == "namespaces":  # cluster-scoped
            namespace = ""
            meta.pop("namespace", None)
        else:
            meta["namespace"] = namespace
        with self.lock:
            if plural != "namespaces" and ("namespaces", "", namespace) not in self.store:
                return 404, status_body(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
            key = (plural, namespace, name)
            if key in self.store:
                return 409, status_body(
                    409,
                    "AlreadyExists",
                    f'{plural} "{name}" already exists',
                    {"name": name, "kind": plural},
                )
            if plural == "pods":
                ns_labels = (
                    self.store[("namespaces", "", namespace)]["metadata"].get("labels") or {}
                )
                level = ns_labels.get(PSA_ENFORCE, "restricted")
                self.admitted.append((name, level))
                problems = pod_security_violations(level, body)
                if problems:
                    return 403, status_body(
                        403,
                        "Forbidden",
                        f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": '
                        + ", ".join(problems),
                    )
                if self.safeguards:
                    denied = safeguards_violations(body)
                    if denied:
                        return 403, status_body(
                            403,
                            "Forbidden",
                            'admission webhook "validation.gatekeeper.sh" denied the request: '
                            + "; ".join(f"[azurepolicy-safeguards] {d}" for d in denied),
                        )
                body["status"] = {"phase": "Pending", "qosClass": "Burstable"}
            if plural == "services":
                self._allocate_service(body)
            self._stamp(body)
            self.store[key] = body
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
                return 404, status_body(
                    404, "NotFound", f'{plural} "{name}" not found', {"name": name, "kind": plural}
                )
            want_uid = (body.get("preconditions") or {}).get("uid")
            if want_uid and want_uid != obj["metadata"]["uid"]:
                return 409, status_body(
                    409,
                    "Conflict",
                    f"Precondition failed: UID in precondition: {want_uid}, UID in object meta: {obj['metadata']['uid']}",
                )
            self._remove(key)
            if plural == "namespaces":  # the namespace controller empties it
                for inner in [k for k in self.store if k[1] == name]:
                    if inner in self.store:
                        self._remove(inner)
            self.mutations.append(("DELETE", plural, copy.deepcopy(obj)))
            return 200, copy.deepcopy(obj)

    def _remove(self, key: tuple[str, str, str]) -> None:
        obj = self.store.pop(key)
        uid = obj["metadata"]["uid"]
        rt = self.runtimes.pop(uid, None)
        if rt is not None:
            self._kill(rt)
        for s in self.proxies.pop(uid, []):
            _close_listener(s)
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
                return 404, status_body(
                    404, "NotFound", f'{plural} "{name}" not found', {"name": name, "kind": plural}
                )
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
                return 404, status_body(
                    404, "NotFound", f'{plural} "{name}" not found', {"name": name, "kind": plural}
                )
            _merge(obj, patch)
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
            spec["clusterIP"] = self._address("127.9")
            spec["clusterIPs"] = [spec["clusterIP"]]
        for port in spec.get("ports") or ():
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port["port"])
            if stype in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                port["nodePort"] = 30000 + next(self._addresses) % 2700
        if stype == "LoadBalancer" and self.lb_ingress:
            svc["status"] = {"loadBalancer": {"ingress": [{"ip": self._address("127.8")}]}}

    # ------------------------------------------------------------------ kubelet

    def _spawn(self, fn: Any, args: tuple[Any, ...]) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _update_pod(self, namespace: str, name: str, uid: str, fn: Any) -> bool:
        with self.lock:
            pod = self.store.get(("pods", namespace, name))
            if pod is None or pod["metadata"]["uid"] != uid:
                return False
            fn(pod)
            self._stamp(pod)
            return True

    def _kubelet(self, namespace: str, name: str, uid: str) -> None:
        if self.pod_start_delay:
            time.sleep(self.pod_start_delay)
        with self.lock:
            pod = copy.deepcopy(self.store.get(("pods", namespace, name)))
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        spec = pod["spec"]
        node = spec.get("nodeName")
        if not node:
            if self.unschedulable is not None:
                message = self.unschedulable

                def unschedulable(p: dict[str, Any]) -> None:
                    p["status"]["conditions"] = [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": message,
                        }
                    ]

                self._update_pod(namespace, name, uid, unschedulable)
                return
            with self.lock:
                candidates = [
                    k[2]
                    for k, obj in sorted(self.store.items())
                    if k[0] == "nodes" and node_matches(spec, obj)
                ]
            full = [n for n in candidates if n in self.full_nodes]
            node = next((n for n in candidates if n not in self.full_nodes), None)
            if node is None and full:
                # full now: like the scheduler, try again when room frees up on the node
                self._update_pod(namespace, name, uid, _unschedulable(self.full_nodes[full[0]]))
                while node is None and not self._stopping.wait(0.1):
                    with self.lock:
                        if ("pods", namespace, name) not in self.store:
                            return
                        node = next((n for n in full if n not in self.full_nodes), None)
                if node is None:
                    return
            if node is None:
                total = sum(1 for k in list(self.store) if k[0] == "nodes")
                why = (
                    self.full_nodes[full[0]]
                    if full
                    else f"0/{total} nodes are available: {total} node(s) didn't match "
                    "Pod's node affinity/selector."
                )

                def unplaced(p: dict[str, Any]) -> None:
                    p["status"]["conditions"] = [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": why,
                        }
                    ]

                self._update_pod(namespace, name, uid, unplaced)
                return

            def bind(p: dict[str, Any]) -> None:
                p["spec"]["nodeName"] = node

            self._update_pod(namespace, name, uid, bind)
        if self.node_ip(node) is None:
            return  # no kubelet for a node that does not exist: Pending forever
        container = spec["containers"][0]
        cname = container["name"]
        image = container["image"]
        if node in self.reject_nodes:
            reason, message = self.reject_nodes[node]

            def reject(p: dict[str, Any]) -> None:
                p["status"].update(phase="Failed", reason=reason, message=message)

            self._update_pod(namespace, name, uid, reject)
            return

        def waiting(reason: str, message: str | None = None) -> Any:
            def fn(p: dict[str, Any]) -> None:
                state: dict[str, Any] = {"reason": reason}
                if message:
                    state["message"] = message
                p["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
                p["status"]["containerStatuses"] = [
                    {
                        "name": cname,
                        "image": image,
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": state},
                    }
                ]

            return fn

        if node in self.stuck_nodes:
            self._update_pod(namespace, name, uid, waiting("ContainerCreating"))
            return
        while True:  # a registry that refuses some pulls (429) before one succeeds
            with self.lock:
                left = self.pull_flaky.get(image, 0)
                if left > 0:
                    self.pull_flaky[image] = left - 1
            if left <= 0:
                break
            message = (
                f'failed to pull and unpack image "{image}": failed to copy: httpReadSeeker: '
                "failed open: unexpected status code: 429 Too Many Requests - Server message: "
                "toomanyrequests: You have reached your pull rate limit."
            )
            if not self._update_pod(namespace, name, uid, waiting("ErrImagePull", message)):
                return
            time.sleep(self.pull_backoff / 2)
            backoff = waiting("ImagePullBackOff", f'Back-off pulling image "{image}"')
            if not self._update_pod(namespace, name, uid, backoff):
                return
            time.sleep(self.pull_backoff / 2)
        if image in self.pull_fail_images:
            self._update_pod(
                namespace,
                name,
                uid,
                waiting("ErrImagePull", f'failed to pull and unpack image "{image}": not found'),
            )
            time.sleep(0.2)
            self._update_pod(
                namespace,
                name,
                uid,
                waiting("ImagePullBackOff", f'Back-off pulling image "{image}"'),
            )
            return
        self._update_pod(namespace, name, uid, waiting("ContainerCreating"))
        # a hostNetwork pod has its node's address
        ip = (self.node_ip(node) if spec.get("hostNetwork") else None) or self._address("127.1")
        rt = PodRuntime(uid=uid, ip=ip)
        folder = self.tmp / uid
        for vol in spec.get("volumes") or ():
            cm = vol.get("configMap")
            if not cm:
                continue
            with self.lock:
                source = copy.deepcopy(self.store.get(("configmaps", namespace, cm["name"])))
            if source is None:
                return  # a missing ConfigMap volume: ContainerCreating forever
            vdir = folder / vol["name"]
            vdir.mkdir(parents=True)
            data = source.get("data") or {}
            items = cm.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (vdir / item["path"]).write_text(data[item["key"]], encoding="utf-8")
            for mount in container.get("volumeMounts") or ():
                if mount["name"] == vol["name"]:
                    rt.mounts[mount["mountPath"]] = str(vdir)
        argv = self.local_argv(
            rt, [*(container.get("command") or ()), *(container.get("args") or ())]
        )
        if "serve" in argv:
            argv += ["--bind", ip]
            if "--name" in argv:
                at = argv.index("--name") + 1
                argv[at] = self.answer_as.get(argv[at], argv[at])
        with self.lock:
            if ("pods", namespace, name) not in self.store:
                return
            self.runtimes[uid] = rt
        rt.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = False
        assert rt.proc.stdout is not None
        r, _, _ = select.select([rt.proc.stdout], [], [], 15)
        if r and rt.proc.stdout.readline().strip() == "ready":
            ready = True
        started = now()
        if ready:

            def running(p: dict[str, Any]) -> None:
                p["status"].update(
                    phase="Running",
                    podIP=ip,
                    podIPs=[{"ip": ip}],
                    hostIP=self.node_ip(node),
                    startTime=started,
                    conditions=[
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Initialized", "status": "True"},
                        {"type": "ContainersReady", "status": "True"},
                        {
                            "type": "Ready",
                            "status": "False",
                            "reason": "ReadinessGatesNotReady",
                            "message": 'corresponding condition of pod readiness gate "netparity.io/never-ready" does not exist.',
                        },
                    ],
                    containerStatuses=[
                        {
                            "name": cname,
                            "image": image,
                            "ready": True,
                            "started": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": started}},
                        }
                    ],
                )

            self._update_pod(namespace, name, uid, running)
            self.running_at[name] = time.monotonic()
            if self.cilium_crds:
                self._cilium_endpoint(namespace, name, uid)
            return
        rt.proc.kill()
        _, err = rt.proc.communicate(timeout=5)
        code = rt.proc.returncode

        def crashed(p: dict[str, Any]) -> None:
            p["status"].update(
                phase="Failed",
                podIP=ip,
                containerStatuses=[
                    {
                        "name": cname,
                        "image": image,
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "Error",
                                "message": err[-500:],
                            }
                        },
                    }
                ],
            )

        self._update_pod(namespace, name, uid, crashed)

    def _cilium_endpoint(self, namespace: str, name: str, uid: str) -> None:
        """What the Cilium agent does for a new pod: a CiliumEndpoint (same name), first
        waiting for its identity, then ready after `cep_ready_delay`."""
        cep = {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumEndpoint",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}],
            },
            "status": {"state": "waiting-for-identity"},
        }
        with self.lock:
            if ("pods", namespace, name) not in self.store:
                return
            self._stamp(cep)
            self.store[("ciliumendpoints", namespace, name)] = cep
        delay = self.cep_ready_delay
        if delay is None:
            return

        def ready() -> None:
            time.sleep(delay)
            with self.lock:
                obj = self.store.get(("ciliumendpoints", namespace, name))
                if obj is None:
                    return
                obj["status"] = {"state": "ready", "identity": {"id": 12345}}
                self._stamp(obj)
                self.cep_ready_at[name] = time.monotonic()

        self._spawn(ready, ())

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

    @staticmethod
    def _kill(rt: PodRuntime) -> None:
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

    # ------------------------------------------------------------------ kube-proxy (TCP)

    def _start_proxy(self, svc: dict[str, Any]) -> None:
        spec = svc["spec"]
        uid = svc["metadata"]["uid"]
        listeners: list[socket.socket] = []
        node_ips = [
            ip for ip in (self.node_ip(k[2]) for k in list(self.store) if k[0] == "nodes") if ip
        ]
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
                self._spawn(
                    self._proxy_accept,
                    (s, svc["metadata"]["namespace"], svc["metadata"]["name"], port),
                )
        with self.lock:
            self.proxies[uid] = listeners

    def endpoints(self, namespace: str, name: str) -> list[str]:
        """The addresses a Service forwards to, as the endpoints controller would list them."""
        with self.lock:
            svc = self.store.get(("services", namespace, name))
            if svc is None:
                return []
            spec = svc["spec"]
            selector = spec.get("selector") or {}
            if not selector:
                return []
            out = []
            for (plural, ns, _), pod in sorted(self.store.items()):
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

    def _proxy_accept(
        self, listener: socket.socket, namespace: str, name: str, port: Mapping[str, Any]
    ) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self._spawn(self._proxy_one, (conn, namespace, name, port))

    def _proxy_one(
        self, conn: socket.socket, namespace: str, name: str, port: Mapping[str, Any]
    ) -> None:
        with conn:
            backends = self.endpoints(namespace, name)
            if not backends:
                return  # no endpoints: kube-proxy rejects; here the connection just closes
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                target = self._named_port(namespace, backends[0], target)
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

    def _named_port(self, namespace: str, ip: str, name: str) -> int | None:
        with self.lock:
            for (plural, ns, _), pod in self.store.items():
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
        argv = self.local_argv(rt, command)
        # the code passed with -c names the mounted agent too
        return argv


def _close_listener(s: socket.socket) -> None:
    # shutdown() wakes a thread blocked in accept(); close() alone would leave the port bound
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def api(self) -> KubeAPI:
        api: KubeAPI = self.server.api
        return api

    def _send(self, code: int, doc: Mapping[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        if not n:
            return {}
        doc = json.loads(self.rfile.read(n))
        return doc if isinstance(doc, dict) else {}

    def _route(
        self,
    ) -> tuple[tuple[str, str, str] | None, str, str | None, str | None, dict[str, list[str]]]:
        """(resource key, namespace, name, subresource, query) for the request path."""
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        parts = [p for p in split.path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None, "", None, None, query
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return None, "", None, None, query
        key = (group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return key, namespace, name, sub, query

    def _fault(self, method: str) -> bool:
        for f in self.api.faults:
            if f.method == method and f.hits < f.times and re.search(f.pattern, self.path):
                f.hits += 1
                reasons = {
                    403: "Forbidden",
                    404: "NotFound",
                    409: "AlreadyExists",
                    500: "InternalError",
                    401: "Unauthorized",
                    503: "ServiceUnavailable",
                }
                self._send(
                    f.status,
                    status_body(
                        f.status,
                        reasons.get(f.status, "Unknown"),
                        f.message or f"injected failure {f.status}",
                    ),
                )
                return True
        return False

    def _handle(self, method: str) -> None:
        api = self.api
        api.requests.append((method, self.path))
        scheme, _, credential = str(self.headers.get("Authorization") or "").partition(" ")
        # the scheme is case-insensitive (RFC 9110); the in-cluster loader writes "bearer"
        if scheme.lower() != "bearer" or credential != api.token:
            self._send(401, status_body(401, "Unauthorized", "Unauthorized"))
            return
        if self._fault(method):
            return
        key, namespace, name, sub, query = self._route()
        if (
            key is None
            or key not in RESOURCES
            or (key[1] == "v2" and key[0] == "cilium.io" and not api.cilium_crds)
        ):
            self._send(
                404,
                status_body(404, "NotFound", "the server could not find the requested resource"),
            )
            return
        kind, namespaced = RESOURCES[key]
        plural = key[2]
        if sub == "exec" and method == "GET":
            self._exec(namespace, name or "", query)
            return
        if method == "GET":
            if name is None:
                if (query.get("watch") or [""])[0] in ("true", "1"):
                    serve_watch(self, plural, namespace, query)
                    return
                selector = (query.get("labelSelector") or [""])[0] or None
                with api.lock:
                    items = [
                        copy.deepcopy(o)
                        for (p, ns, _), o in sorted(api.store.items())
                        if p == plural
                        and (not namespace or ns == namespace)
                        and selector_matches(selector, o.get("metadata", {}).get("labels") or {})
                    ]
                    rv = str(api._rv)
                items, more = list_page(items, query)
                for item in items:
                    item.pop("kind", None)
                    item.pop("apiVersion", None)
                self._send(
                    200,
                    {
                        "kind": f"{kind}List",
                        "apiVersion": "/".join(p for p in key[:2] if p),
                        "metadata": {"resourceVersion": rv, **more},
                        "items": items,
                    },
                )
                return
            with api.lock:
                obj = copy.deepcopy(api.store.get((plural, namespace if namespaced else "", name)))
            if obj is None:
                self._send(
                    404,
                    status_body(
                        404,
                        "NotFound",
                        f'{plural} "{name}" not found',
                        {"name": name, "kind": plural},
                    ),
                )
                return
            self._send(200, obj)
            return
        body = self._body()
        if method == "POST" and name is None:
            code, doc = api.do_create(plural, namespace, body)
        elif method == "DELETE" and name is not None:
            code, doc = api.do_delete(plural, namespace, name, body)
        elif method == "PATCH" and name is not None:
            code, doc = api.do_patch(plural, namespace, name, body)
        elif method == "PUT" and name is not None:
            code, doc = api.do_replace(plural, namespace, name, body)
        else:
            code, doc = 405, status_body(405, "MethodNotAllowed", f"{method} is not supported here")
        self._send(code, doc)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    # ------------------------------------------------------------------ exec over websocket

    def _exec(self, namespace: str, name: str, query: dict[str, list[str]]) -> None:
        api = self.api
        if self.headers.get("Upgrade", "").lower() != "websocket":
            self._send(400, status_body(400, "BadRequest", "Upgrade request required"))
            return
        if api.exec_hang:
            # the API server took the request and never answers: its tunnel to the kubelet hangs
            api._stopping.wait()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        command = query.get("command") or []
        argv = api.exec_argv(namespace, name, command)
        if isinstance(argv, str):
            self._send(
                400 if "not running" in argv or "container" in argv else 404,
                status_body(400, "BadRequest", argv),
            )
            return
        offered = [
            p.strip()
            for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        proto = (
            api.exec_protocol
            if api.exec_protocol in offered
            else next((p for p in offered if p.endswith("channel.k8s.io")), "")
        )
        accept = base64.b64encode(
            hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest()
        ).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        if proto:
            self.send_header("Sec-WebSocket-Protocol", proto)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        lock = threading.Lock()

        def send(opcode: int, payload: bytes) -> None:
            with lock, contextlib.suppress(OSError):
                self.connection.sendall(ws_frame(opcode, payload))

        if command and command[0] in api.exec_missing:
            # what containerd's kubelet sends when the executable is not in the image
            message = (
                "Internal error occurred: error executing command in container: failed to exec "
                f"in container: failed to start exec: OCI runtime exec failed: exec failed: "
                f'unable to start container process: exec: "{command[0]}": executable file not '
                "found in $PATH: unknown"
            )
            failure = status_body(500, "InternalError", message, {"causes": [{"message": message}]})
            send(0x2, bytes([3]) + json.dumps(failure).encode())
            send(0x8, struct.pack(">H", 1000))
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

        def pump(stream: Any, channel: int) -> None:
            while True:
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    return
                send(0x2, bytes([channel]) + chunk)

        def read_client() -> None:
            stdin = proc.stdin
            assert stdin is not None
            while True:
                try:
                    frame = ws_read_frame(self.rfile)
                except OSError:
                    frame = None
                if frame is None or frame[0] == 0x8:
                    if proc.poll() is None:
                        proc.kill()
                    return
                opcode, data = frame
                if opcode == 0x9:
                    send(0xA, data)
                    continue
                if not data:
                    continue
                channel, payload = data[0], data[1:]
                if channel == 255 and proto.startswith("v5") and payload[:1] == b"\x00":
                    with contextlib.suppress(OSError):
                        stdin.close()
                elif channel == 0 and not stdin.closed:
                    with contextlib.suppress(OSError):
                        stdin.write(payload)
                        stdin.flush()

        pumps = [
            threading.Thread(target=pump, args=(proc.stdout, 1), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, 2), daemon=True),
        ]
        for t in pumps:
            t.start()
        reader = threading.Thread(target=read_client, daemon=True)
        reader.start()
        code = proc.wait()
        for t in pumps:
            t.join(timeout=5)
        if code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {
                "metadata": {},
                "status": "Failure",
                "message": f"command terminated with non-zero exit code: exit status {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        send(0x2, bytes([3]) + json.dumps(status).encode())
        send(0x8, struct.pack(">H", 1000))
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        for s in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                s.close()


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


# ---------------------------------------------------------------------- paging and watch


def list_page(
    items: list[dict[str, Any]], query: Mapping[str, list[str]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`limit`/`continue` as the API server pages a list: the page, and the list metadata
    that says what is left (the token is the offset of the next page)."""
    limit = int((query.get("limit") or ["0"])[0] or 0)
    start = int((query.get("continue") or ["0"])[0] or 0)
    if limit <= 0:
        return items[start:], {}
    page = items[start : start + limit]
    left = len(items) - start - len(page)
    if left <= 0:
        return page, {}
    return page, {"continue": str(start + limit), "remainingItemCount": left}


WATCH_POLL = 0.02  # seconds between the loopback watch's looks at the store


def serve_watch(handler: Any, plural: str, namespace: str, query: Mapping[str, list[str]]) -> None:
    """A watch request: events (ADDED, MODIFIED, DELETED) for the matching objects whose
    resourceVersion is past the one asked from, streamed as JSON lines in chunks, until
    `timeoutSeconds` or the server stops. Found by looking at the store every WATCH_POLL s."""
    api: KubeAPI = handler.api
    selector = (query.get("labelSelector") or [""])[0] or None
    since = int((query.get("resourceVersion") or ["0"])[0] or 0)
    timeout = float((query.get("timeoutSeconds") or ["60"])[0] or 60)
    end = time.monotonic() + timeout

    def matching() -> dict[tuple[str, str], dict[str, Any]]:
        with api.lock:
            return {
                (ns, nm): copy.deepcopy(o)
                for (p, ns, nm), o in api.store.items()
                if p == plural
                and (not namespace or ns == namespace)
                and selector_matches(selector, o.get("metadata", {}).get("labels") or {})
            }

    def chunk(kind: str, obj: Mapping[str, Any]) -> None:
        data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()

    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    seen: dict[tuple[str, str], int] = {}
    try:
        first = True
        while True:
            now = matching()
            for key, obj in sorted(now.items()):
                rv = int(obj.get("metadata", {}).get("resourceVersion") or 0)
                if rv > seen.get(key, since if first else 0):
                    chunk("MODIFIED" if key in seen or first else "ADDED", obj)
                seen[key] = rv
            for key in [k for k in seen if k not in now]:
                del seen[key]
                chunk("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
            first = False
            if time.monotonic() >= end or api._stopping.is_set():
                break
            time.sleep(WATCH_POLL)
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except OSError:
        pass  # the client went away
    handler.close_connection = True
