"""probes/job.yaml: the suites as an in-cluster Job, validated like the other manifests.

Against the Kubernetes schemas of the versions AKS supports; its pod against the loopback
API server's `restricted` Pod Security check; its ServiceAccount against probes/rbac.yaml;
and its runner label against the snapshot reader (the runner is never a workload).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from netparity.kube.client import Kube
from netparity.kube.read import RUNNER_LABEL, read_snapshot

import kube_fixtures
from kubeapi import KubeAPI, pod, restricted_violations

REPO = Path(__file__).resolve().parents[1]
AKS_VERSIONS = [v for v in ("1.31.0", "1.32.0", "1.33.0", "1.34.0") if v in kv_utils.all_versions()]


def job_docs() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((REPO / "probes" / "job.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


@pytest.mark.parametrize("version", AKS_VERSIONS)
def test_the_job_manifest_is_valid_for_the_kubernetes_versions_aks_supports(version: str) -> None:
    docs = job_docs()
    assert set(docs) == {"Job", "PersistentVolumeClaim"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_job_runs_the_suites_in_cluster_into_the_persistent_report_volume() -> None:
    job = job_docs()["Job"]
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    command = container["command"]
    assert command[:4] == ["python3", "-m", "pytest", "suites/"]
    assert command[command.index("--cluster") + 1] == "in-cluster"
    reports = command[command.index("--report-dir") + 1]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == reports)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    claim = job_docs()["PersistentVolumeClaim"]["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim  # the baseline outlives the pod
    assert job["spec"]["backoffLimit"] == 0 and spec["restartPolicy"] == "Never"


def test_the_job_runs_as_the_service_account_probes_rbac_yaml_binds() -> None:
    rbac = [d for d in yaml.safe_load_all((REPO / "probes" / "rbac.yaml").read_text()) if d]
    job = job_docs()["Job"]
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    namespace = job["metadata"]["namespace"]
    assert any(
        d["kind"] == "ServiceAccount"
        and d["metadata"] == {**d["metadata"], "name": account, "namespace": namespace}
        for d in rbac
    )
    bound = [
        s for d in rbac if d["kind"] in ("ClusterRoleBinding", "RoleBinding") for s in d["subjects"]
    ]
    assert {"kind": "ServiceAccount", "name": account, "namespace": namespace} in bound


def test_the_job_pod_meets_the_restricted_pod_security_standard() -> None:
    template = job_docs()["Job"]["spec"]["template"]
    assert restricted_violations(template) == []
    assert template["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert template["metadata"]["labels"][RUNNER_LABEL] == "true"


api = kube_fixtures.api


def test_the_runner_pod_is_never_read_as_a_workload(api: KubeAPI, tmp_path: Path) -> None:
    runner = pod(
        "shop", "netparity-abcde", {"app.kubernetes.io/name": "netparity"}, "node-1", "127.0.3.9"
    )
    runner["metadata"]["labels"][RUNNER_LABEL] = "true"
    api.add(runner, pod("shop", "other-1", {"app": "other"}, "node-1", "127.0.3.8"))
    kube = Kube.connect("test", kubeconfig=str(api.kubeconfig(tmp_path / "kubeconfig")))
    try:
        snap, objs = read_snapshot(kube)
    finally:
        kube.close()
    keys = {p.key for p in snap.pods}
    assert "shop/other-1" in keys and "shop/netparity-abcde" not in keys
    assert not any(o["metadata"]["name"] == "netparity-abcde" for o in objs)
