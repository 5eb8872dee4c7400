"""Helpers to read camelCase wire dicts with errors that name the object and field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netparity.errors import InputError


class Ctx:
    """Where a value sits: the object (kind, namespace/name) and the field path."""

    __slots__ = ("kind", "name", "path")

    def __init__(self, kind: str, name: str, path: str = "") -> None:
        self.kind = kind
        self.name = name
        self.path = path

    def sub(self, field: str | int) -> Ctx:
        if isinstance(field, int):
            return Ctx(self.kind, self.name, f"{self.path}[{field}]")
        return Ctx(self.kind, self.name, f"{self.path}.{field}" if self.path else field)

    def error(self, message: str) -> InputError:
        return InputError(message, kind=self.kind, name=self.name, field=self.path or None)


def as_map(value: Any, ctx: Ctx, *, allow_none: bool = True) -> Mapping[str, Any]:
    if value is None and allow_none:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.error(f"must be a mapping, got {type(value).__name__}")
    return value


def as_list(value: Any, ctx: Ctx) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ctx.error(f"must be a list, got {type(value).__name__}")
    return value


def as_str(value: Any, ctx: Ctx, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise ctx.error("is required")
        return None
    if not isinstance(value, str):
        raise ctx.error(f"must be a string, got {value!r}")
    return value


def as_port_number(value: Any, ctx: Ctx) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(f"must be a port number, got {value!r}")
    if not 1 <= value <= 65535:
        raise ctx.error(f"port {value} is out of range 1-65535")
    return value


def str_map(value: Any, ctx: Ctx) -> dict[str, str]:
    raw = as_map(value, ctx)
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str):
            raise ctx.error(f"has a non-string key {k!r}")
        if v is None:
            v = ""
        if not isinstance(v, str | int | float | bool):
            raise ctx.sub(k).error(f"must be a string, got {v!r}")
        out[k] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    return out


def check_fields(raw: Mapping[str, Any], allowed: frozenset[str], ctx: Ctx) -> None:
    for key in raw:
        if key not in allowed:
            raise ctx.sub(str(key)).error(
                "is not a known field (allowed: " + ", ".join(sorted(allowed)) + ")"
            )
