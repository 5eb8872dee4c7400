"""A watch across a rolling upgrade of the example cluster, with real packets: at least one
exposure on a reimaged node before Cilium enforces, no disruption (a pod being recreated is
"not placed", never a deny), and window times at the rounds around the lab's own reimage
log. Also: an interrupted watch keeps its timeline and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from netparity.example import example_path
from netparity.lab.state import load_state, lock_holders, use_lock_path
from netparity.model.snapshot import load_snapshot
from netparity.watch.run import WatchSettings, watch
from netparity.watch.timeline import Seen, timeline_from_json, windows

import lab_fixtures

lab_factory = lab_fixtures.lab_factory
INTERVAL = 1.0


def test_a_watch_across_a_rolling_upgrade_sees_the_exposure_window(
    lab_factory, tmp_path: Path
) -> None:
    lab = lab_factory(load_snapshot([str(example_path())]), dataplane="npm")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    upgrade = subprocess.Popen(
        [
            *(sys.executable, "-m", "netparity", "lab", "upgrade", "--name", lab.name),
            *("--rolling", "--node-delay", "1.5", "--wait", "30"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = watch(
            WatchSettings(
                cluster=f"lab:{lab.name}",
                interval=INTERVAL,
                until_stable=True,
                max_duration=120,
                report_dir=tmp_path,
                probe_timeout=0.5,
            )
        )
    finally:
        _, err = upgrade.communicate(timeout=120)
    assert upgrade.returncode == 0, err
    doc = json.loads(out.read_text())
    assert out == tmp_path / f"lab-{lab.name}" / "timeline.json"
    tl = timeline_from_json(doc)
    assert tl.stopped == "stable"
    state = load_state(lab.name)
    assert state is not None and state.rolling is not None and state.rolling.enforced is not None
    log = {r.node: r for r in state.rolling.reimages}
    assert [n.node for n in tl.nodes] == list(log)
    found = windows(tl)
    exposures = [w for w in found if w.kind == "exposure"]
    assert exposures, f"no exposure window: {doc['windows']}"
    enforced = state.rolling.enforced
    by_id = {p.id: p for p in tl.probes}
    for w in exposures:
        assert w.node in log and not w.open
        began, back = log[w.node].start, log[w.node].end
        assert back is not None
        samples = by_id[w.probe].samples
        # It opened when its node came back: after the node's reimage began, and the first
        # round that placed the probe after the node was back saw it allowed. (A sample is
        # stamped when its round begins, and a round can take longer than the interval on a
        # loaded machine: bounds in seconds around `back` would be bounds on the load.)
        assert began < w.start, (w, began)
        between = [s for s in samples if back < s.time < w.start]
        assert all(s.verdict is Seen.NOT_PLACED for s in between), (w, back, between)
        # It closed when Cilium enforced: every round that saw the probe allowed began before
        # `enforced` (stamped once every node's rules are in place), and the first round
        # that began after it saw the probe denied.
        allowed = [s for s in samples if w.start <= s.time < w.end and s.verdict is Seen.ALLOW]
        assert allowed and max(s.time for s in allowed) < enforced, (w, enforced)
        assert not [s for s in samples if enforced <= s.time < w.end], (w, enforced)
    # the migration cuts no allowed probe: gaps are "not placed", never denies
    assert not [w for w in found if w.kind == "disruption"], doc["windows"]
    placed = {s.verdict for p in tl.probes for s in p.samples}
    assert "not-placed" in placed
    for w in found:  # only probes denied before and after the migration were exposed
        assert (by_id[w.probe].current, by_id[w.probe].target) == ("deny", "deny")
    assert doc["sentinels"]["count"] == len(tl.probes) > 0


def test_an_interrupted_watch_keeps_its_timeline_and_lets_the_lab_go(
    lab_factory, tmp_path: Path
) -> None:
    lab = lab_factory(load_snapshot([str(example_path())]), dataplane="npm")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "netparity", "watch", "--cluster", f"lab:{lab.name}"),
            *("--interval", "0.5", "--timeout", "0.3", "--report-dir", str(tmp_path)),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    timeline = tmp_path / f"lab-{lab.name}" / "timeline.json"
    try:
        deadline = time.monotonic() + 60
        while not timeline.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert timeline.exists(), "the watch wrote no timeline within a minute"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    doc = json.loads(timeline.read_text())
    assert doc["stopped"] == "interrupted"
    assert all(p["samples"] for p in doc["probes"])
    assert lock_holders(use_lock_path(lab.name)) == []  # the user hold is gone
    state = load_state(lab.name)
    assert state is not None and state.topology is not None
    assert not [s for s in state.topology.snapshot.services if "netparity.io/run" in s.labels]
