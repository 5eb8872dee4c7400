"""The only module that imports `kubernetes`: a typed facade that speaks plain wire dicts.

Every call goes through the official client's generated methods with
`_preload_content=False`, so objects come back exactly as the API server wrote them
(the same dicts a `kubectl get -o yaml` file holds). API failures become
`ClusterError`s with one sentence naming the verb and the resource.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as _k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream as k8s_stream
from kubernetes.watch import watch as _k8s_watch

from netparity.errors import ClusterError
from netparity.kube import RBAC_FILE, RUN_LABEL
from netparity.kube.api_errors import Conflict as Conflict
from netparity.kube.api_errors import Forbidden as Forbidden
from netparity.kube.api_errors import api_failure, status_message, where_of
from netparity.kube.exec_channels import (
    ERROR_CHANNEL as ERROR_CHANNEL,
)
from netparity.kube.exec_channels import (
    EXEC_CLOSE_SLACK as EXEC_CLOSE_SLACK,
)
from netparity.kube.exec_channels import (
    EXEC_HANDSHAKE_TIMEOUT as EXEC_HANDSHAKE_TIMEOUT,
)
from netparity.kube.exec_channels import (
    STDERR_CHANNEL as STDERR_CHANNEL,
)
from netparity.kube.exec_channels import (
    STDOUT_CHANNEL as STDOUT_CHANNEL,
)
from netparity.kube.exec_channels import (
    V5_CHANNEL_PROTOCOL as V5_CHANNEL_PROTOCOL,
)
from netparity.kube.exec_channels import ExecResult as ExecResult
from netparity.kube.exec_channels import closing, drive, run_bounded
from netparity.kube.exec_channels import exit_code_of as exit_code_of
from netparity.kube.exec_channels import status_message_of as status_message_of
from netparity.kube.resources import CILIUM_CLUSTERWIDE_POLICIES as CILIUM_CLUSTERWIDE_POLICIES
from netparity.kube.resources import CILIUM_ENDPOINTS as CILIUM_ENDPOINTS
from netparity.kube.resources import CILIUM_NETWORK_POLICIES as CILIUM_NETWORK_POLICIES
from netparity.kube.resources import CONFIG_MAPS as CONFIG_MAPS
from netparity.kube.resources import DAEMON_SETS as DAEMON_SETS
from netparity.kube.resources import LEASES as LEASES
from netparity.kube.resources import NAMESPACES as NAMESPACES
from netparity.kube.resources import NETWORK_POLICIES as NETWORK_POLICIES
from netparity.kube.resources import NODES as NODES
from netparity.kube.resources import PODS as PODS
from netparity.kube.resources import SERVICES as SERVICES
from netparity.kube.resources import Resource as Resource

# The client is untyped: reach it through Any so that nothing untyped leaks out.
k8s_config: Any = _k8s_config
_watch_module: Any = _k8s_watch

IN_CLUSTER = "in-cluster"
# (connect, read) seconds for one ordinary API request.
REQUEST_TIMEOUT = (10.0, 60.0)
# Reads are retried on these statuses, with these pauses (seconds).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_PAUSES = (0.2, 0.5, 1.0)
# Lists ask for this many objects a page (`limit`/`continue`), as kubectl does: a large
# cluster's pods come in pages the API server can serve from its watch cache.
LIST_PAGE = 500
# A page's continue token expires after a few minutes (410 Gone): the list starts over,
# at most this many times.
LIST_RESTARTS = 2
# The client's own rate bound (--kube-qps): requests a second, with a burst of twice that,
# as client-go's token bucket (its default is 5/10; kubectl's 50/300).
DEFAULT_QPS = 20.0
# The longest one watch request stays open before it is made again (the server may end it
# sooner; the waiter then watches on from the last resourceVersion it saw).
WATCH_SECONDS = 60.0

_API_CLASSES: dict[str, str] = {
    "": "CoreV1Api",
    "networking.k8s.io": "NetworkingV1Api",
    "apps": "AppsV1Api",
    "coordination.k8s.io": "CoordinationV1Api",
}


def _as_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ClusterError(f"the API server answered with {type(value).__name__}, not an object")
    return value


class Gone(ClusterError):
    """410 Gone: a watch's resourceVersion or a list's continue token is too old."""


class RequestCounts:
    """The API requests one client made, by verb and resource (thread-safe): every HTTP
    request counts once (a retry too, each page of a list, one watch however many events it
    brings, one exec however many probes its batch holds)."""

    VERBS = ("get", "list", "watch", "create", "replace", "delete", "exec")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, verb: str, resource: str) -> None:
        with self._lock:
            self._counts[(verb, resource)] += 1

    def counts(self) -> dict[tuple[str, str], int]:
        """(verb, resource plural) -> requests."""
        with self._lock:
            return dict(self._counts)

    def total(self, verb: str | None = None, resource: str | None = None) -> int:
        return sum(
            n
            for (v, r), n in self.counts().items()
            if (verb is None or v == verb) and (resource is None or r == resource)
        )

    def by_verb(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (verb, _), n in self.counts().items():
            out[verb] = out.get(verb, 0) + n
        return {v: out[v] for v in [*self.VERBS, *sorted(set(out) - set(self.VERBS))] if v in out}

    def summary(self) -> str:
        """One line: "57 API requests (list 20, watch 2, create 12, delete 12, exec 3)"."""
        verbs = ", ".join(f"{v} {n}" for v, n in self.by_verb().items())
        return f"{self.total()} API requests" + (f" ({verbs})" if verbs else "")


class RateLimit:
    """A token bucket: `qps` requests a second on average, `burst` at once (client-go's
    flowcontrol limiter). Every request the client makes takes a token first."""

    def __init__(self, qps: float, burst: int | None = None) -> None:
        if not qps > 0:
            raise ValueError(f"queries per second must be positive, got {qps:g}")
        self.qps = qps
        self.burst = burst if burst is not None else max(1, int(qps * 2))
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds requests spent waiting for a token, in all

    def take(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.qps if self._tokens < 0 else 0.0
            self.waited += wait
        if wait > 0:
            time.sleep(wait)


def _kubeconfig_paths(kubeconfig: str | None) -> str:
    if kubeconfig:
        return kubeconfig
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def _kubeconfig_exists(paths: str) -> bool:
    return any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p)


class Kube:
    """One cluster, reached with the official client: plain dicts in, plain dicts out."""

    def __init__(
        self, api_client: Any, *, name: str, qps: float = DEFAULT_QPS, burst: int | None = None
    ) -> None:
        self._api: Any = api_client
        self.name = name
        self.server: str = str(getattr(api_client.configuration, "host", "") or "")
        self._apis: dict[str, Any] = {}
        self.requests = RequestCounts()
        self.limit = RateLimit(qps, burst)

    def _request(self, verb: str, res: Resource) -> None:
        """Before every HTTP request: a token of the rate bound, and the count."""
        self.limit.take()
        self.requests.add(verb, res.plural)

    # ------------------------------------------------------------------ connecting

    @classmethod
    def connect(
        cls,
        context: str | None,
        *,
        kubeconfig: str | None = None,
        qps: float = DEFAULT_QPS,
        burst: int | None = None,
    ) -> Kube:
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
            return cls(k8s.ApiClient(configuration), name=IN_CLUSTER, qps=qps, burst=burst)
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
        return cls(api, name=chosen, qps=qps, burst=burst)

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
        where = where_of(res, name, namespace)
        if isinstance(exc, ApiException):
            return api_failure(
                cluster=self.name,
                server=self.server,
                verb=verb,
                where=where,
                status=int(exc.status or 0),
                reason=exc.reason,
                message=status_message(exc),
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
            self._request(verb, res)
            try:
                resp = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
                data = resp.data
                return _as_dict(json.loads(data) if data else {})
            except ApiException as e:
                status = int(e.status or 0)
                if status == 404 and missing_ok:
                    return None
                if status == 410:
                    raise Gone(
                        f"{self.name}: {verb} {where_of(res, name, namespace)}: "
                        f"{status_message(e) or 'gone'} (410)"
                    ) from None
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
                    f"{self.name}: the answer to {verb} {where_of(res, name, namespace)} "
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

    def _list_fn(self, res: Resource, namespace: str | None) -> tuple[Any, tuple[Any, ...]]:
        """The generated list method for a resource (of a namespace, or of all) and its args."""
        if not res.stem:
            api = self._custom()
            if namespace:
                return (
                    api.list_namespaced_custom_object,
                    (res.group, res.version, namespace, res.plural),
                )
            return api.list_cluster_custom_object, (res.group, res.version, res.plural)
        api = self._api_for(res.group)
        if not res.namespaced:
            return getattr(api, f"list_{res.stem}"), ()
        if namespace:
            return getattr(api, f"list_namespaced_{res.stem}"), (namespace,)
        return getattr(api, f"list_{res.stem}_for_all_namespaces"), ()

    def list(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        missing_ok: bool = False,
        page: int = LIST_PAGE,
    ) -> builtins.list[dict[str, Any]] | None:
        """Every object (of a namespace, or of all), read in pages of `page`; None when
        missing_ok and the API is absent."""
        found = self.list_versioned(
            res,
            namespace=namespace,
            label_selector=label_selector,
            missing_ok=missing_ok,
            page=page,
        )
        return None if found is None else found[0]

    def list_versioned(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        missing_ok: bool = False,
        page: int = LIST_PAGE,
    ) -> tuple[builtins.list[dict[str, Any]], str] | None:
        """As `list`, with the list's resourceVersion (where a watch starts from)."""
        fn, args = self._list_fn(res, namespace)
        restarts = 0
        while True:
            try:
                return self._pages(fn, args, res, namespace, label_selector, missing_ok, page)
            except Gone:
                if restarts >= LIST_RESTARTS:
                    raise
                restarts += 1  # the continue token expired: list again from the start

    def _pages(
        self,
        fn: Any,
        args: tuple[Any, ...],
        res: Resource,
        namespace: str | None,
        label_selector: str | None,
        missing_ok: bool,
        page: int,
    ) -> tuple[builtins.list[dict[str, Any]], str] | None:
        items: builtins.list[Any] = []
        token: str | None = None
        version = ""
        while True:
            kw: dict[str, Any] = {"limit": page} if page > 0 else {}
            if label_selector:
                kw["label_selector"] = label_selector
            if token:
                kw["_continue"] = token
            doc = self._call(
                "list", res, fn, *args, namespace=namespace, retry=True, missing_ok=missing_ok, **kw
            )
            if doc is None:
                return None
            got = doc.get("items") or []
            items.extend(got if isinstance(got, builtins.list) else [])
            meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
            assert isinstance(meta, dict)
            version = version or str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "") or None
            if token is None:
                return self._typed(items, res), version

    def watch(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        resource_version: str | None = None,
        timeout: float = WATCH_SECONDS,
    ) -> Generator[tuple[str, dict[str, Any]], None, None]:
        """One watch request: (ADDED | MODIFIED | DELETED, object) as the API server sends
        them, until it ends the request (at most `timeout` seconds) or the caller stops
        iterating. Gone (410) when `resource_version` is too old: list again."""
        fn, args = self._list_fn(res, namespace)
        kw: dict[str, Any] = {"watch": True, "timeout_seconds": max(1, math.ceil(timeout))}
        if label_selector:
            kw["label_selector"] = label_selector
        if resource_version:
            kw["resource_version"] = resource_version
        self._request("watch", res)
        try:
            resp = fn(
                *args,
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT[0], timeout + REQUEST_TIMEOUT[0]),
                **kw,
            )
        except ApiException as e:
            raise self._fail(e, "watch", res, None, namespace) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise self._fail(e, "watch", res, None, namespace) from None
        try:
            for line in _watch_module.iter_resp_lines(resp):
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind, obj = event.get("type"), event.get("object")
                if not isinstance(obj, dict):
                    continue
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(f"{self.name}: watch {res.plural}: {obj.get('message')}")
                    raise ClusterError(
                        f"{self.name}: watch {where_of(res, None, namespace)} failed: "
                        f"{obj.get('message') or obj}"
                    )
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    obj.setdefault("apiVersion", res.api_version)
                    obj.setdefault("kind", res.kind)
                    yield str(kind), obj
        except (urllib3.exceptions.HTTPError, OSError):
            return  # the connection ended: the caller watches again from what it saw
        finally:
            resp.close()
            resp.release_conn()

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


def _require_run_label(meta: Any, what: str) -> None:
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    if not isinstance(labels, Mapping) or not labels.get(RUN_LABEL):
        name = meta.get("name") if isinstance(meta, Mapping) else None
        raise ClusterError(
            f"refusing to {what} {name!r}: it is not labelled {RUN_LABEL} (netparity only "
            f"changes objects it made)"
        )
