"""netparity: prove NetworkPolicy parity when a cluster moves from Azure NPM to Cilium."""

__version__ = "0.1.0"
