"""Egress rules to named ports without `to` (issue 19): the peers `_all_peers` gives, worked
out once per set of names, are the peers worked out for each rule and subject afresh, and
the class naming none is never the subject's own (it was the first subject's choice, kept
for the whole namespace: a later subject could be sent to itself)."""

from __future__ import annotations

from typing import Any

from netparity.engine.compile import EGRESS
from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import PathKind
from netparity.lint.lint import lint_snapshot
from netparity.model.snapshot import snapshot_from_dicts
from netparity.plan.class_index import ClassIndex
from netparity.plan.governed import GovernedTraffic


def _pod(ns: str, name: str, app: str, ports: list[dict[str, Any]], ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
        "status": {"podIP": ip},
    }


def _policy(ns: str, name: str, app: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": ports}],
        },
    }


NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "n1"},
    "status": {"addresses": [{"type": "InternalIP", "address": "10.224.0.4"}]},
}
HTTP_TCP = {"name": "http", "containerPort": 8080}
HTTP_UDP = {"name": "http", "containerPort": 9090, "protocol": "UDP"}
METRICS = {"name": "metrics", "containerPort": 9100}


def _snapshot(first_names_none: bool) -> Any:
    """Classes naming `http` over TCP, over UDP only (they name no TCP `http`: the group of
    classes naming none), `metrics`, and none; policies in two namespaces."""
    pods = [
        _pod("a", "plain", "plain", [], "10.0.0.1"),  # the first class naming neither
        _pod("a", "web", "web", [HTTP_TCP], "10.0.0.2"),
        _pod("b", "web2", "web2", [{**HTTP_TCP, "containerPort": 8081}], "10.0.0.3"),
        _pod("b", "udp", "udp", [HTTP_UDP], "10.0.0.4"),
        _pod("b", "mon", "mon", [METRICS], "10.0.0.5"),
        _pod("c", "other", "other", [], "10.0.0.6"),
    ]
    if not first_names_none:
        pods = pods[1:4] + pods[4:]  # no class names nothing but `plain` is gone
    docs: list[dict[str, Any]] = [
        NODE,
        *pods,
        _policy("a", "to-http", "plain", [{"port": "http"}]),
        _policy("a", "to-http-web", "web", [{"port": "http"}]),
        _policy("b", "to-both", "udp", [{"port": "http"}, {"port": "metrics"}]),
        _policy("c", "to-metrics", "other", [{"port": "metrics"}]),
        _policy("b", "to-udp", "mon", [{"port": "http", "protocol": "UDP"}]),
    ]
    return snapshot_from_dicts(docs)


def _fresh(gt: GovernedTraffic, rule: Any, s: Any) -> list[Any]:
    """The peers as `_all_peers` worked them out before the cache: every class naming one
    of the rule's ports, and the first class naming none that is not `s`'s, grouped."""
    named = [n for n, _ in gt._named(rule, EGRESS)]
    classes = gt._port_names.naming(named)
    chosen = {c.name for c in classes}
    other = next(
        (c for c in gt.classes.classes if c.name not in chosen and c.rep.key != s.key), None
    )
    return gt._behaviour([*classes, *([other] if other else [])], rule, EGRESS, None)


def test_named_port_peers_are_the_ones_worked_out_afresh() -> None:
    checked = 0
    for first_names_none in (True, False):
        snap = _snapshot(first_names_none)
        engine = Engine(snap)
        npm, tgt = get_dataplane("npm"), get_dataplane("cilium")
        classes = ClassIndex(engine, (npm, tgt))
        gt = GovernedTraffic(snap, engine, classes, npm, tgt)
        for t in engine.np_targets:
            for rule in t.rules.get(EGRESS, ()):
                for cls in classes.classes:
                    if cls.namespace != t.namespace:
                        continue
                    s = cls.rep
                    pods = [p for p in gt._all_peers(rule, EGRESS, s) if p.pod is not None]
                    assert [(p.desc, p.pod.key, p.spare) for p in pods] == [
                        (p.desc, p.pod.key, p.spare) for p in _fresh(gt, rule, s)
                    ], (t.name, s.key)
                    checked += 1
    assert checked >= 8


def _two_subjects(name: str, ports: list[dict[str, Any]], *more: Any) -> list[dict[str, Any]]:
    """Pods a/x and a/y, told apart by a policy on x, and policy `name` selecting both with
    one egress rule on `ports` and no `to`."""
    x_in = _policy("a", "x-in", "x", [])
    x_in["spec"] = {"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"]}
    rule = _policy("a", name, "any", ports)
    rule["spec"]["podSelector"] = {}
    pods = [_pod("a", "x", "x", [], "10.0.0.1"), _pod("a", "y", "y", [], "10.0.0.2"), *more]
    return [NODE, *pods, x_in, rule]


def test_each_subject_of_a_rule_without_to_is_checked_against_a_pod_naming_none() -> None:
    """Two classes a policy selects, neither naming the port: the second is checked against
    the first, not against itself (the lint missed that connection group: named ports
    resolve differently under Cilium, D3)."""
    web = _pod("b", "web", "web", [HTTP_TCP], "10.0.0.3")
    docs = _two_subjects("to-http", [{"port": "http"}], web)
    report = lint_snapshot(snapshot_from_dicts(docs), fixes=False)
    groups = {
        (t.pods.example, t.peer)
        for f in report.findings
        if f.object == "NetworkPolicy a/to-http"
        for t in f.traffic
        if t.path is PathKind.POD_POD
    }
    assert ("a/y", "pods a[app=x] (1 pod, e.g. a/x)") in groups
    assert ("a/x", "pods a[app=y] (1 pod, e.g. a/y)") in groups


def test_in_one_namespace_each_subject_is_checked_against_another_pod() -> None:
    """A rule without `to` (numbered ports) in a cluster of one namespace: the pod standing
    for "any other pod" is chosen per subject, never the subject itself."""
    snap = snapshot_from_dicts(_two_subjects("out", [{"port": 8080}]))
    engine = Engine(snap)
    npm, tgt = get_dataplane("npm"), get_dataplane("cilium")
    classes = ClassIndex(engine, (npm, tgt))
    gt = GovernedTraffic(snap, engine, classes, npm, tgt)
    (target,) = [t for t in engine.np_targets if t.name == "NetworkPolicy a/out"]
    (rule,) = target.rules[EGRESS]
    for cls in classes.classes:
        peers = [p.pod.key for p in gt._all_peers(rule, EGRESS, cls.rep) if p.pod is not None]
        assert peers and cls.rep.key not in peers, (cls.name, peers)
