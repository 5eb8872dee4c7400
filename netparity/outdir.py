"""Where results go, checked before any work starts: a folder that exists or can be made,
and that this process can write into.

A run that probes a production cluster for minutes and then cannot write its record has
lost its evidence; so every command that writes results checks its folder first."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from netparity.errors import InputError


def check_output_dir(path: Path, what: str) -> None:
    """Make `path` (and its parents) and prove it writable with a temporary file; raise
    InputError naming the folder and the reason otherwise. Nothing is left behind, apart from
    the folders made (where the results are about to go anyway)."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise InputError(
                    f"{what} cannot be written: {p} is a file, not a folder", source=str(path)
                )
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".netparity-write-check-", dir=path)
    except OSError as e:
        raise InputError(
            f"{what} cannot be written ({e.strerror or e})", source=str(path)
        ) from None
    os.close(fd)
    os.unlink(probe)
