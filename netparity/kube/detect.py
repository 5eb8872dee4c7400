"""Which dataplane enforces policy: read from what runs in kube-system."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netparity.errors import ClusterError
from netparity.kube.client import DAEMON_SETS, PODS, Kube

KUBE_SYSTEM = "kube-system"
DATAPLANES = frozenset({"spec", "npm", "cilium", "cilium-1.16", "unknown"})
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, slots=True, kw_only=True)
class Detected:
    dataplane: str
    version: str | None = None
    evidence: str = ""


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
    """`cilium-1.16` before 1.17 (no endPort), else `cilium`; unknown versions count as current."""
    if version is None:
        return "cilium"
    major, minor = (int(x) for x in version.split(".")[:2])
    return "cilium-1.16" if (major, minor) < (1, 17) else "cilium"


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


def detect(kube: Kube) -> Detected:
    npm, npm_image = _find(kube, "azure-npm", "azure-npm")
    cilium, cilium_image = _find(kube, "cilium", "cilium-agent")
    if npm and cilium:
        return Detected(
            dataplane="unknown",
            evidence=(
                f"both azure-npm ({npm_image}) and cilium ({cilium_image}) run in kube-system: "
                f"which one enforces is unclear (a migration in progress?); "
                f"{seen_in_kube_system(kube)}"
            ),
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
        )
    return Detected(
        dataplane="unknown",
        evidence=(
            "neither azure-npm nor cilium runs in kube-system (looked for the DaemonSets "
            "azure-npm and cilium, and pods labelled k8s-app=azure-npm or k8s-app=cilium); "
            f"{seen_in_kube_system(kube)}"
        ),
    )
