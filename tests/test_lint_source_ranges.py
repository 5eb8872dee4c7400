"""D22 `lb-source-ranges`: kube-proxy (in front of NPM) applies a LoadBalancer's
loadBalancerSourceRanges to every client of its IP; Cilium's kube-proxy replacement only to
traffic from outside the cluster (`lb4_src_range_ok`, called from `nodeport_lb4` alone). In-
cluster clients outside the ranges go deny -> allow: the lint reports them as a hole without
a fix (no policy tells LB-IP traffic from ClusterIP traffic after Cilium's socket LB), and
the planner probes one of them."""

from __future__ import annotations

from typing import Any

from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Decision, PodEndpoint, Traffic
from netparity.lint import lint_snapshot
from netparity.lint.findings import Change
from netparity.lint.output import render_json, render_text
from netparity.model.snapshot import Snapshot
from netparity.plan.planner import make_plan
from netparity.probefile import resolve_endpoint

from builders import base_cluster, netpol, pod, service

KIND = "lb-source-ranges"
OBJECT = "Service y/web"


def ranged_web(*ranges: str) -> list[dict[str, Any]]:
    """y/web on n1 (10.244.0.30) behind a LoadBalancer restricted to `ranges`."""
    svc = service(
        "y/web",
        {"app": "web"},
        80,
        8080,
        type_="LoadBalancer",
        node_port=30080,
        lb_ip="192.0.2.10",
        cluster_ip="10.0.0.10",
    )
    svc["spec"]["loadBalancerSourceRanges"] = list(ranges)
    return [pod("y/web", "10.244.0.30", "n1", {"app": "web"}, [("http", 8080, "TCP")]), svc]


def cilium_config(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": "kube-system"},
        "data": data,
    }


def findings(snap: Snapshot, target: str = "cilium") -> list[Any]:
    return [f for f in lint_snapshot(snap, target=target).findings if f.kind == KIND]


def judge(snap: Snapshot, src: str, dst: str, port: int, dataplane: str) -> Decision:
    t = Traffic(
        source=resolve_endpoint(src, snap, as_source=True),
        destination=resolve_endpoint(dst, snap, as_source=False),
        port=port,
    )
    return Engine(snap).evaluate(t, get_dataplane(dataplane).with_config(snap.config)).decision


def test_pods_and_nodes_outside_the_ranges_reach_the_lb_ip_on_cilium_a_hole_without_fix() -> None:
    """Ranges: n1's pod CIDR and an outside /24. y/c (n2's pod CIDR) and both nodes are
    outside them: NPM's kube-proxy drops them, Cilium lets them through (no policy here).
    x/a and x/b (inside) and the outside client 203.0.113.10 (inside) are no finding."""
    snap = base_cluster(*ranged_web("10.244.0.0/24", "203.0.113.0/24"))
    for target in ("cilium", "cilium-1.16", "cilium-1.19"):
        [f] = findings(snap, target)
        assert f.object == OBJECT and f.service == "y/web"
        assert f.severity == "hole" and f.changes == (Change.HOLE,)
        assert "D22" in f.rows
        examples = sorted(
            t.pods.example if t.from_pods else t.peer.split(" (")[0] for t in f.traffic
        )
        assert examples == ["node n1", "node n2", "y/c"], (target, examples)
        assert all("outside loadBalancerSourceRanges" in t.npm for t in f.traffic)
        assert f.fix is None and f.no_fix_reason is not None
        assert "ClusterIP" in f.no_fix_reason and "10.244.0.0/24, 203.0.113.0/24" in f.no_fix_reason
    report = lint_snapshot(snap, target="cilium")
    text = render_text(report)
    assert "HOLE lb-source-ranges" in text and "1 NodePort/LoadBalancer Services" in text
    data = render_json(report)
    assert f'"kind": "{KIND}"' in data


def test_a_backend_policy_that_denies_the_client_on_both_is_no_finding_for_it() -> None:
    """The backend admits only namespace x (team=a): y/c is denied by policy on Cilium as
    kube-proxy dropped it on NPM, so only node n1 (the backend's own node, always allowed
    on Cilium, D4c) still flips; n2 is a remote node the policy does not admit."""
    only_x = netpol(
        "y/only-x",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}],
        },
    )
    snap = base_cluster(*ranged_web("10.244.0.0/24", "203.0.113.0/24"), only_x)
    [f] = findings(snap)
    assert [t.peer.split(" (")[0] for t in f.traffic] == ["node n1"]
    assert judge(snap, "y/c", "lb:y/web", 80, "cilium") is Decision.DENY
    assert judge(snap, "y/c", "lb:y/web", 80, "npm") is Decision.DENY


def test_with_the_range_check_off_outside_clients_flip_too_and_are_the_same_kind() -> None:
    """`enable-svc-source-range-check: false`: Cilium checks no range, so the outside
    client 203.0.113.10 (outside 198.51.100.0/24) flips as well, on the external path."""
    docs = ranged_web("10.244.0.0/24", "198.51.100.0/24")
    on = base_cluster(*docs)
    off = base_cluster(*docs, cilium_config(**{"enable-svc-source-range-check": "false"}))
    external_on = [t for f in findings(on) for t in f.traffic if "outside address" in t.peer]
    external_off = [t for f in findings(off) for t in f.traffic if "outside address" in t.peer]
    assert external_on == []
    assert external_off and all(t.change is Change.HOLE for t in external_off)
    assert {str(t.path) for t in external_off} == {"external-lb"}
    assert [f.kind for f in lint_snapshot(off).findings] == [KIND]


def test_no_range_or_a_range_covering_every_client_is_no_finding() -> None:
    assert findings(base_cluster(*ranged_web("0.0.0.0/0"))) == []
    no_ranges = ranged_web()
    del no_ranges[1]["spec"]["loadBalancerSourceRanges"]
    assert findings(base_cluster(*no_ranges)) == []


def test_the_policy_that_would_keep_y_c_off_the_lb_ip_cuts_its_cluster_ip_too() -> None:
    """Why the finding has no fix: an ingress policy on the backends that admits only the
    ranges makes y/c -> LB IP a deny on Cilium (NPM's verdict), but also y/c -> ClusterIP
    and y/c -> pod, which NPM allowed: after socket LB the backend sees one connection."""
    docs = ranged_web("10.244.0.0/24", "203.0.113.0/24")
    before = base_cluster(*docs)
    ranges_only = netpol(
        "y/ranges-only",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {
                    "from": [
                        {"ipBlock": {"cidr": "10.244.0.0/24"}},
                        {"ipBlock": {"cidr": "203.0.113.0/24"}},
                    ]
                }
            ],
        },
    )
    after = base_cluster(*docs, ranges_only)
    assert judge(before, "y/c", "lb:y/web", 80, "npm") is Decision.DENY
    assert judge(after, "y/c", "lb:y/web", 80, "cilium") is Decision.DENY
    for dst, port in (("svc:y/web", 80), ("y/web", 8080)):
        assert judge(before, "y/c", dst, port, "npm") is Decision.ALLOW
        assert judge(after, "y/c", dst, port, "cilium") is Decision.DENY


def test_the_plan_probes_a_pod_outside_the_ranges_at_the_lb_ip() -> None:
    snap = base_cluster(*ranged_web("10.244.0.0/24", "203.0.113.0/24"))
    plan = make_plan(snap)
    assert KIND in plan.coverage.scenarios_present
    assert KIND in plan.coverage.scenarios_probed
    [probe] = [p for p in plan.probes if KIND in p.scenarios]
    assert isinstance(probe.traffic.source, PodEndpoint) and probe.traffic.source.pod.key == "y/c"
    assert probe.predicted["npm"].decision is Decision.DENY
    assert probe.predicted["cilium"].decision is Decision.ALLOW
    assert [str(c).split(" via")[0] for c in probe.predicted["cilium"].causes] == [
        "lb-source-ranges (D22)"
    ]
    # without ranges there is nothing to probe
    plain = ranged_web()
    del plain[1]["spec"]["loadBalancerSourceRanges"]
    assert KIND not in make_plan(base_cluster(*plain)).coverage.scenarios_present
