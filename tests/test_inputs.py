"""Real-world inputs: manifests folders (workload templates, no nodes), standard input,
--namespace, no silent example, "not judged" and exit code 3, EndpointSlices, the default
target from the nodes' Kubernetes version, live reads of workloads and EndpointSlices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from netparity.cli import main
from netparity.errors import InputError
from netparity.lint import lint_snapshot
from netparity.model.snapshot import load_snapshot, snapshot_from_dicts

REPO = Path(__file__).resolve().parents[1]


def deployment(ns: str | None, name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    return {
        "apiVersion": "apps/v1",
        "kind": spec.pop("kind", "Deployment"),
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "x", "ports": spec.pop("ports", [])},
                    ]
                },
            },
            **spec,
        },
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def policy(ns: str | None, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": spec,
    }


KUBE_DNS = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "kube-dns", "namespace": "kube-system"},
    "spec": {
        "clusterIP": "10.0.0.10",
        "selector": {"k8s-app": "kube-dns"},
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
        ],
    },
}
WEB_EGRESS = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "policyTypes": ["Egress"],
    "egress": [
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                    },
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        }
    ],
}


def manifests(web_ns: str | None = "shop") -> list[dict[str, Any]]:
    """The issue's folder: two Namespaces, web and coredns, kube-dns, web's egress policy."""
    return [
        namespace("shop"),
        namespace("kube-system"),
        deployment(web_ns, "web", {"app": "web"}, ports=[{"containerPort": 8080}], replicas=2),
        deployment(
            "kube-system",
            "coredns",
            {"k8s-app": "kube-dns"},
            ports=[
                {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                {"containerPort": 53, "name": "dns-tcp"},
            ],
        ),
        KUBE_DNS,
        policy(web_ns, "web-egress", WEB_EGRESS),
    ]


def write_folder(tmp_path: Path, docs: list[dict[str, Any]], name: str = "manifests") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i, doc in enumerate(docs):
        (folder / f"{i:02d}-{doc['kind'].lower()}.yaml").write_text(yaml.safe_dump(doc))
    return folder


def lint_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    code = main(["lint", *argv, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


# --------------------------------------------------------------------------- workloads


def test_a_manifests_folder_lints_to_the_own_node_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_folder(tmp_path, manifests())
    code, out = lint_json(capsys, [str(folder)])
    assert code == 1
    (finding,) = out["findings"]
    assert finding["kind"] == "node-egress" and "D4a" in finding["rows"]
    assert finding["object"] == "NetworkPolicy shop/web-egress"
    assert finding["traffic"][0]["pods"]["template"] == "Deployment/web"
    # no nodes in the input: the assumption is said, with the ranges and their options
    assert any("Azure CNI Overlay" in n and "--pod-cidr" in n for n in out["notes"])
    assert out["not_judged"]["complete"] is True


def test_standard_input_gives_the_same_finding(tmp_path: Path) -> None:
    text = yaml.safe_dump_all(manifests())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "netparity", "lint", "-", "--format", "json"],
        input=text,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert [f["kind"] for f in out["findings"]] == ["node-egress"]
    assert out["snapshot"]["sources"] == ["-"]


def test_running_pods_stand_for_their_workload_and_give_the_same_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = manifests()
    pods = []
    for i, (ns, name, labels, node, ip) in enumerate(
        [
            ("shop", "web-1", {"app": "web", "pod-template-hash": "abc"}, "n1", "10.244.0.5"),
            ("kube-system", "coredns-1", {"k8s-app": "kube-dns"}, "n2", "10.244.1.5"),
        ]
    ):
        ports = docs[2 + i]["spec"]["template"]["spec"]["containers"][0]["ports"]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}]},
                "status": {"phase": "Running", "podIP": ip},
            }
        )
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": n, "labels": {"kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }
        for n, cidr, ip in (
            ("n1", "10.244.0.0/24", "10.224.0.4"),
            ("n2", "10.244.1.0/24", "10.224.0.5"),
        )
    ]
    snap = snapshot_from_dicts([*docs, *pods, *nodes])
    assert snap.template_pods == ()  # both workloads are represented by their pods
    assert snap.notes == ()  # nothing assumed
    folder = write_folder(tmp_path, [*docs, *pods, *nodes])
    code, out = lint_json(capsys, [str(folder)])
    assert code == 1
    assert [f["id"] for f in out["findings"]] == ["node-egress/shop/web-egress"]
    assert "template" not in out["findings"][0]["traffic"][0]["pods"]


def test_controllers_add_their_labels_and_a_template_class_is_marked() -> None:
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "ops"},
        "spec": {
            "schedule": "0 0 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "metadata": {"labels": {"app": "nightly"}},
                        "spec": {"containers": [{"name": "c"}]},
                    }
                }
            },
        },
    }
    ss = deployment("db", "pg", {"app": "pg"}, kind="StatefulSet", replicas=2)
    ds = deployment("kube-system", "agent", {"app": "agent"}, kind="DaemonSet")
    ds["spec"]["template"]["spec"]["hostNetwork"] = True
    dep = deployment("shop", "web", {"app": "web"})
    # a ReplicaSet its Deployment owns is the Deployment's business
    rs = deployment("shop", "web-abc", {"app": "web"}, kind="ReplicaSet")
    rs["metadata"]["ownerReferences"] = [{"kind": "Deployment", "name": "web", "controller": True}]
    snap = snapshot_from_dicts([cron, ss, ds, dep, rs])
    by = {p.key: p for p in snap.pods}
    assert sorted(by) == [
        "db/pg-0",
        "db/pg-1",
        *sorted(k for k in by if k.startswith(("kube-system/agent-", "ops/nightly-", "shop/web-"))),
    ]
    assert len(by) == 5
    pg0 = by["db/pg-0"]
    assert pg0.labels["statefulset.kubernetes.io/pod-name"] == "pg-0"
    assert pg0.labels["controller-revision-hash"].startswith("pg-")
    assert pg0.template == "StatefulSet/pg"
    (job,) = [p for p in snap.pods if p.namespace == "ops"]
    assert job.labels["job-name"] == job.labels["batch.kubernetes.io/job-name"]
    assert job.labels["job-name"].startswith("nightly-")
    assert job.labels["controller-uid"] == job.labels["batch.kubernetes.io/controller-uid"]
    (web,) = [p for p in snap.pods if p.namespace == "shop"]
    assert web.labels["pod-template-hash"] and web.template == "Deployment/web"
    (agent,) = [p for p in snap.pods if p.namespace == "kube-system"]
    assert agent.host_network and agent.labels["pod-template-generation"] == "1"
    assert agent.ip == snap.node(agent.node_name or "").ip  # type: ignore[union-attr]
    # two assumed Linux nodes; pods placed on them in turn, with addresses from their ranges
    assert [n.os for n in snap.nodes] == ["linux", "linux"]
    assert {p.node_name for p in snap.pods} == {n.name for n in snap.nodes}
    assert all(p.ip for p in snap.pods)


def test_a_statefulset_template_and_a_pod_name_policy_give_the_identity_finding() -> None:
    ss = deployment("db", "pg", {"app": "pg"}, kind="StatefulSet", replicas=2,
                    ports=[{"containerPort": 5432}])  # fmt: skip
    pol = policy(
        "db",
        "pg0-deny",
        {
            "podSelector": {"matchLabels": {"statefulset.kubernetes.io/pod-name": "pg-0"}},
            "policyTypes": ["Ingress"],
        },
    )
    report = lint_snapshot(snapshot_from_dicts([namespace("db"), ss, pol]), target="cilium")
    kinds = {f.kind for f in report.findings}
    assert "identity-labels" in kinds
    (f,) = [f for f in report.findings if f.kind == "identity-labels"]
    assert "D6" in f.rows and f.policies == ("NetworkPolicy db/pg0-deny",)


def test_pod_and_node_cidr_options_move_the_assumed_addresses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = load_snapshot(
        [write_folder(tmp_path, manifests())], pod_cidr="172.16.0.0/16", node_cidr="192.168.0.0/24"
    )
    assert all(p.ip and p.ip.startswith("172.16.") for p in snap.pods)
    assert all(n.ip.startswith("192.168.0.") for n in snap.nodes)
    with pytest.raises(InputError, match="--pod-cidr"):
        load_snapshot([tmp_path / "manifests"], pod_cidr="10.224.0.0/16")  # overlaps nodes
    assert main(["lint", str(tmp_path / "manifests"), "--node-cidr", "nonsense"]) == 2
    assert "--node-cidr" in capsys.readouterr().err


def test_namespace_option_fills_objects_without_one_and_says_how_many(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_folder(tmp_path, manifests(web_ns=None))
    code, out = lint_json(capsys, [str(folder), "--namespace", "shop"])
    assert code == 1 and out["findings"][0]["object"] == "NetworkPolicy shop/web-egress"
    assert any(
        "2 objects without metadata.namespace took namespace 'shop'" in n for n in out["notes"]
    )
    # without --namespace: `default`, as kubectl does; web's egress then has its own finding there
    code, out = lint_json(capsys, [str(folder)])
    assert out["findings"][0]["object"] == "NetworkPolicy default/web-egress"
    assert main(["lint", str(folder), "--namespace", "Not_A_Name"]) == 2


# --------------------------------------------------------------------------- no silent example


@pytest.mark.parametrize("command", ["lint", "predict", "explain", "plan"])
def test_without_a_snapshot_the_commands_refuse_in_one_sentence(
    command: str, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "netparity", command]
    if command == "predict":
        argv += ["--probes", str(REPO / "examples" / "probes.yaml")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    err = done.stderr.strip()
    assert err.count("\n") == 0
    assert f"netparity {command} needs a snapshot" in err
    assert " - for standard input" in err and "aks-migration.yaml" in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- not judged


def test_what_was_not_judged_is_listed_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = deployment("shop", "api", {"app": "api"}, ports=[{"containerPort": 8080}])
    nothing = policy("shop", "nothing", {"podSelector": {"matchLabels": {"app": "gone"}}})
    # a Cilium rule netparity does not model (toFQDNs) on an egress-isolated pod: unknown
    egress = policy(
        "shop",
        "api-egress",
        {
            "podSelector": {"matchLabels": {"app": "api"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": 80}]}],
        },
    )
    fqdn = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "fqdn", "namespace": "shop"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "api"}},
            "egress": [
                {
                    "toFQDNs": [{"matchName": "example.com"}],
                    "toPorts": [{"ports": [{"port": "443"}]}],
                }
            ],
        },
    }
    legacy = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "legacy", "namespace": "shop"},
        "spec": {"ports": [{"port": 80}]},
    }
    calico = {"apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
              "metadata": {"name": "deny"}}  # fmt: skip
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "a", "namespace": "shop"},
    }
    # toFQDNs admits nothing without Cilium's DNS proxy (AKS without ACNS FQDN): decided, so
    # the pod's own node is a node-egress finding; with the proxy on (enable-l7-proxy), what
    # the rule could admit (outside addresses on 443) hinges on DNS answers: not judged
    proxy = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": "kube-system"},
        "data": {"enable-l7-proxy": "true"},
    }
    for docs, kinds in (([], ["node-egress"]), ([proxy], ["node-egress"])):
        name = "fqdn-proxy" if docs else "fqdn"
        fq = write_folder(tmp_path, [namespace("shop"), api, egress, fqdn, *docs], name)
        code, out = lint_json(capsys, [str(fq)])
        assert code == 1 and [f["kind"] for f in out["findings"]] == kinds
        unknown = out["not_judged"]["unknown"]
        assert bool(unknown and "toFQDNs" in unknown[0]["reason"]) is bool(docs), unknown
    folder = write_folder(tmp_path, [namespace("shop"), api, nothing, legacy, calico, sa])
    code, out = lint_json(capsys, [str(folder)])
    assert code == 3 and out["findings"] == []
    nj = out["not_judged"]
    assert nj["complete"] is False
    assert nj["skipped"] == {"GlobalNetworkPolicy": 1}
    assert nj["services_without_backends"] == ["shop/legacy"]
    assert nj["listed"]["policies_selecting_nothing"] == ["NetworkPolicy shop/nothing"]
    assert nj["listed"]["ignored"] == {"ServiceAccount": 1}
    assert main(["lint", str(folder)]) == 3
    text = capsys.readouterr().out
    assert "not judged:" in text and "shop/legacy" in text and "GlobalNetworkPolicy" in text
    assert "no finding: every policy" not in text
    assert main(["lint", str(folder), "--format", "junit"]) == 3
    root = ET.fromstring(capsys.readouterr().out)
    (case,) = root.findall("./testsuite/testcase")
    assert case.get("name") == "not judged" and case.find("skipped") is not None
    # a policy selecting nothing alone is listed, but everything is judged: exit 0
    clean = write_folder(tmp_path, [namespace("shop"), api, nothing, sa], "clean")
    code, out = lint_json(capsys, [str(clean)])
    assert code == 0 and out["not_judged"]["complete"] is True


# --------------------------------------------------------------------------- EndpointSlices


def test_endpointslices_give_selectorless_services_their_backends() -> None:
    web = deployment("shop", "web", {"app": "web"}, ports=[{"containerPort": 8080}])
    k8s = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "spec": {
            "clusterIP": "10.0.0.1",
            "ports": [{"name": "https", "port": 443, "targetPort": 443}],
        },
    }
    ext = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "manual", "namespace": "shop"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]},
    }

    def eps(ns: str, svc: str, addresses: list[str], ready: bool = True) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{svc}-x",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": svc},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": addresses, "conditions": {"ready": ready}}],
        }

    first = snapshot_from_dicts([web])
    web_ip = first.pods[0].ip
    assert web_ip is not None
    snap = snapshot_from_dicts(
        [
            web,
            k8s,
            ext,
            eps("default", "kubernetes", ["20.50.1.10"]),
            eps("shop", "manual", [web_ip]),
        ]
    )
    assert [p.name for p in snap.backends(snap.service("shop", "manual"))] == [first.pods[0].name]  # type: ignore[arg-type]
    assert snap.endpoints["default/kubernetes"].outside == ("20.50.1.10",)
    assert snap.unresolved_services() == ()
    from netparity.engine.dataplane import get_dataplane
    from netparity.engine.evaluate import Engine
    from netparity.engine.traffic import Decision, PodEndpoint, ServiceEndpoint, Traffic

    svc = snap.service("default", "kubernetes")
    assert svc is not None
    v = Engine(snap).evaluate(
        Traffic(
            source=PodEndpoint(pod=snap.pods[0]), destination=ServiceEndpoint(service=svc), port=443
        ),
        get_dataplane("npm"),
    )
    assert v.decision is Decision.ALLOW and "20.50.1.10:443" in v.explanation
    # without the slice the Service's backends are not in the input
    bare = snapshot_from_dicts([web, k8s])
    assert [s.key for s in bare.unresolved_services()] == ["default/kubernetes"]


# --------------------------------------------------------------------------- default target


ENDPORT = {
    "podSelector": {"matchLabels": {"app": "web"}},
    "policyTypes": ["Egress"],
    "egress": [{"ports": [{"port": 8000, "endPort": 8100, "protocol": "TCP"}]}],
}


def _nodes(version: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": f"n{i}", "labels": {"kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": f"10.244.{i}.0/24"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": f"10.224.0.{4 + i}"}],
                "nodeInfo": {"kubeletVersion": version},
            },
        }
        for i in range(2)
    ]


def test_the_default_target_follows_the_nodes_kubernetes_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    web = deployment("shop", "web", {"app": "web"}, ports=[{"containerPort": 8080}])
    srv = deployment("shop", "srv", {"app": "srv"}, ports=[{"containerPort": 8050}])
    base = [namespace("shop"), web, srv, policy("shop", "ranges", ENDPORT)]
    old = write_folder(tmp_path, [*base, *_nodes("v1.31.5")], "k131")
    code, out = lint_json(capsys, [str(old)])
    assert out["target"] == "cilium-1.16" and code == 1
    assert "endport" in out["summary"]["by_kind"]
    assert any("Kubernetes 1.31.5" in n for n in out["notes"])
    new = write_folder(tmp_path, [*base, *_nodes("v1.33.2")], "k133")
    code, out = lint_json(capsys, [str(new)])
    assert out["target"] == "cilium" and "endport" not in out["summary"]["by_kind"]
    # no version shown: the newest, and the summary says what cilium-1.16 would add
    none = write_folder(tmp_path, base, "unversioned")
    code, out = lint_json(capsys, [str(none)])
    assert out["target"] == "cilium"
    assert any(n.startswith("under cilium-1.16") and "endport" in n for n in out["notes"])
    # --target still wins
    code, out = lint_json(capsys, [str(old), "--target", "cilium"])
    assert out["target"] == "cilium"


# --------------------------------------------------------------------------- live reads


def test_a_live_read_turns_a_scaled_down_workload_and_an_endpointslice_into_backends(
    tmp_path: Path,
) -> None:
    from netparity.kube.client import Kube
    from netparity.kube.read import read_snapshot

    from kubeapi import KubeAPI, demo_cluster

    server = KubeAPI().start()
    try:
        demo_cluster(server)
        idle = deployment("shop", "batch", {"app": "batch"}, replicas=0)
        cron = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": "shop"},
            "spec": {
                "schedule": "0 0 * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "metadata": {"labels": {"app": "nightly"}},
                            "spec": {"containers": [{"name": "c", "image": "x"}]},
                        }
                    }
                },
            },
        }
        k8s = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 443, "targetPort": 443}]},
        }
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["20.50.1.10"]}],
        }
        server.add(namespace("default"), idle, cron, k8s, slice_)
        kube = Kube.connect("test", kubeconfig=str(server.kubeconfig(tmp_path / "kubeconfig")))
        try:
            snap, _ = read_snapshot(kube)
        finally:
            kube.close()
    finally:
        server.stop()
    templates = {p.template for p in snap.template_pods}
    assert {"Deployment/batch", "CronJob/nightly"} <= templates
    # the cluster's nodes: template pods are placed there, none is assumed
    assert {p.node_name for p in snap.template_pods} <= {n.name for n in snap.nodes}
    assert not any("Azure CNI Overlay" in n for n in snap.notes)
    assert snap.endpoints["default/kubernetes"].outside == ("20.50.1.10",)


def test_standard_input_is_read_once() -> None:
    with pytest.raises(InputError, match="only once"):
        load_snapshot(["-", "-"])
