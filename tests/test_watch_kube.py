"""The watch on Kubernetes, against the loopback API server: the sentinels' twins placed by
the Kubernetes backend, with deadlines covering --max-duration; a node drained, deleted and
replaced under a new name, its twins evicted; the watch marks the gap "not placed" (never a
deny), re-places the twins where the recreated pods run, records when each node's dataplane
changed, and leaves nothing behind when SIGTERM stops it. The per-node bookkeeping is also
checked on its own (pure)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netparity.kube import RUN_LABEL, TWIN_OF_ANNOTATION
from netparity.watch.kube import TWIN_MARGIN
from netparity.watch.nodes import NodeSeen, NodeTracker
from netparity.watch.timeline import timeline_from_json, windows

import kube_fixtures
from kube_fixtures import drain, recreate, remove_node
from kubeapi import KubeAPI, demo_cluster, migrating, node

REPO = Path(__file__).resolve().parents[1]
MAX_DURATION = 120


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    server = KubeAPI().start()
    try:
        demo_cluster(server, dataplane="npm")
        migrating(server, reimaged=set())  # an agent pod of azure-npm on every node
        yield server
    finally:
        server.stop()


kubeconfig = kube_fixtures.kubeconfig


def _doc(path: Path) -> dict[str, Any]:
    for _ in range(5):  # written atomically; a read can still meet a rename
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            time.sleep(0.1)
    raise AssertionError(f"cannot read {path}")


def _until(
    path: Path, proc: subprocess.Popen[str], what: str, ok: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the watch ended early: {proc.communicate()[1]}"
        if path.exists():
            doc = _doc(path)
            if ok(doc):
                return doc
        time.sleep(0.2)
    raise AssertionError(f"no {what} within a minute")


def _admit(doc: dict[str, Any]) -> dict[str, Any]:
    """The client -> web admit probe (allowed before and after: a deny would be a disruption)."""
    return next(
        p
        for p in doc["probes"]
        if p["why"].startswith("admit") and "shop[app=client] -> shop[app=web]" in p["title"]
    )


def _run_objects(api: KubeAPI) -> list[str]:
    return [
        f"{kind} {o['metadata'].get('namespace')}/{o['metadata']['name']}"
        for kind in ("Pod", "Service", "ConfigMap", "Lease")
        for o in api.objects(kind)
        if RUN_LABEL in (o["metadata"].get("labels") or {})
    ]


def test_a_watch_replaces_twins_as_nodes_are_reimaged_and_leaves_nothing_on_sigterm(
    api: KubeAPI, kubeconfig: str, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "netparity", "watch", "--cluster", "test"),
            *("--kubeconfig", kubeconfig, "--interval", "1", "--timeout", "0.5"),
            *("--settle", "0", "--max-duration", str(MAX_DURATION)),
            *("--report-dir", str(tmp_path)),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    path = tmp_path / "test" / "timeline.json"
    try:
        # the twins stand where the real pods are, and are probed
        _until(path, proc, "admit probe that connected", lambda d: _seen(_admit(d), "allow"))
        twins = [o for o in api.objects("Pod") if RUN_LABEL in o["metadata"].get("labels", {})]
        assert twins
        for t in twins:  # the deadline covers --max-duration and a margin, never more
            deadline = t["spec"]["activeDeadlineSeconds"]
            assert MAX_DURATION + TWIN_MARGIN - 60 <= deadline <= MAX_DURATION + TWIN_MARGIN, t

        # node-1 is drained: web-1 and its twin are evicted
        drained_at = time.time()
        (web,) = [p for p in drain(api, "node-1") if p["metadata"]["name"] == "web-1"]
        doc = _until(
            path,
            proc,
            "round that saw the drain",
            lambda d: _seen(_admit(d), "not-placed", after=drained_at + 1.5),
        )
        # node-1 leaves, node-3 comes (a new name) with Cilium, web comes back as web-2 there
        remove_node(api, "node-1")
        api.add(node("node-3", "127.0.2.3"))
        migrating(api, reimaged={"node-3"})
        recreate(api, web, name="web-2", node_name="node-3", ip="127.0.3.3")
        back_at = time.time()
        doc = _until(
            path,
            proc,
            "admit probe that connected again to the re-placed twin",
            lambda d: _seen(_admit(d), "allow", after=back_at) and "node-3" in _admit(d)["nodes"],
        )
        replaced = [
            o
            for o in api.objects("Pod")
            if (o["metadata"].get("annotations") or {}).get(TWIN_OF_ANNOTATION) == "shop/web-2"
        ]
        assert replaced, "no twin of the recreated pod web-2"
        assert not [
            o
            for o in api.objects("Pod")
            if (o["metadata"].get("annotations") or {}).get(TWIN_OF_ANNOTATION) == "shop/web-1"
        ]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    doc = _doc(path)
    assert doc["stopped"] == "interrupted"
    admit = _admit(doc)
    verdicts = [s["verdict"] for s in admit["samples"]]
    # allowed, then not placed while its pod was away, then allowed again; never a deny
    assert "deny" not in verdicts, admit["samples"]
    first_gap = verdicts.index("not-placed", verdicts.index("allow"))
    assert "allow" in verdicts[first_gap:]
    gap = [s for s in admit["samples"] if s["verdict"] == "not-placed" and s["time"] > drained_at]
    # each says why: the pod away (its class has no pod), its node reimaged, its twin starting
    assert gap and all(s.get("detail") for s in gap), gap
    assert any("no pod of its class" in s["detail"] or "node-1" in s["detail"] for s in gap)
    # the ids by meaning: the same probe, now on node-3
    assert {"node-1", "node-2", "node-3"} <= set(admit["nodes"])
    assert not [w for w in windows(timeline_from_json(doc)) if w.probe == admit["id"]]
    # each node's dataplane change: node-1 reimaged then removed, node-3 new on Cilium
    changes = {n["node"]: n for n in doc["nodes"]}
    assert changes["node-1"]["dataplane"] == "removed"
    assert drained_at - 1.5 <= changes["node-1"]["start"] <= changes["node-1"]["end"]
    assert changes["node-3"]["dataplane"].startswith("cilium")
    assert changes["node-3"]["start"] >= drained_at
    assert "node-2" not in changes  # untouched
    # nothing left behind: twins, Services, anchors, heartbeats
    assert _run_objects(api) == []


def _seen(probe: dict[str, Any], verdict: str, after: float = 0.0) -> bool:
    return any(s["verdict"] == verdict and s["time"] >= after for s in probe["samples"])


def test_nodes_change_when_they_stop_being_steady_and_when_they_come_back() -> None:
    def seen(name: str, plane: str = "npm", *, ready: bool = True, cordoned: bool = False) -> Any:
        return NodeSeen(name=name, ready=ready, cordoned=cordoned, dataplane=plane)

    t = NodeTracker()
    t.update({"a": seen("a"), "b": seen("b"), "c": seen("c", ready=False)}, 10.0)
    assert t.busy() == {"c"}
    t.update({"a": seen("a", cordoned=True), "b": seen("b"), "c": seen("c")}, 12.0)
    t.update({"a": seen("a", "none"), "b": seen("b", "cilium"), "c": seen("c")}, 14.0)
    t.update({"b": seen("b", "cilium"), "c": seen("c"), "d": seen("d", "none")}, 16.0)
    assert not t.enforcing("cilium")
    t.update({"b": seen("b", "cilium"), "c": seen("c", "cilium"), "d": seen("d", "cilium")}, 18.0)
    got = [(c.node, c.start, c.end, c.dataplane) for c in t.changes()]
    assert got == [
        ("c", 10.0, 12.0, "npm"),  # not steady when the watch began: from its start
        ("a", 12.0, 16.0, "removed"),  # cordoned, then gone (AKS brings it back as d)
        ("b", 14.0, 14.0, "cilium"),  # its agent changed between two rounds
        ("d", 16.0, 18.0, "cilium"),  # appeared without an agent, steady on Cilium later
        ("c", 18.0, 18.0, "cilium"),
    ]
    assert t.enforcing("cilium-1.16") and not t.enforcing("npm")
