"""What a run's result means, in words: the parity report explained, the other failures.

`netparity demo` explains its post run with these (from parity.json and the JUnit XML the
plugin wrote), so anything that reads a finished run can say the same.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

# parity.json's counts of changes nobody predicted
UNEXPECTED = ("lost", "gained", "flaky", "error", "missing")


def other_failures(junit: Path) -> list[str]:
    """The post run's failing items that are not a predicted change (from its JUnit XML):
    a probe file's expectation, a record that could not be written, a broken item."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError) as e:
        return [f"the post run's JUnit file {junit} cannot be read ({e})"]
    out = []
    for case in root.iter("testcase"):
        if case.find("failure") is None and case.find("error") is None:
            continue
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if props.get("netparity.status") != "predicted":
            out.append(f"{case.get('name')} ({props.get('netparity.status') or 'no status'})")
    return out


def explain_parity(parity: dict[str, Any]) -> tuple[int, list[str]]:
    """What changed, in words, and how many probes failed for another reason than a
    predicted change."""
    counts = parity.get("counts", {})
    unexpected = sum(int(counts.get(k, 0)) for k in UNEXPECTED)
    lines = []
    predicted = [p for p in parity.get("probes", []) if p.get("status") == "predicted"]
    unrealized = [p for p in parity.get("probes", []) if p.get("status") == "unrealized"]
    by: dict[str, int] = {}
    for p in predicted:  # by cause (each cause once; parity.json before 2.1: by purpose)
        causes = p.get("causes")
        if causes is None:
            keys = [f"planned for {p.get('scenario') or 'no scenario'}"]
        else:
            keys = list(dict.fromkeys(c.get("scenario") or c.get("knob") for c in causes))
        for key in keys or ["no single difference explains it"]:
            by[key] = by.get(key, 0) + 1
    migration = f"{parity.get('before')} -> {parity.get('after')}"
    if unrealized:
        lines.append(
            f"{len(predicted)} probes changed as the engine predicted for {migration}, but "
            f"{len(unrealized)} predicted change{'s' if len(unrealized) != 1 else ''} did not "
            "happen (unrealized: parity holds there, the engine was wrong):"
        )
    else:
        lines.append(
            f"{len(predicted)} probes changed exactly as the engine predicted for {migration}, "
            "by cause (a probe with several causes counts under each):"
        )
    lines.extend(f"  {k}: {v} probe{'s' if v != 1 else ''}" for k, v in sorted(by.items()))
    lines.extend(f"  did not change: {p.get('id')} {p.get('title')}" for p in unrealized[:10])
    not_run = int(counts.get("not-run", 0))
    if not_run:
        lines.append(f"{not_run} probes could be run by neither run (not-run): nobody checked them")
    if unexpected:
        lines.append(
            f"{unexpected} probes changed in a way nobody predicted "
            f"({', '.join(f'{counts.get(k, 0)} {k}' for k in UNEXPECTED)}): look at them first"
        )
    else:
        lines.append(
            "nothing else changed: every failure of the post run is a known migration risk "
            "(fix them before migrating, or list them in an accept file with a reason)"
        )
    return unexpected, lines


def explain_post(
    parity: dict[str, Any], junit: Path, exit_code: int
) -> tuple[list[str], list[str]]:
    """A post run's result (its parity.json, its JUnit XML, pytest's exit code): what changed,
    in words, and why the run fails the migration, if it does (empty: every failure is a
    predicted change)."""
    failures: list[str] = []
    unexpected, lines = explain_parity(parity)
    if unexpected:
        failures.append(f"the post run found {unexpected} probes that fail for another reason")
    others = other_failures(junit) if exit_code == 1 and junit.is_file() else []
    if others and not unexpected:
        failures.append(
            f"the post run failed {len(others)} items that are not predicted changes: "
            + "; ".join(others[:5])
            + (" ..." if len(others) > 5 else "")
        )
    predicted = int(parity.get("counts", {}).get("predicted", 0))
    if exit_code == 1 and not junit.is_file() and predicted == 0:
        failures.append("the post run failed, and no predicted change explains it")
    return lines, failures
