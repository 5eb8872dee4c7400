"""The fake scheduler: nodeSelector and required node affinity on node labels, full nodes
reported as Unschedulable (and retried when room frees up), a pod bound to the first node
that fits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netparity.labapi.server import KubeAPI

PodEdit = Callable[[dict[str, Any]], None]


def unschedulable(message: str) -> PodEdit:
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


def _term_ok(term: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
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
    return any(_term_ok(t, labels) for t in terms)


def _wait_for_room(api: KubeAPI, namespace: str, name: str, full: list[str]) -> str | None:
    """Like the scheduler: try again when room frees up on one of the full nodes."""
    node: str | None = None
    while node is None and not api._stopping.wait(0.1):
        with api.lock:
            if ("pods", namespace, name) not in api.store:
                return None
            node = next((n for n in full if n not in api.full_nodes), None)
    return node


def schedule(
    api: KubeAPI, namespace: str, name: str, uid: str, spec: Mapping[str, Any]
) -> str | None:
    """The node the pod is bound to (its nodeName, else the first that fits), or None (the
    pod's status then says why, or it was deleted meanwhile)."""
    node: str | None = spec.get("nodeName")
    if node:
        return node
    if api.unschedulable is not None:
        api._update_pod(namespace, name, uid, unschedulable(api.unschedulable))
        return None
    with api.lock:
        candidates = [
            k[2]
            for k, obj in sorted(api.store.items())
            if k[0] == "nodes" and node_matches(spec, obj)
        ]
    full = [n for n in candidates if n in api.full_nodes]
    node = next((n for n in candidates if n not in api.full_nodes), None)
    if node is None and full:
        api._update_pod(namespace, name, uid, unschedulable(api.full_nodes[full[0]]))
        node = _wait_for_room(api, namespace, name, full)
        if node is None:
            return None
    if node is None:
        total = sum(1 for k in list(api.store) if k[0] == "nodes")
        why = (
            f"0/{total} nodes are available: {total} node(s) didn't match "
            "Pod's node affinity/selector."
        )
        api._update_pod(namespace, name, uid, unschedulable(why))
        return None
    chosen = node

    def bind(p: dict[str, Any]) -> None:
        p["spec"]["nodeName"] = chosen

    api._update_pod(namespace, name, uid, bind)
    return chosen
