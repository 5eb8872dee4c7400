"""The suites users run: `pytest suites/ --cluster NAME` (a package, so their module names
never clash with other test folders, e.g. netparity's own tests/test_lint.py)."""
