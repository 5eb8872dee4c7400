"""--allow-host-network: node sources probed from one hostNetwork pod per node.

The host probe pods live in a namespace the run creates (labelled with the run and for the
`privileged` Pod Security level), add no capability, listen on no port, are placed like
twins and removed like every other run object. Checked against the loopback API server,
whose Pod Security admission reads the namespace's enforce label as the real one does.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils

from netparity.backend import Observed, Target
from netparity.cli import main
from netparity.engine.traffic import NodeEndpoint, PodEndpoint, Traffic
from netparity.kube import RUN_LABEL
from netparity.kube.backend import KubeBackend
from netparity.kube.layout import NODE_SOURCE, plan_layout
from netparity.kube.placement import Placement
from netparity.kube.render import (
    PSA_ENFORCE,
    host_namespace_manifest,
    host_namespace_name,
    host_pod_manifest,
    host_pod_name,
)
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot

import kube_fixtures
from kubeapi import KubeAPI, node, pod

RUN = "20260101-000000-abcd"
AKS_VERSIONS = [
    v for v in ("1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0") if v in kv_utils.all_versions()
]


api = kube_fixtures.api
kubeconfig = kube_fixtures.kubeconfig


def node_targets(snap: Snapshot) -> list[Target]:
    web, client, n1 = snap.pod("shop", "web-1"), snap.pod("shop", "client-1"), snap.node("node-1")
    assert web and client and n1

    def t(tid: str, src: Any, dst: Any, port: int | str) -> Target:
        return Target(
            id=tid, traffic=Traffic(source=src, destination=dst, port=port, protocol=Protocol.TCP)
        )

    return [
        t("node-pod", NodeEndpoint(node=n1), PodEndpoint(pod=web), 8080),
        t("node-pod-named", NodeEndpoint(node=n1), PodEndpoint(pod=web), "http"),
        t("pod-pod", PodEndpoint(pod=client), PodEndpoint(pod=web), "http"),
    ]


# --------------------------------------------------------------------------- the manifests


def test_the_host_pod_has_the_host_network_and_nothing_else() -> None:
    manifest = host_pod_manifest(
        run_id=RUN,
        node="aks-np1-0",
        hostname="aks-np1-0",
        anchor_uid="u-1",
        image="python:3.12-slim",
    )
    spec = manifest["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert not spec.get("hostPID") and not spec.get("hostIPC")
    (c,) = spec["containers"]
    assert "ports" not in c  # it listens on nothing
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}  # nothing added
    assert c["securityContext"]["privileged"] is False
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert not any("hostPath" in v for v in spec["volumes"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "exec" in c[probe]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = terms["nodeSelectorTerms"]
    assert {"key": "kubernetes.io/hostname", "operator": "In", "values": ["aks-np1-0"]} in term[
        "matchExpressions"
    ]
    assert "nodeName" not in spec
    meta = manifest["metadata"]
    assert meta["namespace"] == host_namespace_name(RUN)
    assert meta["name"] == host_pod_name(RUN, "aks-np1-0")
    assert meta["labels"][RUN_LABEL] == RUN
    ns = host_namespace_manifest(run_id=RUN)
    assert ns["metadata"]["labels"][RUN_LABEL] == RUN
    assert ns["metadata"]["labels"][PSA_ENFORCE] == "privileged"


@pytest.mark.parametrize("version", AKS_VERSIONS)
def test_the_host_objects_validate_for_the_kubernetes_versions_aks_supports(version: str) -> None:
    for doc in (
        host_namespace_manifest(run_id=RUN),
        host_pod_manifest(run_id=RUN, node="n1", anchor_uid="u", image="python:3.12-slim"),
    ):
        kubernetes_validate.validate(doc, version, strict=True)


# --------------------------------------------------------------------------- the layout


def test_node_sources_are_not_run_without_the_option_and_get_one_host_pod_each_with_it(
    api: KubeAPI, kubeconfig: str
) -> None:
    with KubeBackend("test", kubeconfig=kubeconfig, settle=0.0) as b:
        snap = b.snapshot()
    kw: dict[str, Any] = {
        "run_id": RUN,
        "backends_of": snap.backends,
        "node_named": snap.node,
    }
    off = plan_layout(node_targets(snap), **kw)
    assert [s.reason for s in off.steps[:2]] == [NODE_SOURCE, NODE_SOURCE]
    assert "--allow-host-network" in NODE_SOURCE and not off.hosts
    on = plan_layout(node_targets(snap), allow_host_network=True, **kw)
    assert list(on.hosts) == ["node:node-1"]  # one per node, whatever the probes
    assert [s.source for s in on.steps] == ["node:node-1", "node:node-1", "shop/client-1"]
    assert host_namespace_name(RUN) not in on.namespaces  # the backend makes that one


def test_a_cordoned_or_windows_node_gets_no_host_pod_and_says_why() -> None:
    objects = [node("n1", "10.0.0.1"), node("n2", "10.0.0.2")]
    objects[0]["spec"]["unschedulable"] = True
    objects[1]["metadata"]["labels"]["kubernetes.io/os"] = "windows"
    objects.append({**node("n3", "10.0.0.3"), "status": {"allocatable": {"pods": "1"}}})
    objects.append(pod("a", "p", {}, "n3", "10.1.0.1"))
    placement = Placement.from_objects([{**o, "kind": o["kind"]} for o in objects])
    assert "cordoned" in (placement.check_host("n1", {}) or "")
    assert "windows node" in (placement.check_host("n2", {}) or "")
    assert "Too many pods" in (placement.check_host("n3", {}) or "")
    assert "not in the cluster" in (placement.check_host("gone", {}) or "")


# --------------------------------------------------------------------------- the API server


def test_pod_security_admission_reads_the_namespaces_enforce_label(api: KubeAPI) -> None:
    manifest = host_pod_manifest(
        run_id=RUN, node="node-1", anchor_uid="u", image="python:3.12-slim"
    )
    for level in (None, "restricted", "baseline", "privileged"):
        ns = host_namespace_manifest(run_id=RUN)
        labels = ns["metadata"]["labels"]
        labels.pop(PSA_ENFORCE)
        if level is not None:
            labels[PSA_ENFORCE] = level
        assert api.do_create("namespaces", "", copy.deepcopy(ns))[0] == 201
        code, doc = api.do_create("pods", host_namespace_name(RUN), copy.deepcopy(manifest))
        if level == "privileged":
            assert code == 201, doc
        else:
            assert code == 403
            want = level or "restricted"
            assert f'violates PodSecurity "{want}:latest"' in doc["message"]
            assert "hostNetwork=true" in doc["message"]
        assert api.do_delete("namespaces", "", host_namespace_name(RUN), {})[0] == 200
        assert not [k for k in api.store if k[1] == host_namespace_name(RUN)]  # emptied


def test_baseline_admits_a_restricted_pods_laxer_cousin_and_denies_added_capabilities(
    api: KubeAPI,
) -> None:
    api.add(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "lax", "labels": {PSA_ENFORCE: "baseline"}},
        }
    )
    body: dict[str, Any] = {
        "metadata": {"name": "plain"},
        # on no node that exists: no kubelet starts it (this is about admission only)
        "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "nginx:1.27"}]},
    }
    assert api.do_create("pods", "lax", copy.deepcopy(body))[0] == 201  # not restricted: fine
    body["metadata"]["name"] = "caps"
    body["spec"]["containers"][0]["securityContext"] = {"capabilities": {"add": ["NET_ADMIN"]}}
    code, doc = api.do_create("pods", "lax", body)
    assert code == 403 and "NET_ADMIN" in doc["message"]


# --------------------------------------------------------------------------- a run


def test_a_run_with_the_option_probes_from_the_node_and_removes_the_namespace(
    api: KubeAPI, kubeconfig: str
) -> None:
    seen: dict[str, Any] = {}

    def progress(what: str, done: int, total: int) -> None:
        if what == "probes" and done == 0:
            seen["namespaces"] = api.objects("Namespace")
            seen["pods"] = api.objects("Pod")
            seen["leases"] = api.objects("Lease")

    with KubeBackend("test", kubeconfig=kubeconfig, settle=0.0, allow_host_network=True) as b:
        results = b.run(node_targets(b.snapshot()), timeout=1.0, progress=progress)
        run_id = b.run_id
    by_id = {r.id: r for r in results}
    for tid in ("node-pod", "node-pod-named", "pod-pod"):
        assert by_id[tid].observed is Observed.CONNECTED, by_id[tid]
        assert by_id[tid].token == "shop/web-1"
    assert "host probe pod" not in (by_id["node-pod"].source or "")
    assert by_id["node-pod"].source is not None and "node:node-1" in by_id["node-pod"].source
    assert by_id["node-pod"].source.endswith("@node-1")

    host_ns = host_namespace_name(run_id)
    (ns,) = [n for n in seen["namespaces"] if n["metadata"]["name"] == host_ns]
    assert ns["metadata"]["labels"][PSA_ENFORCE] == "privileged"
    assert ns["metadata"]["labels"][RUN_LABEL] == run_id
    assert "netparity.io/expires" in ns["metadata"]["annotations"]
    (host,) = [p for p in seen["pods"] if p["metadata"]["namespace"] == host_ns]
    assert host["spec"]["hostNetwork"] is True and host["spec"]["nodeName"] == "node-1"
    assert host["status"]["podIP"] == "127.0.2.1"  # the node's address
    assert (host["metadata"]["name"], "privileged") in api.admitted
    assert any(lease["metadata"]["namespace"] == host_ns for lease in seen["leases"])
    # nothing left: the namespace and everything in it
    assert not [n for n in api.objects("Namespace") if n["metadata"]["name"] == host_ns]
    assert not [k for k, o in api.store.items() if RUN_LABEL in (o["metadata"].get("labels") or {})]


def test_a_killed_runs_host_namespace_is_removed_by_netparity_cleanup(
    api: KubeAPI, kubeconfig: str
) -> None:
    b = KubeBackend("test", kubeconfig=kubeconfig, settle=0.0, allow_host_network=True)
    try:
        b.run(node_targets(b.snapshot())[:1], timeout=1.0)
        host_ns = host_namespace_name(b.run_id)
        assert api.find("Namespace", "", host_ns) is not None
        assert main(["cleanup", "--cluster", "test", "--kubeconfig", kubeconfig, "--force"]) == 0
        assert api.find("Namespace", "", host_ns) is None
        assert not [k for k in api.store if k[1] == host_ns]
    finally:
        b.close()
