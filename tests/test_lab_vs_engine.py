"""The lab and the engine are two implementations of SEMANTICS.md: on the shipped example
they must give the same verdict for every probe under every dataplane.

The lab enforces with packet filters compiled from the snapshot (netparity/lab/dataplanes);
the engine predicts from the same snapshot. A disagreement names the probe, both verdicts,
what the lab observed and the engine's explanation, so the reader can tell which is wrong.
An `error` from the lab fails the test: it is never a pass and never a deny.
"""

from __future__ import annotations

from pathlib import Path

from lab_fixtures import LabFactory, module_lab_factory  # noqa: F401

from netparity.backend import Observed, Target
from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.model.snapshot import load_snapshot
from netparity.probefile import load_probe_file, resolve_probes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def compare(lab_snapshot_factory: LabFactory, lab: object, dataplane: str) -> list[str]:
    from lab_fixtures import Lab

    assert isinstance(lab, Lab)
    snapshot = lab.snapshot  # the lab's live state: pods at their current addresses
    probes = resolve_probes(load_probe_file(EXAMPLES / "probes.yaml"), snapshot)
    engine = Engine(snapshot)
    dp = get_dataplane(dataplane).with_config(snapshot.config)
    results = lab.backend.run(
        [Target(id=f"p{i}", traffic=p.traffic) for i, p in enumerate(probes)], timeout=1.5
    )
    problems = []
    for probe, result in zip(probes, results, strict=True):
        verdict = engine.evaluate(probe.traffic, dp)
        if result.observed in (Observed.ERROR, Observed.NOT_RUN):
            problems.append(f"{probe.spec.label()}: the lab could not run it: {result.error}")
            continue
        observed = "allow" if result.allowed else "deny"
        if observed != verdict.decision:
            problems.append(
                f"{probe.spec.label()} under {dataplane}: lab {observed} ({result.observed}, "
                f"{result.address}), engine {verdict.decision}: {verdict.explanation}"
            )
    return problems


def test_lab_and_engine_agree_on_every_example_probe_under_each_dataplane(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    snapshot = load_snapshot([EXAMPLES / "aks-migration.yaml"])
    lab = module_lab_factory(snapshot, dataplane="npm")
    problems = compare(module_lab_factory, lab, "npm")
    for dataplane in ("cilium", "cilium-1.16"):
        module_lab_factory.upgrade(lab, dataplane)
        problems += compare(module_lab_factory, lab, dataplane)
    assert problems == []


def test_the_example_flips_where_the_engine_says_and_the_lab_confirms_it(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """Guards the test above against passing vacuously: the example must hold real flips."""
    snapshot = load_snapshot([EXAMPLES / "aks-migration.yaml"])
    probes = resolve_probes(load_probe_file(EXAMPLES / "probes.yaml"), snapshot)
    engine = Engine(snapshot)
    flips = [
        p.spec.label()
        for p in probes
        if engine.evaluate(p.traffic, get_dataplane("npm")).decision
        != engine.evaluate(p.traffic, get_dataplane("cilium")).decision
    ]
    assert len(flips) >= 10
