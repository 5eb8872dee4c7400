"""D22, internalTrafficPolicy Local on a pod's own traffic to a LoadBalancer IP or NodePort,
with real packets in the lab and the engine's prediction side by side.

kube-proxy (in front of NPM) sends a pod's LB-IP and NodePort traffic through KUBE-EXT-* to
every endpoint: internalTrafficPolicy shapes the ClusterIP only. Cilium looks a pod's own
connection up in the internal scope (socket LB / bpf_lxc, `lb4_lookup_service` with the
scope switch; SVC_FLAG_TWO_SCOPES where the two policies differ), so internalTrafficPolicy
Local keeps it on the client's node, and with no endpoint there the no-backend response
rejects it (refused): allow -> deny on migration for pods on a node without a backend. An
outside client is looked up in the external scope (externalTrafficPolicy Cluster here) and
keeps reaching the backend; another node's NodePort is handled there as outside traffic.
"""

from __future__ import annotations

from test_lab_vs_engine import run_rows

from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Traffic
from netparity.model.snapshot import snapshot_from_dicts
from netparity.probefile import resolve_endpoint

from lab_fixtures import LabFactory, module_lab_factory  # noqa: F401


def _docs() -> list[dict[str, object]]:
    from builders import node, ns, pod, service

    http = [("http", 8080, "TCP")]
    svc = service(
        "b/local",
        {"app": "web"},
        80,
        8080,
        type_="LoadBalancer",
        cluster_ip="10.0.0.90",
        node_port=30290,
        lb_ip="192.0.2.90",
    )
    svc["spec"]["internalTrafficPolicy"] = "Local"
    return [
        ns("a"),
        ns("b"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("a/near", "10.244.0.10", "n1", {"app": "client"}, http),
        pod("a/far", "10.244.1.10", "n2", {"app": "client"}, http),
        pod("b/web", "10.244.0.20", "n1", {"app": "web"}, http),
        svc,
    ]


ALLOW = {"npm": "allow", "cilium": "allow"}
ROWS = [
    ("a/near", "lb:b/local", ALLOW),  # a backend on the client's node
    ("a/near", "nodeport:b/local@n1", ALLOW),
    ("a/far", "lb:b/local", {"npm": "allow", "cilium": "deny"}),  # none on n2: rejected
    ("a/far", "nodeport:b/local@n2", {"npm": "allow", "cilium": "deny"}),  # its own NodePort
    ("a/far", "nodeport:b/local@n1", ALLOW),  # another node's NodePort: outside traffic there
    ("external", "lb:b/local", ALLOW),  # the external scope: externalTrafficPolicy Cluster
]


def test_d22_cilium_applies_internal_traffic_policy_to_a_pods_lb_and_own_nodeport_traffic(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    lab = module_lab_factory(snapshot_from_dicts(_docs()), dataplane="npm")
    problems = run_rows(lab, ROWS, "npm")
    for dataplane in ("cilium", "cilium-1.16", "cilium-1.19"):
        module_lab_factory.upgrade(lab, dataplane)
        problems += run_rows(lab, ROWS, dataplane)
    assert problems == [], "\n".join(problems)


def test_the_rejection_is_refused_and_named_as_internal_traffic_policy() -> None:
    """The engine's Cilium deny is the no-backend response (refused is the deny, D22); NPM's
    allow names no internalTrafficPolicy at all."""
    snap = snapshot_from_dicts(_docs())
    engine = Engine(snap)
    t = Traffic(
        source=resolve_endpoint("a/far", snap, as_source=True),
        destination=resolve_endpoint("lb:b/local", snap, as_source=False),
        port=80,
    )
    cilium = engine.evaluate(t, get_dataplane("cilium").with_config(snap.config))
    npm = engine.evaluate(t, get_dataplane("npm").with_config(snap.config))
    assert cilium.decision == "deny" and cilium.refused_is_deny
    assert "internalTrafficPolicy Local" in cilium.explanation
    assert npm.decision == "allow" and "internalTrafficPolicy" not in npm.explanation
