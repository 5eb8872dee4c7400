"""Cilium as AKS runs it, compiled into one nft table per node (`table ip cilium`).

Configuration modelled (SEMANTICS 0.1 `cilium` row): kube-proxy replacement, native
routing, SNAT load-balancing, no `policy-cidr-match-mode`, and from `kube-system/cilium-config`
(read by `netparity/facts/cilium_config.py`, as the engine reads it): `labels` (the identity
label filter, D6: Cilium's defaults plus the cluster's patterns), `enable-sctp` (D8: SCTP
port rules are compiled only when it is true) and `allow-localhost` (D4c: `policy` puts the
host's traffic to its local pods through their ingress chains).

Service translation (nat chains, before any filtering):
- `lb_pre` (prerouting, dstnat): traffic from a local pod's veth is translated like
  bpf_lxc does, to the Service's first backend cluster-wide, without SNAT (ClusterIP, LB
  IP, NodePort on a local address); other traffic (external hosts, other nodes, pods of
  other nodes) to an LB IP or NodePort takes the external path: eTP=Cluster -> the first
  backend, SNATed to this node's IP only when that backend is on another node (so the
  backend sees `remote-node`), the client IP kept when the backend is local (`world`);
  eTP=Local -> the first backend on this node, client IP kept.
- `lb_out` (output): the node's own traffic to ClusterIP / LB IP / own NodePort.
- `lb_post` (postrouting): the SNAT above, and hairpin (a pod reaching itself through a
  Service) SNATed to Cilium's service loopback address 169.254.42.1.
- `lb_drop_pre` / `lb_drop_out`, before routing (D22): a Service port without a backend is
  rejected with ICMP port unreachable (`service-no-backend-response: reject`, the default;
  `drop` drops); a ClusterIP with internalTrafficPolicy Local and no backend on this node
  likewise, for local pods and the host; outside clients that `loadBalancerSourceRanges`
  leaves out drop (pods and nodes are not checked, as in Cilium's KPR).

Policy (filter chains; they see translated addresses, the original source is the packet's
own since SNAT comes later in postrouting):
- `forward`: replies and related packets pass; a packet from a local pod's veth jumps to
  that pod's `egress_N` chain, a packet to a local pod's veth to its `ingress_N` chain;
- `input`: a local pod's packets to the node itself (D4a) jump to its `egress_N` chain;
- `output`: the node's own packets to a local pod jump to that pod's `ingress_N` chain, where
  Cilium deny rules come first (D26) and then, unless `allow-localhost: policy`, the
  `allow-localhost` rule admits the host (D4c).
- D24: without `enable-sctp` every SCTP packet from or to a local pod drops, before policy.
- D25: a hairpin (a pod reaching itself through a Service) returns from both of its chains.
- D18: a NetworkPolicy peer is one selector matched against every identity: a purely
  negative namespaceSelector also matches `host`, `remote-node` and `world`, unless
  `policy-default-local-cluster` (the 1.19 renderer's default) adds the cluster label.
- D27: egress named ports resolve over pods that are Cilium endpoints (no hostNetwork pods).
Peers are classified by IP at enforcement time: a pod IP is that pod's identity (selectors
match its filtered labels plus its namespace labels), a local address is `host`, another
node's IP is `remote-node`, anything else is `world`, the only class CIDR rules (ipBlock,
toCIDR, toCIDRSet) can match (D2). Each pod chain: deny rules (drop), allow rules
(return), then drop when the pod is isolated in that direction. Every original-direction
packet is checked, not only the first (D7).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from netparity.facts.cilium_config import CiliumSettings
from netparity.lab.dataplanes.cilium_policy import ALL as ALL
from netparity.lab.dataplanes.cilium_policy import ANY_L4 as ANY_L4
from netparity.lab.dataplanes.cilium_policy import CLUSTER_LABEL as CLUSTER_LABEL
from netparity.lab.dataplanes.cilium_policy import HOST as HOST
from netparity.lab.dataplanes.cilium_policy import L3 as L3
from netparity.lab.dataplanes.cilium_policy import L4 as L4
from netparity.lab.dataplanes.cilium_policy import NAMESPACE_LABEL as NAMESPACE_LABEL
from netparity.lab.dataplanes.cilium_policy import (
    NAMESPACE_LABELS_PREFIX as NAMESPACE_LABELS_PREFIX,
)
from netparity.lab.dataplanes.cilium_policy import REMOTE_NODE as REMOTE_NODE
from netparity.lab.dataplanes.cilium_policy import WORLD as WORLD
from netparity.lab.dataplanes.cilium_policy import Compiler as Compiler
from netparity.lab.dataplanes.cilium_policy import Endpoint as Endpoint
from netparity.lab.dataplanes.cilium_policy import PodRules as PodRules
from netparity.lab.dataplanes.iptables import Table, render_tables
from netparity.lab.dataplanes.registry import register
from netparity.lab.dataplanes.services import (
    ServicePortRoute,
    node_ips,
    pod_ips,
    service_routes,
)
from netparity.lab.topology import LabNode, LabPod, LabTopology, NodeRules

TABLE = "cilium"
SNAT_MARK = 0x00100000  # "SNAT this to the node IP" between lb_pre and lb_post
SERVICE_LOOPBACK = "169.254.42.1"  # Cilium's IPV4_LOOPBACK for hairpin Service traffic

# On an NPM node, nothing of Cilium; on a Cilium node, the iptables tables NPM and
# kube-proxy used are emptied so that `lab upgrade` leaves no trace of them.
RESET_IPTABLES = render_tables(Table("mangle"), Table("nat"), Table("filter"))


def _set(name: str, kind: str, elements: Sequence[str], *, interval: bool = False) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if interval:
        lines.append("\t\tflags interval")
    if elements:
        lines.append("\t\telements = { " + ", ".join(elements) + " }")
    lines.append("\t}")
    return lines


def _chain(name: str, body: Sequence[str], hook: str | None = None) -> list[str]:
    lines = [f"\tchain {name} {{"]
    if hook:
        lines.append(f"\t\t{hook}")
    lines += [f"\t\t{b}" for b in body]
    lines.append("\t}")
    return lines


def _vmap(key: str, entries: Sequence[tuple[str, str]]) -> str | None:
    if not entries:
        return None
    first: dict[str, str] = {}
    for k, v in entries:
        first.setdefault(k, v)  # an address, protocol and port served twice: the first wins
    return f"{key} vmap {{ " + ", ".join(f"{k} : {v}" for k, v in first.items()) + " }"


def _lb_chains(
    node: LabNode,
    routes: Sequence[ServicePortRoute],
    local_veths: Sequence[str],
    settings: CiliumSettings,
) -> tuple[list[str], list[str], list[str]]:
    """Service NAT for one node: (nft chain lines, lb_post rules, notes)."""
    from_pods: list[tuple[str, str]] = []  # ip . proto . port -> jump
    from_pods_np: list[tuple[str, str]] = []  # proto . port -> jump (local address)
    outside: list[tuple[str, str]] = []
    outside_np: list[tuple[str, str]] = []
    host: list[tuple[str, str]] = []
    drop_any: list[str] = []  # ip . proto . port
    drop_any_np: list[str] = []  # proto . port
    drop_outside: list[str] = []
    drop_outside_np: list[str] = []
    reject_local: list[str] = []  # ip . proto . port: from local pods and the host (ITP Local)
    ranged: list[str] = []  # outside clients outside loadBalancerSourceRanges (D22)
    chains: list[str] = []
    notes: list[str] = []
    for i, r in enumerate(routes):
        proto = r.protocol.lower()
        port = r.port.port
        if r.backend is None:
            if r.cluster_ip:
                drop_any.append(f"{r.cluster_ip} . {proto} . {port}")
            drop_any += [f"{ip} . {proto} . {port}" for ip in r.lb_ips]
            if r.node_port is not None:
                drop_any_np.append(f"{proto} . {r.node_port}")
            notes.append(f"{r.name}/{r.protocol} has no endpoints: {_no_backend(settings)}")
            continue
        be = f"svc_{i}"
        chains += _chain(
            be, [f'meta l4proto {proto} dnat to {r.backend.endpoint} comment "{r.name}"']
        )
        if r.cluster_ip:
            key = f"{r.cluster_ip} . {proto} . {port}"
            internal = _internal(r, node, be, chains, reject_local, notes, settings)
            if internal is not None:
                from_pods.append((key, f"jump {internal}"))
                host.append((key, f"jump {internal}"))
            drop_outside.append(key)  # Cilium serves ClusterIPs to pods and the host only
        if not r.external:
            continue
        for ip in r.lb_ips:
            from_pods.append((f"{ip} . {proto} . {port}", f"jump {be}"))
            host.append((f"{ip} . {proto} . {port}", f"jump {be}"))
        if r.node_port is not None:
            from_pods_np.append((f"{proto} . {r.node_port}", f"jump {be}"))
            host.append((f"{node.ip} . {proto} . {r.node_port}", f"jump {be}"))
        target = r.local_backend(node.name) if r.external_local else r.backend
        if target is None:
            drop_outside += [f"{ip} . {proto} . {port}" for ip in r.lb_ips]
            if r.node_port is not None:
                drop_outside_np.append(f"{proto} . {r.node_port}")
            continue
        ranged += _source_ranges(r, settings)
        ext = f"ext_{i}"
        snat = not r.external_local and target.node != node.name
        mark = f"meta mark set meta mark | 0x{SNAT_MARK:08x} " if snat else ""
        chains += _chain(
            ext,
            [f'meta l4proto {proto} {mark}dnat to {target.endpoint} comment "{r.name} external"'],
        )
        outside += [(f"{ip} . {proto} . {port}", f"jump {ext}") for ip in r.lb_ips]
        if r.node_port is not None:
            outside_np.append((f"{proto} . {r.node_port}", f"jump {ext}"))

    svc_key = "ip daddr . meta l4proto . th dport"
    np_key = "fib daddr type local meta l4proto . th dport"
    lines: list[str] = []
    from_local = "iifname @local_veths" if local_veths else None
    not_local = "iifname != @local_veths " if local_veths else ""

    # D22: a Service port without endpoints: Cilium answers ICMP port unreachable
    # (`service-no-backend-response: reject`, the default) or drops (`drop`)
    verdict = _NO_BACKEND_VERDICT if settings.service_no_backend_reject else "drop"
    drops = [f"{svc_key} {{ {', '.join(dict.fromkeys(drop_any))} }} {verdict}"] if drop_any else []
    drops += (
        [f"{np_key} {{ {', '.join(dict.fromkeys(drop_any_np))} }} {verdict}"] if drop_any_np else []
    )
    if reject_local:
        keys = ", ".join(dict.fromkeys(reject_local))
        drops.append(f"{svc_key} {{ {keys} }} {verdict}")
    out_drops = list(drops)
    if reject_local and local_veths:
        drops[-1] = f"iifname @local_veths {drops[-1]}"
    elif reject_local:
        drops.pop()  # no local pod: nothing but the host reaches it here
    drops += [f"{not_local}{r}" for r in ranged]
    if drop_outside:
        drops.append(f"{not_local}{svc_key} {{ {', '.join(dict.fromkeys(drop_outside))} }} drop")
    if drop_outside_np:
        drops.append(f"{not_local}{np_key} {{ {', '.join(dict.fromkeys(drop_outside_np))} }} drop")
    lines += _chain(
        "lb_drop_pre", drops, "type filter hook prerouting priority mangle; policy accept;"
    )
    lines += _chain(
        "lb_drop_out",
        [d.replace(np_key, f"ip daddr {node.ip} meta l4proto . th dport") for d in out_drops],
        "type filter hook output priority mangle; policy accept;",
    )
    pre: list[str] = []
    if from_local:
        pre.append(f"{from_local} jump lb_from_pods")
    pre.append("jump lb_from_outside")
    lines += _chain("lb_pre", pre, "type nat hook prerouting priority dstnat; policy accept;")
    lines += _chain(
        "lb_from_pods", [x for x in (_vmap(svc_key, from_pods), _vmap(np_key, from_pods_np)) if x]
    )
    lines += _chain(
        "lb_from_outside", [x for x in (_vmap(svc_key, outside), _vmap(np_key, outside_np)) if x]
    )
    lines += _chain(
        "lb_out",
        [x for x in (_vmap(svc_key, host),) if x],
        "type nat hook output priority -100; policy accept;",
    )
    post = [
        f"meta mark & 0x{SNAT_MARK:08x} == 0x{SNAT_MARK:08x} snat to {node.ip} "
        'comment "external traffic to a backend on another node"'
    ]
    lines += chains
    return lines, post, notes


# Cilium's answer to a Service port without a backend (tail_no_service_ipv4, bpf/lib/lb.h):
# ICMP destination unreachable, port unreachable, which a TCP or UDP client sees as refused.
_NO_BACKEND_VERDICT = "reject with icmp type port-unreachable"


def _no_backend(settings: CiliumSettings) -> str:
    return "rejected" if settings.service_no_backend_reject else "dropped"


def _internal(
    r: ServicePortRoute,
    node: LabNode,
    chain: str,
    chains: list[str],
    reject_local: list[str],
    notes: list[str],
    settings: CiliumSettings,
) -> str | None:
    """The chain a local pod's or the host's packet to the ClusterIP of `r` jumps to: `chain`
    (every backend) or, with internalTrafficPolicy Local, one to this node's backend. D22:
    Cilium keeps the local-scope backends apart (SVC_FLAG_INT_LOCAL_SCOPE, bpf/lib/lb.h);
    with none on this node lb4_local finds no backend and the no-backend response applies
    (DROP_NO_SERVICE -> CILIUM_CALL_IPV4_NO_SERVICE in bpf_lxc.c). None: rejected here."""
    if r.service.internal_traffic_policy != "Local":
        return chain
    local = r.local_backend(node.name)
    if local is None:
        reject_local.append(f"{r.cluster_ip} . {r.protocol.lower()} . {r.port.port}")
        notes.append(
            f"{r.name}/{r.protocol}: internalTrafficPolicy Local, no endpoint on {node.name}: "
            + _no_backend(settings)
        )
        return None
    name = f"{chain}_local"
    chains += _chain(
        name,
        [
            f"meta l4proto {r.protocol.lower()} dnat to {local.endpoint} "
            f'comment "{r.name} internalTrafficPolicy Local"'
        ],
    )
    return name


def _source_ranges(r: ServicePortRoute, settings: CiliumSettings) -> list[str]:
    """D22: the drop of outside clients that `loadBalancerSourceRanges` leaves out. Cilium
    checks them only where traffic from outside meets the LB IP (nodeport_lb4 calls
    lb4_src_range_ok, bpf/lib/nodeport.h); pods and nodes translate the LB IP at their own
    veth or socket, unchecked. `enable-svc-source-range-check: false` checks nothing."""
    given = r.service.load_balancer_source_ranges
    if not r.lb_ips or not given or not settings.svc_source_range_check:
        return []
    ranges = _ipv4_ranges(given)
    keys = ", ".join(f"{ip} . {r.protocol.lower()} . {r.port.port}" for ip in r.lb_ips)
    allowed = f"ip saddr != {{ {', '.join(ranges)} }} " if ranges else ""
    return [
        f"ip daddr . meta l4proto . th dport {{ {keys} }} {allowed}drop "
        f'comment "{r.name} loadBalancerSourceRanges"'
    ]


def _ipv4_ranges(ranges: Sequence[str]) -> list[str]:
    out: list[str] = []
    for text in ranges:
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network):
            out.append(str(net))
    return out


def render_node(compiler: Compiler, node: LabNode, routes: Sequence[ServicePortRoute]) -> str:
    topo = compiler.topology
    local: list[tuple[LabPod, Endpoint]] = []
    for lp in topo.pods_on(node.name):
        ep = compiler.by_key.get(lp.key)
        if lp.host_network or not lp.host_ifname or ep is None:
            continue
        local.append((lp, ep))
    remote = [ip for ip in node_ips(topo) if ip != node.ip]
    veths = sorted(f'"{lp.host_ifname}"' for lp, _ in local)

    body: list[str] = []
    notes: list[str] = []
    body += _set("pods", "ipv4_addr", list(pod_ips(topo)))
    body += _set("nodes", "ipv4_addr", list(node_ips(topo)))
    body += _set("remote_nodes", "ipv4_addr", remote)
    body += _set("local_veths", "ifname", veths)

    lb_lines, post, lb_notes = _lb_chains(node, routes, veths, compiler.settings)
    notes += lb_notes
    for lp, ep in local:
        post.append(
            f'oifname "{lp.host_ifname}" ip saddr {ep.ip} snat to {SERVICE_LOOPBACK} '
            f'comment "hairpin {ep.pod.key}"'
        )
    body += lb_lines
    body += _chain("lb_post", post, "type nat hook postrouting priority srcnat; policy accept;")

    egress_jumps: list[tuple[str, str]] = []
    ingress_jumps: list[tuple[str, str]] = []
    host_jumps: list[tuple[str, str]] = []  # the node's own packets to a local pod (D4c)
    pod_chains: list[str] = []
    for n, (lp, ep) in enumerate(local):
        ing, egr = compiler.pod_rules(ep, has_remote_nodes=bool(remote))
        notes += [f"{ep.pod.key}: {x}" for x in (*ing.notes, *egr.notes)]
        if egr.needed:
            name = f"egress_{n}"
            # D25: a pod reaches its own address only through a Service translated back to
            # it (its own address never leaves its netns otherwise): bpf_lxc skips egress
            # policy on such a hairpin flow, deny rules included.
            body_lines = [
                f'ip daddr {ep.ip} ct status dnat return comment "hairpin through a Service (D25)"',
                *egr.deny,
                *egr.allow,
            ]
            if egr.isolated:
                body_lines.append(f'drop comment "{ep.pod.key} egress isolated"')
            else:
                body_lines.append("return")
            pod_chains += [f"\t# egress of {ep.pod.key}", *_chain(name, body_lines)]
            egress_jumps.append((f'"{lp.host_ifname}"', f"jump {name}"))
        if ing.needed:
            name = f"ingress_{n}"
            body_lines = [f'ip saddr {ep.ip} return comment "hairpin through a Service (loopback)"']
            body_lines += ing.deny
            if not compiler.settings.host_policed:
                body_lines.append('fib saddr type local return comment "allow-localhost"')
            body_lines += ing.allow
            if ing.isolated:
                body_lines.append(f'drop comment "{ep.pod.key} ingress isolated"')
            else:
                body_lines.append("return")
            pod_chains += [f"\t# ingress of {ep.pod.key}", *_chain(name, body_lines)]
            ingress_jumps.append((f'"{lp.host_ifname}"', f"jump {name}"))
            host_jumps.append((ep.ip, f"jump {name}"))

    replies = ["ct state related accept", "ct direction reply accept"]
    # D24: without enable-sctp, conntrack refuses SCTP and bpf_lxc drops the packet, in
    # either direction and before any policy (bpf/lib/conntrack.h:786-800, bpf_lxc.c:315-317
    # at v1.17.5). The lab's kernel has no SCTP, so this is checked on the rules, not packets.
    sctp: list[str] = []
    if not compiler.settings.enable_sctp and veths:
        sctp = [
            'iifname @local_veths meta l4proto sctp drop comment "SCTP disabled (D24)"',
            'oifname @local_veths meta l4proto sctp drop comment "SCTP disabled (D24)"',
        ]
    forward = [*sctp, *replies]
    forward += [x for x in (_vmap("iifname", egress_jumps), _vmap("oifname", ingress_jumps)) if x]
    body += _chain("forward", forward, "type filter hook forward priority filter; policy accept;")
    inp = [*sctp[:1], *replies]
    inp += [x for x in (_vmap("iifname", egress_jumps),) if x]
    body += _chain("input", inp, "type filter hook input priority filter; policy accept;")
    # The node's own packets to a local pod go through the pod's ingress chain: its deny
    # rules first (D26: a deny beats allow-localhost, pkg/policy/mapstate.go:741-750 at
    # v1.17.5), then allow-localhost unless `allow-localhost: policy` (D4c).
    out = [*sctp[1:], *replies]
    out += [x for x in (_vmap("ip daddr", host_jumps),) if x]
    body += _chain("output", out, "type filter hook output priority filter; policy accept;")
    body += pod_chains

    notes += [
        f"skipped {cp.kind} {cp.key}: nodeSelector (host firewall) is not modelled"
        for cp in topo.snapshot.cilium_policies
        if cp.node_selector is not None
    ]
    head = [f"# Cilium dataplane ({topo.dataplane}) for node {node.name} ({node.ip})"]
    head += [f"# {n}" for n in notes]
    head += [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    return "\n".join([*head, *body, "}"]) + "\n"


def render(
    topology: LabTopology, *, honour_end_port: bool, local_cluster: bool = False
) -> dict[str, NodeRules]:
    compiler = Compiler(topology, honour_end_port=honour_end_port, local_cluster=local_cluster)
    routes = service_routes(topology)
    return {
        node.name: NodeRules(
            ipset="", iptables=RESET_IPTABLES, nft=render_node(compiler, node, routes)
        )
        for node in topology.nodes
    }


def render_newest(topology: LabTopology) -> dict[str, NodeRules]:
    """Cilium 1.17-1.18: port..endPort honoured."""
    return render(topology, honour_end_port=True)


def render_1_19(topology: LabTopology) -> dict[str, NodeRules]:
    """Cilium 1.19: `policy-default-local-cluster` on by default (D18)."""
    return render(topology, honour_end_port=True, local_cluster=True)


def render_1_16(topology: LabTopology) -> dict[str, NodeRules]:
    """Cilium 1.16 as Microsoft's guide describes it: only `port` of a range matches (D1)."""
    return render(topology, honour_end_port=False)


register("cilium", render_newest)
register("cilium-1.16", render_1_16)
register("cilium-1.19", render_1_19)
