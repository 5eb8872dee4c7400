"""The Kubernetes client's exec: a command in a pod over the exec websocket, bounded in
time. One of the two modules beside `kube/client.py` that import `kubernetes` (with
`kube/kubeconfig.py`); `Kube` inherits it. The socket, once open, is exec_channels.py's.
"""

from __future__ import annotations

import builtins
import threading
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream as k8s_stream

from netparity.kube import RBAC_FILE
from netparity.kube.exec_channels import (
    EXEC_HANDSHAKE_TIMEOUT,
    ExecResult,
    closing,
    drive,
    run_bounded,
)
from netparity.kube.resources import PODS, Resource


class PodExec:
    """The exec half of `Kube` (client.py), which sets these attributes."""

    _api: Any
    name: str

    def _request(self, verb: str, res: Resource) -> None:
        raise NotImplementedError

    def exec(
        self,
        namespace: str,
        pod: str,
        command: builtins.list[str],
        *,
        stdin: str,
        timeout: float,
        container: str | None = None,
        handshake_timeout: float = EXEC_HANDSHAKE_TIMEOUT,
    ) -> ExecResult:
        """Run `command` in a pod over the exec websocket, feed it `stdin`, collect its output.

        Never hangs: the handshake is bounded by `handshake_timeout` and the command by
        `timeout`. The official client's handshake has no timeout of its own, so the exec runs
        in a thread of its own; one that is still stuck when its time is up is abandoned
        (it closes its socket when the server lets go, at the latest when the pod is deleted)
        and the caller gets an error that says which stage hung."""
        self._request("exec", PODS)  # before the handshake's clock starts
        return run_bounded(
            lambda shaken, abandoned: self._exec(
                namespace, pod, command, stdin, timeout, container, shaken, abandoned
            ),
            where=f"{namespace}/{pod}",
            timeout=timeout,
            handshake_timeout=handshake_timeout,
        )

    def _exec(
        self,
        namespace: str,
        pod: str,
        command: builtins.list[str],
        stdin: str,
        timeout: float,
        container: str | None,
        shaken: threading.Event,
        abandoned: threading.Event,
    ) -> ExecResult:
        # A client of its own: stream() swaps the ApiClient's transport while it runs,
        # which is not safe to share between threads.
        api: Any = k8s.ApiClient(self._api.configuration)
        try:
            core = k8s.CoreV1Api(api)
            kw: dict[str, Any] = {"container": container} if container else {}
            try:
                ws = k8s_stream(
                    core.connect_get_namespaced_pod_exec,
                    pod,
                    namespace,
                    command=command,
                    stdin=True,
                    stdout=True,
                    stderr=True,
                    tty=False,
                    _preload_content=False,
                    **kw,
                )
            except ApiException as e:
                return ExecResult(
                    stdout="",
                    stderr="",
                    exit_code=None,
                    error=self._exec_failure(e, namespace, pod),
                )
            finally:
                shaken.set()
            try:
                with closing(ws):
                    if abandoned.is_set():  # the caller gave up on the handshake
                        return ExecResult(stdout="", stderr="", exit_code=None, error="abandoned")
                    return drive(ws, stdin, timeout)
            except Exception as e:  # the socket broke mid-way
                return ExecResult(
                    stdout="",
                    stderr="",
                    exit_code=None,
                    error=f"exec in pod {namespace}/{pod} failed: {e}",
                )
        finally:
            api.close()

    def _exec_failure(self, e: ApiException, namespace: str, pod: str) -> str:
        text = str(e.reason or e)
        if "403" in text:
            return (
                f"{self.name}: not allowed to create pods/exec in namespace {namespace} "
                f"(403 Forbidden); grant the verbs listed in {RBAC_FILE}"
            )
        return f"exec in pod {namespace}/{pod} failed: {text}"

    # the exec socket driver, reachable where it always was
    _drive = staticmethod(drive)
