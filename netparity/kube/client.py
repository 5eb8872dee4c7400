"""The only module that imports `kubernetes`: a typed facade that speaks plain wire dicts.

Every call goes through the official client's generated methods with
`_preload_content=False`, so objects come back exactly as the API server wrote them
(the same dicts a `kubectl get -o yaml` file holds). API failures become
`ClusterError`s with one sentence naming the verb and the resource.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as _k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream as k8s_stream

from netparity.errors import ClusterError
from netparity.kube import RBAC_FILE, RUN_LABEL

# The client is untyped: reach it through Any so that nothing untyped leaks out.
k8s_config: Any = _k8s_config

IN_CLUSTER = "in-cluster"
# (connect, read) seconds for one ordinary API request.
REQUEST_TIMEOUT = (10.0, 60.0)
# Reads are retried on these statuses, with these pauses (seconds).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_PAUSES = (0.2, 0.5, 1.0)

# Seconds the exec websocket handshake may take: the API server dials the kubelet (on AKS
# through the konnectivity tunnel) before it answers 101; a stuck tunnel never answers.
EXEC_HANDSHAKE_TIMEOUT = 30.0
# Seconds an exec may take beyond its command's limit to close its socket.
EXEC_CLOSE_SLACK = 10.0

STDOUT_CHANNEL = 1
STDERR_CHANNEL = 2
ERROR_CHANNEL = 3
V5_CHANNEL_PROTOCOL = "v5.channel.k8s.io"
# How RBAC words a denial (`User "x" cannot create resource "pods" ...`), unlike an
# admission plugin or webhook that refuses the object itself.
_RBAC_DENIAL = re.compile(r'cannot [a-z]+ resource "')


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """A resource the backend uses, and the generated-method stem that reaches it."""

    kind: str
    plural: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    stem: str = ""  # e.g. "pod" -> list_namespaced_pod; "" for custom resources

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def label(self) -> str:
        """How RBAC names it: `pods`, `daemonsets.apps`, `ciliumnetworkpolicies.cilium.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


NAMESPACES = Resource(
    kind="Namespace",
    plural="namespaces",
    group="",
    version="v1",
    namespaced=False,
    stem="namespace",
)
NODES = Resource(kind="Node", plural="nodes", group="", version="v1", namespaced=False, stem="node")
PODS = Resource(kind="Pod", plural="pods", group="", version="v1", namespaced=True, stem="pod")
SERVICES = Resource(
    kind="Service", plural="services", group="", version="v1", namespaced=True, stem="service"
)
CONFIG_MAPS = Resource(
    kind="ConfigMap",
    plural="configmaps",
    group="",
    version="v1",
    namespaced=True,
    stem="config_map",
)
NETWORK_POLICIES = Resource(
    kind="NetworkPolicy",
    plural="networkpolicies",
    group="networking.k8s.io",
    version="v1",
    namespaced=True,
    stem="network_policy",
)
DAEMON_SETS = Resource(
    kind="DaemonSet",
    plural="daemonsets",
    group="apps",
    version="v1",
    namespaced=True,
    stem="daemon_set",
)
LEASES = Resource(
    kind="Lease",
    plural="leases",
    group="coordination.k8s.io",
    version="v1",
    namespaced=True,
    stem="lease",
)
CILIUM_ENDPOINTS = Resource(
    kind="CiliumEndpoint",
    plural="ciliumendpoints",
    group="cilium.io",
    version="v2",
    namespaced=True,
)
CILIUM_NETWORK_POLICIES = Resource(
    kind="CiliumNetworkPolicy",
    plural="ciliumnetworkpolicies",
    group="cilium.io",
    version="v2",
    namespaced=True,
)
CILIUM_CLUSTERWIDE_POLICIES = Resource(
    kind="CiliumClusterwideNetworkPolicy",
    plural="ciliumclusterwidenetworkpolicies",
    group="cilium.io",
    version="v2",
    namespaced=False,
)

_API_CLASSES: dict[str, str] = {
    "": "CoreV1Api",
    "networking.k8s.io": "NetworkingV1Api",
    "apps": "AppsV1Api",
    "coordination.k8s.io": "CoordinationV1Api",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    """What one exec gave back: its output, exit code (None: unknown) and any failure."""

    stdout: str
    stderr: str
    exit_code: int | None
    error: str | None = None
    message: str | None = None  # what a failed exec's Status said (why the command failed)


class Conflict(ClusterError):
    """409: the object already exists."""


class Forbidden(ClusterError):
    """403: RBAC (or an admission plugin) refused the request."""


def _status_message(exc: ApiException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            doc = json.loads(body)
        except ValueError:
            return body.strip().splitlines()[0][:300]
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            return str(doc["message"])
    return str(getattr(exc, "reason", "") or "")


def _where(res: Resource, name: str | None, namespace: str | None) -> str:
    what = res.label if name is None else f"{res.label} {name!r}"
    if namespace:
        what += f" in namespace {namespace}"
    elif res.namespaced and name is None:
        what += " in all namespaces"
    return what


def _as_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ClusterError(f"the API server answered with {type(value).__name__}, not an object")
    return value


def _kubeconfig_paths(kubeconfig: str | None) -> str:
    if kubeconfig:
        return kubeconfig
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def _kubeconfig_exists(paths: str) -> bool:
    return any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p)


class Kube:
    """One cluster, reached with the official client: plain dicts in, plain dicts out."""

    def __init__(self, api_client: Any, *, name: str) -> None:
        self._api: Any = api_client
        self.name = name
        self.server: str = str(getattr(api_client.configuration, "host", "") or "")
        self._apis: dict[str, Any] = {}

    # ------------------------------------------------------------------ connecting

    @classmethod
    def connect(cls, context: str | None, *, kubeconfig: str | None = None) -> Kube:
        """A kubeconfig context (None: the current one), or the in-cluster service account."""
        paths = _kubeconfig_paths(kubeconfig)
        in_cluster = context == IN_CLUSTER or (
            context is None
            and "KUBERNETES_SERVICE_HOST" in os.environ
            and not _kubeconfig_exists(paths)
        )
        if in_cluster:
            configuration = k8s.Configuration()
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except ConfigException as e:
                raise ClusterError(f"cannot use the in-cluster configuration: {e}") from None
            return cls(k8s.ApiClient(configuration), name=IN_CLUSTER)
        if not _kubeconfig_exists(paths):
            raise ClusterError(
                f"no kubeconfig at {paths}: set KUBECONFIG or run `az aks get-credentials`"
            )
        try:
            contexts, current = k8s_config.list_kube_config_contexts(config_file=paths)
        except (ConfigException, OSError, ValueError, TypeError, KeyError) as e:
            raise ClusterError(f"cannot read the kubeconfig {paths}: {e}") from None
        names = [str(c.get("name")) for c in contexts or ()]
        if context is not None and context not in names:
            listed = ", ".join(sorted(names)) or "none"
            raise ClusterError(
                f"the kubeconfig {paths} has no context {context!r} (contexts: {listed})"
            )
        chosen = context if context is not None else str((current or {}).get("name", ""))
        try:
            api = k8s_config.new_client_from_config(
                config_file=paths, context=chosen, persist_config=False
            )
        except (ConfigException, OSError, ValueError, TypeError, KeyError) as e:
            raise ClusterError(f"cannot load context {chosen!r} from {paths}: {e}") from None
        return cls(api, name=chosen)

    def close(self) -> None:
        api: Any = self._api
        api.close()

    # ------------------------------------------------------------------ plumbing

    def _api_for(self, group: str) -> Any:
        if group not in self._apis:
            cls_name = _API_CLASSES.get(group, "CustomObjectsApi")
            self._apis[group] = getattr(k8s, cls_name)(self._api)
        return self._apis[group]

    def _custom(self) -> Any:
        if "*custom" not in self._apis:
            self._apis["*custom"] = k8s.CustomObjectsApi(self._api)
        return self._apis["*custom"]

    def _fail(
        self, exc: BaseException, verb: str, res: Resource, name: str | None, namespace: str | None
    ) -> ClusterError:
        where = _where(res, name, namespace)
        if isinstance(exc, ApiException):
            status = int(exc.status or 0)
            message = _status_message(exc)
            if status == 401:
                return ClusterError(
                    f"{self.name}: the API server at {self.server} rejected the credentials "
                    f"(401 Unauthorized) when asked to {verb} {where}; refresh them "
                    f"(for AKS: az aks get-credentials, kubelogin)"
                )
            if status == 403:
                if _RBAC_DENIAL.search(message) or not message:
                    return Forbidden(
                        f"{self.name}: not allowed to {verb} {where} (403 Forbidden: {message}); "
                        f"grant the verbs listed in {RBAC_FILE}"
                    )
                return Forbidden(
                    f"{self.name}: the API server refused to {verb} {where}: {message}"
                )
            if status == 409:
                return Conflict(
                    f"{self.name}: cannot {verb} {where}: it already exists ({message})"
                )
            if status == 0:
                return ClusterError(f"{self.name}: cannot {verb} {where}: {exc.reason}")
            return ClusterError(
                f"{self.name}: the API server failed to {verb} {where} "
                f"({status} {exc.reason}: {message})"
            )
        reason = getattr(exc, "reason", None) or exc
        return ClusterError(
            f"{self.name}: cannot reach the API server at {self.server} to {verb} {where}: {reason}"
        )

    def _call(
        self,
        verb: str,
        res: Resource,
        fn: Any,
        *args: Any,
        name: str | None = None,
        namespace: str | None = None,
        retry: bool = False,
        missing_ok: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        pauses = RETRY_PAUSES if retry else ()
        attempt = 0
        while True:
            try:
                resp = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
                data = resp.data
                return _as_dict(json.loads(data) if data else {})
            except ApiException as e:
                status = int(e.status or 0)
                if status == 404 and missing_ok:
                    return None
                if status in RETRY_STATUSES and attempt < len(pauses):
                    time.sleep(pauses[attempt])
                    attempt += 1
                    continue
                raise self._fail(e, verb, res, name, namespace) from None
            except (urllib3.exceptions.HTTPError, OSError) as e:
                # urllib3 has already retried the connection itself
                raise self._fail(e, verb, res, name, namespace) from None
            except ValueError as e:
                raise ClusterError(
                    f"{self.name}: the answer to {verb} {_where(res, name, namespace)} "
                    f"is not JSON ({e})"
                ) from None

    @staticmethod
    def _typed(items: builtins.list[Any], res: Resource) -> builtins.list[dict[str, Any]]:
        # List responses omit kind and apiVersion on their items.
        out: builtins.list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, dict):
                out.append({"apiVersion": res.api_version, "kind": res.kind, **item})
        return out

    # ------------------------------------------------------------------ verbs

    def list(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        missing_ok: bool = False,
    ) -> builtins.list[dict[str, Any]] | None:
        """Every object (of a namespace, or of all); None when missing_ok and the API is absent."""
        kw: dict[str, Any] = {}
        fn: Any
        args: tuple[Any, ...]
        if label_selector:
            kw["label_selector"] = label_selector
        if not res.stem:
            api = self._custom()
            if namespace:
                fn, args = (
                    api.list_namespaced_custom_object,
                    (res.group, res.version, namespace, res.plural),
                )
            else:
                fn, args = api.list_cluster_custom_object, (res.group, res.version, res.plural)
        else:
            api = self._api_for(res.group)
            if not res.namespaced:
                fn, args = getattr(api, f"list_{res.stem}"), ()
            elif namespace:
                fn, args = getattr(api, f"list_namespaced_{res.stem}"), (namespace,)
            else:
                fn, args = getattr(api, f"list_{res.stem}_for_all_namespaces"), ()
        doc = self._call(
            "list", res, fn, *args, namespace=namespace, retry=True, missing_ok=missing_ok, **kw
        )
        if doc is None:
            return None
        items = doc.get("items") or []
        return self._typed(items if isinstance(items, list) else [], res)

    def get(
        self, res: Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """One object, or None if it does not exist."""
        fn: Any
        args: tuple[Any, ...]
        if not res.stem:
            api = self._custom()
            if namespace:
                fn, args = (
                    api.get_namespaced_custom_object,
                    (res.group, res.version, namespace, res.plural, name),
                )
            else:
                fn, args = api.get_cluster_custom_object, (res.group, res.version, res.plural, name)
        else:
            api = self._api_for(res.group)
            if res.namespaced:
                fn, args = getattr(api, f"read_namespaced_{res.stem}"), (name, namespace)
            else:
                fn, args = getattr(api, f"read_{res.stem}"), (name,)
        doc = self._call(
            "get", res, fn, *args, name=name, namespace=namespace, retry=True, missing_ok=True
        )
        if doc is not None:
            doc.setdefault("apiVersion", res.api_version)
            doc.setdefault("kind", res.kind)
        return doc

    def create(self, res: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create one object (it must carry the run label); Conflict if it already exists."""
        meta = body.get("metadata") or {}
        _require_run_label(meta, f"create {res.kind}")
        namespace = meta.get("namespace")
        name = meta.get("name")
        api = self._api_for(res.group)
        if not res.namespaced:  # the run's own Namespace (--allow-host-network)
            fn = getattr(api, f"create_{res.stem}")
            doc = self._call("create", res, fn, dict(body), name=name)
            assert doc is not None
            return doc
        fn = getattr(api, f"create_namespaced_{res.stem}")
        doc = self._call("create", res, fn, namespace, dict(body), name=name, namespace=namespace)
        assert doc is not None
        return doc

    def replace(self, res: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace one object this tool made (PUT: its resourceVersion guards the write);
        Conflict if it changed since it was read."""
        meta = body.get("metadata") or {}
        _require_run_label(meta, f"replace {res.kind}")
        namespace = meta.get("namespace")
        name = meta.get("name")
        api = self._api_for(res.group)
        fn = getattr(api, f"replace_namespaced_{res.stem}")
        doc = self._call(
            "replace", res, fn, name, namespace, dict(body), name=name, namespace=namespace
        )
        assert doc is not None
        return doc

    def delete(self, res: Resource, obj: Mapping[str, Any]) -> bool:
        """Delete one object this tool made (it must carry the run label); False if gone."""
        meta = obj.get("metadata") or {}
        _require_run_label(meta, f"delete {res.kind}")
        name = str(meta.get("name"))
        namespace = meta.get("namespace")
        uid = meta.get("uid")
        api = self._api_for(res.group)
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}  # never a same-named object made since
        # the run's own Namespace (--allow-host-network) is cluster-scoped
        fn = getattr(
            api, f"delete_namespaced_{res.stem}" if res.namespaced else f"delete_{res.stem}"
        )
        args = (name, namespace) if res.namespaced else (name,)
        try:
            doc = self._call(
                "delete",
                res,
                fn,
                *args,
                body=body,
                name=name,
                namespace=namespace,
                missing_ok=True,
            )
        except Conflict:
            return False  # the uid precondition failed: that name now belongs to another object
        return doc is not None

    # ------------------------------------------------------------------ exec

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
        shaken = threading.Event()
        finished = threading.Event()
        abandoned = threading.Event()
        box: dict[str, ExecResult] = {}

        def work() -> None:
            try:
                box["result"] = self._exec(
                    namespace, pod, command, stdin, timeout, container, shaken, abandoned
                )
            except Exception as e:  # never let a thread die silently
                box["result"] = ExecResult(
                    stdout="",
                    stderr="",
                    exit_code=None,
                    error=f"exec in pod {namespace}/{pod} failed: {e}",
                )
            finally:
                shaken.set()
                finished.set()

        worker = threading.Thread(target=work, name=f"exec {namespace}/{pod}", daemon=True)
        worker.start()
        if not shaken.wait(handshake_timeout):
            abandoned.set()
            return ExecResult(
                stdout="",
                stderr="",
                exit_code=None,
                error=(
                    f"exec in pod {namespace}/{pod}: the API server did not complete the exec "
                    f"handshake within {handshake_timeout:g} s (its connection to the kubelet "
                    f"of the pod's node hangs; on AKS check the konnectivity-agent pods in "
                    f"kube-system)"
                ),
            )
        if not finished.wait(timeout + EXEC_CLOSE_SLACK):
            abandoned.set()
            return ExecResult(
                stdout="",
                stderr="",
                exit_code=None,
                error=(
                    f"exec in pod {namespace}/{pod}: the connection gave no end within "
                    f"{timeout + EXEC_CLOSE_SLACK:g} s (the command's limit plus "
                    f"{EXEC_CLOSE_SLACK:g} s to close)"
                ),
            )
        return box["result"]

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
                with _closing(ws):
                    if abandoned.is_set():  # the caller gave up on the handshake
                        return ExecResult(stdout="", stderr="", exit_code=None, error="abandoned")
                    return self._drive(ws, stdin, timeout)
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

    @staticmethod
    def _drive(ws: Any, stdin: str, timeout: float) -> ExecResult:
        broke: str | None = None
        deadline = time.monotonic() + timeout
        try:
            ws.write_stdin(stdin)
            if getattr(ws, "subprotocol", None) == V5_CHANNEL_PROTOCOL and hasattr(
                ws, "close_channel"
            ):
                ws.close_channel(
                    0
                )  # v5 can say "stdin is over"; v4 cannot (the command reads one line)
            while ws.is_open():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                ws.update(timeout=min(remaining, 1.0))
        except Exception as e:  # the connection broke: keep whatever output arrived
            broke = f"the exec connection broke: {e}"
        finished = broke is None and not ws.is_open()
        stdout = _read_channel(ws, STDOUT_CHANNEL)
        stderr = _read_channel(ws, STDERR_CHANNEL)
        status_text = _read_channel(ws, ERROR_CHANNEL)
        if broke is None and not finished:
            broke = f"the command did not finish within {timeout:g} s"
        code = exit_code_of(status_text) if finished else None
        message = status_message_of(status_text)
        if code is None and message is not None:
            # a Failure without an exit code: the command never ran (e.g. no such executable);
            # the server then closes at once, so feeding stdin may have broken the socket too
            broke = f"the exec failed: {message}"
        return ExecResult(
            stdout=stdout,
            stderr=stderr,
            exit_code=code,
            error=broke,
            message=message,
        )


def _read_channel(ws: Any, channel: int) -> str:
    try:
        return str(ws.read_channel(channel, timeout=0) or "")
    except Exception:  # a broken socket: nothing more to read
        return ""


@contextmanager
def _closing(ws: Any) -> Iterator[Any]:
    try:
        yield ws
    finally:
        ws.close()


def exit_code_of(status_text: str) -> int | None:
    """The exit code an exec's error channel reports (a v1 Status), None if it says nothing."""
    if not status_text.strip():
        return None
    try:
        status = json.loads(status_text)
    except ValueError:
        return None
    if not isinstance(status, dict):
        return None
    if status.get("status") == "Success":
        return 0
    details = status.get("details") if isinstance(status.get("details"), dict) else {}
    assert isinstance(details, dict)
    for cause in details.get("causes") or ():
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", ""))
            except ValueError:
                return None
    return None


def status_message_of(status_text: str) -> str | None:
    """What a failed exec's Status (its error channel) says, None on success or silence."""
    try:
        status = json.loads(status_text) if status_text.strip() else None
    except ValueError:
        return status_text.strip()[:500] or None
    if not isinstance(status, dict) or status.get("status") == "Success":
        return None
    message = status.get("message")
    if isinstance(message, str) and message.strip():
        return message.strip()
    reason = status.get("reason")
    return str(reason) if reason else None


def _require_run_label(meta: Any, what: str) -> None:
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    if not isinstance(labels, Mapping) or not labels.get(RUN_LABEL):
        name = meta.get("name") if isinstance(meta, Mapping) else None
        raise ClusterError(
            f"refusing to {what} {name!r}: it is not labelled {RUN_LABEL} (netparity only "
            f"changes objects it made)"
        )
