"""Connectivity: one item per planned probe (`pytest suites/ --cluster NAME`).

Before the upgrade an item passes where the observation agrees with the engine's
prediction for the cluster's dataplane; after it, where the probe kept its baseline verdict
(or the change is accepted). Probing happened once, before the first item; each item
only asserts on its stored result.
"""

from __future__ import annotations

from netparity.plugin import Case


def test_connectivity(netparity_probe: Case) -> None:
    netparity_probe.check()
