"""Where results go, checked before any work starts: a folder that exists or can be made,
and that this process can write into.

A run that probes a production cluster for minutes and then cannot write its record has
lost its evidence; so every command that writes results checks its folder first. The check
writes nothing: a run that stops early (a usage error, `--collect-only`) leaves no folder."""

from __future__ import annotations

import os
from pathlib import Path

from netparity.errors import InputError


def check_output_dir(path: Path, what: str) -> None:
    """Raise InputError naming the folder and the reason unless `path` is a folder this
    process can write into, or can be made inside the nearest existing folder above it."""
    path = Path(os.path.abspath(path))
    for p in (path, *path.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            raise InputError(
                f"{what} cannot be written: {p} is a file, not a folder", source=str(path)
            )
        if not os.access(p, os.W_OK | os.X_OK):
            why = "read-only file system" if _read_only(p) else "permission denied"
            raise InputError(f"{what} cannot be written: {p}: {why}", source=str(path))
        return


def _read_only(p: Path) -> bool:
    try:
        return bool(os.statvfs(p).f_flag & os.ST_RDONLY)
    except OSError:
        return False
