"""When each node's dataplane changed, from what a watch sees of the nodes every round.

Each round the watch reports every node it sees: Ready or not, cordoned or not, and the
dataplane whose agent runs there (`npm`, a Cilium profile, or `none`). A node is *steady*
when it is Ready, schedulable and runs an agent; otherwise it is being reimaged. A change
starts when a steady node stops being steady (or a node appears that is not), and ends
when it is steady again, with the dataplane it came back with; a steady node whose agent
changed between two rounds changed at that round. A node that leaves the cluster ends its
change with dataplane `removed` (AKS may bring it back under a new name: that is a node
that appears). Nodes not steady when the watch starts change from the watch's start.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from netparity.watch.timeline import NodeChange

NO_AGENT = "none"
REMOVED = "removed"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSeen:
    name: str
    ready: bool
    cordoned: bool = False
    dataplane: str = NO_AGENT  # npm, a Cilium profile, or none

    @property
    def steady(self) -> bool:
        return self.ready and not self.cordoned and self.dataplane != NO_AGENT


def family(dataplane: str) -> str:
    """`cilium-1.16` -> `cilium`: what a node's agent says of the dataplane."""
    return dataplane.split("-", 1)[0]


@dataclass(slots=True)
class NodeTracker:
    """The nodes' changes so far (module doc); `update` once a round."""

    last: dict[str, NodeSeen] = field(default_factory=dict)
    opened: dict[str, float] = field(default_factory=dict)  # node -> its change's start
    closed: list[NodeChange] = field(default_factory=list)
    rounds: int = 0

    def update(self, seen: Mapping[str, NodeSeen], at: float) -> None:
        first = self.rounds == 0
        self.rounds += 1
        for name, now in sorted(seen.items()):
            before = self.last.get(name)
            if name in self.opened:
                if now.steady:
                    self._close(name, at, now.dataplane)
            elif not now.steady:
                self.opened[name] = at
            elif (before is None and not first) or (
                before is not None and before.dataplane != now.dataplane
            ):
                self.closed.append(NodeChange(node=name, start=at, end=at, dataplane=now.dataplane))
        for name in sorted(set(self.last) - set(seen)):
            if name in self.opened:
                self._close(name, at, REMOVED)
            else:
                self.closed.append(NodeChange(node=name, start=at, end=at, dataplane=REMOVED))
        self.last = dict(seen)

    def _close(self, name: str, at: float, dataplane: str) -> None:
        start = self.opened.pop(name)
        self.closed.append(NodeChange(node=name, start=start, end=at, dataplane=dataplane))

    def busy(self) -> set[str]:
        """The nodes seen last round that are not steady."""
        return {n for n, s in self.last.items() if not s.steady}

    def enforcing(self, target: str) -> bool:
        """Every node seen last round is steady on the target's dataplane (family)."""
        return bool(self.last) and all(
            s.steady and family(s.dataplane) == family(target) for s in self.last.values()
        )

    def changes(self) -> tuple[NodeChange, ...]:
        """Every change so far, the open ones last (end None), by start then node."""
        out = [
            *self.closed,
            *(
                NodeChange(node=n, start=t, end=None, dataplane=NO_AGENT)
                for n, t in self.opened.items()
            ),
        ]
        return tuple(sorted(out, key=lambda c: (c.start, c.node, c.end is None)))
