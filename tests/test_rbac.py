"""The narrowed RBAC: `netparity rbac` and probes/rbac.yaml.

Reads are cluster-wide and read-only; writes are Roles in exactly the namespaces where a
run creates objects. Checked three ways: the printed YAML and probes/rbac.yaml against the
Kubernetes schemas of the versions AKS supports; probes/rbac.yaml against the rules in
netparity/kube/rbac.py; and a real run against the loopback API server, every request of
which an RBAC authorizer written from the Kubernetes rules must allow with only the
printed objects (namespace by namespace, resourceNames included).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from netparity.backend import Target
from netparity.cli import main
from netparity.kube.backend import KubeBackend
from netparity.kube.rbac import (
    DETECT_RULES,
    HOST_NETWORK_RULES,
    READ_RULES,
    WRITE_RULES,
    Rule,
    manifests,
    parse_subject,
)
from netparity.model.snapshot import load_snapshot
from netparity.plan.planner import make_plan

from kubeapi import KubeAPI, demo_cluster, pod

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "aks-migration.yaml"
AKS_VERSIONS = [v for v in ("1.31.0", "1.32.0", "1.33.0", "1.34.0") if v in kv_utils.all_versions()]
SA = {"kind": "ServiceAccount", "name": "netparity", "namespace": "netparity"}


def rbac_yaml() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "probes" / "rbac.yaml").read_text()) if d]


def printed(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, list[dict[str, Any]]]:
    assert main(["rbac", *args]) == 0
    text = capsys.readouterr().out
    return text, [d for d in yaml.safe_load_all(text) if d]


def write_namespaces(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted(
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "netparity-run"
    )


# --------------------------------------------------------------------------- an authorizer


def _allows(
    rule: Mapping[str, Any], verb: str, group: str, resource: str, name: str | None
) -> bool:
    """One PolicyRule, as the Kubernetes RBAC authorizer reads it (no wildcards here)."""
    if group not in rule.get("apiGroups", ()) or resource not in rule.get("resources", ()):
        return False
    if verb not in rule.get("verbs", ()):
        return False
    names = rule.get("resourceNames")
    return not names or (name is not None and name in names)


def authorized(
    docs: Sequence[Mapping[str, Any]],
    subject: Mapping[str, Any],
    verb: str,
    group: str,
    resource: str,
    namespace: str | None,
    name: str | None,
) -> bool:
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    for b in docs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(all(s.get(k) == v for k, v in subject.items()) for s in b["subjects"]):
            continue
        ref = b["roleRef"]
        where = b["metadata"].get("namespace")
        if b["kind"] == "RoleBinding" and where != namespace:
            continue  # a RoleBinding grants only in its own namespace
        role = roles.get((ref["kind"], where if ref["kind"] == "Role" else None, ref["name"]))
        if role is not None and any(_allows(r, verb, group, resource, name) for r in role["rules"]):
            return True
    return False


def request_attributes(method: str, raw: str) -> tuple[str, str, str, str | None, str | None]:
    """(verb, group, resource[/subresource], namespace, name) of an API request path."""
    split = urlsplit(raw)
    parts = [p for p in split.path.split("/") if p]
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    name = rest[1] if len(rest) > 1 else None
    if method == "GET":
        watch = parse_qs(split.query).get("watch") == ["true"]
        verb = "get" if name else "watch" if watch else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or (
            "delete" if name else "deletecollection"
        )
    return verb, group, resource, namespace, name


def test_the_authorizer_knows_a_rolebinding_grants_only_in_its_namespace() -> None:
    docs = manifests(["shop"], parse_subject("serviceaccount:netparity/netparity"))
    assert authorized(docs, SA, "create", "", "pods", "shop", None)
    assert not authorized(docs, SA, "create", "", "pods", "kube-system", None)
    assert not authorized(docs, SA, "create", "", "pods", None, None)
    assert authorized(docs, SA, "get", "apps", "daemonsets", "kube-system", "cilium")
    assert not authorized(docs, SA, "get", "apps", "daemonsets", "kube-system", "coredns")
    assert not authorized(docs, SA, "get", "apps", "daemonsets", "shop", "cilium")
    assert authorized(docs, SA, "list", "", "pods", None, None)
    other = {"kind": "ServiceAccount", "name": "default", "namespace": "netparity"}
    assert not authorized(docs, other, "list", "", "pods", None, None)


# --------------------------------------------------------------------------- the files


def _rules(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in doc["rules"]]


def _as_json(rules: Sequence[Rule]) -> list[dict[str, Any]]:
    return [r.to_json() for r in rules]


def test_probes_rbac_yaml_holds_the_same_rules_as_the_code() -> None:
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in rbac_yaml()}
    assert _rules(by_name["ClusterRole", "netparity-read"]) == _as_json(READ_RULES)
    assert _rules(by_name["Role", "netparity-detect"]) == _as_json(DETECT_RULES)
    assert _rules(by_name["ClusterRole", "netparity-write"]) == _as_json(WRITE_RULES)
    assert _rules(by_name["ClusterRole", "netparity-host-network"]) == _as_json(HOST_NETWORK_RULES)


def test_probes_rbac_yaml_binds_nothing_that_writes_cluster_wide() -> None:
    docs = rbac_yaml()
    for verb, resource in (("create", "pods"), ("get", "pods/exec"), ("delete", "services")):
        assert not authorized(docs, SA, verb, "", resource, "kube-system", None)
        assert not authorized(docs, SA, verb, "", resource, "shop", None)
    assert all(
        set(r["verbs"]) <= {"list", "get", "watch"} for r in READ_RULES for r in [r.to_json()]
    )
    assert authorized(docs, SA, "list", "", "pods", None, None)


@pytest.mark.parametrize("version", AKS_VERSIONS)
def test_the_printed_rbac_is_valid_for_the_kubernetes_versions_aks_supports(
    version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for subject in (
        "serviceaccount:netparity/netparity",
        "group:0c3e6a8e-1d2b-4c5f-9a7e-123456789abc",
    ):
        _, docs = printed(capsys, "--cluster", f"file:{EXAMPLE}", "--subject", subject)
        assert {d["kind"] for d in docs} >= {
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        }
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


# --------------------------------------------------------------------------- offline


def test_offline_the_roles_cover_exactly_the_namespaces_the_plan_places_objects_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text, docs = printed(capsys, "--cluster", f"file:{EXAMPLE}")
    snap = load_snapshot([str(EXAMPLE)])
    plan = make_plan(snap, current="npm", target="cilium")
    pods_probed = {
        ep.pod.namespace
        for p in plan.probes
        for ep in (p.traffic.source, p.traffic.destination)
        if hasattr(ep, "pod") and not ep.pod.host_network
    }
    namespaces = write_namespaces(docs)
    assert namespaces == sorted(pods_probed)
    assert "kube-system" in namespaces and "WARNING: the plan twins kube-system pods" in text
    # the read part is cluster-wide, the writes are not
    (crb,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert crb["roleRef"]["name"] == "netparity-read"


def test_the_same_input_prints_the_same_text(capsys: pytest.CaptureFixture[str]) -> None:
    first, _ = printed(capsys, "--cluster", f"file:{EXAMPLE}")
    second, _ = printed(capsys, "--cluster", f"file:{EXAMPLE}")
    assert first == second


def test_a_user_subject_gets_no_service_account_and_every_binding_names_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "rbac.yaml"
    assert (
        main(
            [
                "rbac",
                "--cluster",
                f"file:{EXAMPLE}",
                "--subject",
                "user:ci@example.com",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().err
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert not any(d["kind"] in ("ServiceAccount", "Namespace") for d in docs)
    bindings = [d for d in docs if d["kind"].endswith("Binding")]
    assert bindings and all(
        b["subjects"]
        == [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "ci@example.com"}]
        for b in bindings
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cluster", "lab:x"], "is a lab, which has no RBAC"),
        (["--cluster", f"file:{EXAMPLE}", "--subject", "robot"], "--subject"),
        (["--cluster", f"file:{EXAMPLE}", "--subject", "serviceaccount:nons"], "--subject"),
    ],
)
def test_bad_input_exits_2_naming_the_option(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rbac", *args]) == 2
    assert says in capsys.readouterr().err


def test_the_command_is_listed_in_the_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netparity", "--help"], capture_output=True, text=True, check=True
    )
    assert "rbac" in done.stdout


# --------------------------------------------------------------------------- a real run


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    server = KubeAPI().start()
    try:
        demo_cluster(server)
        server.add(
            *[
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                for ns in ("billing", "idle")
            ],
            pod("billing", "ledger-1", {"app": "ledger"}, "node-1", "127.0.3.3"),
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "deny-all", "namespace": "idle"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
            },
        )
        yield server
    finally:
        server.stop()


def test_every_request_of_a_run_is_allowed_by_the_printed_rbac_and_only_there(
    api: KubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    _, docs = printed(capsys, "--cluster", "test", "--kubeconfig", kubeconfig, "--current", "npm")
    namespaces = write_namespaces(docs)
    assert namespaces == ["billing", "shop"]  # not idle (no pods), not kube-system (none probed)
    api.requests.clear()
    api.mutations.clear()
    log: list[str] = []
    with KubeBackend("test", kubeconfig=kubeconfig, log=log.append) as b:
        snap = b.snapshot()
        plan = make_plan(snap, current="npm", target="cilium")
        targets = [Target(id=p.id, traffic=p.traffic) for p in plan.probes]
        results = b.run(targets, timeout=1.0)
    assert results and any(r.observed.value == "connected" for r in results)
    assert main(["cleanup", "--cluster", "test", "--kubeconfig", kubeconfig]) == 0
    requests = [request_attributes(m, p) for m, p in api.requests]
    denied = [r for r in requests if not authorized(docs, SA, *r)]
    assert denied == []
    created = sorted(
        {copy.deepcopy(o)["metadata"]["namespace"] for m, _, o in api.mutations if m == "POST"}
    )
    assert created == namespaces  # a Role in each namespace written to, and nowhere else
    assert any(r[0] == "create" and r[2] == "pods" for r in requests)
    assert any(r[2] == "pods/exec" for r in requests)


# --------------------------------------------------------------------------- --allow-host-network


def test_the_host_network_rules_are_printed_only_when_asked_and_bound_nowhere_in_the_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, plain = printed(capsys, "--cluster", f"file:{EXAMPLE}")
    assert not any(d["metadata"]["name"] == "netparity-host-network" for d in plain)
    assert not authorized(plain, SA, "create", "", "namespaces", None, None)
    text, docs = printed(capsys, "--cluster", f"file:{EXAMPLE}", "--allow-host-network")
    assert "WARNING: --allow-host-network binds the ClusterRole netparity-host-network" in text
    assert authorized(docs, SA, "create", "", "namespaces", None, None)
    assert authorized(docs, SA, "delete", "", "namespaces", None, "netparity-host-x")
    for doc in docs:
        kubernetes_validate.validate(doc, AKS_VERSIONS[-1], strict=True)
    file_docs = rbac_yaml()
    assert not any(
        d["kind"].endswith("Binding") and d["roleRef"]["name"] == "netparity-host-network"
        for d in file_docs
    )
    assert not authorized(file_docs, SA, "create", "", "namespaces", None, None)


def test_every_request_of_a_host_network_run_is_allowed_by_the_opt_in_rbac_only(
    api: KubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from netparity.engine.traffic import NodeEndpoint, PodEndpoint, Traffic
    from netparity.model.objects import Protocol

    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    base = ["--cluster", "test", "--kubeconfig", kubeconfig, "--current", "npm"]
    _, plain = printed(capsys, *base)
    _, docs = printed(capsys, *base, "--allow-host-network")
    api.requests.clear()
    with KubeBackend("test", kubeconfig=kubeconfig, settle=0.0, allow_host_network=True) as b:
        snap = b.snapshot()
        n1, web = snap.node("node-1"), snap.pod("shop", "web-1")
        assert n1 and web
        traffic = Traffic(
            source=NodeEndpoint(node=n1),
            destination=PodEndpoint(pod=web),
            port=8080,
            protocol=Protocol.TCP,
        )
        (result,) = b.run([Target(id="node-web", traffic=traffic)], timeout=1.0)
    assert result.observed.value == "connected", result
    assert main(["cleanup", "--cluster", "test", "--kubeconfig", kubeconfig]) == 0
    requests = [request_attributes(m, p) for m, p in api.requests]
    assert [r for r in requests if not authorized(docs, SA, *r)] == []
    denied = [r for r in requests if not authorized(plain, SA, *r)]
    assert ("create", "", "namespaces", None, None) in denied
    assert any(r[0] == "delete" and r[2] == "namespaces" for r in requests)
