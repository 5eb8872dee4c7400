"""The kubernetes backend's run against a real API server on loopback: create, wait, exec,
clean up, and its failures. The fake kubelet runs each twin's agent as a local process on
a loopback address, and exec runs the real agent over the websocket protocol."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from netparity.backend import Observed, Target
from netparity.cli import main
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Via,
)
from netparity.errors import ClusterError, InputError
from netparity.kube import RUN_LABEL, TWIN_LABEL
from netparity.kube.backend import KubeBackend
from netparity.kube.render import anchor_name, short_hash
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot, load_snapshot

import kube_fixtures
from kubeapi import KubeAPI, demo_cluster

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["v4.channel.k8s.io"])
def api(request: pytest.FixtureRequest) -> Iterator[KubeAPI]:
    server = KubeAPI(exec_protocol=request.param).start()
    try:
        demo_cluster(server)
        yield server
    finally:
        server.stop()


kubeconfig = kube_fixtures.kubeconfig
Log = kube_fixtures.Log


def backend(kubeconfig: str, log: Log | None = None, **kw: Any) -> KubeBackend:
    kw.setdefault("settle", 0.0)  # the settle tests set it
    return KubeBackend("test", kubeconfig=kubeconfig, log=log if log is not None else Log(), **kw)


def targets(snap: Snapshot) -> list[Target]:
    web, client = snap.pod("shop", "web-1"), snap.pod("shop", "client-1")
    svc, node1 = snap.service("shop", "web"), snap.node("node-1")
    assert web and client and svc and node1

    def t(tid: str, src: Any, dst: Any, port: int | str, proto: Protocol = Protocol.TCP) -> Target:
        return Target(
            id=tid, traffic=Traffic(source=src, destination=dst, port=port, protocol=proto)
        )

    return [
        t("pod-pod", PodEndpoint(pod=client), PodEndpoint(pod=web), "http"),
        t("pod-pod-udp", PodEndpoint(pod=client), PodEndpoint(pod=web), "dns", Protocol.UDP),
        t("pod-svc", PodEndpoint(pod=client), ServiceEndpoint(service=svc), 80),
        t(
            "ext-nodeport",
            ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP),
            ServiceEndpoint(service=svc, via=Via.NODE_PORT, node=node1),
            80,
        ),
        t("node-pod", NodeEndpoint(node=node1), PodEndpoint(pod=web), 8080),
        t(
            "ext-lb",
            ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP),
            ServiceEndpoint(service=svc, via=Via.LOAD_BALANCER),
            80,
        ),
        t("pod-doc-ip", PodEndpoint(pod=client), ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP), 443),
        t("web-client", PodEndpoint(pod=web), PodEndpoint(pod=client), 7000),
    ]


def ours(api: KubeAPI) -> list[str]:
    """Every object in the cluster that carries the run label."""
    found = []
    for kind in ("Pod", "Service", "ConfigMap"):
        for obj in api.objects(kind):
            if RUN_LABEL in (obj["metadata"].get("labels") or {}):
                found.append(f"{kind}/{obj['metadata']['namespace']}/{obj['metadata']['name']}")
    return found


def assert_only_ours_touched(api: KubeAPI) -> None:
    for method, plural, obj in api.mutations:
        assert RUN_LABEL in (obj["metadata"].get("labels") or {}), (
            method,
            plural,
            obj["metadata"]["name"],
        )
    for name in ("web-1", "client-1"):
        assert api.find("Pod", "shop", name) is not None


@pytest.mark.parametrize("api", ["v4.channel.k8s.io", "v5.channel.k8s.io"], indirect=True)
def test_a_run_probes_through_twins_and_leaves_nothing_behind(
    api: KubeAPI, kubeconfig: str
) -> None:
    seen: dict[str, Any] = {}
    sigterm = signal.getsignal(signal.SIGTERM)

    def progress(what: str, done: int, total: int) -> None:
        if what == "probes" and done == 0:  # twins up, probes not yet run
            seen["sigterm"] = signal.getsignal(signal.SIGTERM)
            seen["pods"] = {p["metadata"]["name"]: p for p in api.objects("Pod")}
            seen["real endpoints"] = api.endpoints("shop", "web")
            run_svc = [s for s in api.objects("Service") if s["metadata"]["name"] != "web"]
            seen["run services"] = run_svc
            seen["run endpoints"] = api.endpoints("shop", run_svc[0]["metadata"]["name"])

    log = Log()
    with backend(kubeconfig, log) as b:
        results = b.run(targets(b.snapshot()), timeout=1.0, progress=progress)
        run_id = b.run_id
    by_id = {r.id: r for r in results}
    assert [r.id for r in results] == [t.id for t in targets(_snap(api, kubeconfig))]
    for tid in ("pod-pod", "pod-pod-udp", "pod-svc", "ext-nodeport"):
        assert by_id[tid].observed is Observed.CONNECTED, by_id[tid]
        assert by_id[tid].token == "shop/web-1"  # the twin of web-1 answered, nobody else
    assert (
        by_id["web-client"].observed is Observed.CONNECTED
        and by_id["web-client"].token == "shop/client-1"
    )
    assert (
        by_id["pod-pod"].source is not None and "twin of shop/client-1" in by_id["pod-pod"].source
    )
    assert by_id["pod-pod"].source.endswith("@node-2")
    assert by_id["ext-nodeport"].source == "this machine (where pytest runs)"
    assert by_id["ext-nodeport"].address is not None and by_id["ext-nodeport"].address.startswith(
        "127.0.2.1:"
    )
    assert by_id["node-pod"].observed is Observed.NOT_RUN and "hostNetwork" in (
        by_id["node-pod"].error or ""
    )
    assert by_id["ext-lb"].observed is Observed.NOT_RUN and "LoadBalancer" in (
        by_id["ext-lb"].error or ""
    )
    assert by_id["pod-doc-ip"].observed is Observed.NOT_RUN

    # while it ran: twins in place of the real pods, inert towards the real Service
    twins = {n: p for n, p in seen["pods"].items() if n.startswith("netparity-")}
    web_twin = twins[f"netparity-{run_id}-{short_hash('shop/web-1')}"]
    assert web_twin["spec"]["nodeName"] == "node-1"
    assert web_twin["metadata"]["labels"]["app"] == "web"
    assert web_twin["metadata"]["ownerReferences"][0]["name"] == anchor_name(run_id)
    assert seen["real endpoints"] == []  # never Ready: not an endpoint of the real Service
    (run_svc,) = seen["run services"]
    assert run_svc["spec"]["selector"] == {RUN_LABEL: run_id, TWIN_LABEL: short_hash("shop/web-1")}
    assert run_svc["spec"]["type"] == "NodePort"
    assert seen["run endpoints"] == [web_twin["status"]["podIP"]]
    # one exec per source twin, with the one-line command
    assert sorted(name for _, name, _ in api.execs) == sorted(
        f"netparity-{run_id}-{short_hash(k)}" for k in ("shop/client-1", "shop/web-1")
    )
    # while objects existed, SIGTERM became an interrupt (so cleanup runs); then restored
    assert seen["sigterm"] is not sigterm and callable(seen["sigterm"])
    assert signal.getsignal(signal.SIGTERM) is sigterm
    # afterwards: nothing of the run is left, nothing else was touched
    assert ours(api) == []
    assert_only_ours_touched(api)
    assert any("removed its" in m for m in log), log


def _snap(api: KubeAPI, kubeconfig: str) -> Snapshot:
    with backend(kubeconfig) as b:
        return b.snapshot()


def test_twins_are_reused_by_a_second_run_call(api: KubeAPI, kubeconfig: str) -> None:
    with backend(kubeconfig) as b:
        tt = targets(b.snapshot())[:1]
        first = b.run(tt, timeout=1.0)
        created = len([m for m in api.mutations if m[0] == "POST"])
        second = b.run(tt, timeout=1.0)  # a retry of a deny goes through the same twins
        assert len([m for m in api.mutations if m[0] == "POST"]) == created
    assert first[0].observed is second[0].observed is Observed.CONNECTED
    assert ours(api) == []


def test_a_load_balancer_is_used_only_when_allowed(api: KubeAPI, kubeconfig: str) -> None:
    with backend(kubeconfig, allow_load_balancer=True) as b:
        snap = b.snapshot()
        lb = [t for t in targets(snap) if t.id == "ext-lb"]
        (result,) = b.run(lb, timeout=1.0)
    # the demo Service is a NodePort: a LoadBalancer probe of it cannot run
    assert result.observed is Observed.NOT_RUN and "has no LoadBalancer address" in (
        result.error or ""
    )
    svc = api.find("Service", "shop", "web")
    assert svc is not None
    svc["spec"]["type"] = "LoadBalancer"
    api.add(svc)
    with backend(kubeconfig, allow_load_balancer=True) as b:
        lb = [t for t in targets(b.snapshot()) if t.id == "ext-lb"]
        (result,) = b.run(lb, timeout=1.0)
        kinds = [
            s["spec"]["type"]
            for s in api.objects("Service")
            if RUN_LABEL in (s["metadata"].get("labels") or {})
        ]
    assert kinds == ["LoadBalancer"]
    assert result.observed is Observed.CONNECTED and result.token == "shop/web-1"
    assert result.address is not None and result.address.startswith("127.8.")
    assert ours(api) == []


def test_a_pod_a_real_service_would_publish_unready_is_not_twinned(
    api: KubeAPI, kubeconfig: str
) -> None:
    svc = api.find("Service", "shop", "web")
    assert svc is not None
    svc["spec"]["publishNotReadyAddresses"] = True
    api.add(svc)
    with backend(kubeconfig) as b:
        (result,) = b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert result.observed is Observed.NOT_RUN
    assert "publishNotReadyAddresses" in (result.error or "") and "shop/web" in (result.error or "")
    assert not any(m[1] == "pods" for m in api.mutations)


# --------------------------------------------------------------------------- failures


def test_an_image_that_cannot_be_pulled_names_the_image_and_the_option(
    api: KubeAPI, kubeconfig: str
) -> None:
    api.pull_fail_images.add("registry.example/python:3.12")
    with (
        backend(kubeconfig, probe_image="registry.example/python:3.12", pull_timeout=1.0) as b,
        pytest.raises(ClusterError) as e,
    ):
        b.run(targets(b.snapshot())[:1], timeout=1.0)
    message = str(e.value)
    assert "cannot pull the image registry.example/python:3.12" in message
    assert "--probe-image" in message and (
        "ErrImagePull" in message or "ImagePullBackOff" in message
    )
    assert ours(api) == []  # cleaned up on failure


def test_an_image_pull_that_fails_then_succeeds_does_not_stop_the_run(
    api: KubeAPI, kubeconfig: str
) -> None:
    image = "registry.example/python:3.12"
    api.pull_flaky[image] = 4  # four 429s (ErrImagePull, then ImagePullBackOff), then a pull
    log = Log()
    with backend(kubeconfig, log, probe_image=image, pull_timeout=30.0) as b:
        (result,) = b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert result.observed is Observed.CONNECTED and result.token == "shop/web-1", result
    assert api.pull_flaky[image] == 0  # every refused pull happened
    told = [m for m in log if "cannot pull the image" in m]
    assert told and "yet (ErrImagePull" in told[0] and "429 Too Many Requests" in told[0]
    assert "gives up after 30 s of failed pulls" in told[0]
    assert ours(api) == []


def test_an_image_pull_that_keeps_failing_stops_the_run_after_the_pull_timeout(
    api: KubeAPI, kubeconfig: str
) -> None:
    image = "registry.example/python:3.12"
    api.pull_flaky[image] = 1_000_000  # the registry never lets up
    start = time.monotonic()
    with (
        backend(kubeconfig, probe_image=image, pull_timeout=1.5, pod_timeout=60.0) as b,
        pytest.raises(ClusterError) as e,
    ):
        b.run(targets(b.snapshot())[:1], timeout=1.0)
    took = time.monotonic() - start
    assert 1.5 <= took < 15, took  # after the pull timeout, long before the pod timeout
    message = str(e.value)
    assert "cannot pull the image registry.example/python:3.12 (its pulls kept failing" in message
    assert "429 Too Many Requests" in message or "ImagePullBackOff" in message
    assert "--probe-image" in message
    assert ours(api) == []


def test_an_unschedulable_twin_fails_after_the_grace_not_the_pod_timeout(
    api: KubeAPI, kubeconfig: str
) -> None:
    api.full_nodes["node-1"] = "0/2 nodes are available: 1 Too many pods."
    log = Log()
    start = time.monotonic()
    with backend(kubeconfig, log, pod_timeout=120.0, unschedulable_grace=0.5) as b:
        results = {r.id: r for r in b.run(targets(b.snapshot())[:3], timeout=1.0)}
    took = time.monotonic() - start
    assert took < 20, took  # not the 120 s pod timeout
    for tid in ("pod-pod", "pod-svc"):  # web-1's twin is the destination of both
        error = results[tid].error or ""
        assert results[tid].observed is Observed.ERROR
        assert "(twin of shop/web-1, node node-1) cannot be placed: the scheduler says" in error
        assert "Unschedulable: 0/2 nodes are available: 1 Too many pods." in error
        assert "waited 0.5 s for room to free up on node-1" in error
    assert any("cannot be placed" in m for m in log)
    assert ours(api) == []


def test_an_unschedulable_twin_that_gets_room_within_the_grace_is_probed(
    api: KubeAPI, kubeconfig: str
) -> None:
    api.full_nodes["node-1"] = "0/2 nodes are available: 1 Too many pods."
    room = threading.Timer(1.0, lambda: api.full_nodes.pop("node-1"))  # a pod there ended
    room.start()
    try:
        with backend(kubeconfig, unschedulable_grace=30.0) as b:
            (result,) = b.run(targets(b.snapshot())[:1], timeout=1.0)
    finally:
        room.cancel()
    assert result.observed is Observed.CONNECTED and result.token == "shop/web-1", result


def test_a_pod_that_never_starts_times_out_naming_the_pod_node_and_state(
    api: KubeAPI, kubeconfig: str
) -> None:
    api.stuck_nodes.add("node-1")
    log = Log()
    with backend(kubeconfig, log, pod_timeout=1.0) as b:
        results = b.run(targets(b.snapshot())[:1], timeout=1.0)
    (result,) = results
    assert result.observed is Observed.ERROR
    error = result.error or ""
    assert "(twin of shop/web-1, node node-1) was not running after 1 s: ContainerCreating" in error
    assert any("was not running after" in m for m in log)
    assert ours(api) == []


def test_a_pod_the_node_rejects_makes_its_probes_errors(api: KubeAPI, kubeconfig: str) -> None:
    api.reject_nodes["node-1"] = (
        "OutOfcpu",
        "Pod was rejected: Node didn't have enough resource: cpu",
    )
    with backend(kubeconfig) as b:
        snap = b.snapshot()
        results = {r.id: r for r in b.run(targets(snap), timeout=1.0)}
    assert results["pod-pod"].observed is Observed.ERROR
    assert "failed: OutOfcpu on node node-1" in (results["pod-pod"].error or "")
    assert results["pod-svc"].observed is Observed.ERROR  # its backend twin is the rejected one


def test_an_unschedulable_twin_names_its_node_and_the_schedulers_message(
    api: KubeAPI, kubeconfig: str
) -> None:
    # full in a way the snapshot does not show (it has no allocatable): the scheduler says
    api.full_nodes["node-1"] = "0/2 nodes are available: 1 Insufficient memory."
    with backend(kubeconfig, pod_timeout=1.0) as b:
        (result,) = b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert result.observed is Observed.ERROR
    assert "Unschedulable: 0/2 nodes are available: 1 Insufficient memory." in (result.error or "")
    assert "(twin of shop/web-1, node node-1)" in (result.error or "")


def test_403_on_create_names_the_verb_and_resource_and_cleans_up(
    api: KubeAPI, kubeconfig: str
) -> None:
    api.fail(
        "POST",
        r"/namespaces/shop/pods$",
        403,
        message='pods is forbidden: User "ci" cannot create resource "pods" in API group "" in the namespace "shop"',
    )
    with backend(kubeconfig) as b, pytest.raises(ClusterError) as e:
        b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert "not allowed to create pods" in str(e.value) and "in namespace shop" in str(e.value)
    assert "probes/rbac.yaml" in str(e.value)
    assert ours(api) == []  # the anchor made before the failure is gone


def test_403_on_exec_is_an_error_naming_pods_exec(api: KubeAPI, kubeconfig: str) -> None:
    api.fail(
        "GET",
        r"/exec\?",
        403,
        message='pods "x" is forbidden: User "ci" cannot get resource "pods/exec"',
    )
    with backend(kubeconfig) as b:
        (result,) = b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert result.observed is Observed.ERROR
    assert "not allowed to create pods/exec in namespace shop" in (result.error or "")


def test_a_500_on_create_is_a_clear_error(api: KubeAPI, kubeconfig: str) -> None:
    api.fail(
        "POST", r"/services$", 500, message="Internal error occurred: failed to allocate a nodePort"
    )
    with (
        backend(kubeconfig) as b,
        pytest.raises(
            ClusterError,
            match=r"failed to create services 'np-.*' in namespace shop \(500 .*nodePort",
        ),
    ):
        b.run(targets(b.snapshot())[2:3], timeout=1.0)
    assert ours(api) == []


def test_409_on_an_anchor_of_this_run_reuses_it(api: KubeAPI, kubeconfig: str) -> None:
    with backend(kubeconfig) as b:
        api.add(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": anchor_name(b.run_id),
                    "namespace": "shop",
                    "labels": {RUN_LABEL: b.run_id},
                },
                "data": {"agent.py": (REPO / "probes" / "agent.py").read_text()},
            }
        )
        uid = api.find("ConfigMap", "shop", anchor_name(b.run_id))["metadata"]["uid"]  # type: ignore[index]
        (result,) = b.run(targets(b.snapshot())[:1], timeout=1.0)
        twin = next(p for p in api.objects("Pod") if p["metadata"]["name"].startswith("netparity-"))
    assert result.observed is Observed.CONNECTED
    assert twin["metadata"]["ownerReferences"][0]["uid"] == uid
    assert ours(api) == []


def test_409_on_an_object_that_is_not_this_runs_is_a_clear_error(
    api: KubeAPI, kubeconfig: str
) -> None:
    with backend(kubeconfig) as b:
        api.add(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": anchor_name(b.run_id),
                    "namespace": "shop",
                    "labels": {"app": "someone-elses"},
                },
            }
        )
        with pytest.raises(
            ClusterError,
            match=r"ConfigMap shop/netparity-run-.* already exists and is not this run's",
        ):
            b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert api.find("ConfigMap", "shop", anchor_name(b.run_id)) is not None  # not ours: left alone


# --------------------------------------------------------------------------- interruptions


def test_ctrl_c_during_a_run_removes_everything(api: KubeAPI, kubeconfig: str) -> None:
    def interrupt(what: str, done: int, total: int) -> None:
        if what == "probes":
            raise KeyboardInterrupt

    b = backend(kubeconfig)
    with pytest.raises(KeyboardInterrupt):
        b.run(targets(b.snapshot())[:3], timeout=1.0, progress=interrupt)
    assert ours(api) == []
    assert b.cleanup_errors == []


# A run in a process of its own, killed with SIGKILL once it has probed: no cleanup runs.
KILLED_RUN = """
import sys, time
from netparity.backend import Target
from netparity.engine.traffic import PodEndpoint, Traffic
from netparity.kube.backend import KubeBackend
b = KubeBackend("test", kubeconfig=sys.argv[1], lease_seconds=int(sys.argv[2]), log=print)
snap = b.snapshot()
web, client = snap.pod("shop", "web-1"), snap.pod("shop", "client-1")
traffic = Traffic(source=PodEndpoint(pod=client), destination=PodEndpoint(pod=web), port="http")
(r,) = b.run([Target(id="x", traffic=traffic)], timeout=1.0)
print("RAN", b.run_id, r.observed, flush=True)
time.sleep(600)
"""


def killed_run(kubeconfig: str, *, lease_seconds: int) -> str:
    """Start a run in another process, let it probe, SIGKILL it; its run id."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, kubeconfig, str(lease_seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("RAN "):
                _, run_id, observed = line.split()
                assert observed == "connected", line
                return run_id
        raise AssertionError("the run in the other process did not get to probe")
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_killed_runs_leftovers_are_removed_once_its_heartbeat_is_stale(
    api: KubeAPI, kubeconfig: str
) -> None:
    dead = killed_run(kubeconfig, lease_seconds=1)
    assert {o.split("/")[0] for o in ours(api)} == {"ConfigMap", "Pod"}
    assert [lease["metadata"]["name"] for lease in api.objects("Lease")] == [anchor_name(dead)]
    # a run that started later, without a heartbeat yet: young, so left alone
    api.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "netparity-run-20991231-235959-ffff",
                "namespace": "shop",
                "labels": {RUN_LABEL: "20991231-235959-ffff"},
            },
        }
    )
    time.sleep(1.5)  # the killed run's heartbeat (1 s) is stale now
    log = Log()
    with backend(kubeconfig, log) as b:
        (result,) = b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert result.observed is Observed.CONNECTED
    assert any(
        f"removed the leftovers of an earlier interrupted run: run {dead}" in m
        and "its heartbeat stopped" in m
        for m in log
    ), log
    assert ours(api) == ["ConfigMap/shop/netparity-run-20991231-235959-ffff"]
    assert api.objects("Lease") == []
    assert_only_ours_touched(api)


def test_two_runs_at_once_both_finish_with_correct_results(api: KubeAPI, kubeconfig: str) -> None:
    log_a, log_b = Log(), Log()
    with backend(kubeconfig, log_a) as a, backend(kubeconfig, log_b) as b:
        tt = targets(a.snapshot())[:3]
        first = a.run(tt, timeout=1.0)  # a's twins and Services exist from here on
        made_by_a = set(ours(api))
        results: dict[str, list[Any]] = {}
        errors: list[BaseException] = []

        def go(name: str, which: KubeBackend) -> None:
            try:
                results[name] = which.run(tt, timeout=1.0)
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=go, args=(n, w)) for n, w in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        assert made_by_a <= set(ours(api))  # b removed nothing of a's
        leases = sorted(lease["metadata"]["name"] for lease in api.objects("Lease"))
        assert leases == sorted([anchor_name(a.run_id), anchor_name(b.run_id)])
    for got in (first, results["a"], results["b"]):
        by_id = {r.id: r for r in got}
        for tid in ("pod-pod", "pod-pod-udp", "pod-svc"):
            assert by_id[tid].observed is Observed.CONNECTED, by_id[tid]
            assert by_id[tid].token == "shop/web-1"
    assert not any("leftovers" in m for m in [*log_a, *log_b])
    assert ours(api) == [] and api.objects("Lease") == []


def test_a_heartbeat_is_renewed_while_the_run_lasts(api: KubeAPI, kubeconfig: str) -> None:
    with backend(kubeconfig, lease_seconds=1) as b:
        b.run(targets(b.snapshot())[:1], timeout=1.0)
        (lease,) = api.objects("Lease")
        time.sleep(1.2)
        (renewed,) = api.objects("Lease")
        anchor = api.find("ConfigMap", "shop", anchor_name(b.run_id))
        assert anchor is not None
        expires = anchor["metadata"]["annotations"]["netparity.io/expires"]
    assert renewed["spec"]["renewTime"] > lease["spec"]["renewTime"]
    assert renewed["spec"]["holderIdentity"].endswith(b.run_id)
    assert lease["metadata"]["annotations"]["netparity.io/expires"] == expires
    # the planned length (2 h by default) plus the margin (15 min)
    assert expires == (b.started + timedelta(hours=2, minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert any(m[0] == "PUT" and m[1] == "leases" for m in api.mutations)


def test_an_expired_run_is_removed_even_with_a_fresh_heartbeat(
    api: KubeAPI, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def fake_run(run_id: str, expires: datetime) -> None:
        when = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = {
            "name": anchor_name(run_id),
            "namespace": "shop",
            "labels": {RUN_LABEL: run_id},
            "annotations": {"netparity.io/expires": when},
        }
        api.add(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": dict(meta)},
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": dict(meta),
                "spec": {"leaseDurationSeconds": 120, "renewTime": stamp},
            },
        )

    fake_run("20200101-000000-aaaa", now - timedelta(minutes=1))
    fake_run("20200101-000000-bbbb", now + timedelta(hours=1))
    assert main(["cleanup", "--cluster", "test", "--kubeconfig", kubeconfig]) == 0
    out = capsys.readouterr().out
    assert (
        "removed run 20200101-000000-aaaa: 1 heartbeat, 1 anchor in namespace shop (expired" in out
    )
    assert "left alone run 20200101-000000-bbbb" in out and "--force removes it" in out
    assert ours(api) == ["ConfigMap/shop/netparity-run-20200101-000000-bbbb"]
    assert main(["cleanup", "--cluster", "test", "--kubeconfig", kubeconfig, "--force"]) == 0
    assert "removed run 20200101-000000-bbbb" in capsys.readouterr().out
    assert ours(api) == [] and api.objects("Lease") == []


# --------------------------------------------------------------------------- the CLI


def test_netparity_cleanup_removes_every_trace_and_nothing_else(
    api: KubeAPI, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    left = killed_run(kubeconfig, lease_seconds=1)
    time.sleep(1.5)  # its heartbeat is stale now
    api.add(  # an anchor of another run, labelled: must go
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "netparity-run-20200101-000000-aaaa",
                "namespace": "shop",
                "labels": {RUN_LABEL: "20200101-000000-aaaa"},
            },
        }
    )
    api.add(  # looks like ours, is not labelled: must survive
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "netparity-run-lookalike", "namespace": "shop"},
        }
    )
    assert main(["cleanup", "--cluster", "test", "--kubeconfig", kubeconfig, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("would remove run ") == 2
    assert len(ours(api)) == 4
    assert main(["cleanup", "--cluster", "test", "--kubeconfig", kubeconfig]) == 0
    out = capsys.readouterr().out
    assert (
        out.count("removed run ") == 2
        and "run 20200101-000000-aaaa: 1 anchor in namespace shop" in out
    )
    assert f"run {left}: 2 pods, 1 heartbeat, 1 anchor in namespace shop" in out
    assert ours(api) == []
    assert api.find("ConfigMap", "shop", "netparity-run-lookalike") is not None
    assert_only_ours_touched(api)
    assert main(["cleanup", "--cluster", "test", "--kubeconfig", kubeconfig]) == 0
    assert "no netparity objects" in capsys.readouterr().out


def test_netparity_snapshot_writes_a_list_that_loads_back(
    api: KubeAPI, kubeconfig: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prod.yaml"
    assert main(["snapshot", "--cluster", "test", "--kubeconfig", kubeconfig, "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["kind"] == "List"
    # the dataplane's DaemonSet has no pod in the test API: its (hostNetwork) template stands in
    loaded = load_snapshot([out])
    assert [p.key for p in loaded.pods if p.template is None] == ["shop/client-1", "shop/web-1"]
    assert all(p.host_network for p in loaded.template_pods)
    assert "3 pods (1 from workload templates), 2 nodes" in capsys.readouterr().err
    assert api.mutations == []
    as_json = tmp_path / "prod.json"
    assert (
        main(["snapshot", "--cluster", "test", "--kubeconfig", kubeconfig, "-o", str(as_json)]) == 0
    )
    assert json.loads(as_json.read_text())["kind"] == "List"
    assert load_snapshot([as_json]).pods == load_snapshot([out]).pods


def test_a_failed_snapshot_writes_nothing_and_exits_2(
    api: KubeAPI, kubeconfig: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.fail(
        "GET",
        r"^/api/v1/services",
        403,
        message='services is forbidden: User "ci" cannot list resource "services"',
    )
    out = tmp_path / "prod.yaml"
    assert main(["snapshot", "--cluster", "test", "--kubeconfig", kubeconfig, "-o", str(out)]) == 2
    assert not out.exists() and list(tmp_path.iterdir()) == [Path(kubeconfig)]
    assert "not allowed to list services in all namespaces" in capsys.readouterr().err


# --------------------------------------------------------------------------- RBAC


def _granted() -> set[tuple[str, str, str]]:
    grants: set[tuple[str, str, str]] = set()
    for doc in yaml.safe_load_all((REPO / "probes" / "rbac.yaml").read_text()):
        if doc and doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for res in rule["resources"]:
                        for verb in rule["verbs"]:
                            grants.add((verb, group, res))
    return grants


def _used(requests: list[tuple[str, str]]) -> set[tuple[str, str, str]]:
    used = set()
    for method, raw in requests:
        path = raw.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        if len(rest) >= 3 and rest[0] == "namespaces":
            rest = rest[2:]
        resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
        named = len(rest) > 1
        verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(
            method
        ) or ("get" if named else "watch" if "watch=True" in raw or "watch=true" in raw else "list")
        used.add((verb, group, resource))
    return used


def test_rbac_grants_every_verb_a_run_uses_and_no_other(api: KubeAPI, kubeconfig: str) -> None:
    with backend(kubeconfig) as b:
        b.facts()
        b.run(targets(b.snapshot()), timeout=1.0)
    api.cilium_crds = True
    with backend(kubeconfig) as b:
        b.snapshot()
    assert main(["cleanup", "--cluster", "test", "--kubeconfig", kubeconfig]) == 0
    used = _used(api.requests)
    granted = _granted()
    assert used - granted == set()
    # granted but not exercised here, each for a stated reason (see the comments in rbac.yaml):
    assert granted - used == {
        ("update", "", "configmaps/finalizers"),  # OwnerReferencesPermissionEnforcement clusters
        ("create", "", "pods/exec"),  # websocket exec is authorized as `create` from 1.35
        ("get", "", "pods"),  # after a retried create (409)
        ("get", "", "services"),  # a LoadBalancer's address; after a retried create (409)
        ("get", "coordination.k8s.io", "leases"),  # after a conflicting renewal (409)
        ("update", "coordination.k8s.io", "leases"),  # renewals: runs here are shorter
        ("create", "", "namespaces"),  # opt-in --allow-host-network (tests/test_rbac.py)
        ("delete", "", "namespaces"),  # opt-in --allow-host-network (tests/test_rbac.py)
        ("watch", "", "services"),  # waiting for a LoadBalancer's address
        ("watch", "cilium.io", "ciliumendpoints"),  # settling on Cilium
    }  # `list daemonsets` is exercised: workloads are read with the snapshot


def test_a_pod_on_a_windows_node_is_not_twinned(api: KubeAPI, kubeconfig: str) -> None:
    node = api.find("Node", "", "node-1")
    assert node is not None
    node["metadata"]["labels"]["kubernetes.io/os"] = "windows"
    api.add(node)
    with backend(kubeconfig) as b:
        (result,) = b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert result.observed is Observed.NOT_RUN and "windows node node-1" in (result.error or "")
    assert not any(m[1] == "pods" for m in api.mutations)


def test_an_admission_webhook_refusal_is_reported_as_such_not_as_rbac(
    api: KubeAPI, kubeconfig: str
) -> None:
    message = (
        'admission webhook "validation.gatekeeper.sh" denied the request: [azurepolicy-k8sazurev2'
        "blockdefault] containers cannot run from images outside the allowed registries"
    )
    api.fail("POST", r"/namespaces/shop/pods$", 403, message=message)
    with backend(kubeconfig) as b, pytest.raises(ClusterError) as e:
        b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert "the API server refused to create pods" in str(e.value)
    assert "denied the request" in str(e.value) and "rbac.yaml" not in str(e.value)
    assert ours(api) == []


# --------------------------------------------------------------------------- exec that hangs or fails


def test_an_exec_whose_handshake_never_completes_ends_as_errors_naming_the_cause(
    api: KubeAPI, kubeconfig: str
) -> None:
    api.exec_hang = True
    start = time.monotonic()
    with backend(kubeconfig, exec_handshake_timeout=1.0) as b:
        results = b.run(targets(b.snapshot())[:3], timeout=1.0)
    took = time.monotonic() - start
    for r in results:
        assert r.observed is Observed.ERROR, r
        assert "did not complete the exec handshake within 1 s" in (r.error or ""), r.error
        assert "konnectivity" in (r.error or "")
    assert took < 30, took  # bounded by the handshake timeout, not by the server
    assert ours(api) == []


def test_an_image_without_python3_says_what_the_exec_status_said(
    api: KubeAPI, kubeconfig: str
) -> None:
    api.exec_missing.add("python3")
    with backend(kubeconfig) as b:
        (result,) = b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert result.observed is Observed.ERROR
    error = result.error or ""
    assert 'exec: "python3": executable file not found in $PATH' in error, error
    assert "no result" not in error


def test_an_answer_from_anyone_but_the_destination_is_an_error_naming_who_answered(
    api: KubeAPI, kubeconfig: str
) -> None:
    api.answer_as["shop/web-1"] = "istio-proxy"  # something else answers on web-1's twin
    with backend(kubeconfig) as b:
        results = {r.id: r for r in b.run(targets(b.snapshot()), timeout=1.0)}
    for tid in ("pod-pod", "pod-svc", "ext-nodeport"):
        r = results[tid]
        assert r.observed is Observed.ERROR, r
        assert "answered by 'istio-proxy', not by 'shop/web-1'" in (r.error or ""), r.error
        assert r.token == "istio-proxy"
    # the other twin answers as itself: still connected
    assert results["web-client"].observed is Observed.CONNECTED


# --------------------------------------------------------------------------- settling


def test_on_cilium_probes_wait_for_each_twins_ciliumendpoint(api: KubeAPI, kubeconfig: str) -> None:
    api.cilium_crds = True
    api.cep_ready_delay = 1.0
    with backend(kubeconfig) as b:
        results = {r.id: r for r in b.run(targets(b.snapshot())[:3], timeout=1.0)}
    assert results["pod-pod"].observed is Observed.CONNECTED
    twins = set(api.cep_ready_at)
    assert len(twins) == 2 and api.exec_at
    for at, _ in api.exec_at:
        assert at >= max(api.cep_ready_at.values())  # no probe before both endpoints were ready
    assert ours(api) == [] and api.objects("CiliumEndpoint") == []


def test_a_ciliumendpoint_that_never_gets_an_identity_makes_its_probes_errors(
    api: KubeAPI, kubeconfig: str
) -> None:
    api.cilium_crds = True
    api.cep_ready_delay = None
    log = Log()
    with backend(kubeconfig, log, pod_timeout=1.0) as b:
        (result,) = b.run(targets(b.snapshot())[:1], timeout=1.0)
    assert result.observed is Observed.ERROR
    assert "CiliumEndpoint of probe pod" in (result.error or "")
    assert "(state: waiting-for-identity)" in (result.error or "")
    assert api.exec_at == []


def test_on_npm_probes_wait_the_settle_interval_after_the_twins_ips_are_known(
    tmp_path: Path,
) -> None:
    with KubeAPI() as server:
        demo_cluster(server, dataplane="npm")
        config = str(server.kubeconfig(tmp_path / "kc"))
        with backend(config, settle=1.5) as b:
            tt = targets(b.snapshot())[:1]
            (first,) = b.run(tt, timeout=1.0)
            n = len(server.exec_at)
            (again,) = b.run(tt, timeout=1.0)  # a retry: the settle interval since the last try
        assert first.observed is again.observed is Observed.CONNECTED
        start = server.exec_at[0][0]
        assert start - max(server.running_at.values()) >= 1.4
        assert server.exec_at[n][0] - server.exec_at[n - 1][0] >= 1.4


def test_settle_must_not_be_negative(kubeconfig: str) -> None:
    with pytest.raises(InputError, match="--settle"):
        backend(kubeconfig, settle=-1.0)


def test_an_allow_where_a_deny_was_predicted_is_probed_again_after_the_settle_interval(
    api: KubeAPI, kubeconfig: str
) -> None:
    from netparity.engine.traffic import Decision, PathKind
    from netparity.plan.model import Intent, PlannedProbe, Prediction
    from netparity.record import Outcome, judge
    from netparity.session import probe_all

    with backend(kubeconfig, settle=1.0) as b:
        t = targets(b.snapshot())
        dataplane = b.facts().dataplane

        def planned(tid: str, decision: Decision) -> PlannedProbe:
            (target,) = [x for x in t if x.id == tid]
            return PlannedProbe(
                id=tid,
                title=tid,
                kind=PathKind.POD_POD,
                traffic=target.traffic,
                intent=Intent.REJECT,
                predicted={dataplane: Prediction(decision=decision, explanation="test")},
            )

        tries = probe_all(
            b,
            [planned("pod-pod", Decision.DENY), planned("web-client", Decision.ALLOW)],
            timeout=1.0,
            retries=1,
            dataplane=dataplane,
        )
    # the disagreeing allow got a second try (agreeing again: an allow, a finding, not flaky)
    assert [r.observed for r in tries["pod-pod"]] == [Observed.CONNECTED, Observed.CONNECTED]
    assert [r.observed for r in tries["web-client"]] == [Observed.CONNECTED]
    assert judge([r.observed for r in tries["pod-pod"]]) is Outcome.ALLOW
    # had the second try been dropped, the verdict would be flaky, never a result
    assert judge([Observed.CONNECTED, Observed.TIMEOUT]) is Outcome.FLAKY
    (first, second) = [at for at, name in api.exec_at if name.endswith(short_hash("shop/client-1"))]
    assert second - first >= 1.0


IN_CLUSTER_RUN = """
import json, sys
from netparity.backend import Target
from netparity.engine.traffic import ExternalEndpoint, ServiceEndpoint, Traffic, Via
from netparity.kube.backend import KubeBackend

with KubeBackend("in-cluster", settle=0.0, log=lambda m: print(m, file=sys.stderr)) as b:
    snap = b.snapshot()
    svc, node1 = snap.service("shop", "web"), snap.node("node-1")
    outside = ExternalEndpoint(ip="198.51.100.7")
    results = b.run(
        [
            Target(id="ext-nodeport", traffic=Traffic(
                source=outside,
                destination=ServiceEndpoint(service=svc, via=Via.NODE_PORT, node=node1),
                port=80,
            )),
            Target(id="ext-pod", traffic=Traffic(
                source=outside, destination=ServiceEndpoint(service=svc), port=80,
            )),
        ],
        timeout=1.0,
    )
    print(json.dumps({"name": b.facts().name, "results": [
        {"id": r.id, "observed": str(r.observed), "error": r.error} for r in results
    ]}))
"""


def test_in_cluster_outside_probes_are_not_run_because_they_would_be_pod_traffic(
    tmp_path: Path,
) -> None:
    """A real in-cluster login (the service account's token and CA at their fixed paths, in
    a mount namespace of its own; KUBERNETES_SERVICE_HOST/PORT; HTTPS) against the loopback
    API server: the outside probes are not run, with the reason, and nothing is created."""
    cert, key = tmp_path / "ca.crt", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    token = tmp_path / "token"
    token.write_text("in-cluster-token")
    script = tmp_path / "run.py"
    script.write_text(IN_CLUSTER_RUN)
    with KubeAPI(tls=(cert, key), token="in-cluster-token") as server:
        demo_cluster(server)
        port = server.httpd.server_address[1]
        env = {
            **os.environ,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(port),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("KUBECONFIG", None)
        sa = "/run/secrets/kubernetes.io/serviceaccount"  # /var/run is /run
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'mount -t tmpfs tmpfs /run && mkdir -p {sa} && cp "$1" "$2" {sa}/ && '
             'exec "$3" "$4"',
             "sh", str(token), str(cert), sys.executable, str(script)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert not server.mutations  # nothing was made for probes that do not run
        assert any(path.startswith("/api/v1/nodes") for _, path in server.requests)
    assert out["name"] == "in-cluster"
    for result in out["results"]:
        assert result["observed"] == "not-run", result
        assert "inside the cluster (--cluster in-cluster)" in result["error"]
        assert "the runner's own pod, which is pod traffic" in result["error"]
    assert not os.path.exists("/run/secrets/kubernetes.io")  # the mount stayed in its namespace
