"""Which dataplane enforces policy: read from what runs in kube-system.

The DaemonSets looked for, and which registered profile each image version stands for,
come from the engine's registry (`register(..., detection=Detection(...))` in
engine/dataplane.py): a new dataplane is recognised here without an edit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netparity.engine.dataplane import CURRENT, DETECTIONS, NEWEST_TARGET, TARGETS, target_for
from netparity.engine.dataplane import DATAPLANES as PROFILES
from netparity.errors import ClusterError
from netparity.kube.resources import DAEMON_SETS, NODES, PODS
from netparity.model.snapshot import Snapshot

if TYPE_CHECKING:  # the client (and `kubernetes`) only where a cluster is read: `plan` needs none
    from netparity.kube.client import Kube

KUBE_SYSTEM = "kube-system"
UNKNOWN = "unknown"  # what detection says when it cannot tell


def known_dataplanes() -> frozenset[str]:
    """What `--dataplane` may name: every registered profile, or "unknown"."""
    return frozenset(PROFILES) | {UNKNOWN}


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


def _minor(version: str | None) -> tuple[int, int] | None:
    if version is None:
        return None
    major, minor = (int(x) for x in version.split(".")[:2])
    return major, minor


def release_of(daemonset: str, version: str | None) -> str:
    """The registered profile that `daemonset` at image `version` stands for (cilium at
    1.16.6: `cilium-1.16`; at 1.17 or later, or an unknown version: `cilium`); "unknown"
    when no registered profile covers it."""
    minor = _minor(version)
    for name, d in DETECTIONS.items():
        if d.daemonset == daemonset and d.covers(minor):
            return name
    return UNKNOWN


def release_in_snapshot(snapshot: Snapshot) -> tuple[str, str | None] | None:
    """The registered target release a snapshot's kube-system DaemonSet shows, with its
    version (a `cilium` DaemonSet whose cilium-agent image is v1.19.1: ("cilium-1.19",
    "1.19.1")); None where the snapshot holds no such DaemonSet."""
    products = _products()
    for w in snapshot.workloads:
        container = products.get(w.name)
        if w.kind != "DaemonSet" or w.namespace != KUBE_SYSTEM or container is None:
            continue
        spec = w.template.get("spec")
        image = image_of(spec if isinstance(spec, Mapping) else {}, container)
        version = image_version(image or "")
        release = release_of(w.name, version)
        if release in TARGETS:
            return release, version
    return None


def resolved_target(target: str, snapshot: Snapshot) -> tuple[str, str | None]:
    """`target` as the snapshot's DaemonSet resolves it (`target_for`), and the one line
    that says so where it changed (None: unchanged)."""
    found = release_in_snapshot(snapshot)
    if found is None:
        return target, None
    release, version = found
    chosen = target_for(target, release)
    if chosen == target:
        return target, None
    shown = f"Cilium {version}" if version else "a Cilium image of unknown version"
    return chosen, (
        f"target {chosen}: the snapshot's kube-system DaemonSet runs {shown} "
        f"(--target {target} means the detected release)"
    )


def _products() -> dict[str, str]:
    """The DaemonSets that show a registered dataplane, each with its agent's container,
    in registration order."""
    out: dict[str, str] = {}
    for d in DETECTIONS.values():
        out.setdefault(d.daemonset, d.container)
    return out


def _daemonset(name: str) -> str:
    d = DETECTIONS.get(name)
    return d.daemonset if d is not None else name


def image_of(spec: Mapping[str, Any], container: str) -> str | None:
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
        return True, image_of(template, container)
    for pod in kube.list(PODS, namespace=KUBE_SYSTEM, label_selector=f"k8s-app={name}") or []:
        return True, image_of(pod.get("spec") or {}, container)
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
    new, old = _daemonset(NEWEST_TARGET), _daemonset(CURRENT)
    ds = kube.get(DAEMON_SETS, new, namespace=KUBE_SYSTEM) or {}
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
    agents = kube.list(PODS, namespace=KUBE_SYSTEM, label_selector=f"k8s-app={new}") or []
    with_cilium = {n for p in agents if _ready(p) and (n := _node_of(p)) is not None}
    npm_pods = (
        kube.list(PODS, namespace=KUBE_SYSTEM, label_selector=f"k8s-app={old}") or [] if npm else []
    )
    counts = ""
    if desired is not None:
        counts = (
            f"{new} DaemonSet: {ready if ready is not None else '?'} of {desired} "
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
    products = _products()
    found: dict[str, str | None] = {}  # DaemonSet -> its agent's image
    for name, container in products.items():
        present, image = _find(kube, name, container)
        if present:
            found[name] = image
    new, old = _daemonset(NEWEST_TARGET), _daemonset(CURRENT)
    window = migration_window(kube, npm=old in found) if new in found else None
    seen = [f"{name} ({image})" for name, image in found.items()]
    if len(found) > 1:
        return Detected(
            dataplane=UNKNOWN,
            evidence=(
                f"{'both ' if len(found) == 2 else ''}{' and '.join(seen)} run in kube-system: "
                f"which one enforces is unclear (a migration in progress?); "
                f"{seen_in_kube_system(kube)}"
            ),
            window=window,
        )
    if found:
        (name, image), evidence = next(iter(found.items())), seen[0]
        version = image_version(image or "")
        return Detected(
            dataplane=release_of(name, version), version=version, evidence=evidence, window=window
        )
    names = list(products)
    return Detected(
        dataplane=UNKNOWN,
        evidence=(
            f"neither {' nor '.join(names)} runs in kube-system (looked for the DaemonSets "
            f"{' and '.join(names)}, and pods labelled "
            f"{' or '.join(f'k8s-app={n}' for n in names)}); "
            f"{seen_in_kube_system(kube)}"
        ),
    )
