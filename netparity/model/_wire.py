"""Helpers to read camelCase wire dicts with errors that name the object and field."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
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


# ----------------------------------------------------------------- the API server's syntax
# k8s.io/apimachinery/pkg/util/validation: what the API server refuses, refused here too.

_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@lru_cache(maxsize=65536)
def label_key_problem(key: str) -> str | None:
    """Why `key` is not a label key (an optional DNS subdomain prefix, a name), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return f"label key {key!r} has an invalid prefix (a lowercase DNS subdomain)"
    if not name or len(name) > 63 or not _QUALIFIED.match(name):
        return (
            f"label key {key!r} is invalid (a name of at most 63 characters: letters, digits, "
            "'-', '_' or '.', beginning and ending with a letter or digit)"
        )
    return None


@lru_cache(maxsize=65536)
def label_value_problem(value: str) -> str | None:
    """Why `value` is not a label value (empty, or a name of at most 63 characters), or None."""
    if value and (len(value) > 63 or not _QUALIFIED.match(value)):
        return (
            f"label value {value!r} is invalid (at most 63 characters: letters, digits, "
            "'-', '_' or '.', beginning and ending with a letter or digit)"
        )
    return None


def label_map(value: Any, ctx: Ctx) -> dict[str, str]:
    """A map of labels (metadata.labels, a selector's matchLabels), checked as the API does."""
    labels = str_map(value, ctx)
    for k, v in labels.items():
        problem = label_key_problem(k) or label_value_problem(v)
        if problem:
            raise ctx.sub(k).error(problem)
    return labels


def port_name_problem(name: str) -> str | None:
    """Why `name` is not a port name (an IANA service name, as containerPorts and policies use)."""
    if (
        len(name) > 15
        or not _IANA_SVC_NAME.match(name)
        or "--" in name
        or not any(c.isalpha() for c in name)
    ):
        return (
            f"port name {name!r} is invalid (an IANA service name: at most 15 lowercase "
            "letters, digits and '-', with at least one letter, no '--', not starting or "
            "ending with '-')"
        )
    return None


def as_port_name(value: Any, ctx: Ctx) -> str | None:
    name = as_str(value, ctx)
    if name is not None:
        problem = port_name_problem(name)
        if problem:
            raise ctx.error(problem)
    return name


def object_name_problem(name: str, *, label: bool = False) -> str | None:
    """Why `name` cannot name an object (a DNS-1123 subdomain, or a label where `label`)."""
    if label:
        if len(name) > 63 or not _DNS1123_LABEL.match(name):
            return (
                f"{name!r} is not a valid name (a lowercase DNS label: at most 63 letters, "
                "digits and '-', beginning and ending with a letter or digit)"
            )
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return (
            f"{name!r} is not a valid name (a lowercase DNS subdomain: letters, digits, '-' "
            "and '.', beginning and ending with a letter or digit)"
        )
    return None


def as_name(value: Any, ctx: Ctx, *, label: bool = False) -> str:
    """metadata.name or metadata.namespace: required, and in the API server's syntax."""
    name = as_str(value, ctx, required=True)
    assert name is not None
    problem = object_name_problem(name, label=label)
    if problem:
        raise ctx.error(problem)
    return name
