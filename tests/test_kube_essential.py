"""Essential probes on a real cluster (#23): DNS and the API server are probed at their own
addresses, read-only, with the agent's `check` (a DNS query that needs an answer, a TCP
connect), never through twins or the run's Services. Against the loopback API server,
whose kube-dns ClusterIP is served by a real DNS responder and whose `default/kubernetes`
ClusterIP forwards to the API server itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netparity.backend import Observed, Target
from netparity.kube.backend import KubeBackend
from netparity.kube.layout import plan_layout
from netparity.model.objects import Protocol
from netparity.plan.essential_probes import essential_check
from netparity.plan.model import PlannedProbe, Scenario
from netparity.plan.planner import make_plan
from netparity.session import probe_all

import kube_fixtures
from kubeapi import KubeAPI, cluster_services, demo_cluster

kubeconfig = kube_fixtures.kubeconfig
Log = kube_fixtures.Log


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    server = KubeAPI().start()
    try:
        demo_cluster(server, dataplane="npm")
        server.cluster_ips = cluster_services(server)  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()


def backend(kubeconfig: str) -> KubeBackend:
    return KubeBackend("test", kubeconfig=kubeconfig, log=Log(), settle=0.0)


def essential(probes: tuple[PlannedProbe, ...]) -> list[PlannedProbe]:
    return [p for p in probes if Scenario.ESSENTIAL in p.scenarios]


def test_essential_probes_reach_the_real_dns_and_api_server_with_no_twin_or_service(
    api: KubeAPI, kubeconfig: str
) -> None:
    dns_ip, api_ip = api.cluster_ips  # type: ignore[attr-defined]
    with backend(kubeconfig) as b:
        plan = make_plan(b.snapshot(), current="npm", target="cilium")
        probes = essential(plan.probes)
        tries = probe_all(b, probes, timeout=2.0, retries=0)
    kinds = {(p.traffic.port, p.traffic.protocol, essential_check(p)) for p in probes}
    assert kinds == {
        (53, Protocol.UDP, "dns"),
        (53, Protocol.TCP, "dns"),
        (443, Protocol.TCP, "connect"),
    }
    for p in probes:
        (r,) = tries[p.id]
        assert r.observed is Observed.CONNECTED, (p.id, r)
        if essential_check(p) == "dns":
            # a real DNS answer (one A record), not an agent's name
            assert r.token == "NOERROR 1" and r.address == f"{dns_ip}:53/{p.traffic.protocol}"
            # from another class: CoreDNS's own pods do not query their own Service
            assert r.source is not None and "(twin of shop/" in r.source
        else:
            assert r.token is None and r.address == f"{api_ip}:443/TCP"
    # no run Service stood in for kube-dns or the API server (CoreDNS is twinned only as
    # the source of its own API-server probe)
    created = [(plural, obj["metadata"]["name"]) for m, plural, obj in api.mutations if m == "POST"]
    assert not [c for c in created if c[0] == "services"], created
    assert any(plural == "pods" for plural, _ in created), created


def test_a_dns_server_that_does_not_answer_is_a_timeout_and_no_token_is_expected(
    api: KubeAPI, kubeconfig: str
) -> None:
    """The DNS check needs an answer: with CoreDNS stopped the UDP query times out (a
    deny on the wire's terms), where a token probe would have needed an agent's name."""
    dns_ip, _ = api.cluster_ips  # type: ignore[attr-defined]
    rt = api.runtimes["cluster:coredns"]
    assert rt.proc is not None
    rt.proc.terminate()
    rt.proc.wait(timeout=5)
    with backend(kubeconfig) as b:
        plan = make_plan(b.snapshot(), current="npm", target="cilium")
        udp = [
            p
            for p in essential(plan.probes)
            if p.traffic.protocol is Protocol.UDP and p.traffic.port == 53
        ]
        results = b.run(
            [Target(id=p.id, traffic=p.traffic, check=essential_check(p)) for p in udp],
            timeout=1.0,
        )
    assert udp and results
    for r in results:
        # loopback answers a closed UDP port with ICMP port unreachable: refused, and the
        # agent never mistakes that for an answer
        assert r.observed in (Observed.REFUSED, Observed.TIMEOUT), r
        assert r.address == f"{dns_ip}:53/UDP"


def test_the_layout_sends_essential_probes_to_the_real_addresses(
    api: KubeAPI, kubeconfig: str
) -> None:
    dns_ip, api_ip = api.cluster_ips  # type: ignore[attr-defined]
    with backend(kubeconfig) as b:
        snap = b.snapshot()
    plan = make_plan(snap, current="npm", target="cilium")
    probes = essential(plan.probes)
    as_checks = [Target(id=p.id, traffic=p.traffic, check=essential_check(p)) for p in probes]
    layout = plan_layout(as_checks, run_id="r1", backends_of=snap.backends, node_named=snap.node)
    assert {(s.dest.ip, s.dest.port, s.dest.check) for s in layout.steps if s.dest} == {
        (dns_ip, 53, "dns"),
        (api_ip, 443, "connect"),
    }
    assert layout.services == {}
    # twins only for sources: CoreDNS is one (it too needs the API server), never as the
    # destination of DNS
    assert all(s.dest is not None and s.dest.pod is None for s in layout.steps)
    dns_sources = {s.source for s in layout.steps if s.dest and s.dest.check == "dns"}
    assert dns_sources and all(k and k.startswith("shop/") for k in dns_sources)
    assert all(ports == set() for ports in layout.probed_ports.values())
    # the same probes as token probes would twin CoreDNS behind a run Service (the old way)
    as_tokens = [Target(id=p.id, traffic=p.traffic) for p in probes]
    old = plan_layout(as_tokens, run_id="r1", backends_of=snap.backends, node_named=snap.node)
    assert "kube-system/coredns-1" in old.twins
