"""Lab fabric: the network namespaces, links, addresses, routes, sysctls and packet
filters that make a planned `LabTopology` real (as root).

One bridge namespace ("vnet") that every node and host is linked to, a veth per pod routed
through its node (no bridge), and the dataplane's rules in every node namespace. Nothing is
linked to the root namespace; there is no default route out.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import cast

from netparity.backend import Progress
from netparity.errors import ClusterError
from netparity.lab import netns as nx
from netparity.lab.addressing import POD_GATEWAY, SERVICE_CIDR, host_index, node_net
from netparity.lab.dataplanes.registry import Render as Render
from netparity.lab.topology import LabHost, LabNode, LabPod, LabTopology, NodeRules
from netparity.model.objects import Service

HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"  # the node side of every pod veth (as Calico does)

_Net = ipaddress.IPv4Network


def require_root() -> None:
    if os.geteuid() != 0:
        raise ClusterError("the lab needs root (it creates network namespaces); run as root")
    if shutil.which("ip") is None:
        raise ClusterError("the lab needs iproute2 (`ip`), which is not installed")


def _iptables_restore() -> str:
    return "iptables-nft-restore" if shutil.which("iptables-nft-restore") else "iptables-restore"


def _node_lines(topology: LabTopology, node: LabNode) -> list[str]:
    net = node_net(topology)
    lines = [
        "link set lo up",
        f"addr add {node.ip}/{topology.node_prefix} dev eth0",
        "link set eth0 up",
    ]
    for pod in topology.pods:
        if pod.host_network:
            continue
        if pod.node == node.name:
            lines.append(f"link set {pod.host_ifname} up")
            lines.append(f"route add {pod.ip}/32 dev {pod.host_ifname} scope link")
        else:
            lines.append(f"route add {pod.ip}/32 via {topology.node(pod.node).ip} dev eth0")
    for host in topology.hosts:
        if ipaddress.IPv4Address(host.ip) not in net:
            lines.append(f"route add {host.ip}/32 dev eth0 scope link")
    # The node's own traffic to a ClusterIP needs a route before nat OUTPUT translates it.
    lines.extend(service_routes(topology.snapshot.services, net))
    return lines


def service_routes(services: Iterable[Service], net: _Net) -> list[str]:
    lines = [f"route replace {SERVICE_CIDR} dev eth0 scope link"]
    for svc in services:
        ip = svc.cluster_ip
        if ip and ip != "None":
            addr = ipaddress.IPv4Address(ip)
            if addr not in SERVICE_CIDR and addr not in net:
                lines.append(f"route replace {ip}/32 dev eth0 scope link")
        # An AKS node routes a LoadBalancer IP (its default route): what kube-proxy does not
        # DNAT (loadBalancerSourceRanges, no endpoints) reaches FORWARD, as there (D22). A
        # /31, so that the prober's own /32 route for a probe (lab/probing.py) overrides it
        # while it is set and leaves it when it is deleted.
        for lb in svc.load_balancer_ips:
            try:
                lb_net = ipaddress.IPv4Network(f"{lb}/31", strict=False)
            except ValueError:
                continue
            if not lb_net.overlaps(net):
                lines.append(f"route replace {lb_net} dev eth0 scope link")
    return lines


def _node_sysctls(topology: LabTopology, node: LabNode) -> dict[str, str]:
    s = {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.all.rp_filter": "0",
        "net.ipv4.conf.default.rp_filter": "0",
        "net.ipv4.conf.eth0.rp_filter": "0",
        "net.ipv4.conf.all.send_redirects": "0",
        "net.ipv4.conf.eth0.send_redirects": "0",
    }
    for pod in topology.pods_on(node.name):
        if not pod.host_network:
            s[f"net.ipv4.conf.{pod.host_ifname}.rp_filter"] = "0"
            s[f"net.ipv4.conf.{pod.host_ifname}.proxy_arp"] = "1"
    return s


def _pod_lines(pod: LabPod) -> list[str]:
    return [
        "link set lo up",
        f"addr add {pod.ip}/32 dev eth0",
        "link set eth0 up",
        f"neigh replace {POD_GATEWAY} lladdr {HOST_VETH_MAC} dev eth0 nud permanent",
        f"route add {POD_GATEWAY}/32 dev eth0 scope link",
        f"route add default via {POD_GATEWAY} dev eth0",
    ]


pod_lines = _pod_lines  # for pods wired into a ready lab (lab/runpods.py)


def _host_lines(topology: LabTopology, host: LabHost) -> list[str]:
    lines = [
        "link set lo up",
        f"addr add {host.ip}/32 dev eth0",
        "link set eth0 up",
        f"route add {node_net(topology)} dev eth0 scope link",
    ]
    for pod in topology.pods:
        if not pod.host_network:
            lines.append(f"route add {pod.ip}/32 via {topology.node(pod.node).ip} dev eth0")
    return lines


_HOST_SYSCTLS = {
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    "net.ipv4.conf.eth0.rp_filter": "0",
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.eth0.accept_redirects": "0",
}


def _workers(n: int) -> int:
    return max(1, min(32, n, 4 * (os.cpu_count() or 2)))


def apply_rules(
    topology: LabTopology, rendered: Mapping[str, NodeRules], tick: Callable[[], None]
) -> None:
    restore = _iptables_restore()

    def apply(node: LabNode) -> None:
        rules = rendered.get(node.name)
        if rules is not None:
            if rules.ipset.strip():
                nx.netns_exec(
                    node.netns,
                    ["ipset", "restore"],
                    input=rules.ipset,
                    what=f"ipset restore on node {node.name}",
                )
            if rules.iptables.strip():
                nx.netns_exec(
                    node.netns,
                    [restore],
                    input=rules.iptables,
                    what=f"{restore} on node {node.name}",
                )
            if rules.nft.strip():
                nx.netns_exec(
                    node.netns,
                    ["nft", "-f", "-"],
                    input=rules.nft,
                    what=f"nft -f on node {node.name}",
                )
        tick()

    with ThreadPoolExecutor(max_workers=_workers(len(topology.nodes))) as pool:
        for f in as_completed([pool.submit(apply, n) for n in topology.nodes]):
            f.result()


def default_render() -> Render:
    try:
        module = importlib.import_module("netparity.lab.dataplanes")
        render = module.render
    except (ImportError, AttributeError) as e:
        raise ClusterError(
            f"the lab dataplanes (netparity.lab.dataplanes.render) cannot be loaded: {e}"
        ) from e
    return cast(Render, render)


def build_fabric(
    topology: LabTopology, rendered: Mapping[str, NodeRules], report: Progress
) -> None:
    """Create namespaces, links, addresses, routes and rules (the caller cleans up)."""
    counts: dict[str, list[int]] = {
        "nodes": [0, len(topology.nodes)],
        "pods": [0, sum(1 for p in topology.pods if not p.host_network)],
        "hosts": [0, len(topology.hosts)],
    }
    lock = threading.Lock()

    def tick(what: str) -> None:
        with lock:
            counts[what][0] += 1
            done, total = counts[what]
        report(what, done, total)

    for what, (done, total) in counts.items():
        report(what, done, total)
    pods = [p for p in topology.pods if not p.host_network]
    names = [topology.vnet_netns, *(n.netns for n in topology.nodes), *(p.netns for p in pods)]
    names += [h.netns for h in topology.hosts]
    nx.add_netns(names)
    nx.ip_batch(_links(topology, pods), what=f"lab {topology.lab}: creating links")
    _run_jobs(_jobs(topology, pods), tick)
    # Both ends of each veth are up: the bridge and node ends carry traffic once the kernel
    # has acted on it (not when `ip link set up` returns). A lab is ready only then.
    nx.wait_links_up([topology.vnet_netns, *(n.netns for n in topology.nodes)])
    counts["rules"] = [0, len(topology.nodes)]
    report("rules", 0, len(topology.nodes))
    apply_rules(topology, rendered, lambda: tick("rules"))


def _links(topology: LabTopology, pods: Sequence[LabPod]) -> list[str]:
    links: list[str] = []
    for i, node in enumerate(topology.nodes):
        links.append(
            f"link add eth0 netns {node.netns} type veth peer name n{i} netns {topology.vnet_netns}"
        )
    for host in topology.hosts:
        links.append(
            f"link add eth0 netns {host.netns} type veth peer name e{host_index(host)} "
            f"netns {topology.vnet_netns}"
        )
    for pod in pods:
        links.append(
            f"link add eth0 netns {pod.netns} type veth peer name {pod.host_ifname} "
            f"netns {topology.node(pod.node).netns} address {HOST_VETH_MAC}"
        )
    return links


_Job = tuple[str | None, Callable[[], None]]


def _jobs(topology: LabTopology, pods: Sequence[LabPod]) -> list[_Job]:
    """One job per namespace to configure, each with what it counts as (None: nothing)."""
    vnet = [
        "link set lo up",
        "link add br0 type bridge stp_state 0 forward_delay 0",
        "link set br0 up",
    ]
    ports = [f"n{i}" for i in range(len(topology.nodes))] + [
        f"e{host_index(h)}" for h in topology.hosts
    ]
    for port in ports:
        vnet += [f"link set {port} master br0", f"link set {port} up"]

    def vnet_job() -> None:
        nx.ip_batch(vnet, netns=topology.vnet_netns, what=f"lab {topology.lab}: bridge")
        nx.sysctl(
            topology.vnet_netns,
            {},
            optional={
                "net.bridge.bridge-nf-call-iptables": "0",
                "net.bridge.bridge-nf-call-ip6tables": "0",
                "net.bridge.bridge-nf-call-arptables": "0",
            },
        )

    jobs: list[_Job] = [(None, vnet_job)]
    for node in topology.nodes:

        def node_job(node: LabNode = node) -> None:
            nx.ip_batch(_node_lines(topology, node), netns=node.netns, what=f"node {node.name}")
            nx.sysctl(node.netns, _node_sysctls(topology, node))

        jobs.append(("nodes", node_job))
    for pod in pods:

        def pod_job(pod: LabPod = pod) -> None:
            nx.ip_batch(_pod_lines(pod), netns=pod.netns, what=f"pod {pod.key}")

        jobs.append(("pods", pod_job))
    for host in topology.hosts:

        def host_job(host: LabHost = host) -> None:
            nx.ip_batch(_host_lines(topology, host), netns=host.netns, what=f"host {host.ip}")
            nx.sysctl(host.netns, _HOST_SYSCTLS)

        jobs.append(("hosts", host_job))
    return jobs


def _run_jobs(jobs: Sequence[_Job], tick: Callable[[str], None]) -> None:
    pool = ThreadPoolExecutor(max_workers=_workers(len(jobs)))
    try:
        futures = {pool.submit(job): what for what, job in jobs}
        for f in as_completed(futures):
            f.result()
            kind = futures[f]
            if kind is not None:
                tick(kind)
    finally:  # on a failure or an interrupt, the jobs not started yet never start
        pool.shutdown(wait=True, cancel_futures=True)


def wire_hosts(topology: LabTopology, new: Sequence[LabHost]) -> None:
    """Link new external hosts of a ready lab to its bridge and route every node to them;
    `topology` already holds them."""
    name = topology.lab
    nx.add_netns([h.netns for h in new])
    nx.ip_batch(
        [
            f"link add eth0 netns {h.netns} type veth peer name e{host_index(h)} "
            f"netns {topology.vnet_netns}"
            for h in new
        ],
        what=f"lab {name}: links of new hosts",
    )
    bridge = [
        line
        for h in new
        for line in (f"link set e{host_index(h)} master br0", f"link set e{host_index(h)} up")
    ]
    nx.ip_batch(bridge, netns=topology.vnet_netns, what=f"lab {name}: bridge")
    net = node_net(topology)
    routes = [
        f"route replace {h.ip}/32 dev eth0 scope link"
        for h in new
        if ipaddress.IPv4Address(h.ip) not in net
    ]
    for node in topology.nodes:
        nx.ip_batch(routes, netns=node.netns, what=f"node {node.name}: routes to new hosts")
    for h in new:
        nx.ip_batch(_host_lines(topology, h), netns=h.netns, what=f"host {h.ip}")
        nx.sysctl(h.netns, _HOST_SYSCTLS)
    nx.wait_links_up([topology.vnet_netns])


def route_services(topology: LabTopology, services: Iterable[Service]) -> None:
    """Routes on every node to Services added to a ready lab."""
    routes = service_routes(services, node_net(topology))
    for node in topology.nodes:
        nx.ip_batch(routes, netns=node.netns, what=f"node {node.name}: Service routes")


def reimage_node(before: LabTopology, after: LabTopology, node_name: str) -> None:
    """Reimage one node of a ready lab, as AKS does during a rolling dataplane change: every
    process in the node's and its pods' namespaces ends, its pods' namespaces go, its rules
    (NPM's iptables, ipsets, any nft table) are removed, and its pods come back in new
    namespaces at their addresses in `after`; every other node and host routes to the new
    addresses. The node's new rules are the caller's (`apply_rules`)."""
    node = before.node(node_name)
    old = [p for p in before.pods_on(node_name) if not p.host_network]
    new = [p for p in after.pods_on(node_name) if not p.host_network]
    nx.end_processes_in([node.netns, *(p.netns for p in old)])
    # A namespace is freed asynchronously: delete the veths first (their routes go too).
    nx.ip_batch_force([f"link del {p.host_ifname}" for p in old], netns=node.netns)
    nx.delete_netns([p.netns for p in old])
    nx.netns_exec(node.netns, ["nft", "flush", "ruleset"], what=f"nft flush on node {node.name}")
    nx.netns_exec(node.netns, ["ipset", "destroy"], what=f"ipset destroy on node {node.name}")
    nx.add_netns([p.netns for p in new])
    nx.ip_batch(
        [
            f"link add eth0 netns {p.netns} type veth peer name {p.host_ifname} "
            f"netns {node.netns} address {HOST_VETH_MAC}"
            for p in new
        ],
        what=f"lab {after.lab}: links of node {node.name}'s pods",
    )
    lines: list[str] = []
    for pod in new:
        lines.append(f"link set {pod.host_ifname} up")
        lines.append(f"route replace {pod.ip}/32 dev {pod.host_ifname} scope link")
    nx.ip_batch(lines, netns=node.netns, what=f"node {node.name}: its pods' routes")
    nx.sysctl(node.netns, _node_sysctls(after, node))
    for pod in new:
        nx.ip_batch(_pod_lines(pod), netns=pod.netns, what=f"pod {pod.key}")
    nx.wait_links_up([node.netns])
    moved = [f"route del {p.ip}/32" for p in old] + [
        f"route replace {p.ip}/32 via {node.ip} dev eth0" for p in new
    ]
    others = [n.netns for n in after.nodes if n.name != node_name]
    for netns in (*others, *(h.netns for h in after.hosts)):
        nx.ip_batch_force(moved, netns=netns)
