"""Where twins go on a real cluster: room on the node, node kinds, Pending pods,
PodDisruptionBudgets, service-mesh labels, the deadline, Deployment Safeguards.

Pure checks of netparity.kube.placement, then runs against the loopback API server
(tests/kubeapi.py), whose scheduler honours the twins' node affinity and whose admission
can deny what AKS Deployment Safeguards deny."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Any

import pytest

from netparity.backend import Observed, Target
from netparity.engine.traffic import PodEndpoint, ServiceEndpoint, Traffic, Via
from netparity.kube import RUN_LABEL
from netparity.kube.backend import KubeBackend
from netparity.kube.layout import DEADLINE_MARGIN, active_deadline
from netparity.kube.placement import Placement, quantity
from netparity.model.objects import Pod, Protocol, frozen_labels
from netparity.model.snapshot import Snapshot

import kube_fixtures
from kubeapi import KubeAPI, node, pod, safeguards_violations

api = kube_fixtures.api
kubeconfig = kube_fixtures.kubeconfig
Log = kube_fixtures.Log


def backend(kubeconfig: str, log: Log | None = None, **kw: Any) -> KubeBackend:
    return KubeBackend("test", kubeconfig=kubeconfig, log=log if log is not None else Log(), **kw)


def client_to_web(snap: Snapshot) -> list[Target]:
    web, client = snap.pod("shop", "web-1"), snap.pod("shop", "client-1")
    assert web and client
    return [
        Target(
            id="pod-pod",
            traffic=Traffic(
                source=PodEndpoint(pod=client),
                destination=PodEndpoint(pod=web),
                port=8080,
                protocol=Protocol.TCP,
            ),
        )
    ]


def twins(api: KubeAPI) -> list[dict[str, Any]]:
    return [p for p in api.objects("Pod") if RUN_LABEL in (p["metadata"].get("labels") or {})]


def created_pods(api: KubeAPI) -> list[dict[str, Any]]:
    return [obj for method, plural, obj in api.mutations if method == "POST" and plural == "pods"]


def update(api: KubeAPI, kind: str, namespace: str, name: str, fn: Any) -> None:
    obj = api.find(kind, namespace, name)
    assert obj is not None
    fn(obj)
    api.add(obj)


# --------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Decimal("0.1")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("128Mi", Decimal(128 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("500M", Decimal(500 * 10**6)),
        ("1e3", Decimal(1000)),
        (110, Decimal(110)),
        ("bogus", None),
        (None, None),
    ],
)
def test_quantities_are_read_as_kubernetes_writes_them(text: Any, value: Decimal | None) -> None:
    assert quantity(text) == value


def wire_node(name: str, **extra: Any) -> dict[str, Any]:
    obj = node(name, "10.0.0.1")
    for key, value in extra.items():
        section, field = key.split("__")
        obj.setdefault(section, {})[field] = value
    return obj


def wire_pod(name: str, node_name: str, cpu: str = "0", memory: str = "0", **kw: Any) -> Any:
    obj = pod("shop", name, {"app": name}, node_name, "10.1.0.1")
    obj["spec"]["containers"][0]["resources"] = {"requests": {"cpu": cpu, "memory": memory}}
    obj["status"].update(kw)
    return obj


WEB = Pod(namespace="shop", name="web-1", labels=frozen_labels({"app": "web"}), node_name="n1")


def test_a_node_at_max_pods_has_no_room_and_says_so() -> None:
    objs = [
        wire_node("n1", status__allocatable={"pods": "2", "cpu": "2", "memory": "4Gi"}),
        wire_pod("a", "n1"),
        wire_pod("b", "n1"),
        wire_pod("done", "n1", phase="Succeeded"),  # not counted
    ]
    why = Placement.from_objects(objs).check(WEB, {})
    assert why is not None
    assert "node n1" in why and "2 pods of 2 allocatable" in why and "Too many pods" in why


def test_requests_near_allocatable_leave_no_room_counting_the_planned_twins() -> None:
    objs = [
        wire_node("n1", status__allocatable={"pods": "110", "cpu": "100m", "memory": "4Gi"}),
        wire_pod("a", "n1", cpu="85m"),
    ]
    placement = Placement.from_objects(objs)
    assert placement.check(WEB, {}) is None  # 85m + 10m <= 100m
    other = Pod(namespace="shop", name="web-2", labels=WEB.labels, node_name="n1")
    why = placement.check(WEB, {other.key: other})  # 85m + 2 x 10m > 100m
    assert why is not None and "Insufficient cpu" in why and "105m of 100m" in why
    assert placement.check(WEB, {WEB.key: WEB}) is None  # already planned: counted once


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"metadata__labels": {"kubernetes.io/os": "windows"}}, "windows node n1"),
        ({"metadata__labels": {"type": "virtual-kubelet"}}, "virtual node n1"),
        (
            {"spec__taints": [{"key": "virtual-kubelet.io/provider", "effect": "NoSchedule"}]},
            "virtual node n1",
        ),
        ({"spec__unschedulable": True}, "n1 (where pod shop/web-1 runs) is cordoned"),
    ],
)
def test_nodes_a_twin_must_not_use_are_named(extra: dict[str, Any], words: str) -> None:
    why = Placement.from_objects([wire_node("n1", **extra)]).check(WEB, {})
    assert why is not None and words in why


def test_a_pending_pod_has_no_twin() -> None:
    pending = Pod(namespace="shop", name="web-0", labels=WEB.labels)
    why = Placement.from_objects([wire_node("n1")]).check(pending, {})
    assert why is not None and "not scheduled on any node (Pending)" in why


def test_the_hostname_label_places_the_twin() -> None:
    n1 = wire_node("n1")
    n1["metadata"]["labels"]["kubernetes.io/hostname"] = "aks-n1-host"
    assert Placement.from_objects([n1]).hostname(WEB) == "aks-n1-host"


def pdb(name: str, selector: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"maxUnavailable": 1, "selector": selector},
    }


def policy(match_labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": match_labels}, "policyTypes": ["Ingress"]},
    }


POD = Pod(
    namespace="shop",
    name="web-1",
    labels=frozen_labels({"app": "web", "release": "blue"}),
    node_name="n1",
)


def test_a_budget_label_no_policy_uses_is_left_out() -> None:
    placement = Placement.from_objects(
        [
            wire_node("n1"),
            pdb("web", {"matchLabels": {"app": "web", "release": "blue"}}),
            policy({"app": "web"}),
        ]
    )
    assert placement.leave_out(POD) == frozenset({"release"})
    assert placement.refuse(POD, {}) is None
    (note,) = placement.notes([POD])
    assert "leaves out label release=blue" in note and "shop/web" in note


def test_a_budget_whose_labels_policies_use_skips_the_twin() -> None:
    placement = Placement.from_objects(
        [wire_node("n1"), pdb("web", {"matchLabels": {"app": "web"}}), policy({"app": "web"})]
    )
    why = placement.refuse(POD, {})
    assert why is not None
    assert "PodDisruptionBudget shop/web would select the twin of pod shop/web-1" in why
    assert "app: NetworkPolicy shop/np" in why
    assert placement.leave_out(POD) == frozenset()


def test_a_budget_over_the_whole_namespace_skips_the_twin() -> None:
    why = Placement.from_objects([wire_node("n1"), pdb("all", {})]).refuse(POD, {})
    assert why is not None and "selects every pod of the namespace" in why


def test_a_budget_that_does_not_select_the_pod_changes_nothing() -> None:
    placement = Placement.from_objects([wire_node("n1"), pdb("db", {"matchLabels": {"app": "db"}})])
    assert placement.refuse(POD, {}) is None and placement.leave_out(POD) == frozenset()


def test_cilium_selectors_count_as_policy_use_without_their_source_prefix() -> None:
    cnp = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "c", "namespace": "shop"},
        "spec": {
            "endpointSelector": {"matchLabels": {"any:release": "blue"}},
            "ingress": [{"fromEndpoints": [{"matchLabels": {"k8s:app": "client"}}]}],
        },
    }
    placement = Placement.from_objects(
        [wire_node("n1"), pdb("web", {"matchLabels": {"release": "blue"}}), cnp]
    )
    assert set(placement.policy_keys) == {"release", "app"}
    assert placement.refuse(POD, {}) is not None


def test_a_mesh_label_a_policy_selects_on_is_told_up_front() -> None:
    meshed = Pod(
        namespace="shop",
        name="web-1",
        labels=frozen_labels({"app": "web", "istio.io/rev": "asm-1-22"}),
        node_name="n1",
    )
    placement = Placement.from_objects([wire_node("n1"), policy({"istio.io/rev": "asm-1-22"})])
    (note,) = placement.notes([meshed])
    assert "carries no istio.io/rev label (the pod: istio.io/rev=asm-1-22)" in note
    assert "NetworkPolicy shop/np selects on istio.io/rev" in note
    quiet = Placement.from_objects([wire_node("n1"), policy({"app": "web"})])
    assert quiet.notes([meshed]) == []


def test_the_deadline_is_the_planned_length_plus_a_margin_or_max_duration() -> None:
    assert active_deadline(100.0) == 100 + int(DEADLINE_MARGIN)
    assert active_deadline(100.0, 7200.0) == 7200


# --------------------------------------------------------------------------- on the API


def test_a_full_node_is_named_and_nothing_is_created(api: KubeAPI, kubeconfig: str) -> None:
    update(
        api,
        "Node",
        "",
        "node-1",
        lambda n: n.setdefault("status", {}).update(allocatable={"pods": "1", "cpu": "4"}),
    )
    with backend(kubeconfig) as b:
        (result,) = b.run(client_to_web(b.snapshot()), timeout=1.0)
    assert result.observed is Observed.NOT_RUN
    assert "node node-1 (where pod shop/web-1 runs) has no room" in (result.error or "")
    assert "1 pods of 1 allocatable" in (result.error or "")
    assert created_pods(api) == []


def test_twins_are_placed_by_affinity_on_the_real_pods_node(api: KubeAPI, kubeconfig: str) -> None:
    seen: dict[str, Any] = {}

    def progress(what: str, done: int, total: int) -> None:
        if what == "probes" and done == 0:
            seen["twins"] = twins(api)

    with backend(kubeconfig, max_duration=5400) as b:
        (result,) = b.run(client_to_web(b.snapshot()), timeout=1.0, progress=progress)
    assert result.observed is Observed.CONNECTED
    placed = {p["metadata"]["annotations"]["netparity.io/twin-of"]: p for p in seen["twins"]}
    assert placed["shop/web-1"]["spec"]["nodeName"] == "node-1"  # bound by the scheduler
    assert placed["shop/client-1"]["spec"]["nodeName"] == "node-2"
    assert len(created_pods(api)) == 2
    for p in created_pods(api):
        assert "nodeName" not in p["spec"]  # as created: the scheduler bound it
        assert p["spec"]["activeDeadlineSeconds"] == 5400


def test_a_pending_backend_is_passed_over_for_a_scheduled_one(
    api: KubeAPI, kubeconfig: str
) -> None:
    pending = pod(
        "shop",
        "web-0",
        {"app": "web"},
        "node-1",
        "127.0.3.9",
        [{"name": "http", "containerPort": 8080}],
    )
    del pending["spec"]["nodeName"]
    pending["status"] = {"phase": "Pending"}
    api.add(pending)
    with backend(kubeconfig) as b:
        snap = b.snapshot()
        client, svc = snap.pod("shop", "client-1"), snap.service("shop", "web")
        assert client and svc
        (result,) = b.run(
            [
                Target(
                    id="pod-svc",
                    traffic=Traffic(
                        source=PodEndpoint(pod=client),
                        destination=ServiceEndpoint(service=svc, via=Via.CLUSTER_IP),
                        port=80,
                        protocol=Protocol.TCP,
                    ),
                )
            ],
            timeout=1.0,
        )
    assert result.observed is Observed.CONNECTED
    assert {p["metadata"]["annotations"]["netparity.io/twin-of"] for p in created_pods(api)} == {
        "shop/client-1",
        "shop/web-1",
    }


def test_a_pending_pod_is_not_probed_and_says_why(api: KubeAPI, kubeconfig: str) -> None:
    def unschedule(p: dict[str, Any]) -> None:
        del p["spec"]["nodeName"]
        p["status"] = {"phase": "Pending"}

    update(api, "Pod", "shop", "web-1", unschedule)
    with backend(kubeconfig) as b:
        (result,) = b.run(client_to_web(b.snapshot()), timeout=1.0)
    assert result.observed is Observed.NOT_RUN
    assert "pod shop/web-1 is not scheduled on any node (Pending)" in (result.error or "")
    assert created_pods(api) == []


def test_a_budget_label_is_left_out_of_the_twin_and_said_up_front(
    api: KubeAPI, kubeconfig: str
) -> None:
    api.add(pdb("web", {"matchLabels": {"app": "web", "pod-template-hash": "abc"}}))
    log = Log()
    with backend(kubeconfig, log) as b:
        (result,) = b.run(client_to_web(b.snapshot()), timeout=1.0)
    assert result.observed is Observed.CONNECTED
    (web_twin,) = [
        p
        for p in created_pods(api)
        if p["metadata"]["annotations"]["netparity.io/twin-of"] == "shop/web-1"
    ]
    assert "pod-template-hash" not in web_twin["metadata"]["labels"]
    assert web_twin["metadata"]["labels"]["app"] == "web"
    assert (
        web_twin["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"]
        == "true"
    )
    assert any("leaves out label pod-template-hash=abc" in m for m in log)


def test_a_budget_on_a_label_a_policy_uses_skips_the_twin(api: KubeAPI, kubeconfig: str) -> None:
    api.add(pdb("web", {"matchLabels": {"app": "web"}}))  # the demo policy selects app=web
    with backend(kubeconfig) as b:
        (result,) = b.run(client_to_web(b.snapshot()), timeout=1.0)
    assert result.observed is Observed.NOT_RUN
    assert "PodDisruptionBudget shop/web would select the twin of pod shop/web-1" in (
        result.error or ""
    )
    assert created_pods(api) == []


def test_the_loopback_safeguards_admission_denies_a_pod_without_probes(api: KubeAPI) -> None:
    api.safeguards = True
    bare = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare", "namespace": "shop"},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "c",
                    "image": "nginx",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    request = urllib.request.Request(
        f"{api.url}/api/v1/namespaces/shop/pods",
        data=json.dumps(bare).encode(),
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=10)
    assert e.value.code == 403
    message = json.loads(e.value.read())["message"]
    for words in (
        "<readinessProbe>",
        "<livenessProbe>",
        "no resource request for cpu",
        "pinned tag",
    ):
        assert words in message
    assert set(safeguards_violations(bare)) >= {
        "Container <c> in your Pod has no <readinessProbe>",
        "Container <c> in your Pod has no <livenessProbe>",
    }


def test_twins_pass_the_safeguards_admission_and_probe(api: KubeAPI, kubeconfig: str) -> None:
    api.safeguards = True
    with backend(kubeconfig) as b:
        (result,) = b.run(client_to_web(b.snapshot()), timeout=1.0)
    assert result.observed is Observed.CONNECTED
    assert len(created_pods(api)) == 2
    for p in created_pods(api):
        assert safeguards_violations(p) == []
