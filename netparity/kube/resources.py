"""The resources the Kubernetes backend reads and writes, as the API names them.

Plain values: nothing here imports `kubernetes` (only `netparity.kube.client` does).
"""

from __future__ import annotations

from dataclasses import dataclass


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
