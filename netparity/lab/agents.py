"""Lab agents: which probe agent (`probes/agent.py serve`) runs in which namespace, with
which token, on which ports; starting them and reaping the ones this process started.
"""

from __future__ import annotations

import ipaddress
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from netparity.errors import ClusterError
from netparity.lab.state import AgentRecord, log_dir
from netparity.lab.topology import LabHost, LabTopology
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot

KUBELET_PORT = 10250
EXTERNAL_TCP = (80, 443, 8080, 8443)
EXTERNAL_UDP = (53,)
DNS_PORT = 53
API_SERVICE = "default/kubernetes"
_AGENT_READY_TIMEOUT = 30.0


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


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    """One `agent.py serve` to run: where, with which token, on which ports."""

    netns: str
    token: str
    what: str  # "pod x/a", "node n1", "host 203.0.113.10": for error messages
    tcp: tuple[int, ...] = ()
    udp: tuple[int, ...] = ()
    sctp: tuple[int, ...] = ()
    # a DNS server's pod (serves port 53): it answers DNS queries too, type A with this
    # address (`serve --dns-answer`), so that essential DNS probes get a real DNS answer
    dns_answer: str | None = None


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


def _ipv4(ip: str | None) -> bool:
    try:
        return ipaddress.ip_address(ip or "").version == 4
    except ValueError:
        return False


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
    # what the lab's DNS servers answer: the API server's ClusterIP, as CoreDNS would for
    # kubernetes.default.svc.cluster.local (else the DNS pod's own address)
    api = next(
        (s for s in topology.snapshot.services if s.key == API_SERVICE and s.cluster_ip), None
    )
    api_ip = api.cluster_ip if api is not None and _ipv4(api.cluster_ip) else None
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
        dns = DNS_PORT in by[Protocol.UDP] or DNS_PORT in by[Protocol.TCP]
        specs.append(
            AgentSpec(
                netns=pod.netns,
                token=pod.key,
                what=f"pod {pod.key}",
                tcp=by[Protocol.TCP],
                udp=by[Protocol.UDP],
                sctp=by[Protocol.SCTP],
                dns_answer=(api_ip or pod.ip) if dns and _ipv4(api_ip or pod.ip) else None,
            )
        )
    specs.extend(host_agent(h, topology.snapshot) for h in topology.hosts)
    return specs


# Agents started by this process, per lab, so that `down` can reap them (no zombies).
_CHILDREN: dict[str, list[subprocess.Popen[bytes]]] = {}
_CHILDREN_LOCK = threading.Lock()


_Started = tuple[AgentSpec, subprocess.Popen[bytes], Path]


def start_agents(
    lab: str, specs: Sequence[AgentSpec], progress: Callable[[int, int], None] | None = None
) -> tuple[AgentRecord, ...]:
    """Start every agent at once and wait for each `ready` line (a clear error otherwise)."""
    if not specs:
        return ()
    procs = _spawn(lab, specs)
    _await_ready(lab, procs, progress)
    return tuple(AgentRecord(pid=p.pid, netns=s.netns, token=s.token) for s, p, _ in procs)


def _spawn(lab: str, specs: Sequence[AgentSpec]) -> list[_Started]:
    agent = str(agent_path())
    logs = log_dir(lab)
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[_Started] = []
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
        if spec.dns_answer is not None:
            argv += ["--dns-answer", spec.dns_answer]
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
    return procs


def _await_ready(
    lab: str, procs: Sequence[_Started], progress: Callable[[int, int], None] | None
) -> None:
    sel = selectors.DefaultSelector()
    pending: dict[int, tuple[AgentSpec, subprocess.Popen[bytes], Path, bytearray]] = {}
    for spec, proc, log in procs:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        sel.register(proc.stdout, selectors.EVENT_READ)
        pending[proc.stdout.fileno()] = (spec, proc, log, bytearray())
    limit = _AGENT_READY_TIMEOUT + 0.1 * len(procs)
    deadline = time.monotonic() + limit
    done = 0
    try:
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                names = ", ".join(s.what for s, _, _, _ in list(pending.values())[:5])
                more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
                raise ClusterError(
                    f"lab {lab}: the probe agent of {names}{more} was not ready after {limit:.0f} s"
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
                        progress(done, len(procs))
                elif chunk == b"":
                    proc.wait(timeout=5)
                    text = log.read_text(errors="replace").strip().replace("\n", " / ")
                    raise ClusterError(
                        f"lab {lab}: the probe agent of {spec.what} ({spec.netns}) exited "
                        f"(status {proc.returncode}) before it was ready: {text or 'no message'}"
                    )
    finally:
        sel.close()


def reap_agents(lab: str) -> None:
    """Wait for (else kill) the agents this process started for `lab`: no zombies."""
    with _CHILDREN_LOCK:
        children = _CHILDREN.pop(lab, [])
    for child in children:
        try:
            child.wait(timeout=2)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=2)
