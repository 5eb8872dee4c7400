"""What the lint's two targets share (`netparity lint` without `--target`: the newest
release, and the older one for the "under cilium-1.16 also" note).

Two targets that differ only in what the enumerator never reads (an older release's
endPort handling) are judged on the same connections (`same_enumeration`). Their
verdicts differ only where a connection's port falls inside an endPort range past its
first port (engine/matcher/port.py `_number_matches`: the older release matches the first
port alone and notes the range); elsewhere the older release's verdict has the target's
decisions, so where the target agrees with npm the older release does too
(`EndPortRanges.cannot_reach`).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable
from typing import Protocol as TypingProtocol

from netparity.engine.dataplane import Dataplane
from netparity.engine.traffic import ServiceEndpoint, Traffic, Verdict
from netparity.lint.findings import Probe
from netparity.model.objects import Service
from netparity.model.snapshot import Snapshot

# Dataplane fields the enumerator (plan/class_index.py, plan/governed*.py) never reads:
# two targets that differ only in these are judged on the same connections.
_ENUMERATION_BLIND = frozenset({"name", "description", "end_port", "end_port_uncertain"})
# ... and those of them a verdict's decisions can depend on: endPort alone (kept apart:
# a field added to the set above must not quietly widen what `Needless` skips)
_END_PORT_ONLY = frozenset({"name", "description", "end_port", "end_port_uncertain"})


def same_enumeration(a: Dataplane, b: Dataplane) -> bool:
    """Whether the lint's connections under (npm, a) and (npm, b) are the same."""
    return _same_but(a, b, _ENUMERATION_BLIND)


def _same_but(a: Dataplane, b: Dataplane, blind: frozenset[str]) -> bool:
    return all(
        getattr(a, f.name) == getattr(b, f.name)
        for f in dataclasses.fields(Dataplane)
        if f.name not in blind
    )


class EndPortRanges:
    """The ports some policy's endPort range holds past its first port: (port, endPort]."""

    def __init__(self, snapshot: Snapshot) -> None:
        spans = sorted(set(_spans((*snapshot.network_policies, *snapshot.cilium_policies))))
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:  # lo exclusive, hi inclusive
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self._lows = [lo for lo, _ in merged]
        self._spans = merged

    def holds(self, port: int | str | None) -> bool:
        if not isinstance(port, int) or not self._spans:
            return False
        i = bisect.bisect_left(self._lows, port) - 1  # the last span with lo < port
        return i >= 0 and port <= self._spans[i][1]


class Needless:
    """Whether judging a connection under the older release (`old`) can be left out: the
    target agreed with npm on it, and `old` decides as the target does there (it differs
    in endPort handling at most, and no endPort range holds a port the connection is
    judged on: its own, the resolved one (a named port's number) and, through a Service,
    which alone translates ports (engine/paths.py), every port, nodePort and targetPort
    of the Service, a named one as any pod numbers it)."""

    def __init__(self, snapshot: Snapshot, target: Dataplane, old: Dataplane) -> None:
        self._ranges = EndPortRanges(snapshot)
        named: dict[str, set[int]] = {}
        for pod in snapshot.pods:  # host-network pods too (the engine's map leaves them out)
            for cp in pod.ports:
                if cp.name:
                    named.setdefault(cp.name, set()).add(cp.port)
        self._named = named
        self._alike = _same_but(target, old, _END_PORT_ONLY)
        self._target_name = target.name
        self._clear: dict[str, bool] = {}  # per Service: no port of it in a range

    def __call__(self, probe: Probe, vt: Verdict | None) -> bool:
        """`vt`: the target's verdict where it agreed with npm, else None."""
        return vt is not None and self.decides_alike(probe.traffic, vt)

    def same_verdict(self, traffic: Traffic, vt: Verdict) -> bool:
        """Whether `old`'s verdict on `traffic` is the target's `vt` itself: the same
        decisions (`decides_alike`), and no text of `vt` names the target (the engine
        writes a dataplane's name into a few reasons: D24's SCTP note, skipped or ignored
        policies), so nothing in it could read otherwise under `old`. The endPort note
        (D1) is written only for a port past a range's first, which `decides_alike`
        rules out."""
        if not self.decides_alike(traffic, vt):
            return False
        name = self._target_name
        texts = [*vt.notes, *vt.uncertain]
        texts.extend(side.why for side in (vt.egress, vt.ingress) if side is not None)
        return not any(name in text for text in texts)

    def decides_alike(self, traffic: Traffic, vt: Verdict) -> bool:
        """Whether `old`'s verdict on `traffic` has the decisions of the target's (`vt`)."""
        if not self._alike:
            return False
        holds = self._ranges.holds
        if holds(traffic.port) or holds(vt.port):
            return False
        dst = traffic.destination
        if not isinstance(dst, ServiceEndpoint):
            return True  # a pod, a node, an address: judged on the port or the named one
        svc = dst.service
        clear = self._clear.get(svc.key)
        if clear is None:
            clear = self._clear[svc.key] = not self._translates_into_range(svc)
        return clear

    def _translates_into_range(self, svc: Service) -> bool:
        """Whether a port of the Service, its nodePort or its targetPort (a named one as
        any pod numbers it) is held by an endPort range."""
        holds, named = self._ranges.holds, self._named
        for sp in svc.ports:
            if holds(sp.port) or holds(sp.node_port):
                return True
            if isinstance(sp.target_port, int):
                if holds(sp.target_port):
                    return True
            elif any(holds(n) for n in named.get(sp.target_port, ())):
                return True
        return False


def _spans(objects: Iterable[object]) -> Iterable[tuple[int, int]]:
    """(port, endPort) of every ports entry with a numeric range, anywhere in `objects`
    (NetworkPolicy and Cilium ports alike: a walk of their dataclasses)."""
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if isinstance(obj, (str, int, float, bool)) or obj is None:
            continue
        if isinstance(obj, (tuple, list, frozenset, set)):
            stack.extend(obj)
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
            continue
        if not dataclasses.is_dataclass(obj):
            continue
        port, end = getattr(obj, "port", None), getattr(obj, "end_port", None)
        if isinstance(port, int) and isinstance(end, int) and end > port:
            yield port, end
        stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))


class _Observer(TypingProtocol):
    last: Verdict | None  # the target's verdict on the connection it observed last


def same(needless: Needless | None, probe: Probe, linter: _Observer) -> bool:
    """Whether the target's verdict on the probe `linter` just observed is the older
    release's verdict too (`Needless.same_verdict`)."""
    vt = linter.last
    return bool(needless and vt and needless.same_verdict(probe.traffic, vt))
