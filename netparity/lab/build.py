"""Plan, build, upgrade and tear down a lab: a sealed cluster of Linux network namespaces.

`plan_topology` is pure: it decides which namespace holds which node, pod and external
host at which address. `up` builds it (as root): one bridge namespace ("vnet") that every
node and host is linked to, a veth per pod routed through its node (no bridge), the
dataplane's rules in every node namespace, and a probe agent in every namespace that
serves something. Nothing is linked to the root namespace; there is no default route out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib
import ipaddress
import os
import re
import selectors
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, cast

from netparity.backend import Progress
from netparity.engine.traffic import DEFAULT_EXTERNAL_IP
from netparity.errors import ClusterError, InputError
from netparity.interrupts import checkpoint
from netparity.lab import netns as nx
from netparity.lab.dataplanes.registry import DATAPLANES, Render
from netparity.lab.state import (
    BUILDING,
    CHANGER,
    READY,
    REMOVING,
    UPGRADER,
    AgentRecord,
    LabState,
    change_lock_path,
    held_by_changer,
    held_depth,
    hold,
    lab_lock,
    load_state,
    log_dir,
    remove_state,
    save_state,
    state_names,
    unlink_lock,
)
from netparity.lab.topology import LabHost, LabNode, LabPod, LabTopology, NodeRules
from netparity.model.networkpolicy import IPBlock
from netparity.model.objects import Pod, Protocol, Service, ServiceType, run_owned
from netparity.model.snapshot import Snapshot

DEFAULT_LAB = "lab"
SERVICE_CIDR = ipaddress.IPv4Network("10.0.0.0/16")
LB_CIDR = ipaddress.IPv4Network("192.0.2.0/24")
NODE_PORT_RANGE = (30000, 32767)
POD_GATEWAY = "169.254.1.1"  # link-local next hop of every pod's default route
HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"  # the node side of every pod veth (as Calico does)
KUBELET_PORT = 10250
EXTERNAL_TCP = (80, 443, 8080, 8443)
EXTERNAL_UDP = (53,)
_LAB_NAME = re.compile(r"[a-z0-9]{1,8}")
# Never given to an external host: "this" network, loopback, multicast and reserved.
_HARD_AVOID = tuple(
    ipaddress.IPv4Network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/3", f"{POD_GATEWAY}/32")
)

_AGENT_READY_TIMEOUT = 30.0


def _say(message: str) -> None:
    print(f"netparity lab: {message}", file=sys.stderr, flush=True)


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


def policy_ports(snapshot: Snapshot) -> dict[Protocol, set[int]]:
    """Ports an external host serves: the defaults plus every numeric policy port ±1."""
    numbers: set[int] = set()
    sctp: set[int] = set()

    def add(port: int | str | None, end: int | None, is_sctp: bool) -> None:
        if not isinstance(port, int):
            return
        near = {port - 1, port, port + 1}
        if end is not None:
            near |= {end - 1, end, end + 1}
        near = {p for p in near if 1 <= p <= 65535}
        (sctp if is_sctp else numbers).update(near)

    for np_ in snapshot.network_policies:
        for rule in (*np_.ingress, *np_.egress):
            for pp in rule.ports:
                add(pp.port, pp.end_port, pp.protocol is Protocol.SCTP)
    for cp in snapshot.cilium_policies:
        for rules in (cp.ingress or (), cp.egress or (), cp.ingress_deny, cp.egress_deny):
            for crule in rules:
                for cport in crule.ports:
                    add(cport.port, cport.end_port, cport.protocol.value == "SCTP")
    return {
        Protocol.TCP: set(EXTERNAL_TCP) | numbers,
        Protocol.UDP: set(EXTERNAL_UDP) | numbers,
        Protocol.SCTP: sctp,
    }


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
    by_name = {n.name: n for n in nodes}

    # Addresses nobody else may take: nodes, the snapshot's pods and services, the gateway.
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

    # Pods: keep (generation 0) or allocate per pool.
    scheduled = [p for p in snapshot.pods if p.node_name is not None]
    for pod in scheduled:
        if pod.node_name not in by_name:
            raise InputError(
                f"runs on node {pod.node_name!r}, which is not in the snapshot",
                kind="Pod",
                name=pod.key,
                field="spec.nodeName",
            )
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
        count = len(members)
        if generation == 0:
            got = list(islice(_candidates(pool, used | taken), count))
            if len(got) < count:
                raise InputError(f"pool {pool} has no room for {count} more pods", kind="Snapshot")
            picks = got
        else:
            wanted = (generation + 1) * count
            cands = list(islice(_candidates(pool, used | taken), wanted))
            if len(cands) < wanted:
                cands = list(_candidates(pool, used | taken))
            if len(cands) <= count:
                raise InputError(
                    f"pool {pool} is too small to renumber its {count} pods on upgrade",
                    kind="Snapshot",
                )
            picks = [cands[(generation * count + i) % len(cands)] for i in range(count)]
        for pod, addr in zip(members, picks, strict=True):
            new_ip[pod.key] = _ip(addr)
            taken.add(addr)
    used |= taken

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

    services = _plan_services(snapshot.services, used)

    pods = tuple(
        dataclasses.replace(p, ip=pod_ips.get(p.key) if p.node_name is not None else None)
        for p in snapshot.pods
    )
    lab_snapshot = dataclasses.replace(snapshot, pods=pods, services=services)

    # External hosts: the default client, then one per policy CIDR and one per except.
    soft = [SERVICE_CIDR, LB_CIDR, node_net, *(c for c in pod_cidrs.values() if c is not None)]
    host_ips: list[int] = [int(ipaddress.IPv4Address(DEFAULT_EXTERNAL_IP))]
    used.add(host_ips[0])
    for block in policy_blocks(lab_snapshot):
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


def _plan_services(
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


# --------------------------------------------------------------------------- agents


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    """One `agent.py serve` to run: where, with which token, on which ports."""

    netns: str
    token: str
    what: str  # "pod x/a", "node n1", "host 203.0.113.10": for error messages
    tcp: tuple[int, ...] = ()
    udp: tuple[int, ...] = ()
    sctp: tuple[int, ...] = ()


def agent_path() -> Path:
    override = os.environ.get("NETPARITY_AGENT")
    path = (
        Path(override) if override else Path(__file__).resolve().parents[2] / "probes" / "agent.py"
    )
    if not path.is_file():
        raise ClusterError(f"the probe agent {path} is missing (set NETPARITY_AGENT to its path)")
    return path


def agent_python() -> list[str]:
    """The interpreter for the stdlib-only agent: isolated, without site (starts faster)."""
    return [sys.executable, "-I", "-S"]


def _ports_of(ports: Iterable[tuple[int, Protocol]]) -> dict[Protocol, tuple[int, ...]]:
    out: dict[Protocol, set[int]] = {p: set() for p in Protocol}
    for number, proto in ports:
        out[proto].add(number)
    return {p: tuple(sorted(v)) for p, v in out.items()}


def host_agent(host: LabHost, snapshot: Snapshot) -> AgentSpec:
    ports = policy_ports(snapshot)
    return AgentSpec(
        netns=host.netns,
        token=f"ext:{host.ip}",
        what=f"external host {host.ip}",
        tcp=tuple(sorted(ports[Protocol.TCP])),
        udp=tuple(sorted(ports[Protocol.UDP])),
        sctp=tuple(sorted(ports[Protocol.SCTP])),
    )


def agent_specs(topology: LabTopology) -> list[AgentSpec]:
    """Every agent of a lab: nodes (kubelet + hostNetwork pods), pods with ports, hosts."""
    specs: list[AgentSpec] = []
    for node in topology.nodes:
        ports = [(KUBELET_PORT, Protocol.TCP)]
        ports += [
            (cp.port, cp.protocol)
            for p in topology.pods_on(node.name)
            if p.host_network
            for cp in p.ports
        ]
        by = _ports_of(ports)
        specs.append(
            AgentSpec(
                netns=node.netns,
                token=f"node:{node.name}",
                what=f"node {node.name}",
                tcp=by[Protocol.TCP],
                udp=by[Protocol.UDP],
                sctp=by[Protocol.SCTP],
            )
        )
    for pod in topology.pods:
        if pod.host_network or not pod.ports:
            continue
        by = _ports_of((cp.port, cp.protocol) for cp in pod.ports)
        specs.append(
            AgentSpec(
                netns=pod.netns,
                token=pod.key,
                what=f"pod {pod.key}",
                tcp=by[Protocol.TCP],
                udp=by[Protocol.UDP],
                sctp=by[Protocol.SCTP],
            )
        )
    specs.extend(host_agent(h, topology.snapshot) for h in topology.hosts)
    return specs


# Agents started by this process, per lab, so that `down` can reap them (no zombies).
_CHILDREN: dict[str, list[subprocess.Popen[bytes]]] = {}
_CHILDREN_LOCK = threading.Lock()


def start_agents(
    lab: str, specs: Sequence[AgentSpec], progress: Callable[[int, int], None] | None = None
) -> tuple[AgentRecord, ...]:
    """Start every agent at once and wait for each `ready` line (a clear error otherwise)."""
    if not specs:
        return ()
    agent = str(agent_path())
    logs = log_dir(lab)
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[AgentSpec, subprocess.Popen[bytes], Path]] = []
    for spec in specs:
        argv = [
            "ip",
            "netns",
            "exec",
            spec.netns,
            *agent_python(),
            agent,
            "serve",
            "--name",
            spec.token,
        ]
        for opt, ports in (("--tcp", spec.tcp), ("--udp", spec.udp), ("--sctp", spec.sctp)):
            if ports:
                argv += [opt, ",".join(str(p) for p in ports)]
        log = logs / f"{spec.netns}.{len(procs)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        procs.append((spec, proc, log))
        with _CHILDREN_LOCK:
            _CHILDREN.setdefault(lab, []).append(proc)
    sel = selectors.DefaultSelector()
    pending: dict[int, tuple[AgentSpec, subprocess.Popen[bytes], Path, bytearray]] = {}
    for spec, proc, log in procs:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        sel.register(proc.stdout, selectors.EVENT_READ)
        pending[proc.stdout.fileno()] = (spec, proc, log, bytearray())
    deadline = time.monotonic() + _AGENT_READY_TIMEOUT + 0.1 * len(specs)
    done = 0
    try:
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                names = ", ".join(s.what for s, _, _, _ in list(pending.values())[:5])
                more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
                raise ClusterError(
                    f"lab {lab}: the probe agent of {names}{more} was not ready after "
                    f"{_AGENT_READY_TIMEOUT + 0.1 * len(specs):.0f} s"
                )
            for key, _ in sel.select(timeout=min(left, 0.5)):
                stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
                spec, proc, log, buf = pending[stream.fileno()]
                chunk = stream.read()
                if chunk:
                    buf.extend(chunk)
                if b"ready\n" in buf:
                    sel.unregister(stream)
                    del pending[stream.fileno()]
                    stream.close()
                    done += 1
                    if progress is not None:
                        progress(done, len(specs))
                elif chunk == b"":
                    proc.wait(timeout=5)
                    text = log.read_text(errors="replace").strip().replace("\n", " / ")
                    raise ClusterError(
                        f"lab {lab}: the probe agent of {spec.what} ({spec.netns}) exited "
                        f"(status {proc.returncode}) before it was ready: {text or 'no message'}"
                    )
    finally:
        sel.close()
    return tuple(AgentRecord(pid=p.pid, netns=s.netns, token=s.token) for s, p, _ in procs)


# --------------------------------------------------------------------------- building


class StderrProgress:
    """A Progress callback that keeps one line on stderr: `lab NAME: nodes 3/3, pods 12/60`."""

    def __init__(self, name: str, *, stream: IO[str] | None = None, interval: float = 0.25) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.counts: dict[str, tuple[int, int]] = {}
        self.interval = interval
        self._last = 0.0
        self._lock = threading.Lock()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, what: str, done: int, total: int) -> None:
        with self._lock:
            self.counts[what] = (done, total)
            now = time.monotonic()
            if done < total and now - self._last < self.interval:
                return
            self._last = now
            line = f"lab {self.name}: " + ", ".join(
                f"{w} {d}/{t}" for w, (d, t) in self.counts.items()
            )
            if self._tty:
                self.stream.write("\r\033[K" + line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self._tty and self.counts:
            self.stream.write("\n")
            self.stream.flush()


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ClusterError("the lab needs root (it creates network namespaces); run as root")
    if shutil.which("ip") is None:
        raise ClusterError("the lab needs iproute2 (`ip`), which is not installed")


def _iptables_restore() -> str:
    return "iptables-nft-restore" if shutil.which("iptables-nft-restore") else "iptables-restore"


def _node_net(topology: LabTopology) -> _Net:
    return ipaddress.IPv4Network(f"{topology.nodes[0].ip}/{topology.node_prefix}", strict=False)


def _node_lines(topology: LabTopology, node: LabNode) -> list[str]:
    net = _node_net(topology)
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
    lines.extend(_service_routes(topology.snapshot.services, net))
    return lines


def _service_routes(services: Iterable[Service], net: _Net) -> list[str]:
    lines = [f"route replace {SERVICE_CIDR} dev eth0 scope link"]
    for svc in services:
        ip = svc.cluster_ip
        if ip and ip != "None":
            addr = ipaddress.IPv4Address(ip)
            if addr not in SERVICE_CIDR and addr not in net:
                lines.append(f"route replace {ip}/32 dev eth0 scope link")
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


def _host_lines(topology: LabTopology, host: LabHost) -> list[str]:
    lines = [
        "link set lo up",
        f"addr add {host.ip}/32 dev eth0",
        "link set eth0 up",
        f"route add {_node_net(topology)} dev eth0 scope link",
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


def _host_index(host: LabHost) -> int:
    return int(host.netns.rsplit("ext", 1)[1])


def _workers(n: int) -> int:
    return max(1, min(32, n, 4 * (os.cpu_count() or 2)))


def _apply_rules(
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


def _default_render() -> Render:
    try:
        module = importlib.import_module("netparity.lab.dataplanes")
        render = module.render
    except (ImportError, AttributeError) as e:
        raise ClusterError(
            f"the lab dataplanes (netparity.lab.dataplanes.render) cannot be loaded: {e}"
        ) from e
    return cast(Render, render)


def _build(
    topology: LabTopology,
    rendered: Mapping[str, NodeRules],
    progress: Progress | None,
) -> tuple[AgentRecord, ...]:
    """Create namespaces, links, addresses, routes, rules and agents (the caller cleans up)."""
    lab = topology.lab
    report: Progress = progress if progress is not None else (lambda what, done, total: None)
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

    links: list[str] = []
    for i, node in enumerate(topology.nodes):
        links.append(
            f"link add eth0 netns {node.netns} type veth peer name n{i} netns {topology.vnet_netns}"
        )
    for host in topology.hosts:
        links.append(
            f"link add eth0 netns {host.netns} type veth peer name e{_host_index(host)} "
            f"netns {topology.vnet_netns}"
        )
    for pod in pods:
        links.append(
            f"link add eth0 netns {pod.netns} type veth peer name {pod.host_ifname} "
            f"netns {topology.node(pod.node).netns} address {HOST_VETH_MAC}"
        )
    nx.ip_batch(links, what=f"lab {lab}: creating links")

    vnet = [
        "link set lo up",
        "link add br0 type bridge stp_state 0 forward_delay 0",
        "link set br0 up",
    ]
    ports = [f"n{i}" for i in range(len(topology.nodes))] + [
        f"e{_host_index(h)}" for h in topology.hosts
    ]
    for port in ports:
        vnet += [f"link set {port} master br0", f"link set {port} up"]

    jobs: list[tuple[str | None, Callable[[], None]]] = []

    def vnet_job() -> None:
        nx.ip_batch(vnet, netns=topology.vnet_netns, what=f"lab {lab}: bridge")
        nx.sysctl(
            topology.vnet_netns,
            {},
            optional={
                "net.bridge.bridge-nf-call-iptables": "0",
                "net.bridge.bridge-nf-call-ip6tables": "0",
                "net.bridge.bridge-nf-call-arptables": "0",
            },
        )

    jobs.append((None, vnet_job))
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

    counts["rules"] = [0, len(topology.nodes)]
    report("rules", 0, len(topology.nodes))
    _apply_rules(topology, rendered, lambda: tick("rules"))

    specs = agent_specs(topology)
    checkpoint("build:agents")
    report("agents", 0, len(specs))
    return start_agents(lab, specs, lambda done, total: report("agents", done, total))


def _teardown(name: str, *, keep_state: bool = False) -> int:
    """Kill every process in the lab's namespaces, delete them, remove the state (or, with
    `keep_state`, leave it saying `removing` for the rebuild that follows).

    The state says `removing` by this process first, so that a teardown cut short (SIGKILL)
    reads as broken, not as a live lab. Only processes found inside the namespaces are
    killed (never a pid from the state file alone: it may have been reused since)."""
    with contextlib.suppress(ClusterError, OSError):
        state = load_state(name)
        if state is not None and state.status != REMOVING:
            save_state(
                dataclasses.replace(
                    state,
                    status=REMOVING,
                    pid=os.getpid(),
                    pid_start=nx.process_start(os.getpid()),
                )
            )
    names = nx.list_netns(netns_prefix(name))
    nx.kill_pids(nx.netns_pids(names))
    with _CHILDREN_LOCK:
        children = _CHILDREN.pop(name, [])
    for child in children:
        try:
            child.wait(timeout=2)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=2)
    checkpoint("teardown:namespaces")
    nx.delete_netns(names)
    if not keep_state:
        remove_state(name)
    return len(names)


def _builder_alive(state: LabState) -> bool:
    """Is the process named by a `building`/`removing` state still at it? It is while it
    holds the lab's change lock (a state file naming a dead builder holds nothing)."""
    if state.pid in held_by_changer(state.name):
        return True
    if os.path.exists("/proc/locks"):
        return False
    return nx.same_process(state.pid, state.pid_start)  # no /proc/locks: the pid alone


def _broken(state: LabState, *, agents: bool = True) -> str | None:
    """Why the lab in `state` cannot be used (a clause), or None; a live build is not broken."""
    if state.status != READY:
        if _builder_alive(state):
            return None
        doing = "removing" if state.status == REMOVING else "building"
        return f"process {state.pid}, which was {doing} it, is gone"
    if state.topology is None or state.topology.vnet_netns not in nx.list_netns(
        netns_prefix(state.name)
    ):
        return "its network namespaces are gone"
    if agents:
        gone = [a for a in state.agents if not nx.pid_alive(a.pid)]
        if gone:
            return (
                f"{len(gone)} of {len(state.agents)} probe agents are gone "
                f"(the first in {gone[0].netns})"
            )
    return None


def lab_problem(state: LabState) -> str | None:
    """One sentence saying why the lab cannot be probed and how to repair it, or None."""
    reason = _broken(state)
    if reason is None:
        return None
    n = state.name
    return (
        f"lab {n} is broken: {reason}; `netparity lab down --name {n}` removes it and "
        f"`netparity lab up --name {n}` builds it again"
    )


@contextlib.contextmanager
def changing(
    name: str, *, kind: str = CHANGER, wait: float = 0.0, edit: bool = True
) -> Iterator[None]:
    """Hold lab `name` as a changer (`up`, `down`) or an upgrader (`upgrade`, a demo's whole
    run), with its edit lock unless `edit` is False. When the outermost hold of this process
    ends and nothing of the lab is left, its lock files go too."""
    with hold(name, kind, wait=wait):
        outermost = held_depth(change_lock_path(name), fcntl.LOCK_EX) == 1
        try:
            with lab_lock(name) if edit else contextlib.nullcontext():
                try:
                    yield
                finally:
                    if edit and outermost:
                        _forget_if_gone(name)
        finally:
            if not edit and outermost:
                with lab_lock(name):
                    _forget_if_gone(name)


def _forget_if_gone(name: str) -> None:
    try:
        gone = load_state(name) is None
    except ClusterError:
        gone = False
    if gone and not nx.list_netns(netns_prefix(name)):
        remove_state(name)  # the log folder
        unlink_lock(name)


def _clear_leftovers(name: str, *, for_up: bool) -> LabState | None:
    """Under the change lock: remove a half-built lab (its builder is gone: the lock was
    free), a broken one, or orphan namespaces; return a live state."""
    try:
        state = load_state(name)
    except ClusterError as e:
        _say(f"lab {name}: removing it, its state cannot be read ({e})")
        _teardown(name)
        return None
    names = nx.list_netns(netns_prefix(name))
    if state is None:
        if names:
            _say(
                f"lab {name}: removing {len(names)} leftover namespaces np-{name}-* that have no state"
            )
            _teardown(name)
        return None
    if state.status != READY:
        doing = "removed" if state.status == REMOVING else "half-built"
        _say(f"lab {name}: removing a {doing} lab left by process {state.pid}, which is gone")
        _teardown(name)
        return None
    reason = _broken(state, agents=for_up)
    if reason is not None:
        _say(f"lab {name}: removing it, {reason}")
        _teardown(name)
        return None
    if for_up:
        raise ClusterError(
            f"lab {name} already exists ({state.dataplane}, generation {state.generation}); "
            f"run `netparity lab down --name {name}` first or choose another --name"
        )
    return state


def _up_locked(
    topology: LabTopology,
    *,
    original: Snapshot,
    generation: int,
    render: Render | None,
    progress: Progress | None,
) -> LabTopology:
    start = time.monotonic()
    rendered = (render or _default_render())(topology)
    unknown = sorted(set(rendered) - {n.name for n in topology.nodes})
    if unknown:
        raise ClusterError(f"the dataplane rendered rules for unknown nodes: {', '.join(unknown)}")
    base = LabState(
        name=topology.lab,
        dataplane=topology.dataplane,
        generation=generation,
        status=BUILDING,
        pid=os.getpid(),
        pid_start=nx.process_start(os.getpid()),
        sources=original.sources,
        created=time.time(),
        topology=topology,
        original=original,
    )
    save_state(base)
    try:
        checkpoint("build:namespaces")
        agents = _build(topology, rendered, progress)
        save_state(
            dataclasses.replace(
                base, status=READY, agents=agents, build_seconds=round(time.monotonic() - start, 3)
            )
        )
    except BaseException:
        _teardown(topology.lab)
        raise
    return topology


def up(
    snapshot: Snapshot,
    *,
    name: str = DEFAULT_LAB,
    dataplane: str = "npm",
    generation: int = 0,
    render: Render | None = None,
    progress: Progress | None = None,
    wait: float = 0.0,
) -> LabTopology:
    """Build lab `name` from a snapshot (as root), holding it alone. A half-built or broken
    leftover of that name is removed first; an existing lab is an error. On any failure,
    Ctrl-C or SIGTERM included, everything built so far is removed."""
    check_lab_name(name)
    check_dataplane(dataplane)
    _require_root()
    with changing(name, wait=wait):
        _clear_leftovers(name, for_up=True)
        topology = plan_topology(snapshot, lab=name, dataplane=dataplane, generation=generation)
        return _up_locked(
            topology, original=snapshot, generation=generation, render=render, progress=progress
        )


def down(name: str = DEFAULT_LAB, *, wait: float = 0.0) -> bool:
    """Tear lab `name` down: agents, namespaces (links, ipsets, rules), state, lock files,
    holding it alone (refused while a user holds it). Idempotent: False when there was
    nothing to remove."""
    check_lab_name(name)
    _require_root()
    with changing(name, wait=wait):
        try:
            state = load_state(name)
        except ClusterError:
            state = None
            _say(f"lab {name}: its state cannot be read; removing it anyway")
        names = nx.list_netns(netns_prefix(name))
        if state is None and not names:
            remove_state(name)
            return False
        if state is not None and state.status != READY:
            doing = "removed" if state.status == REMOVING else "half-built"
            _say(f"lab {name}: removing a {doing} lab left by process {state.pid}, which is gone")
        elif state is None:
            _say(
                f"lab {name}: removing {len(names)} leftover namespaces np-{name}-* that have no state"
            )
        _teardown(name)
        return True


def upgrade(
    name: str = DEFAULT_LAB,
    dataplane: str = "cilium",
    *,
    render: Render | None = None,
    progress: Progress | None = None,
    wait: float = 0.0,
) -> LabTopology:
    """What `az aks update --network-dataplane` does: every pod recreated (same name, labels,
    node; a new IP) under the new dataplane's rules. The lab's generation goes up by one.
    Runs while users hold the lab, never beside another changer."""
    check_lab_name(name)
    check_dataplane(dataplane)
    _require_root()
    with changing(name, kind=UPGRADER, wait=wait):
        state = _clear_leftovers(name, for_up=False)
        if state is None or state.original is None:
            raise ClusterError(
                f"there is no lab named {name}; build it with `netparity lab up` first"
            )
        generation = state.generation + 1
        topology = plan_topology(
            state.original, lab=name, dataplane=dataplane, generation=generation
        )
        rendered = (render or _default_render())(topology)  # fails before anything is torn down
        try:
            _teardown(name, keep_state=True)
            checkpoint("upgrade:rebuild")
        except BaseException:
            _teardown(name)
            raise
        return _up_locked(
            topology,
            original=state.original,
            generation=generation,
            render=lambda _: rendered,
            progress=progress,
        )


def status(name: str = DEFAULT_LAB) -> LabState:
    """The state of a lab (ClusterError if there is none, or if it is too broken to show)."""
    check_lab_name(name)
    state = load_state(name)
    if state is None:
        others = [n for n in state_names() if n != name]
        hint = f" (labs here: {', '.join(others)})" if others else ""
        raise ClusterError(f"there is no lab named {name}{hint}; build it with `netparity lab up`")
    if state.topology is None:
        raise ClusterError(
            lab_problem(state) or f"lab {name} is {state.status} by process {state.pid}"
        )
    return state


def list_labs() -> list[str]:
    return state_names()


def add_hosts(name: str, ips: Sequence[str]) -> LabTopology:
    """Add external hosts (a namespace on the bridge, routes on every node, an agent) to a
    ready lab, recorded in its state so that `down` removes them. Returns the new topology."""
    check_lab_name(name)
    _require_root()
    with lab_lock(name):
        state = status(name)
        assert state.topology is not None
        topology = state.topology
        known = {h.ip for h in topology.hosts}
        wanted = []
        for ip in ips:
            _v4(ip, kind="ExternalEndpoint", name=ip, field="ip")
            if ip not in known and ip not in wanted:
                wanted.append(ip)
        if not wanted:
            return topology
        first = max((_host_index(h) for h in topology.hosts), default=-1) + 1
        new = [
            LabHost(name=f"ext{first + i}", netns=f"np-{name}-ext{first + i}", ip=ip)
            for i, ip in enumerate(wanted)
        ]
        updated = dataclasses.replace(topology, hosts=(*topology.hosts, *new))
        nx.add_netns([h.netns for h in new])
        nx.ip_batch(
            [
                f"link add eth0 netns {h.netns} type veth peer name e{_host_index(h)} "
                f"netns {topology.vnet_netns}"
                for h in new
            ],
            what=f"lab {name}: links of new hosts",
        )
        bridge = [
            line
            for h in new
            for line in (f"link set e{_host_index(h)} master br0", f"link set e{_host_index(h)} up")
        ]
        nx.ip_batch(bridge, netns=topology.vnet_netns, what=f"lab {name}: bridge")
        net = _node_net(topology)
        routes = [
            f"route replace {h.ip}/32 dev eth0 scope link"
            for h in new
            if ipaddress.IPv4Address(h.ip) not in net
        ]
        for node in topology.nodes:
            nx.ip_batch(routes, netns=node.netns, what=f"node {node.name}: routes to new hosts")
        for h in new:
            nx.ip_batch(_host_lines(updated, h), netns=h.netns, what=f"host {h.ip}")
            nx.sysctl(h.netns, _HOST_SYSCTLS)
        agents = start_agents(name, [host_agent(h, topology.snapshot) for h in new])
        save_state(dataclasses.replace(state, topology=updated, agents=(*state.agents, *agents)))
        return updated


def remove_services(name: str, keys: Iterable[str]) -> LabTopology:
    """Remove Services a run created for itself (labelled netparity.io/run) from a ready
    lab and re-apply every node's rules without them, as `kubectl delete` would on a
    cluster. Services without the run label are never removed. Returns the new topology."""
    check_lab_name(name)
    _require_root()
    with lab_lock(name):
        state = status(name)
        assert state.topology is not None
        topology = state.topology
        snap = topology.snapshot
        wanted = set(keys)
        gone = [s for s in snap.services if s.key in wanted and run_owned(s.labels)]
        if not gone:
            return topology
        keep = tuple(s for s in snap.services if s not in gone)
        updated = dataclasses.replace(topology, snapshot=dataclasses.replace(snap, services=keep))
        # The run's Services take their addresses from the Service range, whose one route
        # stays; only the packet filters change.
        _apply_rules(updated, _default_render()(updated), lambda: None)
        save_state(dataclasses.replace(state, topology=updated))
        return updated


def add_services(
    name: str, services: Sequence[Service], *, avoid: Iterable[str] = ()
) -> LabTopology:
    """Add Services a run creates for itself (the planner's run-owned NodePorts) to a ready
    lab: allocate their addresses (never one of `avoid`: the run's outside probe
    addresses), then re-render and re-apply every node's rules, as kube-proxy or Cilium
    would on a Service event. Returns the new topology."""
    check_lab_name(name)
    _require_root()
    with lab_lock(name):
        state = status(name)
        assert state.topology is not None
        topology = state.topology
        known = {s.key for s in topology.snapshot.services}
        wanted = [s for s in services if s.key not in known]
        if not wanted:
            return topology
        snap = topology.snapshot
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
                        f"nodePort {sp.node_port} is already used in lab {name}",
                        kind="Service",
                        name=svc.key,
                        field="spec.ports.nodePort",
                    )
        added = _plan_services(wanted, used, taken)
        new_snapshot = dataclasses.replace(
            snap, services=tuple(sorted((*snap.services, *added), key=lambda s: s.key))
        )
        updated = dataclasses.replace(topology, snapshot=new_snapshot)
        routes = _service_routes(added, _node_net(topology))
        for node in topology.nodes:
            nx.ip_batch(routes, netns=node.netns, what=f"node {node.name}: Service routes")
        _apply_rules(updated, _default_render()(updated), lambda: None)
        save_state(dataclasses.replace(state, topology=updated))
        return updated
