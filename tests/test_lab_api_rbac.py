"""RBAC in the lab API: the ServiceAccount of probes/rbac.yaml has a token of its own, and a
request of it outside the Roles `netparity rbac` renders gets 403 with the Kubernetes
Status body; the server's own token is not checked; the suites' run under the
ServiceAccount's token works (run from the lab's outside host, nothing refused)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netparity.kube.rbac import DEFAULT_SUBJECT, manifests, parse_subject
from netparity.lab import down
from netparity.labapi import KubeAPI, serve
from netparity.labapi.kubeconfig import api_dir, merge_context
from netparity.labapi.rbac import Authorizer

from lab_fixtures import unique_lab_name

REPO = Path(__file__).resolve().parents[1]
USER = "system:serviceaccount:netparity:netparity"


def _call(
    url: str, token: str, method: str, path: str, *, ca: Path | None = None
) -> tuple[int, dict[str, Any]]:
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    req = urllib.request.Request(
        url + path,
        method=method,
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    ctx = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    with KubeAPI() as server:
        server.authorizer = Authorizer(manifests(["web"], parse_subject(DEFAULT_SUBJECT)))
        server.account_token = "sa-token"
        yield server


@pytest.mark.parametrize(
    ("method", "path", "verb", "resource", "group", "where"),
    [
        ("POST", "/api/v1/namespaces", "create", "namespaces", "", "at the cluster scope"),
        ("POST", "/api/v1/namespaces/shop/pods", "create", "pods", "", 'namespace "shop"'),
        (
            "GET",
            "/api/v1/namespaces/kube-system/pods/coredns/exec?command=sh",
            "get",
            "pods/exec",
            "",
            'namespace "kube-system"',
        ),
        (
            "GET",
            "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy",
            "get",
            "daemonsets",
            "apps",
            'namespace "kube-system"',
        ),
        ("DELETE", "/api/v1/namespaces/web/services/x", None, None, None, None),
        ("PATCH", "/api/v1/namespaces/web/pods/x", "patch", "pods", "", 'namespace "web"'),
        (
            "GET",
            "/api/v1/namespaces/web/configmaps?watch=true",
            "watch",
            "configmaps",
            "",
            'namespace "web"',
        ),
    ],
)
def test_a_request_outside_the_service_accounts_roles_gets_403(
    api: KubeAPI,
    method: str,
    path: str,
    verb: str | None,
    resource: str | None,
    group: str | None,
    where: str | None,
) -> None:
    code, doc = _call(api.url, "sa-token", method, path)
    if verb is None:  # inside its Roles (delete services in web): served, here a 404
        assert code == 404 and doc["reason"] == "NotFound"
        return
    assert code == 403, doc
    assert doc["kind"] == "Status" and doc["status"] == "Failure" and doc["code"] == 403
    assert doc["reason"] == "Forbidden"
    assert (
        f'User "{USER}" cannot {verb} resource "{resource}" in API group "{group}"'
        in (doc["message"])
    )
    assert where is not None and where in doc["message"]
    # the server's own token (a cluster admin) is not checked (a watch of it would stream);
    # a wrong token is a 401
    if "watch=" not in path:
        assert _call(api.url, api.token, method, path)[0] != 403
    assert _call(api.url, "nobody", method, path)[0] == 401


def test_the_service_account_reads_cluster_wide_and_writes_only_where_its_roles_are(
    api: KubeAPI,
) -> None:
    assert _call(api.url, "sa-token", "GET", "/api/v1/pods")[0] == 200
    assert _call(api.url, "sa-token", "GET", "/api/v1/namespaces/web/pods/x")[0] == 404
    # resourceNames: the detection Role names azure-npm and cilium only
    azure = "/apis/apps/v1/namespaces/kube-system/daemonsets/azure-npm"
    assert _call(api.url, "sa-token", "GET", azure)[0] == 404
    assert _call(api.url, "sa-token", "DELETE", "/api/v1/namespaces/web/pods/x")[0] == 404
    assert _call(api.url, "sa-token", "DELETE", "/api/v1/namespaces/shop/pods/x")[0] == 403


@pytest.mark.lab
def test_the_suites_run_under_the_service_accounts_token_with_nothing_refused(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab API test needs root (it builds network namespaces)")
    name = unique_lab_name("r")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    admin = tmp_path / "admin-config"
    try:
        subprocess.run(
            [sys.executable, "-m", "netparity", "lab", "up", "--name", name, "--api",
             "--kubeconfig", str(admin)],
            cwd=REPO, env=env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        folder, record = api_dir(name), serve.load_record(name)
        assert record is not None
        rbac = list(yaml.safe_load_all((folder / "rbac.yaml").read_text()))
        assert {"netparity-read", "netparity-detect", "netparity-run"} <= {
            d["metadata"]["name"] for d in rbac if d and d["kind"].endswith("Role")
        }
        token = (folder / "serviceaccount-token").read_text().strip()
        assert token != (folder / "token").read_text().strip()
        config = tmp_path / "sa-config"
        merge_context(config, "sa", str(record["url"]), folder / "tls.crt", token)
        code, doc = _call(
            str(record["url"]), token, "POST", "/api/v1/namespaces", ca=folder / "tls.crt"
        )
        assert code == 403 and doc["reason"] == "Forbidden", doc
        outside = serve.outside_host(name)
        assert outside is not None
        done = subprocess.run(
            ["ip", "netns", "exec", outside, sys.executable, "-m", "pytest", "suites/",
             "--cluster", "sa", "--report-dir", str(tmp_path / "reports"), "--phase", "pre",
             "-p", "no:randomly", "-p", "no:cacheprovider", "--tb=short", "-rfE", "-q"],
            cwd=REPO, env={**env, "KUBECONFIG": str(config)}, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        sys.stdout.write(done.stdout[-3000:])
        log = (folder / "server.log").read_text()
        refused = [line for line in log.splitlines() if line.startswith("403 ")]
        assert refused == ["403 POST /api/v1/namespaces: " + doc["message"]], refused
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert "agree with the predictions" in done.stdout and "could not run" not in done.stdout
    finally:
        serve.stop(name)
        down(name, wait=30)
