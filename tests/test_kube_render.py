"""The probe objects the kubernetes backend creates: schema-valid, restricted, inert."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from netparity.errors import ClusterError, InputError
from netparity.kube import READINESS_GATE, RUN_LABEL, TWIN_LABEL
from netparity.kube.render import (
    CONTROL_PORT,
    DEFAULT_DEADLINE,
    DEFAULT_IMAGE,
    MESH_OPT_OUT_ANNOTATIONS,
    PROBE_COMMAND,
    SAFE_TO_EVICT,
    agent_source,
    anchor_manifest,
    changed_labels,
    check_image,
    is_run_id,
    new_run_id,
    serve_ports,
    service_manifest,
    short_hash,
    twin_manifest,
)
from netparity.model._wire import Ctx
from netparity.model.objects import (
    ContainerPort,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    frozen_labels,
)

REPO = Path(__file__).resolve().parents[1]
RUN = "20260101-120000-abcd"
# The Kubernetes versions AKS supports (1.31-1.34 GA, 1.35 arriving; LTS keeps older minors
# longer), as far as kubernetes-validate bundles them.
AKS_VERSIONS = [
    v for v in ("1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0") if v in kv_utils.all_versions()
]

WEB = Pod(
    namespace="shop",
    name="web-7d4b9-x2x",
    labels=frozen_labels({"app": "web", "tier": "front", "pod-template-hash": "7d4b9"}),
    node_name="aks-nodepool1-1",
    ip="10.244.1.5",
    ports=(
        ContainerPort(name="http", port=80),
        ContainerPort(name="metrics", port=9090),
        ContainerPort(name="dns", port=53, protocol=Protocol.UDP),
        ContainerPort(name=None, port=9999, protocol=Protocol.SCTP),
    ),
)
UDP_ONLY = Pod(
    namespace="infra",
    name="dns-0",
    labels=frozen_labels({"app": "dns"}),
    node_name="aks-nodepool1-2",
    ports=(ContainerPort(name="dns", port=5353, protocol=Protocol.UDP),),
)
SVC = Service(
    namespace="shop",
    name="web",
    type=ServiceType.LOAD_BALANCER,
    selector=frozen_labels({"app": "web"}),
    cluster_ip="10.0.12.7",
    ports=(
        ServicePort(
            name="http", protocol=Protocol.TCP, port=80, target_port="http", node_port=31080
        ),
        ServicePort(name="alt", protocol=Protocol.TCP, port=8443, target_port=9443),
    ),
    external_traffic_policy="Local",
)


AZ = "service.beta.kubernetes.io/"
INTERNAL_LB = Service.from_dict(
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web-internal",
            "namespace": "shop",
            "annotations": {
                f"{AZ}azure-load-balancer-internal": "true",
                f"{AZ}azure-load-balancer-internal-subnet": "apps-subnet",
                f"{AZ}azure-load-balancer-health-probe-request-path": "/healthz",
                f"{AZ}port_80_health-probe_protocol": "http",
                f"{AZ}azure-load-balancer-ipv4": "10.240.0.25",
                f"{AZ}azure-pip-name": "web-pip",
                f"{AZ}azure-dns-label-name": "myweb",
                f"{AZ}azure-pls-create": "true",
                f"{AZ}azure-pls-name": "web-pls",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "web"},
            "loadBalancerIP": "10.240.0.25",
            "loadBalancerClass": "service.k8s.aws/nlb-like",
            "loadBalancerSourceRanges": ["10.0.0.0/8", "192.168.1.0/24"],
            "internalTrafficPolicy": "Local",
            "externalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    },
    Ctx("Service", "shop/web-internal"),
)


def twin(pod: Pod = WEB, extra: list[tuple[int, Protocol]] | None = None) -> dict[str, Any]:
    return twin_manifest(
        run_id=RUN,
        pod=pod,
        anchor_uid="0d5ae7a6-1111-2222-3333-444455556666",
        image=DEFAULT_IMAGE,
        ports=serve_ports(pod, extra or []),
    )


def all_manifests() -> list[dict[str, Any]]:
    out = [
        anchor_manifest(run_id=RUN, namespace="shop", started="2026-01-01T12:00:00+00:00"),
        twin(),
        twin(UDP_ONLY),
        twin(WEB, [(8080, Protocol.TCP), (5000, Protocol.UDP)]),
    ]
    for stype in (ServiceType.CLUSTER_IP, ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER):
        for svc in (SVC, INTERNAL_LB):
            out.append(
                service_manifest(run_id=RUN, service=svc, backend=WEB, anchor_uid="u", type=stype)
            )
    return out


def test_kubernetes_validate_bundles_the_aks_versions() -> None:
    assert AKS_VERSIONS == ["1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0"]


@pytest.mark.parametrize("version", AKS_VERSIONS)
def test_every_manifest_is_valid_for_the_kubernetes_versions_aks_supports(version: str) -> None:
    for manifest in all_manifests():
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("version", AKS_VERSIONS)
def test_the_rbac_manifest_is_valid(version: str) -> None:
    docs = [d for d in yaml.safe_load_all((REPO / "probes" / "rbac.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} >= {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_twin_meets_the_restricted_pod_security_standard() -> None:
    spec = twin()["spec"]
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65534
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65534
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc.get("privileged") is False
    assert all(set(v) <= {"name", "configMap"} for v in spec["volumes"])
    assert not any("hostPort" in p for p in container["ports"])
    # the one sysctl (ports below 1024 without NET_BIND_SERVICE) is in the PSS safe set
    assert spec["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}
    ]
    assert spec["automountServiceAccountToken"] is False


def test_a_twin_without_low_ports_sets_no_sysctl() -> None:
    assert "sysctls" not in twin(UDP_ONLY)["spec"]["securityContext"]


def test_a_twin_requests_little_and_is_limited() -> None:
    resources = twin()["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "10m", "memory": "32Mi"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_a_twin_carries_the_real_labels_plus_the_run_and_twin_labels() -> None:
    labels = twin()["metadata"]["labels"]
    assert labels == {
        "app": "web",
        "tier": "front",
        "pod-template-hash": "7d4b9",
        RUN_LABEL: RUN,
        TWIN_LABEL: short_hash("shop/web-7d4b9-x2x"),
        "sidecar.istio.io/inject": "false",
        "kuma.io/sidecar-injection": "disabled",
    }
    assert twin()["metadata"]["namespace"] == "shop"
    assert twin()["metadata"]["annotations"]["netparity.io/twin-of"] == "shop/web-7d4b9-x2x"


def test_a_twin_has_the_real_container_ports_with_names_and_protocols() -> None:
    ports = twin()["spec"]["containers"][0]["ports"]
    assert ports == [
        {"containerPort": 80, "protocol": "TCP", "name": "http"},
        {"containerPort": 9090, "protocol": "TCP", "name": "metrics"},
        {"containerPort": 53, "protocol": "UDP", "name": "dns"},
        {"containerPort": 9999, "protocol": "SCTP"},
    ]


def test_a_twin_serves_its_ports_and_the_probed_ones_under_the_real_pod_key() -> None:
    command = twin(WEB, [(8080, Protocol.TCP), (5000, Protocol.UDP)])["spec"]["containers"][0][
        "command"
    ]
    assert command == [
        "python3",
        "/agent/agent.py",
        "serve",
        "--name",
        "shop/web-7d4b9-x2x",
        "--tcp",
        "80,8080,9090",
        "--udp",
        "53,5000",
        "--sctp",
        "9999",
    ]


def test_a_twin_without_tcp_ports_serves_a_control_port_for_its_startup_probe() -> None:
    container = twin(UDP_ONLY)["spec"]["containers"][0]
    assert container["command"][-4:] == ["--tcp", str(CONTROL_PORT), "--udp", "5353"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == [
            "python3",
            "/agent/agent.py",
            "health",
            "--tcp",
            str(CONTROL_PORT),
            "--name",
            "infra/dns-0",
        ]
    assert container["ports"] == [{"containerPort": 5353, "protocol": "UDP", "name": "dns"}]


def test_a_twin_is_placed_by_the_scheduler_on_the_real_pods_linux_node_and_never_ready() -> None:
    spec = twin()["spec"]
    assert "nodeName" not in spec  # the scheduler places it, and says why it cannot
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {e["key"]: (e["operator"], e["values"]) for e in term["matchExpressions"]} == {
        "kubernetes.io/hostname": ("In", ["aks-nodepool1-1"]),
        "kubernetes.io/os": ("In", ["linux"]),
        "type": ("NotIn", ["virtual-kubelet"]),
    }
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["readinessGates"] == [{"conditionType": READINESS_GATE}]


def test_a_twin_follows_the_nodes_hostname_label_not_its_name() -> None:
    manifest = twin_manifest(
        run_id=RUN,
        pod=WEB,
        anchor_uid="u",
        image=DEFAULT_IMAGE,
        ports=serve_ports(WEB),
        hostname="host-17",
    )
    (term,) = manifest["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert term["matchExpressions"][0]["values"] == ["host-17"]


def test_a_twin_without_a_node_is_refused() -> None:
    pending = Pod(namespace="shop", name="web-pending", labels=WEB.labels)
    with pytest.raises(ClusterError, match="no node"):
        twin(pending)


def test_a_twin_has_exec_readiness_and_liveness_probes_and_no_extra_port() -> None:
    container = twin()["spec"]["containers"][0]
    health = ["python3", "/agent/agent.py", "health", "--tcp", "9090", "--name", WEB.key]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == health
        assert not {"httpGet", "tcpSocket", "grpc"} & set(container[probe])
    assert [p["containerPort"] for p in container["ports"]] == [80, 9090, 53, 9999]


def test_a_twin_gets_the_deadline_it_is_given() -> None:
    manifest = twin_manifest(
        run_id=RUN,
        pod=WEB,
        anchor_uid="u",
        image=DEFAULT_IMAGE,
        ports=serve_ports(WEB),
        deadline=1234,
    )
    assert manifest["spec"]["activeDeadlineSeconds"] == 1234
    assert twin()["spec"]["activeDeadlineSeconds"] == DEFAULT_DEADLINE


def test_a_twin_is_safe_to_evict_and_opts_out_of_every_mesh() -> None:
    meta = twin()["metadata"]
    assert meta["annotations"][SAFE_TO_EVICT] == "true"
    for key, value in MESH_OPT_OUT_ANNOTATIONS.items():
        assert meta["annotations"][key] == value
    assert meta["annotations"]["linkerd.io/inject"] == "disabled"
    assert meta["annotations"]["openservicemesh.io/sidecar-injection"] == "disabled"
    assert meta["annotations"]["consul.hashicorp.com/connect-inject"] == "false"
    assert meta["labels"]["sidecar.istio.io/inject"] == "false"
    assert meta["labels"]["kuma.io/sidecar-injection"] == "disabled"


def test_a_pods_own_mesh_labels_never_reach_its_twin() -> None:
    meshed = Pod(
        namespace="shop",
        name="web-meshed",
        node_name="aks-nodepool1-1",
        labels=frozen_labels(
            {
                "app": "web",
                "sidecar.istio.io/inject": "true",
                "istio.io/rev": "asm-1-22",
                "kuma.io/sidecar-injection": "enabled",
            }
        ),
    )
    labels = twin(meshed)["metadata"]["labels"]
    assert labels["sidecar.istio.io/inject"] == "false"
    assert labels["kuma.io/sidecar-injection"] == "disabled"
    assert "istio.io/rev" not in labels
    assert labels["app"] == "web"
    assert changed_labels(meshed) == {
        "istio.io/rev": "",
        "kuma.io/sidecar-injection": "disabled",
        "sidecar.istio.io/inject": "false",
    }


def test_a_twin_leaves_out_the_labels_it_is_told_to() -> None:
    manifest = twin_manifest(
        run_id=RUN,
        pod=WEB,
        anchor_uid="u",
        image=DEFAULT_IMAGE,
        ports=serve_ports(WEB),
        leave_out=frozenset({"tier"}),
    )
    assert "tier" not in manifest["metadata"]["labels"]
    assert manifest["metadata"]["labels"]["app"] == "web"


def test_a_twin_is_controlled_by_the_run_anchor_so_no_replicaset_adopts_it() -> None:
    (ref,) = twin()["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": f"netparity-run-{RUN}",
        "uid": "0d5ae7a6-1111-2222-3333-444455556666",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_a_twin_mounts_the_agent_from_the_anchor() -> None:
    spec = twin()["spec"]
    assert spec["volumes"] == [
        {
            "name": "agent",
            "configMap": {
                "name": f"netparity-run-{RUN}",
                "items": [{"key": "agent.py", "path": "agent.py"}],
            },
        }
    ]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "agent", "mountPath": "/agent", "readOnly": True}
    ]


def test_the_anchor_carries_the_agent_verbatim_and_the_run_label() -> None:
    anchor = anchor_manifest(run_id=RUN, namespace="shop", started="2026-01-01T12:00:00+00:00")
    assert anchor["data"]["agent.py"] == agent_source()
    assert anchor["metadata"]["labels"][RUN_LABEL] == RUN
    assert anchor["metadata"]["name"] == f"netparity-run-{RUN}"


def test_the_runs_service_selects_only_the_twin_and_publishes_not_ready_addresses() -> None:
    svc = service_manifest(
        run_id=RUN, service=SVC, backend=WEB, anchor_uid="u", type=ServiceType.NODE_PORT
    )
    spec = svc["spec"]
    assert spec["selector"] == {RUN_LABEL: RUN, TWIN_LABEL: short_hash(WEB.key)}
    assert "app" not in spec["selector"]  # never the real labels: no real pod gets probe traffic
    assert spec["publishNotReadyAddresses"] is True
    assert spec["type"] == "NodePort"
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["ports"] == [
        {"port": 80, "protocol": "TCP", "targetPort": "http", "name": "http"},
        {"port": 8443, "protocol": "TCP", "targetPort": 9443, "name": "alt"},
    ]
    assert all("nodePort" not in p for p in spec["ports"])  # allocated afresh, never a real one's
    assert svc["metadata"]["ownerReferences"][0]["controller"] is True
    assert svc["metadata"]["labels"][RUN_LABEL] == RUN


def test_a_cluster_ip_service_sets_no_external_traffic_policy() -> None:
    svc = service_manifest(
        run_id=RUN, service=SVC, backend=WEB, anchor_uid="u", type=ServiceType.CLUSTER_IP
    )
    assert "externalTrafficPolicy" not in svc["spec"]


def test_a_load_balancer_twin_copies_the_allow_list_and_nothing_that_claims_a_resource() -> None:
    svc = service_manifest(
        run_id=RUN,
        service=INTERNAL_LB,
        backend=WEB,
        anchor_uid="u",
        type=ServiceType.LOAD_BALANCER,
    )
    annotations = svc["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith(AZ)} == {
        f"{AZ}azure-load-balancer-internal": "true",
        f"{AZ}azure-load-balancer-internal-subnet": "apps-subnet",
        f"{AZ}azure-load-balancer-health-probe-request-path": "/healthz",
        f"{AZ}port_80_health-probe_protocol": "http",
    }
    assert "kubectl.kubernetes.io/last-applied-configuration" not in annotations
    spec = svc["spec"]
    assert "loadBalancerIP" not in spec
    assert spec["loadBalancerClass"] == "service.k8s.aws/nlb-like"
    assert spec["loadBalancerSourceRanges"] == ["10.0.0.0/8", "192.168.1.0/24"]
    assert spec["internalTrafficPolicy"] == "Local"
    assert spec["externalTrafficPolicy"] == "Local"


def test_load_balancer_settings_are_not_put_on_a_cluster_ip_twin() -> None:
    spec = service_manifest(
        run_id=RUN, service=INTERNAL_LB, backend=WEB, anchor_uid="u", type=ServiceType.CLUSTER_IP
    )
    assert not {"loadBalancerClass", "loadBalancerSourceRanges"} & set(spec["spec"])
    assert not [k for k in spec["metadata"]["annotations"] if k.startswith(AZ)]
    assert spec["spec"]["internalTrafficPolicy"] == "Local"


def test_absent_and_empty_source_ranges_are_told_apart() -> None:
    def parse(spec: dict[str, Any]) -> Service:
        raw = {"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", **spec}}
        return Service.from_dict(raw, Ctx("Service", "default/s"))

    assert parse({}).load_balancer_source_ranges is None
    assert parse({"loadBalancerSourceRanges": []}).load_balancer_source_ranges == ()
    empty = service_manifest(
        run_id=RUN,
        service=parse({"loadBalancerSourceRanges": [], "selector": {"a": "b"}}),
        backend=WEB,
        anchor_uid="u",
        type=ServiceType.LOAD_BALANCER,
    )
    assert empty["spec"]["loadBalancerSourceRanges"] == []
    with pytest.raises(InputError, match=r"loadBalancerSourceRanges\[0\].*invalid CIDR"):
        parse({"loadBalancerSourceRanges": ["10.0.0.0/33"]})


def test_labels_with_yaml_special_characters_survive_rendering() -> None:
    odd = Pod(
        namespace="x",
        name="p",
        labels=frozen_labels({"a": "yes", "b": "1.0", "c": "null", "example.com/d": "on"}),
        node_name="n1",
        ports=(ContainerPort(name="x", port=8080),),
    )
    labels = twin(odd)["metadata"]["labels"]
    assert (
        labels["a"] == "yes"
        and labels["b"] == "1.0"
        and labels["c"] == "null"
        and labels["example.com/d"] == "on"
    )


@pytest.mark.parametrize(
    "image",
    [
        "python:3.12-slim",
        "myregistry.azurecr.io/mirror/python:3.12-slim",
        "python@sha256:" + "a" * 64,
        "myregistry.azurecr.io/python:3.12@sha256:" + "0123456789abcdef" * 4,
    ],
)
def test_image_references_with_tags_and_digests_are_accepted(image: str) -> None:
    assert check_image(image) == image


@pytest.mark.parametrize("image", ["", "python 3", "python@sha256:short", "Python:3"])
def test_a_bad_image_reference_is_an_input_error_naming_the_option(image: str) -> None:
    with pytest.raises(InputError, match="--probe-image"):
        check_image(image)


def test_run_ids_sort_by_start_time_and_are_valid_names() -> None:
    from datetime import UTC, datetime

    a = new_run_id(datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC))
    b = new_run_id(datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC))
    assert is_run_id(a) and is_run_id(b) and a < b
    assert len(f"netparity-{a}-{short_hash('x')}") <= 63


def test_the_exec_command_needs_no_end_of_stdin(tmp_path: Path) -> None:
    """Over the v4 websocket protocol stdin never closes: the command must act on one line."""
    agent = tmp_path / "agent.py"
    agent.write_text(agent_source())
    code = PROBE_COMMAND[2].replace("/agent/agent.py", str(agent))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        doc = {
            "timeout": 0.5,
            "targets": [{"id": "a", "host": "127.0.0.1", "port": 1, "protocol": "TCP"}],
        }
        proc.stdin.write(json.dumps(doc) + "\n")
        proc.stdin.flush()  # and stdin stays open
        start = time.monotonic()
        line = proc.stdout.readline()
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - start < 10
        assert json.loads(line)["observed"] == "refused"
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()


def test_the_health_command_checks_that_the_serving_agent_answers_with_its_token(
    tmp_path: Path,
) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(agent_source())
    with socket.socket() as s:  # a free port, closed again before the agent binds it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    health = twin(UDP_ONLY)["spec"]["containers"][0]["livenessProbe"]["exec"]["command"]
    health = [sys.executable, str(agent), *health[2:]]
    health[health.index("--tcp") + 1] = str(port)

    def check(argv: list[str]) -> int:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode

    assert check(health) == 2  # nothing serving yet
    serve = subprocess.Popen(
        [
            sys.executable,
            str(agent),
            "serve",
            "--name",
            UDP_ONLY.key,
            "--tcp",
            str(port),
            "--bind",
            "127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None and serve.stdout.readline().strip() == "ready"
        assert check(health) == 0
        wrong = [*health[: health.index("--name") + 1], "someone/else"]
        assert check(wrong) == 2  # another pod's agent (or a proxy) answering is not health
    finally:
        serve.terminate()
        serve.wait(timeout=10)
        if serve.stdout is not None:
            serve.stdout.close()
