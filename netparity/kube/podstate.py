"""What a probe pod's status says: ready to probe, still coming, or failed (and why)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

IMAGE_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
# Pull failures no retry mends (the others may pass: a registry's 429, a throttled ACR, a
# role assignment for the registry that is still propagating)
LASTING_IMAGE_FAILURES = frozenset({"InvalidImageName", "ErrImageNeverPull"})
CONTAINER_FAILURES = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff"}
)


class Readiness(StrEnum):
    READY = "ready"  # running, the agent listening (startup probe passed), an IP
    WAITING = "waiting"
    FAILED = "failed"  # will not come: the detail says why
    IMAGE = "image"  # the image cannot be pulled (yet: the kubelet retries, see `reason`)


@dataclass(frozen=True, slots=True, kw_only=True)
class PodState:
    readiness: Readiness
    detail: str
    ip: str | None = None
    node: str | None = None
    reason: str | None = None  # the waiting container's reason, or the scheduler's


def _m(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def pod_state(pod: Mapping[str, Any] | None) -> PodState:
    """Read a pod's status. The pod's own Ready stays False (the readiness gate): readiness
    here is the container's (its startup probe), which the gate does not touch."""
    if pod is None:
        return PodState(readiness=Readiness.FAILED, detail="it was deleted")
    spec = _m(pod.get("spec"))
    status = _m(pod.get("status"))
    node = spec.get("nodeName") if isinstance(spec.get("nodeName"), str) else None
    ip = status.get("podIP") if isinstance(status.get("podIP"), str) else None
    phase = status.get("phase") or "Pending"
    on = f" on node {node}" if node else ""
    for cond in status.get("conditions") or ():
        c = _m(cond)
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return PodState(
                readiness=Readiness.WAITING,
                detail=f"{c.get('reason') or 'not scheduled'}: {c.get('message') or 'no reason given'}",
                node=node,
                reason=str(c.get("reason") or "") or None,
            )
    if phase in ("Failed", "Succeeded"):
        reason = status.get("reason") or phase
        message = status.get("message") or ""
        for cs in status.get("containerStatuses") or ():
            term = _m(_m(_m(cs).get("state")).get("terminated"))
            if term:
                reason = f"the agent exited with code {term.get('exitCode')}"
                message = str(term.get("message") or term.get("reason") or "").strip()
        text = f"{reason}{on}" + (f": {message}" if message else "")
        return PodState(readiness=Readiness.FAILED, detail=text, ip=ip, node=node)
    statuses = [_m(cs) for cs in status.get("containerStatuses") or ()]
    for cs in statuses:
        state = _m(cs.get("state"))
        waiting = _m(state.get("waiting"))
        reason = str(waiting.get("reason") or "")
        message = str(waiting.get("message") or "")
        if reason in IMAGE_FAILURES:
            return PodState(
                readiness=Readiness.IMAGE,
                detail=f"{reason}{on}: {message}".rstrip(": "),
                node=node,
                reason=reason,
            )
        if reason in CONTAINER_FAILURES:
            return PodState(
                readiness=Readiness.FAILED,
                detail=f"{reason}{on}: {message}".rstrip(": "),
                ip=ip,
                node=node,
            )
        term = _m(state.get("terminated"))
        if term:
            detail = f"the agent exited with code {term.get('exitCode')}{on}"
            if term.get("message"):
                detail += f": {str(term['message']).strip()}"
            return PodState(readiness=Readiness.FAILED, detail=detail, ip=ip, node=node)
    if phase == "Running" and ip and statuses:
        if all(cs.get("ready") is True and "running" in _m(cs.get("state")) for cs in statuses):
            return PodState(readiness=Readiness.READY, detail=f"running{on}", ip=ip, node=node)
        return PodState(
            readiness=Readiness.WAITING,
            detail=f"running{on}, the agent not listening yet (startup probe)",
            ip=ip,
            node=node,
        )
    for cs in statuses:
        waiting = _m(_m(cs.get("state")).get("waiting"))
        if waiting.get("reason"):
            text = str(waiting["reason"])
            if waiting.get("message"):
                text += f": {waiting['message']}"
            return PodState(readiness=Readiness.WAITING, detail=f"{text}{on}", ip=ip, node=node)
    return PodState(readiness=Readiness.WAITING, detail=f"{phase}{on}", ip=ip, node=node)
