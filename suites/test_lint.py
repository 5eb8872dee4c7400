"""Pre-migration lint: one item per finding, reported as an expected failure (xfail).

A finding is a known migration risk (one of the guide's scenarios present in the
cluster); `-rx` lists each with its remediation.
"""

from __future__ import annotations

from netparity.plugin import Case


def test_lint(netparity_finding: Case) -> None:
    netparity_finding.check()
