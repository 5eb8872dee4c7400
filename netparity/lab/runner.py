"""The lab backend: resolves each Traffic to a source namespace and a destination address in
the lab's live state, and runs one `agent.py probe` per source batch (batches in parallel).

A probe the lab cannot run (unknown pod, unnamed port, a Service as a source) is an
`error` with the reason, never a deny.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import math
import os
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace

from netparity.backend import (
    ClusterFacts,
    Observed,
    ProbeResult,
    Progress,
    Target,
    token_mismatch,
)
from netparity.engine.traffic import (
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Via,
)
from netparity.errors import ClusterError, NetparityError
from netparity.interrupts import checkpoint
from netparity.lab import netns as nx
from netparity.lab.build import (
    DEFAULT_LAB,
    add_hosts,
    add_services,
    agent_path,
    agent_python,
    check_lab_name,
    lab_problem,
    remove_services,
    status,
)
from netparity.lab.dataplanes.services import pinned_service, selected_pods
from netparity.lab.state import READY, USER, LabState, hold, log_dir, state_path
from netparity.lab.topology import LabNode, LabPod, LabTopology
from netparity.model.objects import Protocol, Service, ServicePort, ServiceType, run_owned
from netparity.model.snapshot import Snapshot

# Addresses the lab never places an on-demand host at.
_NO_HOST = tuple(
    ipaddress.IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/3", "169.254.1.1/32")
)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Source:
    netns: str
    label: str
    kind: str  # "pod", "node" (a node or hostNetwork pod), "ext"
    node: str | None = None  # the node namespace's node, for pods and nodes


@dataclass(frozen=True, slots=True, kw_only=True)
class _Probe:
    index: int
    source: _Source
    host: str
    port: int
    protocol: Protocol
    lb_route: tuple[str, str] | None = None  # (LB IP, "via <node ip>" or "dev eth0")
    # the agent names that may answer there (a connection counts only then); None: unchecked
    expect: frozenset[str] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.protocol}"


@dataclass(slots=True)
class _SubBatch:
    routes: dict[str, str] = field(default_factory=dict)
    probes: list[_Probe] = field(default_factory=list)


class _Unresolved(Exception):
    """The lab cannot run this probe: the message says why."""


class _NeedHost(Exception):
    def __init__(self, ip: str) -> None:
        super().__init__(ip)
        self.ip = ip


class _Index:
    """One topology's lookups (pods by key, nodes by name, hosts by address, lab addresses)."""

    def __init__(self, topo: LabTopology) -> None:
        self.topo = topo
        self.pods = {p.key: p for p in topo.pods}
        self.nodes = {n.name: n for n in topo.nodes}
        self.hosts = {h.ip: h for h in topo.hosts}
        self.node_ips = {n.ip: n for n in topo.nodes}
        self.pod_ips = {p.ip: p for p in topo.pods if not p.host_network}
        self.live_pods = {p.key: p for p in topo.snapshot.pods}
        self.services = {s.key: s for s in topo.snapshot.services}
        self.service_ips = _service_ips(topo.snapshot)

    def pod(self, key: str) -> LabPod:
        pod = self.pods.get(key)
        if pod is None:
            raise _Unresolved(f"pod {key} is not in lab {self.topo.lab} (unknown or not scheduled)")
        return pod

    def node(self, name: str) -> LabNode:
        node = self.nodes.get(name)
        if node is None:
            raise _Unresolved(f"node {name} is not in lab {self.topo.lab}")
        return node

    def is_lab_address(self, ip: str) -> bool:
        return (
            ip in self.hosts or ip in self.node_ips or ip in self.pod_ips or ip in self.service_ips
        )


class LabBackend:
    """The `Backend` for a built lab; reads the lab's state on each call (upgrades show).

    `parallel` bounds the source batches (agent processes) running at once: a batch mostly
    waits (on its timeout when something is dropped), so it is well above the CPU count.
    """

    def __init__(
        self, name: str = DEFAULT_LAB, *, parallel: int = 32, hold: bool = False, wait: float = 0.0
    ) -> None:
        self.name = check_lab_name(name)
        self.parallel = max(1, parallel)
        self._cache: tuple[int, LabState] | None = None
        self._run_services: set[str] = set()  # the run's own Services this backend probed
        self._hold: contextlib.ExitStack | None = None
        if hold:
            self.hold(wait=wait)

    def hold(self, *, wait: float = 0.0) -> None:
        """Hold the lab as a user until close() (`lab probe`, a suites run): refused while
        a changer builds or removes it, and refused for a broken lab (docs/faults.md)."""
        if self._hold is not None:
            return
        status(self.name)  # no lab: say so before a lock file is made for it
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(hold(self.name, USER, wait=wait))
            problem = lab_problem(status(self.name))
            if problem is not None:
                raise ClusterError(problem)
        except BaseException:
            stack.close()
            raise
        self._hold = stack
        checkpoint("lab:held")

    # -- state

    def state(self) -> LabState:
        try:
            mtime = state_path(self.name).stat().st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        if self._cache is None or self._cache[0] != mtime:
            self._cache = (mtime, status(self.name))
        return self._cache[1]

    def topology(self) -> LabTopology:
        topo = self.state().topology
        assert topo is not None
        return topo

    def facts(self) -> ClusterFacts:
        st = self.state()
        return ClusterFacts(name=self.name, backend="lab", dataplane=st.dataplane, version=None)

    def snapshot(self) -> Snapshot:
        """The lab as the cluster: without the Services a run created for itself
        (labelled netparity.io/run), which are never the cluster's own."""
        snap = self.topology().snapshot
        if not any(run_owned(s.labels) for s in snap.services):
            return snap
        return dataclasses.replace(
            snap, services=tuple(s for s in snap.services if not run_owned(s.labels))
        )

    def close(self) -> None:
        """Remove the run's own Services this backend created or probed, as the
        Kubernetes backend removes its run's objects at the end."""
        keys, self._run_services = sorted(self._run_services), set()
        self._cache = None
        if keys:
            with contextlib.suppress(ClusterError):  # the lab is gone: nothing to remove
                remove_services(self.name, keys)
        held, self._hold = self._hold, None
        if held is not None:
            held.close()

    # -- resolution

    def _source(self, ix: _Index, ep: object) -> _Source:
        if isinstance(ep, PodEndpoint):
            pod = ix.pod(ep.pod.key)
            kind = "node" if pod.host_network else "pod"
            return _Source(
                netns=pod.netns, label=f"pod {pod.key}@{pod.node}", kind=kind, node=pod.node
            )
        if isinstance(ep, NodeEndpoint):
            node = ix.node(ep.node.name)
            return _Source(netns=node.netns, label=f"node {node.name}", kind="node", node=node.name)
        if isinstance(ep, ExternalEndpoint):
            host = ix.hosts.get(ep.ip)
            if host is not None:
                return _Source(netns=host.netns, label=f"external {host.ip}", kind="ext")
            at_node = ix.node_ips.get(ep.ip)
            if at_node is not None:
                return _Source(
                    netns=at_node.netns,
                    label=f"node {at_node.name}",
                    kind="node",
                    node=at_node.name,
                )
            at_pod = ix.pod_ips.get(ep.ip)
            if at_pod is not None:
                return _Source(
                    netns=at_pod.netns,
                    label=f"pod {at_pod.key}@{at_pod.node}",
                    kind="pod",
                    node=at_pod.node,
                )
            if ep.ip in ix.service_ips:
                raise _Unresolved(f"{ep.ip} is a Service address in the lab; it cannot send")
            raise _NeedHost(_placeable(ep.ip))
        if isinstance(ep, ServiceEndpoint):
            raise _Unresolved(f"a Service ({ep.service.key}) cannot be the source of a probe")
        raise _Unresolved(f"unknown source endpoint {ep!r}")

    def _expecting(self, ix: _Index, index: int, target: Target) -> _Probe:
        probe = self._probe(ix, index, target)
        return replace(probe, expect=_expected_tokens(ix, target, probe.host))

    def _probe(self, ix: _Index, index: int, target: Target) -> _Probe:
        t = target.traffic
        src = self._source(ix, t.source)
        dst = t.destination
        protocol = Protocol(t.protocol)
        if isinstance(dst, PodEndpoint):
            pod = ix.pod(dst.pod.key)
            if isinstance(t.port, str):
                live = ix.live_pods.get(pod.key)
                ports = live.ports if live is not None else pod.ports
                named = [cp for cp in ports if cp.name == t.port]
                cp = next((c for c in named if c.protocol is protocol), named[0] if named else None)
                if cp is None:
                    raise _Unresolved(f"pod {pod.key} has no containerPort named {t.port!r}")
                return _Probe(
                    index=index, source=src, host=pod.ip, port=cp.port, protocol=cp.protocol
                )
            return _Probe(index=index, source=src, host=pod.ip, port=t.port, protocol=protocol)
        if isinstance(dst, NodeEndpoint):
            node = ix.node(dst.node.name)
            return _Probe(
                index=index, source=src, host=node.ip, port=_number(t.port), protocol=protocol
            )
        if isinstance(dst, ExternalEndpoint):
            if not ix.is_lab_address(dst.ip):
                raise _NeedHost(_placeable(dst.ip))
            return _Probe(
                index=index, source=src, host=dst.ip, port=_number(t.port), protocol=protocol
            )
        if isinstance(dst, ServiceEndpoint):
            svc = ix.services.get(dst.service.key)
            if svc is None:
                raise _Unresolved(f"Service {dst.service.key} is not in the lab")
            pinned = _pinned(ix, dst)
            if pinned is not None:  # the run's own Service, reaching exactly the backend meant
                svc = ix.services.get(pinned.key)
                if svc is None:
                    raise _Unresolved(f"the run Service for {dst.service.key} is not in the lab")
            sp = _service_port(svc, t.port, protocol)
            if dst.via is Via.CLUSTER_IP:
                if svc.cluster_ip in (None, "", "None"):
                    raise _Unresolved(f"Service {svc.key} has no ClusterIP (headless)")
                assert svc.cluster_ip is not None
                return _Probe(
                    index=index, source=src, host=svc.cluster_ip, port=sp.port, protocol=sp.protocol
                )
            receiving = self._receiving(ix, dst, src)
            if dst.via is Via.NODE_PORT:
                if sp.node_port is None:
                    raise _Unresolved(f"Service {svc.key} port {sp.port} has no nodePort")
                return _Probe(
                    index=index,
                    source=src,
                    host=receiving.ip,
                    port=sp.node_port,
                    protocol=sp.protocol,
                )
            if not svc.load_balancer_ips:
                raise _Unresolved(f"Service {svc.key} has no LoadBalancer IP")
            lb = svc.load_balancer_ips[0]
            route: tuple[str, str] | None = None
            if src.kind == "ext":
                route = (lb, f"via {receiving.ip} dev eth0")
            elif src.kind == "node":
                # kube-proxy handles a node's own traffic to an LB IP locally (nat OUTPUT);
                # the route only makes the address routable.
                own = src.node == receiving.name
                route = (lb, "dev eth0 scope link" if own else f"via {receiving.ip} dev eth0")
            return _Probe(
                index=index,
                source=src,
                host=lb,
                port=sp.port,
                protocol=sp.protocol,
                lb_route=route,
            )
        raise _Unresolved(f"unknown destination endpoint {dst!r}")

    def _receiving(self, ix: _Index, dst: ServiceEndpoint, src: _Source) -> LabNode:
        """The node that receives NodePort/LB traffic (docs/probes.md): the one named; else,
        for a LoadBalancer IP reached from a pod or node, the source's own node (its packets
        leave through it); else the node of the Service's first backend by pod key."""
        if dst.node is not None:
            return ix.node(dst.node.name)
        if dst.via is Via.LOAD_BALANCER and src.node is not None:
            return ix.node(src.node)
        backend = dst.backend
        if backend is None:
            svc = ix.services.get(dst.service.key, dst.service)
            backend = next(iter(ix.topo.snapshot.backends(svc)), None)
        if backend is not None and backend.key in ix.pods:
            return ix.node(ix.pods[backend.key].node)
        return ix.topo.nodes[0]

    # -- running

    def _resolve(
        self, targets: Sequence[Target], results: list[ProbeResult | None]
    ) -> list[_Probe]:
        """Resolve every target not yet answered; unknown external addresses get a host."""
        ix = _Index(self.topology())
        self._run_services.update(
            t.traffic.destination.service.key
            for t in targets
            if isinstance(t.traffic.destination, ServiceEndpoint)
            and run_owned(t.traffic.destination.service.labels)
        )
        extra = {
            t.traffic.destination.service.key: t.traffic.destination.service
            for t in targets
            if isinstance(t.traffic.destination, ServiceEndpoint)
            and t.traffic.destination.service.key not in ix.services
        }
        for t in targets:  # a user's Service with several backends: one run Service each
            dst = t.traffic.destination
            if isinstance(dst, ServiceEndpoint):
                pinned = _pinned(ix, dst)
                if pinned is not None:
                    self._run_services.add(pinned.key)  # removed at the end, as any run's
                    if pinned.key not in ix.services:
                        extra.setdefault(dst.service.key + "|" + pinned.key, pinned)
        if extra:  # the run's own Services (the planner's): created like a run would
            try:
                # never on an address the run probes as outside (it must be a host)
                outside = {
                    ep.ip
                    for t in targets
                    for ep in (t.traffic.source, t.traffic.destination)
                    if isinstance(ep, ExternalEndpoint)
                }
                ix = _Index(
                    add_services(
                        self.name, [extra[k] for k in sorted(extra)], avoid=sorted(outside)
                    )
                )
            except NetparityError as e:
                wanted = {k.split("|")[0] for k in extra}
                for i, t in enumerate(targets):
                    dst = t.traffic.destination
                    if isinstance(dst, ServiceEndpoint) and dst.service.key in wanted:
                        results[i] = _error(t, f"cannot create Service {dst.service.key}: {e}")
        probes: list[_Probe] = []
        missing: dict[int, str] = {}
        for i, target in enumerate(targets):
            if results[i] is not None:
                continue
            try:
                probes.append(self._expecting(ix, i, target))
            except _NeedHost as need:
                missing[i] = need.ip
            except _Unresolved as e:
                results[i] = _error(target, str(e))
        if not missing:
            return probes
        try:
            ix = _Index(add_hosts(self.name, sorted(set(missing.values()))))
        except NetparityError as e:
            for i, ip in missing.items():
                results[i] = _error(targets[i], f"cannot add an external host at {ip}: {e}")
            return probes
        for i in sorted(missing):
            try:
                probes.append(self._expecting(ix, i, targets[i]))
            except (_NeedHost, _Unresolved) as e:
                results[i] = _error(targets[i], str(e))
        return probes

    def run(
        self, targets: Sequence[Target], *, timeout: float, progress: Progress | None = None
    ) -> list[ProbeResult]:
        """Run every target, one agent process per source batch; results in input order."""
        results: list[ProbeResult | None] = [None] * len(targets)
        if not targets:
            return []
        try:
            if not timeout > 0:
                raise ClusterError(f"probe timeout must be positive, got {timeout}")
            st = self.state()
            if st.status != READY:
                raise ClusterError(f"lab {self.name} is {st.status} (process {st.pid}), not ready")
            probes = self._resolve(targets, results)
            agent = str(agent_path())
        except NetparityError as e:
            return [_error(t, str(e)) for t in targets]
        groups: dict[str, list[_SubBatch]] = {}
        for p in probes:
            subs = groups.setdefault(p.source.netns, [])
            for sub in subs:
                if p.lb_route is None or sub.routes.get(*p.lb_route) == p.lb_route[1]:
                    break
            else:
                sub = _SubBatch()
                subs.append(sub)
            if p.lb_route is not None:
                sub.routes[p.lb_route[0]] = p.lb_route[1]
            sub.probes.append(p)
        total = len(probes)
        done = 0
        if progress is not None:
            progress("probes", 0, total)
        if groups:
            with ThreadPoolExecutor(max_workers=min(self.parallel, len(groups))) as pool:
                futures = [
                    pool.submit(_run_source, self.name, ns, subs, timeout, agent)
                    for ns, subs in groups.items()
                ]
                try:
                    for f in as_completed(futures):
                        batch = f.result()
                        for p, r in batch:
                            observed, error = r.observed, r.error
                            if observed is Observed.CONNECTED and p.expect is not None:
                                why = _wrong_answer(r.token, p.expect, p.address)
                                if why is not None:
                                    observed, error = Observed.ERROR, why
                            results[p.index] = ProbeResult(
                                id=targets[p.index].id,
                                observed=observed,
                                token=r.token,
                                latency_ms=r.latency_ms,
                                error=error,
                                address=p.address,
                                source=p.source.label,
                            )
                        done += len(batch)
                        if progress is not None:
                            progress("probes", done, total)
                except BaseException:  # Ctrl-C, SIGTERM: sources not started never start
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        return [
            r if r is not None else _error(targets[i], "the lab returned no result")
            for i, r in enumerate(results)
        ]


def _agent_name(pod: LabPod) -> str:
    """The name a pod's agent answers with: its key, or its node's for a hostNetwork pod."""
    return f"node:{pod.node}" if pod.host_network else pod.key


def _expected_tokens(ix: _Index, target: Target, host: str) -> frozenset[str] | None:
    """Who may answer a probe to `host` (build.agent_specs names the agents); None: nobody
    of the lab's (an address outside it), so the answer is not checked."""
    dst = target.traffic.destination
    service: Service | None = None
    if isinstance(dst, ServiceEndpoint):
        service = ix.services.get(dst.service.key, dst.service)
    elif host in ix.pod_ips:
        return frozenset({ix.pod_ips[host].key})
    elif host in ix.node_ips:
        return frozenset({f"node:{ix.node_ips[host].name}"})
    elif host in ix.hosts:
        return frozenset({f"ext:{host}"})
    else:
        service = next(
            (
                s
                for s in ix.services.values()
                if host == s.cluster_ip or host in s.load_balancer_ips
            ),
            None,
        )
    if service is None:
        return None
    names = frozenset(
        _agent_name(ix.pods[p.key])
        for p in ix.live_pods.values()
        if p.key in ix.pods and service.selects(p)
    )
    return names or None


def _wrong_answer(token: str | None, expect: frozenset[str], where: str) -> str | None:
    if token in expect:
        return None
    return token_mismatch(token, " or ".join(sorted(expect)), where)


def _error(target: Target, reason: str) -> ProbeResult:
    return ProbeResult(id=target.id, observed=Observed.ERROR, error=reason)


def _number(port: int | str) -> int:
    if isinstance(port, str):
        raise _Unresolved(f"named port {port!r} only resolves on a pod")
    return port


def _service_ips(snapshot: Snapshot) -> set[str]:
    ips = {s.cluster_ip for s in snapshot.services if s.cluster_ip not in (None, "", "None")}
    ips |= {ip for s in snapshot.services for ip in s.load_balancer_ips}
    return {ip for ip in ips if ip is not None}


def _placeable(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise _Unresolved(f"invalid IP address {ip!r}") from None
    if addr.version != 4 or any(addr in n for n in _NO_HOST):
        raise _Unresolved(f"the lab cannot place an external host at {ip}")
    return ip


def _pinned(ix: _Index, dst: ServiceEndpoint) -> Service | None:
    """The run Service a probe through `dst` goes to when the Service has several backends
    and the probe means one of them (the lab's kube-proxy would pick its own); else None,
    and the probe goes through the Service itself."""
    if dst.backend is None:
        return None
    svc = ix.services.get(dst.service.key, dst.service)  # the planner's: not added yet
    if svc.type is ServiceType.EXTERNAL_NAME:
        return None
    backends = selected_pods(ix.topo.snapshot, svc)
    if len(backends) < 2 or dst.backend.key not in {p.key for p in backends}:
        return None
    return pinned_service(svc, dst.backend)


def _service_port(svc: Service, ref: int | str, protocol: Protocol) -> ServicePort:
    def matches(sp: ServicePort) -> bool:
        return (isinstance(ref, int) and sp.port == ref) or (
            isinstance(ref, str) and sp.name == ref
        )

    for sp in svc.ports:
        if matches(sp) and sp.protocol is protocol:
            return sp
    raise _Unresolved(f"Service {svc.key} has no {protocol} port {ref!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Raw:
    observed: Observed
    token: str | None = None
    latency_ms: float | None = None
    error: str | None = None


@contextlib.contextmanager
def _route_lock(lab: str, netns: str) -> Iterator[None]:
    """Serialise LB-route sub-batches of one source namespace across processes."""
    path = log_dir(lab) / f"{netns}.routes.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _run_source(
    lab: str, netns: str, subs: list[_SubBatch], timeout: float, agent: str
) -> list[tuple[_Probe, _Raw]]:
    out: list[tuple[_Probe, _Raw]] = []
    for sub in subs:
        with _route_lock(lab, netns) if sub.routes else contextlib.nullcontext():
            try:
                if sub.routes:
                    nx.ip_batch(
                        [f"route replace {ip}/32 {spec}" for ip, spec in sub.routes.items()],
                        netns=netns,
                        what=f"LoadBalancer routes in {netns}",
                    )
                raws = _agent_probe(netns, sub.probes, timeout, agent)
            except NetparityError as e:
                raws = [_Raw(observed=Observed.ERROR, error=str(e)) for _ in sub.probes]
            finally:
                if sub.routes:
                    nx.ip_batch_force([f"route del {ip}/32" for ip in sub.routes], netns=netns)
        out.extend(zip(sub.probes, raws, strict=True))
    return out


def _agent_probe(netns: str, probes: list[_Probe], timeout: float, agent: str) -> list[_Raw]:
    doc = {
        "timeout": timeout,
        "targets": [
            {"id": str(i), "host": p.host, "port": p.port, "protocol": str(p.protocol)}
            for i, p in enumerate(probes)
        ],
    }
    argv = [
        "ip",
        "netns",
        "exec",
        netns,
        *agent_python(),
        agent,
        "probe",
        "--timeout",
        str(timeout),
    ]
    wall = timeout * (math.ceil(len(probes) / 1000) + 1) + 20
    try:
        proc = subprocess.run(
            argv, input=json.dumps(doc), capture_output=True, text=True, timeout=wall, check=False
        )
    except subprocess.TimeoutExpired:
        return [
            _Raw(observed=Observed.ERROR, error=f"the agent gave no answer in {wall:.0f} s")
        ] * len(probes)
    by_id: dict[str, _Raw] = {}
    problem = None
    for line in proc.stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            problem = f"unreadable agent output: {line[:120]}"
            continue
        if not isinstance(item, dict):
            continue
        if "id" not in item:
            problem = str(item.get("error") or item)
            continue
        try:
            observed = Observed(str(item.get("observed")))
        except ValueError:
            observed = Observed.ERROR
        latency = item.get("latency_ms")
        by_id[str(item["id"])] = _Raw(
            observed=observed,
            token=item.get("token"),
            latency_ms=float(latency) if isinstance(latency, int | float) else None,
            error=item.get("error"),
        )
    if problem is None and proc.returncode != 0:
        problem = (
            proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        )
    missing = _Raw(
        observed=Observed.ERROR, error=f"the agent in {netns} gave no result ({problem})"
    )
    return [by_id.get(str(i), missing) for i in range(len(probes))]
