"""A dataplane is a registered profile: the engine's knobs and the lab's renderer, under one
name. This test adds a toy dataplane through the two registries alone (no other module is
touched) and runs the lab-versus-engine comparison on it with real packets.

The toy is Cilium with one knob flipped: endPort not honoured (D1, `end_port` PORT_ONLY),
and the lab renders it as the Cilium nft table with `honour_end_port=False`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from netparity.backend import Observed, Target
from netparity.engine.dataplane import (
    DATAPLANES,
    DETECTIONS,
    TARGETS,
    Dataplane,
    Detection,
    EndPortMode,
    get_dataplane,
    register,
    unregister,
)
from netparity.engine.evaluate import Engine
from netparity.errors import InputError
from netparity.kube.backend import KubeBackend
from netparity.kube.detect import known_dataplanes
from netparity.kube.rbac import detect_rules
from netparity.lab import dataplanes as lab_dataplanes
from netparity.lab.dataplanes import cilium
from netparity.lab.topology import LabTopology, NodeRules
from netparity.model.snapshot import load_snapshot
from netparity.probefile import load_probe_file, resolve_probes

from kubeapi import KubeAPI, demo_cluster
from lab_fixtures import LabFactory, lab_factory  # noqa: F401

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOY = "toy"


def _render_toy(topology: LabTopology) -> dict[str, NodeRules]:
    return cilium.render(topology, honour_end_port=False)


@pytest.fixture
def toy() -> Iterator[Dataplane]:
    profile = replace(
        get_dataplane("cilium"),
        name=TOY,
        description="toy: Cilium with endPort not honoured (one knob flipped)",
        end_port=EndPortMode.PORT_ONLY,
    )
    register(profile, target=True)
    lab_dataplanes.register(TOY, _render_toy)
    try:
        yield profile
    finally:
        unregister(TOY)
        lab_dataplanes.unregister(TOY)


def test_a_registered_dataplane_is_known_everywhere_and_gone_after(toy: Dataplane) -> None:
    assert DATAPLANES[TOY] is toy and TOY in TARGETS
    assert TOY in lab_dataplanes.DATAPLANES
    with pytest.raises(ValueError, match="already registered"):
        register(toy)
    unregister(TOY)
    lab_dataplanes.unregister(TOY)
    assert TOY not in DATAPLANES and TOY not in TARGETS
    assert TOY not in lab_dataplanes.DATAPLANES
    with pytest.raises(InputError, match="unknown dataplane 'toy'"):
        get_dataplane(TOY)
    with pytest.raises(InputError, match=r"the lab enforces npm, cilium, cilium-1\.16"):
        lab_dataplanes.renderer(TOY)


def test_the_lab_and_the_engine_agree_on_a_toy_dataplane(
    toy: Dataplane,
    lab_factory: LabFactory,  # noqa: F811
) -> None:
    snapshot = load_snapshot([EXAMPLES / "aks-migration.yaml"])
    probes = resolve_probes(load_probe_file(EXAMPLES / "probes.yaml"), snapshot)
    engine = Engine(snapshot)
    newest = get_dataplane("cilium").with_config(snapshot.config)
    toy_dp = get_dataplane(TOY).with_config(snapshot.config)
    # not vacuous: the flipped knob changes the example's endPort probes, and only those
    flipped = {
        p.spec.label()
        for p in probes
        if engine.evaluate(p.traffic, newest).decision
        != engine.evaluate(p.traffic, toy_dp).decision
    }
    assert flipped and all("port-range" in label for label in flipped), flipped

    lab = lab_factory(snapshot, dataplane=TOY)
    live = lab.snapshot
    probes = resolve_probes(load_probe_file(EXAMPLES / "probes.yaml"), live)
    engine = Engine(live)
    results = lab.backend.run(
        [Target(id=f"p{i}", traffic=p.traffic) for i, p in enumerate(probes)], timeout=1.5
    )
    problems = []
    for probe, result in zip(probes, results, strict=True):
        verdict = engine.evaluate(probe.traffic, toy_dp)
        if result.observed in (Observed.ERROR, Observed.NOT_RUN):
            problems.append(f"{probe.spec.label()}: the lab could not run it: {result.error}")
        elif ("allow" if result.allowed else "deny") != verdict.decision:
            problems.append(
                f"{probe.spec.label()}: lab {result.observed}, engine {verdict.decision}: "
                f"{verdict.explanation}"
            )
    assert problems == []
    assert lab.backend.facts().dataplane == TOY


def _calico_node(version: str) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "calico-node", "namespace": "kube-system"},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "calico-node", "image": f"calico/node:{version}"}]}
            }
        },
    }


def test_a_registered_detection_is_how_a_live_cluster_shows_the_toy(
    toy: Dataplane, tmp_path: Path
) -> None:
    # without a detection the toy is a valid --dataplane but never detected
    assert TOY in known_dataplanes() and TOY not in DETECTIONS
    unregister(TOY)
    register(
        toy, detection=Detection(daemonset="calico-node", container="calico-node", since=(3, 0))
    )
    try:
        # the RBAC that lets detection read kube-system names the toy's DaemonSet too
        assert any("calico-node" in rule.names for rule in detect_rules())
        with KubeAPI() as server:
            demo_cluster(server, dataplane="none")
            server.add(_calico_node("v3.28.1"))
            kb = KubeBackend("test", kubeconfig=str(server.kubeconfig(tmp_path / "kc")), log=print)
            try:
                facts = kb.facts()
            finally:
                kb.close()
        assert (facts.dataplane, facts.version) == (TOY, "3.28.1")
    finally:
        unregister(TOY)
    assert TOY not in DETECTIONS and TOY not in known_dataplanes()
