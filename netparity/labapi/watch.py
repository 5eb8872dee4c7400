"""Paged lists (`limit`/`continue`) and watches (`?watch=true`) as the API server serves
them: the list's page and what is left; a watch's events (ADDED, MODIFIED, DELETED) for the
matching objects past the resourceVersion asked from, streamed as JSON lines in chunks
until `timeoutSeconds` or the server stops."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from netparity.labapi.wire import selector_matches

if TYPE_CHECKING:
    from netparity.labapi.handler import Handler

WATCH_POLL = 0.02  # seconds between the watch's looks at the store


def list_page(
    items: list[dict[str, Any]], query: Mapping[str, list[str]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`limit`/`continue` as the API server pages a list: the page, and the list metadata
    that says what is left (the token is the offset of the next page)."""
    limit = int((query.get("limit") or ["0"])[0] or 0)
    start = int((query.get("continue") or ["0"])[0] or 0)
    if limit <= 0:
        return items[start:], {}
    page = items[start : start + limit]
    left = len(items) - start - len(page)
    if left <= 0:
        return page, {}
    return page, {"continue": str(start + limit), "remainingItemCount": left}


def _matching(
    handler: Handler, plural: str, namespace: str, selector: str | None
) -> dict[tuple[str, str], dict[str, Any]]:
    api = handler.api
    with api.lock:
        return {
            (ns, nm): copy.deepcopy(o)
            for (p, ns, nm), o in api.store.items()
            if p == plural
            and (not namespace or ns == namespace)
            and selector_matches(selector, o.get("metadata", {}).get("labels") or {})
        }


def _chunk(handler: Handler, kind: str, obj: Mapping[str, Any]) -> None:
    data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
    handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    handler.wfile.flush()


def serve_watch(
    handler: Handler, plural: str, namespace: str, query: Mapping[str, list[str]]
) -> None:
    """A watch request (see the module docstring); found by looking at the store every
    WATCH_POLL seconds."""
    api = handler.api
    selector = (query.get("labelSelector") or [""])[0] or None
    since = int((query.get("resourceVersion") or ["0"])[0] or 0)
    end = time.monotonic() + float((query.get("timeoutSeconds") or ["60"])[0] or 60)
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    seen: dict[tuple[str, str], int] = {}
    try:
        first = True
        while True:
            now = _matching(handler, plural, namespace, selector)
            for key, obj in sorted(now.items()):
                rv = int(obj.get("metadata", {}).get("resourceVersion") or 0)
                if rv > seen.get(key, since if first else 0):
                    _chunk(handler, "MODIFIED" if key in seen or first else "ADDED", obj)
                seen[key] = rv
            for key in [k for k in seen if k not in now]:
                del seen[key]
                _chunk(handler, "DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
            first = False
            if time.monotonic() >= end or api._stopping.is_set():
                break
            time.sleep(WATCH_POLL)
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except OSError:
        pass  # the client went away
    handler.close_connection = True
