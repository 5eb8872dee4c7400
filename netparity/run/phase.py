"""Which phase a run is in (pre, post or check), from --phase and the cluster's baseline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netparity.backend import ClusterFacts
from netparity.errors import NetparityError, RecordError
from netparity.record import Record, default_baseline, load_record
from netparity.run.settings import Settings


class RunRefused(NetparityError):
    """The run cannot go on as asked (the plugin reports it as a usage error)."""


def show_path(path: Path | None) -> str:
    """A path as the user would type it: relative to the current folder where it is inside."""
    if path is None:
        return "-"
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """The chosen phase, the baseline it reads or writes, and the header line saying why."""

    name: str  # pre | post | check (pre-style checks, the baseline kept)
    baseline_path: Path
    baseline: Record | None
    header: str


def _load(settings: Settings, path: Path, cluster: str) -> Record | None:
    base = None
    if path.is_file():
        try:
            base = load_record(path)
        except RecordError:
            if not (settings.phase == "pre" and settings.force):
                raise
    if base is not None and base.cluster != cluster:
        raise RunRefused(
            f"the baseline {show_path(path)} belongs to cluster {base.cluster!r}, not "
            f"{cluster!r}; give this cluster's baseline with --baseline"
        )
    return base


def choose_phase(settings: Settings, cluster: str, facts: ClusterFacts) -> Phase:
    """pre | post | check, with the baseline; raises RunRefused where the phase cannot run."""
    path = settings.baseline or default_baseline(settings.report_dir, cluster)
    exists = path.is_file()
    base = _load(settings, path, cluster)

    def phase(name: str, header: str) -> Phase:
        return Phase(name=name, baseline_path=path, baseline=base, header=header)

    if settings.phase == "pre":
        if exists and not settings.force:
            when = f" (recorded {base.time} on {base.dataplane})" if base is not None else ""
            raise RunRefused(
                f"the baseline {show_path(path)} already exists{when}; --phase post compares "
                "with it, --phase pre --force replaces it"
            )
        force = " --force: the baseline is replaced" if exists else ""
        return phase("pre", f"phase: pre (--phase pre{force})")
    if settings.phase == "post":
        if base is None:
            raise RunRefused(
                f"--phase post needs a baseline, and there is none at {show_path(path)}; "
                "record it with --phase pre before the upgrade"
            )
        same = " (the dataplane did not change)" if base.dataplane == facts.dataplane else ""
        return phase(
            "post",
            f"phase: post (--phase post): compared with the baseline of {base.time} "
            f"on {base.dataplane}{same}",
        )
    if base is None:
        return phase(
            "pre", "phase: pre (auto: this cluster has no baseline yet; this run records it)"
        )
    if base.dataplane != facts.dataplane:
        return phase(
            "post",
            f"phase: post (auto: the baseline of {base.time} was recorded on {base.dataplane}, "
            f"the cluster now runs {facts.dataplane})",
        )
    return phase(
        "check",
        f"phase: check (auto: the baseline of {base.time} was recorded on {base.dataplane} and "
        f"the cluster still runs {facts.dataplane}: probes are checked against the "
        "predictions like pre, the baseline is kept; --phase pre --force replaces it)",
    )
