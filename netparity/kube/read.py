"""Read a live cluster into a Snapshot (the same parser as YAML files), and write it out."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from netparity.kube import RUN_LABEL
from netparity.kube.client import (
    CILIUM_CLUSTERWIDE_POLICIES,
    CILIUM_NETWORK_POLICIES,
    CONFIG_MAPS,
    NAMESPACES,
    NETWORK_POLICIES,
    NODES,
    PODS,
    SERVICES,
    Forbidden,
    Kube,
    Resource,
)
from netparity.model.snapshot import CONFIG_MAPS as ENFORCEMENT_CONFIG_MAPS
from netparity.model.snapshot import Snapshot, snapshot_from_dicts

NOT_OURS = f"!{RUN_LABEL}"
# Read through the generic path (any group/version); 404 where the API is absent.
POD_DISRUPTION_BUDGETS = Resource(
    kind="PodDisruptionBudget",
    plural="poddisruptionbudgets",
    group="policy",
    version="v1",
    namespaced=True,
)
# Workloads (pods to be: netparity.model.workloads) and EndpointSlices; the groups without
# a typed API in the client (batch, discovery.k8s.io) go through the generic path. Listing
# them needs probes/rbac.yaml's read rules.
WORKLOADS = tuple(
    Resource(kind=kind, plural=plural, group=group, version="v1", namespaced=True, stem=stem)
    for kind, plural, group, stem in (
        ("Deployment", "deployments", "apps", "deployment"),
        ("StatefulSet", "statefulsets", "apps", "stateful_set"),
        ("DaemonSet", "daemonsets", "apps", "daemon_set"),
        ("ReplicaSet", "replicasets", "apps", "replica_set"),
        ("ReplicationController", "replicationcontrollers", "", "replication_controller"),
        ("Job", "jobs", "batch", ""),
        ("CronJob", "cronjobs", "batch", ""),
    )
)
ENDPOINT_SLICES = Resource(
    kind="EndpointSlice",
    plural="endpointslices",
    group="discovery.k8s.io",
    version="v1",
    namespaced=True,
)
# The pod running the suites in the cluster (probes/job.yaml): netparity's, not a workload.
RUNNER_LABEL = "netparity.io/runner"


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def _ours(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    return isinstance(labels, Mapping) and (RUN_LABEL in labels or RUNNER_LABEL in labels)


def read_objects(kube: Kube) -> list[dict[str, Any]]:
    """Every policy-relevant object of the cluster as wire dicts, netparity's own excluded."""
    objs: list[dict[str, Any]] = []
    objs += kube.list(NAMESPACES) or []
    objs += kube.list(NODES) or []
    objs += kube.list(PODS, label_selector=NOT_OURS) or []
    objs += kube.list(SERVICES, label_selector=NOT_OURS) or []
    objs += kube.list(NETWORK_POLICIES) or []
    # The Cilium CRDs exist only where Cilium is (or was) installed: 404 -> none.
    objs += kube.list(CILIUM_NETWORK_POLICIES, missing_ok=True) or []
    objs += kube.list(CILIUM_CLUSTERWIDE_POLICIES, missing_ok=True) or []
    for workload in WORKLOADS:
        objs += kube.list(workload, label_selector=NOT_OURS, missing_ok=True) or []
    objs += kube.list(ENDPOINT_SLICES, missing_ok=True) or []
    # PodDisruptionBudgets decide which twins may carry which labels (placement.py); a
    # snapshot file keeps them too. RBAC that hides them: read as none.
    with contextlib.suppress(Forbidden):
        objs += kube.list(POD_DISRUPTION_BUDGETS, missing_ok=True) or []
    for key in sorted(ENFORCEMENT_CONFIG_MAPS):
        namespace, name = key.split("/", 1)
        with contextlib.suppress(Forbidden):  # read when readable; RBAC may hide kube-system
            cm = kube.get(CONFIG_MAPS, name, namespace=namespace)
            if cm is not None:
                objs.append(cm)
    return [_clean(o) for o in objs if not _ours(o)]


def read_snapshot(kube: Kube) -> tuple[Snapshot, list[dict[str, Any]]]:
    objs = read_objects(kube)
    return snapshot_from_dicts(objs, sources=(f"cluster:{kube.name}",)), objs


def as_list_document(objs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [dict(o) for o in objs]}


def write_list(objs: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write objects as one `kind: List` document, atomically (all or nothing): JSON where
    the file name ends in .json (it loads many times faster), YAML otherwise."""
    path = Path(path)
    doc = as_list_document(objs)
    if path.suffix == ".json":
        text = json.dumps(doc, indent=1) + "\n"
    else:
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
