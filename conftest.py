"""Registers the netparity pytest plugin for `pytest suites/` run from this folder."""

pytest_plugins = ["netparity.plugin"]
