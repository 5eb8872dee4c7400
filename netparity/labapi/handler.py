"""The HTTP side: bearer-token authentication, injected faults, routing of
/api and /apis paths to the store's verbs, lists with label selectors, and the exec
upgrade. Anything else is a 404 (an unknown resource) or a 405 (an unknown verb)."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import sys
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from netparity.labapi.rbac import request_verb
from netparity.labapi.watch import list_page, serve_watch
from netparity.labapi.websocket import accept_key, choose_protocol, run_session, send_failure
from netparity.labapi.wire import RESOURCES, selector_matches, status_body

if TYPE_CHECKING:
    from netparity.labapi.server import KubeAPI

Route = tuple[tuple[str, str, str] | None, str, str | None, str | None, dict[str, list[str]]]
REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "AlreadyExists",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def route(path: str) -> Route:
    """(resource key, namespace, name, subresource, query) for a request path."""
    split = urlsplit(path)
    query = parse_qs(split.query)
    parts = [p for p in split.path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None, "", None, None, query
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None, "", None, None, query
    key = (group, version, rest[0])
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return key, namespace, name, sub, query


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def api(self) -> KubeAPI:
        api: KubeAPI = self.server.api
        return api

    def _send(self, code: int, doc: Mapping[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        if not n:
            return {}
        doc = json.loads(self.rfile.read(n))
        return doc if isinstance(doc, dict) else {}

    def _fault(self, method: str) -> bool:
        for f in self.api.faults:
            if f.method == method and f.hits < f.times and re.search(f.pattern, self.path):
                f.hits += 1
                message = f.message or f"injected failure {f.status}"
                reason = REASONS.get(f.status, "Unknown")
                self._send(f.status, status_body(f.status, reason, message))
                return True
        return False

    def _served(self, key: tuple[str, str, str] | None) -> bool:
        if key is None or key not in RESOURCES:
            return False
        return not (key[0] == "cilium.io" and not self.api.cilium_crds)

    def _handle(self, method: str) -> None:
        api = self.api
        api.requests.append((method, self.path))
        scheme, _, credential = str(self.headers.get("Authorization") or "").partition(" ")
        # the scheme is case-insensitive (RFC 9110); the in-cluster loader writes "bearer"
        account = api.authorizer is not None and credential == api.account_token
        if scheme.lower() != "bearer" or not (credential == api.token or account):
            self._send(401, status_body(401, "Unauthorized", "Unauthorized"))
            return
        if self._fault(method):
            return
        key, namespace, name, sub, query = route(self.path)
        if (
            account
            and key is not None
            and not self._authorized(method, key, namespace, name, sub, query)
        ):
            return
        if key is None or not self._served(key):
            message = "the server could not find the requested resource"
            self._send(404, status_body(404, "NotFound", message))
            return
        if sub == "exec" and method == "GET":
            self._exec(namespace, name or "", query)
        elif method == "GET" and name is None:
            self._list(key, namespace, query)
        elif method == "GET" and name is not None:
            self._get(key, namespace, name)
        else:
            self._send(*self._change(method, key[2], namespace, name))

    def _authorized(
        self,
        method: str,
        key: tuple[str, str, str],
        namespace: str,
        name: str | None,
        sub: str | None,
        query: dict[str, list[str]],
    ) -> bool:
        """Does the ServiceAccount's RBAC allow this request? Else a 403 is sent."""
        authorizer = self.api.authorizer
        assert authorizer is not None
        watch = (query.get("watch") or [""])[0] in ("true", "1")
        resource = f"{key[2]}/{sub}" if sub else key[2]
        for verb in request_verb(method, name, sub, watch):
            if not authorizer.allows(verb, key[0], resource, namespace, name or ""):
                doc = authorizer.forbidden(verb, key[0], resource, namespace, name or "")
                print(f"403 {method} {self.path}: {doc['message']}", file=sys.stderr, flush=True)
                self._send(403, doc)
                return False
        return True

    def _change(
        self, method: str, plural: str, namespace: str, name: str | None
    ) -> tuple[int, dict[str, Any]]:
        api, body = self.api, self._body()
        if method == "POST" and name is None:
            return api.do_create(plural, namespace, body)
        if method == "DELETE" and name is not None:
            return api.do_delete(plural, namespace, name, body)
        if method == "PATCH" and name is not None:
            return api.do_patch(plural, namespace, name, body)
        if method == "PUT" and name is not None:
            return api.do_replace(plural, namespace, name, body)
        return 405, status_body(405, "MethodNotAllowed", f"{method} is not supported here")

    def _list(self, key: tuple[str, str, str], namespace: str, query: dict[str, list[str]]) -> None:
        api, plural = self.api, key[2]
        if (query.get("watch") or [""])[0] in ("true", "1"):
            serve_watch(self, plural, namespace, query)
            return
        selector = (query.get("labelSelector") or [""])[0] or None
        with api.lock:
            items = [
                copy.deepcopy(o)
                for (p, ns, _), o in sorted(api.store.items())
                if p == plural
                and (not namespace or ns == namespace)
                and selector_matches(selector, o.get("metadata", {}).get("labels") or {})
            ]
            rv = str(api._rv)
        items, more = list_page(items, query)
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        doc = {
            "kind": f"{RESOURCES[key][0]}List",
            "apiVersion": "/".join(p for p in key[:2] if p),
            "metadata": {"resourceVersion": rv, **more},
            "items": items,
        }
        self._send(200, doc)

    def _get(self, key: tuple[str, str, str], namespace: str, name: str) -> None:
        api, plural = self.api, key[2]
        namespaced = RESOURCES[key][1]
        with api.lock:
            obj = copy.deepcopy(api.store.get((plural, namespace if namespaced else "", name)))
        if obj is None:
            details = {"name": name, "kind": plural}
            self._send(404, status_body(404, "NotFound", f'{plural} "{name}" not found', details))
            return
        self._send(200, obj)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _exec(self, namespace: str, name: str, query: dict[str, list[str]]) -> None:
        api = self.api
        if self.headers.get("Upgrade", "").lower() != "websocket":
            self._send(400, status_body(400, "BadRequest", "Upgrade request required"))
            return
        if api.exec_hang:
            # the API server took the request and never answers: its tunnel to the kubelet hangs
            api._stopping.wait()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        command = query.get("command") or []
        argv = api.exec_argv(namespace, name, command)
        if isinstance(argv, str):
            code = 400 if "not running" in argv or "container" in argv else 404
            self._send(code, status_body(400, "BadRequest", argv))
            return
        proto = choose_protocol(api.exec_protocol, self.headers.get("Sec-WebSocket-Protocol", ""))
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(self.headers["Sec-WebSocket-Key"]))
        if proto:
            self.send_header("Sec-WebSocket-Protocol", proto)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        if command and command[0] in api.exec_missing:
            send_failure(self.connection, missing_executable(command[0]))
            return
        run_session(self.connection, self.rfile, argv, proto)


def missing_executable(executable: str) -> dict[str, Any]:
    """What containerd's kubelet sends when the executable is not in the image."""
    message = (
        "Internal error occurred: error executing command in container: failed to exec "
        "in container: failed to start exec: OCI runtime exec failed: exec failed: "
        f'unable to start container process: exec: "{executable}": executable file not '
        "found in $PATH: unknown"
    )
    return status_body(500, "InternalError", message, {"causes": [{"message": message}]})
