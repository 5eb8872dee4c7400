"""The parity report: parity.html and parity.md from a record or a parity.json."""

from netparity.report.write import write_report, write_reports

__all__ = ["write_report", "write_reports"]
