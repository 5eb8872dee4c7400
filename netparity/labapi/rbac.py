"""RBAC for the one ServiceAccount the lab API serves (`probes/rbac.yaml`'s
netparity/netparity): its token is authorized by the Roles, ClusterRoles and their bindings
given as plain RBAC objects (what `netparity rbac` renders); a request outside them gets
403 with the Kubernetes Status body the real API server sends. The server's own token
(the kubeconfig context's) is not checked: it stands for a cluster admin.

The same rules as Kubernetes' RBAC authorizer, for what the lab serves: a ClusterRoleBinding
grants its ClusterRole everywhere, a RoleBinding grants its Role (or a ClusterRole) in its
namespace only; `*` matches any verb, group or resource; resourceNames limit a rule to
named requests (get, update, patch, delete); cluster-scoped resources and requests across
all namespaces need a cluster-wide grant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netparity.labapi.wire import status_body

SERVICE_ACCOUNT = ("netparity", "netparity")  # (namespace, name): probes/rbac.yaml's


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """One rule of a bound role, where it applies (None: cluster-wide)."""

    namespace: str | None
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: frozenset[str]

    def allows(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        if self.namespace is not None and self.namespace != namespace:
            return False
        if not ({verb, "*"} & self.verbs and {group, "*"} & self.groups):
            return False
        if not {resource, "*"} & self.resources:
            return False
        return not self.names or name in self.names


def _rules(role: Mapping[str, Any], namespace: str | None) -> list[Grant]:
    return [
        Grant(
            namespace=namespace,
            groups=frozenset(rule.get("apiGroups") or ()),
            resources=frozenset(rule.get("resources") or ()),
            verbs=frozenset(rule.get("verbs") or ()),
            names=frozenset(rule.get("resourceNames") or ()),
        )
        for rule in role.get("rules") or ()
    ]


def _binds(binding: Mapping[str, Any], namespace: str, name: str) -> bool:
    return any(
        s.get("kind") == "ServiceAccount"
        and s.get("name") == name
        and s.get("namespace", binding.get("metadata", {}).get("namespace")) == namespace
        for s in binding.get("subjects") or ()
    )


class Authorizer:
    """What the ServiceAccount `account` (namespace, name) may do, from RBAC objects."""

    def __init__(
        self, docs: Iterable[Mapping[str, Any]], account: tuple[str, str] = SERVICE_ACCOUNT
    ) -> None:
        self.account = account
        docs = [d for d in docs if isinstance(d, Mapping)]
        roles = {
            (d.get("kind"), d.get("metadata", {}).get("namespace"), d["metadata"]["name"]): d
            for d in docs
            if d.get("kind") in ("Role", "ClusterRole")
        }
        self.grants: list[Grant] = []
        for d in docs:
            kind, meta = d.get("kind"), d.get("metadata", {})
            if kind not in ("RoleBinding", "ClusterRoleBinding") or not _binds(d, *account):
                continue
            ref = d.get("roleRef") or {}
            where = meta.get("namespace") if kind == "RoleBinding" else None
            role_ns = where if ref.get("kind") == "Role" else None
            role = roles.get((ref.get("kind"), role_ns, ref.get("name")))
            if role is not None:
                self.grants.extend(_rules(role, where))

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.account[0]}:{self.account[1]}"

    def allows(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        return any(g.allows(verb, group, resource, namespace, name) for g in self.grants)

    def forbidden(
        self, verb: str, group: str, resource: str, namespace: str, name: str
    ) -> dict[str, Any]:
        """The real API server's 403 Status for this request."""
        plural = resource.split("/")[0]
        what = f'{plural} "{name}"' if name else plural
        where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        message = (
            f'{what} is forbidden: User "{self.user}" cannot {verb} resource "{resource}" '
            f'in API group "{group}" {where}'
        )
        details: dict[str, Any] = {"kind": plural, **({"name": name} if name else {})}
        if group:
            details["group"] = group
        return status_body(403, "Forbidden", message, details)


def request_verb(method: str, name: str | None, sub: str | None, watch: bool) -> list[str]:
    """The RBAC verbs a request needs (a websocket exec: `get`, and `create` as Kubernetes
    1.35 and later check too)."""
    if sub == "exec":
        return ["get", "create"]
    if method == "GET":
        return ["watch" if watch else ("get" if name else "list")]
    if method == "DELETE":
        return ["delete" if name else "deletecollection"]
    return [{"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())]
