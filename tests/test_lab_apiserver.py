"""The lab's API server (#23): `default/kubernetes` and its EndpointSlice address, a host
that accepts there, and essential `connect` probes with real packets, engine vs lab.

Under Cilium the address is the `kube-apiserver` identity (resolved from the EndpointSlice,
D28): a CiliumNetworkPolicy `toEntities: [kube-apiserver]` (or `cluster`) admits it; NPM
judges it as any outside address.
"""

from __future__ import annotations

from typing import Any

from netparity.backend import Observed, Target
from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Traffic
from netparity.lab.apiserver import API_SERVICE, LAB_API_IP, with_apiserver
from netparity.model.snapshot import snapshot_from_dicts
from netparity.plan.essential_probes import Check, essential_check
from netparity.plan.planner import make_plan
from netparity.probefile import resolve_endpoint

from builders import cnp, netpol, node, ns, pod
from lab_fixtures import LabFactory, module_lab_factory  # noqa: F401

HTTP = [("http", 8080, "TCP")]


def docs() -> list[dict[str, Any]]:
    egress_deny = {"podSelector": {"matchLabels": {"lock": "yes"}}, "policyTypes": ["Egress"]}
    return [
        ns("a"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("a/free", "10.244.0.10", "n1", {"app": "free"}, HTTP),
        pod("a/locked", "10.244.0.11", "n1", {"lock": "yes", "app": "locked"}, HTTP),
        pod("a/api", "10.244.1.10", "n2", {"lock": "yes", "app": "api"}, HTTP),
        pod("a/cluster", "10.244.1.11", "n2", {"lock": "yes", "app": "cluster"}, HTTP),
        netpol("a/lock", egress_deny),
        cnp(
            "a/to-api",
            {
                "endpointSelector": {"matchLabels": {"app": "api"}},
                "egress": [{"toEntities": ["kube-apiserver"]}],
            },
        ),
        cnp(
            "a/to-cluster",
            {
                "endpointSelector": {"matchLabels": {"app": "cluster"}},
                "egress": [{"toEntities": ["cluster"]}],
            },
        ),
    ]


def test_a_snapshot_without_the_api_server_gets_its_service_and_endpoint_once() -> None:
    snap = with_apiserver(snapshot_from_dicts(docs()))
    (svc,) = [s for s in snap.services if s.key == API_SERVICE]
    assert (svc.cluster_ip, [(p.port, p.protocol.value) for p in svc.ports]) == (
        "10.0.0.1",
        [(443, "TCP")],
    )
    assert snap.endpoints[API_SERVICE].outside == (LAB_API_IP,)
    assert with_apiserver(snap) is snap  # nothing to add a second time
    # the plan now holds an essential connect probe to it from every class
    plan = make_plan(snap, current="npm", target="cilium")
    connects = [p for p in plan.probes if essential_check(p) is Check.CONNECT]
    assert connects and all(p.traffic.port == 443 for p in connects)


def test_essential_connect_probes_reach_the_lab_api_server_as_the_engine_predicts(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    rows = [  # (source, npm, cilium)
        ("a/free", "allow", "allow"),
        ("a/locked", "deny", "deny"),
        ("a/api", "deny", "allow"),  # toEntities kube-apiserver
        ("a/cluster", "deny", "allow"),  # `cluster` includes kube-apiserver (D28)
    ]
    lab = module_lab_factory(snapshot_from_dicts(docs()), dataplane="npm")
    assert any(h.ip == LAB_API_IP for h in lab.topology.hosts)
    problems: list[str] = []
    for dataplane, column in (("npm", 1), ("cilium", 2), ("cilium-1.19", 2)):
        if dataplane != "npm":
            module_lab_factory.upgrade(lab, dataplane)
        live = lab.snapshot
        engine = Engine(live)
        dp = get_dataplane(dataplane).with_config(live.config)
        traffic = [
            Traffic(
                source=resolve_endpoint(row[0], live, as_source=True),
                destination=resolve_endpoint(f"svc:{API_SERVICE}", live, as_source=False),
                port=443,
            )
            for row in rows
        ]
        targets = [
            Target(id=f"p{i}", traffic=t, check=Check.CONNECT.value) for i, t in enumerate(traffic)
        ]
        results = lab.backend.run(targets, timeout=1.5)
        for row, t, result in zip(rows, traffic, results, strict=True):
            verdict = engine.evaluate(t, dp)
            where = f"{row[0]} -> svc:{API_SERVICE} under {dataplane}"
            if result.observed in (Observed.ERROR, Observed.NOT_RUN):
                problems.append(f"{where}: the lab could not run it: {result.error}")
                continue
            seen = "allow" if result.observed is Observed.CONNECTED else "deny"
            if (seen, str(verdict.decision)) != (row[column], row[column]):
                problems.append(
                    f"{where}: want {row[column]}, lab {seen} ({result.observed}, "
                    f"{result.address}), engine {verdict.decision}: {verdict.explanation}"
                )
    assert problems == [], "\n".join(problems)
