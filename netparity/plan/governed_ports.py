"""Which ports to try for a rule's connection: the rule's ports (range edges, named-port
numbers), or for a rule without ports the destination's declared ports, a node's
hostNetwork ports and the kubelet's, or 443 outside."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netparity.engine.compile import INGRESS, NPRule
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Endpoint
from netparity.model.objects import Node, Pod, Protocol
from netparity.model.quick import quick_init
from netparity.plan.classes import PodClass

KUBELET_PORT = 10250
EXTERNAL_PORT = 443
DEFAULT_PORT = {Protocol.TCP: 80, Protocol.UDP: 53, Protocol.SCTP: 9999}
MAX_PORTS = 4  # container ports taken from one pod for a rule without ports
MAX_EXTRA_PORTS = 6  # rule ports added to the node / outside probes
MAX_NODE_PORTS = 4  # ports probed on the own node and on the default outside client
MAX_NAMED_NUMBERS = 4  # cluster-wide numbers of one port name tried on non-pod peers

PortList = list[tuple[int, Protocol]]


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    """A representative other end and what it stands for."""

    endpoint: Endpoint
    desc: str
    pod: Pod | None = None
    node: Node | None = None
    spare: Pod | None = None  # another pod it stands for (when `pod` is the subject itself)


class PortChoice:
    """The port choices; needs the engine (cluster-wide named ports) and the nodes'
    hostNetwork ports."""

    engine: Engine
    hostnet_ports: dict[str, PortList]

    def _ports(self, rule: NPRule, direction: str, s: Pod, peer: Peer) -> PortList:
        dest_pod = s if direction == INGRESS else peer.pod
        if not rule.ports:
            return self._default_ports(direction, dest_pod, peer)
        out: PortList = []
        for pp in rule.ports:
            proto = pp.protocol
            if pp.port is None:
                out.append((self._default_port(proto, dest_pod, peer), proto))
            elif isinstance(pp.port, int):
                if pp.end_port is None:
                    out.append((pp.port, proto))
                else:
                    lo, hi = pp.port, pp.end_port
                    out.extend(
                        (p, proto) for p in sorted({lo, min(lo + 1, hi), (lo + hi) // 2, hi})
                    )
            elif direction == INGRESS:
                cp = s.named_port(pp.port, proto)
                if cp is not None:
                    out.append((cp.port, proto))
            else:
                cp = peer.pod.named_port(pp.port, proto) if peer.pod is not None else None
                if cp is not None:
                    out.append((cp.port, proto))
                else:
                    numbers = sorted(
                        n
                        for n, pr in self.engine.named_ports.get(pp.port, frozenset())
                        if pr is proto
                    )
                    out.extend((n, proto) for n in numbers[:MAX_NAMED_NUMBERS])
        return unique(out)

    def _default_ports(self, direction: str, dest_pod: Pod | None, peer: Peer) -> PortList:
        if dest_pod is not None:
            return [(cp.port, cp.protocol) for cp in dest_pod.ports[:MAX_PORTS]] or [
                (80, Protocol.TCP)
            ]
        if peer.node is not None:
            return unique(
                [*self.hostnet_ports.get(peer.node.name, [])[:2], (KUBELET_PORT, Protocol.TCP)]
            )
        return [(EXTERNAL_PORT, Protocol.TCP)]

    def _default_port(self, proto: Protocol, dest_pod: Pod | None, peer: Peer) -> int:
        if dest_pod is not None:
            for cp in dest_pod.ports:
                if cp.protocol is proto:
                    return cp.port
        if peer.node is not None:
            for port, pr in self.hostnet_ports.get(peer.node.name, []):
                if pr is proto:
                    return port
        return DEFAULT_PORT[proto]


def unique(ports: Iterable[tuple[int, Protocol]]) -> PortList:
    out: PortList = []
    for p in ports:
        if p not in out:
            out.append(p)
    return out


class PortNameIndex:
    """The classes whose representative has a port of a given name, in class order (issue
    19: a rule without peers on named ports read every class once per subject namespace)."""

    def __init__(self, classes: Sequence[PodClass]) -> None:
        self._classes = classes
        self._by_name: dict[str, list[int]] = {}
        self._numbers: dict[tuple[str, Protocol], dict[str, int]] = {}
        for i, c in enumerate(classes):
            for name in dict.fromkeys(cp.name for cp in c.rep.ports if cp.name):
                self._by_name.setdefault(name, []).append(i)

    def numbers(self, name: str, protocol: Protocol) -> dict[str, int]:
        """Per class name, the number its representative gives the port `name`/`protocol`
        (`Pod.named_port`; a class missing has none), worked out once per name."""
        key = (name, protocol)
        out = self._numbers.get(key)
        if out is None:
            out = {}
            for i in self._by_name.get(name, ()):
                cp = self._classes[i].rep.named_port(name, protocol)
                if cp is not None:
                    out[self._classes[i].name] = cp.port
            self._numbers[key] = out
        return out

    def naming(self, names: Iterable[str]) -> list[PodClass]:
        """The classes with a port named any of `names`, in class order."""
        hits: set[int] = set()
        for name in names:
            hits.update(self._by_name.get(name, ()))
        return [self._classes[i] for i in sorted(hits)]
