"""Accept files: the changes a team has reviewed and accepts, each with its reason.

    # a YAML list; every entry needs an id (a probe id of the plan) and a reason
    - id: 3f2a9c1d7e4b
      reason: "named ports: fixed by PR #123 after the upgrade"

A mapping `{accept: [...]}` is read the same way. An accepted `lost` or `gained` probe
passes; an entry without a reason, or with another field, is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from netparity.errors import InputError
from netparity.yamlio import read_yaml

_FIELDS = frozenset({"id", "reason", "title"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Acceptance:
    id: str
    reason: str
    title: str | None = None  # informational: what the probe was when it was accepted


def parse_accept(data: Any, origin: str = "<accept>") -> Mapping[str, Acceptance]:
    if isinstance(data, Mapping) and set(data) == {"accept"}:
        data = data["accept"]
    if data is None:
        return {}
    if not isinstance(data, list):
        raise InputError("must be a YAML list of {id, reason} entries", source=origin)
    out: dict[str, Acceptance] = {}
    for i, raw in enumerate(data):
        name = f"#{i + 1}"
        if not isinstance(raw, Mapping):
            raise InputError(
                "each entry must be a mapping with id and reason",
                source=origin,
                kind="entry",
                name=name,
            )
        for key in raw:
            if key not in _FIELDS:
                raise InputError(
                    f"is not a known field (allowed: {', '.join(sorted(_FIELDS))})",
                    source=origin,
                    kind="entry",
                    name=name,
                    field=str(key),
                )
        pid = raw.get("id")
        if not isinstance(pid, str | int) or isinstance(pid, bool) or not str(pid).strip():
            raise InputError(
                "is required (the probe id to accept)",
                source=origin,
                kind="entry",
                name=name,
                field="id",
            )
        pid = str(pid).strip()
        reason = raw.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise InputError(
                f"is required for {pid}: say why this change is accepted",
                source=origin,
                kind="entry",
                name=name,
                field="reason",
            )
        if pid in out:
            raise InputError(
                f"probe {pid} is listed twice", source=origin, kind="entry", name=name, field="id"
            )
        title = raw.get("title")
        out[pid] = Acceptance(
            id=pid, reason=reason.strip(), title=str(title) if title is not None else None
        )
    return out


def load_accept(path: str | Path) -> Mapping[str, Acceptance]:
    return parse_accept(read_yaml(path, "the accept file"), str(path))


def accept_yaml(entries: list[Acceptance]) -> str:
    """An accept file listing `entries` (for people who review a parity report)."""
    doc = [
        {"id": e.id, "reason": e.reason, **({"title": e.title} if e.title else {})} for e in entries
    ]
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
