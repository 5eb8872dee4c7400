"""Pods as a reader sees them: a class's namespace, the labels its policies read, a count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netparity.model.quick import quick_init


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class PodGroup:
    """Pods that behave alike for every policy: a namespace, the labels policies use, a count."""

    namespace: str
    labels: tuple[tuple[str, str], ...]
    count: int
    example: str  # one pod key, for a reader to find them
    # "Kind/name" where the pods are a workload's template (no pod of it was running)
    template: str | None = None

    def __str__(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in self.labels) or "*"
        pods = "pod" if self.count == 1 else "pods"
        if self.template is not None:
            return (
                f"{self.namespace}[{labels}] ({self.count} {pods} from {self.template}'s template)"
            )
        return f"{self.namespace}[{labels}] ({self.count} {pods}, e.g. {self.example})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "namespace": self.namespace,
            "labels": dict(self.labels),
            "count": self.count,
            "example": self.example,
        }
        if self.template is not None:
            out["template"] = self.template
        return out


def describe_pods(groups: Sequence[PodGroup], limit: int = 3) -> str:
    total = sum(g.count for g in groups)
    head = "; ".join(str(g) for g in groups[:limit])
    more = f"; and {len(groups) - limit} more classes" if len(groups) > limit else ""
    if len(groups) == 1:
        return f"pods {head}"
    return f"{total} pods: {head}{more}"
