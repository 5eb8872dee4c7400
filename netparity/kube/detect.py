"""Which dataplane enforces policy: read from what runs in kube-system."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netparity.engine.dataplane import NEWEST_TARGET, profile_for_release
from netparity.errors import ClusterError
from netparity.kube.client import DAEMON_SETS, NODES, PODS, Kube

KUBE_SYSTEM = "kube-system"
DATAPLANES = frozenset({"spec", "npm", "cilium", "cilium-1.16", "cilium-1.19", "unknown"})
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


NAMES_SHOWN = 8  # nodes named per list in a message; the rest are counted


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """The cluster is in the middle of the migration (Microsoft's guide: enforcement is
    inconsistent while nodes are reimaged, and Cilium enforces only once every node is):
    azure-npm and cilium both present, or Cilium not ready on every Linux node. The nodes
    that are NotReady or cordoned are named with it: they are the ones being reimaged."""

    linux_nodes: int
    cilium_ready: int  # Linux nodes with a ready Cilium agent pod
    npm_nodes: tuple[str, ...] = ()  # nodes where an azure-npm pod still runs
    without_cilium: tuple[str, ...] = ()  # Linux nodes without a ready Cilium agent pod
    not_ready: tuple[str, ...] = ()  # nodes whose Ready condition is not True
    cordoned: tuple[str, ...] = ()
    daemonset: str = ""  # the cilium DaemonSet's counts, as the API reports them

    def describe(self) -> str:
        parts = []
        if self.npm_nodes:
            parts.append(f"azure-npm still runs on {_names(self.npm_nodes)}")
        if self.without_cilium:
            parts.append(f"no ready Cilium agent on {_names(self.without_cilium)}")
        if self.not_ready:
            parts.append(f"NotReady: {_names(self.not_ready)}")
        if self.cordoned:
            parts.append(f"cordoned: {_names(self.cordoned)}")
        if self.daemonset:
            parts.append(self.daemonset)
        return "; ".join(parts)

    def progress(self) -> str:
        npm = f", azure-npm on {len(self.npm_nodes)}" if self.npm_nodes else ""
        return f"Cilium ready on {self.cilium_ready}/{self.linux_nodes} Linux nodes{npm}"


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Detected:
    dataplane: str
    version: str | None = None
    evidence: str = ""
    window: Window | None = None  # set: the migration is under way (see Window)


def image_version(image: str) -> str | None:
    """`mcr.microsoft.com/oss/cilium/cilium:v1.16.6-250129@sha256:..` -> `1.16.6`."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    m = _VERSION.match(last.split(":", 1)[1])
    if not m:
        return None
    return ".".join(g for g in m.groups() if g is not None)


def cilium_dataplane(version: str | None) -> str:
    """The profile registered for that Cilium release (`cilium-1.16` before 1.17, `cilium-1.19`
    from 1.19, else `cilium`); unknown versions count as the newest that AKS runs."""
    return profile_for_release(version, NEWEST_TARGET)


def _image_of(spec: Mapping[str, Any], container: str) -> str | None:
    containers = [c for c in spec.get("containers") or () if isinstance(c, Mapping)]
    for c in containers:
        if c.get("name") == container and isinstance(c.get("image"), str):
            return str(c["image"])
    for c in containers:
        if isinstance(c.get("image"), str):
            return str(c["image"])
    return None


def _find(kube: Kube, name: str, container: str) -> tuple[bool, str | None]:
    """(present, image) of a DaemonSet in kube-system, or of its pods if the DaemonSet is not found."""
    ds = kube.get(DAEMON_SETS, name, namespace=KUBE_SYSTEM)
    if ds is not None:
        template = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
        return True, _image_of(template, container)
    for pod in kube.list(PODS, namespace=KUBE_SYSTEM, label_selector=f"k8s-app={name}") or []:
        return True, _image_of(pod.get("spec") or {}, container)
    return False, None


def seen_in_kube_system(kube: Kube) -> str:
    """The DaemonSets of kube-system and their images, as evidence for a person to read."""
    try:
        found = kube.list(DAEMON_SETS, namespace=KUBE_SYSTEM, missing_ok=True) or []
    except ClusterError as e:
        return f"the DaemonSets of kube-system could not be listed ({e})"
    parts = []
    for ds in sorted(found, key=lambda d: str((d.get("metadata") or {}).get("name"))):
        template = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
        images = sorted(
            str(c.get("image"))
            for c in template.get("containers") or ()
            if isinstance(c, Mapping) and c.get("image")
        )
        parts.append(
            f"{(ds.get('metadata') or {}).get('name')} ({', '.join(images) or 'no image'})"
        )
    return "DaemonSets in kube-system: " + ("; ".join(parts) if parts else "none")


def _count(status: Mapping[str, Any], key: str) -> int | None:
    value = status.get(key)
    return value if isinstance(value, int) else None


def _ready(obj: Mapping[str, Any]) -> bool | None:
    """A pod's or node's Ready condition: True, False, or None when it has none."""
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return None


def _node_of(pod: Mapping[str, Any]) -> str | None:
    node = (pod.get("spec") or {}).get("nodeName")
    return node if isinstance(node, str) else None


def migration_window(kube: Kube, *, npm: bool) -> Window | None:
    """Where Cilium runs: the window when azure-npm runs beside it, or when its DaemonSet
    is not ready on every Linux node (desiredNumberScheduled against numberReady,
    updatedNumberScheduled and the Linux nodes; AKS schedules Cilium only on reimaged
    nodes). None: Cilium is ready everywhere and alone."""
    ds = kube.get(DAEMON_SETS, "cilium", namespace=KUBE_SYSTEM) or {}
    status = ds.get("status") if isinstance(ds.get("status"), Mapping) else {}
    assert isinstance(status, Mapping)
    desired = _count(status, "desiredNumberScheduled")
    ready = _count(status, "numberReady")
    updated = _count(status, "updatedNumberScheduled")
    nodes = kube.list(NODES) or []
    linux = sorted(
        str((n.get("metadata") or {}).get("name"))
        for n in nodes
        if ((n.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/os", "linux")
        == "linux"
        and ((n.get("metadata") or {}).get("labels") or {}).get("type") != "virtual-kubelet"
    )
    behind = desired is not None and (
        (ready is not None and ready < desired)
        or (updated is not None and updated < desired)
        or desired < len(linux)
    )
    if not npm and not behind:
        return None
    agents = kube.list(PODS, namespace=KUBE_SYSTEM, label_selector="k8s-app=cilium") or []
    with_cilium = {n for p in agents if _ready(p) and (n := _node_of(p)) is not None}
    npm_pods = (
        kube.list(PODS, namespace=KUBE_SYSTEM, label_selector="k8s-app=azure-npm") or []
        if npm
        else []
    )
    counts = ""
    if desired is not None:
        counts = (
            f"cilium DaemonSet: {ready if ready is not None else '?'} of {desired} "
            f"ready, {updated if updated is not None else '?'} updated, "
            f"{len(linux)} Linux nodes"
        )
    return Window(
        linux_nodes=len(linux),
        cilium_ready=len(with_cilium & set(linux)),
        npm_nodes=tuple(sorted({n for p in npm_pods if (n := _node_of(p)) is not None})),
        without_cilium=tuple(n for n in linux if n not in with_cilium),
        not_ready=tuple(
            sorted(str((n.get("metadata") or {}).get("name")) for n in nodes if _ready(n) is False)
        ),
        cordoned=tuple(
            sorted(
                str((n.get("metadata") or {}).get("name"))
                for n in nodes
                if (n.get("spec") or {}).get("unschedulable")
            )
        ),
        daemonset=counts,
    )


def detect(kube: Kube) -> Detected:
    npm, npm_image = _find(kube, "azure-npm", "azure-npm")
    cilium, cilium_image = _find(kube, "cilium", "cilium-agent")
    window = migration_window(kube, npm=npm) if cilium else None
    if npm and cilium:
        return Detected(
            dataplane="unknown",
            evidence=(
                f"both azure-npm ({npm_image}) and cilium ({cilium_image}) run in kube-system: "
                f"which one enforces is unclear (a migration in progress?); "
                f"{seen_in_kube_system(kube)}"
            ),
            window=window,
        )
    if npm:
        version = image_version(npm_image or "")
        return Detected(dataplane="npm", version=version, evidence=f"azure-npm ({npm_image})")
    if cilium:
        version = image_version(cilium_image or "")
        return Detected(
            dataplane=cilium_dataplane(version),
            version=version,
            evidence=f"cilium ({cilium_image})",
            window=window,
        )
    return Detected(
        dataplane="unknown",
        evidence=(
            "neither azure-npm nor cilium runs in kube-system (looked for the DaemonSets "
            "azure-npm and cilium, and pods labelled k8s-app=azure-npm or k8s-app=cilium); "
            f"{seen_in_kube_system(kube)}"
        ),
    )
