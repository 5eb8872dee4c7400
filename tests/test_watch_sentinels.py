"""The sentinel set: predicted changes (one per cause and namespace first), one admit and
one reject probe per rule class, capped, stable, bounded on a 5,000-pod cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from netparity.model.snapshot import snapshot_from_dicts
from netparity.plan.planner import make_plan
from netparity.watch.sentinels import Candidate, candidates_from_plan, select_sentinels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from gen import generate


def _c(
    pid: str, *, changes: bool = False, cause: str = "endport", ns: str = "a", **kw: str
) -> Candidate:
    return Candidate(
        id=pid,
        kind=kw.get("kind", "pod-pod"),
        intent=kw.get("intent", "admit"),
        rule=kw.get("rule", "NetworkPolicy a/p ingress[0]"),
        namespace=ns,
        current="allow",
        target="deny" if changes else "allow",
        causes=((cause, ns),) if changes else (),
    )


def test_one_change_per_cause_and_namespace_comes_before_the_rest() -> None:
    cands = [_c(f"c{i:03}", changes=True, cause="endport", ns="a") for i in range(10)]
    cands += [_c("z-named", changes=True, cause="named-port", ns="b")]
    got = select_sentinels(cands, max_sentinels=2)
    # the cap keeps one per pair: the other endport changes are left out, not the named port
    assert got.ids == ("c000", "z-named")
    assert got.left_out == 9
    assert "left out by --max-sentinels 2" in got.summary()


def test_an_admit_and_a_reject_per_rule_class_are_watched_though_nothing_changes() -> None:
    cands = [
        _c("a1", intent="admit"),
        _c("a2", intent="admit"),
        _c("r1", intent="reject"),
        _c("e1", intent="admit", kind="pod-external", rule="NetworkPolicy a/q egress[0]"),
        _c("s1", intent="scenario"),
    ]
    got = select_sentinels(cands)
    assert got.ids == ("a1", "e1", "r1")
    assert got.left_out == 0
    assert "rule class pod-pod ingress" in got.why["a1"]


def test_probes_from_a_file_are_added_beyond_the_cap() -> None:
    cands = [_c("a1"), _c("b1", changes=True), _c("x9", intent="scenario")]
    got = select_sentinels(cands, max_sentinels=1, extra=["x9", "unknown"])
    assert got.ids == ("b1", "x9")
    assert got.why["x9"] == "from --probes"


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        select_sentinels([], max_sentinels=0)


@pytest.fixture(scope="module")
def big_plan():  # type: ignore[no-untyped-def]
    snap = snapshot_from_dicts(generate(pods=5000, namespaces=100, policies=1000, nodes=20, seed=1))
    return make_plan(snap, current="npm", target="cilium")


def test_on_a_5000_pod_cluster_the_set_is_bounded_stable_and_says_what_it_left_out(
    big_plan,
) -> None:  # type: ignore[no-untyped-def]
    cands = candidates_from_plan(big_plan)
    changes = sum(c.changes for c in cands)
    assert changes > 500  # else the cap proves nothing
    got = select_sentinels(cands)
    assert len(got.ids) == 500
    assert got.left_out > 0
    pairs = {(n, ns) for c in cands if c.changes for n, ns in c.causes}
    # every cause and namespace pair is watched (when they fit under the cap)
    assert len(pairs) <= 500
    chosen = {c.id: c for c in cands if c.id in got.ids}
    assert pairs <= {(n, ns) for c in chosen.values() for n, ns in c.causes}
    # stable: the same ids for the same input, in any order
    again = select_sentinels(list(reversed(cands)))
    assert again.ids == got.ids
    smaller = select_sentinels(cands, max_sentinels=50)
    assert len(smaller.ids) == 50 and smaller.left_out == got.left_out + 450
