"""API failures as the user reads them: one sentence naming the cluster, verb and resource.

Plain values: nothing here imports `kubernetes` (only `netparity.kube.client` does).
"""

from __future__ import annotations

import json
import re

from netparity.errors import ClusterError
from netparity.kube import RBAC_FILE
from netparity.kube.resources import Resource

# How RBAC words a denial (`User "x" cannot create resource "pods" ...`), unlike an
# admission plugin or webhook that refuses the object itself.
_RBAC_DENIAL = re.compile(r'cannot [a-z]+ resource "')


class Conflict(ClusterError):
    """409: the object already exists."""


class Forbidden(ClusterError):
    """403: RBAC (or an admission plugin) refused the request."""


def status_message(exc: object) -> str:
    """What an API error's Status body says (else its reason)."""
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


def where_of(res: Resource, name: str | None, namespace: str | None) -> str:
    """How a message names the object(s) a request was about."""
    what = res.label if name is None else f"{res.label} {name!r}"
    if namespace:
        what += f" in namespace {namespace}"
    elif res.namespaced and name is None:
        what += " in all namespaces"
    return what


def api_failure(
    *, cluster: str, server: str, verb: str, where: str, status: int, reason: object, message: str
) -> ClusterError:
    """The error for an API server's answer `status` (0: no answer) to `verb` on `where`."""
    if status == 401:
        return ClusterError(
            f"{cluster}: the API server at {server} rejected the credentials "
            f"(401 Unauthorized) when asked to {verb} {where}; refresh them "
            f"(for AKS: az aks get-credentials, kubelogin)"
        )
    if status == 403:
        if _RBAC_DENIAL.search(message) or not message:
            return Forbidden(
                f"{cluster}: not allowed to {verb} {where} (403 Forbidden: {message}); "
                f"grant the verbs listed in {RBAC_FILE}"
            )
        return Forbidden(f"{cluster}: the API server refused to {verb} {where}: {message}")
    if status == 409:
        return Conflict(f"{cluster}: cannot {verb} {where}: it already exists ({message})")
    if status == 0:
        return ClusterError(f"{cluster}: cannot {verb} {where}: {reason}")
    return ClusterError(
        f"{cluster}: the API server failed to {verb} {where} ({status} {reason}: {message})"
    )
