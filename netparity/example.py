"""The shipped example cluster (examples/aks-migration.yaml): the package data
`netparity/examples/` of an installed netparity, or the repository's examples/ folder in a
checkout. Only the demo, `--cluster lab` and `netparity lab up` use it by default, and they
say so; `lint`, `predict`, `explain` and `plan` never fall back to it."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from netparity.errors import InputError

EXAMPLE_NAME = "aks-migration.yaml"


def example_path() -> Path:
    """The example's file on disk (a wheel installs package data as plain files)."""
    checkout = Path(__file__).resolve().parents[1] / "examples" / EXAMPLE_NAME
    if checkout.is_file():
        return checkout
    try:
        packaged = Path(str(importlib.resources.files("netparity.examples").joinpath(EXAMPLE_NAME)))
    except ModuleNotFoundError:
        packaged = checkout
    if not packaged.is_file():
        raise InputError(f"the shipped example is missing: expected it at {packaged}")
    return packaged


def suites_path() -> Path:
    """The suites users run (suites/): the package data `netparity/suites/` of an installed
    netparity, or the repository's suites/ folder in a checkout."""
    checkout = Path(__file__).resolve().parents[1] / "suites"
    if checkout.is_dir():
        return checkout
    try:
        return Path(str(importlib.resources.files("netparity.suites")))
    except ModuleNotFoundError:
        return checkout
