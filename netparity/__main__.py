"""`python -m netparity` runs the command line."""

import sys

from netparity.cli import main

sys.exit(main())
