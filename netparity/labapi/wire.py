"""The API server's wire vocabulary: which resources it serves, `Status` bodies, label
selectors, merge patches, injected faults and a pod's local runtime record."""

from __future__ import annotations

import contextlib
import copy
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
    netns: str = ""  # a lab pod's network namespace ("" on loopback)
    key: str = ""  # a lab pod's namespace/name in the lab


def close_listener(s: socket.socket) -> None:
    # shutdown() wakes a thread blocked in accept(); close() alone would leave the port bound
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
