"""The probe agent's JSON, both ways: the batch it reads and the lines it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netparity.backend import Observed, token_mismatch
from netparity.kube.render import probes_dir

_OBSERVED = {
    o.value: o for o in (Observed.CONNECTED, Observed.REFUSED, Observed.TIMEOUT, Observed.ERROR)
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    observed: Observed
    token: str | None = None
    latency_ms: float | None = None
    error: str | None = None


def batch_document(timeout: float, targets: Sequence[Mapping[str, Any]]) -> str:
    """The batch as one JSON line (the exec command reads exactly one line)."""
    return json.dumps({"timeout": timeout, "targets": list(targets)}, separators=(",", ":")) + "\n"


def parse_output(stdout: str, ids: Sequence[str]) -> tuple[dict[str, Outcome], str | None]:
    """Outcomes by id, and the agent's own complaint (a line with `error` and no `id`), if any."""
    wanted = set(ids)
    out: dict[str, Outcome] = {}
    complaint: str | None = None
    for line in stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            complaint = complaint or f"the agent wrote a line that is not JSON: {line[:200]!r}"
            continue
        if not isinstance(doc, dict):
            continue
        rid = doc.get("id")
        if rid is None and "error" in doc:
            complaint = str(doc["error"])
            continue
        if not isinstance(rid, str) or rid not in wanted:
            continue
        observed = _OBSERVED.get(str(doc.get("observed")))
        if observed is None:
            out[rid] = Outcome(
                observed=Observed.ERROR, error=f"unknown observation {doc.get('observed')!r}"
            )
            continue
        latency = doc.get("latency_ms")
        token = doc.get("token")
        err = doc.get("error")
        out[rid] = Outcome(
            observed=observed,
            token=token if isinstance(token, str) else None,
            latency_ms=float(latency)
            if isinstance(latency, int | float) and not isinstance(latency, bool)
            else None,
            error=str(err) if err is not None else None,
        )
    return out, complaint


def check_token(outcome: Outcome, expected: str | None, where: str) -> Outcome:
    """A connection counts only when the answer names the expected destination; anything
    else is an error that says who answered. Nothing to check without an expectation."""
    if outcome.observed is not Observed.CONNECTED or expected is None:
        return outcome
    why = token_mismatch(outcome.token, expected, where)
    if why is None:
        return outcome
    return Outcome(
        observed=Observed.ERROR, token=outcome.token, latency_ms=outcome.latency_ms, error=why
    )


def run_local(document: str, *, timeout: float) -> tuple[str, str, int | None]:
    """Run `agent.py probe` here (for sources outside the cluster): stdout, stderr, exit code."""
    agent = probes_dir() / "agent.py"
    try:
        proc = subprocess.run(
            [sys.executable, str(agent), "probe"],
            input=document,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return out, f"the local agent did not finish within {timeout:g} s", None
    return proc.stdout, proc.stderr, proc.returncode
