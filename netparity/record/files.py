"""Record files: where they go (one folder per cluster) and how they are written
(temporary file, fsync, rename) and read."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from netparity.errors import RecordError
from netparity.record.jsonio import record_from_json, record_json
from netparity.record.model import Record


def cluster_dirname(cluster: str) -> str:
    """A cluster name as a folder name: `lab:demo` -> `lab-demo`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", cluster).strip("-.")
    return name or "cluster"


def default_baseline(report_dir: Path, cluster: str) -> Path:
    return report_dir / cluster_dirname(cluster) / "baseline.json"


def record_path(report_dir: Path, cluster: str, phase: str, time: str) -> Path:
    stamp = time.replace("-", "").replace(":", "")
    folder = report_dir / cluster_dirname(cluster)
    path = folder / f"record-{phase}-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"record-{phase}-{stamp}-{n}.json"
    return path


def write_json_atomic(path: Path, data: Any, *, overwrite: bool = True) -> None:
    """Write JSON to a temporary file beside `path`, fsync it, then rename it into place.

    With overwrite=False an existing file is never replaced (the rename is a hard link,
    which fails if the name exists), so two runs cannot both think they wrote it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise RecordError(
                    f"{path} already exists; it is never overwritten silently"
                ) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_record(record: Record, path: Path, *, overwrite: bool = False) -> None:
    write_json_atomic(path, record_json(record), overwrite=overwrite)


def load_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(f"{path}: no such {what}") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot read the {what} ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise RecordError(
            f"{path}: the {what} is not UTF-8 text (byte offset {e.start}): not a netparity file"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def load_record(path: str | Path) -> Record:
    p = Path(path)
    return record_from_json(load_json(p, "record"), str(p))
