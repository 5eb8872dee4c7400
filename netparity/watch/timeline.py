"""A watch's timeline: per probe each verdict with its time, the windows derived from them,
and per node when its dataplane changed. Its JSON form is `timeline.json`
(docs/schemas/timeline.schema.json, docs/records.md). Pure: no I/O.

A window is a stretch of a probe's verdicts that neither dataplane predicts:
- a *disruption*: a probe that both the current and the target dataplane allow is denied;
- an *exposure*: a probe that both deny connects.
It starts at the first such verdict and ends at the next verdict that the predictions
give again (`open` while none came). Verdicts "not-placed" (a pod being recreated, its
node reimaged) and "error" neither start nor end a window. A probe whose prediction
changes has no window: either verdict is one a dataplane gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

TIMELINE_KIND = "netparity.timeline"
TIMELINE_VERSION = 1


class Seen(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    NOT_PLACED = "not-placed"
    ERROR = "error"


class WindowKind(StrEnum):
    DISRUPTION = "disruption"
    EXPOSURE = "exposure"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    time: float  # Unix seconds: when the round that saw it started
    verdict: Seen
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchedProbe:
    id: str
    title: str
    current: str  # the predicted decision on the current dataplane: allow | deny | unknown
    target: str
    nodes: tuple[str, ...] = ()  # the nodes its source and destination stand on
    why: str = ""  # why it is a sentinel
    samples: tuple[Sample, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeChange:
    node: str
    start: float  # its reimage began
    end: float | None  # it was back (None: still being reimaged)
    dataplane: str  # the dataplane it came back with


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    probe: str
    kind: WindowKind
    start: float
    end: float
    node: str | None
    open: bool = False  # no verdict ended it before the watch stopped

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    cluster: str
    current: str
    target: str
    start: float
    end: float
    interval: float
    probes: tuple[WatchedProbe, ...]
    nodes: tuple[NodeChange, ...] = ()
    enforced: float | None = None  # when the target dataplane began enforcing everywhere
    stopped: str = ""  # interrupted | stable | max-duration | error
    left_out: int = 0  # sentinels the cap left out
    max_sentinels: int = 0


def _kind(probe: WatchedProbe) -> WindowKind | None:
    if probe.current == probe.target == "allow":
        return WindowKind.DISRUPTION
    if probe.current == probe.target == "deny":
        return WindowKind.EXPOSURE
    return None


def _node(probe: WatchedProbe, at: float, nodes: Sequence[NodeChange]) -> str | None:
    """The probe's node whose reimage ended last before `at`, else its first node."""
    back = [n for n in nodes if n.node in probe.nodes and n.end is not None and n.end <= at]
    if back:
        return max(back, key=lambda n: n.end or 0.0).node
    return probe.nodes[0] if probe.nodes else None


def windows(timeline: Timeline) -> list[Window]:
    """Every window of every probe, by start time then probe id."""
    out: list[Window] = []
    for probe in timeline.probes:
        kind = _kind(probe)
        if kind is None:
            continue
        wrong = Seen.DENY if kind is WindowKind.DISRUPTION else Seen.ALLOW
        right = Seen.ALLOW if kind is WindowKind.DISRUPTION else Seen.DENY
        start: float | None = None
        last = 0.0
        for s in probe.samples:
            if s.verdict is wrong and start is None:
                start = s.time
            elif s.verdict is right and start is not None:
                out.append(
                    Window(
                        probe=probe.id,
                        kind=kind,
                        start=start,
                        end=s.time,
                        node=_node(probe, start, timeline.nodes),
                    )
                )
                start = None
            last = s.time
        if start is not None:
            end = max(last, timeline.end)
            out.append(
                Window(
                    probe=probe.id,
                    kind=kind,
                    start=start,
                    end=end,
                    node=_node(probe, start, timeline.nodes),
                    open=True,
                )
            )
    return sorted(out, key=lambda w: (w.start, w.probe))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def timeline_json(timeline: Timeline) -> dict[str, Any]:
    """The timeline.json document (docs/schemas/timeline.schema.json)."""
    return {
        "kind": TIMELINE_KIND,
        "schema_version": TIMELINE_VERSION,
        "cluster": timeline.cluster,
        "current": timeline.current,
        "target": timeline.target,
        "start": round(timeline.start, 3),
        "start_utc": _iso(timeline.start),
        "end": round(timeline.end, 3),
        "interval": timeline.interval,
        "stopped": timeline.stopped,
        "sentinels": {
            "count": len(timeline.probes),
            "left_out": timeline.left_out,
            "max": timeline.max_sentinels,
        },
        "enforced": None if timeline.enforced is None else round(timeline.enforced, 3),
        "nodes": [
            {
                "node": n.node,
                "start": round(n.start, 3),
                "end": None if n.end is None else round(n.end, 3),
                "dataplane": n.dataplane,
            }
            for n in timeline.nodes
        ],
        "windows": [
            {
                "probe": w.probe,
                "kind": str(w.kind),
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "seconds": round(w.seconds, 3),
                "node": w.node,
                "open": w.open,
            }
            for w in windows(timeline)
        ],
        "probes": [
            {
                "id": p.id,
                "title": p.title,
                "predicted": {"current": p.current, "target": p.target},
                "nodes": list(p.nodes),
                "why": p.why,
                "samples": [
                    {"time": round(s.time, 3), "verdict": str(s.verdict)}
                    | ({"detail": s.detail} if s.detail else {})
                    for s in p.samples
                ],
            }
            for p in timeline.probes
        ],
    }


def timeline_from_json(doc: Mapping[str, Any]) -> Timeline:
    """A timeline.json document back as a Timeline (for the reports)."""
    if doc.get("kind") != TIMELINE_KIND or doc.get("schema_version") != TIMELINE_VERSION:
        raise ValueError(
            f"not a timeline of version {TIMELINE_VERSION}: kind {doc.get('kind')!r}, "
            f"schema_version {doc.get('schema_version')!r}"
        )
    sentinels = doc.get("sentinels") or {}
    return Timeline(
        cluster=str(doc["cluster"]),
        current=str(doc["current"]),
        target=str(doc["target"]),
        start=float(doc["start"]),
        end=float(doc["end"]),
        interval=float(doc["interval"]),
        stopped=str(doc.get("stopped") or ""),
        enforced=None if doc.get("enforced") is None else float(doc["enforced"]),
        left_out=int(sentinels.get("left_out", 0)),
        max_sentinels=int(sentinels.get("max", 0)),
        nodes=tuple(
            NodeChange(
                node=str(n["node"]),
                start=float(n["start"]),
                end=None if n.get("end") is None else float(n["end"]),
                dataplane=str(n["dataplane"]),
            )
            for n in doc.get("nodes") or ()
        ),
        probes=tuple(
            WatchedProbe(
                id=str(p["id"]),
                title=str(p["title"]),
                current=str(p["predicted"]["current"]),
                target=str(p["predicted"]["target"]),
                nodes=tuple(str(n) for n in p.get("nodes") or ()),
                why=str(p.get("why") or ""),
                samples=tuple(
                    Sample(
                        time=float(s["time"]), verdict=Seen(s["verdict"]), detail=s.get("detail")
                    )
                    for s in p.get("samples") or ()
                ),
            )
            for p in doc.get("probes") or ()
        ),
    )
