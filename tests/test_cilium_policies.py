"""CiliumNetworkPolicy as Cilium imports and enforces it (issue #23): requirements per
version, identity labels (D28), enableDefaultDeny and its setting, namespace scoping of the
endpointSelector, ICMP-only denies, host policies, the kube-apiserver entity, policies the
settings make Cilium refuse, and `unknown` only where an unmodelled field decides."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from netparity.engine.compile import cilium_refusal, compile_cilium_policy
from netparity.engine.dataplane import Dataplane, get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Decision, Traffic, Verdict
from netparity.facts.cilium_config import acns_level, cilium_settings
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot
from netparity.probefile import resolve_endpoint

from builders import base_cluster, cnp, netpol, node, ns, pod

APISERVER = "20.50.1.10"


def cilium_config(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": "kube-system"},
        "data": data,
    }


def judge(snap: Snapshot, src: str, dst: str, port: int, dp: Dataplane | None = None) -> Verdict:
    plane = dp or get_dataplane("cilium").with_config(snap.config)
    traffic = Traffic(
        source=resolve_endpoint(src, snap, as_source=True),
        destination=resolve_endpoint(dst, snap, as_source=False),
        port=port,
        protocol=Protocol.TCP,
    )
    return Engine(snap).evaluate(traffic, plane)


def decide(snap: Snapshot, src: str, dst: str, port: int, dp: Dataplane | None = None) -> str:
    return str(judge(snap, src, dst, port, dp).decision)


def with_sa(doc: dict[str, Any], account: str) -> dict[str, Any]:
    doc["spec"]["serviceAccountName"] = account
    return doc


# --- 1. fromRequires / toRequires ------------------------------------------------------------


def requires_cluster() -> Snapshot:
    """x/b (the prod backend) requires env=prod of every peer; another rule admits app=a."""
    return base_cluster(
        pod("x/p", "10.244.0.12", "n1", {"app": "a", "env": "prod"}, [("http", 80, "TCP")]),
        cnp(
            "x/prod",
            {
                "endpointSelector": {"matchLabels": {"app": "b"}},
                "ingress": [
                    {"fromRequires": [{"matchLabels": {"env": "prod"}}]},
                    {"fromEndpoints": [{"matchLabels": {"app": "a"}}]},
                ],
            },
        ),
    )


def test_from_requires_constrains_the_other_rules_of_the_selected_endpoint() -> None:
    snap = requires_cluster()
    assert decide(snap, "x/a", "x/b", 8080) == "deny"  # app=a without env=prod
    assert decide(snap, "x/p", "x/b", 8080) == "allow"
    assert decide(snap, "x/a", "x/b", 8080, get_dataplane("npm")) == "allow"


def test_a_version_without_requirements_ignores_them_and_says_so() -> None:
    snap = requires_cluster()
    v119 = replace(get_dataplane("cilium"), name="cilium-1.19", cnp_requires=False)
    v = judge(snap, "x/a", "x/b", 8080, v119)
    assert v.decision is Decision.ALLOW
    assert "ingress[0].fromRequires" in v.explanation and "ignores" in v.explanation


# --- 2. identity labels: service account and cluster (D28) -----------------------------------


def test_service_account_selectors_select_by_service_account_name() -> None:
    snap = base_cluster(
        with_sa(pod("x/leia", "10.244.0.13", "n1", {"app": "a"}, [("http", 80, "TCP")]), "leia"),
        cnp(
            "y/sa",
            {
                "endpointSelector": {},
                "ingress": [
                    {
                        "fromEndpoints": [
                            {
                                "matchLabels": {
                                    "io.cilium.k8s.policy.serviceaccount": "leia",
                                    "k8s:io.kubernetes.pod.namespace": "x",
                                }
                            }
                        ]
                    }
                ],
            },
        ),
    )
    assert decide(snap, "x/leia", "y/c", 80) == "allow"
    assert decide(snap, "x/a", "y/c", 80) == "deny"  # service account `default`
    assert snap.pod("x", "a").service_account == "default"


def test_the_cluster_label_follows_cluster_name() -> None:
    policy = cnp(
        "y/cl",
        {
            "endpointSelector": {},
            "ingress": [
                {"fromEndpoints": [{"matchLabels": {"k8s:io.cilium.k8s.policy.cluster": "aks1"}}]}
            ],
        },
    )
    same_ns = pod("y/d", "10.244.1.11", "n2", {"app": "d"}, [("http", 80, "TCP")])
    assert decide(base_cluster(policy, same_ns), "y/d", "y/c", 80) == "deny"  # cluster default
    named = base_cluster(policy, same_ns, cilium_config(**{"cluster-name": "aks1"}))
    assert decide(named, "y/d", "y/c", 80) == "allow"


# --- 3. enableDefaultDeny ---------------------------------------------------------------------


def no_default_deny(*extra: dict[str, Any]) -> Snapshot:
    return base_cluster(
        *extra,
        cnp(
            "x/dns",
            {
                "endpointSelector": {},
                "enableDefaultDeny": {"egress": False},
                "egress": [
                    {
                        "toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "y"}}],
                        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                    }
                ],
            },
        ),
    )


def test_enable_default_deny_false_adds_allows_to_a_pod_another_policy_isolates() -> None:
    isolate = netpol(
        "x/iso", {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"]}
    )
    snap = no_default_deny(isolate)
    assert decide(snap, "x/a", "y/c", 80) == "allow"  # the CNP's allow counts
    assert decide(snap, "x/a", "x/b", 8080) == "deny"  # isolated by the NetworkPolicy
    assert decide(snap, "x/b", "x/a", 80) == "allow"  # the CNP alone does not isolate x/b


def test_enable_default_deny_is_ignored_without_non_default_deny_policies() -> None:
    snap = no_default_deny(cilium_config(**{"enable-non-default-deny-policies": "false"}))
    assert decide(snap, "x/b", "x/a", 80) == "deny"
    assert decide(snap, "x/b", "y/c", 80) == "allow"


# --- 4. an endpointSelector naming another namespace ------------------------------------------


def test_a_prefixed_namespace_in_the_endpoint_selector_is_overwritten_with_the_policys() -> None:
    snap = base_cluster(
        cnp(
            "y/p",
            {
                "endpointSelector": {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "x"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "zzz"}}]}],
            },
        )
    )
    assert decide(snap, "x/a", "y/c", 80) == "deny"  # y/c is isolated, not x/*
    assert decide(snap, "y/c", "x/a", 80) == "allow"
    assert decide(snap, "x/b", "x/a", 80) == "allow"


def test_an_unprefixed_namespace_of_another_namespace_selects_no_pod() -> None:
    snap = base_cluster(
        cnp(
            "y/p",
            {
                "endpointSelector": {"matchLabels": {"io.kubernetes.pod.namespace": "x"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "zzz"}}]}],
            },
        )
    )
    assert decide(snap, "x/a", "y/c", 80) == "allow"
    assert decide(snap, "x/b", "x/a", 80) == "allow"


# --- 5. a deny with only icmps ------------------------------------------------------------------


def icmp_deny(*extra: dict[str, Any]) -> Snapshot:
    return base_cluster(
        *extra,
        cnp(
            "y/noping",
            {
                "endpointSelector": {},
                "ingress": [{"fromEntities": ["cluster"]}],
                "ingressDeny": [
                    {
                        "fromEntities": ["all"],
                        "icmps": [{"fields": [{"type": 8, "family": "IPv4"}]}],
                    }
                ],
            },
        ),
    )


def test_an_icmps_only_deny_denies_icmp_not_tcp() -> None:
    assert decide(icmp_deny(), "x/a", "y/c", 80) == "allow"
    assert decide(icmp_deny(), "ip:198.51.100.20", "y/c", 80) == "deny"  # not in cluster


def test_icmps_without_enable_icmp_rules_make_cilium_refuse_the_policy() -> None:
    snap = icmp_deny(cilium_config(**{"enable-icmp-rules": "false"}))
    v = judge(snap, "ip:198.51.100.20", "y/c", 80)
    assert v.decision is Decision.ALLOW  # the whole policy is refused: y/c is not isolated
    assert "refused" in v.explanation and "enable-icmp-rules" in v.explanation


# --- 6. host policies ---------------------------------------------------------------------------


def test_a_host_policy_has_no_effect_without_the_host_firewall() -> None:
    ccnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "hosts"},
        "spec": {"nodeSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]},
    }
    snap = base_cluster(ccnp)
    target = compile_cilium_policy(snap.cilium_policies[0])
    why = cilium_refusal(target, get_dataplane("cilium").with_config(snap.config))
    assert why is not None and "no effect" in why and "enable-host-firewall" in why
    on = base_cluster(ccnp, cilium_config(**{"enable-host-firewall": "true"}))
    assert cilium_refusal(target, get_dataplane("cilium").with_config(on.config)) is None


# --- 7. the kube-apiserver entity ----------------------------------------------------------------


def apiserver_cluster(entity: str) -> Snapshot:
    k8s = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 443, "targetPort": 443}]},
    }
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [APISERVER]}],
    }
    policy = cnp("x/api", {"endpointSelector": {}, "egress": [{"toEntities": [entity]}]})
    return base_cluster(k8s, slice_, policy)


def test_the_kube_apiserver_entity_is_the_kubernetes_endpoint_slices() -> None:
    snap = apiserver_cluster("kube-apiserver")
    assert decide(snap, "x/a", f"ip:{APISERVER}", 443) == "allow"
    assert decide(snap, "x/a", "svc:default/kubernetes", 443) == "allow"
    assert decide(snap, "x/a", "ip:198.51.100.20", 443) == "deny"
    assert decide(snap, "x/a", "y/c", 80) == "deny"


def test_the_cluster_entity_includes_the_api_server() -> None:
    snap = apiserver_cluster("cluster")
    assert decide(snap, "x/a", f"ip:{APISERVER}", 443) == "allow"
    assert decide(snap, "x/a", "ip:198.51.100.20", 443) == "deny"


# --- 8 and 9. refused policies; the L3/L4 part of rules with unmodelled fields -----------------


L7_SPEC: dict[str, Any] = {
    "endpointSelector": {},
    "ingress": [
        {
            "fromEndpoints": [
                {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "x", "app": "a"}}
            ],
            "toPorts": [
                {
                    "ports": [{"port": "80", "protocol": "TCP"}],
                    "rules": {"http": [{"method": "GET", "path": "/"}]},
                }
            ],
        }
    ],
}


def l7_cluster(*extra: dict[str, Any]) -> Snapshot:
    return base_cluster(*extra, cnp("y/web", L7_SPEC))


def test_an_l7_policy_without_the_l7_proxy_is_refused_and_has_no_effect() -> None:
    snap = l7_cluster(cilium_config(**{"enable-l7-proxy": "false"}))
    for src, port in (("x/a", 80), ("x/b", 80), ("x/a", 443)):
        v = judge(snap, src, "y/c", port)
        assert v.decision is Decision.ALLOW, (src, port)
        assert "refused" in v.explanation and "enable-l7-proxy" in v.explanation
    assert "no advanced network policies" in acns_level(
        cilium_settings(snap.config).enable_l7_proxy
    )


def test_with_the_l7_proxy_only_traffic_its_l3_l4_part_admits_is_unknown() -> None:
    snap = l7_cluster(cilium_config(**{"enable-l7-proxy": "true"}))
    v = judge(snap, "x/a", "y/c", 80)
    assert v.decision is Decision.UNKNOWN
    assert "rules" in v.explanation and "may still refuse" in v.explanation
    assert decide(snap, "x/a", "y/c", 443) == "deny"  # another port
    assert decide(snap, "x/b", "y/c", 80) == "deny"  # a peer its L3 part does not select


def test_to_fqdns_admits_nothing_without_a_dns_proxy_and_only_outside_addresses_with_one() -> None:
    policy = cnp(
        "x/fqdn",
        {
            "endpointSelector": {},
            "egress": [
                {
                    "toFQDNs": [{"matchName": "example.com"}],
                    "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                }
            ],
        },
    )
    off = base_cluster(policy, cilium_config(**{"enable-l7-proxy": "false"}))
    assert decide(off, "x/a", "ip:198.51.100.20", 443) == "deny"
    on = base_cluster(policy, cilium_config(**{"enable-l7-proxy": "true"}))
    v = judge(on, "x/a", "ip:198.51.100.20", 443)
    assert v.decision is Decision.UNKNOWN and "toFQDNs" in v.explanation
    assert decide(on, "x/a", "ip:198.51.100.20", 80) == "deny"
    assert decide(on, "x/a", "y/c", 443) == "deny"


def test_to_services_stays_unknown_only_on_its_ports() -> None:
    snap = base_cluster(
        cnp(
            "x/svc",
            {
                "endpointSelector": {},
                "egress": [
                    {
                        "toServices": [{"k8sService": {"serviceName": "c", "namespace": "y"}}],
                        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                    }
                ],
            },
        )
    )
    v = judge(snap, "x/a", "y/c", 80)
    assert v.decision is Decision.UNKNOWN and "toServices" in v.explanation
    assert decide(snap, "x/a", "y/c", 81) == "deny"


# --- explain ------------------------------------------------------------------------------------


def test_explain_counts_what_each_cilium_policy_selects_and_says_why_one_does_nothing(
    tmp_path: Any, capsys: Any
) -> None:
    import json

    import yaml

    from netparity.cli import main

    docs = [
        ns("x"),
        ns("y"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("x/a", "10.244.0.10", "n1", {"app": "a"}),
        pod("x/b", "10.244.0.11", "n1", {"app": "b"}),
        pod("y/c", "10.244.1.10", "n2", {"app": "c"}),
        cnp("y/web", L7_SPEC),
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": "hosts"},
            "spec": {"nodeSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]},
        },
        cnp("x/all", {"endpointSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]}),
    ]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    assert main(["explain", str(path), "--format", "json"]) == 0
    out = {i["policy"]: i for i in json.loads(capsys.readouterr().out)}
    assert out["y/web"]["noEffect"] and "enable-l7-proxy" in out["y/web"]["effect"]
    assert out["hosts"]["noEffect"] and "enable-host-firewall" in out["hosts"]["effect"]
    assert out["hosts"]["selects"] == ["n1", "n2"]
    assert not out["x/all"]["noEffect"] and out["x/all"]["selects"] == ["x/a", "x/b"]
