"""The kubernetes backend's pure parts: layout of probes, pod states, agent output, detection."""

from __future__ import annotations

import time
from typing import Any

import pytest

from netparity.backend import Observed, Target
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Via,
)
from netparity.kube.agentio import batch_document, parse_output
from netparity.kube.client import Kube, exit_code_of
from netparity.kube.detect import image_version, release_of
from netparity.kube.layout import LOCAL, Dest, Layout, address, plan_layout
from netparity.kube.podstate import Readiness, pod_state
from netparity.model.objects import (
    ContainerPort,
    Node,
    Pod,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
    frozen_labels,
)

RUN = "20260101-120000-abcd"
N1 = Node(name="n1", ip="10.224.0.4")
N2 = Node(name="n2", ip="10.224.0.5")
WEB = Pod(
    namespace="shop",
    name="web-1",
    labels=frozen_labels({"app": "web"}),
    node_name="n1",
    ports=(
        ContainerPort(name="http", port=8080),
        ContainerPort(name="dns", port=53, protocol=Protocol.UDP),
    ),
)
WEB2 = Pod(
    namespace="shop",
    name="web-2",
    labels=frozen_labels({"app": "web"}),
    node_name="n2",
    ports=WEB.ports,
)
CLIENT = Pod(
    namespace="shop", name="client-1", labels=frozen_labels({"app": "client"}), node_name="n2"
)
HOSTNET = Pod(namespace="kube-system", name="agent", host_network=True, node_name="n1")
SVC = Service(
    namespace="shop",
    name="web",
    type=ServiceType.LOAD_BALANCER,
    selector=frozen_labels({"app": "web"}),
    cluster_ip="10.0.0.10",
    ports=(
        ServicePort(
            name="http", protocol=Protocol.TCP, port=80, target_port="http", node_port=31000
        ),
    ),
)
CIP = Service(
    namespace="shop",
    name="internal",
    selector=frozen_labels({"app": "web"}),
    cluster_ip="10.0.0.11",
    ports=(ServicePort(name="x", protocol=Protocol.TCP, port=81, target_port=9000),),
)


def t(tid: str, src: Any, dst: Any, port: int | str, proto: Protocol = Protocol.TCP) -> Target:
    return Target(id=tid, traffic=Traffic(source=src, destination=dst, port=port, protocol=proto))


def layout(*targets: Target, allow_lb: bool = False, unsafe: Any = lambda pod: None) -> Layout:
    return plan_layout(
        targets,
        run_id=RUN,
        backends_of=lambda svc: [WEB, WEB2],
        node_named={"n1": N1, "n2": N2}.get,
        unsafe_twin=unsafe,
        allow_load_balancer=allow_lb,
    )


def test_every_pod_endpoint_gets_one_twin_and_named_ports_resolve_on_the_real_pod() -> None:
    lay = layout(
        t("a", PodEndpoint(pod=CLIENT), PodEndpoint(pod=WEB), "http"),
        t("b", PodEndpoint(pod=CLIENT), PodEndpoint(pod=WEB), "dns", Protocol.UDP),
        t("c", PodEndpoint(pod=WEB), PodEndpoint(pod=CLIENT), 7000),
    )
    assert sorted(lay.twins) == ["shop/client-1", "shop/web-1"]
    assert [s.dest for s in lay.steps] == [
        Dest(kind="pod", port=8080, protocol=Protocol.TCP, pod="shop/web-1"),
        Dest(kind="pod", port=53, protocol=Protocol.UDP, pod="shop/web-1"),
        Dest(kind="pod", port=7000, protocol=Protocol.TCP, pod="shop/client-1"),
    ]
    assert [s.source for s in lay.steps] == ["shop/client-1", "shop/client-1", "shop/web-1"]
    assert lay.probed_ports["shop/client-1"] == {(7000, Protocol.TCP)}


def test_probes_that_cannot_run_here_say_why_and_create_nothing() -> None:
    lay = layout(
        t("node", NodeEndpoint(node=N1), PodEndpoint(pod=WEB), 8080),
        t(
            "lb",
            ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP),
            ServiceEndpoint(service=SVC, via=Via.LOAD_BALANCER),
            80,
        ),
        t("doc", PodEndpoint(pod=CLIENT), ExternalEndpoint(ip="203.0.113.10"), 443),
        t("hostnet", PodEndpoint(pod=CLIENT), PodEndpoint(pod=HOSTNET), 9000),
        t("noname", PodEndpoint(pod=CLIENT), PodEndpoint(pod=WEB), "nope"),
        t("ext-ext", ExternalEndpoint(ip="198.51.100.1"), ExternalEndpoint(ip="8.8.8.8"), 53),
    )
    reasons = {s.target.id: s.reason or "" for s in lay.steps}
    assert "restricted Pod Security Standard" in reasons["node"]
    assert "--allow-load-balancer" in reasons["lb"]
    assert reasons["doc"].startswith("predicted only: nothing netparity controls answers")
    assert "host network" in reasons["hostnet"]
    assert "no TCP port named 'nope'" in reasons["noname"]
    assert "outside" in reasons["ext-ext"]
    assert lay.twins == {} and lay.services == {}


def test_a_pod_whose_twin_would_be_unsafe_is_not_probed() -> None:
    lay = layout(
        t("a", PodEndpoint(pod=CLIENT), PodEndpoint(pod=WEB), 8080),
        unsafe=lambda pod: "would take real traffic" if pod is WEB else None,
    )
    assert lay.steps[0].reason == "would take real traffic"
    assert lay.twins == {}


def test_services_get_one_run_service_per_backend_typed_by_what_the_probes_need() -> None:
    lay = layout(
        t("cip", PodEndpoint(pod=CLIENT), ServiceEndpoint(service=SVC), 80),
        t(
            "np",
            ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP),
            ServiceEndpoint(service=SVC, via=Via.NODE_PORT, node=N2),
            80,
        ),
        t("plain", PodEndpoint(pod=CLIENT), ServiceEndpoint(service=CIP), 81),
    )
    assert len(lay.services) == 2
    by_name = {rs.service.name: rs for rs in lay.services.values()}
    assert by_name["web"].type is ServiceType.NODE_PORT  # LB not needed: never a LoadBalancer
    assert by_name["internal"].type is ServiceType.CLUSTER_IP
    assert by_name["web"].backend is WEB  # the first backend
    np_step = lay.steps[1]
    assert np_step.source == LOCAL
    assert np_step.dest is not None and np_step.dest.kind == "nodeport" and np_step.dest.ip == N2.ip
    # the backend twin serves the resolved target ports
    assert lay.probed_ports["shop/web-1"] == {(8080, Protocol.TCP), (9000, Protocol.TCP)}


def test_a_load_balancer_service_is_made_only_when_allowed_and_needed() -> None:
    lay = layout(
        t(
            "lb",
            ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP),
            ServiceEndpoint(service=SVC, via=Via.LOAD_BALANCER),
            80,
        ),
        allow_lb=True,
    )
    (rs,) = lay.services.values()
    assert rs.type is ServiceType.LOAD_BALANCER


def test_a_chosen_backend_is_respected() -> None:
    lay = layout(t("a", PodEndpoint(pod=CLIENT), ServiceEndpoint(service=SVC, backend=WEB2), 80))
    (rs,) = lay.services.values()
    assert rs.backend is WEB2 and "shop/web-2" in lay.twins


def test_addresses_are_filled_in_from_the_created_objects() -> None:
    twin_ips = {"shop/web-1": "10.244.1.9"}
    services: dict[str, Any] = {
        "shop/np-x": {
            "spec": {
                "clusterIP": "10.0.5.5",
                "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30007}],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "20.1.2.3"}]}},
        }
    }
    assert address(
        Dest(kind="pod", port=8080, protocol=Protocol.TCP, pod="shop/web-1"),
        twin_ips=twin_ips,
        services=services,
    ) == ("10.244.1.9", 8080)
    assert address(
        Dest(kind="svc", port=80, protocol=Protocol.TCP, service="shop/np-x"),
        twin_ips=twin_ips,
        services=services,
    ) == ("10.0.5.5", 80)
    assert address(
        Dest(kind="nodeport", port=80, protocol=Protocol.TCP, ip="10.224.0.4", service="shop/np-x"),
        twin_ips=twin_ips,
        services=services,
    ) == ("10.224.0.4", 30007)
    assert address(
        Dest(kind="lb", port=80, protocol=Protocol.TCP, service="shop/np-x"),
        twin_ips=twin_ips,
        services=services,
    ) == ("20.1.2.3", 80)
    assert "no nodePort" in str(
        address(
            Dest(
                kind="nodeport", port=80, protocol=Protocol.UDP, ip="1.1.1.1", service="shop/np-x"
            ),
            twin_ips=twin_ips,
            services=services,
        )
    )
    assert "has no IP" in str(
        address(
            Dest(kind="pod", port=1, protocol=Protocol.TCP, pod="shop/web-2"),
            twin_ips=twin_ips,
            services=services,
        )
    )


# --------------------------------------------------------------------------- pod states


def podd(status: dict[str, Any], node: str | None = "n1") -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"nodeName": node}, "status": status}


def test_a_running_pod_with_a_started_agent_is_ready_though_the_pod_is_not() -> None:
    state = pod_state(
        podd(
            {
                "phase": "Running",
                "podIP": "10.1.1.1",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady"}
                ],
                "containerStatuses": [{"name": "agent", "ready": True, "state": {"running": {}}}],
            }
        )
    )
    assert state.readiness is Readiness.READY and state.ip == "10.1.1.1"


def test_a_running_pod_whose_startup_probe_has_not_passed_is_waiting() -> None:
    state = pod_state(
        podd(
            {
                "phase": "Running",
                "podIP": "10.1.1.1",
                "containerStatuses": [{"ready": False, "state": {"running": {}}}],
            }
        )
    )
    assert state.readiness is Readiness.WAITING and "startup probe" in state.detail


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_image_pull_failures_are_recognised(reason: str) -> None:
    state = pod_state(
        podd(
            {
                "phase": "Pending",
                "containerStatuses": [
                    {"state": {"waiting": {"reason": reason, "message": "denied"}}}
                ],
            }
        )
    )
    assert state.readiness is Readiness.IMAGE and reason in state.detail and "n1" in state.detail


def test_unschedulable_names_the_schedulers_message() -> None:
    state = pod_state(
        podd(
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient cpu.",
                    }
                ],
            },
            node=None,
        )
    )
    assert state.readiness is Readiness.WAITING
    assert state.detail == "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."


def test_a_pod_the_node_rejected_fails_naming_the_node_and_reason() -> None:
    state = pod_state(
        podd(
            {
                "phase": "Failed",
                "reason": "OutOfcpu",
                "message": "Node didn't have enough resource: cpu",
            }
        )
    )
    assert state.readiness is Readiness.FAILED
    assert state.detail == "OutOfcpu on node n1: Node didn't have enough resource: cpu"


def test_an_agent_that_exited_fails_with_its_last_words() -> None:
    state = pod_state(
        podd(
            {
                "phase": "Failed",
                "containerStatuses": [
                    {"state": {"terminated": {"exitCode": 2, "message": "cannot bind TCP port 80"}}}
                ],
            }
        )
    )
    assert state.readiness is Readiness.FAILED
    assert "exited with code 2" in state.detail and "cannot bind TCP port 80" in state.detail


def test_a_deleted_pod_failed() -> None:
    assert pod_state(None).readiness is Readiness.FAILED


# --------------------------------------------------------------------------- agent output


def test_agent_output_is_matched_by_id_and_odd_lines_are_reported() -> None:
    out = "\n".join(
        [
            '{"id": "t0", "observed": "connected", "token": "shop/web-1", "latency_ms": 1.5}',
            '{"id": "t1", "observed": "timeout"}',
            '{"id": "t2", "observed": "error", "error": "[Errno 101] unreachable"}',
            '{"id": "t3", "observed": "exploded"}',
            '{"id": "zz", "observed": "connected"}',
        ]
    )
    got, complaint = parse_output(out, ["t0", "t1", "t2", "t3", "t4"])
    assert (
        got["t0"].observed is Observed.CONNECTED
        and got["t0"].token == "shop/web-1"
        and got["t0"].latency_ms == 1.5
    )
    assert got["t1"].observed is Observed.TIMEOUT
    assert got["t2"].observed is Observed.ERROR and "unreachable" in (got["t2"].error or "")
    assert got["t3"].observed is Observed.ERROR
    assert "t4" not in got and "zz" not in got and complaint is None


def test_an_agent_that_refused_the_document_is_a_complaint() -> None:
    got, complaint = parse_output('{"error": "the document must be a JSON object"}\n', ["t0"])
    assert got == {} and complaint == "the document must be a JSON object"


def test_the_batch_is_one_line() -> None:
    doc = batch_document(2.0, [{"id": "t0", "host": "10.0.0.1", "port": 80, "protocol": "TCP"}])
    assert doc.endswith("\n") and doc.count("\n") == 1


def test_the_exec_status_channel_gives_the_exit_code() -> None:
    assert exit_code_of('{"metadata":{},"status":"Success"}') == 0
    assert (
        exit_code_of(
            '{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"2"}]}}'
        )
        == 2
    )
    assert exit_code_of("") is None


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("mcr.microsoft.com/containernetworking/azure-npm:v1.5.45", "1.5.45"),
        ("mcr.microsoft.com/oss/cilium/cilium:1.16.6-250129", "1.16.6"),
        ("quay.io/cilium/cilium:v1.17.2@sha256:" + "a" * 64, "1.17.2"),
        ("localhost:5000/cilium/cilium:v1.18", "1.18"),
        ("quay.io/cilium/cilium@sha256:" + "a" * 64, None),
        ("quay.io/cilium/cilium:latest", None),
    ],
)
def test_versions_are_read_from_image_tags(image: str, version: str | None) -> None:
    assert image_version(image) == version


def test_cilium_before_1_17_is_the_1_16_model() -> None:
    assert release_of("cilium", "1.16.6") == "cilium-1.16"
    assert release_of("cilium", "1.17.0") == "cilium"
    assert release_of("cilium", "1.18.4") == "cilium"
    assert release_of("cilium", "1.19.1") == "cilium-1.19"  # D18, no fromRequires
    assert release_of("cilium", "2.0") == "cilium-1.19"
    assert release_of("cilium", None) == "cilium"
    assert release_of("azure-npm", "1.4.32") == "npm"
    assert release_of("calico-node", "3.28") == "unknown"


class StandInSocket:
    """Plays the exec websocket's reading side: channel buffers, then a close or a break."""

    def __init__(self, chunks: list[tuple[int, str]], *, then: str) -> None:
        self.chunks = chunks
        self.then = then  # "close", "hang" or "break"
        self.channels: dict[int, str] = {}
        self.open = True
        self.stdin = ""

    def write_stdin(self, data: str) -> None:
        self.stdin += data

    def is_open(self) -> bool:
        return self.open

    def update(self, timeout: float = 0) -> None:
        if self.chunks:
            channel, data = self.chunks.pop(0)
            self.channels[channel] = self.channels.get(channel, "") + data
        elif self.then == "close":
            self.open = False
        elif self.then == "break":
            raise ConnectionResetError("connection reset by peer")
        else:
            time.sleep(min(timeout, 0.05))

    def read_channel(self, channel: int, timeout: float = 0) -> str:
        return self.channels.pop(channel, "")


def test_an_exec_reads_its_output_and_exit_code() -> None:
    ws = StandInSocket(
        [(1, '{"id": "t0"'), (1, ', "observed": "refused"}\n'), (3, '{"status":"Success"}')],
        then="close",
    )
    res = Kube._drive(ws, "batch\n", 5.0)
    assert (res.stdout, res.exit_code, res.error) == (
        '{"id": "t0", "observed": "refused"}\n',
        0,
        None,
    )
    assert ws.stdin == "batch\n"


def test_an_exec_that_does_not_finish_in_time_is_an_error() -> None:
    res = Kube._drive(StandInSocket([(1, "partial")], then="hang"), "batch\n", 0.3)
    assert res.exit_code is None and res.error == "the command did not finish within 0.3 s"
    assert res.stdout == "partial"


def test_an_exec_whose_connection_breaks_keeps_the_output_it_got() -> None:
    ws = StandInSocket([(1, '{"id": "t0", "observed": "connected"}\n')], then="break")
    res = Kube._drive(ws, "batch\n", 5.0)
    assert res.stdout.startswith('{"id": "t0"') and "connection reset" in (res.error or "")
    got, _ = parse_output(res.stdout, ["t0"])
    assert got["t0"].observed is Observed.CONNECTED
