"""D22 `itp-local`: Cilium applies a Service's internalTrafficPolicy Local to a pod's own
connections to its LoadBalancer IP and its own node's NodePort (internal scope,
SVC_FLAG_TWO_SCOPES); kube-proxy (in front of NPM) sends them to every endpoint. A pod on a
node without a backend goes allow -> deny (refused): the planner probes it and the lint
reports it as an outage without a policy fix. The cluster is test_lab_vs_engine_itp's, whose
lab run shows the flip with real packets."""

from __future__ import annotations

from typing import Any

from test_lab_vs_engine_itp import _docs

from netparity.engine.traffic import Decision, PodEndpoint, ServiceEndpoint, Via
from netparity.lint import lint_snapshot
from netparity.lint.findings import Change
from netparity.lint.output import render_json, render_text
from netparity.model.snapshot import Snapshot, snapshot_from_dicts
from netparity.plan.model import Scenario
from netparity.plan.planner import make_plan

KIND = "itp-local"


def _cluster(policy: str = "Local") -> Snapshot:
    docs: list[dict[str, Any]] = _docs()
    for d in docs:
        if d["kind"] == "Service":
            d["spec"]["internalTrafficPolicy"] = policy
    return snapshot_from_dicts(docs)


def test_the_plan_probes_a_pod_on_a_node_without_a_backend_to_the_lb_ip_and_own_nodeport() -> None:
    plan = make_plan(_cluster(), target="cilium")
    probes = [p for p in plan.probes if Scenario.ITP_LOCAL in p.scenarios]
    vias = sorted(str(p.traffic.destination.via) for p in probes)  # type: ignore[union-attr]
    assert vias == ["lb", "nodeport"]
    for p in probes:
        src, dst = p.traffic.source, p.traffic.destination
        assert isinstance(src, PodEndpoint) and src.pod.key == "a/far"  # n2: no backend
        assert isinstance(dst, ServiceEndpoint) and dst.service.key == "b/local"
        if dst.via is Via.NODE_PORT:
            assert dst.node is not None and dst.node.name == "n2"  # its own node's NodePort
        npm, cilium = p.predicted["npm"], p.predicted["cilium"]
        assert npm.decision is Decision.ALLOW
        assert cilium.decision is Decision.DENY and cilium.refused_is_deny
        assert [c.short() for c in cilium.causes] == ["itp-local (D22)"]
    assert Scenario.ITP_LOCAL in plan.coverage.scenarios_present


def test_the_lint_reports_an_outage_naming_the_service_and_the_node_without_a_backend() -> None:
    snap = _cluster()
    for target in ("cilium", "cilium-1.16", "cilium-1.19"):
        found = [f for f in lint_snapshot(snap, target=target).findings if f.kind == KIND]
        assert len(found) == 1, (target, found)
        [f] = found
        assert f.object == "Service b/local" and f.service == "b/local"
        assert f.severity == "outage" and f.changes == (Change.OUTAGE,)
        assert "D22" in f.rows
        assert sorted(t.pods.example for t in f.traffic) == ["a/far", "a/far"]
        assert all("internalTrafficPolicy Local" in t.target for t in f.traffic)
        assert f.fix is None and f.no_fix_reason is not None
        assert "nodes without a backend: n2" in f.no_fix_reason
        assert "internalTrafficPolicy: Cluster" in f.no_fix_reason
    report = lint_snapshot(snap, target="cilium")
    assert f"OUTAGE {KIND}" in render_text(report)
    assert f'"kind": "{KIND}"' in render_json(report)


def test_a_backend_on_every_node_with_clients_is_no_finding_and_no_probe() -> None:
    docs: list[dict[str, Any]] = _docs()
    from builders import pod

    docs.append(pod("b/web2", "10.244.1.20", "n2", {"app": "web"}, [("http", 8080, "TCP")]))
    snap = snapshot_from_dicts(docs)
    assert [f for f in lint_snapshot(snap).findings if f.kind == KIND] == []
    assert [p for p in make_plan(snap).probes if Scenario.ITP_LOCAL in p.scenarios] == []


def test_internal_traffic_policy_cluster_has_neither_probe_nor_finding() -> None:
    snap = _cluster("Cluster")
    assert [f for f in lint_snapshot(snap).findings if f.kind == KIND] == []
    plan = make_plan(snap)
    assert [p for p in plan.probes if Scenario.ITP_LOCAL in p.scenarios] == []
    assert Scenario.ITP_LOCAL not in plan.coverage.scenarios_present
