"""Per scenario of the guide: was it probed on this cluster, or only predicted, and why not.

A green gate must never hide a scenario nobody looked at. This is derived from a run's
probes alone (each probe's scenarios, and the backend's reason where it could not run
it: `Record.not_run`, docs/records.md schema 2), never from a backend's options, so it is
true for every backend: the lab, a snapshot file, a real cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netparity.plan.model import GUIDE_SCENARIOS, Scenario

# Short causes for the reasons backends give, most specific first: (pattern, cause).
_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"--allow-load-balancer"), "no --allow-load-balancer"),
    (re.compile(r"--allow-host-network|hostNetwork probe pod"), "no --allow-host-network"),
    (
        re.compile(r"got no answer at all from"),
        "NodePorts and node addresses unreachable from the runner",
    ),
    (re.compile(r"documentation address"), "a documentation address is never routed"),
)
MAX_CAUSE = 100  # characters of a reason no cause names


def cause_of(reason: str) -> str:
    """A not-run reason in a few words: the option or condition that would change it."""
    for pattern, cause in _CAUSES:
        if pattern.search(reason):
            return cause
    text = " ".join(reason.split())
    return text if len(text) <= MAX_CAUSE else text[: MAX_CAUSE - 1] + "…"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioProbing:
    scenario: str
    guide: bool  # one of the guide's scenarios (always listed, also when absent)
    planned: int  # probes of this run that reveal it
    probed: int  # ... that this run observed on the cluster
    causes: tuple[tuple[str, int], ...] = ()  # why the others were not run, and how many

    @property
    def state(self) -> str:
        """probed | partly probed | only predicted | not present."""
        if not self.planned:
            return "not present"
        if self.probed == self.planned:
            return "probed"
        return "partly probed" if self.probed else "only predicted"

    def why(self) -> str:
        """Why not (all of it), in words; "" when every probe ran."""
        if not self.planned:
            return "no probe of the plan reveals it: not present in this cluster"
        return "; ".join(f"{c} ({n})" for c, n in self.causes)

    def line(self) -> str:
        """One terminal line."""
        if not self.planned:
            return f"{self.scenario}: not present in this cluster (no probe of the plan)"
        head = f"{self.scenario}: {self.state}, {self.probed} of {self.planned} probes run"
        return f"{head}; not run: {self.why()}" if self.causes else head


def scenario_probing(items: Iterable[tuple[Sequence[str], str | None]]) -> list[ScenarioProbing]:
    """One entry per guide scenario (in the guide's order) and per other scenario a probe
    reveals. `items`: each probe of the run as (its scenarios, why it was not run or None)."""
    planned: dict[str, int] = {}
    probed: dict[str, int] = {}
    causes: dict[str, dict[str, int]] = {}
    for scenarios, reason in items:
        for s in dict.fromkeys(scenarios):
            planned[s] = planned.get(s, 0) + 1
            if reason is None:
                probed[s] = probed.get(s, 0) + 1
            else:
                by = causes.setdefault(s, {})
                c = cause_of(reason)
                by[c] = by.get(c, 0) + 1
    order = [str(s) for s in GUIDE_SCENARIOS]
    # the essential flows (DNS, the API server) next: a cut there breaks every pod at once
    order += [str(Scenario.ESSENTIAL)] if str(Scenario.ESSENTIAL) in planned else []
    order += [str(s) for s in Scenario if str(s) in planned and str(s) not in order]
    order += sorted(s for s in planned if s not in order)
    guide = {str(s) for s in GUIDE_SCENARIOS}
    return [
        ScenarioProbing(
            scenario=s,
            guide=s in guide,
            planned=planned.get(s, 0),
            probed=probed.get(s, 0),
            causes=tuple(sorted(causes.get(s, {}).items(), key=lambda kv: (-kv[1], kv[0]))),
        )
        for s in order
    ]


def unlooked(entries: Sequence[ScenarioProbing]) -> list[ScenarioProbing]:
    """The scenarios present in the plan of which some probe was not run."""
    return [e for e in entries if e.planned and e.probed < e.planned]


def summary_lines(entries: Sequence[ScenarioProbing]) -> list[str]:
    """The terminal's lines: a heading, then one line per scenario."""
    gaps = unlooked(entries)
    head = (
        "scenarios: every one present was probed on this cluster"
        if not gaps
        else f"scenarios: {len(gaps)} present but not (fully) probed on this cluster, "
        "only predicted there"
    )
    return [head, *(f"  {e.line()}" for e in entries)]
