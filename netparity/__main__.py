"""`python -m netparity` runs the command line."""

from netparity.cli import entry

entry()
