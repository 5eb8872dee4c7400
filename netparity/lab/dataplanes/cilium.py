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

from collections.abc import Sequence
from dataclasses import dataclass, field

from netparity.lab.dataplanes.cilium_lb import SNAT_MARK as SNAT_MARK
from netparity.lab.dataplanes.cilium_lb import _chain, _lb_chains, _vmap
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


@dataclass(slots=True)
class _PodChains:
    """Every local pod's policy chains and the jumps into them."""

    chains: list[str] = field(default_factory=list)
    egress_jumps: list[tuple[str, str]] = field(default_factory=list)
    ingress_jumps: list[tuple[str, str]] = field(default_factory=list)
    host_jumps: list[tuple[str, str]] = field(default_factory=list)  # own node -> pod (D4c)
    notes: list[str] = field(default_factory=list)


def _pod_chains(
    compiler: Compiler, local: Sequence[tuple[LabPod, Endpoint]], remote: Sequence[str]
) -> _PodChains:
    out = _PodChains()
    for n, (lp, ep) in enumerate(local):
        ing, egr = compiler.pod_rules(ep, has_remote_nodes=bool(remote))
        out.notes += [f"{ep.pod.key}: {x}" for x in (*ing.notes, *egr.notes)]
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
            out.chains += [f"\t# egress of {ep.pod.key}", *_chain(name, body_lines)]
            out.egress_jumps.append((f'"{lp.host_ifname}"', f"jump {name}"))
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
            out.chains += [f"\t# ingress of {ep.pod.key}", *_chain(name, body_lines)]
            out.ingress_jumps.append((f'"{lp.host_ifname}"', f"jump {name}"))
            out.host_jumps.append((ep.ip, f"jump {name}"))

    return out


def _filter_chains(compiler: Compiler, veths: Sequence[str], pods: _PodChains) -> list[str]:
    """forward, input and output: replies, SCTP (D24), and the jumps into the pod chains."""
    body: list[str] = []
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
    forward += [
        x for x in (_vmap("iifname", pods.egress_jumps), _vmap("oifname", pods.ingress_jumps)) if x
    ]
    body += _chain("forward", forward, "type filter hook forward priority filter; policy accept;")
    inp = [*sctp[:1], *replies]
    inp += [x for x in (_vmap("iifname", pods.egress_jumps),) if x]
    body += _chain("input", inp, "type filter hook input priority filter; policy accept;")
    # The node's own packets to a local pod go through the pod's ingress chain: its deny
    # rules first (D26: a deny beats allow-localhost, pkg/policy/mapstate.go:741-750 at
    # v1.17.5), then allow-localhost unless `allow-localhost: policy` (D4c).
    out = [*sctp[1:], *replies]
    out += [x for x in (_vmap("ip daddr", pods.host_jumps),) if x]
    body += _chain("output", out, "type filter hook output priority filter; policy accept;")
    return body


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

    pods = _pod_chains(compiler, local, remote)
    notes += pods.notes
    body += _filter_chains(compiler, veths, pods)
    body += pods.chains

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
