"""The planner: classes, rule probes, scenario probes, stable ids, coverage and the CLI."""

from __future__ import annotations

import copy
import ipaddress
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from netparity.cli import main
from netparity.engine.traffic import Decision, PathKind, PodEndpoint, ServiceEndpoint
from netparity.model.snapshot import Snapshot, snapshot_from_dicts
from netparity.plan.model import Intent, Plan, PlannedProbe, Scenario
from netparity.plan.planner import make_plan
from netparity.probefile import parse_probes

from builders import base_cluster, cnp, netpol, ns, pod, service

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "aks-migration.yaml"
sys.path.insert(0, str(ROOT / "bench"))

from gen import generate  # noqa: E402


def example_docs() -> list[dict[str, Any]]:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return list(data["items"])


def decisions(probe: PlannedProbe) -> dict[str, str]:
    return {name: str(p.decision) for name, p in probe.predicted.items()}


def tagged(plan: Plan, scenario: Scenario) -> list[PlannedProbe]:
    return [p for p in plan.probes if scenario in p.scenarios]


def class_of(plan: Plan, pod_key: str) -> str:
    return next(name for name, pods in plan.classes.items() if pod_key in pods)


def two_pods(*extra: dict[str, Any], a: dict[str, str], b: dict[str, str]) -> Snapshot:
    """Namespace z with pods z/p1 (on n1) and z/p2 (on n2), labelled `a` and `b`."""
    return base_cluster(
        ns("z"),
        pod("z/p1", "10.244.0.50", "n1", a, [("http", 8080, "TCP")]),
        pod("z/p2", "10.244.1.50", "n2", b, [("http", 8080, "TCP")]),
        *extra,
    )


def ingress_from(selector: dict[str, Any]) -> dict[str, Any]:
    return netpol(
        "x/p",
        {
            "podSelector": {"matchLabels": {"app": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": selector}]}],
        },
    )


# --- equivalence classes ---------------------------------------------------------------------


def test_pods_whose_differing_labels_no_selector_reads_are_one_class() -> None:
    snap = two_pods(
        ingress_from({"matchLabels": {"app": "web"}}),
        a={"app": "web", "version": "1"},
        b={"app": "web", "version": "2"},
    )
    plan = make_plan(snap)
    assert class_of(plan, "z/p1") == class_of(plan, "z/p2")
    assert plan.classes[class_of(plan, "z/p1")] == ("z/p1", "z/p2")


def test_a_selector_on_a_label_splits_the_pods_it_tells_apart() -> None:
    snap = two_pods(
        ingress_from({"matchLabels": {"version": "1"}}),
        a={"app": "web", "version": "1"},
        b={"app": "web", "version": "2"},
    )
    plan = make_plan(snap)
    assert class_of(plan, "z/p1") != class_of(plan, "z/p2")


def test_pods_every_selector_answers_alike_for_are_one_class_despite_other_values() -> None:
    snap = two_pods(
        ingress_from(
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["u", "v"]}]}
        ),
        a={"app": "u"},
        b={"app": "v"},
    )
    plan = make_plan(snap)
    assert class_of(plan, "z/p1") == class_of(plan, "z/p2")


def test_hostnetwork_pods_are_nodes_not_classes() -> None:
    plan = make_plan(base_cluster())
    members = {k for pods in plan.classes.values() for k in pods}
    assert "kube-system/hn1" not in members and "x/a" in members


def named_port_cluster(number_b: int, policy: bool) -> Snapshot:
    extra = [
        pod("z/p1", "10.244.0.50", "n1", {"app": "w"}, [("web", 8080, "TCP")]),
        pod("z/p2", "10.244.1.50", "n2", {"app": "w"}, [("web", number_b, "TCP")]),
    ]
    if policy:
        extra.append(netpol("z/p", {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]}))
    return base_cluster(ns("z"), *extra)


def test_pods_with_different_numbers_for_a_port_name_a_policy_uses_are_split() -> None:
    plan = make_plan(named_port_cluster(9090, policy=True))
    assert class_of(plan, "z/p1") != class_of(plan, "z/p2")
    names = {class_of(plan, "z/p1"), class_of(plan, "z/p2")}
    assert names == {"z[*]{web=8080}", "z[*]{web=9090}"}


def test_port_names_no_policy_uses_do_not_split_pods() -> None:
    plan = make_plan(named_port_cluster(9090, policy=False))
    assert class_of(plan, "z/p1") == class_of(plan, "z/p2")


def block_cluster(cidr: str) -> Snapshot:
    return two_pods(
        netpol(
            "x/p",
            {
                "podSelector": {"matchLabels": {"app": "a"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}],
            },
        ),
        a={"app": "w"},
        b={"app": "w"},
    )


def test_pods_an_ipblock_holds_are_split_from_those_it_does_not() -> None:
    plan = make_plan(block_cluster("10.244.0.0/24"))  # holds z/p1 (node n1) only
    assert class_of(plan, "z/p1") != class_of(plan, "z/p2")
    assert "<in 10.244.0.0/24>" in class_of(plan, "z/p1")


def test_an_ipblock_holding_every_pod_does_not_split_them() -> None:
    plan = make_plan(block_cluster("10.244.0.0/16"))
    assert class_of(plan, "z/p1") == class_of(plan, "z/p2")


def test_a_label_cilium_drops_still_splits_pods_npm_tells_apart() -> None:
    snap = two_pods(
        netpol(
            "z/db0",
            {
                "podSelector": {"matchLabels": {"statefulset.kubernetes.io/pod-name": "db-0"}},
                "policyTypes": ["Ingress"],
            },
        ),
        a={"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"},
        b={"app": "db", "statefulset.kubernetes.io/pod-name": "db-1"},
    )
    plan = make_plan(snap)
    assert class_of(plan, "z/p1") != class_of(plan, "z/p2")


def test_a_class_probes_through_its_first_pod_and_stands_for_all_of_them() -> None:
    snap = two_pods(
        netpol("z/deny", {"podSelector": {}, "policyTypes": ["Egress"]}),
        a={"app": "w"},
        b={"app": "w"},
    )
    plan = make_plan(snap)
    from_z = [
        p
        for p in plan.probes
        if isinstance(p.traffic.source, PodEndpoint) and p.traffic.source.pod.namespace == "z"
    ]
    assert from_z
    for p in from_z:
        assert isinstance(p.traffic.source, PodEndpoint)
        assert p.traffic.source.pod.key == "z/p1"
        assert p.stands_for == ("z/p1", "z/p2")


# --- rule probes ---------------------------------------------------------------------------------


def test_every_rule_of_the_example_gets_an_admit_probe_that_the_rule_admits() -> None:
    plan = make_plan(snapshot_from_dicts(example_docs()))
    c = plan.coverage
    assert c.rules_total == 16 and c.rules_with_admit == 16 and not c.uncovered  # + D23, D19
    admitted: set[str] = set()
    for p in plan.probes:
        if p.intent is Intent.ADMIT and p.predicted["npm"].decision is Decision.ALLOW:
            admitted.update(r for r in p.rules if r in p.predicted["npm"].rules)
    rules = {
        f"NetworkPolicy {pol.key} {d}[{r.index}]"
        for pol in snapshot_from_dicts(example_docs()).network_policies
        for d, rs in (("ingress", pol.ingress), ("egress", pol.egress))
        if d.capitalize() in pol.policy_types  # D23: NPM never enforces the others
        for r in rs
    }
    assert admitted == rules


def test_an_admit_probe_goes_to_a_port_the_destination_declares() -> None:
    snap = base_cluster(
        netpol(
            "y/p",
            {
                "podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP"}]}],
            },
        )
    )
    plan = make_plan(snap)
    admit = [p for p in plan.probes if p.intent is Intent.ADMIT and p.kind is PathKind.POD_POD]
    assert admit
    assert {(p.traffic.port, str(p.traffic.protocol)) for p in admit} == {(80, "TCP")}


def test_a_port_range_gets_probes_at_both_ends_and_just_outside() -> None:
    snap = base_cluster(
        netpol(
            "x/range",
            {
                "podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                        "ports": [{"port": 8990, "endPort": 9010}],
                    }
                ],
            },
        )
    )
    plan = make_plan(snap)
    rule = "NetworkPolicy x/range ingress[0]"
    pod_pod = [
        p
        for p in plan.probes
        if rule in p.rules
        and p.kind is PathKind.POD_POD
        and p.source_class == class_of(plan, "x/a")
    ]
    by_port = {(p.traffic.port, str(p.traffic.protocol)): p for p in pod_pod}
    # the ends, the declared port inside (9000), the ports around, another protocol
    for port in (8990, 9000, 9010):
        assert by_port[(port, "TCP")].intent is Intent.ADMIT
        assert Scenario.ENDPORT in by_port[(port, "TCP")].scenarios
    for port in (8989, 9011):
        assert by_port[(port, "TCP")].intent is Intent.REJECT
        assert decisions(by_port[(port, "TCP")])["npm"] == "deny"
    assert by_port[(8990, "UDP")].intent is Intent.REJECT
    assert decisions(by_port[(9010, "TCP")]) == {
        "npm": "allow",
        "cilium": "allow",
        "cilium-1.16": "deny",
    }


def test_a_reject_probe_comes_from_a_peer_no_rule_admits() -> None:
    snap = base_cluster(
        netpol(
            "y/only-a",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "a"}}}
                        ]
                    }
                ],
            },
        )
    )
    plan = make_plan(snap)
    rule = "NetworkPolicy y/only-a ingress[0]"
    rejects = [p for p in plan.probes if rule in p.rules and p.intent is Intent.REJECT]
    peers = [p for p in rejects if p.traffic.port == 80 and str(p.traffic.protocol) == "TCP"]
    assert peers and all(decisions(p)["npm"] == "deny" for p in peers)
    assert all(p.source_class != class_of(plan, "x/a") for p in peers)


def test_a_probe_two_rules_share_is_planned_once_and_names_both() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "c"}},
        "ingress": [
            {
                "from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}],
                "ports": [{"port": 80}],
            }
        ],
    }
    plan = make_plan(base_cluster(netpol("y/one", spec), netpol("y/two", spec)))
    ids = [p.id for p in plan.probes]
    assert len(ids) == len(set(ids))
    shared = [p for p in plan.probes if len(p.rules) == 2]
    assert shared and shared[0].rules == (
        "NetworkPolicy y/one ingress[0]",
        "NetworkPolicy y/two ingress[0]",
    )


# --- scenarios -----------------------------------------------------------------------------------


def lb(etp: str | None = None) -> dict[str, Any]:
    return service(
        "y/web",
        {"app": "c"},
        80,
        80,
        type_="LoadBalancer",
        node_port=30080,
        etp=etp,
        lb_ip="192.0.2.10",
    )


SCENARIO_CASES: list[tuple[Scenario, list[dict[str, Any]], dict[str, str]]] = [
    (  # D1: the range's end is honoured by cilium, not by cilium-1.16
        Scenario.ENDPORT,
        [
            netpol(
                "y/r",
                {
                    "podSelector": {},
                    "ingress": [{"ports": [{"port": 70, "endPort": 80}]}],
                },
            )
        ],
        {"npm": "allow", "cilium": "allow", "cilium-1.16": "deny"},
    ),
    (  # D2: an ipBlock over pod IPs
        Scenario.IPBLOCK_PODS,
        [
            netpol(
                "x/eg",
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16"}}]}],
                },
            )
        ],
        {"npm": "allow", "cilium": "deny", "cilium-1.16": "deny"},
    ),
    (  # D2/D4d: an ipBlock over the node subnet, from another node
        Scenario.IPBLOCK_NODES,
        [
            netpol(
                "y/nodes",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{"ipBlock": {"cidr": "10.224.0.0/16"}}]}],
                },
            )
        ],
        {"npm": "allow", "cilium": "deny", "cilium-1.16": "deny"},
    ),
    (  # D3: an egress port name with two numbers in the cluster
        Scenario.NAMED_PORT,
        [
            netpol(
                "x/np",
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "http"}]}],
                },
            )
        ],
        {"npm": "allow", "cilium": "deny", "cilium-1.16": "deny"},
    ),
    (  # D4a: restricted egress to the own node
        Scenario.NODE_EGRESS,
        [netpol("x/deny", {"podSelector": {}, "policyTypes": ["Egress"]})],
        {"npm": "allow", "cilium": "deny", "cilium-1.16": "deny"},
    ),
    (  # D5: deny-all behind a LoadBalancer, received on the backend's node
        Scenario.EXTERNAL_INGRESS,
        [lb(), netpol("y/deny", {"podSelector": {}, "policyTypes": ["Ingress"]})],
        {"npm": "allow", "cilium": "deny", "cilium-1.16": "deny"},
    ),
    (  # D5d: an in-cluster client through the backend's node
        Scenario.LB_IN_CLUSTER,
        [lb(), netpol("y/deny", {"podSelector": {}, "policyTypes": ["Ingress"]})],
        {"npm": "allow", "cilium": "deny", "cilium-1.16": "deny"},
    ),
    (  # D6: a subject selector on a label Cilium leaves out of identities
        Scenario.IDENTITY_LABELS,
        [
            pod("y/db-0", "10.244.1.40", "n2", {"statefulset.kubernetes.io/pod-name": "db-0"}),
            netpol(
                "y/db",
                {
                    "podSelector": {"matchLabels": {"statefulset.kubernetes.io/pod-name": "db-0"}},
                    "policyTypes": ["Ingress"],
                },
            ),
        ],
        {"npm": "deny", "cilium": "allow", "cilium-1.16": "allow"},
    ),
    (  # D8: an SCTP port rule
        Scenario.SCTP,
        [
            netpol(
                "y/s",
                {"podSelector": {}, "ingress": [{"ports": [{"protocol": "SCTP", "port": 9999}]}]},
            )
        ],
        {"npm": "allow", "cilium": "deny", "cilium-1.16": "deny"},
    ),
    (  # D11: NPM skips a policy with an IPv6 ipBlock (fail-open)
        Scenario.UNTRANSLATABLE,
        [
            netpol(
                "y/v6",
                {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/8"}}]}]},
            )
        ],
        {"npm": "allow", "cilium": "deny", "cilium-1.16": "deny"},
    ),
]


@pytest.mark.parametrize(
    ("scenario", "extra", "expected"), SCENARIO_CASES, ids=[str(c[0]) for c in SCENARIO_CASES]
)
def test_each_scenario_present_gets_a_probe_predicted_as_semantics_says(
    scenario: Scenario, extra: list[dict[str, Any]], expected: dict[str, str]
) -> None:
    plan = make_plan(base_cluster(*extra))
    assert str(scenario) in plan.coverage.scenarios_present
    assert str(scenario) in plan.coverage.scenarios_probed
    found = [decisions(p) for p in tagged(plan, scenario)]
    assert expected in found


def test_no_scenario_is_present_in_a_cluster_without_policies() -> None:
    plan = make_plan(base_cluster())
    assert plan.coverage.scenarios_present == () and plan.synthetic_services == ()


def test_node_probes_use_roles_and_the_hostnetwork_port() -> None:
    plan = make_plan(base_cluster(netpol("y/deny", {"podSelector": {}, "policyTypes": ["Egress"]})))
    probes = {p.title: p for p in tagged(plan, Scenario.NODE_EGRESS)}
    own = probes["y[*] -> node:own 18080/TCP pod-node"]  # no selector reads a label
    other = probes["y[*] -> node:other 18080/TCP pod-node"]
    assert decisions(own)["npm"] == "allow" and decisions(own)["cilium"] == "deny"
    assert decisions(other)["npm"] == "deny"


def test_an_exposed_pod_is_probed_on_and_off_the_backends_node_with_its_traffic_policy() -> None:
    plan = make_plan(
        base_cluster(
            lb("Local"),
            netpol(
                "y/partner",
                {
                    "podSelector": {},
                    "ingress": [{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}],
                },
            ),
        )
    )
    titles = {p.title: decisions(p) for p in tagged(plan, Scenario.EXTERNAL_INGRESS)}
    on = titles["external:default -> lb:y/web@backend-node 80/TCP external-lb"]
    off = titles["external:default -> lb:y/web@other-node 80/TCP external-lb"]
    assert on == {"npm": "allow", "cilium": "allow", "cilium-1.16": "allow"}  # D5c
    assert off["npm"] == "deny"  # Local: no backend on the receiving node
    assert plan.synthetic_services == ()  # the pod has its own LoadBalancer


def test_an_ingress_restricted_pod_without_a_service_gets_a_run_owned_nodeport() -> None:
    plan = make_plan(
        base_cluster(netpol("y/deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    )
    (svc,) = plan.synthetic_services
    assert svc.name.startswith("netparity-") and svc.namespace == "y"
    assert str(svc.type) == "NodePort" and svc.external_traffic_policy == "Cluster"
    assert dict(svc.selector or {}) == {"app": "c"}
    (sp,) = svc.ports
    assert sp.port == 80 and sp.node_port is not None and 30000 <= sp.node_port <= 32767
    through = [
        p
        for p in tagged(plan, Scenario.EXTERNAL_INGRESS)
        if isinstance(p.traffic.destination, ServiceEndpoint)
        and p.traffic.destination.service.name == svc.name
    ]
    on = next(p for p in through if "@backend-node" in p.title)
    assert decisions(on) == {"npm": "allow", "cilium": "deny", "cilium-1.16": "deny"}
    assert str(Scenario.EXTERNAL_INGRESS) in plan.coverage.scenarios_present


def test_classes_that_meet_outside_traffic_alike_share_one_run_owned_service() -> None:
    snap = base_cluster(
        netpol("x/deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        netpol("y/deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
    )
    plan = make_plan(snap)
    # x/a and y/c both serve 80 behind a plain deny-all; x/b serves 8080: two Services
    assert len(plan.synthetic_services) == 2


# --- ids, determinism, renumbering -----------------------------------------------------------------


def test_the_same_snapshot_gives_an_equal_plan() -> None:
    first = make_plan(snapshot_from_dicts(example_docs()))
    second = make_plan(snapshot_from_dicts(example_docs()))
    assert first == second
    assert [p.id for p in first.probes] == [p.id for p in second.probes]


def renumber(docs: Iterable[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    """New pod names (sorting differently) and new pod IPs, the same labels and nodes."""
    out = []
    for doc in docs:
        d = copy.deepcopy(doc)
        if d.get("kind") == "Pod" and not d["spec"].get("hostNetwork"):
            name = d["metadata"]["name"]
            d["metadata"]["name"] = f"z{name[::-1]}"[:60].strip("-.") + "x"
            ip = ipaddress.ip_address(d["status"]["podIP"]) + offset
            d["status"]["podIP"] = str(ip)
            d["status"].pop("podIPs", None)
        out.append(d)
    return out


def test_a_renumbered_example_has_the_same_ids_in_the_same_order() -> None:
    before = make_plan(snapshot_from_dicts(example_docs()))
    after = make_plan(snapshot_from_dicts(renumber(example_docs(), 150)))
    assert [p.id for p in after.probes] == [p.id for p in before.probes]
    assert after.digest == before.digest
    assert [s.name for s in after.synthetic_services] == [s.name for s in before.synthetic_services]
    assert list(after.classes) == list(before.classes)
    assert [decisions(p) for p in after.probes] == [decisions(p) for p in before.probes]


def test_a_renumbered_generated_cluster_has_the_same_ids_in_the_same_order() -> None:
    docs = generate(pods=400, namespaces=12, policies=120, nodes=4, seed=7)
    before = make_plan(snapshot_from_dicts(docs))
    after = make_plan(snapshot_from_dicts(renumber(docs, 2000)))
    assert [p.id for p in after.probes] == [p.id for p in before.probes]
    assert before.coverage == after.coverage


def test_titles_never_contain_pod_names_pod_ips_or_node_names() -> None:
    snap = snapshot_from_dicts(example_docs())
    plan = make_plan(snap)
    words = {p.name for p in snap.pods} | {p.ip for p in snap.pods if p.ip}
    words |= {n.name for n in snap.nodes} | {n.ip for n in snap.nodes}
    for p in plan.probes:
        assert len(p.id) == 12 and int(p.id, 16) >= 0
        assert not any(w in p.title for w in words), p.title


def test_the_generator_is_deterministic() -> None:
    assert generate(pods=200, namespaces=5, policies=40, nodes=3) == generate(
        pods=200, namespaces=5, policies=40, nodes=3
    )


# --- explicit probes, coverage ---------------------------------------------------------------------


def test_explicit_probes_come_first_with_their_expectation_and_meaning_based_ids() -> None:
    snap = snapshot_from_dicts(example_docs())
    specs = parse_probes(
        {
            "probes": [
                {
                    "from": "port-range/app=range-client",
                    "to": "port-range/app=range-server",
                    "port": 9003,
                    "expect": {"npm": "allow", "cilium-1.16": "deny"},
                }
            ]
        }
    )
    plan = make_plan(snap, explicit=specs)
    first = plan.probes[0]
    assert first.intent is Intent.EXPLICIT
    assert first.expect is not None and str(first.expect["cilium-1.16"]) == "deny"
    generated = make_plan(snap)
    same = [p for p in generated.probes if p.id == first.id]
    assert same and same[0].intent is Intent.ADMIT  # the planner would have planned it anyway
    assert len(plan.probes) == len(generated.probes)


def test_coverage_counts_rules_with_admit_and_reject_probes() -> None:
    snap = base_cluster(
        netpol(
            "y/two",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}],
                        "ports": [{"port": 80}],
                    },
                    {},  # admits everything: nothing can be rejected
                ],
            },
        ),
        netpol("x/nobody", {"podSelector": {"matchLabels": {"app": "zz"}}, "ingress": [{}]}),
    )
    c = make_plan(snap).coverage
    assert c.rules_total == 3
    assert c.rules_with_admit == 2
    assert c.rules_with_reject == 0  # rule [1] admits all, so nothing just outside [0] is denied
    assert c.uncovered == ("NetworkPolicy x/nobody ingress[0]: the policy selects no pod",)


def test_the_generated_cluster_plan_covers_every_rule_and_every_scenario() -> None:
    plan = make_plan(snapshot_from_dicts(generate(pods=600, namespaces=15, policies=150, nodes=5)))
    c = plan.coverage
    assert c.rules_with_admit == c.rules_total
    # cilium-policy is a lint kind; essential a purpose (the generated cluster has no DNS);
    # D23 (policy-types) is found by the rules' own probes, not planned as a scenario;
    # bench/gen.py writes no multi-value NotIn namespaceSelector (D19): the example has one
    every = {str(s) for s in Scenario} - {
        "cilium-policy",
        "essential",
        "policy-types",
        "ns-selector-or",
        "lb-source-ranges",  # bench/gen.py writes no loadBalancerSourceRanges (D22)
        "itp-local",  # nor internalTrafficPolicy Local (D22)
    }
    assert set(c.scenarios_probed) == set(c.scenarios_present) == every


# --- the CLI ---------------------------------------------------------------------------------------


def test_the_cli_prints_the_plan_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--format", "json", str(EXAMPLE)]) == 0
    data = json.loads(capsys.readouterr().out)
    plan = make_plan(snapshot_from_dicts(example_docs()))
    assert [p["id"] for p in data["probes"]] == [p.id for p in plan.probes]
    assert data["digest"] == plan.digest and data["current"] == "npm"
    assert data["coverage"]["rules_total"] == 16
    probe = data["probes"][0]
    assert set(probe["predicted"]) == {"npm", "cilium", "cilium-1.16"}
    assert {"id", "title", "intent", "from", "to", "port", "protocol", "stands_for"} <= set(probe)
    svc = data["synthetic_services"][0]
    assert svc["spec"]["type"] == "NodePort" and svc["metadata"]["name"].startswith("netparity-")


def test_the_cli_table_marks_changes_and_prints_coverage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from netparity.example import example_path

    assert main(["plan", str(example_path()), "--target", "cilium-1.16"]) == 0
    out = capsys.readouterr().out
    assert "npm -> cilium-1.16" in out
    assert "allow -> deny !" in out
    assert "rules: 16/16 with an admit probe" in out
    assert "scenarios present: endport" in out


def test_the_cli_refuses_an_unknown_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plan", "--target", "calico"])
    assert "invalid choice" in capsys.readouterr().err


def test_the_planner_is_pure() -> None:
    import netparity.plan.planner as planner

    source = Path(planner.__file__).read_text(encoding="utf-8")
    for module in ("subprocess", "kubernetes", "pytest", "jinja2"):
        assert f"import {module}" not in source


def test_every_change_the_engine_predicts_carries_a_scenario_on_the_example() -> None:
    from netparity.cli._common import DEFAULT_EXAMPLE
    from netparity.model.snapshot import load_snapshot as _load
    from netparity.plan.planner import make_plan as _make_plan

    plan = _make_plan(_load([DEFAULT_EXAMPLE]))
    changed = [
        p for p in plan.probes if p.predicted["npm"].decision != p.predicted["cilium"].decision
    ]
    assert len(changed) >= 10
    assert [p.title for p in changed if p.scenario is None] == []


def test_the_outside_client_address_changes_predictions_not_ids() -> None:
    from netparity.cli._common import DEFAULT_EXAMPLE
    from netparity.engine.traffic import ExternalEndpoint
    from netparity.model.snapshot import load_snapshot as _load
    from netparity.plan.planner import make_plan as _make_plan

    snap = _load([DEFAULT_EXAMPLE])
    default = _make_plan(snap)
    # 198.51.100.77 is outside web/allow-partner-range's 203.0.113.0/24, so the planner
    # picks other peers around that rule; the default client's probes keep their ids.
    moved = {p.id: p for p in _make_plan(snap, external_ip="198.51.100.77").probes}
    outside = [
        p
        for p in default.probes
        if isinstance(p.traffic.source, ExternalEndpoint) and p.traffic.source.ip == "203.0.113.10"
    ]
    shared = [p for p in outside if p.id in moved]
    assert shared, "the default client's probes are found again by id"
    assert all(moved[p.id].traffic.source == ExternalEndpoint(ip="198.51.100.77") for p in shared)
    assert any(
        p.predicted["npm"].decision != moved[p.id].predicted["npm"].decision for p in shared
    ), "the partner range admits 203.0.113.10 and not 198.51.100.77"


# --- essential flows (#23) ------------------------------------------------------------------------


def _dns_and_api() -> list[dict[str, Any]]:
    dns = service("kube-system/kube-dns", {"k8s-app": "kube-dns"}, 53, 53, protocol="UDP")
    dns["spec"]["ports"][0]["name"] = "dns"
    dns["spec"]["ports"].append(
        {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"}
    )
    api = service("default/kubernetes", {}, 443, 6443, cluster_ip="10.0.0.1")
    del api["spec"]["selector"]
    return [
        ns("kube-system"),
        ns("default"),
        pod(
            "kube-system/coredns-1",
            "10.244.1.20",
            "n2",
            {"k8s-app": "kube-dns"},
            [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")],
        ),
        dns,
        api,
    ]


def _src_ns(p: PlannedProbe) -> str | None:
    src = p.traffic.source
    return src.pod.namespace if isinstance(src, PodEndpoint) else None


def test_essential_dns_probes_are_planned_from_every_class_and_cut_by_the_guides_cnp() -> None:
    from netparity.plan.essential_probes import Check, essential_check

    guide = cnp(
        "x/allow-node-egress",
        {"endpointSelector": {}, "egress": [{"toEntities": ["host", "remote-node"]}]},
    )
    plan = make_plan(base_cluster(*_dns_and_api(), guide), target="cilium")
    essential = [p for p in plan.probes if Scenario.ESSENTIAL in p.scenarios]
    from_x = [p for p in essential if _src_ns(p) == "x"]
    udp = [p for p in from_x if p.traffic.port == 53 and str(p.traffic.protocol) == "UDP"]
    assert udp, [p.title for p in essential]
    probe = udp[0]
    assert probe.scenario is Scenario.ESSENTIAL
    assert "svc:kube-system/kube-dns" in probe.title
    assert essential_check(probe) is Check.DNS
    assert probe.predicted["npm"].decision.value == "allow"
    assert probe.predicted["cilium"].decision.value == "deny"
    # y's pods are not selected by the CNP: DNS stays open there
    from_y = [p for p in essential if _src_ns(p) == "y"]
    assert from_y and all(
        p.predicted["cilium"].decision.value == "allow" for p in from_y if p.traffic.port == 53
    )
    # the API server: a TCP connect through default/kubernetes
    api = [p for p in from_x if "default/kubernetes" in p.title]
    assert api and essential_check(api[0]) is Check.CONNECT
    # the DNS pods do not probe their own Service (hairpin)
    assert not any(_src_ns(p) == "kube-system" and p.traffic.port == 53 for p in essential)


def test_essential_probes_leave_the_ids_of_other_probes_alone() -> None:
    plain = make_plan(base_cluster(), target="cilium")
    with_dns = make_plan(base_cluster(*_dns_and_api()), target="cilium")
    ids = {p.id for p in with_dns.probes}
    assert {p.id for p in plain.probes} <= ids
    assert any(Scenario.ESSENTIAL in p.scenarios for p in with_dns.probes)


def test_coverage_counts_the_essential_flows_where_the_cluster_has_dns() -> None:
    plain = make_plan(base_cluster(), target="cilium").coverage
    with_dns = make_plan(base_cluster(*_dns_and_api()), target="cilium").coverage
    assert "essential" not in plain.scenarios_present  # no kube-dns, no API Service
    assert "essential" in with_dns.scenarios_present
    assert "essential" in with_dns.scenarios_probed
