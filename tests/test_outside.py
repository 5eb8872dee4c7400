"""Outside probes that mean something: never a cluster address, in the lab always a host that
answers, on a real cluster only to a responder that answered (docs/kubernetes.md, "Outside
probes"). AKS-like clusters come from bench/gen.py (Services in 10.0.0.0/16, egress
`ipBlock: 10.0.0.0/8`); the Kubernetes runs go to the loopback API server (tests/kubeapi.py)
and a real agent serving on loopback."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netparity.backend import Target
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    ExternalEndpoint,
    PodEndpoint,
    Traffic,
)
from netparity.errors import ClusterError, InputError
from netparity.kube.layout import PREDICTED_ONLY, Dest, plan_layout
from netparity.kube.responder import Responder, check_responder, parse_responder
from netparity.lab.build import plan_topology
from netparity.model.objects import Protocol, run_owned
from netparity.model.snapshot import Snapshot, snapshot_from_dicts
from netparity.plan.addresses import AKS_SERVICE_CIDR, cluster_ranges, parse_service_cidr
from netparity.plan.model import Plan
from netparity.plan.planner import make_plan

import lab_fixtures
from kubeapi import KubeAPI, demo_cluster

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from gen import generate  # noqa: E402

pytest_plugins = ["pytester"]

NODE_SUBNET = ipaddress.IPv4Network("10.224.0.0/16")  # gen.py's
VNET = ipaddress.IPv4Network("10.0.0.0/8")
QUIET = "-p no:cacheprovider -p no:hypothesispytest -p no:benchmark -p no:randomly"


def aks(pods: int, namespaces: int, policies: int, nodes: int) -> Snapshot:
    return snapshot_from_dicts(
        generate(
            pods,
            namespaces,
            policies,
            nodes,
            service_cidr="10.0.0.0/16",
            vnet_egress=max(3, namespaces // 2),
        )
    )


def outside(plan: Plan) -> dict[str, list[str]]:
    """Every outside address of the plan, with the titles of its probes."""
    out: dict[str, list[str]] = {}
    for p in plan.probes:
        for end in (p.traffic.source, p.traffic.destination):
            if isinstance(end, ExternalEndpoint):
                out.setdefault(end.ip, []).append(p.title)
    return out


def assert_outside_the_cluster(snap: Snapshot, plan: Plan) -> None:
    pod_cidrs = [ipaddress.IPv4Network(n.pod_cidr) for n in snap.nodes if n.pod_cidr]
    owned = {n.ip for n in snap.nodes} | {p.ip for p in snap.pods if p.ip}
    owned |= {s.cluster_ip for s in snap.services if s.cluster_ip}
    owned |= {ip for s in snap.services for ip in s.load_balancer_ips}
    for ip in outside(plan):
        addr = ipaddress.IPv4Address(ip)
        assert addr not in AKS_SERVICE_CIDR, ip  # AKS's Service range (and kube-dns 10.0.0.10)
        assert addr not in NODE_SUBNET, ip
        assert addr not in ipaddress.IPv4Network("10.244.0.0/16"), ip  # the overlay range
        assert not any(addr in c for c in pod_cidrs), ip
        assert ip not in owned, ip


@pytest.mark.parametrize(
    "shape", [(300, 10, 30, 3), (1000, 20, 100, 5)], ids=["300-pods", "1000-pods"]
)
def test_an_aks_like_cluster_gets_outside_addresses_outside_every_cluster_range(
    shape: tuple[int, int, int, int],
) -> None:
    snap = aks(*shape)
    assert any(
        s.key == "kube-system/kube-dns" and s.cluster_ip == "10.0.0.10" for s in snap.services
    )
    plan = make_plan(snap)
    addrs = outside(plan)
    assert_outside_the_cluster(snap, plan)
    # the egress rules to 10.0.0.0/8 are probed, at an address of the VNet outside the cluster
    in_vnet = [ip for ip in addrs if ipaddress.IPv4Address(ip) in VNET]
    assert in_vnet
    assert any("pod-external" in t for ip in in_vnet for t in addrs[ip])
    assert [p.id for p in make_plan(snap).probes] == [p.id for p in plan.probes]


def test_the_lab_of_a_1000_pod_cluster_gives_no_planned_outside_address_to_anything() -> None:
    snap = aks(1000, 20, 100, 5)
    topo = plan_topology(snap, lab="o1000", dataplane="npm")
    plan = make_plan(topo.snapshot)  # what `pytest --cluster lab:` plans from
    assert_outside_the_cluster(topo.snapshot, plan)
    lab_addresses = {n.ip for n in topo.nodes} | {p.ip for p in topo.pods}
    lab_addresses |= {s.cluster_ip for s in topo.snapshot.services if s.cluster_ip}
    lab_addresses |= {ip for s in topo.snapshot.services for ip in s.load_balancer_ips}
    assert not set(outside(plan)) & lab_addresses


def test_the_service_range_is_read_from_the_cluster_ips_or_given() -> None:
    docs = generate(60, 3, 10, 3)
    for d in docs:  # kubeadm's range instead of AKS's
        if d["kind"] == "Service":
            d["spec"]["clusterIP"] = f"10.96.{len(d['metadata']['name'])}.7"
    snap = snapshot_from_dicts(docs)
    ranges = cluster_ranges(snap)
    assert ipaddress.IPv4Network("10.96.0.0/16") in ranges.services
    assert AKS_SERVICE_CIDR in ranges.services  # it fits: nothing of the cluster is there
    assert ranges.where("10.96.200.1") == "the Service range 10.96.0.0/16"
    assert ranges.where("10.224.3.3") == "the node subnet 10.224.0.0/16"
    assert ranges.where("10.128.0.1") is None
    given = cluster_ranges(snap, service_cidr=parse_service_cidr("10.100.0.0/20"))
    assert given.services == (ipaddress.IPv4Network("10.100.0.0/20"),)
    with pytest.raises(InputError, match="--service-cidr"):
        parse_service_cidr("10.100.0.0/40")


def test_aks_default_range_is_not_assumed_where_the_cluster_itself_lives() -> None:
    docs = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.1.4"}]},
        }
    ]
    ranges = cluster_ranges(snapshot_from_dicts(docs))
    assert ranges.nodes == (ipaddress.IPv4Network("10.0.0.0/16"),)
    assert ranges.services == ()


def test_the_responder_is_chosen_for_every_egress_block_that_holds_it_and_the_runner_for_ingress() -> (
    None
):
    snap = aks(300, 10, 30, 3)
    plan = make_plan(snap, responder="10.30.0.5", external_ip="10.40.0.9")
    addrs = outside(plan)
    to_vnet = [t for t in addrs.get("10.30.0.5", []) if "pod-external" in t]
    assert to_vnet, sorted(addrs)
    others = [ip for ip in addrs if ipaddress.IPv4Address(ip) in VNET]
    assert sorted(others) == ["10.30.0.5", "10.40.0.9"]  # the responder and the runner only
    # the outside client is the runner: its probes are `external:default`, whatever its address
    assert any(t.startswith("external:default ->") for t in addrs["10.40.0.9"])
    # "anywhere" (0.0.0.0/0 egress) goes to the responder too, never to a documentation address
    egress_world = [
        p
        for p in plan.probes
        if isinstance(p.traffic.destination, ExternalEndpoint)
        and p.traffic.destination.ip == DEFAULT_EXTERNAL_IP
    ]
    assert egress_world == []


# --------------------------------------------------------------------------- the layout

CLIENT = aks(60, 3, 10, 3).pods[-1]


def _t(tid: str, src: Any, dst: Any, port: int, proto: Protocol = Protocol.TCP) -> Target:
    return Target(id=tid, traffic=Traffic(source=src, destination=dst, port=port, protocol=proto))


def _layout(*targets: Target, responder: Responder | None, external_ip: str | None) -> Any:
    return plan_layout(
        targets,
        run_id="r1",
        backends_of=lambda svc: (),
        node_named=lambda name: None,
        responder=responder,
        external_ip=external_ip,
    )


def test_on_kubernetes_outside_destinations_go_only_to_the_responder_and_say_why_not() -> None:
    me = PodEndpoint(pod=CLIENT)
    targets = (
        _t("resp", me, ExternalEndpoint(ip="10.30.0.5"), 443),
        _t("udp", me, ExternalEndpoint(ip="10.30.0.5"), 53, Protocol.UDP),
        _t("port", me, ExternalEndpoint(ip="10.30.0.5"), 5432),
        _t("other", me, ExternalEndpoint(ip="10.128.0.1"), 443),
        _t("from-runner", ExternalEndpoint(ip="10.40.0.9"), me, 8080),
        _t("from-elsewhere", ExternalEndpoint(ip="192.168.0.1"), me, 8080),
    )
    resp = Responder(ip="10.30.0.5", token="netparity-responder")
    lay = _layout(*targets, responder=resp, external_ip="10.40.0.9")
    by = {s.target.id: s for s in lay.steps}
    assert by["resp"].dest == Dest(
        kind="ip", port=443, protocol=Protocol.TCP, ip="10.30.0.5", token="netparity-responder"
    )
    assert by["udp"].reason is None
    assert by["port"].reason == (
        "predicted only: the responder 10.30.0.5 serves no TCP port 5432; add it to "
        "--responder and to the agent serving there"
    )
    assert (by["other"].reason or "").startswith(
        "predicted only: the outside address 10.128.0.1 is not the responder (10.30.0.5"
    )
    assert by["from-runner"].reason is None and by["from-runner"].source == "local"
    assert (by["from-elsewhere"].reason or "").startswith(
        "predicted only: the cluster sees this machine as 10.40.0.9 (--external-ip), not as "
        "192.168.0.1"
    )
    bare = _layout(*targets[:1], responder=None, external_ip="10.40.0.9")
    assert (bare.steps[0].reason or "").startswith(
        f"{PREDICTED_ONLY}: nothing netparity controls answers at the outside address 10.30.0.5"
    )
    assert bare.twins == {}  # nothing is created for a probe that is not run


def test_responder_option_is_parsed_with_ports_and_refuses_what_is_not_an_address() -> None:
    r = parse_responder("10.30.0.5:443,8080-8081,53/udp")
    assert (r.ip, r.tcp, r.udp) == ("10.30.0.5", (443, 8080, 8081), (53,))
    assert parse_responder("10.30.0.5").tcp == (80, 443, 8080, 8443)
    assert r.command == (
        "python3 probes/agent.py serve --name netparity-responder --tcp 443,8080,8081 --udp 53"
    )
    for bad in (
        "responder.example",
        "10.30.0.5:http",
        "10.30.0.5:0",
        "0.0.0.0:80",
        "10.3.0.5:1/sctp",
    ):
        with pytest.raises(InputError, match="--responder"):
            parse_responder(bad)


# --------------------------------------------------------------------------- a real responder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def responder() -> Iterator[Responder]:
    """The agent in serve mode on loopback (127.1.0.1: outside the loopback cluster's
    127.0.0.0/16), exactly as docs/kubernetes.md starts it."""
    port = _free_port()  # and 443, which the plan uses for rules of every port (root)
    r = Responder(ip="127.1.0.1", tcp=(443, port), udp=(port,))
    cmd = r.command.replace("python3", sys.executable).replace(
        "probes/agent.py", str(REPO / "probes" / "agent.py")
    )
    proc = subprocess.Popen(
        [*cmd.split(), "--bind", r.ip], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline().strip()
        if first != "ready":  # e.g. another process of this machine holds 127.1.0.1:443
            proc.terminate()
            pytest.fail(f"the responder did not start: {proc.stderr.read().strip()}")
        yield r
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_responder_is_checked_on_every_port_and_one_that_does_not_answer_is_refused(
    responder: Responder,
) -> None:
    checked = check_responder(responder, timeout=1.0)
    assert checked.token == "netparity-responder"
    silent = Responder(ip=responder.ip, tcp=(*responder.tcp, _free_port()), udp=())
    with pytest.raises(ClusterError) as e:
        check_responder(silent, timeout=1.0)
    message = str(e.value)
    assert message.count(". ") == 0 and "does not answer as the probe agent" in message
    assert f"tcp/{silent.tcp[-1]} refused" in message and responder.command.split()[0] in message


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    server = KubeAPI().start()
    try:
        demo_cluster(server)
        server.add(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "client-out", "namespace": "shop"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "client"}},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {"to": [{"ipBlock": {"cidr": "127.1.0.0/16"}}]},  # holds the responder
                        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},  # does not
                    ],
                },
            }
        )
        yield server
    finally:
        server.stop()


@pytest.fixture
def suites(pytester: pytest.Pytester, api: KubeAPI, monkeypatch: pytest.MonkeyPatch) -> Any:
    (pytester.path / "suites").mkdir()
    for name in ("__init__.py", "test_connectivity.py"):
        shutil.copy(REPO / "suites" / name, pytester.path / "suites" / name)
    pytester.makeconftest('pytest_plugins = ["netparity.plugin"]\n')
    pytester.makeini(f"[pytest]\naddopts = {QUIET}\n")
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(pytester.path / "kubeconfig")))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return pytester


def _run(suites: pytest.Pytester, *args: str) -> pytest.RunResult:
    return suites.runpytest_subprocess(
        "suites/", "--cluster", "test", "--settle", "0", "--probe-timeout", "1", *args
    )


def _records(suites: pytest.Pytester) -> dict[str, Any]:
    (path,) = (suites.path / "reports" / "test").glob("record-pre-*.json")
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def test_without_a_responder_outside_probes_are_predicted_only_and_the_rules_named(
    suites: pytest.Pytester,
) -> None:
    result = _run(suites)
    text = result.stdout.str()
    assert "outside probes: predicted only (no --responder" in text
    doc = _records(suites)
    outside_ids = {p["id"] for p in doc["not_run"] if p["reason"].startswith("predicted only")}
    assert outside_ids and not any(
        p["id"] in outside_ids for p in doc["probes"]
    )  # none was sent anywhere
    # (egress[0], 127.1.0.0/16, holds no address worth planning without a responder)
    lines = text.splitlines()
    at = lines.index("predicted only, not probed (outside addresses): 1 rule")
    assert lines[at + 1] == (
        "  NetworkPolicy shop/client-out egress[1]: 1 probe (predicted only: nothing "
        "netparity controls answers at the outside address 10.128.0.1, so a timeout "
        "there would not mean a deny)"
    )


def test_with_a_responder_outside_probes_run_against_it_and_the_others_are_said(
    suites: pytest.Pytester, responder: Responder
) -> None:
    port = responder.tcp[-1]
    result = _run(suites, "--responder", f"{responder.ip}:443,{port},{port}/udp")
    text = result.stdout.str()
    assert f"outside probes: only to the responder {responder.ip}:443,{port}" in text
    doc = _records(suites)
    to_it = [p for p in doc["probes"] if p["destination"]["ip"] == responder.ip]
    assert to_it, [p["title"] for p in doc["probes"]]
    tries = [t for p in to_it for t in p["observed"]]
    assert tries and all(t["observed"] == "connected" for t in tries)
    assert all(t["token"] == "netparity-responder" for t in tries)
    assert all(t["address"] == f"{responder.ip}:443/TCP" for t in tries)
    lines = text.splitlines()
    at = lines.index("predicted only, not probed (outside addresses): 1 rule")
    assert lines[at + 1] == (
        "  NetworkPolicy shop/client-out egress[1]: 1 probe (predicted only: the outside "
        f"address 10.128.0.1 is not the responder ({responder.ip}, which the ipBlock behind "
        "this probe does not hold))"
    )


def test_a_responder_that_does_not_answer_is_refused_before_anything_is_made(
    suites: pytest.Pytester, api: KubeAPI
) -> None:
    port = _free_port()
    result = _run(suites, "--responder", f"127.1.0.2:{port}")
    assert result.ret == 4  # a usage error, before any item ran
    result.stderr.fnmatch_lines(
        [f"*--responder 127.1.0.2:{port} does not answer as the probe agent on every port *"]
    )
    assert not [m for m in api.mutations if m[0] == "POST"]  # no twin, Service or anchor


# --------------------------------------------------------------------------- the lab

lab_factory = lab_fixtures.lab_factory


def test_in_the_lab_every_planned_outside_address_is_a_host_that_answers_as_predicted(
    lab_factory: lab_fixtures.LabFactory,
) -> None:
    lab = lab_factory(aks(60, 4, 16, 3))
    plan = make_plan(lab.snapshot)
    addrs = outside(plan)
    assert any(ipaddress.IPv4Address(ip) in VNET for ip in addrs)
    targets = [Target(id=p.id, traffic=p.traffic) for p in plan.probes]
    results = {r.id: r for r in lab.backend.run(targets, timeout=1.0)}
    topo = lab.topology
    hosts = {h.ip for h in topo.hosts}
    assert set(addrs) <= hosts  # every planned outside address is an external host
    run_ips = {s.cluster_ip for s in topo.snapshot.services if run_owned(s.labels)}
    assert run_ips and not run_ips & set(addrs)  # the run's Services took none of them
    checked = 0
    for p in plan.probes:
        dst = p.traffic.destination
        if not isinstance(dst, ExternalEndpoint) or p.traffic.protocol is Protocol.SCTP:
            continue
        r = results[p.id]
        assert r.error is None, (p.title, r.error)
        assert r.allowed == (p.predicted["npm"].decision.value == "allow"), (p.title, r)
        if r.observed.value == "connected":
            assert r.token == f"ext:{dst.ip}"
        checked += 1
    assert checked >= 3
    lab.backend.close()  # removes the run's Services, as a run's end does
    assert [p.id for p in make_plan(lab.snapshot).probes] == [p.id for p in plan.probes]
