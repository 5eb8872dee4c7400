"""The Kubernetes client: a typed facade that speaks plain wire dicts. With its two halves
`kube/kubeconfig.py` (connecting) and `kube/pod_exec.py` (exec), the only modules that
import `kubernetes`.

Every call goes through the official client's generated methods with
`_preload_content=False`, so objects come back exactly as the API server wrote them
(the same dicts a `kubectl get -o yaml` file holds). API failures become
`ClusterError`s with one sentence naming the verb and the resource.
"""

from __future__ import annotations

import builtins
import json
import math
import time
from collections.abc import Generator, Mapping
from typing import Any

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import watch as _k8s_watch

from netparity.errors import ClusterError
from netparity.kube import RUN_LABEL
from netparity.kube.accounting import RateLimit as RateLimit
from netparity.kube.accounting import RequestCounts as RequestCounts
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
from netparity.kube.exec_channels import exit_code_of as exit_code_of
from netparity.kube.exec_channels import status_message_of as status_message_of
from netparity.kube.kubeconfig import IN_CLUSTER as IN_CLUSTER
from netparity.kube.kubeconfig import api_client_for
from netparity.kube.pod_exec import PodExec
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
_watch_module: Any = _k8s_watch

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


class Kube(PodExec):
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
        api, name = api_client_for(context, kubeconfig=kubeconfig)
        return cls(api, name=name, qps=qps, burst=burst)

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


def _require_run_label(meta: Any, what: str) -> None:
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    if not isinstance(labels, Mapping) or not labels.get(RUN_LABEL):
        name = meta.get("name") if isinstance(meta, Mapping) else None
        raise ClusterError(
            f"refusing to {what} {name!r}: it is not labelled {RUN_LABEL} (netparity only "
            f"changes objects it made)"
        )
