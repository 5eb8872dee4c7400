"""The responder: the one outside address probes go to on a real cluster (`--responder`).

A responder is the probe agent in serve mode (`probes/agent.py serve`) on a machine the
user controls, outside the cluster and reachable from its pods (or this machine itself
where pods can reach it). It is checked to answer on every port it is said to serve
before any probe relies on it; an outside destination that is not the responder, or a
port it does not serve, is predicted only (docs/kubernetes.md, "Outside probes").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from netparity.errors import ClusterError, InputError
from netparity.model.objects import Protocol

DEFAULT_TCP = (80, 443, 8080, 8443)
DEFAULT_UDP = (53,)
MAX_PORTS = 1024
RESPONDER_NAME = "netparity-responder"


@dataclass(frozen=True, slots=True, kw_only=True)
class Responder:
    ip: str
    tcp: tuple[int, ...] = DEFAULT_TCP
    udp: tuple[int, ...] = DEFAULT_UDP
    token: str | None = None  # the name it answered with when checked

    def serves(self, port: int, protocol: Protocol) -> bool:
        if protocol is Protocol.TCP:
            return port in self.tcp
        if protocol is Protocol.UDP:
            return port in self.udp
        return False

    @property
    def text(self) -> str:
        """As `--responder` takes it: ADDRESS:PORTS."""
        return f"{self.ip}:{','.join([*map(str, self.tcp), *(f'{p}/udp' for p in self.udp)])}"

    @property
    def command(self) -> str:
        """The one command that starts it (run on the responder's machine)."""
        parts = ["python3 probes/agent.py serve", f"--name {RESPONDER_NAME}"]
        if self.tcp:
            parts.append(f"--tcp {','.join(map(str, self.tcp))}")
        if self.udp:
            parts.append(f"--udp {','.join(map(str, self.udp))}")
        return " ".join(parts)


def _ports(text: str, where: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    tcp: set[int] = set()
    udp: set[int] = set()
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        body, _, proto = item.partition("/")
        if proto not in ("", "tcp", "udp"):
            raise InputError(f"{item!r} is not PORT, PORT/udp or LOW-HIGH", field=where)
        low_text, dash, high_text = body.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise InputError(f"{item!r} is not PORT, PORT/udp or LOW-HIGH", field=where) from None
        if not 1 <= low <= high <= 65535:
            raise InputError(f"{item!r} is not a port or range of 1-65535", field=where)
        (udp if proto == "udp" else tcp).update(range(low, high + 1))
    if not tcp and not udp:
        raise InputError("names no port", field=where)
    if len(tcp) + len(udp) > MAX_PORTS:
        raise InputError(f"names more than {MAX_PORTS} ports", field=where)
    return tuple(sorted(tcp)), tuple(sorted(udp))


def parse_responder(text: str, where: str = "--responder") -> Responder:
    """`ADDRESS[:PORTS]`: an IPv4 address, then TCP ports and ranges, `/udp` for UDP
    (`10.1.2.3:443,8080-8081,53/udp`); without ports, TCP 80,443,8080,8443 and UDP 53."""
    ip_text, colon, ports = text.strip().partition(":")
    try:
        ip = ipaddress.IPv4Address(ip_text)
    except ValueError:
        raise InputError(
            f"{text!r} does not start with an IPv4 address (ADDRESS[:PORTS])", field=where
        ) from None
    if ip.is_unspecified or ip.is_multicast:
        raise InputError(f"{ip} cannot be reached from the cluster's pods", field=where)
    if not colon:
        return Responder(ip=str(ip))
    tcp, udp = _ports(ports, where)
    return Responder(ip=str(ip), tcp=tcp, udp=udp)


def check_responder(responder: Responder, *, timeout: float = 3.0) -> Responder:
    """Ask the responder on every port it is said to serve, from this machine: each must
    answer with the agent's name (one name). Returns it with that name; else ClusterError
    in one sentence."""
    from netparity.kube.agentio import batch_document, parse_output, run_local

    items = [
        {"id": f"{proto}/{port}", "host": responder.ip, "port": port, "protocol": proto}
        for proto, ports in (("TCP", responder.tcp), ("UDP", responder.udp))
        for port in ports
    ]
    stdout, stderr, code = run_local(batch_document(timeout, items), timeout=timeout * 3 + 30)
    outcomes, complaint = parse_output(stdout, [str(it["id"]) for it in items])
    tokens: set[str] = set()
    silent: list[str] = []
    for it in items:
        got = outcomes.get(str(it["id"]))
        if got is None:
            why = complaint or (stderr.strip().splitlines() or [f"exit code {code}"])[-1]
            raise ClusterError(
                f"--responder {responder.text}: could not be checked from this machine ({why})"
            )
        if got.token is None:
            silent.append(f"{str(it['id']).lower()} {got.observed}")
        else:
            tokens.add(got.token)
    if silent:
        shown = ", ".join(silent[:5]) + (f" and {len(silent) - 5} more" if len(silent) > 5 else "")
        raise ClusterError(
            f"--responder {responder.text} does not answer as the probe agent on every port "
            f"({shown}): start `{responder.command}` on {responder.ip}, or leave "
            "--responder out (outside probes are then predicted only)"
        )
    if len(tokens) != 1:
        raise ClusterError(
            f"--responder {responder.text} answers with several names ({', '.join(sorted(tokens))}):"
            " more than one agent serves there"
        )
    return replace(responder, token=tokens.pop())
