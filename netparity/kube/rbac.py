"""The RBAC a run needs, narrowed: reads cluster-wide, writes only where the plan puts objects.

Granting `pods create` and `pods/exec` cluster-wide reaches kube-system: whoever holds both
can start a pod that mounts a privileged ServiceAccount's token, or exec into a system pod,
which is close to cluster-admin. So the writes are namespaced Roles, one per namespace the
plan places twins or the run's Services in, and the cluster-wide part is read-only.

The rules here are the source of truth; `probes/rbac.yaml` carries the same ClusterRole
(read), the kube-system Role (detect) and the write rules as an unbound ClusterRole (a test
keeps them equal). `netparity rbac` prints them for a cluster or a snapshot file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from netparity.backend import Target
from netparity.engine.dataplane import DETECTIONS
from netparity.errors import InputError
from netparity.kube.layout import plan_layout
from netparity.model.snapshot import Snapshot

READ_ROLE = "netparity-read"
DETECT_ROLE = "netparity-detect"
WRITE_ROLE = "netparity-run"
WRITE_CLUSTER_ROLE = "netparity-write"  # probes/rbac.yaml: the write rules, bound per namespace
HOST_NETWORK_ROLE = "netparity-host-network"  # opt-in: --allow-host-network
KUBE_SYSTEM = "kube-system"
DEFAULT_SUBJECT = "serviceaccount:netparity/netparity"
RBAC_API = "rbac.authorization.k8s.io/v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    names: tuple[str, ...] = ()  # resourceNames
    why: str

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"apiGroups": [self.group], "resources": list(self.resources)}
        if self.names:
            out["resourceNames"] = list(self.names)
        out["verbs"] = list(self.verbs)
        return out


# Cluster-wide, read-only: what the snapshot, the dataplane detection and the cleanup read.
READ_RULES: tuple[Rule, ...] = (
    Rule(
        group="",
        resources=("namespaces", "nodes", "pods", "services"),
        verbs=("list",),
        why="the snapshot; kube-system pods when the dataplane is not a DaemonSet; "
        "twins and the run's Services by the netparity.io/run label (waiting, cleanup)",
    ),
    Rule(
        group="",
        resources=("configmaps",),
        verbs=("list",),
        why="the run anchors by the netparity.io/run label (cleanup of every run)",
    ),
    Rule(
        group="networking.k8s.io",
        resources=("networkpolicies",),
        verbs=("list",),
        why="the snapshot",
    ),
    Rule(
        group="cilium.io",
        resources=("ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies"),
        verbs=("list",),
        why="the snapshot (absent CRDs read as none)",
    ),
    Rule(
        group="policy",
        resources=("poddisruptionbudgets",),
        verbs=("list",),
        why="which twins a PodDisruptionBudget would select",
    ),
    Rule(
        group="cilium.io",
        resources=("ciliumendpoints",),
        verbs=("list",),
        why="settle: a twin is probed once its CiliumEndpoint is ready with an identity",
    ),
    Rule(
        group="coordination.k8s.io",
        resources=("leases",),
        verbs=("list",),
        why="other runs' heartbeats: only runs whose heartbeat is stale are cleaned up",
    ),
    Rule(
        group="apps",
        resources=("deployments", "statefulsets", "daemonsets", "replicasets"),
        verbs=("list",),
        why="the snapshot: workloads without a running pod are probed from their template",
    ),
    Rule(
        group="",
        resources=("replicationcontrollers",),
        verbs=("list",),
        why="the snapshot: workloads without a running pod are probed from their template",
    ),
    Rule(
        group="batch",
        resources=("jobs", "cronjobs"),
        verbs=("list",),
        why="the snapshot: a CronJob between runs is probed from its template",
    ),
    Rule(
        group="discovery.k8s.io",
        resources=("endpointslices",),
        verbs=("list",),
        why="the snapshot: backends of Services without a selector (default/kubernetes)",
    ),
    Rule(
        group="",
        resources=("pods", "services"),
        verbs=("watch",),
        why="waiting for the run's twins and LoadBalancer Services by watch, not by polling",
    ),
    Rule(
        group="cilium.io",
        resources=("ciliumendpoints",),
        verbs=("watch",),
        why="settle: waiting for the twins' CiliumEndpoints by watch, not by polling",
    ),
)


def detect_rules() -> tuple[Rule, ...]:
    """kube-system, named objects only: the DaemonSets of the registered dataplanes
    (engine/dataplane.py, `Detection`) and the enforcement ConfigMaps."""
    daemonsets = tuple(dict.fromkeys(d.daemonset for d in DETECTIONS.values()))
    return (
        Rule(
            group="apps",
            resources=("daemonsets",),
            names=daemonsets,
            verbs=("get",),
            why="which dataplane enforces policy",
        ),
        *_DETECT_MORE,
    )


_DETECT_MORE: tuple[Rule, ...] = (
    Rule(
        group="apps",
        resources=("daemonsets",),
        verbs=("list",),
        why="when neither is found: the DaemonSets seen, shown with the error",
    ),
    Rule(
        group="",
        resources=("configmaps",),
        names=("azure-npm-config", "cilium-config"),
        verbs=("get",),
        why="the enforcement settings (SEMANTICS.md 0.1)",
    ),
)
# As the registry stands when this module is imported (probes/rbac.yaml carries it).
DETECT_RULES: tuple[Rule, ...] = detect_rules()

# Per namespace the plan needs: the run's objects there.
WRITE_RULES: tuple[Rule, ...] = (
    Rule(
        group="",
        resources=("pods",),
        verbs=("get", "create", "delete"),
        why="twins (get: after a retried create)",
    ),
    Rule(
        group="",
        resources=("pods/exec",),
        verbs=("get", "create"),
        why="probing from a twin: `get` for the websocket exec, `create` from Kubernetes 1.35",
    ),
    Rule(
        group="",
        resources=("services",),
        verbs=("get", "create", "delete"),
        why="the run's own Services (get: a LoadBalancer's address, a retried create)",
    ),
    Rule(
        group="",
        resources=("configmaps",),
        verbs=("get", "create", "delete"),
        why="the run anchor, which owns the run's objects and carries the agent",
    ),
    Rule(
        group="",
        resources=("configmaps/finalizers",),
        verbs=("update",),
        why="blockOwnerDeletion on the anchor (OwnerReferencesPermissionEnforcement)",
    ),
    Rule(
        group="coordination.k8s.io",
        resources=("leases",),
        verbs=("get", "create", "update", "delete"),
        why="the run's heartbeat, renewed while it runs",
    ),
)


# Opt-in, cluster-wide (`netparity rbac --allow-host-network`): the run's own namespace for
# its hostNetwork probe pods, created and deleted by the run, and the run's objects in it.
# That namespace does not exist before the run, so no Role can be made for it up front and
# the writes are granted cluster-wide: with `namespaces create` (a namespace at the
# privileged Pod Security level) this amounts to root on the nodes. Bind it only where
# node sources must be observed, only for the run (docs/kubernetes.md).
HOST_NETWORK_RULES: tuple[Rule, ...] = (
    Rule(
        group="",
        resources=("namespaces",),
        verbs=("create", "delete"),
        why="--allow-host-network: the run's own namespace (privileged Pod Security level), "
        "removed at the end like every run object",
    ),
    *(r for r in WRITE_RULES if "services" not in r.resources),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    kind: str  # ServiceAccount | User | Group
    name: str
    namespace: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.kind == "ServiceAccount":
            return {"kind": "ServiceAccount", "name": self.name, "namespace": self.namespace}
        return {"kind": self.kind, "apiGroup": "rbac.authorization.k8s.io", "name": self.name}


def parse_subject(text: str) -> Subject:
    """`serviceaccount:NS/NAME`, `user:NAME` or `group:NAME` (an Entra ID object id)."""
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if sep and rest and kind == "serviceaccount":
        ns, slash, name = rest.partition("/")
        if slash and ns and name:
            return Subject(kind="ServiceAccount", name=name, namespace=ns)
    elif sep and rest and kind in ("user", "group"):
        return Subject(kind=kind.capitalize(), name=rest)
    raise InputError(
        f"{text!r} is not serviceaccount:NAMESPACE/NAME, user:NAME or group:NAME",
        field="--subject",
    )


def plan_namespaces(
    snapshot: Snapshot,
    targets: Sequence[Target],
    *,
    allow_load_balancer: bool = False,
    allow_host_network: bool = False,
) -> list[str]:
    """The namespaces where a run of `targets` creates objects (twins, the run's Services
    and their anchor): the kubernetes backend's own layout, so the two cannot differ. (The
    run's own host namespace of --allow-host-network is not among them: see
    HOST_NETWORK_RULES.)"""
    layout = plan_layout(
        targets,
        run_id="rbac",
        backends_of=snapshot.backends,
        node_named=snapshot.node,
        allow_load_balancer=allow_load_balancer,
        allow_host_network=allow_host_network,
    )
    return layout.namespaces


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = {"app.kubernetes.io/managed-by": "netparity"}
    return meta


def role(kind: str, name: str, rules: Iterable[Rule], namespace: str | None = None) -> Any:
    return {
        "apiVersion": RBAC_API,
        "kind": kind,
        "metadata": _meta(name, namespace),
        "rules": [r.to_json() for r in rules],
    }


def binding(
    kind: str, name: str, role_kind: str, subject: Subject, namespace: str | None = None
) -> Any:
    return {
        "apiVersion": RBAC_API,
        "kind": kind,
        "metadata": _meta(name, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": [subject.to_json()],
    }


def manifests(
    namespaces: Iterable[str], subject: Subject, *, host_network: bool = False
) -> list[dict[str, Any]]:
    """Everything a run needs, narrowed: the subject (a ServiceAccount and its namespace),
    the read-only ClusterRole, the kube-system detection Role, and per namespace a write
    Role, each with its binding; with `host_network` (opt-in) the cluster-wide
    HOST_NETWORK_RULES too. Sorted; the same inputs give the same text."""
    docs: list[dict[str, Any]] = []
    if subject.kind == "ServiceAccount":
        assert subject.namespace is not None
        docs.append(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": subject.namespace}}
        )
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": _meta(subject.name, subject.namespace),
            }
        )
    docs.append(role("ClusterRole", READ_ROLE, READ_RULES))
    docs.append(binding("ClusterRoleBinding", READ_ROLE, "ClusterRole", subject))
    docs.append(role("Role", DETECT_ROLE, detect_rules(), KUBE_SYSTEM))
    docs.append(binding("RoleBinding", DETECT_ROLE, "Role", subject, KUBE_SYSTEM))
    for ns in sorted(set(namespaces)):
        docs.append(role("Role", WRITE_ROLE, WRITE_RULES, ns))
        docs.append(binding("RoleBinding", WRITE_ROLE, "Role", subject, ns))
    if host_network:
        docs.append(role("ClusterRole", HOST_NETWORK_ROLE, HOST_NETWORK_RULES))
        docs.append(binding("ClusterRoleBinding", HOST_NETWORK_ROLE, "ClusterRole", subject))
    return docs


def render_yaml(docs: Sequence[dict[str, Any]], header: Sequence[str] = ()) -> str:
    """A multi-document YAML stream, the header as comments on top."""
    lines = [f"# {h}".rstrip() for h in header]
    body = yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)
    return "\n".join([*lines, body]) if lines else body
