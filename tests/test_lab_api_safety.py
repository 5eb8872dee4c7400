"""The Kubernetes backend's safety measures with real consequences, on a small lab served
through its Kubernetes API (`LabKubeAPI`, as `lab up --api` runs it) and the backend's own
code (KubeBackend, `probe_all`, `judge`):

- a pod without a readiness gate is Ready, listed in its Service's EndpointSlice and hit
  by ClusterIP connections to that Service; the twins' gate keeps them out: listed not
  ready, and a ClusterIP connection through the user's Service never lands on a twin;
- a connection routed to another pod's agent (a DNAT in the source twin) answers with
  that pod's name: the token check makes it an error, never an allow;
- a twin probed before the dataplane programmed it (settle shorter than the programming
  delay) connects where the policy denies; the deny predicted makes the backend probe it
  again after the settle interval, which is dropped: the verdict is flaky, not allow.

Root, never skipped; every lab, twin, namespace and rule made here is removed."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netparity.backend import Observed, Target
from netparity.kube import RUN_LABEL, TWIN_OF_ANNOTATION
from netparity.kube.backend import KubeBackend
from netparity.lab import down, status, up
from netparity.lab.addressing import netns_prefix
from netparity.lab.agents import agent_path
from netparity.lab.netns import list_netns
from netparity.labapi.labhost import LabKubeAPI
from netparity.labapi.labobjects import lab_objects
from netparity.model.snapshot import Snapshot, snapshot_from_dicts
from netparity.model.traffic import PodEndpoint, Protocol, ServiceEndpoint, Traffic
from netparity.plan.planner import make_plan
from netparity.record.model import Outcome, judge
from netparity.session import probe_all

from lab_fixtures import unique_lab_name

pytestmark = pytest.mark.lab
# the lab API's programming delay, and the settle time of the test that probes inside it: the
# first try comes a settle interval after the twins ran and must land before the delay on a
# loaded 2-core machine (the exec and the agent's start take seconds there: 3 s to spare);
# the retry comes a settle interval after the first try ends, so at 2 x SETTLE at the
# earliest, which must be past the delay by 0.5 s
DELAY = 7.0
SETTLE = 4.0
CLUSTER_IP = "10.0.10.10"
NODE = "n1"
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _pod(name: str, ip: str, app: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
        "spec": {
            "nodeName": NODE,
            "containers": [
                {
                    "name": "c",
                    "image": "shop:1",
                    "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                }
            ],
        },
        "status": {"phase": "Running", "podIP": ip},
    }


SNAP: Snapshot = snapshot_from_dicts(
    [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE,
                "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"},
            },
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.224.0.4"}]},
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        _pod("client-1", "10.244.0.10", "client", 7000),
        _pod("web-1", "10.244.0.11", "web", 8080),
        _pod("other-1", "10.244.0.12", "other", 8080),  # serves web's port: it can answer
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "clusterIP": CLUSTER_IP,
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web-from-client", "namespace": "shop"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                        "ports": [{"port": 8080, "protocol": "TCP"}],
                    }
                ],
            },
        },
    ]
)


@pytest.fixture(scope="module")
def api() -> Iterator[LabKubeAPI]:
    with _lab_api("npm") as server:
        yield server


@contextlib.contextmanager
def _lab_api(dataplane: str) -> Iterator[LabKubeAPI]:
    """SNAP as a lab under `dataplane`, served through its API (the agent's ConfigMap in
    shop); the lab and every namespace of it are gone at the end."""
    if os.geteuid() != 0:
        pytest.fail("the lab API test needs root (it builds network namespaces)")
    name = unique_lab_name("y")
    cilium = dataplane.startswith("cilium")
    server = LabKubeAPI(lab=name, programming_delay=DELAY, cilium_crds=cilium)
    try:
        up(SNAP, name=name, dataplane=dataplane)
        server.add(*lab_objects(status(name)))
        server.start()
        code, _ = server.do_create(
            "configmaps", "shop", {"metadata": {"name": "agent"}, "data": {"agent.py": agent()}}
        )
        assert code == 201
        yield server
    finally:
        server.stop()
        down(name, wait=30)
    assert not list_netns(netns_prefix(name))


def agent() -> str:
    return agent_path().read_text()


@pytest.fixture
def kubeconfig(api: LabKubeAPI, tmp_path: Path) -> str:
    return str(api.kubeconfig(tmp_path / "kubeconfig"))


def _backend(kubeconfig: str, *, settle: float) -> KubeBackend:
    return KubeBackend("test", kubeconfig=kubeconfig, settle=settle, log=lambda _: None)


def _traffic(
    snap: Snapshot, src: str, dst: str, port: int | str, *, service: bool = False
) -> Traffic:
    """From pod shop/`src` to pod (or Service) shop/`dst`, as the backend read them."""
    source = snap.pod("shop", src)
    assert source is not None
    destination: Any
    if service:
        svc = snap.service("shop", dst)
        assert svc is not None
        destination = ServiceEndpoint(service=svc)
    else:
        dest = snap.pod("shop", dst)
        assert dest is not None
        destination = PodEndpoint(pod=dest)
    return Traffic(
        source=PodEndpoint(pod=source), destination=destination, port=port, protocol=Protocol.TCP
    )


def _netns(api: LabKubeAPI, key: str) -> str:
    topology = status(api.lab).topology
    assert topology is not None
    return topology.pod(key).netns


def _probe(netns: str, host: str, port: int, count: int) -> list[str]:
    """`count` connections from `netns` to host:port (each a new one): who answered each."""
    targets = [{"id": f"t{i}", "host": host, "port": port, "protocol": "TCP"} for i in range(count)]
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, str(agent_path()), "probe"],
        input=json.dumps({"timeout": 2.0, "targets": targets}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [json.loads(x) for x in done.stdout.splitlines() if '"id"' in x]
    assert len(lines) == count, done.stdout + done.stderr
    return [str(x.get("token") or x.get("observed")) for x in lines]


def _twins(api: LabKubeAPI) -> dict[str, dict[str, Any]]:
    """The run's twins by the real pod each stands for."""
    return {
        p["metadata"]["annotations"][TWIN_OF_ANNOTATION]: p
        for p in api.objects("Pod")
        if RUN_LABEL in (p["metadata"].get("labels") or {})
        and TWIN_OF_ANNOTATION in (p["metadata"].get("annotations") or {})
    }


def _slice_endpoints(api: LabKubeAPI, service: str) -> dict[str, bool]:
    """The addresses of the Service's EndpointSlices, each with its `ready` condition."""
    out: dict[str, bool] = {}
    for s in api.objects("EndpointSlice"):
        labels = s["metadata"].get("labels") or {}
        if s["metadata"]["namespace"] == "shop" and labels.get("kubernetes.io/service-name") == (
            service
        ):
            for e in s["endpoints"]:
                out[e["addresses"][0]] = bool(e["conditions"]["ready"])
    return out


def _gateless_pod() -> dict[str, Any]:
    """A copy of web-1 as a twin would be, but without the readiness gate."""
    name = "no-gate"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "nodeName": NODE,
            "containers": [
                {
                    "name": "agent",
                    "image": "python:3.12-slim",
                    "command": ["python3", "/agent/agent.py", "serve", "--name", f"shop/{name}"],
                    "args": ["--tcp", "8080"],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "securityContext": RESTRICTED,
                    "volumeMounts": [{"name": "agent", "mountPath": "/agent"}],
                }
            ],
            "volumes": [{"name": "agent", "configMap": {"name": "agent"}}],
        },
    }


def _running(api: LabKubeAPI, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pod = api.find("Pod", "shop", name)
        if pod is not None and pod["status"].get("phase") == "Running":
            return pod
        time.sleep(0.05)
    raise AssertionError(f"pod {name} did not run: {api.lab_errors}")


def test_a_pod_without_the_readiness_gate_would_take_the_services_traffic(
    api: LabKubeAPI,
) -> None:
    code, doc = api.do_create("pods", "shop", _gateless_pod())
    assert code == 201, doc
    try:
        pod = _running(api, "no-gate")
        time.sleep(DELAY + 1.5)  # the dataplane has programmed it
        ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
        assert ready == [{"type": "Ready", "status": "True"}]  # no gate: the kubelet says Ready
        ip = pod["status"]["podIP"]
        assert _slice_endpoints(api, "web") == {_ip(api, "shop/web-1"): True, ip: True}
        answers = _probe(_netns(api, "shop/client-1"), CLUSTER_IP, 80, 24)
        # the lab's kube-proxy sends a Service port to its first ready endpoint by key (AKS
        # spreads them): "shop/no-gate" (like a twin's "shop/netparity-...") comes before
        # "shop/web-1", so here it takes all of the Service's traffic, not just a share
        assert answers == ["shop/no-gate"] * 24, answers
    finally:
        assert api.do_delete("pods", "shop", "no-gate", {})[0] == 200
        api.flush()
    assert _slice_endpoints(api, "web") == {_ip(api, "shop/web-1"): True}


def test_the_twins_readiness_gate_keeps_them_out_of_the_users_service(
    api: LabKubeAPI, kubeconfig: str
) -> None:
    seen: dict[str, Any] = {}

    def during(what: str, done: int, total: int) -> None:
        if what != "probes" or done or seen:
            return
        twin = _twins(api)["shop/web-1"]  # every twin is up and settled: look now
        seen["twin"] = twin
        seen["slices"] = _slice_endpoints(api, "web")
        twin_netns = _netns(api, f"shop/{twin['metadata']['name']}")
        seen["answers"], seen["counted"] = _probe_counting(api, twin_netns)

    with _backend(kubeconfig, settle=DELAY + 1.0) as b:
        results = b.run(
            [
                Target(id="pod", traffic=_traffic(b.snapshot(), "client-1", "web-1", 8080)),
                Target(
                    id="svc", traffic=_traffic(b.snapshot(), "client-1", "web", 80, service=True)
                ),
            ],
            timeout=2.0,
            progress=during,
        )
    twin = seen["twin"]
    assert f"shop/{twin['metadata']['name']}" < "shop/web-1"  # ready, it would take it all
    ready = next(c for c in twin["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ReadinessGatesNotReady"
    assert "netparity.io/never-ready" in ready["message"]
    # the user's Service lists the twin (it has the Service's labels) but not ready ...
    web = _ip(api, "shop/web-1")
    assert seen["slices"] == {web: True, twin["status"]["podIP"]: False}
    # ... so no connection to its ClusterIP reached the twin: all went to the real pod
    assert seen["answers"] == ["shop/web-1"] * 24
    assert seen["counted"] == 0
    # the backend's own probes reached the twin (directly and through the run's Service)
    assert [r.observed for r in results] == [Observed.CONNECTED, Observed.CONNECTED], results
    assert not _twins(api) and not [s for s in api.objects("Service") if RUN_LABEL in str(s)]


def _ip(api: LabKubeAPI, key: str) -> str:
    topology = status(api.lab).topology
    assert topology is not None
    return topology.pod(key).ip


def _probe_counting(api: LabKubeAPI, netns: str) -> tuple[list[str], int]:
    """24 connections from the real client-1 to the user Service's ClusterIP: who answered,
    and how many reached `netns` on port 8080 (counted by a rule in that namespace that is
    removed before returning)."""
    client = _ip(api, "shop/client-1")
    rule = ["INPUT", "-s", client, "-p", "tcp", "--dport", "8080", "--syn"]
    ipt = ["ip", "netns", "exec", netns, "iptables", "-w"]
    subprocess.run([*ipt, "-I", *rule], check=True)
    try:
        answers = _probe(_netns(api, "shop/client-1"), CLUSTER_IP, 80, 24)
        listed = subprocess.run(
            [*ipt, "-L", "INPUT", "-v", "-x", "-n"], capture_output=True, text=True, check=True
        ).stdout
    finally:
        subprocess.run([*ipt, "-D", *rule], check=True)
    counted = sum(int(line.split()[0]) for line in listed.splitlines() if client in line.split())
    return answers, counted


def test_an_answer_from_another_pods_agent_is_an_error_not_an_allow(
    api: LabKubeAPI, kubeconfig: str
) -> None:
    """A DNAT in the source twin sends its connections to web-1's twin on to other-1's twin
    (which serves the same port): the answer names shop/other-1, not shop/web-1."""
    made: list[list[str]] = []

    def during(what: str, done: int, total: int) -> None:
        if what != "probes" or done or made:
            return
        twins = _twins(api)
        web, other = (twins[k]["status"]["podIP"] for k in ("shop/web-1", "shop/other-1"))
        client = _netns(api, f"shop/{twins['shop/client-1']['metadata']['name']}")
        rule = ["OUTPUT", "-d", web, "-p", "tcp", "--dport", "8080"]
        rule += ["-j", "DNAT", "--to-destination", f"{other}:8080"]
        ipt = ["ip", "netns", "exec", client, "iptables", "-w", "-t", "nat"]
        made.append([*ipt, "-D", *rule])
        subprocess.run([*ipt, "-I", *rule], check=True)

    try:
        with _backend(kubeconfig, settle=DELAY + 1.0) as b:
            snap = b.snapshot()
            results = b.run(
                [
                    Target(id="web", traffic=_traffic(snap, "client-1", "web-1", 8080)),
                    Target(id="other", traffic=_traffic(snap, "client-1", "other-1", 8080)),
                ],
                timeout=2.0,
                progress=during,
            )
    finally:
        for undo in made:  # the twin's namespace is gone with it; the rule goes first anyway
            subprocess.run(undo, capture_output=True, check=False)
    assert made, "the probes never started"
    web, other = results
    assert web.observed is Observed.ERROR and web.token == "shop/other-1", web
    assert "answered by 'shop/other-1', not by 'shop/web-1'" in (web.error or ""), web.error
    assert judge([web.observed]) is Outcome.ERROR  # never counted as an allow (nor a deny)
    assert other.observed is Observed.CONNECTED and other.token == "shop/other-1", other
    assert not _twins(api)


def test_a_probe_before_the_programming_delay_is_probed_again_and_not_believed(
    api: LabKubeAPI, kubeconfig: str
) -> None:
    """Settle (4 s) shorter than the lab's programming delay (7 s): the first try reaches
    web-1's twin before NPM polices it and connects where web-from-client denies; the deny
    predicted makes `probe_all` try again a settle interval later, after the delay: dropped.
    The verdict over both tries is flaky, never allow."""
    plan = make_plan(SNAP, current="npm", target="cilium")
    (probe,) = [p for p in plan.probes if p.title.startswith("shop[app=other] -> shop[app=web]")
                and "8080/TCP" in p.title]  # fmt: skip
    assert str(probe.predicted["npm"].decision) == "deny"
    api.exec_at.clear()
    with _backend(kubeconfig, settle=SETTLE) as b:
        tries = probe_all(b, [probe], timeout=1.0, retries=1, dataplane="npm")[probe.id]
        twins = {k: str(t["metadata"]["name"]) for k, t in _twins(api).items()}
    observed = [t.observed for t in tries]
    running = min(api.running_at[name] for name in twins.values())
    execs = [at - running for at, _ in api.exec_at]
    assert len(execs) == 2, execs
    assert execs[0] < DELAY, f"the first try came {execs[0]:.1f} s after the twins ran"
    assert execs[1] > DELAY + 0.5, f"the retry came {execs[1]:.1f} s after the twins ran"
    assert observed == [Observed.CONNECTED, Observed.TIMEOUT], tries
    assert judge(observed) is Outcome.FLAKY  # the early allow is not believed
    assert not _twins(api)


def test_on_cilium_the_first_probe_waits_for_the_twins_ciliumendpoint(tmp_path: Path) -> None:
    """Under Cilium the backend needs no settle time: it waits until each twin's
    CiliumEndpoint is ready with an identity, which the lab's API shows only once the
    dataplane polices the twin (after the programming delay). The first try is already
    dropped: no early allow to take back."""
    plan = make_plan(SNAP, current="npm", target="cilium")
    (probe,) = [p for p in plan.probes if p.title.startswith("shop[app=other] -> shop[app=web]")
                and "8080/TCP" in p.title]  # fmt: skip
    assert str(probe.predicted["cilium"].decision) == "deny"
    with _lab_api("cilium") as api:
        kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
        with _backend(kubeconfig, settle=0.0) as b:
            assert b.facts().dataplane == "cilium"
            tries = probe_all(b, [probe], timeout=1.0, retries=1, dataplane="cilium")[probe.id]
            twins = [str(t["metadata"]["name"]) for t in _twins(api).values()]
        running = min(api.running_at[name] for name in twins)
        first = api.exec_at[0][0] - running
        assert first >= DELAY, f"the first try came {first:.1f} s after the twins ran"
        assert max(api.cep_ready_at[name] for name in twins) <= api.exec_at[0][0]
        assert not _twins(api) and not api.objects("CiliumEndpoint")
    assert [t.observed for t in tries] == [Observed.TIMEOUT, Observed.TIMEOUT], tries
    assert judge([t.observed for t in tries]) is Outcome.DENY
