"""`pytest suites/ --cluster NAME --phase during`: the watch as a run of the suites, for
pipelines that run a step beside the upgrade.

`DuringRun` is a `Run` whose plan is the watch's sentinel set (one connectivity item per
sentinel, titled as the probe) and whose probing is the watch itself (`Watch.loop`: every
`--interval` seconds until `--until-stable`, `--max-duration` or an interrupt), writing
`timeline.json` into the cluster's report folder like `netparity watch`. Each item then
reads the timeline: it fails where the probe had a disruption or exposure window, unless
the accept file (`--accept`, the gate's: `{id, reason}`) lists the probe; it is skipped
where the probe was never placed; else it passes. No baseline or parity is written (the
pre run's baseline is read, when it exists, to choose the sentinels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from netparity.errors import NetparityError
from netparity.run.core import Run, _keyed
from netparity.run.phase import show_path
from netparity.verdicts import ItemVerdict
from netparity.watch.run import Watch, WatchSettings
from netparity.watch.timeline import Seen, Window, windows

if TYPE_CHECKING:
    from netparity.accept import Acceptance
    from netparity.backend import Progress
    from netparity.watch.timeline import Timeline, WatchedProbe

PHASE = "during"


@dataclass(slots=True, kw_only=True)
class DuringRun(Run):
    """The suites' run for `--phase during` (module doc)."""

    watch: Watch | None = None
    say: Callable[[str], None] | None = None  # progress lines (the terminal)

    def make_plan(self) -> None:
        settings = self.settings
        self.phase = PHASE
        say = self.say
        self.watch = watch = Watch(
            WatchSettings(
                cluster=settings.cluster.text,
                interval=settings.interval,
                until_stable=settings.until_stable,
                max_duration=settings.kube.max_duration,
                report_dir=settings.report_dir,
                baseline=settings.baseline,
                probes=settings.probes,
                max_sentinels=settings.max_sentinels,
                target=settings.target,
                probe_timeout=settings.probe_timeout,
                probe_image=settings.kube.probe_image,
                settle=settings.kube.settle,
            ),
            say=say,
        )
        watch.prepare()
        self.cluster = watch.cluster
        stop = (
            "until the target dataplane enforces and every sentinel is at its prediction "
            "(--until-stable)"
            if settings.until_stable
            else "until --max-duration or an interrupt"
        )
        limit = f", {watch.limit:g} s at most" if watch.limit is not None else ""
        self.view.header.append(f"phase: during (--phase during): a watch {stop}{limit}")
        self.view.header.extend(watch.header)
        self.view.header.append(f"timeline: {show_path(watch.out)}")
        self.view.items["connectivity"] = _keyed(
            [(w.probe.id, w.probe.title) for w in watch.watched]
        )
        self.view.items["explicit"] = []
        self.view.items["lint"] = []

    def probe_and_judge(self, progress: Progress | None = None) -> None:
        if self.view.verdicts is not None or self.view.failure is not None:
            return
        watch = self.watch
        assert watch is not None
        try:
            watch.loop()
        except NetparityError as e:
            self._fail(f"the watch failed: {e}")
            return
        finally:
            if watch.timeline is not None:
                self.written.append(f"timeline: {show_path(watch.out)}")
        assert watch.timeline is not None
        self.view.verdicts = judge_during(watch.timeline, self.accepts)

    def write(self) -> None:
        """Nothing more: the watch wrote timeline.json after every round."""

    def close(self) -> None:
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.close()
        Run.close(self)


def _at(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def _window_line(w: Window) -> str:
    where = f" on node {w.node}" if w.node else ""
    still = " (still open when the watch stopped)" if w.open else ""
    return f"  {w.kind} from {_at(w.start)} UTC for {w.seconds:.1f} s{where}{still}"


def judge_during(timeline: Timeline, accepts: Mapping[str, Acceptance]) -> dict[str, ItemVerdict]:
    """Each sentinel's verdict from the timeline (module doc); `accepts`: id -> Acceptance."""
    found: dict[str, list[Window]] = {}
    for w in windows(timeline):
        found.setdefault(w.probe, []).append(w)
    out: dict[str, ItemVerdict] = {}
    for p in timeline.probes:
        out[p.id] = _verdict(p, found.get(p.id, []), accepts)
    return out


def _verdict(
    p: WatchedProbe, wins: Sequence[Window], accepts: Mapping[str, Acceptance]
) -> ItemVerdict:
    props = (
        ("netparity.probe_id", p.id),
        ("netparity.phase", PHASE),
        ("netparity.windows", str(len(wins))),
    )
    counts = {v: sum(1 for s in p.samples if s.verdict is v) for v in Seen}
    seen = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    predicted = f"predicted {p.current} before and {p.target} after; seen: {seen or 'nothing'}"
    accepted = accepts.get(p.id)
    if wins:
        lines = [f"{len(wins)} window(s) during the migration ({predicted}):"]
        lines.extend(_window_line(w) for w in wins)
        if accepted is not None:
            lines.append(f"accepted: {accepted.reason}")
            return ItemVerdict(outcome="passed", message="\n".join(lines), properties=props)
        return ItemVerdict(outcome="failed", message="\n".join(lines), properties=props)
    placed = counts[Seen.ALLOW] + counts[Seen.DENY]
    if not placed:
        last = next((s.detail for s in reversed(p.samples) if s.detail), None)
        why = f": {last}" if last else ""
        return ItemVerdict(
            outcome="skipped",
            message=f"never placed during the watch ({len(p.samples)} rounds){why}",
            properties=props,
        )
    return ItemVerdict(outcome="passed", message=f"no window ({predicted})", properties=props)
