"""Label selectors with the apimachinery semantics (NotIn on a missing key matches)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from netparity.model._wire import (
    Ctx,
    as_list,
    as_map,
    as_str,
    check_fields,
    label_key_problem,
    label_map,
    str_map,
)

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True, kw_only=True)
class Requirement:
    """One matchExpressions entry."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is Operator.IN:
            return labels.get(self.key) in self.values
        if self.operator is Operator.NOT_IN:
            value = labels.get(self.key)
            return value is None or value not in self.values
        if self.operator is Operator.EXISTS:
            return self.key in labels
        return self.key not in labels

    def __str__(self) -> str:
        if self.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            return f"{'' if self.operator is Operator.EXISTS else '!'}{self.key}"
        op = "in" if self.operator is Operator.IN else "notin"
        return f"{self.key} {op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelSelector:
    """matchLabels AND matchExpressions; the empty selector matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions)

    def keys(self) -> Iterator[str]:
        for key, _ in self.match_labels:
            yield key
        for req in self.match_expressions:
            yield req.key

    def has_invalid_values(self) -> bool:
        """True where an In/NotIn value fails NPM's label-value check, which is the label
        regex alone, with no 63-character limit (SEMANTICS D20: isValidLabelValue in
        Azure/azure-container-networking npm/pkg/controlplane/translation/parseSelector.go:
        17, 312-319, called at :80-84 and :268-272)."""
        return any(not _LABEL_VALUE.fullmatch(v) for r in self.match_expressions for v in r.values)

    def __str__(self) -> str:
        if self.is_empty:
            return "{}"
        parts = [f"{k}={v}" for k, v in self.match_labels]
        parts += [str(r) for r in self.match_expressions]
        return ",".join(parts)

    @classmethod
    def from_dict(cls, raw: Any, ctx: Ctx, *, kubernetes_keys: bool = True) -> LabelSelector:
        """Parse a selector; `kubernetes_keys` checks keys and values as the API server does
        (Cilium's selectors may carry a source prefix such as `k8s:`, so they skip it)."""
        data = as_map(raw, ctx)
        check_fields(data, frozenset({"matchLabels", "matchExpressions"}), ctx)
        mctx = ctx.sub("matchLabels")
        labels = (
            label_map(data.get("matchLabels"), mctx)
            if kubernetes_keys
            else str_map(data.get("matchLabels"), mctx)
        )
        exprs: list[Requirement] = []
        for i, item in enumerate(
            as_list(data.get("matchExpressions"), ctx.sub("matchExpressions"))
        ):
            ictx = ctx.sub("matchExpressions").sub(i)
            entry = as_map(item, ictx, allow_none=False)
            check_fields(entry, frozenset({"key", "operator", "values"}), ictx)
            key = as_str(entry.get("key"), ictx.sub("key"), required=True)
            op_raw = as_str(entry.get("operator"), ictx.sub("operator"), required=True)
            try:
                op = Operator(str(op_raw))
            except ValueError:
                raise ictx.sub("operator").error(
                    f"unknown operator {op_raw!r} (expected In, NotIn, Exists or DoesNotExist)"
                ) from None
            values = [str(v) for v in as_list(entry.get("values"), ictx.sub("values"))]
            if op in (Operator.IN, Operator.NOT_IN) and not values:
                raise ictx.sub("values").error(f"must be non-empty for operator {op}")
            if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
                raise ictx.sub("values").error(f"must be empty for operator {op}")
            assert key is not None
            # Keys are checked; values are not: the API server keeps accepting invalid
            # values in selectors of objects that already hold them, and NPM skips such a
            # policy (SEMANTICS D11), which the lint reports: modelling it is the point.
            problem = label_key_problem(key) if kubernetes_keys else None
            if problem:
                raise ictx.sub("key").error(problem)
            exprs.append(Requirement(key=key, operator=op, values=frozenset(values)))
        return cls(match_labels=tuple(sorted(labels.items())), match_expressions=tuple(exprs))
