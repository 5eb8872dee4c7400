"""Dataplane profiles: named knobs, each justified by a row of SEMANTICS.md.

A profile says how one enforcement model differs from the Kubernetes API semantics
(`spec`). The engine reads only these knobs, never the profile's name.

Profiles are registered under their name (`register`); the rest of the tree reads the
registry (`DATAPLANES`, `TARGETS`, `older_release`) and never spells a dataplane's name.
The lab registers its renderer under the same name (netparity/lab/dataplanes/registry.py).
"""

from __future__ import annotations

from collections.abc import KeysView, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from netparity.errors import InputError
from netparity.facts.cilium_config import (
    CILIUM_CONFIG,
    DEFAULT_LABEL_FILTER,
    LabelFilter,
    cilium_settings,
)
from netparity.facts.cilium_local_cluster import policy_default_local_cluster
from netparity.model.npmconfig import place_azure_chain_first


class EndPortMode(StrEnum):
    RANGE = "range"  # port..endPort inclusive
    PORT_ONLY = "port-only"  # only `port` matches (Microsoft's guide for Cilium < 1.17)


class NamedPortEgress(StrEnum):
    PER_DESTINATION = "per-destination"  # resolved on each destination pod (spec, NPM)
    CLUSTER_WIDE = "cluster-wide"  # one number cluster-wide or the rule is void (Cilium < 1.20)


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataplane:
    """One enforcement model. Every knob cites the SEMANTICS.md row that justifies it."""

    name: str
    description: str
    # D4a: egress from a pod to its own node never reaches the policy (NPM hooks FORWARD only).
    own_node_egress_bypass: bool
    # D4c: ingress from the pod's own node is always allowed (NPM: OUTPUT; Cilium: allow-localhost).
    own_node_ingress_bypass: bool = True
    # D2: ipBlock / CIDR rules match pod and node addresses (plain IP match) or only outside ones.
    ipblock_matches_cluster: bool = True
    # D1: how port..endPort is honoured.
    end_port: EndPortMode = EndPortMode.RANGE
    end_port_uncertain: bool = False  # D1 [VERIFY] for Cilium 1.16
    # D3: named ports in egress rules; D3b: NPM matches named ports on pods only.
    named_port_egress: NamedPortEgress = NamedPortEgress.PER_DESTINATION
    # D5/D5d/D10: kube-proxy's masquerade mark is accepted before NPM (PlaceAzureChainFirst false).
    masquerade_bypass: bool = False
    # D5/D5d/D10: Services are translated by kube-proxy in the node's iptables, so a pod's
    # packet to a LoadBalancer IP or NodePort (eTP=Cluster) is marked and masqueraded to the
    # translating node's IP when its backend is elsewhere; and that node's filter sees the
    # translated packet with the original source first (cluster-wide ipsets, SEMANTICS 2.1).
    # False: translated at the pod's veth without SNAT (Cilium KPR) or the spec (no SNAT).
    service_nat_in_node: bool = False
    # D5: external NodePort/LB traffic with eTP=Cluster and a remote backend is seen as coming
    # from the receiving node (NPM: its IP; Cilium: remote-node). spec: the client's address.
    snat_to_receiving_node: bool = False
    # D6: Cilium builds identities from filtered labels (None: every label counts). The
    # filter is Cilium's defaults plus cilium-config `labels` (netparity/facts/cilium_config.py).
    label_filter: LabelFilter | None = None
    # D8: SCTP port rules match (NPM Linux) or never (Cilium without enable-sctp).
    sctp_port_rules: bool = True
    # D11: NPM skips policies it cannot translate (IPv6 ipBlock, invalid values): fail-open.
    # D20: exactly what TranslatePolicy rejects (Azure/azure-container-networking npm/pkg/
    # controlplane/translation/translatePolicy.go:575-578, 618-621, 655-678, 233-235;
    # parseSelector.go:80-84, 268-272, 312-319; npm/util/util.go:366-384), see
    # engine/compile.py `_untranslatable` and docs/semantics-notes.md.
    skip_untranslatable: bool = False
    # D19: NPM flattens a namespaceSelector into one selector per value of each multi-value
    # In/NotIn and ORs them (Azure/azure-container-networking npm/pkg/controlplane/
    # translation/parseSelector.go:21-142, flattenNameSpaceSelector and zipMatchExprs), so
    # `NotIn [a, b]` matches every namespace. False: the label-selector meaning (AND).
    ns_selector_flattened: bool = False
    # D23: Cilium translates every spec.ingress/spec.egress rule whatever policyTypes says
    # (cilium/cilium pkg/k8s/network_policy.go, ParseNetworkPolicy: the rule loops never read
    # policyTypes, which only adds the empty default-deny rule), and a direction with rules
    # is enforced. False: policyTypes decides (the spec, NPM's translatePolicy).
    rules_beyond_policy_types: bool = False
    # D14: CiliumNetworkPolicy / CCNP are enforced.
    cilium_policies: bool = False
    # The rows below: docs/semantics-notes.md "Cilium policies as Cilium imports them" (D28).
    # fromRequires/toRequires constrain every fromEndpoints/toEndpoints selector of every rule
    # selecting the endpoint (cilium/cilium pkg/policy/rules.go resolveL4IngressPolicy, 1.17-
    # 1.18); deprecated in 1.17, removed in 1.19 (PR #42615): the CRD then prunes the field.
    cnp_requires: bool = False
    # cilium-config `cluster-name`: the io.cilium.k8s.policy.cluster identity label.
    cilium_cluster_name: str = "default"
    # cilium-config `enable-l7-proxy` (AKS: off unless ACNS FQDN/L7): off refuses a policy with
    # L7 rules (pkg/policy/api/rule_validation.go:181-183) and leaves toFQDNs empty.
    cilium_l7_proxy: bool = False
    # `enable-icmp-rules` (default on): off refuses a policy with `icmps` (:190-192).
    cilium_icmp_rules: bool = True
    # `enable-node-selector-labels` (default off): off refuses fromNodes/toNodes.
    cilium_node_selector_labels: bool = False
    # `enable-host-firewall` (AKS: off, not user-changeable, SEMANTICS 2.2): host policies.
    cilium_host_firewall: bool = False
    # `enable-non-default-deny-policies` (default on): honours `enableDefaultDeny: false`
    # (rule_validation.go:101-119, Rule.Sanitize).
    cilium_non_default_deny: bool = True
    # D18: a namespaceSelector peer made only of NotIn/DoesNotExist (and a podSelector that
    # an empty label set satisfies) also matches what is not a pod: outside addresses, nodes,
    # hostNetwork pods. NPM: parseNSSelector adds the all-namespaces set only to an empty
    # selector (Azure/azure-container-networking npm/pkg/controlplane/translation/
    # parseSelector.go:207-214), so the rule is `! --match-set nslabel-... src`. Cilium
    # <= 1.18: parseNetworkPolicyPeer adds the namespace-exists requirement only to an empty
    # selector (cilium/cilium pkg/k8s/network_policy.go:88-92 at v1.17), and selectors are
    # matched against every identity, reserved and CIDR ones included. Cilium 1.19: with
    # `policy-default-local-cluster` (the chart's default from 1.19) parseNetworkPolicyPeer
    # adds `io.cilium.k8s.policy.cluster=<cluster>` to every peer (network_policy.go,
    # parseNetworkPolicyPeer: `clusterName != cmtypes.PolicyAnyCluster`), a label no reserved
    # or CIDR identity carries: pods only. False: the spec (selectors match pods only).
    negative_ns_selector_non_pods: bool = False
    # D24: Cilium without `enable-sctp` drops every SCTP packet of its endpoints, policy or
    # not: conntrack refuses the protocol (bpf/lib/conntrack.h:786-800 at v1.17.5) and
    # bpf_lxc.c:315-317 drops on that error. Stronger than D8 (sctp_port_rules).
    sctp_dropped: bool = False
    # D25: a pod reaching itself through a Service (ClusterIP, LB IP, its own node's NodePort)
    # is exempt from both policy checks: lb4_local marks the flow `loopback` and SNATs it to
    # IPV4_LOOPBACK (bpf/lib/lb.h:1848-1868 at v1.17.5); handle_ipv4_from_lxc skips egress
    # policy `if (hairpin_flow)` ("When an endpoint connects to itself via service clusterIP,
    # we need to skip the policy enforcement", bpf_lxc.c:969-976) and the ingress side skips
    # it for `ct_state->loopback` (bpf_lxc.c:1947-1967). Settles D10's [VERIFY].
    hairpin_skips_policy: bool = False
    # D22: a Service port without endpoints is rejected, the client sees `refused`: kube-
    # proxy's REJECT; Cilium's `service-no-backend-response: reject` (its default: bpf_lxc.c
    # tail-calls CILIUM_CALL_IPV4_NO_SERVICE on DROP_NO_SERVICE, tail_no_service_ipv4 in
    # bpf/lib/lb.h answers ICMP port unreachable). False (`drop`): dropped, a timeout.
    service_no_backend_reject: bool = True
    # D22: internalTrafficPolicy Local with no endpoint on the client's node: kube-proxy
    # DROPs ("has no local endpoints"); Cilium's local-scope entry has no backend, so lb4_local
    # returns DROP_NO_SERVICE and the no-backend response above applies (a reject).
    itp_no_local_reject: bool = False
    # D22: loadBalancerSourceRanges: kube-proxy checks every client (KUBE-PROXY-FIREWALL in
    # INPUT, FORWARD, OUTPUT); Cilium's KPR only traffic from outside the cluster (lb4_src_range_ok
    # is called in nodeport_lb4, bpf/lib/nodeport.h, never in bpf_lxc or bpf_sock; its docs:
    # "When accessing the service from inside a cluster, the kube-proxy replacement will
    # ignore the field"): pods and nodes reach the LB IP whatever the ranges.
    lb_source_ranges_in_cluster: bool = True
    # D22: Cilium's `enable-svc-source-range-check` (default true): off, no range is checked.
    lb_source_range_check: bool = True
    # D22: internalTrafficPolicy Local also confines a pod's own connections to a LoadBalancer
    # IP or its own node's NodePort. Cilium looks them up in the internal scope (bpf_sock/
    # bpf_lxc call lb4_lookup_service with scope_switch; a NodePort/LB frontend has a second,
    # internal scope when ETP and ITP differ: "Scopes for NodePort and LoadBalancer. Either
    # just external (policies are the same), or both external and internal (when one policy
    # is local)", the agent's k8s Service conversion, SVC_FLAG_TWO_SCOPES), whose backends
    # ITP chooses. kube-proxy sends a pod's LB/NodePort traffic through KUBE-EXT-* to every
    # endpoint (ETP Local "pod traffic for external destinations" short-circuits to the
    # cluster chain; ITP shapes the ClusterIP only).
    itp_external_frontends: bool = False

    def with_config(self, config: Mapping[str, Mapping[str, str]]) -> Dataplane:
        """Apply the cluster's ConfigMaps (SEMANTICS 0.1): azure-npm-config, cilium-config."""
        dp = self
        # D5/D5d/D10: with PlaceAzureChainFirst NPM's jump precedes KUBE-FORWARD, so the
        # masquerade mark no longer skips NPM; kube-proxy's SNAT stays (service_nat_in_node).
        if self.masquerade_bypass and place_azure_chain_first(config):
            dp = replace(dp, masquerade_bypass=False)
        if self.cilium_policies and CILIUM_CONFIG in config:
            cilium = cilium_settings(config)
            if self.label_filter is not None:
                dp = replace(dp, label_filter=cilium.labels)
            if cilium.enable_sctp:
                dp = replace(dp, sctp_port_rules=True, sctp_dropped=False)
            local = policy_default_local_cluster(config)
            if local is not None:  # D18: the cluster's own setting wins over the release's
                dp = replace(dp, negative_ns_selector_non_pods=not local)
            if cilium.host_policed:
                dp = replace(dp, own_node_ingress_bypass=False)
            dp = replace(
                dp,
                cilium_cluster_name=cilium.cluster_name,
                cilium_l7_proxy=cilium.enable_l7_proxy,
                cilium_icmp_rules=cilium.enable_icmp_rules,
                cilium_node_selector_labels=cilium.enable_node_selector_labels,
                cilium_host_firewall=cilium.enable_host_firewall,
                cilium_non_default_deny=cilium.enable_non_default_deny_policies,
                service_no_backend_reject=cilium.service_no_backend_reject,
                itp_no_local_reject=cilium.service_no_backend_reject,
                lb_source_range_check=cilium.svc_source_range_check,
            )
        return dp


# The SEMANTICS.md row each knob stands for (its comment above says more), and the knobs
# that only add a [VERIFY] note, never change a decision.
KNOB_ROWS: Mapping[str, str] = {
    "own_node_egress_bypass": "D4a",
    "own_node_ingress_bypass": "D4c",
    "ipblock_matches_cluster": "D2",
    "end_port": "D1",
    "end_port_uncertain": "D1",
    "named_port_egress": "D3",
    "masquerade_bypass": "D5d",
    "service_nat_in_node": "D5d",
    "snat_to_receiving_node": "D5",
    "label_filter": "D6",
    "sctp_port_rules": "D8",
    "skip_untranslatable": "D11",
    "ns_selector_flattened": "D19",
    "rules_beyond_policy_types": "D23",
    "cilium_policies": "D14",
    "cnp_requires": "D28",
    "cilium_cluster_name": "D28",
    "cilium_l7_proxy": "D28",
    "cilium_icmp_rules": "D28",
    "cilium_node_selector_labels": "D28",
    "cilium_host_firewall": "D28",
    "cilium_non_default_deny": "D28",
    "negative_ns_selector_non_pods": "D18",
    "sctp_dropped": "D24",
    "hairpin_skips_policy": "D25",
    "service_no_backend_reject": "D22",
    "itp_no_local_reject": "D22",
    "lb_source_ranges_in_cluster": "D22",
    "lb_source_range_check": "D22",
    "itp_external_frontends": "D22",
}
NOTE_ONLY_KNOBS = frozenset({"end_port_uncertain"})


SPEC = Dataplane(
    name="spec",
    description="Kubernetes API semantics alone (SEMANTICS section 1)",
    own_node_egress_bypass=True,
)
NPM = Dataplane(
    name="npm",
    description="Azure NPM v2 on Linux, kube-proxy iptables, PlaceAzureChainFirst false",
    own_node_egress_bypass=True,
    masquerade_bypass=True,
    service_nat_in_node=True,
    snat_to_receiving_node=True,
    skip_untranslatable=True,
    ns_selector_flattened=True,
    negative_ns_selector_non_pods=True,
)
CILIUM = Dataplane(
    name="cilium",
    description="Cilium 1.17-1.18 as AKS runs it (KPR, native routing, SNAT LB, SCTP off)",
    own_node_egress_bypass=False,
    ipblock_matches_cluster=False,
    named_port_egress=NamedPortEgress.CLUSTER_WIDE,
    snat_to_receiving_node=True,
    label_filter=DEFAULT_LABEL_FILTER,
    sctp_port_rules=False,
    cilium_policies=True,
    rules_beyond_policy_types=True,
    cnp_requires=True,  # 1.17-1.18 honour fromRequires/toRequires; a 1.19 profile sets False
    negative_ns_selector_non_pods=True,
    sctp_dropped=True,
    hairpin_skips_policy=True,
    itp_no_local_reject=True,
    lb_source_ranges_in_cluster=False,
    itp_external_frontends=True,
)
CILIUM_116 = replace(
    CILIUM,
    name="cilium-1.16",
    description="Cilium 1.16 (AKS on Kubernetes 1.31): endPort not honoured per Microsoft's guide",
    end_port=EndPortMode.PORT_ONLY,
    end_port_uncertain=True,
)
# D18: 1.19's chart turns `policy-default-local-cluster` on [VERIFY that AKS's cilium-config
# carries it]; a cilium-config that sets the key decides under every Cilium profile.
CILIUM_119 = replace(
    CILIUM,
    name="cilium-1.19",
    description="Cilium 1.19: peers select local-cluster pods only (D18); no fromRequires/toRequires",
    negative_ns_selector_non_pods=False,
    cnp_requires=False,  # fromRequires/toRequires removed in 1.19 (cilium/cilium PR #42615)
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Detection:
    """How a live cluster shows that a registered dataplane enforces (kube/detect.py reads
    it): the kube-system DaemonSet that runs it (or its pods, labelled k8s-app=DAEMONSET),
    the container whose image carries the version, and, where one product has several
    registered releases, the (major, minor) versions this profile stands for: since <= v <
    until; `unknown`: it also stands for an image whose version cannot be read."""

    daemonset: str
    container: str
    since: tuple[int, int] | None = None
    until: tuple[int, int] | None = None
    unknown: bool = True  # also stands for an image whose version is unknown

    def covers(self, version: tuple[int, int] | None) -> bool:
        if version is None:
            return self.unknown
        return (self.since is None or version >= self.since) and (
            self.until is None or version < self.until
        )


_PROFILES: dict[str, Dataplane] = {}
_TARGETS: dict[str, Dataplane] = {}
_OLDER: dict[str, str] = {}
_DETECTION: dict[str, Detection] = {}

# Live views of the registry: every registered profile by name, and the names a migration
# can move to (`--target`), in registration order.
DATAPLANES: Mapping[str, Dataplane] = MappingProxyType(_PROFILES)
TARGETS: KeysView[str] = _TARGETS.keys()
# How each detectable profile shows on a live cluster, by name, in registration order.
DETECTIONS: Mapping[str, Detection] = MappingProxyType(_DETECTION)


def register(
    profile: Dataplane,
    *,
    target: bool = False,
    older: str | None = None,
    detection: Detection | None = None,
) -> Dataplane:
    """Register `profile` under its name. `target`: a migration can move to it (`--target`);
    `older`: the registered profile of the older release also worth checking (the planner
    adds its probes, the lint names it where the two differ); `detection`: how a live
    cluster shows it (without one, the Kubernetes backend never detects it)."""
    if profile.name in _PROFILES:
        raise ValueError(f"dataplane {profile.name!r} is already registered")
    _PROFILES[profile.name] = profile
    if target:
        _TARGETS[profile.name] = profile
    if older is not None:
        _OLDER[profile.name] = older
    if detection is not None:
        _DETECTION[profile.name] = detection
    return profile


def unregister(name: str) -> None:
    """Remove a registered profile (tests that register a toy dataplane clean up with it)."""
    _PROFILES.pop(name, None)
    _TARGETS.pop(name, None)
    _OLDER.pop(name, None)
    _DETECTION.pop(name, None)


def older_release(name: str) -> str | None:
    """The older release registered beside target `name`, if it is registered."""
    older = _OLDER.get(name)
    return older if older in _PROFILES else None


# AKS runs NPM as the DaemonSet azure-npm and Cilium as cilium (agent container
# cilium-agent); Cilium before 1.17 does not honour endPort (CILIUM_116).
_NPM_DS = Detection(daemonset="azure-npm", container="azure-npm")
_CILIUM_DS = Detection(daemonset="cilium", container="cilium-agent")
register(SPEC)
register(NPM, detection=_NPM_DS)
# An image whose version cannot be read counts as the newest release AKS runs (`cilium`).
register(
    CILIUM,
    target=True,
    older=CILIUM_116.name,
    detection=replace(_CILIUM_DS, since=(1, 17), until=(1, 19)),
)
register(CILIUM_116, target=True, detection=replace(_CILIUM_DS, until=(1, 17), unknown=False))
register(CILIUM_119, target=True, detection=replace(_CILIUM_DS, since=(1, 19), unknown=False))
# The migration netparity is about: NPM today, the newest Cilium after.
CURRENT = NPM.name
NEWEST_TARGET = CILIUM.name


def target_for(target: str, detected: str | None) -> str:
    """The profile `--target` stands for: the newest target (`cilium`) means the release
    the cluster runs where that is known (`detected`: a registered target the same DaemonSet
    shows, e.g. `cilium-1.19`), else the newest that AKS runs (ISSUES #20). Any other
    target is taken as given."""
    if target != NEWEST_TARGET or detected is None or detected not in _TARGETS:
        return target
    mine, theirs = _DETECTION.get(target), _DETECTION.get(detected)
    if mine is None or theirs is None or mine.daemonset != theirs.daemonset:
        return target
    return detected


def get_dataplane(name: str) -> Dataplane:
    try:
        return DATAPLANES[name]
    except KeyError:
        raise InputError(
            f"unknown dataplane {name!r} (expected one of {', '.join(DATAPLANES)})",
            field="dataplane",
        ) from None
