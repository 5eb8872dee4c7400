"""Reading one YAML file that a user names, with errors that say which file and where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from netparity.errors import InputError


def read_yaml(path: str | Path, what: str) -> Any:
    """The file's single YAML document; `what` names it in errors ("the probe file")."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read {what} ({e.strerror})", source=str(p)) from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"malformed YAML{where}", source=str(p)) from e
