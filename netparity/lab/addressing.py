"""Lab addressing: which namespace holds which node, pod and external host at which
address, and which ClusterIPs, LoadBalancer IPs and nodePorts the lab's Services get.

Pure and deterministic (same input, same lab): no subprocess, no file, no namespace. The
fabric (`netparity.lab.fabric`) builds what this module plans; import-linter holds it pure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from netparity.errors import InputError
from netparity.lab.apiserver import apiserver_ips, with_apiserver
from netparity.lab.dataplanes.registry import DATAPLANES as DATAPLANES
from netparity.lab.topology import LabHost, LabNode, LabPod, LabTopology
from netparity.model.networkpolicy import IPBlock
from netparity.model.objects import Pod, Service, ServiceType
from netparity.model.snapshot import Snapshot
from netparity.model.traffic import DEFAULT_EXTERNAL_IP

DEFAULT_LAB = "lab"
SERVICE_CIDR = ipaddress.IPv4Network("10.0.0.0/16")
LB_CIDR = ipaddress.IPv4Network("192.0.2.0/24")
NODE_PORT_RANGE = (30000, 32767)
POD_GATEWAY = "169.254.1.1"  # link-local next hop of every pod's default route
_LAB_NAME = re.compile(r"[a-z0-9]{1,8}")
# Never given to an external host: "this" network, loopback, multicast and reserved.
_HARD_AVOID = tuple(
    ipaddress.IPv4Network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/3", f"{POD_GATEWAY}/32")
)


def check_lab_name(name: str) -> str:
    if not isinstance(name, str) or not _LAB_NAME.fullmatch(name):
        raise InputError(
            f"lab name {name!r} must be 1 to 8 lowercase letters or digits", field="--name"
        )
    return name


def check_dataplane(dataplane: str) -> str:
    if dataplane not in DATAPLANES:
        raise InputError(
            f"unknown lab dataplane {dataplane!r} (expected {', '.join(DATAPLANES)})",
            field="--dataplane",
        )
    return dataplane


def netns_prefix(name: str) -> str:
    return f"np-{name}-"


# --------------------------------------------------------------------------- planning

_Net = ipaddress.IPv4Network


def _v4(value: str, *, kind: str, name: str, field: str) -> int:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise InputError(
            f"invalid IP address {value!r}", kind=kind, name=name, field=field
        ) from None
    if addr.version != 4:
        raise InputError(
            f"the lab supports IPv4 only, got {value}", kind=kind, name=name, field=field
        )
    return int(addr)


def _ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def _node_prefix(ips: Sequence[int]) -> int:
    """The longest prefix in 16..24 whose network holds every node (else the common prefix)."""
    for prefix in range(24, 15, -1):
        if len({ip >> (32 - prefix) for ip in ips}) == 1:
            return prefix
    for prefix in range(15, 7, -1):
        if len({ip >> (32 - prefix) for ip in ips}) == 1:
            return prefix
    raise InputError(
        "the nodes' InternalIPs do not share a /8; the lab needs one node subnet", kind="Node"
    )


def _candidates(pool: _Net, used: set[int]) -> Iterator[int]:
    """Addresses of a pool for pods, in order: skips network, broadcast, .1-.3 and used ones."""
    first, last = int(pool.network_address), int(pool.broadcast_address)
    if pool.num_addresses >= 16:
        first, last = first + 4, last - 1
    elif pool.prefixlen <= 30:
        first, last = first + 1, last - 1
    for x in range(first, last + 1):
        if x not in used:
            yield x


def _pick_host(
    cidr: _Net, excepts: Sequence[_Net], soft: Sequence[_Net], used: set[int]
) -> int | None:
    """A usable address in `cidr` outside `excepts` and `used`; if it can, one outside the
    `soft` ranges (service, LB, node and pod ranges) not ending in .0 or .255."""
    first, last = int(cidr.network_address), int(cidr.broadcast_address)
    if cidr.prefixlen <= 30:
        first, last = first + 1, last - 1
    passes = ((*excepts, *_HARD_AVOID, *soft), (*excepts, *_HARD_AVOID))
    for n, avoid in enumerate(passes):
        nice = n == 0 and cidr.prefixlen < 24
        ranges = sorted((int(a.network_address), int(a.broadcast_address)) for a in avoid)
        x = first
        while x <= last:
            for lo, hi in ranges:
                if lo <= x <= hi:
                    x = hi + 1
                    break
            else:
                if x not in used and not (nice and x & 0xFF in (0, 255)):
                    return x
                x += 1
    return None


def policy_blocks(snapshot: Snapshot) -> list[IPBlock]:
    """Every ipBlock of every NetworkPolicy and every CIDR of every Cilium policy, in order."""
    blocks: list[IPBlock] = []
    for np_ in snapshot.network_policies:
        for rule in (*np_.ingress, *np_.egress):
            blocks.extend(peer.ip_block for peer in rule.peers if peer.ip_block is not None)
    for cp in snapshot.cilium_policies:
        for rules in (cp.ingress or (), cp.egress or (), cp.ingress_deny, cp.egress_deny):
            for crule in rules:
                blocks.extend(crule.cidrs)
    return blocks


def _pod_pool(pod: Pod, pod_cidr: _Net | None, node_net: _Net) -> _Net:
    if pod.ip is not None:
        addr = ipaddress.IPv4Address(pod.ip)
        if pod_cidr is not None and addr in pod_cidr:
            return pod_cidr
        if addr in node_net:
            return node_net
        return ipaddress.IPv4Network(f"{pod.ip}/24", strict=False)
    return pod_cidr if pod_cidr is not None else node_net


def plan_topology(
    snapshot: Snapshot, *, lab: str, dataplane: str, generation: int = 0
) -> LabTopology:
    """The lab for a snapshot: pure and deterministic (same input, same lab).

    Generation 0 keeps every address of the snapshot; generation g > 0 (after g upgrades)
    gives every pod a new address from the same pool (its node's podCIDR, or the node
    subnet for pods that had an address there), different from the one before.
    """
    check_lab_name(lab)
    snapshot = with_apiserver(snapshot)  # the API server's Service and host (#23)
    if generation < 0:
        raise InputError(f"lab generation must be 0 or more, got {generation}")
    if not snapshot.nodes:
        raise InputError(
            "the snapshot has no Node; the lab needs the nodes pods run on", kind="Snapshot"
        )
    node_ips = [
        _v4(n.ip, kind="Node", name=n.name, field="status.addresses") for n in snapshot.nodes
    ]
    prefix = _node_prefix(node_ips)
    node_net = ipaddress.IPv4Network(f"{snapshot.nodes[0].ip}/{prefix}", strict=False)
    nodes, pod_cidrs = _plan_nodes(snapshot, lab)
    by_name = {n.name: n for n in nodes}
    used = _used_addresses(snapshot, node_ips)
    scheduled = [p for p in snapshot.pods if p.node_name is not None]
    for pod in scheduled:
        if pod.node_name not in by_name:
            raise InputError(
                f"runs on node {pod.node_name!r}, which is not in the snapshot",
                kind="Pod",
                name=pod.key,
                field="spec.nodeName",
            )
    new_ip = _renumber(scheduled, pod_cidrs, node_net, used, generation)
    lab_pods, pod_ips = _lab_pods(scheduled, by_name, new_ip, lab)
    services = plan_services(snapshot.services, used)
    pods = tuple(
        dataclasses.replace(p, ip=pod_ips.get(p.key) if p.node_name is not None else None)
        for p in snapshot.pods
    )
    lab_snapshot = dataclasses.replace(snapshot, pods=pods, services=services)
    soft = [SERVICE_CIDR, LB_CIDR, node_net, *(c for c in pod_cidrs.values() if c is not None)]
    host_ips = _plan_hosts(lab_snapshot, soft, used)
    for api in apiserver_ips(lab_snapshot):  # a host at each API server address
        n = int(ipaddress.IPv4Address(api))
        if n not in host_ips and n not in node_ips and n not in pod_ips_int(lab_snapshot):
            host_ips.append(n)
    hosts = tuple(
        LabHost(name=f"ext{i}", netns=f"np-{lab}-ext{i}", ip=_ip(h)) for i, h in enumerate(host_ips)
    )
    return LabTopology(
        lab=lab,
        dataplane=dataplane,
        vnet_netns=f"np-{lab}-vnet",
        node_prefix=prefix,
        nodes=tuple(nodes),
        pods=tuple(lab_pods),
        hosts=hosts,
        snapshot=lab_snapshot,
    )


def pod_ips_int(snapshot: Snapshot) -> set[int]:
    return {
        int(ipaddress.IPv4Address(p.ip))
        for p in snapshot.pods
        if p.ip and ipaddress.ip_address(p.ip).version == 4
    }


def _plan_nodes(snapshot: Snapshot, lab: str) -> tuple[list[LabNode], dict[str, _Net | None]]:
    """One namespace per node, and each node's IPv4 podCIDR (None if it has none)."""
    nodes: list[LabNode] = []
    pod_cidrs: dict[str, _Net | None] = {}
    for i, n in enumerate(snapshot.nodes):
        cidr: _Net | None = None
        if n.pod_cidr is not None:
            net = ipaddress.ip_network(n.pod_cidr, strict=False)
            if net.version != 4:
                raise InputError(
                    "the lab supports IPv4 only", kind="Node", name=n.name, field="spec.podCIDR"
                )
            cidr = ipaddress.IPv4Network(str(net))
        pod_cidrs[n.name] = cidr
        nodes.append(LabNode(name=n.name, netns=f"np-{lab}-node{i}", ip=n.ip, pod_cidr=n.pod_cidr))
    return nodes, pod_cidrs


def _used_addresses(snapshot: Snapshot, node_ips: Sequence[int]) -> set[int]:
    """Addresses nobody else may take: nodes, the snapshot's pods and services, the gateway."""
    used: set[int] = set(node_ips)
    used.add(int(ipaddress.IPv4Address(POD_GATEWAY)))
    for pod in snapshot.pods:
        if pod.ip is not None and not pod.host_network:
            used.add(_v4(pod.ip, kind="Pod", name=pod.key, field="status.podIP"))
    for svc in snapshot.services:
        if svc.cluster_ip not in (None, "", "None"):
            assert svc.cluster_ip is not None
            used.add(_v4(svc.cluster_ip, kind="Service", name=svc.key, field="spec.clusterIP"))
        for lb in svc.load_balancer_ips:
            used.add(_v4(lb, kind="Service", name=svc.key, field="status.loadBalancer.ingress"))
    return used


def _renumber(
    scheduled: Sequence[Pod],
    pod_cidrs: dict[str, _Net | None],
    node_net: _Net,
    used: set[int],
    generation: int,
) -> dict[str, str]:
    """New addresses by pod key, per pool: for pods without one (generation 0), or for every
    pod (generation g > 0). Adds them to `used`."""
    pools: dict[_Net, list[Pod]] = {}
    for pod in scheduled:
        if pod.host_network:
            continue
        assert pod.node_name is not None
        if generation > 0 or pod.ip is None:
            pool = _pod_pool(pod, pod_cidrs[pod.node_name], node_net)
            pools.setdefault(pool, []).append(pod)
    new_ip: dict[str, str] = {}
    taken: set[int] = set()
    for pool, members in pools.items():
        picks = _pool_picks(pool, len(members), used | taken, generation)
        for pod, addr in zip(members, picks, strict=True):
            new_ip[pod.key] = _ip(addr)
            taken.add(addr)
    used |= taken
    return new_ip


def _pool_picks(pool: _Net, count: int, used: set[int], generation: int) -> list[int]:
    """`count` addresses of `pool` outside `used`: the first ones (generation 0), or a window
    that moves on with every generation, so that no pod keeps its address."""
    if generation == 0:
        got = list(islice(_candidates(pool, used), count))
        if len(got) < count:
            raise InputError(f"pool {pool} has no room for {count} more pods", kind="Snapshot")
        return got
    wanted = (generation + 1) * count
    cands = list(islice(_candidates(pool, used), wanted))
    if len(cands) < wanted:
        cands = list(_candidates(pool, used))
    if len(cands) <= count:
        raise InputError(
            f"pool {pool} is too small to renumber its {count} pods on upgrade",
            kind="Snapshot",
        )
    return [cands[(generation * count + i) % len(cands)] for i in range(count)]


def _lab_pods(
    scheduled: Sequence[Pod], by_name: dict[str, LabNode], new_ip: dict[str, str], lab: str
) -> tuple[list[LabPod], dict[str, str | None]]:
    """Each scheduled pod's place: its own namespace and veth, or its node's (hostNetwork)."""
    lab_pods: list[LabPod] = []
    pod_ips: dict[str, str | None] = {}
    index = 0
    for pod in scheduled:
        assert pod.node_name is not None
        node = by_name[pod.node_name]
        if pod.host_network:
            lab_pods.append(
                LabPod(
                    key=pod.key,
                    node=node.name,
                    netns=node.netns,
                    ip=node.ip,
                    host_ifname="",
                    host_network=True,
                    ports=pod.ports,
                )
            )
            pod_ips[pod.key] = node.ip
            continue
        ip = new_ip.get(pod.key, pod.ip)
        assert ip is not None
        lab_pods.append(
            LabPod(
                key=pod.key,
                node=node.name,
                netns=f"np-{lab}-pod{index}",
                ip=ip,
                host_ifname=f"azv{index}",
                host_network=False,
                ports=pod.ports,
            )
        )
        pod_ips[pod.key] = ip
        index += 1
    return lab_pods, pod_ips


def _plan_hosts(snapshot: Snapshot, soft: Sequence[_Net], used: set[int]) -> list[int]:
    """External hosts: the default client, then one per policy CIDR and one per except."""
    host_ips: list[int] = [int(ipaddress.IPv4Address(DEFAULT_EXTERNAL_IP))]
    used.add(host_ips[0])
    for block in policy_blocks(snapshot):
        if block.cidr.version != 4 or block.cidr.prefixlen == 0:
            continue
        cidr4 = ipaddress.IPv4Network(str(block.cidr))
        excepts = [ipaddress.IPv4Network(str(e)) for e in block.excepts if e.version == 4]
        inside = [
            h
            for h in host_ips
            if ipaddress.IPv4Address(h) in cidr4
            and not any(ipaddress.IPv4Address(h) in e for e in excepts)
        ]
        if not inside:
            pick = _pick_host(cidr4, excepts, soft, used)
            if pick is not None:
                host_ips.append(pick)
                used.add(pick)
        for e in excepts:
            if not any(ipaddress.IPv4Address(h) in e for h in host_ips):
                pick = _pick_host(e, (), soft, used)
                if pick is not None:
                    host_ips.append(pick)
                    used.add(pick)
    return host_ips


def plan_services(
    services: Sequence[Service], used: set[int], taken_ports: Iterable[int] = ()
) -> tuple[Service, ...]:
    """ClusterIPs, LoadBalancer IPs and nodePorts: kept from the snapshot, else allocated
    (never one of `used` nor a nodePort of `taken_ports`: the lab's other Services')."""
    node_ports = {sp.node_port for s in services for sp in s.ports if sp.node_port is not None}
    node_ports.update(taken_ports)
    next_port = NODE_PORT_RANGE[0]
    cluster_pool = _candidates(SERVICE_CIDR, used)
    lb_pool = _candidates(LB_CIDR, used)
    out: list[Service] = []
    for svc in services:
        changes: dict[str, object] = {}
        if svc.type is not ServiceType.EXTERNAL_NAME and svc.cluster_ip in (None, ""):
            addr = next(cluster_pool, None)
            if addr is None:
                raise InputError(
                    f"no free ClusterIP left in {SERVICE_CIDR}", kind="Service", name=svc.key
                )
            used.add(addr)
            changes["cluster_ip"] = _ip(addr)
        if svc.type is ServiceType.LOAD_BALANCER and not svc.load_balancer_ips:
            addr = next(lb_pool, None)
            if addr is None:
                raise InputError(
                    f"no free LoadBalancer IP left in {LB_CIDR}", kind="Service", name=svc.key
                )
            used.add(addr)
            changes["load_balancer_ips"] = (_ip(addr),)
        if svc.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER):
            ports = []
            # one nodePort per port number: TCP and UDP of one number share it, as the API
            # server's initNodePorts allocates (a requested one is reused by the twin entry)
            by_number = {sp.port: sp.node_port for sp in svc.ports if sp.node_port is not None}
            for sp in svc.ports:
                if sp.node_port is None and sp.port in by_number:
                    sp = dataclasses.replace(sp, node_port=by_number[sp.port])
                if sp.node_port is None:
                    while next_port in node_ports:
                        next_port += 1
                    if next_port > NODE_PORT_RANGE[1]:
                        raise InputError("no free nodePort left", kind="Service", name=svc.key)
                    node_ports.add(next_port)
                    sp = dataclasses.replace(sp, node_port=next_port)
                    by_number[sp.port] = next_port
                ports.append(sp)
            changes["ports"] = tuple(ports)
        out.append(dataclasses.replace(svc, **changes) if changes else svc)  # type: ignore[arg-type]
    return tuple(out)


def node_net(topology: LabTopology) -> _Net:
    """The node subnet every node and the bridge share."""
    return ipaddress.IPv4Network(f"{topology.nodes[0].ip}/{topology.node_prefix}", strict=False)


def host_index(host: LabHost) -> int:
    return int(host.netns.rsplit("ext", 1)[1])


def plan_new_hosts(topology: LabTopology, ips: Sequence[str]) -> tuple[LabHost, ...]:
    """External hosts for the addresses of `ips` the lab has no host at (each once), named
    after the lab's last host."""
    known = {h.ip for h in topology.hosts}
    wanted: list[str] = []
    for ip in ips:
        _v4(ip, kind="ExternalEndpoint", name=ip, field="ip")
        if ip not in known and ip not in wanted:
            wanted.append(ip)
    first = max((host_index(h) for h in topology.hosts), default=-1) + 1
    lab = topology.lab
    return tuple(
        LabHost(name=f"ext{first + i}", netns=f"np-{lab}-ext{first + i}", ip=ip)
        for i, ip in enumerate(wanted)
    )


def plan_added_services(
    topology: LabTopology, services: Sequence[Service], avoid: Iterable[str]
) -> tuple[Service, ...]:
    """Addresses and nodePorts for the Services of `services` the lab does not have yet,
    never one of the lab's addresses, of `avoid`, or a nodePort the lab uses."""
    snap = topology.snapshot
    known = {s.key for s in snap.services}
    wanted = [s for s in services if s.key not in known]
    if not wanted:
        return ()
    used = {_v4(n.ip, kind="Node", name=n.name, field="ip") for n in topology.nodes}
    used |= {_v4(p.ip, kind="Pod", name=p.key, field="ip") for p in topology.pods}
    used |= {_v4(h.ip, kind="Host", name=h.name, field="ip") for h in topology.hosts}
    for ip in avoid:
        with contextlib.suppress(ValueError):
            used.add(int(ipaddress.IPv4Address(ip)))
    for svc in snap.services:
        for addr in (svc.cluster_ip, *svc.load_balancer_ips):
            if addr and addr != "None":
                used.add(_v4(addr, kind="Service", name=svc.key, field="clusterIP"))
    taken = {sp.node_port for s in snap.services for sp in s.ports if sp.node_port}
    for svc in wanted:
        for sp in svc.ports:
            if sp.node_port is not None and sp.node_port in taken:
                raise InputError(
                    f"nodePort {sp.node_port} is already used in lab {topology.lab}",
                    kind="Service",
                    name=svc.key,
                    field="spec.ports.nodePort",
                )
    return plan_services(wanted, used, taken)
