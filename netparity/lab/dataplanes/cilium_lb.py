"""The Cilium lab's Service handling (kube-proxy replacement) for one node: the NAT maps
from pods, from outside and from the host, and the drops and rejects before them (D22: no
backend, internalTrafficPolicy Local, loadBalancerSourceRanges). cilium.py renders the rest
of the node's table around it."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from netparity.facts.cilium_config import CiliumSettings
from netparity.lab.dataplanes.services import ServicePortRoute
from netparity.lab.topology import LabNode

SNAT_MARK = 0x00100000  # "SNAT this to the node IP" between lb_pre and lb_post


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


@dataclass(slots=True)
class _LbMaps:
    """One node's Service NAT as verdict maps and drop sets (`_lb_maps`)."""

    from_pods: list[tuple[str, str]] = field(default_factory=list)  # ip . proto . port -> jump
    from_pods_np: list[tuple[str, str]] = field(default_factory=list)  # proto . port -> jump
    outside: list[tuple[str, str]] = field(default_factory=list)
    outside_np: list[tuple[str, str]] = field(default_factory=list)
    host: list[tuple[str, str]] = field(default_factory=list)
    drop_any: list[str] = field(default_factory=list)  # ip . proto . port
    drop_any_np: list[str] = field(default_factory=list)  # proto . port
    drop_outside: list[str] = field(default_factory=list)
    drop_outside_np: list[str] = field(default_factory=list)
    # ip . proto . port: from local pods and the host (internalTrafficPolicy Local)
    reject_local: list[str] = field(default_factory=list)
    ranged: list[str] = field(default_factory=list)  # outside loadBalancerSourceRanges (D22)
    # from local pods only: LB IPs (ip . proto . port) and own NodePorts (proto . port) that
    # internalTrafficPolicy Local leaves without a backend here (D22)
    reject_pods: list[str] = field(default_factory=list)
    reject_pods_np: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)  # the per-Service dnat chains
    notes: list[str] = field(default_factory=list)


def _lb_maps(
    node: LabNode, routes: Sequence[ServicePortRoute], settings: CiliumSettings
) -> _LbMaps:
    """Where each Service port of `node` goes, from pods, from outside and from the host."""
    m = _LbMaps()
    for i, r in enumerate(routes):
        proto = r.protocol.lower()
        port = r.port.port
        if r.backend is None:
            if r.cluster_ip:
                m.drop_any.append(f"{r.cluster_ip} . {proto} . {port}")
            m.drop_any += [f"{ip} . {proto} . {port}" for ip in r.lb_ips]
            if r.node_port is not None:
                m.drop_any_np.append(f"{proto} . {r.node_port}")
            m.notes.append(f"{r.name}/{r.protocol} has no endpoints: {_no_backend(settings)}")
            continue
        be = f"svc_{i}"
        m.chains += _chain(
            be, [f'meta l4proto {proto} dnat to {r.backend.endpoint} comment "{r.name}"']
        )
        if r.cluster_ip:
            key = f"{r.cluster_ip} . {proto} . {port}"
            internal = _internal(r, node, be, m.chains, m.reject_local, m.notes, settings)
            if internal is not None:
                m.from_pods.append((key, f"jump {internal}"))
                m.host.append((key, f"jump {internal}"))
            m.drop_outside.append(key)  # Cilium serves ClusterIPs to pods and the host only
        if not r.external:
            continue
        pods = _pods_external(r, node, be, m, settings)
        for ip in r.lb_ips:
            if pods is not None:
                m.from_pods.append((f"{ip} . {proto} . {port}", f"jump {pods}"))
            m.host.append((f"{ip} . {proto} . {port}", f"jump {be}"))
        if r.node_port is not None:
            if pods is not None:
                m.from_pods_np.append((f"{proto} . {r.node_port}", f"jump {pods}"))
            m.host.append((f"{node.ip} . {proto} . {r.node_port}", f"jump {be}"))
        target = r.local_backend(node.name) if r.external_local else r.backend
        if target is None:
            m.drop_outside += [f"{ip} . {proto} . {port}" for ip in r.lb_ips]
            if r.node_port is not None:
                m.drop_outside_np.append(f"{proto} . {r.node_port}")
            continue
        m.ranged += _source_ranges(r, settings)
        ext = f"ext_{i}"
        snat = not r.external_local and target.node != node.name
        mark = f"meta mark set meta mark | 0x{SNAT_MARK:08x} " if snat else ""
        m.chains += _chain(
            ext,
            [f'meta l4proto {proto} {mark}dnat to {target.endpoint} comment "{r.name} external"'],
        )
        m.outside += [(f"{ip} . {proto} . {port}", f"jump {ext}") for ip in r.lb_ips]
        if r.node_port is not None:
            m.outside_np.append((f"{proto} . {r.node_port}", f"jump {ext}"))

    return m


def _lb_drops(
    m: _LbMaps, node: LabNode, local_veths: Sequence[str], settings: CiliumSettings
) -> list[str]:
    """The drop and reject chains before NAT (prerouting, and the node's own output)."""
    svc_key = "ip daddr . meta l4proto . th dport"
    np_key = "fib daddr type local meta l4proto . th dport"
    lines: list[str] = []
    not_local = "iifname != @local_veths " if local_veths else ""

    # D22: a Service port without endpoints: Cilium answers ICMP port unreachable
    # (`service-no-backend-response: reject`, the default) or drops (`drop`)
    verdict = _NO_BACKEND_VERDICT if settings.service_no_backend_reject else "drop"
    drops = (
        [f"{svc_key} {{ {', '.join(dict.fromkeys(m.drop_any))} }} {verdict}"] if m.drop_any else []
    )
    drops += (
        [f"{np_key} {{ {', '.join(dict.fromkeys(m.drop_any_np))} }} {verdict}"]
        if m.drop_any_np
        else []
    )
    if m.reject_local:
        keys = ", ".join(dict.fromkeys(m.reject_local))
        drops.append(f"{svc_key} {{ {keys} }} {verdict}")
    out_drops = list(drops)
    if m.reject_local and local_veths:
        drops[-1] = f"iifname @local_veths {drops[-1]}"
    elif m.reject_local:
        drops.pop()  # no local pod: nothing but the host reaches it here
    if m.reject_pods and local_veths:
        keys = ", ".join(dict.fromkeys(m.reject_pods))
        drops.append(f"iifname @local_veths {svc_key} {{ {keys} }} {verdict}")
    if m.reject_pods_np and local_veths:
        keys = ", ".join(dict.fromkeys(m.reject_pods_np))
        drops.append(f"iifname @local_veths {np_key} {{ {keys} }} {verdict}")
    drops += [f"{not_local}{r}" for r in m.ranged]
    if m.drop_outside:
        drops.append(f"{not_local}{svc_key} {{ {', '.join(dict.fromkeys(m.drop_outside))} }} drop")
    if m.drop_outside_np:
        drops.append(
            f"{not_local}{np_key} {{ {', '.join(dict.fromkeys(m.drop_outside_np))} }} drop"
        )
    lines += _chain(
        "lb_drop_pre", drops, "type filter hook prerouting priority mangle; policy accept;"
    )
    lines += _chain(
        "lb_drop_out",
        [d.replace(np_key, f"ip daddr {node.ip} meta l4proto . th dport") for d in out_drops],
        "type filter hook output priority mangle; policy accept;",
    )
    return lines


def _lb_chains(
    node: LabNode,
    routes: Sequence[ServicePortRoute],
    local_veths: Sequence[str],
    settings: CiliumSettings,
) -> tuple[list[str], list[str], list[str]]:
    """Service NAT for one node: (nft chain lines, lb_post rules, notes)."""
    m = _lb_maps(node, routes, settings)
    svc_key = "ip daddr . meta l4proto . th dport"
    np_key = "fib daddr type local meta l4proto . th dport"
    from_local = "iifname @local_veths" if local_veths else None
    lines = _lb_drops(m, node, local_veths, settings)
    pre: list[str] = []
    if from_local:
        pre.append(f"{from_local} jump lb_from_pods")
    pre.append("jump lb_from_outside")
    lines += _chain("lb_pre", pre, "type nat hook prerouting priority dstnat; policy accept;")
    lines += _chain(
        "lb_from_pods",
        [x for x in (_vmap(svc_key, m.from_pods), _vmap(np_key, m.from_pods_np)) if x],
    )
    lines += _chain(
        "lb_from_outside",
        [x for x in (_vmap(svc_key, m.outside), _vmap(np_key, m.outside_np)) if x],
    )
    lines += _chain(
        "lb_out",
        [x for x in (_vmap(svc_key, m.host),) if x],
        "type nat hook output priority -100; policy accept;",
    )
    post = [
        f"meta mark & 0x{SNAT_MARK:08x} == 0x{SNAT_MARK:08x} snat to {node.ip} "
        'comment "external traffic to a backend on another node"'
    ]
    lines += m.chains
    return lines, post, m.notes


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


def _pods_external(
    r: ServicePortRoute, node: LabNode, chain: str, m: _LbMaps, settings: CiliumSettings
) -> str | None:
    """The chain a local pod's packet to an LB IP or this node's NodePort of `r` jumps to.
    D22: Cilium looks a pod's own connection up in the internal scope (bpf_sock/bpf_lxc:
    lb4_lookup_service with scope_switch; the frontend gets a second, internal scope where
    externalTrafficPolicy and internalTrafficPolicy differ, SVC_FLAG_TWO_SCOPES), so
    internalTrafficPolicy Local keeps it on this node's backend, as for the ClusterIP;
    with none here, the no-backend response (None: rejected before NAT)."""
    if r.service.internal_traffic_policy != "Local":
        return chain
    local = r.local_backend(node.name)
    proto = r.protocol.lower()
    if local is None:
        m.reject_pods += [f"{ip} . {proto} . {r.port.port}" for ip in r.lb_ips]
        if r.node_port is not None:
            m.reject_pods_np.append(f"{proto} . {r.node_port}")
        m.notes.append(
            f"{r.name}/{r.protocol}: internalTrafficPolicy Local, no endpoint on {node.name}: "
            f"a local pod's LB IP / NodePort traffic is {_no_backend(settings)}"
        )
        return None
    name = f"{chain}_local"
    if not r.cluster_ip:  # else _internal made it
        m.chains += _chain(
            name,
            [
                f"meta l4proto {proto} dnat to {local.endpoint} "
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
