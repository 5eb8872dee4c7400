"""Services done right (#18): one port number on two protocols, NPM with
PlaceAzureChainFirst, and the backend a Service probe reaches; engine and lab side by side."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from test_lab_vs_engine import service_paths_cluster

from netparity.backend import Observed
from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import (
    Decision,
    ExternalEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Via,
)
from netparity.model.npmconfig import place_azure_chain_first
from netparity.model.objects import Node, Pod, Protocol, Service, ServiceType
from netparity.model.snapshot import Snapshot, snapshot_from_dicts
from netparity.probefile import resolve_endpoint

from builders import netpol, node, ns, pod, service
from lab_fixtures import LabFactory, module_lab_factory  # noqa: F401


def npm_config(text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "azure-npm-config", "namespace": "kube-system"},
        "data": {"azure-npm.json": text},
    }


PLACE_FIRST = npm_config(
    json.dumps({"Toggles": {"EnableV2NPM": True, "PlaceAzureChainFirst": True}})
)


def _svc(snap: Snapshot, key: str) -> Service:
    found = snap.service(*key.split("/"))
    assert found is not None
    return found


def _pod(snap: Snapshot, key: str) -> Pod:
    found = snap.pod(*key.split("/"))
    assert found is not None
    return found


def _node(snap: Snapshot, name: str) -> Node:
    found = snap.node(name)
    assert found is not None
    return found


# ------------------------------------------------------------------ one number, two protocols


def dns_cluster() -> Snapshot:
    """A DNS Service on 53 over UDP and TCP whose named targetPorts resolve to different
    numbers per protocol; only UDP is admitted, and only from role=client pods."""
    svc = service(
        "k/dns",
        {"app": "dns"},
        53,
        "dns",
        type_="LoadBalancer",
        cluster_ip="10.0.2.10",
        node_port=30053,
        lb_ip="192.0.2.53",
        protocol="UDP",
    )
    svc["spec"]["ports"].append(
        {"port": 53, "targetPort": "dns-tcp", "protocol": "TCP", "nodePort": 30053}
    )
    return snapshot_from_dicts(
        [
            ns("c"),
            ns("k"),
            node("n1", "10.224.0.4", "10.244.0.0/24"),
            node("n2", "10.224.0.5", "10.244.1.0/24"),
            pod("c/client", "10.244.0.10", "n1", {"role": "client"}),
            pod(
                "k/dns",
                "10.244.1.20",
                "n2",
                {"app": "dns"},
                [("dns", 8053, "UDP"), ("dns-tcp", 9053, "TCP")],
            ),
            svc,
            netpol(
                "k/udp-only",
                {
                    "podSelector": {},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "podSelector": {"matchLabels": {"role": "client"}},
                                    "namespaceSelector": {},
                                }
                            ],
                            "ports": [{"port": 8053, "protocol": "UDP"}],
                        }
                    ],
                },
            ),
        ]
    )


def test_a_service_port_is_looked_up_by_number_and_protocol() -> None:
    svc = _svc(dns_cluster(), "k/dns")
    udp, tcp = svc.port_named(53, Protocol.UDP), svc.port_named(53, Protocol.TCP)
    assert udp is not None and udp.target_port == "dns"
    assert tcp is not None and tcp.target_port == "dns-tcp"
    assert svc.port_named(53, Protocol.SCTP) is None


@pytest.mark.parametrize("via", [Via.CLUSTER_IP, Via.NODE_PORT, Via.LOAD_BALANCER])
@pytest.mark.parametrize("dataplane", ["spec", "npm", "cilium"])
def test_the_engine_answers_for_each_protocol_of_one_port_number(via: Via, dataplane: str) -> None:
    snap = dns_cluster()
    engine = Engine(snap)
    dst = ServiceEndpoint(
        service=_svc(snap, "k/dns"),
        via=via,
        node=_node(snap, "n2") if via is Via.NODE_PORT else None,
    )
    client = PodEndpoint(pod=_pod(snap, "c/client"))
    udp = engine.evaluate(
        Traffic(source=client, destination=dst, port=53, protocol=Protocol.UDP),
        get_dataplane(dataplane),
    )
    tcp = engine.evaluate(
        Traffic(source=client, destination=dst, port=53, protocol=Protocol.TCP),
        get_dataplane(dataplane),
    )
    assert (udp.port, tcp.port) == (8053, 9053)
    if via is Via.CLUSTER_IP or dataplane != "npm":
        assert udp.decision is Decision.ALLOW, udp.explanation
        assert tcp.decision is Decision.DENY, tcp.explanation
    else:  # NPM's masquerade bypass and SNAT decide these paths (D5d); both are judged
        assert Decision.UNKNOWN not in (udp.decision, tcp.decision)


def test_a_lab_nodeport_is_shared_by_the_protocols_of_one_port_number() -> None:
    from netparity.lab.build import _plan_services
    from netparity.model.objects import ServicePort

    svc = Service(
        namespace="k",
        name="dns",
        type=ServiceType.NODE_PORT,
        ports=(
            ServicePort(name="u", protocol=Protocol.UDP, port=53, target_port=53),
            ServicePort(name="t", protocol=Protocol.TCP, port=53, target_port=53),
            ServicePort(name="m", protocol=Protocol.TCP, port=9153, target_port=9153),
        ),
    )
    (planned,) = _plan_services([svc], set())
    u, t, m = (sp.node_port for sp in planned.ports)
    assert u == t and u is not None and m not in (None, u)


# ------------------------------------------------------------------ NPM's ConfigMap


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"azure-npm.json": '{"Toggles": {"PlaceAzureChainFirst": true}}'}, True),
        (
            {"azure-npm.json": '{"toggles": {"placeazurechainfirst": true}}'},
            True,
        ),  # viper folds case
        ({"azure-npm.json": '{"Toggles": {"PlaceAzureChainFirst": "true"}}'}, True),  # weakly typed
        ({"azure-npm.json": '{"Toggles": {"PlaceAzureChainFirst": 1}}'}, True),
        ({"azure-npm.json": '{"Toggles": {"PlaceAzureChainFirst": false}}'}, False),
        ({"azure-npm.json": '{"Toggles": {}}'}, False),  # a loaded file is not merged with defaults
        (
            {"azure-npm.json": '{"Toggles": {"PlaceAzureChainFirst": true'},
            False,
        ),  # not JSON: defaults
        (
            {"other.json": '{"Toggles": {"PlaceAzureChainFirst": true}}'},
            False,
        ),  # not the mounted key
        ({"azure-npm.json": '{"PlaceAzureChainFirst": true}'}, False),  # outside Toggles
    ],
)
def test_place_azure_chain_first_is_read_as_npm_reads_its_config_file(
    data: dict[str, str], expected: bool
) -> None:
    assert place_azure_chain_first({"kube-system/azure-npm-config": data}) is expected


def test_place_first_turns_off_the_masquerade_bypass_but_not_kube_proxy_nat() -> None:
    snap = snapshot_from_dicts([PLACE_FIRST])
    dp = get_dataplane("npm").with_config(snap.config)
    assert (dp.masquerade_bypass, dp.service_nat_in_node) == (False, True)
    cilium = get_dataplane("cilium").with_config(snap.config)
    assert cilium == get_dataplane("cilium")


def place_first_cluster() -> Snapshot:
    """service_paths_cluster, NPM placed first, and t/nodes-only on n2: a backend that admits
    only the node subnet (an ipBlock, D5b) behind an eTP=Cluster NodePort."""
    base = service_paths_cluster()
    extra = snapshot_from_dicts(
        [
            PLACE_FIRST,
            ns("t"),
            pod(
                "t/nodes-only", "10.244.1.60", "n2", {"app": "nodes-only"}, [("http", 8080, "TCP")]
            ),
            service(
                "t/nodes-only",
                {"app": "nodes-only"},
                80,
                8080,
                type_="NodePort",
                cluster_ip="10.0.1.60",
                node_port=30160,
            ),
            netpol(
                "t/nodes-only",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{"ipBlock": {"cidr": "10.224.0.0/16"}}]}],
                },
            ),
        ]
    )
    return dataclasses.replace(
        base,
        namespaces=(*base.namespaces, *extra.namespaces),
        pods=(*base.pods, *extra.pods),
        services=(*base.services, *extra.services),
        network_policies=(*base.network_policies, *extra.network_policies),
        config=extra.config,
    )


@pytest.mark.parametrize(
    ("client", "backend", "default", "first"),
    [
        # backend on the client's node: the mark skips NPM by default (D5d); first, NPM judges
        ("c/stranger", "s/cluster-n1", Decision.ALLOW, Decision.DENY),
        ("c/free", "s/cluster-n1", Decision.ALLOW, Decision.ALLOW),
        # another node's backend sees the client node's address either way (D5d, D5b)
        ("c/free", "s/cluster-n2", Decision.DENY, Decision.DENY),
        # eTP=Local: pods' traffic is never marked; both placements judge it pod-to-pod
        ("c/free", "s/local-n2", Decision.ALLOW, Decision.ALLOW),
        ("c/stranger", "s/local-n2", Decision.DENY, Decision.DENY),
    ],
)
def test_place_first_npm_keeps_kube_proxys_snat_on_the_lb_path(
    client: str, backend: str, default: Decision, first: Decision
) -> None:
    snap = place_first_cluster()
    engine = Engine(snap)
    t = Traffic(
        source=PodEndpoint(pod=_pod(snap, client)),
        destination=ServiceEndpoint(service=_svc(snap, backend), via=Via.LOAD_BALANCER),
        port=80,
    )
    assert engine.evaluate(t, get_dataplane("npm")).decision is default
    verdict = engine.evaluate(t, get_dataplane("npm").with_config(snap.config))
    assert verdict.decision is first, verdict.explanation


def test_place_first_npm_judges_outside_traffic_on_both_nodes_of_a_remote_backend() -> None:
    """eTP=Cluster from outside, backend elsewhere: the receiving node judges the client's
    address (before the SNAT), the backend's node the receiving node's (D5, D5b)."""
    snap = place_first_cluster()
    engine = Engine(snap)
    t = Traffic(
        source=ExternalEndpoint(ip="203.0.113.10"),
        destination=ServiceEndpoint(
            service=_svc(snap, "s/cluster-n2"), via=Via.NODE_PORT, node=_node(snap, "n1")
        ),
        port=80,
    )
    verdict = engine.evaluate(t, get_dataplane("npm").with_config(snap.config))
    assert verdict.decision is Decision.DENY
    assert (
        "before the SNAT" in verdict.explanation
        and "SNAT to the receiving node n1" in verdict.explanation
    )


# ------------------------------------------------------------------ lab and engine, packets


def _agree(lab: Any, texts: list[tuple[str, str, int, Protocol]], dataplane: str) -> list[str]:
    live = lab.snapshot
    engine = Engine(live)
    dp = get_dataplane(dataplane).with_config(live.config)
    traffic = [
        Traffic(
            source=resolve_endpoint(src, live, as_source=True),
            destination=resolve_endpoint(dst, live, as_source=False),
            port=port,
            protocol=proto,
        )
        for src, dst, port, proto in texts
    ]
    problems: list[str] = []
    for (src, dst, port, proto), t, result in zip(
        texts, traffic, lab.run(traffic, timeout=1.5), strict=True
    ):
        verdict = engine.evaluate(t, dp)
        if result.observed in (Observed.ERROR, Observed.NOT_RUN):
            problems.append(f"{dataplane} {src} -> {dst} {port}/{proto}: lab error {result.error}")
            continue
        if verdict.decision is Decision.UNKNOWN:
            problems.append(
                f"{dataplane} {src} -> {dst} {port}/{proto}: engine unknown: {verdict.explanation}"
            )
            continue
        observed = "allow" if result.allowed else "deny"
        if observed != verdict.decision:
            problems.append(
                f"{dataplane} {src} -> {dst} {port}/{proto}: lab {observed} ({result.observed}), "
                f"engine {verdict.decision}: {verdict.explanation}"
            )
    return problems


def test_lab_and_engine_agree_on_both_protocols_of_one_port_number(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    lab = module_lab_factory(dns_cluster(), dataplane="npm")
    texts = [
        (src, dst, 53, proto)
        for src in ("c/client", "external")
        for dst in ("svc:k/dns", "nodeport:k/dns@n1", "nodeport:k/dns@n2", "lb:k/dns@n2")
        for proto in (Protocol.UDP, Protocol.TCP)
        if not (src == "external" and dst.startswith("svc:"))
    ]
    problems = _agree(lab, texts, "npm")
    module_lab_factory.upgrade(lab, "cilium")
    problems += _agree(lab, texts, "cilium")
    assert problems == [], "\n".join(problems)
    # not vacuous: each protocol reached its own targetPort, and only UDP was admitted
    live = lab.snapshot
    udp, tcp = lab.run(
        [
            Traffic(
                source=resolve_endpoint("c/client", live, as_source=True),
                destination=resolve_endpoint("svc:k/dns", live, as_source=False),
                port=53,
                protocol=p,
            )
            for p in (Protocol.UDP, Protocol.TCP)
        ]
    )
    assert udp.observed is Observed.CONNECTED and udp.token == "k/dns"
    assert tcp.observed is Observed.TIMEOUT


SERVICE_TEXTS = [
    (src, f"{via}:s/{etp}-{where}{at}", 80, Protocol.TCP)
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
] + [
    ("s/cluster-n1", "svc:s/cluster-n1", 80, Protocol.TCP),  # hairpin
    ("external", "nodeport:t/nodes-only@n1", 80, Protocol.TCP),  # judged on n1, then on n2
    ("external", "nodeport:t/nodes-only@n2", 80, Protocol.TCP),
]


def test_lab_and_engine_agree_under_place_first_npm_on_every_service_path(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    lab = module_lab_factory(place_first_cluster(), dataplane="npm")
    rules = lab.backend.topology().snapshot.config
    assert place_azure_chain_first(rules)
    problems = _agree(lab, SERVICE_TEXTS, "npm")
    assert problems == [], "\n".join(problems)
    # the two placements differ on real packets, where SEMANTICS D5d says they do
    live = lab.snapshot
    stranger_to_local_backend = Traffic(
        source=resolve_endpoint("c/stranger", live, as_source=True),
        destination=resolve_endpoint("lb:s/cluster-n1", live, as_source=False),
        port=80,
    )
    outside_via_other_node = Traffic(
        source=resolve_endpoint("external", live, as_source=True),
        destination=resolve_endpoint("nodeport:t/nodes-only@n1", live, as_source=False),
        port=80,
    )
    results = lab.run([stranger_to_local_backend, outside_via_other_node])
    assert [r.observed for r in results] == [Observed.TIMEOUT, Observed.TIMEOUT]
    default = get_dataplane("npm")
    assert Engine(live).evaluate(stranger_to_local_backend, default).decision is Decision.ALLOW
    assert Engine(live).evaluate(outside_via_other_node, default).decision is Decision.ALLOW


# ------------------------------------------------------------------ which backend a probe reaches


def two_backend_cluster() -> Snapshot:
    """s/web has a backend on each node; the first by key (s/a-far) is on n2, away from the
    clients on n1. Only role=client pods are admitted."""
    return snapshot_from_dicts(
        [
            ns("c"),
            ns("s"),
            node("n1", "10.224.0.4", "10.244.0.0/24"),
            node("n2", "10.224.0.5", "10.244.1.0/24"),
            pod("c/client", "10.244.0.10", "n1", {"role": "client"}),
            pod("c/stranger", "10.244.0.11", "n1", {"role": "other"}),
            pod("s/a-far", "10.244.1.20", "n2", {"app": "web"}, [("http", 8080, "TCP")]),
            pod("s/b-near", "10.244.0.20", "n1", {"app": "web"}, [("http", 8080, "TCP")]),
            service(
                "s/web",
                {"app": "web"},
                80,
                8080,
                type_="LoadBalancer",
                cluster_ip="10.0.3.10",
                node_port=30200,
                lb_ip="192.0.2.80",
            ),
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
            ),
        ]
    )


def _pinned_traffic(snap: Snapshot) -> list[tuple[str, Traffic]]:
    # a Service of the run's own (the planner's), not in the lab yet, with two backends too
    web = _svc(snap, "s/web")
    own = dataclasses.replace(
        web,
        name="netparity-own",
        type=ServiceType.NODE_PORT,
        cluster_ip=None,
        load_balancer_ips=(),
        ports=tuple(dataclasses.replace(sp, node_port=30300) for sp in web.ports),
    )
    out = [
        (
            f"c/client -> nodeport:s/netparity-own@n1 (backend {backend})",
            Traffic(
                source=PodEndpoint(pod=_pod(snap, "c/client")),
                destination=ServiceEndpoint(
                    service=own,
                    via=Via.NODE_PORT,
                    node=_node(snap, "n1"),
                    backend=_pod(snap, backend),
                ),
                port=80,
            ),
        )
        for backend in ("s/a-far", "s/b-near")
    ]
    for client in ("c/client", "c/stranger"):
        for dst in ("nodeport:s/web@n1", "nodeport:s/web@n2", "lb:s/web@n1", "svc:s/web"):
            ep = resolve_endpoint(dst, snap, as_source=False)
            assert isinstance(ep, ServiceEndpoint)
            for backend in ("s/a-far", "s/b-near"):
                out.append(
                    (
                        f"{client} -> {dst} (backend {backend})",
                        Traffic(
                            source=PodEndpoint(pod=_pod(snap, client)),
                            destination=dataclasses.replace(ep, backend=_pod(snap, backend)),
                            port=80,
                        ),
                    )
                )
    return out


def test_a_probe_meant_for_one_backend_reaches_that_backend_in_the_lab(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    lab = module_lab_factory(two_backend_cluster(), dataplane="npm")
    problems: list[str] = []
    for dataplane in ("npm", "cilium"):
        if dataplane != "npm":
            module_lab_factory.upgrade(lab, dataplane)
        live = lab.snapshot
        engine = Engine(live)
        dp = get_dataplane(dataplane)
        probes = _pinned_traffic(live)
        results = lab.run([t for _, t in probes], timeout=1.5)
        for (label, t), result in zip(probes, results, strict=True):
            verdict = engine.evaluate(t, dp)
            observed = "allow" if result.allowed else "deny"
            if result.observed in (Observed.ERROR, Observed.NOT_RUN):
                problems.append(f"{dataplane} {label}: lab error {result.error}")
            elif observed != verdict.decision:
                problems.append(
                    f"{dataplane} {label}: lab {observed}, engine {verdict.decision}: "
                    f"{verdict.explanation}"
                )
            elif result.allowed:
                assert isinstance(t.destination, ServiceEndpoint)
                assert t.destination.backend is not None
                if result.token != t.destination.backend.key:
                    problems.append(f"{dataplane} {label}: answered by {result.token}")
    assert problems == [], "\n".join(problems)


def test_the_engine_names_each_backend_when_their_verdicts_differ() -> None:
    snap = two_backend_cluster()
    engine = Engine(snap)
    t = Traffic(
        source=PodEndpoint(pod=_pod(snap, "c/stranger")),
        destination=resolve_endpoint("nodeport:s/web@n1", snap, as_source=False),
        port=80,
    )
    verdict = engine.evaluate(t, get_dataplane("npm"))
    assert verdict.decision is Decision.UNKNOWN
    assert "backend s/a-far on n2: deny" in verdict.explanation
    assert "backend s/b-near on n1: allow" in verdict.explanation
    # the backends agree under Cilium (a stranger is denied by both): one verdict stands
    assert engine.evaluate(t, get_dataplane("cilium")).decision is Decision.DENY


@pytest.mark.parametrize("first", [False, True])
def test_the_lab_places_npms_forward_jump_where_the_config_says(first: bool) -> None:
    from netparity.lab.build import plan_topology
    from netparity.lab.dataplanes import render

    snap = service_paths_cluster()
    if first:
        snap = dataclasses.replace(snap, config=snapshot_from_dicts([PLACE_FIRST]).config)
    text = render(plan_topology(snap, lab="t", dataplane="npm"))["n1"].iptables
    forward = [line for line in text.splitlines() if line.startswith("-A FORWARD ")]
    # D21: line 1 with PlaceAzureChainFirst, else right after the jump to KUBE-SERVICES
    # (positionAzureChainJumpRule, chain-management_linux.go:601-670)
    kube = ["KUBE-PROXY-FIREWALL", "KUBE-FORWARD", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"]
    expected = ["AZURE-NPM", *kube] if first else [*kube[:3], "AZURE-NPM", kube[3]]
    assert [line.split(" -j ")[-1] for line in forward] == expected
    assert "-A FORWARD -m conntrack --ctstate NEW -j AZURE-NPM" in forward
