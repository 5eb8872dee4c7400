"""The engine: selectors, isolation, union, ports, and each dataplane knob as a pair."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Decision, Traffic, Verdict
from netparity.errors import InputError
from netparity.facts.cilium_config import CILIUM_CONFIG
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot
from netparity.probefile import resolve_endpoint

from builders import base_cluster, cnp, netpol, pod, service


def judge(
    snap: Snapshot, src: str, dst: str, port: int | str, dp: str = "spec", proto: str = "TCP"
) -> Verdict:
    traffic = Traffic(
        source=resolve_endpoint(src, snap, as_source=True),
        destination=resolve_endpoint(dst, snap, as_source=False),
        port=port,
        protocol=Protocol(proto),
    )
    return Engine(snap).evaluate(traffic, get_dataplane(dp))


def traffic(snap: Snapshot, src: str, dst: str, port: int | str, proto: str = "TCP") -> Traffic:
    return Traffic(
        source=resolve_endpoint(src, snap, as_source=True),
        destination=resolve_endpoint(dst, snap, as_source=False),
        port=port,
        protocol=Protocol(proto),
    )


def decision(
    snap: Snapshot, src: str, dst: str, port: int | str, dp: str = "spec", proto: str = "TCP"
) -> str:
    return str(judge(snap, src, dst, port, dp, proto).decision)


def deny_ingress_y_except(peer: dict[str, Any]) -> Snapshot:
    return base_cluster(
        netpol(
            "y/p", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [peer]}]}
        )
    )


# --- isolation, union, direction --------------------------------------------------------


def test_a_pod_no_policy_selects_is_open() -> None:
    assert decision(base_cluster(), "x/a", "y/c", 80) == "allow"


def test_an_empty_ingress_list_denies_everything_and_names_the_policy() -> None:
    snap = base_cluster(netpol("y/deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    v = judge(snap, "x/a", "y/c", 80)
    assert v.decision is Decision.DENY
    assert v.ingress is not None and "NetworkPolicy y/deny" in v.ingress.selected_by
    assert "no rule admits" in v.ingress.reason


def test_policies_that_select_a_pod_are_a_union() -> None:
    snap = base_cluster(
        netpol("y/deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        netpol(
            "y/allow-a",
            {
                "podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}],
            },
        ),
    )
    v = judge(snap, "x/a", "y/c", 80)
    assert v.decision is Decision.ALLOW
    assert v.ingress is not None and [str(r) for r in v.ingress.rules] == [
        "NetworkPolicy y/allow-a ingress[0]"
    ]


def test_the_verdict_is_egress_and_ingress() -> None:
    snap = base_cluster(netpol("x/deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]}))
    v = judge(snap, "x/a", "y/c", 80)
    assert v.decision is Decision.DENY
    assert v.egress is not None and v.egress.decision is Decision.DENY
    assert v.ingress is not None and v.ingress.decision is Decision.ALLOW


def test_policy_types_default_to_ingress_only_without_egress_rules() -> None:
    snap = base_cluster(netpol("x/p", {"podSelector": {}}))
    assert snap.network_policies[0].policy_types == frozenset({"Ingress"})
    assert decision(snap, "x/a", "y/c", 80) == "allow"  # egress not isolated
    assert decision(snap, "y/c", "x/a", 80) == "deny"


def test_policy_types_default_adds_egress_when_egress_rules_exist() -> None:
    snap = base_cluster(
        netpol("x/p", {"podSelector": {}, "egress": [{"to": [{"podSelector": {}}]}]})
    )
    assert snap.network_policies[0].policy_types == frozenset({"Ingress", "Egress"})
    assert decision(snap, "x/a", "x/b", 8080) == "deny"  # x/b's ingress is isolated too
    assert decision(snap, "x/a", "y/c", 80) == "deny"  # egress only to x pods


# --- selectors ------------------------------------------------------------------------------


def test_an_absent_namespace_selector_means_the_policys_own_namespace() -> None:
    snap = deny_ingress_y_except({"podSelector": {}})
    assert decision(snap, "x/a", "y/c", 80) == "deny"


def test_an_empty_namespace_selector_means_every_namespace() -> None:
    snap = deny_ingress_y_except({"namespaceSelector": {}})
    assert decision(snap, "x/a", "y/c", 80) == "allow"


def test_namespace_and_pod_selector_in_one_peer_are_anded() -> None:
    snap = deny_ingress_y_except(
        {
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "podSelector": {"matchLabels": {"app": "b"}},
        }
    )
    assert decision(snap, "x/a", "y/c", 80) == "deny"
    assert decision(snap, "x/b", "y/c", 80) == "allow"


def test_namespaces_match_by_their_name_label() -> None:
    snap = deny_ingress_y_except(
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}
    )
    assert decision(snap, "x/a", "y/c", 80) == "allow"


@pytest.mark.parametrize(
    ("expr", "a", "b"),
    [
        ({"key": "app", "operator": "In", "values": ["a"]}, "allow", "deny"),
        ({"key": "app", "operator": "NotIn", "values": ["a"]}, "deny", "allow"),
        ({"key": "tier", "operator": "Exists"}, "deny", "allow"),
        ({"key": "tier", "operator": "DoesNotExist"}, "allow", "deny"),
        # NotIn on a key the pod lacks matches (apimachinery), unlike policy-assistant.
        ({"key": "tier", "operator": "NotIn", "values": ["web"]}, "allow", "deny"),
    ],
)
def test_match_expressions_follow_apimachinery(expr: dict[str, Any], a: str, b: str) -> None:
    snap = deny_ingress_y_except(
        {"namespaceSelector": {}, "podSelector": {"matchExpressions": [expr]}}
    )
    assert decision(snap, "x/a", "y/c", 80) == a
    assert decision(snap, "x/b", "y/c", 80) == b


def test_an_ipblock_except_carves_out_addresses() -> None:
    snap = deny_ingress_y_except(
        {"ipBlock": {"cidr": "10.244.0.0/24", "except": ["10.244.0.10/32"]}}
    )
    assert decision(snap, "x/a", "y/c", 80, "npm") == "deny"
    assert decision(snap, "x/b", "y/c", 80, "npm") == "allow"


# --- ports ----------------------------------------------------------------------------------


def ingress_ports(*ports: dict[str, Any]) -> Snapshot:
    return base_cluster(
        netpol(
            "x/p",
            {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"ports": list(ports)}]},
        )
    )


def test_a_numeric_port_rule_admits_only_that_port_and_protocol() -> None:
    snap = ingress_ports({"port": 8080})
    assert decision(snap, "y/c", "x/b", 8080) == "allow"
    assert decision(snap, "y/c", "x/b", 9000) == "deny"
    assert decision(snap, "y/c", "x/b", 8080, proto="UDP") == "deny"


def test_a_protocol_without_port_admits_every_port_of_it() -> None:
    snap = ingress_ports({"protocol": "UDP"})
    assert decision(snap, "y/c", "x/b", 9000, proto="UDP") == "allow"
    assert decision(snap, "y/c", "x/b", 9000) == "deny"


def test_an_end_port_range_is_inclusive() -> None:
    snap = ingress_ports({"port": 9000, "endPort": 9005})
    assert [decision(snap, "y/c", "x/b", p) for p in (8999, 9000, 9005, 9006)] == [
        "deny",
        "allow",
        "allow",
        "deny",
    ]


def test_ingress_named_ports_resolve_on_the_destination_pod() -> None:
    snap = ingress_ports({"port": "http"})
    assert decision(snap, "y/c", "x/b", 8080) == "allow"
    assert decision(snap, "y/c", "x/b", "http") == "allow"
    assert decision(snap, "y/c", "x/b", 80) == "deny"


# --- dataplane knobs, each as a pair that differs only in the dataplane -----------------------


def egress_from_x_a(*rules: dict[str, Any]) -> Snapshot:
    return base_cluster(
        netpol(
            "x/e",
            {
                "podSelector": {"matchLabels": {"app": "a"}},
                "policyTypes": ["Egress"],
                "egress": list(rules),
            },
        )
    )


def test_d1_end_port_is_honoured_by_cilium_and_not_by_cilium_116() -> None:
    snap = ingress_ports({"port": 9000, "endPort": 9005})
    assert decision(snap, "y/c", "x/b", 9003, "cilium") == "allow"
    v = judge(snap, "y/c", "x/b", 9003, "cilium-1.16")
    assert v.decision is Decision.DENY
    assert any("D1" in u for u in v.uncertain)
    assert decision(snap, "y/c", "x/b", 9000, "cilium-1.16") == "allow"


def test_d2_ipblock_covers_pod_ips_under_npm_but_not_cilium() -> None:
    snap = egress_from_x_a({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
    assert decision(snap, "x/a", "y/c", 80, "npm") == "allow"
    assert decision(snap, "x/a", "y/c", 80, "cilium") == "deny"
    assert decision(snap, "x/a", "ip:198.51.100.20", 443, "cilium") == "allow"


def test_d2_ipblock_covers_remote_node_ips_under_npm_but_not_cilium() -> None:
    snap = egress_from_x_a({"to": [{"ipBlock": {"cidr": "10.224.0.0/16"}}]})
    assert decision(snap, "x/a", "node:n2", 18080, "npm") == "allow"
    assert decision(snap, "x/a", "node:n2", 18080, "cilium") == "deny"
    assert decision(snap, "x/a", "kube-system/hn2", 18080, "npm") == "allow"
    assert decision(snap, "x/a", "kube-system/hn2", 18080, "cilium") == "deny"


def test_d2_ingress_ipblock_of_pod_cidr_admits_pods_under_npm_only() -> None:
    snap = deny_ingress_y_except({"ipBlock": {"cidr": "10.244.0.0/16"}})
    assert decision(snap, "x/a", "y/c", 80, "npm") == "allow"
    assert decision(snap, "x/a", "y/c", 80, "cilium") == "deny"


def test_d3_egress_named_port_with_a_conflicting_name_is_void_under_cilium() -> None:
    decoy = pod("y/decoy", "10.244.1.20", "n2", {"app": "decoy"}, [("http", 8000, "TCP")])
    snap = egress_from_x_a({"ports": [{"port": "http"}]})
    snap_decoy = base_cluster(
        decoy,
        *[
            netpol(
                p.key,
                {
                    "podSelector": {"matchLabels": {"app": "a"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "http"}]}],
                },
            )
            for p in snap.network_policies
        ],
    )
    # x/b names http=8080, y/c names http=80: already two numbers cluster-wide
    assert decision(snap, "x/a", "x/b", 8080, "npm") == "allow"
    assert decision(snap, "x/a", "x/b", 8080, "cilium") == "deny"
    assert decision(snap_decoy, "x/a", "y/c", 80, "cilium") == "deny"


def test_d3_a_single_cluster_wide_number_applies_to_every_peer_under_cilium() -> None:
    snap = egress_from_x_a(
        {"ports": [{"port": "sctp", "protocol": "SCTP"}]},
        {"ports": [{"port": "dns", "protocol": "UDP"}]},
    )
    # `dns` is 53/UDP on x/a only: Cilium allows 53/UDP to anything, NPM only to pods naming it
    assert decision(snap, "x/a", "ip:198.51.100.20", 53, "cilium", "UDP") == "allow"
    assert decision(snap, "x/a", "ip:198.51.100.20", 53, "npm", "UDP") == "deny"


def test_d4a_egress_to_the_own_node_bypasses_npm_but_not_cilium() -> None:
    snap = egress_from_x_a()
    v = judge(snap, "x/a", "node:n1", 10250, "npm")
    assert v.decision is Decision.ALLOW and "D4a" in v.explanation
    assert decision(snap, "x/a", "node:n1", 10250, "cilium") == "deny"
    assert decision(snap, "x/a", "node:n2", 10250, "npm") == "deny"


def test_d4a_cilium_allows_the_own_node_with_the_host_entity() -> None:
    snap = base_cluster(
        cnp(
            "x/host",
            {
                "endpointSelector": {"matchLabels": {"app": "a"}},
                "egress": [{"toEntities": ["host"]}],
            },
        )
    )
    assert decision(snap, "x/a", "node:n1", 10250, "cilium") == "allow"
    assert decision(snap, "x/a", "node:n2", 10250, "cilium") == "deny"


def test_d4c_ingress_from_the_own_node_is_always_allowed() -> None:
    snap = base_cluster(netpol("x/deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    for dp in ("npm", "cilium"):
        assert decision(snap, "node:n1", "x/a", 80, dp) == "allow"
        assert decision(snap, "node:n2", "x/a", 80, dp) == "deny"


def lb_cluster(
    etp: str | None, backend_node: str, ingress: list[dict[str, Any]] | None
) -> Snapshot:
    web = pod(
        "y/web",
        "10.244.1.30" if backend_node == "n2" else "10.244.0.30",
        backend_node,
        {"app": "web"},
        [("http", 8080, "TCP")],
    )
    extra: list[dict[str, Any]] = [
        web,
        service(
            "y/web",
            {"app": "web"},
            80,
            8080,
            type_="LoadBalancer",
            node_port=30080,
            etp=etp,
            lb_ip="192.0.2.10",
        ),
    ]
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress"],
    }
    if ingress is not None:
        spec["ingress"] = ingress
    extra.append(netpol("y/web", spec))
    return base_cluster(*extra)


def test_d5_deny_all_is_bypassed_by_npm_for_a_local_backend_only() -> None:
    snap = lb_cluster(None, "n1", None)
    assert decision(snap, "external", "lb:y/web@n1", 80, "npm") == "allow"
    assert decision(snap, "external", "lb:y/web@n1", 80, "cilium") == "deny"
    snap2 = lb_cluster(None, "n2", None)
    assert decision(snap2, "external", "nodeport:y/web@n1", 80, "npm") == "deny"


def test_d5b_node_subnet_ipblock_admits_remote_backends_under_npm_only() -> None:
    snap = lb_cluster(None, "n2", [{"from": [{"ipBlock": {"cidr": "10.224.0.0/16"}}]}])
    assert decision(snap, "external", "nodeport:y/web@n1", 80, "npm") == "allow"
    assert decision(snap, "external", "nodeport:y/web@n1", 80, "cilium") == "deny"


def test_d5_client_ipblock_works_for_local_backends_under_cilium() -> None:
    snap = lb_cluster(None, "n1", [{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}])
    assert decision(snap, "external", "lb:y/web@n1", 80, "cilium") == "allow"
    snap2 = lb_cluster(None, "n2", [{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}])
    assert decision(snap2, "external", "lb:y/web@n1", 80, "cilium") == "deny"
    assert decision(snap2, "external", "lb:y/web@n1", 80, "npm") == "deny"


def test_d5c_local_traffic_policy_keeps_the_client_address_in_both() -> None:
    snap = lb_cluster("Local", "n1", [{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}])
    for dp in ("npm", "cilium"):
        assert decision(snap, "external", "lb:y/web@n1", 80, dp) == "allow"
        assert decision(snap, "ip:198.51.100.1", "lb:y/web@n1", 80, dp) == "deny"
    assert decision(snap, "external", "lb:y/web@n2", 80, "npm") == "deny"  # no local backend


def test_a_ports_only_rule_admits_external_traffic_on_both() -> None:
    snap = lb_cluster(None, "n2", [{"ports": [{"port": 8080}]}])
    for dp in ("npm", "cilium"):
        assert decision(snap, "external", "lb:y/web@n1", 80, dp) == "allow"


def test_d5d_in_cluster_client_to_a_local_lb_backend_bypasses_npm() -> None:
    snap = lb_cluster(
        None, "n1", [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}]
    )
    assert decision(snap, "x/a", "lb:y/web", 80, "npm") == "allow"
    assert decision(snap, "x/a", "lb:y/web", 80, "cilium") == "deny"
    assert decision(snap, "x/a", "svc:y/web", 80, "npm") == "deny"  # ClusterIP is judged post-DNAT


def test_d10_service_traffic_is_judged_on_the_target_port() -> None:
    snap = lb_cluster(None, "n1", [{"ports": [{"port": 80}]}])
    assert decision(snap, "x/a", "svc:y/web", 80, "npm") == "deny"
    snap2 = lb_cluster(None, "n1", [{"ports": [{"port": 8080}]}])
    assert decision(snap2, "x/a", "svc:y/web", 80, "npm") == "allow"


def test_d6_cilium_ignores_excluded_labels_in_a_subject_selector() -> None:
    snap = base_cluster(
        pod(
            "y/db-0",
            "10.244.1.40",
            "n2",
            {"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"},
            [(None, 8080, "TCP")],
        ),
        netpol(
            "y/db",
            {
                "podSelector": {"matchLabels": {"statefulset.kubernetes.io/pod-name": "db-0"}},
                "policyTypes": ["Ingress"],
            },
        ),
    )
    assert decision(snap, "x/a", "y/db-0", 8080, "npm") == "deny"
    assert decision(snap, "x/a", "y/db-0", 8080, "cilium") == "allow"


def test_d8_sctp_port_rules_match_under_npm_but_not_cilium() -> None:
    snap = base_cluster(
        netpol(
            "y/s", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "SCTP", "port": 9999}]}]}
        )
    )
    assert decision(snap, "x/a", "y/c", 9999, "npm", "SCTP") == "allow"
    # D8 alone (SCTP port rules never match), without D24's drop of every SCTP packet
    only_d8 = replace(get_dataplane("cilium"), name="cilium-d8", sctp_dropped=False)
    v = Engine(snap).evaluate(traffic(snap, "x/a", "y/c", 9999, "SCTP"), only_d8)
    assert v.decision is Decision.DENY and any("D8" in u for u in v.uncertain)


def test_d24_cilium_without_sctp_drops_every_sctp_flow_policy_or_not() -> None:
    snap = base_cluster()  # no policy at all
    assert decision(snap, "x/a", "y/c", 9999, "npm", "SCTP") == "allow"
    v = judge(snap, "x/a", "y/c", 9999, "cilium", "SCTP")
    assert v.decision is Decision.DENY and "D24" in v.explanation
    assert decision(snap, "x/a", "y/c", 9999, "cilium", "TCP") == "allow"
    assert decision(snap, "node:n1", "y/c", 9999, "cilium-1.19", "SCTP") == "deny"
    enabled = get_dataplane("cilium").with_config(
        {"kube-system/cilium-config": {"enable-sctp": "true"}}
    )
    assert Engine(snap).evaluate(traffic(snap, "x/a", "y/c", 9999, "SCTP"), enabled).decision == (
        Decision.ALLOW
    )


def test_d11_npm_skips_a_policy_with_an_ipv6_ipblock() -> None:
    snap = egress_from_x_a(
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}, {"ipBlock": {"cidr": "::/0"}}]}
    )
    v = judge(snap, "x/a", "ip:198.51.100.20", 443, "npm")
    assert v.decision is Decision.ALLOW and "D11" in v.explanation
    assert decision(snap, "x/a", "ip:198.51.100.20", 443, "cilium") == "deny"


def test_d19_npm_ors_a_multi_value_not_in_namespace_selector_cilium_ands_it() -> None:
    # team NotIn [a, b]: x (team=a) and y (team=b) are both excluded under the spec.
    snap = deny_ingress_y_except(
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a", "b"]}]
            }
        }
    )
    assert decision(snap, "x/a", "y/c", 80, "spec") == "deny"
    assert decision(snap, "x/a", "y/c", 80, "cilium") == "deny"
    assert decision(snap, "x/a", "y/c", 80, "npm") == "allow"


def test_d19_npm_keeps_a_multi_value_in_and_a_single_not_in_as_the_spec() -> None:
    expr_in = {"key": "team", "operator": "In", "values": ["b", "z"]}
    expr_out = {"key": "team", "operator": "NotIn", "values": ["a"]}
    for expr in (expr_in, expr_out):
        snap = deny_ingress_y_except({"namespaceSelector": {"matchExpressions": [expr]}})
        assert decision(snap, "x/a", "y/c", 80, "npm") == "deny"
        assert decision(snap, "x/a", "y/c", 80, "spec") == "deny"


def test_d23_cilium_enforces_ingress_rules_that_policy_types_leaves_out() -> None:
    snap = base_cluster(
        netpol(
            "y/egress-only",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{}],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "zzz"}}}]}],
            },
        )
    )
    assert decision(snap, "x/a", "y/c", 80, "spec") == "allow"
    assert decision(snap, "x/a", "y/c", 80, "npm") == "allow"
    v = judge(snap, "x/a", "y/c", 80, "cilium")
    assert v.decision is Decision.DENY
    assert v.ingress is not None and "NetworkPolicy y/egress-only" in v.ingress.selected_by
    assert decision(snap, "x/a", "y/c", 80, "cilium-1.16") == "deny"


# --- Cilium policies ----------------------------------------------------------------------


def test_cilium_policies_are_enforced_by_cilium_only() -> None:
    snap = base_cluster(
        cnp(
            "y/only-x",
            {
                "endpointSelector": {},
                "ingress": [
                    {
                        "fromEndpoints": [
                            {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "x", "app": "b"}}
                        ]
                    }
                ],
            },
        )
    )
    assert decision(snap, "x/a", "y/c", 80, "cilium") == "deny"
    assert decision(snap, "x/b", "y/c", 80, "cilium") == "allow"
    assert decision(snap, "x/a", "y/c", 80, "npm") == "allow"


def test_cilium_from_endpoints_are_scoped_to_the_policy_namespace() -> None:
    snap = base_cluster(cnp("y/p", {"endpointSelector": {}, "ingress": [{"fromEndpoints": [{}]}]}))
    assert decision(snap, "x/a", "y/c", 80, "cilium") == "deny"


def test_cilium_to_ports_with_end_port_and_deny_rules_win() -> None:
    snap = base_cluster(
        cnp(
            "y/p",
            {
                "endpointSelector": {},
                "ingress": [
                    {
                        "fromEntities": ["cluster"],
                        "toPorts": [
                            {"ports": [{"port": "9000", "endPort": 9005, "protocol": "TCP"}]}
                        ],
                    }
                ],
                "ingressDeny": [
                    {
                        "fromEndpoints": [
                            {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "x", "app": "b"}}
                        ]
                    }
                ],
            },
        )
    )
    assert decision(snap, "x/a", "y/c", 9003, "cilium") == "allow"
    assert decision(snap, "x/a", "y/c", 9006, "cilium") == "deny"
    v = judge(snap, "x/b", "y/c", 9003, "cilium")
    assert v.decision is Decision.DENY and "ingressDeny" in v.explanation


def test_an_unmodelled_cilium_construct_makes_the_verdict_unknown_and_names_it() -> None:
    snap = base_cluster(
        cnp(
            "x/fqdn",
            {"endpointSelector": {}, "egress": [{"toFQDNs": [{"matchName": "example.com"}]}]},
        ),
        cilium_config(**{"enable-l7-proxy": "true"}),  # a DNS proxy fills toFQDNs (#23)
    )
    traffic = Traffic(
        source=resolve_endpoint("x/a", snap, as_source=True),
        destination=resolve_endpoint("ip:198.51.100.20", snap, as_source=False),
        port=443,
        protocol=Protocol.TCP,
    )
    v = Engine(snap).evaluate(traffic, get_dataplane("cilium").with_config(snap.config))
    assert v.decision is Decision.UNKNOWN
    assert "CiliumNetworkPolicy x/fqdn" in v.explanation and "toFQDNs" in v.explanation
    assert decision(snap, "x/a", "ip:198.51.100.20", 443, "npm") == "allow"


def test_cilium_world_entity_and_cidr_match_only_outside_addresses() -> None:
    snap = base_cluster(
        cnp(
            "x/w",
            {
                "endpointSelector": {"matchLabels": {"app": "a"}},
                "egress": [{"toEntities": ["world"]}, {"toCIDR": ["10.0.0.0/8"]}],
            },
        )
    )
    assert decision(snap, "x/a", "ip:198.51.100.20", 443, "cilium") == "allow"
    assert decision(snap, "x/a", "ip:10.9.9.9", 443, "cilium") == "allow"
    assert decision(snap, "x/a", "y/c", 80, "cilium") == "deny"


# --- cilium-config (netparity/facts/cilium_config.py) ------------------------------------


def cilium_config(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": "kube-system"},
        "data": data,
    }


def configured(snap: Snapshot, src: str, dst: str, port: int, dp: str, proto: str = "TCP") -> str:
    traffic = Traffic(
        source=resolve_endpoint(src, snap, as_source=True),
        destination=resolve_endpoint(dst, snap, as_source=False),
        port=port,
        protocol=Protocol(proto),
    )
    return str(Engine(snap).evaluate(traffic, get_dataplane(dp).with_config(snap.config)).decision)


def labelled_and_denied(labels: dict[str, str], *config: dict[str, Any]) -> Snapshot:
    """Pod y/t carries `labels`; a deny-all ingress policy selects it by exactly those labels."""
    return base_cluster(
        *config,
        pod("y/t", "10.244.1.50", "n2", labels, [(None, 8080, "TCP")]),
        netpol("y/t", {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"]}),
    )


@pytest.mark.parametrize(
    ("setting", "label", "cilium"),
    [
        ("!spark-role", "spark-role", "allow"),  # excluded: the policy selects nothing
        ("!spark-role", "park-role", "deny"),  # a prefix of the key is not the key
        ("k8s:!spark-role", "spark-role", "allow"),  # the k8s: source is every pod label's
        ("k8s:!spark-role", "spark-role-x", "allow"),  # patterns match at the key's start
        ("k8s:!spark-role", "my-spark-role", "deny"),  # ... and only there
        ("container:!spark-role", "spark-role", "deny"),  # another source: no pod label
        ("!k8s:spark-role", "spark-role", "allow"),  # an include of source `!k8s`: matches none
        ("k8s:app", "team", "allow"),  # include-only: team is dropped
        ("k8s:te", "team", "deny"),  # an include is a prefix too
        ("k8s:te k8s:!team", "team", "allow"),  # the longer exclusion wins
        ("k8s:!te k8s:team", "team", "deny"),  # the longer include wins
        (None, "failure-domain.beta.kubernetes.io/zone", "allow"),  # the default `.*beta...`
        (None, "statefulset.kubernetes.io/pod-name", "allow"),
        (None, "app.kubernetes.io/name", "deny"),  # a default include
    ],
)
def test_d6_cilium_reads_the_labels_setting_as_cilium_does(
    setting: str | None, label: str, cilium: str
) -> None:
    config = [] if setting is None else [cilium_config(labels=setting)]
    snap = labelled_and_denied({label: "v"}, *config)
    assert configured(snap, "x/a", "y/t", 8080, "npm") == "deny"
    assert configured(snap, "x/a", "y/t", 8080, "cilium") == cilium


def test_d6_under_an_include_list_namespace_selectors_still_select() -> None:
    snap = base_cluster(
        cilium_config(labels="k8s:app"),
        netpol(
            "y/from-a",
            {
                "podSelector": {"matchLabels": {"app": "c"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}],
            },
        ),
        netpol(
            "x/tier",
            {"podSelector": {"matchLabels": {"tier": "web"}}, "policyTypes": ["Ingress"]},
        ),
    )
    assert configured(snap, "x/a", "y/c", 80, "cilium") == "allow"
    assert configured(snap, "y/c", "x/b", 8080, "cilium") == "allow"  # tier is not included
    assert configured(snap, "y/c", "x/b", 8080, "npm") == "deny"


def test_d4c_allow_localhost_policy_subjects_the_own_node_to_policy() -> None:
    snap = base_cluster(
        cilium_config(**{"allow-localhost": "policy"}),
        netpol("x/deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        netpol("y/open", {"podSelector": {}, "ingress": [{}]}),
    )
    assert configured(snap, "node:n1", "x/a", 80, "npm") == "allow"  # NPM: no such setting
    assert configured(snap, "node:n1", "x/a", 80, "cilium") == "deny"
    assert configured(snap, "node:n2", "y/c", 80, "cilium") == "allow"
    for value in ("auto", "always"):
        snap2 = base_cluster(
            cilium_config(**{"allow-localhost": value}),
            netpol("x/deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        )
        assert configured(snap2, "node:n1", "x/a", 80, "cilium") == "allow"


def test_d8_enable_sctp_makes_cilium_match_sctp_port_rules() -> None:
    policy = netpol(
        "y/s", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "SCTP", "port": 9999}]}]}
    )
    for value, want in (("true", "allow"), ("True", "allow"), ("false", "deny"), ("on", "deny")):
        snap = base_cluster(cilium_config(**{"enable-sctp": value}), policy)
        assert configured(snap, "x/a", "y/c", 9999, "cilium", "SCTP") == want, value


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"labels": "k8s:!team("}, "data.labels"),
        ({"labels": "k8s:"}, "data.labels"),
        ({"allow-localhost": "sometimes"}, "data.allow-localhost"),
    ],
)
def test_cilium_config_values_the_agent_refuses_are_input_errors(
    data: dict[str, str], field: str
) -> None:
    snap = base_cluster(cilium_config(**data))
    with pytest.raises(InputError) as e:
        get_dataplane("cilium").with_config(snap.config)
    assert e.value.field == field and e.value.name == "kube-system/cilium-config"
    get_dataplane("npm").with_config(snap.config)  # NPM does not read Cilium's settings


def test_one_table_of_cilium_default_label_exclusions() -> None:
    """The engine's default filter is the neutral module's, whose table cites Cilium's source."""
    from netparity.facts import cilium_config as facts

    assert get_dataplane("cilium").label_filter is facts.DEFAULT_LABEL_FILTER
    assert get_dataplane("npm").label_filter is None
    assert r".*beta\.kubernetes\.io" in facts.DEFAULT_LABEL_EXCLUSIONS
    assert "pkg/labelsfilter/filter.go" in (facts.__doc__ or "")
    kept = facts.DEFAULT_LABEL_FILTER
    for key in ("io.kubernetes.pod.namespace", "io.cilium.k8s.policy.cluster", "app"):
        assert kept.keeps(key), key
    for key in ("io.kubernetes.pod.name", "controller-uid", "annotation.x", "k8s.io/x"):
        assert kept.excludes(key), key


# --- D18, D25, D26: where NPM and Cilium agree with each other and not with the spec ------


NOT_BLOCKED = {
    "namespaceSelector": {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["blocked"]}
        ]
    }
}


def test_d18_a_purely_negative_namespace_selector_matches_non_pods_up_to_cilium_1_18() -> None:
    snap = deny_ingress_y_except(NOT_BLOCKED)
    for src in ("ip:198.51.100.7", "node:n1", "kube-system/hn1"):
        assert decision(snap, src, "y/c", 80, "spec") == "deny", src
        for dp in ("npm", "cilium", "cilium-1.16"):
            assert decision(snap, src, "y/c", 80, dp) == "allow", (src, dp)
        assert decision(snap, src, "y/c", 80, "cilium-1.19") == "deny", src
    for dp in ("spec", "npm", "cilium", "cilium-1.19"):
        assert decision(snap, "x/a", "y/c", 80, dp) == "allow", dp  # pods as the spec says


def test_d18_the_cluster_setting_decides_and_a_positive_term_keeps_it_to_pods() -> None:
    snap = deny_ingress_y_except(NOT_BLOCKED)
    engine = Engine(snap)
    outside = traffic(snap, "ip:198.51.100.7", "y/c", 80)
    on = {CILIUM_CONFIG: {"policy-default-local-cluster": "true"}}
    off = {CILIUM_CONFIG: {"policy-default-local-cluster": "false"}}
    assert engine.evaluate(outside, get_dataplane("cilium").with_config(on)).decision == "deny"
    assert engine.evaluate(outside, get_dataplane("cilium-1.19").with_config(off)).decision == (
        "allow"
    )
    # NPM ignores cilium-config
    assert engine.evaluate(outside, get_dataplane("npm").with_config(on)).decision == "allow"
    # an Exists beside the NotIn, or a podSelector with matchLabels: pods only, everywhere
    for peer in (
        {
            "namespaceSelector": {
                "matchExpressions": [
                    *NOT_BLOCKED["namespaceSelector"]["matchExpressions"],
                    {"key": "kubernetes.io/metadata.name", "operator": "Exists"},
                ]
            }
        },
        {**NOT_BLOCKED, "podSelector": {"matchLabels": {"app": "a"}}},
        {"namespaceSelector": {}},
    ):
        s2 = deny_ingress_y_except(peer)
        for dp in ("npm", "cilium", "cilium-1.16"):
            assert decision(s2, "ip:198.51.100.7", "y/c", 80, dp) == "deny", (peer, dp)


def hairpin_cluster() -> Snapshot:
    return base_cluster(
        service(
            "y/c",
            {"app": "c"},
            80,
            80,
            type_="LoadBalancer",
            cluster_ip="10.0.0.20",
            node_port=30080,
            lb_ip="192.0.2.20",
        ),
        netpol(
            "y/closed",
            {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        ),
    )


def test_d25_a_hairpin_through_a_service_skips_cilium_policy() -> None:
    snap = hairpin_cluster()
    for dst in ("svc:y/c", "lb:y/c", "nodeport:y/c@n2"):
        for dp in ("cilium", "cilium-1.16", "cilium-1.19"):
            v = judge(snap, "y/c", dst, 80, dp)
            assert v.decision is Decision.ALLOW and "D25" in v.explanation, (dst, dp)
            assert v.uncertain == (), (dst, dp)
    assert decision(snap, "y/c", "lb:y/c", 80, "spec") == "deny"  # the spec judges both sides
    # another node's NodePort is not a hairpin: that node translates it (egress to n1 denied)
    assert decision(snap, "y/c", "nodeport:y/c@n1", 80, "cilium") == "deny"


def test_d26_a_cilium_deny_beats_allow_localhost() -> None:
    snap = base_cluster(
        cnp(
            "y/no-host",
            {
                "endpointSelector": {"matchLabels": {"app": "c"}},
                "ingress": [{"fromEntities": ["all"]}],
                "ingressDeny": [{"fromEntities": ["host"]}],
            },
        )
    )
    v = judge(snap, "node:n2", "y/c", 80, "cilium")
    assert v.decision is Decision.DENY and "no-host" in v.explanation
    assert decision(snap, "node:n1", "y/c", 80, "cilium") == "allow"  # remote-node: not denied
    assert decision(snap, "node:n2", "y/c", 80, "npm") == "allow"  # NPM ignores CNPs
