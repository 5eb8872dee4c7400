"""What every pytest item needs from a run: the header, the items and their verdicts.

The controller's run fills it; under pytest-xdist it travels to the workers as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from netparity.verdicts import ItemVerdict


@dataclass(slots=True, kw_only=True)
class RunView:
    header: list[str] = field(default_factory=list)
    items: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # suite -> (key, id)
    verdicts: dict[str, ItemVerdict] | None = None
    failure: str | None = None  # why no probe could be judged

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "items": {k: [list(p) for p in v] for k, v in self.items.items()},
            "verdicts": None
            if self.verdicts is None
            else {k: v.to_json() for k, v in self.verdicts.items()},
            "failure": self.failure,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RunView:
        verdicts = raw.get("verdicts")
        return cls(
            header=list(raw.get("header") or []),
            items={k: [(str(a), str(b)) for a, b in v] for k, v in raw["items"].items()},
            verdicts=None
            if verdicts is None
            else {k: ItemVerdict.from_json(v) for k, v in verdicts.items()},
            failure=raw.get("failure"),
        )
