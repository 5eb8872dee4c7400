"""`policy-default-local-cluster` in `kube-system/cilium-config` (SEMANTICS D18).

Cilium 1.18 added the option and 1.19's chart turns it on: NetworkPolicy and
CiliumNetworkPolicy peers then carry an implicit `io.cilium.k8s.policy.cluster=<cluster>`
requirement (cilium/cilium pkg/k8s/network_policy.go, parseNetworkPolicyPeer;
pkg/k8s/apis/cilium.io/utils/utils.go, addClusterFilterByDefault), which no reserved
(`world`, `host`, `remote-node`) or CIDR identity satisfies. Read here, once, for the engine's
profiles and the lab's Cilium renderer.
"""

from __future__ import annotations

from collections.abc import Mapping

from netparity.facts.cilium_config import CILIUM_CONFIG

KEY = "policy-default-local-cluster"
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})  # Go's strconv.ParseBool


def policy_default_local_cluster(config: Mapping[str, Mapping[str, str]]) -> bool | None:
    """The cluster's setting, or None when its cilium-config does not set it (the release's
    default then holds)."""
    data = config.get(CILIUM_CONFIG)
    if data is None or KEY not in data:
        return None
    return data[KEY].strip() in _TRUE
