"""The lab and the engine are two implementations of SEMANTICS.md: on the shipped example
they must give the same verdict for every probe under every dataplane.

The lab enforces with packet filters compiled from the snapshot (netparity/lab/dataplanes);
the engine predicts from the same snapshot. A disagreement names the probe, both verdicts,
what the lab observed and the engine's explanation, so the reader can tell which is wrong.
An `error` from the lab fails the test: it is never a pass and never a deny.
"""

from __future__ import annotations

from pathlib import Path

from netparity.backend import Observed, Target
from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Traffic
from netparity.model.snapshot import Snapshot, load_snapshot, snapshot_from_dicts
from netparity.probefile import load_probe_file, resolve_endpoint, resolve_probes

from lab_fixtures import LabFactory, module_lab_factory  # noqa: F401

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


def service_paths_cluster() -> Snapshot:
    """Clients on n1 (one with egress open, one limited to pods), backends behind NodePort
    and LoadBalancer Services with both traffic policies, on n1 and on n2; the backends admit
    only `role=client` pods, so every SNAT and every bypass shows."""
    from builders import netpol, node, ns, pod, service

    docs = [
        ns("c"),
        ns("s"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        node("n3", "10.224.0.6", "10.244.2.0/24"),
        pod("c/free", "10.244.0.10", "n1", {"role": "client"}),
        pod("c/locked", "10.244.0.11", "n1", {"role": "client", "lock": "yes"}),
        pod("c/stranger", "10.244.0.12", "n1", {"role": "other"}),
        netpol(
            "c/lock",
            {
                "podSelector": {"matchLabels": {"lock": "yes"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {}}]}],
            },
        ),
    ]
    for i, (etp, where) in enumerate([(e, n) for e in ("Cluster", "Local") for n in ("n1", "n2")]):
        name = f"{etp.lower()}-{where}"
        ip = f"10.244.{0 if where == 'n1' else 1}.{40 + i}"
        docs.append(pod(f"s/{name}", ip, where, {"app": name}, [("http", 8080, "TCP")]))
        docs.append(
            service(
                f"s/{name}",
                {"app": name},
                80,
                8080,
                type_="LoadBalancer",
                cluster_ip=f"10.0.1.{10 + i}",
                node_port=30100 + i,
                etp=etp,
                lb_ip=f"192.0.2.{20 + i}",
            )
        )
    docs.append(
        netpol(
            "s/clients-only",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"role": "client"}},
                            }
                        ]
                    }
                ],
            },
        )
    )
    return snapshot_from_dicts(docs)


def test_lab_and_engine_agree_on_in_cluster_nodeport_and_lb_paths(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    snapshot = service_paths_cluster()
    lab = module_lab_factory(snapshot, dataplane="npm")
    texts = [
        (src, f"{via}:s/{etp}-{where}{at}")
        for src in ("c/free", "c/locked", "c/stranger", "external", "node:n2")
        for etp in ("cluster", "local")
        for where in ("n1", "n2")
        for via, at in (
            ("lb", ""),
            ("nodeport", "@n1"),
            ("nodeport", "@n2"),
            ("nodeport", "@n3"),
            ("svc", ""),
        )
        if not (src.startswith(("external", "node")) and via == "svc")
    ]
    problems: list[str] = []
    for dataplane in ("npm", "cilium"):
        if dataplane != "npm":
            module_lab_factory.upgrade(lab, dataplane)
        live = lab.snapshot
        engine = Engine(live)
        dp = get_dataplane(dataplane)
        traffic = [
            Traffic(
                source=resolve_endpoint(src, live, as_source=True),
                destination=resolve_endpoint(dst, live, as_source=False),
                port=80,
            )
            for src, dst in texts
        ]
        results = lab.run(traffic, timeout=1.5)
        for (src, dst), t, result in zip(texts, traffic, results, strict=True):
            verdict = engine.evaluate(t, dp)
            if result.observed in (Observed.ERROR, Observed.NOT_RUN):
                if verdict.decision != "unknown":
                    problems.append(f"{dataplane} {src} -> {dst}: lab error {result.error}")
                continue
            observed = "allow" if result.allowed else "deny"
            if observed != verdict.decision:
                problems.append(
                    f"{dataplane} {src} -> {dst}: lab {observed} ({result.token}), "
                    f"engine {verdict.decision}: {verdict.explanation}"
                )
    assert problems == [], "\n".join(problems)
