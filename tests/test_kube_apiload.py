"""The API load of a Kubernetes run (#15), pinned against the loopback API server: no
request per probe, a small constant per object created, one exec per source batch, lists
in pages, waits by watch, and the client's own rate bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from netparity.backend import Target
from netparity.cli import main
from netparity.engine.traffic import PodEndpoint, Traffic
from netparity.errors import InputError
from netparity.kube import RUN_LABEL
from netparity.kube.backend import KubeBackend
from netparity.kube.client import PODS, Kube, RateLimit
from netparity.model.snapshot import Snapshot

import kube_fixtures
from kubeapi import KubeAPI, demo_cluster, pod

kubeconfig = kube_fixtures.kubeconfig
Log = kube_fixtures.Log


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    server = KubeAPI(pod_start_delay=1.5).start()  # a wait long enough to poll several times
    try:
        demo_cluster(server)
        yield server
    finally:
        server.stop()


def backend(kubeconfig: str, **kw: Any) -> KubeBackend:
    return KubeBackend("test", kubeconfig=kubeconfig, log=Log(), settle=0.0, **kw)


def web_targets(snap: Snapshot, n: int) -> list[Target]:
    """n probes from client-1 to web-1 (one source, one destination: one batch)."""
    web, client = snap.pod("shop", "web-1"), snap.pod("shop", "client-1")
    assert web and client
    return [
        Target(
            id=f"p{i}",
            traffic=Traffic(
                source=PodEndpoint(pod=client), destination=PodEndpoint(pod=web), port=8080 + i
            ),
        )
        for i in range(n)
    ]


def query(path: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(path).query)


def run_counts(kubeconfig: str, probes: int) -> dict[str, int]:
    with backend(kubeconfig) as b:
        b.run(web_targets(b.snapshot(), probes), timeout=0.3)
    return b.kube.requests.by_verb()


def test_more_probes_from_the_same_sources_cost_no_more_requests(
    api: KubeAPI, kubeconfig: str
) -> None:
    few = run_counts(kubeconfig, 2)
    many = run_counts(kubeconfig, 40)
    assert many == few  # not one request more for 38 more probes
    assert few["exec"] == 1  # one source: one exec for its whole batch


def test_requests_per_object_created_are_a_small_constant(api: KubeAPI, kubeconfig: str) -> None:
    with backend(kubeconfig) as b:
        b.snapshot()
        b.facts()  # the dataplane's detection: reads, once a run
        reads = b.kube.requests.total()
        b.run(web_targets(b.snapshot(), 3), timeout=0.3)
    counts = b.kube.requests
    created = counts.total("create")
    assert created == 4  # the heartbeat, the anchor, two twins
    handling = counts.total() - reads - counts.total("exec")
    # create + delete each, then a constant: the earlier runs' leftovers (5 lists), one
    # list and one watch for the twins, one list of CiliumEndpoints, the clean-up (5 lists)
    assert counts.total("delete") == created
    assert handling <= 2 * created + 14, counts.summary()
    # the line printed at the end of the run says so
    assert f"{counts.total()} API requests" in b.request_line()
    assert "an object created" in b.request_line()


def test_a_wait_uses_one_list_and_a_watch_not_polling(api: KubeAPI, kubeconfig: str) -> None:
    with backend(kubeconfig) as b:
        b.run(web_targets(b.snapshot(), 1), timeout=0.3)
        run_id = b.run_id
    mine = f"{RUN_LABEL}={run_id}"
    pods = [
        (m, p)
        for m, p in api.requests
        if m == "GET"
        and urlsplit(p).path == "/api/v1/pods"
        and query(p).get("labelSelector") == [mine]
    ]
    watches = [p for _, p in pods if query(p).get("watch") in (["true"], ["True"])]
    lists = [p for _, p in pods if p not in watches]
    # the twins took 1.5 s to start: a poll would have listed many times; the wait listed
    # once and watched (the second list is the clean-up's)
    assert len(watches) >= 1
    assert query(watches[0]).get("resourceVersion")  # from the list's version, no gap
    assert len(lists) == 2


def test_a_list_larger_than_a_page_is_read_in_pages(api: KubeAPI, kubeconfig: str) -> None:
    api.add(
        *(
            pod("shop", f"many-{i}", {"app": "many"}, "node-1", f"127.0.1.{50 + i}")
            for i in range(7)
        )
    )
    kube = Kube.connect("test", kubeconfig=kubeconfig)
    try:
        api.requests.clear()
        paged = kube.list(PODS, namespace="shop", page=3)
        pages = list(api.requests)
        whole = kube.list(PODS, namespace="shop", page=0)
    finally:
        kube.close()
    assert paged is not None and whole is not None
    assert [p["metadata"]["name"] for p in paged] == [p["metadata"]["name"] for p in whole]
    assert len(paged) == 9  # web-1, client-1 and seven more: three pages of three
    assert [query(p).get("limit") for _, p in pages] == [["3"]] * 3
    assert [query(p).get("continue") for _, p in pages] == [None, ["3"], ["6"]]
    assert kube.requests.total("list") == 4


def test_the_client_holds_to_its_rate_bound() -> None:
    limit = RateLimit(10.0, burst=2)
    start = time.monotonic()
    for _ in range(12):
        limit.take()
    took = time.monotonic() - start
    assert 0.9 <= took < 2.0  # 2 at once, then 10 at 10 a second
    assert limit.waited >= 0.9


def test_a_rate_bound_of_zero_is_refused(api: KubeAPI, kubeconfig: str) -> None:
    with pytest.raises(InputError, match="--kube-qps"):
        backend(kubeconfig, kube_qps=0)


def test_plan_on_a_cluster_says_what_a_run_would_create_and_creates_nothing(
    api: KubeAPI, kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--cluster", "test", "--kubeconfig", kubeconfig]) == 0
    out = capsys.readouterr().out
    assert {m for m, _ in api.requests} == {"GET"}  # no create, no delete, no update
    assert not any("/exec" in p for _, p in api.requests)
    (line,) = [x for x in out.splitlines() if "will create" in x]
    assert "2 twins, 1 Service and a heartbeat and an anchor in each of 1 namespace (shop)" in line
    assert "5 objects; 1 exec batch (and one from this machine) for 6 probes" in line
    assert "nothing was created" in line


def test_a_run_says_what_it_will_create_before_it_creates_it(api: KubeAPI, kubeconfig: str) -> None:
    log = Log()
    with KubeBackend("test", kubeconfig=kubeconfig, log=log, settle=0.0) as b:
        targets = web_targets(b.snapshot(), 3)
        cost = b.cost(targets, timeout=0.3)
        assert {m for m, _ in api.requests} == {"GET"}  # the estimate created nothing
        b.run(targets, timeout=0.3)
        created = b.kube.requests.total("create")
        execs = b.kube.requests.total("exec")
    said = [i for i, m in enumerate(log) if "will create" in m]
    making = [i for i, m in enumerate(log) if "creating" in m]
    assert said and making and said[0] < making[0]
    assert log[said[0]].startswith(f"run {b.run_id}: will create 2 twins and a heartbeat")
    assert cost.objects == created == 4
    assert cost.batches == execs == 1
    # and at the end, what it asked of the API server
    assert any(m.startswith(f"run {b.run_id}: ") and "API requests (" in m for m in log)
