"""Helpers the subcommands share: default inputs, tables, JSON output."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netparity.model.snapshot import Snapshot, load_snapshot

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXAMPLE = REPO_ROOT / "examples" / "aks-migration.yaml"


def snapshot_from_args(paths: Sequence[str]) -> Snapshot:
    return load_snapshot(list(paths) if paths else [str(DEFAULT_EXAMPLE)])


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, wrap_last: bool = True) -> str:
    """A plain-text table; the last column wraps to the terminal's width."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[:-1] if wrap_last else row):
            widths[i] = max(widths[i], len(cell))
    term = shutil.get_terminal_size((160, 24)).columns
    lines = []
    fixed = sum(widths[:-1]) + 2 * (len(headers) - 1)
    last_width = max(30, term - fixed) if wrap_last else widths[-1]

    def render(row: Sequence[str]) -> list[str]:
        head = "  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:-1]))
        text = row[-1]
        chunks = textwrap.wrap(text, last_width, break_on_hyphens=False) or [""]
        out = [f"{head}  {chunks[0]}".rstrip()]
        out += [" " * (fixed + 2) + c for c in chunks[1:]]
        return out

    lines.extend(render(headers))
    lines.append(
        "  ".join("-" * w for w in widths[:-1])
        + "  "
        + "-" * min(last_width, max(len(headers[-1]), 10))
    )
    for row in rows:
        lines.extend(render(row))
    return "\n".join(lines)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
