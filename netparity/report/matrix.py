"""The connectivity matrix: sources by destinations, grouped by namespace, per port/protocol.

Rows are probe sources and columns destinations, named by meaning (a pod class, a node
role, an outside address, a Service); where one axis has more than `MAX_AXIS` of them it
shows one row (or column) per namespace instead. A cell holds one chip per
port/protocol whose halves are the verdict before and after; the cell takes the colour of
the most serious status among its probes, and links to them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netparity.report.model import NODES_GROUP, OUTSIDE_GROUP, End, Row

MAX_AXIS = 48  # entries per axis at class level; beyond it, one entry per namespace
MAX_CHIPS = 6  # chips shown per cell; the rest are counted
MAX_TOOLTIP = 12  # probes listed in a cell's tooltip

# The most serious first: a cell takes the colour of its first status in this order.
SEVERITY = (
    "lost",
    "gained",
    "predicted",
    "error",
    "flaky",
    "missing",
    "accepted",
    "unrealized",
    "new",
    "not-run",
    "same",
)
_RANK = {s: i for i, s in enumerate(SEVERITY)}


def worst(statuses: Iterable[str]) -> str:
    return min(statuses, key=lambda s: _RANK.get(s, len(SEVERITY)), default="same")


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    key: str
    group: str
    label: str  # "" at namespace level
    title: str  # the endpoint's signature (a Service without its receiving node), or the group


def _title(e: End) -> str:
    if e.group == NODES_GROUP:
        return e.label
    if e.group == OUTSIDE_GROUP:
        return f"external:{e.label}"
    if ":" in e.label and e.kind == "service":
        via, _, name = e.label.partition(":")
        return f"{via}:{e.group}/{name}"
    return f"{e.group}[{e.label}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Chip:
    label: str  # "8080/TCP"
    before: str  # allow | deny | mixed | flaky | error | unknown | none
    after: str
    status: str
    count: int
    target: str  # the probe id a click leads to


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    chips: tuple[Chip, ...]
    more: int  # chips not shown
    status: str
    count: int
    changed: int  # probes whose verdict changed (not same/unrealized/new/missing/not-run)
    tooltip: str
    target: str  # the first probe of the most serious status


@dataclass(frozen=True, slots=True, kw_only=True)
class Matrix:
    rows: tuple[Entry, ...]
    cols: tuple[Entry, ...]
    row_groups: tuple[tuple[str, int], ...]  # (group, how many rows)
    col_groups: tuple[tuple[str, int], ...]
    cells: Mapping[tuple[int, int], Cell]
    row_level: str  # class | namespace
    col_level: str
    cell_of: Mapping[str, str] = field(default_factory=dict)  # probe id -> "row-col"

    @property
    def size(self) -> int:
        return len(self.rows) * len(self.cols)

    def col_starts(self) -> frozenset[int]:
        """Columns that open a namespace (drawn with a thicker line), at class level."""
        if self.col_level != "class":
            return frozenset()
        return frozenset(
            j for j, c in enumerate(self.cols) if j == 0 or c.group != self.cols[j - 1].group
        )

    def row_starts(self) -> frozenset[int]:
        if self.row_level != "class":
            return frozenset()
        return frozenset(
            i for i, r in enumerate(self.rows) if i == 0 or r.group != self.rows[i - 1].group
        )

    def segments(self, i: int, starts: frozenset[int]) -> list[Segment]:
        """Row i as cells and runs of empty columns (one <td colspan> each: a sparse
        matrix of thousands of cells stays a few hundred elements)."""
        out: list[Segment] = []
        for j in range(len(self.cols)):
            cell = self.cells.get((i, j))
            if cell is None and out and out[-1].cell is None and j not in starts:
                last = out[-1]
                out[-1] = Segment(col=last.col, span=last.span + 1, cell=None, start=last.start)
            else:
                out.append(Segment(col=j, span=1, cell=cell, start=j in starts))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    col: int
    span: int
    cell: Cell | None
    start: bool  # opens a namespace


_DIGITS = re.compile(r"(\d+)")


def natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that orders numbers in names by value: `ns2` before `ns10`."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(text) if part
    )


def _group_order(group: str) -> tuple[int, tuple[tuple[int, int | str], ...]]:
    return ({NODES_GROUP: 1, OUTSIDE_GROUP: 2}.get(group, 0), natural(group))


def _axis(ends: Sequence[End], max_axis: int) -> tuple[list[Entry], dict[str, int], str]:
    distinct = {e.key: e for e in ends}
    level = "class" if len(distinct) <= max_axis else "namespace"
    entries: dict[str, Entry] = {}
    for e in distinct.values():
        if level == "class":
            entries[e.key] = Entry(key=e.key, group=e.group, label=e.label, title=_title(e))
        else:
            entries.setdefault(e.group, Entry(key=e.group, group=e.group, label="", title=e.group))
    ordered = sorted(
        entries.values(), key=lambda x: (_group_order(x.group), natural(x.label), x.label)
    )
    index = {x.key: i for i, x in enumerate(ordered)}
    of_end = {k: index[k if level == "class" else e.group] for k, e in distinct.items()}
    return ordered, of_end, level


def _groups(entries: Sequence[Entry]) -> tuple[tuple[str, int], ...]:
    out: list[tuple[str, int]] = []
    for e in entries:
        if out and out[-1][0] == e.group:
            out[-1] = (e.group, out[-1][1] + 1)
        else:
            out.append((e.group, 1))
    return tuple(out)


def _merge(verdicts: Iterable[str | None]) -> str:
    seen = {v or "none" for v in verdicts}
    if len(seen) == 1:
        return seen.pop()
    return "mixed"


def _chip(label: str, rows: Sequence[Row]) -> Chip:
    status = worst(r.status for r in rows)
    target = next(r.id for r in rows if r.status == status)
    return Chip(
        label=label,
        before=_merge(r.before.verdict for r in rows),
        after=_merge(r.after.verdict for r in rows),
        status=status,
        count=len(rows),
        target=target,
    )


def _cell(rows: Sequence[Row], src: Entry, dst: Entry) -> Cell:
    by_port: dict[str, list[Row]] = {}
    for r in rows:
        by_port.setdefault(r.port_protocol, []).append(r)
    chips = sorted(
        (_chip(label, group) for label, group in by_port.items()),
        key=lambda c: (_RANK.get(c.status, 99), c.label),
    )
    status = chips[0].status
    lines = [f"{src.title} -> {dst.title}"]
    ordered = sorted(rows, key=lambda r: (_RANK.get(r.status, 99), r.port_protocol))
    for r in ordered[:MAX_TOOLTIP]:
        lines.append(
            f"{r.port_protocol} {r.kind}: {r.before.verdict or '-'} -> {r.after.verdict or '-'}"
            f" ({r.status})"
        )
    if len(ordered) > MAX_TOOLTIP:
        lines.append(f"... {len(ordered) - MAX_TOOLTIP} more")
    return Cell(
        chips=tuple(chips[:MAX_CHIPS]),
        more=max(0, len(chips) - MAX_CHIPS),
        status=status,
        count=len(rows),
        changed=sum(
            1 for r in rows if r.status not in ("same", "unrealized", "new", "missing", "not-run")
        ),
        tooltip="\n".join(lines),
        target=chips[0].target,
    )


def build_matrix(rows: Sequence[Row], *, max_axis: int = MAX_AXIS) -> Matrix:
    srcs, src_of, row_level = _axis([r.source for r in rows], max_axis)
    dsts, dst_of, col_level = _axis([r.destination for r in rows], max_axis)
    buckets: dict[tuple[int, int], list[Row]] = {}
    cell_of: dict[str, str] = {}
    for r in rows:
        ij = (src_of[r.source.key], dst_of[r.destination.key])
        buckets.setdefault(ij, []).append(r)
        cell_of[r.id] = f"{ij[0]}-{ij[1]}"
    cells = {ij: _cell(group, srcs[ij[0]], dsts[ij[1]]) for ij, group in buckets.items()}
    return Matrix(
        rows=tuple(srcs),
        cols=tuple(dsts),
        row_groups=_groups(srcs),
        col_groups=_groups(dsts),
        cells=cells,
        row_level=row_level,
        col_level=col_level,
        cell_of=cell_of,
    )
