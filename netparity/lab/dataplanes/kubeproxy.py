"""kube-proxy in iptables mode, as it runs on an NPM node: Service NAT with its real chains.

nat PREROUTING/OUTPUT -> KUBE-SERVICES: ClusterIP:port -> KUBE-SVC-* (sources outside the
cluster ranges first get KUBE-MARK-MASQ), LB IP:port -> KUBE-EXT-*, and last
`--dst-type LOCAL -> KUBE-NODEPORTS` (nodePort -> KUBE-EXT-*). KUBE-EXT-* marks for
masquerade (eTP=Cluster) or, for eTP=Local, sends pods' traffic to KUBE-SVC-* and the rest to
KUBE-SVL-* (the receiving node's backend). KUBE-SEP-* marks hairpin traffic, then DNATs.
nat POSTROUTING -> KUBE-POSTROUTING: the 0x4000 mark is SNATed to the node IP. filter
FORWARD starts with KUBE-FORWARD, which accepts marked and RELATED,ESTABLISHED packets:
that is what lets kube-proxy's masquerade bypass NPM (D5, D5d, D10); then KUBE-SERVICES
(NEW), NPM's jump (unless PlaceAzureChainFirst put it first), KUBE-EXTERNAL-SERVICES (NEW).
A Service port with no endpoints at all is REJECTed there, as kube-proxy does (D22).

Lab differences: each Service port has exactly one endpoint (no `statistic` rules), and
outside traffic to an eTP=Local port without a local endpoint is dropped in mangle
PREROUTING (kube-proxy drops it in filter KUBE-EXTERNAL-SERVICES; both are a timeout).
"""

from __future__ import annotations

import base64
import hashlib

from netparity.lab.dataplanes.iptables import IpsetFile, Table, comment
from netparity.lab.dataplanes.services import (
    Backend,
    ServicePortRoute,
    cluster_ranges,
    pod_ranges,
)
from netparity.lab.topology import KUBE_MASQ_MARK, LabNode, LabTopology

MASQ = f"0x{KUBE_MASQ_MARK:x}/0x{KUBE_MASQ_MARK:x}"
CLUSTER_SET = "kube-cluster-ranges"  # pods + nodes: kube-proxy's clusterCIDR
POD_SET = "kube-pod-ranges"  # pods only: the local-traffic detector for eTP=Local
NO_ENDPOINTS = "NETPARITY-NO-ENDPOINTS"
FIREWALL = "KUBE-PROXY-FIREWALL"  # filter: drop LB traffic outside loadBalancerSourceRanges
SERVICES = "KUBE-SERVICES"  # filter: REJECT ClusterIPs without endpoints
EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"  # filter: REJECT LB IPs, nodePorts without them


def _hash(text: str) -> str:
    """kube-proxy's portProtoHash: base32(sha256(text))[:16]."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(route: ServicePortRoute, prefix: str = "KUBE-SVC-") -> str:
    return prefix + _hash(route.name + route.protocol.lower())


def sep_chain(route: ServicePortRoute, backend: Backend) -> str:
    return "KUBE-SEP-" + _hash(route.name + route.protocol.lower() + backend.endpoint)


def _proto(route: ServicePortRoute) -> str:
    p = route.protocol.lower()
    return f"-p {p} -m {p}"


def define_sets(topology: LabTopology, ipsets: IpsetFile) -> None:
    ipsets.define(
        CLUSTER_SET,
        "hash:net",
        [str(n) for n in cluster_ranges(topology)],
        note="kube-proxy clusterCIDR: pod ranges and node IPs",
    )
    ipsets.define(POD_SET, "hash:net", [str(n) for n in pod_ranges(topology)], note="pod ranges")


class NatTable(Table):
    def __init__(self) -> None:
        super().__init__("nat")
        self.rules_chains: set[str] = set()


def _sep(nat: NatTable, route: ServicePortRoute, backend: Backend) -> str:
    name = sep_chain(route, backend)
    if name not in nat.rules_chains:
        nat.rules_chains.add(name)
        nat.add(name, f"-s {backend.ip}/32 {comment(route.name)} -j KUBE-MARK-MASQ")
        nat.add(
            name,
            f"-p {route.protocol.lower()} {comment(route.name)} -m {route.protocol.lower()} "
            f"-j DNAT --to-destination {backend.endpoint}",
        )
    return name


def kube_proxy(
    topology: LabTopology,
    node: LabNode,
    routes: tuple[ServicePortRoute, ...],
    *,
    azure_jump: str | None = None,
    azure_first: bool = False,
) -> tuple[Table, Table, Table]:
    """The mangle, nat and filter tables of kube-proxy on `node`, with NPM's FORWARD jump
    `azure_jump` (if any) where NPM puts it; NPM adds its own chains to filter."""
    mangle, nat, filt = _tables(node)
    for route in routes:
        if route.backend is None:
            _no_endpoints(filt, route)
            continue
        _cluster_ip(nat, filt, route, route.backend, node)
        if route.external:
            _external(mangle, nat, filt, route, node)
    nat.add(
        "KUBE-SERVICES",
        f"{comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')}"
        " -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
    )

    _filter_jumps(filt, azure_jump, azure_first)
    return mangle, nat, filt


def _tables(node: LabNode) -> tuple[Table, NatTable, Table]:
    """kube-proxy's tables with the chains and rules that do not depend on a Service."""
    mangle = Table("mangle")
    nat = NatTable()
    filt = Table("filter")
    filt.chain(FIREWALL)
    filt.chain(SERVICES)
    filt.chain(EXTERNAL_SERVICES)

    # mangle: drop outside traffic to eTP=Local ports without a local endpoint, before routing.
    mangle.add("PREROUTING", f"-m conntrack --ctstate NEW -j {NO_ENDPOINTS}")
    mangle.add("OUTPUT", f"-m conntrack --ctstate NEW -j {NO_ENDPOINTS}")
    mangle.chain(NO_ENDPOINTS)

    nat.add("PREROUTING", f"{comment('kubernetes service portals')} -j KUBE-SERVICES")
    nat.add("OUTPUT", f"{comment('kubernetes service portals')} -j KUBE-SERVICES")
    nat.add("POSTROUTING", f"{comment('kubernetes postrouting rules')} -j KUBE-POSTROUTING")
    nat.chain("KUBE-SERVICES")
    nat.chain("KUBE-NODEPORTS")
    nat.add("KUBE-MARK-MASQ", f"-j MARK --set-xmark {MASQ}")
    nat.add("KUBE-POSTROUTING", f"-m mark ! --mark {MASQ} -j RETURN")
    nat.add("KUBE-POSTROUTING", f"-j MARK --set-xmark 0x{KUBE_MASQ_MARK:x}/0x0")
    # kube-proxy writes MASQUERADE; the lab's host-side veths carry no address, so the
    # source is pinned to the node IP, which is what MASQUERADE picks on an AKS node.
    nat.add(
        "KUBE-POSTROUTING",
        f"{comment('kubernetes service traffic requiring SNAT')} -j SNAT --to-source {node.ip}",
    )

    return mangle, nat, filt


def _no_endpoints(filt: Table, route: ServicePortRoute) -> None:
    sport = route.port.port
    # no endpoints at all: kube-proxy writes no nat rule, only REJECTs in filter
    # (syncProxyRules: internalTrafficFilterTarget = "REJECT", "<svc> has no
    # endpoints"): the ClusterIP in KUBE-SERVICES, LB IPs and the nodePort in
    # KUBE-EXTERNAL-SERVICES. The client sees `refused` (SEMANTICS D22).
    why = comment(route.name + " has no endpoints")
    if route.cluster_ip:
        filt.add(
            SERVICES,
            f"-d {route.cluster_ip}/32 {_proto(route)} --dport {sport} {why} -j REJECT",
        )
    for ip in route.lb_ips:
        filt.add(
            EXTERNAL_SERVICES,
            f"-d {ip}/32 {_proto(route)} --dport {sport} {why} -j REJECT",
        )
    if route.node_port is not None:
        filt.add(
            EXTERNAL_SERVICES,
            f"-m addrtype --dst-type LOCAL {_proto(route)} --dport {route.node_port} "
            f"{why} -j REJECT",
        )


def _cluster_ip(
    nat: NatTable, filt: Table, route: ServicePortRoute, backend: Backend, node: LabNode
) -> None:
    """The Service chain and the ClusterIP's rules (internalTrafficPolicy Local: D22)."""
    proto = route.protocol.lower()
    sport = route.port.port
    svc = svc_chain(route)
    nat.add(svc, f"{comment(route.name)} -j {_sep(nat, route, backend)}")
    internal = svc
    if route.cluster_ip and route.service.internal_traffic_policy == "Local":
        # internalTrafficPolicy Local: the ClusterIP goes to this node's endpoint
        # (KUBE-SVL-*), or is dropped in filter ("has no local endpoints") (D22)
        local = route.local_backend(node.name)
        if local is None:
            filt.add(
                SERVICES,
                f"-d {route.cluster_ip}/32 {_proto(route)} --dport {sport} "
                f"{comment(route.name + ' has no local endpoints')} -j DROP",
            )
            internal = ""
        else:
            internal = svc_chain(route, "KUBE-SVL-")
            nat.add(internal, f"{comment(route.name)} -j {_sep(nat, route, local)}")
    if route.cluster_ip and internal:
        nat.add(
            "KUBE-SERVICES",
            f"-m set ! --match-set {CLUSTER_SET} src -d {route.cluster_ip}/32 -p {proto} "
            f"{comment(route.name + ' cluster IP')} -m {proto} --dport {sport} -j KUBE-MARK-MASQ",
        )
        nat.add(
            "KUBE-SERVICES",
            f"-d {route.cluster_ip}/32 -p {proto} "
            f"{comment(route.name + ' cluster IP')} -m {proto} --dport {sport} -j {internal}",
        )


def _external(
    mangle: Table, nat: NatTable, filt: Table, route: ServicePortRoute, node: LabNode
) -> None:
    """The KUBE-EXT-* chain (externalTrafficPolicy), LoadBalancer IPs and the nodePort."""
    proto = route.protocol.lower()
    sport = route.port.port
    svc = svc_chain(route)
    ext = svc_chain(route, "KUBE-EXT-")
    if route.external_local:
        _external_local(mangle, nat, route, node, ext, svc)
    else:
        nat.add(
            ext,
            f"{comment('masquerade traffic for ' + route.name + ' external destinations')}"
            " -j KUBE-MARK-MASQ",
        )
        nat.add(ext, f"-j {svc}")
    lb_chain = _source_ranges(nat, filt, route, ext)
    for ip in route.lb_ips:
        nat.add(
            "KUBE-SERVICES",
            f"-d {ip}/32 -p {proto} "
            f"{comment(route.name + ' loadbalancer IP')} -m {proto} --dport {sport} "
            f"-j {lb_chain}",
        )
    if route.node_port is not None:
        nat.add(
            "KUBE-NODEPORTS",
            f"-p {proto} {comment(route.name)} -m {proto} --dport {route.node_port} -j {ext}",
        )


def _external_local(
    mangle: Table, nat: NatTable, route: ServicePortRoute, node: LabNode, ext: str, svc: str
) -> None:
    """externalTrafficPolicy Local: this node's endpoint, or outside traffic dropped."""
    sport = route.port.port
    nat.add(
        ext,
        f"-m set --match-set {POD_SET} src "
        f"{comment('pod traffic for ' + route.name + ' external destinations')} -j {svc}",
    )
    nat.add(
        ext,
        f"-m addrtype --src-type LOCAL {comment('masquerade LOCAL traffic for ' + route.name)}"
        " -j KUBE-MARK-MASQ",
    )
    nat.add(
        ext,
        f"-m addrtype --src-type LOCAL {comment('route LOCAL traffic for ' + route.name)} -j {svc}",
    )
    local = route.local_backend(node.name)
    if local is not None:
        svl = svc_chain(route, "KUBE-SVL-")
        nat.add(ext, f"-j {svl}")
        nat.add(svl, f"{comment(route.name)} -j {_sep(nat, route, local)}")
    else:
        why = comment(route.name + " has no local endpoints")
        outside = f"-m set ! --match-set {POD_SET} src -m addrtype ! --src-type LOCAL"
        for ip in route.lb_ips:
            mangle.add(
                NO_ENDPOINTS,
                f"{outside} -d {ip}/32 {_proto(route)} --dport {sport} {why} -j DROP",
            )
        if route.node_port is not None:
            mangle.add(
                NO_ENDPOINTS,
                f"{outside} -m addrtype --dst-type LOCAL {_proto(route)} "
                f"--dport {route.node_port} {why} -j DROP",
            )


def _source_ranges(nat: NatTable, filt: Table, route: ServicePortRoute, ext: str) -> str:
    """The chain LoadBalancer IPs jump to: KUBE-FW-* where loadBalancerSourceRanges are set."""
    sport = route.port.port
    lb_chain = ext
    ranges = route.service.load_balancer_source_ranges
    if route.lb_ips and ranges:
        # loadBalancerSourceRanges (D22): KUBE-FW-* sends the listed sources on, and what
        # it leaves un-DNATed KUBE-PROXY-FIREWALL drops in filter (usesFWChain)
        lb_chain = svc_chain(route, "KUBE-FW-")
        for r in ranges:
            nat.add(
                lb_chain,
                f"-s {r.strip()} {comment(route.name + ' loadbalancer IP')} -j {ext}",
            )
        for ip in route.lb_ips:
            filt.add(
                FIREWALL,
                f"-d {ip}/32 {_proto(route)} --dport {sport} "
                f"{comment(route.name + ' traffic not accepted by ' + lb_chain)} -j DROP",
            )
    return lb_chain


def _filter_jumps(filt: Table, azure_jump: str | None, azure_first: bool) -> None:
    # filter: the jumps syncProxyRules prepends, in the order that leaves (iptablesJumpChains,
    # kubernetes pkg/proxy/iptables/proxier.go): FORWARD: KUBE-FORWARD, KUBE-SERVICES,
    # KUBE-EXTERNAL-SERVICES; INPUT: KUBE-EXTERNAL-SERVICES; OUTPUT: KUBE-SERVICES. NPM's
    # jump goes first (`azure_first`) or right after KUBE-SERVICES (`azure_jump`), as
    # positionAzureChainJumpRule places it (SEMANTICS D21).
    new = "-m conntrack --ctstate NEW"
    if azure_jump is not None and azure_first:
        filt.add("FORWARD", azure_jump)
    firewall = comment("kubernetes load balancer firewall")
    for hook in ("INPUT", "FORWARD", "OUTPUT"):
        filt.add(hook, f"{new} {firewall} -j {FIREWALL}")
    filt.add("FORWARD", f"{comment('kubernetes forwarding rules')} -j KUBE-FORWARD")
    filt.add("FORWARD", f"{new} {comment('kubernetes service portals')} -j {SERVICES}")
    if azure_jump is not None and not azure_first:
        filt.add("FORWARD", azure_jump)
    external = comment("kubernetes externally-visible service portals")
    filt.add("FORWARD", f"{new} {external} -j {EXTERNAL_SERVICES}")
    filt.add("INPUT", f"{new} {external} -j {EXTERNAL_SERVICES}")
    filt.add("OUTPUT", f"{new} {comment('kubernetes service portals')} -j {SERVICES}")
    filt.add("KUBE-FORWARD", "-m conntrack --ctstate INVALID -j DROP")
    filt.add(
        "KUBE-FORWARD",
        f"{comment('kubernetes forwarding rules')} -m mark --mark {MASQ} -j ACCEPT",
    )
    filt.add(
        "KUBE-FORWARD",
        f"{comment('kubernetes forwarding conntrack rule')} "
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    )
