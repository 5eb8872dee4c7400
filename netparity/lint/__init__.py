"""The pre-migration lint: findings derived from the engine, checked fixes, report formats."""

from netparity.lint.findings import Change, ChangedTraffic, Finding, Fix, LintReport, PodGroup
from netparity.lint.lint import lint_snapshot

__all__ = ["Change", "ChangedTraffic", "Finding", "Fix", "LintReport", "PodGroup", "lint_snapshot"]
