"""Reading a cluster through the official client, against a real API server on loopback."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from netparity.errors import ClusterError, InputError
from netparity.kube import RUN_LABEL
from netparity.kube.backend import KubeBackend
from netparity.kube.client import CONFIG_MAPS, PODS, Kube
from netparity.model.snapshot import load_snapshot

import kube_fixtures
from kubeapi import KubeAPI, demo_cluster, migrating

REPO = Path(__file__).resolve().parents[1]
RBAC_403 = (
    'pods is forbidden: User "ci" cannot list resource "pods" in API group "" at the cluster scope'
)


api = kube_fixtures.api
kubeconfig = kube_fixtures.kubeconfig


def backend(kubeconfig: str, **kw: object) -> KubeBackend:
    return KubeBackend("test", kubeconfig=kubeconfig, log=lambda m: None, **kw)  # type: ignore[arg-type]


def test_a_snapshot_written_to_a_file_reads_back_equal(kubeconfig: str, tmp_path: Path) -> None:
    out = tmp_path / "cluster.yaml"
    with backend(kubeconfig) as b:
        live = b.write_snapshot(out)
    doc = yaml.safe_load(out.read_text())
    assert doc["kind"] == "List" and doc["apiVersion"] == "v1"
    assert all("managedFields" not in item["metadata"] for item in doc["items"])
    back = load_snapshot([out])
    assert dataclasses.replace(back, sources=()) == dataclasses.replace(live, sources=())
    # the dataplane's DaemonSet has no pod in the test API: its hostNetwork template stands in
    assert [p.key for p in live.pods if p.template is None] == ["shop/client-1", "shop/web-1"]
    assert live.service("shop", "web") is not None and len(live.network_policies) == 1
    assert dict(live.config["kube-system/cilium-config"]) == {"enable-policy": "default"}
    assert [
        tmp for tmp in tmp_path.iterdir() if tmp.name.startswith(".")
    ] == []  # atomic: no temp left


def test_the_snapshot_leaves_out_netparitys_own_objects(api: KubeAPI, kubeconfig: str) -> None:
    api.add(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "netparity-x",
                "namespace": "shop",
                "labels": {"app": "web", RUN_LABEL: "r"},
            },
            "spec": {"containers": [{"name": "agent", "image": "python:3.12-slim"}]},
            "status": {"phase": "Running", "podIP": "127.0.1.200"},
        }
    )
    with backend(kubeconfig) as b:
        assert [p.name for p in b.snapshot().pods if p.template is None] == ["client-1", "web-1"]
    assert ("GET", "/api/v1/pods?labelSelector=%21netparity.io/run&limit=500") in api.requests


def test_cilium_policies_are_read_where_the_crds_exist(api: KubeAPI, kubeconfig: str) -> None:
    api.cilium_crds = True
    api.add(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "allow-web", "namespace": "shop"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}],
            },
        }
    )
    with backend(kubeconfig) as b:
        snap = b.snapshot()
    assert [c.key for c in snap.cilium_policies] == ["shop/allow-web"]


def test_absent_cilium_crds_are_skipped_quietly(api: KubeAPI, kubeconfig: str) -> None:
    with backend(kubeconfig) as b:
        assert b.snapshot().cilium_policies == ()
    assert ("GET", "/apis/cilium.io/v2/ciliumnetworkpolicies?limit=500") in api.requests


def test_enforcement_configmaps_that_rbac_hides_are_skipped(api: KubeAPI, kubeconfig: str) -> None:
    api.fail(
        "GET",
        r"/configmaps/",
        403,
        message='configmaps "cilium-config" is forbidden: User "ci" cannot get resource "configmaps"',
    )
    with backend(kubeconfig) as b:
        snap = b.snapshot()
    assert dict(snap.config) == {} and len([p for p in snap.pods if p.template is None]) == 2


def test_403_names_the_verb_the_resource_and_the_rbac_file(api: KubeAPI, kubeconfig: str) -> None:
    api.fail("GET", r"^/api/v1/pods", 403, message=RBAC_403)
    with backend(kubeconfig) as b, pytest.raises(ClusterError) as e:
        b.snapshot()
    message = str(e.value)
    assert "not allowed to list pods in all namespaces" in message
    assert "probes/rbac.yaml" in message and "403" in message


def test_a_passing_500_is_retried(api: KubeAPI, kubeconfig: str) -> None:
    fault = api.fail("GET", r"^/api/v1/nodes", 500, times=1)
    with backend(kubeconfig) as b:
        assert len(b.snapshot().nodes) == 2
    assert fault.hits == 1


def test_a_lasting_500_is_a_cluster_error_naming_the_request(api: KubeAPI, kubeconfig: str) -> None:
    api.fail(
        "GET",
        r"^/apis/networking.k8s.io/v1/networkpolicies",
        500,
        message="etcdserver: request timed out",
    )
    with (
        backend(kubeconfig) as b,
        pytest.raises(
            ClusterError,
            match=r"failed to list networkpolicies.networking.k8s.io in all namespaces \(500 .*etcdserver",
        ),
    ):
        b.snapshot()


def test_wrong_credentials_are_a_401_cluster_error(api: KubeAPI, tmp_path: Path) -> None:
    config = api.kubeconfig(tmp_path / "kc", token="expired")
    with (
        backend(str(config)) as b,
        pytest.raises(ClusterError, match=r"rejected the credentials \(401"),
    ):
        b.snapshot()


def test_a_missing_context_lists_the_contexts_there_are(kubeconfig: str) -> None:
    with pytest.raises(ClusterError, match=r"has no context 'prod' \(contexts: test\)"):
        KubeBackend("prod", kubeconfig=kubeconfig)


def test_a_missing_kubeconfig_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="no kubeconfig at"):
        KubeBackend("prod", kubeconfig=str(tmp_path / "nope"))


def test_in_cluster_configuration_outside_a_cluster_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError, match="in-cluster configuration"):
        KubeBackend("in-cluster")


def test_an_unreachable_api_server_is_one_sentence(api: KubeAPI, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "kc"
    api.kubeconfig(config)
    config.write_text(config.read_text().replace(api.url, f"http://127.0.0.1:{port}"))
    with (
        backend(str(config)) as b,
        pytest.raises(
            ClusterError,
            match=f"cannot reach the API server at http://127.0.0.1:{port} to list namespaces",
        ),
    ):
        b.snapshot()


def test_bad_options_are_input_errors(kubeconfig: str) -> None:
    with pytest.raises(InputError, match="--dataplane"):
        backend(kubeconfig, dataplane="calico")
    with pytest.raises(InputError, match="--probe-image"):
        backend(kubeconfig, probe_image="not an image")


# --------------------------------------------------------------------------- detection


def test_cilium_before_1_17_is_detected_with_its_version(kubeconfig: str) -> None:
    with backend(kubeconfig) as b:
        facts = b.facts()
        assert (facts.dataplane, facts.version, facts.backend, facts.name) == (
            "cilium-1.16",
            "1.16.5",
            "kubernetes",
            "test",
        )
        assert "cilium" in b.evidence


def test_current_cilium_is_detected(tmp_path: Path) -> None:
    with KubeAPI() as server:
        demo_cluster(server, cilium_version="v1.17.3")
        with backend(str(server.kubeconfig(tmp_path / "kc"))) as b:
            assert (b.facts().dataplane, b.facts().version) == ("cilium", "1.17.3")


def test_azure_npm_is_detected_with_its_version(tmp_path: Path) -> None:
    with KubeAPI() as server:
        demo_cluster(server, dataplane="npm")
        with backend(str(server.kubeconfig(tmp_path / "kc"))) as b:
            assert (b.facts().dataplane, b.facts().version) == ("npm", "1.5.45")


def test_npm_pods_without_their_daemonset_are_detected(tmp_path: Path) -> None:
    with KubeAPI() as server:
        demo_cluster(server, dataplane="none")
        server.add(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "azure-npm-x7f2q",
                    "namespace": "kube-system",
                    "labels": {"k8s-app": "azure-npm"},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "azure-npm",
                            "image": "mcr.microsoft.com/containernetworking/azure-npm:v1.4.32",
                        }
                    ]
                },
            }
        )
        with backend(str(server.kubeconfig(tmp_path / "kc"))) as b:
            assert (b.facts().dataplane, b.facts().version) == ("npm", "1.4.32")


def test_no_known_agent_is_an_error_showing_the_evidence_and_pointing_at_dataplane(
    tmp_path: Path,
) -> None:
    with KubeAPI() as server:
        demo_cluster(server, dataplane="none")
        server.add(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "calico-node", "namespace": "kube-system"},
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"name": "calico-node", "image": "calico/node:v3.28"}]
                        }
                    }
                },
            }
        )
        with (
            backend(str(server.kubeconfig(tmp_path / "kc"))) as b,
            pytest.raises(ClusterError) as e,
        ):
            b.facts()
    message = str(e.value)
    assert "neither azure-npm nor cilium runs in kube-system" in message
    assert "DaemonSets in kube-system: calico-node (calico/node:v3.28)" in message
    assert "--dataplane" in message and "'unknown'" not in message


def test_azure_npm_and_cilium_both_running_is_an_error_naming_both(tmp_path: Path) -> None:
    with KubeAPI() as server:
        demo_cluster(server, dataplane="npm")
        server.add(
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "cilium", "namespace": "kube-system"},
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "cilium-agent", "image": "quay.io/cilium/cilium:v1.17.3"}
                            ]
                        }
                    }
                },
            }
        )
        with (
            backend(str(server.kubeconfig(tmp_path / "kc"))) as b,
            pytest.raises(ClusterError) as e,
        ):
            b.facts()
    message = str(e.value)
    assert "in the middle of the migration to Cilium" in message
    # no Cilium agent pod anywhere: both nodes are named
    assert "no ready Cilium agent on node-1, node-2" in message
    assert "--wait-ready SECONDS" in message


def test_a_cluster_in_the_migration_window_is_refused_with_its_nodes_named(
    api: KubeAPI, kubeconfig: str
) -> None:
    migrating(api, reimaged={"node-1"}, reimaging={"node-2"})
    with backend(kubeconfig) as b, pytest.raises(ClusterError) as e:
        b.facts()
    message = str(e.value)
    assert message.startswith("test: the cluster is in the middle of the migration to Cilium (")
    for part in (
        "azure-npm still runs on node-2",
        "no ready Cilium agent on node-2",
        "NotReady: node-2",
        "cordoned: node-2",
        "cilium DaemonSet: 1 of 1 ready, 1 updated, 2 Linux nodes",
        "Cilium enforces only once every node is",
        "--wait-ready SECONDS",
    ):
        assert part in message, (part, message)
    assert "node-1" not in message  # reimaged, its agent ready: not named
    assert message.count(". ") == 0 and "\n" not in message  # one sentence
    # the same refusal ends `pytest --cluster` as a usage error (the plugin's _usage)


def test_cilium_alone_but_not_ready_on_every_linux_node_is_the_window_too(
    api: KubeAPI, kubeconfig: str
) -> None:
    migrating(api, reimaged={"node-1", "node-2"})  # the migration is over ...
    ds = api.find("DaemonSet", "kube-system", "cilium")
    assert ds is not None
    ds["status"].update(numberReady=1)  # ... but one agent is not ready yet
    api.add(ds)
    api.add(_agent("cilium-node-2", "node-2", ready=False))
    with backend(kubeconfig) as b, pytest.raises(ClusterError) as e:
        b.facts()
    message = str(e.value)
    assert "no ready Cilium agent on node-2" in message
    assert "cilium DaemonSet: 1 of 2 ready, 2 updated, 2 Linux nodes" in message
    assert "azure-npm" not in message


def test_a_finished_migration_is_detected_as_cilium(api: KubeAPI, kubeconfig: str) -> None:
    migrating(api, reimaged={"node-1", "node-2"})
    with backend(kubeconfig) as b:
        assert (b.facts().dataplane, b.facts().version) == ("cilium", "1.17.3")


def test_wait_ready_waits_for_the_window_to_close_showing_progress(
    api: KubeAPI, kubeconfig: str
) -> None:
    migrating(api, reimaged={"node-1"}, reimaging={"node-2"})
    said: list[str] = []
    finish = threading.Timer(1.0, lambda: migrating(api, reimaged={"node-1", "node-2"}))
    finish.start()
    try:
        start = time.monotonic()
        with KubeBackend(
            "test", kubeconfig=kubeconfig, log=said.append, wait_ready=30, wait_poll=0.2
        ) as b:
            assert b.facts().dataplane == "cilium"
        took = time.monotonic() - start
    finally:
        finish.cancel()
    assert 0.9 <= took < 10, took
    assert any(
        "migration to Cilium is under way (Cilium ready on 1/2 Linux nodes, azure-npm on 1)" in m
        and "of 30 s (--wait-ready)" in m
        for m in said
    ), said
    assert "the migration window is over" in said[-1], said


def test_wait_ready_gives_up_when_the_time_is_up(api: KubeAPI, kubeconfig: str) -> None:
    migrating(api, reimaged={"node-1"}, reimaging={"node-2"})
    start = time.monotonic()
    with (
        backend(kubeconfig, wait_ready=0.6, wait_poll=0.2) as b,
        pytest.raises(ClusterError) as e,
    ):
        b.facts()
    assert 0.5 <= time.monotonic() - start < 10
    assert "it still was after waiting 0.6 s (--wait-ready)" in str(e.value)
    assert "azure-npm still runs on node-2" in str(e.value)


def test_wait_ready_must_not_be_negative(kubeconfig: str) -> None:
    with pytest.raises(InputError, match="--wait-ready"):
        backend(kubeconfig, wait_ready=-1)


def _suites(kubeconfig: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubeconfig, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "suites/", "--cluster", "test", "-p", "no:cacheprovider",
         "--report-dir", str(tmp_path / "reports"), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_pytest_in_the_window_is_a_usage_error_after_waiting_with_progress(
    api: KubeAPI, kubeconfig: str, tmp_path: Path
) -> None:
    migrating(api, reimaged={"node-1"}, reimaging={"node-2"})
    done = _suites(kubeconfig, tmp_path, "--wait-ready", "0.5")
    out = done.stdout + done.stderr
    assert done.returncode == 4, out  # pytest's usage error
    assert "ERROR: netparity: test: the cluster is in the middle of the migration to Cilium" in out
    assert "azure-npm still runs on node-2" in out
    assert "it still was after waiting 0.5 s (--wait-ready)" in out
    assert "Cilium ready on 1/2 Linux nodes, azure-npm on 1" in out  # the progress shown
    assert not any(m for m in api.mutations)  # nothing was made


def test_wait_ready_must_be_a_number_of_seconds(kubeconfig: str, tmp_path: Path) -> None:
    done = _suites(kubeconfig, tmp_path, "--wait-ready", "soon")
    assert done.returncode == 4
    assert "--wait-ready 'soon' must be a number of seconds from 0 to 86400" in done.stderr


def _agent(name: str, node: str, *, ready: bool) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": "cilium"}},
        "spec": {"nodeName": node, "containers": [{"name": "cilium-agent", "image": "x:1"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_a_dataplane_override_wins_without_asking_the_cluster(
    api: KubeAPI, kubeconfig: str
) -> None:
    with backend(kubeconfig, dataplane="npm") as b:
        assert b.facts().dataplane == "npm"
    assert not any("daemonsets" in path for _, path in api.requests)


# --------------------------------------------------------------------------- the client's own guard


def test_the_client_refuses_to_delete_or_create_anything_not_labelled_as_netparitys(
    api: KubeAPI, kubeconfig: str
) -> None:
    kube = Kube.connect("test", kubeconfig=kubeconfig)
    try:
        real = kube.get(PODS, "web-1", namespace="shop")
        assert real is not None
        with pytest.raises(ClusterError, match="refusing to delete Pod 'web-1'"):
            kube.delete(PODS, real)
        with pytest.raises(ClusterError, match=r"not labelled netparity\.io/run"):
            kube.create(CONFIG_MAPS, {"metadata": {"name": "x", "namespace": "shop"}})
    finally:
        kube.close()
    assert api.mutations == []
    assert api.find("Pod", "shop", "web-1") is not None
