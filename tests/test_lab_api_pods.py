"""Pods created through the lab's API are lab pods: placed by node affinity, an address from
the node's pod range, their own network namespace, the agent inside it; the dataplane
polices the new address only after the programming delay (a probe before it is not
believed: here it connects where the policy denies); not Ready (a readiness gate nobody
sets) so no Service's endpoint; exec runs in the pod's namespace; deleting the pod removes
its namespace, routes and rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netparity.lab import down, status, up
from netparity.lab.agents import agent_path
from netparity.lab.netns import list_netns
from netparity.labapi.labhost import LabKubeAPI
from netparity.labapi.labobjects import lab_objects
from netparity.model.snapshot import load_snapshot

from lab_fixtures import unique_lab_name

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.lab
DELAY = 3.0
NODE = "aks-nodepool1-1"


@pytest.fixture(scope="module")
def api() -> Iterator[LabKubeAPI]:
    if os.geteuid() != 0:
        pytest.fail("the lab API test needs root (it builds network namespaces)")
    name = unique_lab_name("p")
    up(load_snapshot([REPO / "examples" / "aks-migration.yaml"]), name=name, dataplane="npm")
    server = LabKubeAPI(lab=name, programming_delay=DELAY)
    try:
        state = status(name)
        server.add(*lab_objects(state))
        server.start()
        yield server
    finally:
        server.stop()
        down(name, wait=30)


def _pod(name: str) -> dict[str, Any]:
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    hostname = {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web-partner", "twin": "yes"}},
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [hostname]}]
                    }
                }
            },
            "readinessGates": [{"conditionType": "netparity.io/never-ready"}],
            "containers": [
                {
                    "name": "agent",
                    "image": "python:3.12-slim",
                    "command": ["python3", "/agent/agent.py", "serve", "--name", f"web/{name}"],
                    "args": ["--tcp", "8080"],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "securityContext": restricted,
                    "volumeMounts": [{"name": "agent", "mountPath": "/agent"}],
                }
            ],
            "volumes": [{"name": "agent", "configMap": {"name": "agent"}}],
        },
    }


def _probe_from(netns: str, ip: str) -> str:
    batch = json.dumps(
        {"timeout": 1.0, "targets": [{"id": "t", "host": ip, "port": 8080, "protocol": "TCP"}]}
    )
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, str(agent_path()), "probe"],
        input=batch,
        capture_output=True,
        text=True,
        timeout=30,
    )
    line = next(json.loads(x) for x in done.stdout.splitlines() if '"id"' in x)
    return str(line.get("observed") or line.get("result"))


def _running(api: LabKubeAPI, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pod = api.find("Pod", "web", name)
        if pod is not None and pod["status"].get("phase") == "Running":
            return pod
        time.sleep(0.05)
    raise AssertionError(f"pod {name} did not run: {api.find('Pod', 'web', name)} {api.lab_errors}")


def _agent_config_map(api: LabKubeAPI) -> None:
    """The agent's ConfigMap, once per lab (each test makes its own pod: under -n 2 the
    tests of this module may run on different workers, each with a lab of its own)."""
    agent = agent_path().read_text()
    code, _ = api.do_create(
        "configmaps", "web", {"metadata": {"name": "agent"}, "data": {"agent.py": agent}}
    )
    assert code in (201, 409)


def test_a_pod_runs_in_the_lab_and_is_policed_after_the_delay(api: LabKubeAPI) -> None:
    _agent_config_map(api)
    code, doc = api.do_create("pods", "web", _pod("twin-a"))
    assert code == 201, doc
    pod = _running(api, "twin-a")
    started = time.monotonic()
    topology = status(api.lab).topology
    assert topology is not None
    lp = topology.pod("web/twin-a")
    assert pod["spec"]["nodeName"] == NODE and lp.node == NODE
    node_cidr = topology.node(NODE).pod_cidr
    assert node_cidr is not None and pod["status"]["podIP"] == lp.ip
    assert lp.netns in list_netns(lp.netns) and lp.netns.startswith(f"np-{api.lab}-r")
    assert "web/twin-a" in topology.not_ready  # its readiness gate: no Service sends to it
    source = next(p for p in topology.pods if p.key.startswith("shop/catalog"))
    # web-partner admits 8080 only from 203.0.113.0/24: before the delay nothing polices it
    before = _probe_from(source.netns, lp.ip)
    assert time.monotonic() - started < DELAY, "the first probe came too late to show the delay"
    time.sleep(DELAY + 1.5 - (time.monotonic() - started))
    after = _probe_from(source.netns, lp.ip)
    assert (before, after) == ("connected", "timeout")
    argv = api.exec_argv("web", "twin-a", ["python3", "-c", "print(1)"])
    assert isinstance(argv, list) and argv[:4] == ["ip", "netns", "exec", lp.netns]
    assert (
        subprocess.run(
            [*argv[:4], "ip", "-4", "-o", "addr"], capture_output=True, text=True
        ).stdout.count(lp.ip)
        == 1
    )


def test_deleting_the_pod_removes_its_namespace_routes_and_rules(api: LabKubeAPI) -> None:
    _agent_config_map(api)
    code, doc = api.do_create("pods", "web", _pod("twin-b"))
    assert code == 201, doc
    _running(api, "twin-b")
    topology = status(api.lab).topology
    assert topology is not None
    lp = topology.pod("web/twin-b")
    code, _ = api.do_delete("pods", "web", "twin-b", {})
    assert code == 200
    api.flush()
    after = status(api.lab).topology
    assert after is not None
    assert "web/twin-b" not in {p.key for p in after.pods}
    assert "web/twin-b" not in {p.key for p in after.snapshot.pods}
    assert "web/twin-b" not in after.not_ready
    assert lp.netns not in list_netns(f"np-{api.lab}-")
    for node in after.nodes:  # the pod's node had a route to its veth, the others via it
        routes = subprocess.run(
            ["ip", "-n", node.netns, "-4", "route"], capture_output=True, text=True
        ).stdout
        assert lp.ip not in [line.split()[0] for line in routes.splitlines() if line]
