"""What the lint could not judge: "no finding" only means something when everything was.

Not judged (exit 3 when there is no finding):
- connections whose verdict is `unknown` under either dataplane, with the reason;
- objects of kinds netparity does not read that can change what reaches a pod (another
  policy engine's CRDs, unknown kinds), by kind;
- Services whose backends the input does not show (no selector and no EndpointSlice).

Listed but judged: objects of kinds that cannot change a connection's verdict (Secrets,
ServiceAccounts, RBAC, ...), terminated pods, netparity's own objects, and policies that
select no pod or workload (they change nothing today; a later pod would change that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from netparity.model.objects import Pod
from netparity.model.snapshot import Snapshot

# Kinds that never change whether a connection is allowed: skipping them leaves nothing
# unjudged. Anything else skipped (Calico or Antrea policies, Istio resources, an unknown
# CRD, Endpoints of an older dump) might, and is reported as not judged.
NO_EFFECT_KINDS = frozenset(
    {
        "APIService",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "ControllerRevision",
        "CSIDriver",
        "CSINode",
        "CustomResourceDefinition",
        "Endpoints",  # the older twin of EndpointSlices, which are read
        "Event",
        "HorizontalPodAutoscaler",
        "Lease",
        "LimitRange",
        "MutatingWebhookConfiguration",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "PodTemplate",
        "PriorityClass",
        "ResourceQuota",
        "Role",
        "RoleBinding",
        "Secret",
        "ServiceAccount",
        "StorageClass",
        "ValidatingWebhookConfiguration",
        "VerticalPodAutoscaler",
        "VolumeAttachment",
    }
)
MAX_TEXT_UNKNOWN = 6


def _no_effect(kind: str) -> bool:
    """`Pod (terminated)`, `Deployment (netparity's own)` and the kinds above."""
    return kind.endswith(")") or kind in NO_EFFECT_KINDS


@dataclass(frozen=True, slots=True, kw_only=True)
class NotJudged:
    unknown: tuple[tuple[str, str], ...] = ()  # (connection, reason)
    skipped: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    ignored: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    services: tuple[str, ...] = ()  # Service keys whose backends the input does not show
    idle_policies: tuple[str, ...] = ()  # listed, judged (they select nothing)

    @property
    def complete(self) -> bool:
        """Whether everything was judged (the lint may then say "no finding")."""
        return not (self.unknown or self.skipped or self.services)

    def lines(self, *, limit: int | None = MAX_TEXT_UNKNOWN) -> list[str]:
        """The "not judged" section, for text outputs (lint, the suites' summary, reports)."""
        out: list[str] = []
        if self.unknown:
            out.append(f"{len(self.unknown)} connections with an unknown verdict:")
            shown = self.unknown if limit is None else self.unknown[:limit]
            out.extend(f"  - {conn}: {reason}" for conn, reason in shown)
            if len(shown) < len(self.unknown):
                out.append(f"  ... and {len(self.unknown) - len(shown)} more (see --format json)")
        if self.skipped:
            out.append(
                "objects not read, which may change what reaches a pod: "
                + ", ".join(f"{n} {k}" for k, n in self.skipped.items())
            )
        if self.services:
            out.append(
                "Services whose backends are not in the input (no selector, no "
                "EndpointSlice): " + ", ".join(self.services)
            )
        return out

    def listed(self) -> list[str]:
        """What is listed for the reader but was judged."""
        out = []
        if self.idle_policies:
            out.append(
                "policies selecting no pod or workload (they change nothing today): "
                + ", ".join(self.idle_policies)
            )
        if self.ignored:
            out.append(
                "objects skipped that cannot change a verdict: "
                + ", ".join(f"{n} {k}" for k, n in self.ignored.items())
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "unknown": [{"connection": c, "reason": r} for c, r in self.unknown],
            "skipped": dict(self.skipped),
            "services_without_backends": list(self.services),
            "listed": {
                "policies_selecting_nothing": list(self.idle_policies),
                "ignored": dict(self.ignored),
            },
        }


def not_judged(snapshot: Snapshot, unknown: Sequence[tuple[str, str]] = ()) -> NotJudged:
    skipped = {k: n for k, n in snapshot.skipped.items() if not _no_effect(k)}
    ignored = {k: n for k, n in snapshot.skipped.items() if _no_effect(k)}
    idle = []
    pods_by_ns: dict[str, list[Pod]] = {}
    for p in snapshot.pods:
        if not p.host_network:
            pods_by_ns.setdefault(p.namespace, []).append(p)
    for np_ in snapshot.network_policies:
        if not any(np_.pod_selector.matches(p.labels) for p in pods_by_ns.get(np_.namespace, ())):
            idle.append(f"NetworkPolicy {np_.key}")
    return NotJudged(
        unknown=tuple(dict.fromkeys(unknown)),
        skipped=MappingProxyType(skipped),
        ignored=MappingProxyType(ignored),
        services=tuple(s.key for s in snapshot.unresolved_services()),
        idle_policies=tuple(idle),
    )
