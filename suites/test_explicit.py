"""Explicit probes: one item per probe of the files given with `--probes FILE`.

An `expect` in the file wins over the engine's prediction: before the upgrade the
observation must match it (or, without one, the prediction); after it the probe must keep
its baseline verdict unless the file expects the change.
"""

from __future__ import annotations

from netparity.plugin import Case


def test_explicit(netparity_explicit: Case) -> None:
    netparity_explicit.check()
