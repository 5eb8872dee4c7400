"""The loopback API server's stop(): no pod process outlives it, also one whose kubelet was
still on its way to starting it (a run that ends while its pods start)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from kubeapi import KubeAPI, node

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _pod(name: str, marker: str) -> dict[str, Any]:
    script = f"import time; print('ready', flush=True); time.sleep(120)  # {marker}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": "n1",
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["python3", "-c", script],
                    "securityContext": RESTRICTED,
                }
            ],
        },
    }


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_no_pod_process_outlives_stop_even_one_starting_meanwhile() -> None:
    marker = f"netparity-stop-{os.getpid()}-{time.monotonic_ns()}"
    api = KubeAPI().start()
    try:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
        api.add(node("n1", "127.0.2.1"), namespace)
        started = _pod("started", marker)
        assert api.do_create("pods", "default", started)[0] == 201
        deadline = time.monotonic() + 60
        while not _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _processes_with(marker), "the first pod never started"
        # the kubelets of these wake after stop() has taken the pods it ends
        api.pod_start_delay = 0.5
        for i in range(3):
            assert api.do_create("pods", "default", _pod(f"late-{i}", marker))[0] == 201
    finally:
        api.stop()
    for t in api._threads:  # the kubelets: every one has started its pod or given up
        t.join(timeout=60)
    left = _processes_with(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "pod processes outlived the API server"
