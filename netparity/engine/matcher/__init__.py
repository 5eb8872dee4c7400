"""Compiled matchers: a policy's peers and ports, compiled once, judged per leg.

Named as in policy-assistant's matcher package (kubernetes-sigs/network-policy-api):
a rule holds a PeerMatcher (leg.py's `Leg.peer` against from/to) and a PortMatcher (the
leg's port and protocol against ports); Cilium rules add entity/endpoint/CIDR L3 matchers
(cilium.py). Matchers read the dataplane's knobs and the engine's label and address views
(`Lookup`), never a dataplane's name.
"""

from netparity.engine.matcher.cilium import CiliumRuleMatcher, compile_cilium_rule
from netparity.engine.matcher.leg import Leg, Lookup
from netparity.engine.matcher.peer import PeerMatcher, compile_peers
from netparity.engine.matcher.port import PortMatcher, compile_cilium_ports, compile_np_ports

__all__ = [
    "CiliumRuleMatcher",
    "Leg",
    "Lookup",
    "PeerMatcher",
    "PortMatcher",
    "compile_cilium_ports",
    "compile_cilium_rule",
    "compile_np_ports",
    "compile_peers",
]
