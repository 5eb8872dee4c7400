#!/usr/bin/env python3
"""netparity probe agent: one standard-library file that serves and probes.

The same file runs unchanged inside the lab's network namespaces and inside
Kubernetes probe pods (python:3.x-slim, non-root, read-only root filesystem: it
never writes a file).

``agent.py serve --name TOKEN [--tcp PORTS] [--udp PORTS] [--sctp PORTS]
[--bind ADDR]`` listens on every given port.  PORTS is a comma separated list
of ports and ranges (``80,8080,9000-9005``); each option may be repeated.

- TCP and SCTP: on accept, send ``TOKEN\\n`` and close.
- UDP: answer each datagram ``NONCE\\n`` with ``NONCE TOKEN\\n``.
- Prints ``ready`` on stdout once every listener is bound; SIGTERM/SIGINT exit 0.
- With ``--dns-answer ADDR`` (a lab's CoreDNS, the test cluster's DNS) it is
  also a minimal DNS server on its UDP and TCP ports: a DNS query gets a reply
  whose type-A answer for any name is ADDR (other types: NOERROR, no answer).
  On UDP a datagram that is a DNS query gets the DNS reply, any other the
  token line; on TCP a connection whose client sends a length-prefixed DNS
  query within DNS_TCP_WAIT seconds gets the reply, any other the token line.
- A TCP/UDP/SCTP port that cannot be bound: one stderr line, exit 2.  A kernel
  without SCTP: one stderr line, the other ports are still served.

``agent.py health --tcp PORT [--name TOKEN]`` exits 0 when the agent serving on
this host answers on loopback TCP PORT (with TOKEN), 2 otherwise: the exec
readiness and liveness probes of Kubernetes probe pods.

``agent.py probe [--timeout SECONDS]`` reads one JSON document on stdin::

    {"timeout": 2.0,
     "targets": [{"id": "p1", "host": "10.0.0.5", "port": 8080,
                  "protocol": "TCP", "source": "10.1.2.3"}]}

and tries every target concurrently, then writes one JSON object per target,
in input order, each echoing ``id``, ``host``, ``port`` and ``protocol``, with
``observed`` one of ``connected`` (plus ``token`` and ``latency_ms``),
``refused``, ``timeout`` or ``error`` (plus ``error``).  A document that cannot
be used at all gives a single ``{"error": "..."}`` line and exit status 2.

Essential probes (the only ones to real cluster services, both read-only) add
``"check"`` to a target: ``"dns"`` sends one DNS query (type A) for ``"name"``
(default ``kubernetes.default.svc.cluster.local``) over the target's UDP or
TCP and is ``connected`` when a reply with the query's id arrives (``token``:
the reply's rcode and answer count, e.g. ``NOERROR 1``); ``"connect"`` is a
TCP connect alone (``connected`` once accepted; no token is read).

The probing is importable: ``probe_all`` (or ``probe_one``) runs targets in the caller's
event loop, and the lab's one-process prober (``netparity/lab/prober.py``) drives it for
every source at once, creating each source's sockets in that source's network namespace
through ``SOCKET_FACTORY``. Every probe socket is made by ``new_socket``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import errno
import json
import math
import os
import resource
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

VERSION = "netparity-agent 1"
PROG = "netparity-agent"

IPPROTO_SCTP: int = getattr(socket, "IPPROTO_SCTP", 132)
SCTP_UNSUPPORTED_ERRNOS = frozenset(
    {errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EPFNOSUPPORT}
)
SCTP_UNSUPPORTED = "SCTP is not supported by this kernel"

PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_CONCURRENCY = 2000
LISTEN_BACKLOG = 4096
TOKEN_MAX_BYTES = 4096
UDP_SENDS = 3

EXIT_OK = 0
EXIT_FAIL = 2


def raise_nofile_limit() -> int:
    """Raise the RLIMIT_NOFILE soft limit to the hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        return soft
    return target


def errno_text(exc: OSError) -> str:
    """Render an OSError as ``[Errno N] text`` (or its str() when there is no errno)."""
    if exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"[Errno {exc.errno} {name}] {os.strerror(exc.errno)}"
    return str(exc) or type(exc).__name__


def family_of(address: str) -> socket.AddressFamily:
    """AF_INET6 for an address containing a colon, AF_INET otherwise."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


# --------------------------------------------------------------------------- serve


def parse_ports(specs: Sequence[str] | None, option: str) -> list[int]:
    """Parse repeated ``80,8080,9000-9005`` specs into a sorted, deduplicated list."""
    ports: set[int] = set()
    for spec in specs or ():
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            low_text, sep, high_text = item.partition("-")
            try:
                low = int(low_text)
                high = int(high_text) if sep else low
            except ValueError:
                raise ValueError(f"{option}: not a port or range: {item!r}") from None
            if not (1 <= low <= 65535 and 1 <= high <= 65535) or low > high:
                raise ValueError(f"{option}: invalid port or range: {item!r}")
            ports.update(range(low, high + 1))
    return sorted(ports)


class StreamTokenProtocol(asyncio.Protocol):
    """Send the token line to each accepted TCP/SCTP connection, then close it."""

    def __init__(self, line: bytes) -> None:
        self.line = line

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.WriteTransport, transport)
        stream.write(self.line)
        stream.close()

    def data_received(self, data: bytes) -> None:
        pass


class DatagramTokenProtocol(asyncio.DatagramProtocol):
    """Answer each datagram ``NONCE\\n`` with ``NONCE TOKEN\\n``."""

    def __init__(self, token: str, dns_addr: bytes | None = None) -> None:
        self.token = token
        self.dns_addr = dns_addr  # --dns-answer: a DNS query gets a DNS reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance() check: 3.11's selector datagram transport does not
        # inherit from asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.transport is None:
            return
        if self.dns_addr is not None:
            reply = dns_reply(data, self.dns_addr)
            if reply is not None:
                self.transport.sendto(reply, addr)
                return
        nonce = data[:512].decode("utf-8", "replace").strip()
        self.transport.sendto(f"{nonce} {self.token}\n".encode(), addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors about earlier replies (a prober that went away): ignore.
        pass


DNS_TCP_WAIT = 0.2  # seconds a TCP connection may take to send its DNS query (--dns-answer)


def dns_reply(query: bytes, answer: bytes) -> bytes | None:
    """The reply to a DNS `query` (None: not a DNS query): an A record `answer` (4 bytes)
    for a type-A question of class IN, NOERROR without an answer for other types, FORMERR
    for a question that cannot be read."""
    # A query: QR clear, opcode QUERY, one question, no answers (a token nonce is ASCII and
    # never holds the NUL bytes of these counts).
    if len(query) < 12 or query[2] & 0xF8 or query[4:8] != b"\x00\x01\x00\x00":
        return None
    pos = 12
    while pos < len(query) and query[pos] != 0:
        if query[pos] & 0xC0:  # a pointer cannot start a question
            pos = len(query)
            break
        pos += query[pos] + 1
    flags = bytes([0x84 | (query[2] & 0x01), 0x80])  # QR, AA, RD echoed; RA
    if pos + 5 > len(query):
        return query[:2] + bytes([flags[0], 0x81]) + b"\x00" * 8  # FORMERR, no question
    question = query[12 : pos + 5]
    qtype, qclass = question[-4:-2], question[-2:]
    found = qtype == b"\x00\x01" and qclass == b"\x00\x01"
    header = query[:2] + flags + b"\x00\x01" + (b"\x00\x01" if found else b"\x00\x00")
    header += b"\x00\x00\x00\x00"
    record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04" + answer if found else b""
    return header + question + record


class StreamDnsProtocol(asyncio.Protocol):
    """--dns-answer on TCP: a length-prefixed DNS query gets its reply; a client that sends
    nothing within DNS_TCP_WAIT (a token probe) or something else gets the token line."""

    def __init__(self, line: bytes, answer: bytes) -> None:
        self.line = line
        self.answer = answer
        self.buffer = b""
        self.transport: asyncio.WriteTransport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)
        self.timer = asyncio.get_running_loop().call_later(DNS_TCP_WAIT, self.finish, self.line)

    def finish(self, data: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < 2:
            return
        size = int.from_bytes(self.buffer[:2], "big")
        if len(self.buffer) < 2 + size:
            return
        reply = dns_reply(self.buffer[2 : 2 + size], self.answer)
        self.finish(self.line if reply is None else len(reply).to_bytes(2, "big") + reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


def bind_listener(protocol: str, bind: str, port: int) -> socket.socket | None:
    """Create and bind one listening socket.

    Returns None when the protocol is SCTP and the kernel has no SCTP; raises
    OSError for any other failure.
    """
    family = family_of(bind)
    if protocol == "UDP":
        sock = socket.socket(family, socket.SOCK_DGRAM)
    else:
        proto = socket.IPPROTO_TCP if protocol == "TCP" else IPPROTO_SCTP
        try:
            sock = socket.socket(family, socket.SOCK_STREAM, proto)
        except OSError as exc:
            if protocol == "SCTP" and exc.errno in SCTP_UNSUPPORTED_ERRNOS:
                return None
            raise
    try:
        if protocol != "UDP":
            # Not on UDP: on Linux SO_REUSEADDR lets a second UDP socket bind the
            # same port silently, which would hide an EADDRINUSE.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
        if protocol != "UDP":
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(
    token: str, bind: str, ports: dict[str, list[int]], dns_addr: bytes | None = None
) -> int:
    """Bind every listener, print ``ready``, serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    line = f"{token}\n".encode()
    bound: list[tuple[str, socket.socket]] = []
    sctp_missing: list[int] = []
    try:
        for protocol in PROTOCOLS:
            for port in ports[protocol]:
                try:
                    sock = bind_listener(protocol, bind, port)
                except OSError as exc:
                    print(
                        f"{PROG}: cannot bind {protocol} port {port} on {bind}: {errno_text(exc)}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return EXIT_FAIL
                if sock is None:
                    sctp_missing.append(port)
                else:
                    bound.append((protocol, sock))
        if sctp_missing:
            listed = ",".join(str(p) for p in sctp_missing)
            print(
                f"{PROG}: SCTP is not available in this kernel; not serving SCTP port(s) {listed}",
                file=sys.stderr,
                flush=True,
            )

        servers: list[asyncio.Server] = []
        transports: list[asyncio.BaseTransport] = []
        for protocol, sock in bound:
            if protocol == "UDP":
                udp_transport, _ = await loop.create_datagram_endpoint(
                    lambda: DatagramTokenProtocol(token, dns_addr), sock=sock
                )
                transports.append(udp_transport)
            else:
                servers.append(
                    await loop.create_server(
                        (
                            (lambda: StreamDnsProtocol(line, dns_addr))
                            if dns_addr is not None and protocol == "TCP"
                            else (lambda: StreamTokenProtocol(line))
                        ),
                        sock=sock,
                        backlog=LISTEN_BACKLOG,
                    )
                )
        with contextlib.suppress(BrokenPipeError):
            print("ready", flush=True)
        await stop.wait()
        for server in servers:
            server.close()
        for transport in transports:
            transport.close()
        return EXIT_OK
    finally:
        for _, sock in bound:
            sock.close()


def run_serve(args: argparse.Namespace) -> int:
    token: str = args.name
    if not token or any(c in token for c in "\r\n"):
        print(f"{PROG}: --name must be a non-empty single line", file=sys.stderr)
        return EXIT_FAIL
    try:
        ports = {
            "TCP": parse_ports(args.tcp, "--tcp"),
            "UDP": parse_ports(args.udp, "--udp"),
            "SCTP": parse_ports(args.sctp, "--sctp"),
        }
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if not any(ports.values()):
        print(f"{PROG}: serve needs at least one of --tcp, --udp, --sctp", file=sys.stderr)
        return EXIT_FAIL
    dns_addr = None
    if args.dns_answer is not None:
        try:
            dns_addr = socket.inet_pton(socket.AF_INET, args.dns_answer)
        except OSError:
            print(f"{PROG}: --dns-answer must be an IPv4 address", file=sys.stderr)
            return EXIT_FAIL
    raise_nofile_limit()
    return asyncio.run(serve(token, args.bind, ports, dns_addr))


# --------------------------------------------------------------------------- probe


class BadDocument(Exception):
    """The stdin document cannot be used at all (exit 2)."""


@dataclass
class Target:
    """One validated probe target."""

    host: str
    port: int
    protocol: str
    source: str | None


def elapsed_ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000.0, 3)


def parse_timeout(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadDocument(f"{what} must be a number of seconds")
    timeout = float(value)
    if not math.isfinite(timeout) or timeout <= 0:
        raise BadDocument(f"{what} must be a positive number of seconds")
    return timeout


def parse_document(raw: bytes, default_timeout: float) -> tuple[float, list[Any]]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadDocument(f"invalid JSON on stdin: {exc}") from None
    if not isinstance(doc, dict):
        raise BadDocument("the document must be a JSON object")
    targets = doc.get("targets")
    if not isinstance(targets, list):
        raise BadDocument('the document must have a "targets" list')
    timeout = default_timeout
    if doc.get("timeout") is not None:
        timeout = parse_timeout(doc["timeout"], '"timeout"')
    return timeout, targets


def validate_target(raw: object) -> Target | str:
    """A Target, or the text of why the target is invalid."""
    if not isinstance(raw, dict):
        return "invalid target: not a JSON object"
    host = raw.get("host")
    if not isinstance(host, str) or not host:
        return 'invalid target: "host" must be a non-empty string'
    port = raw.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return 'invalid target: "port" must be an integer 1-65535'
    protocol = raw.get("protocol", "TCP")
    if not isinstance(protocol, str) or protocol.upper() not in PROTOCOLS:
        return 'invalid target: "protocol" must be TCP, UDP or SCTP'
    source = raw.get("source")
    if source is not None and (not isinstance(source, str) or not source):
        return 'invalid target: "source" must be a non-empty string'
    return Target(host, port, protocol.upper(), source)


def echo(raw: object) -> dict[str, Any]:
    """The id/host/port/protocol fields every result repeats from its target."""
    fields = raw if isinstance(raw, dict) else {}
    protocol = fields.get("protocol", "TCP")
    if isinstance(protocol, str):
        protocol = protocol.upper()
    return {
        "id": fields.get("id"),
        "host": fields.get("host"),
        "port": fields.get("port"),
        "protocol": protocol,
    }


class ProbeError(Exception):
    """A target ends as observed=error with this text."""


SocketFactory = Callable[[int, int, int], socket.socket]
# How a probe's socket is made: socket.socket here; an importer that probes from several
# network namespaces sets it (per asyncio task: a task keeps the context it was made in).
SOCKET_FACTORY: contextvars.ContextVar[SocketFactory] = contextvars.ContextVar(
    "SOCKET_FACTORY", default=socket.socket
)


def new_socket(family: int, kind: int, proto: int = 0) -> socket.socket:
    """A probe socket, made by the current task's SOCKET_FACTORY."""
    return SOCKET_FACTORY.get()(family, kind, proto)


async def resolve(
    target: Target, sock_type: int, deadline: float
) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """Resolve the target to (family, sockaddr); IP literals never touch DNS."""
    try:
        infos = socket.getaddrinfo(
            target.host, target.port, type=sock_type, flags=socket.AI_NUMERICHOST
        )
    except socket.gaierror:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(target.host, target.port, type=sock_type),
                max(deadline - time.monotonic(), 0.001),
            )
        except TimeoutError:
            raise ProbeError(f"name resolution of {target.host!r} timed out") from None
        except OSError as exc:
            raise ProbeError(f"cannot resolve {target.host!r}: {exc}") from None
    if not infos:
        raise ProbeError(f"cannot resolve {target.host!r}")
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def bind_source(sock: socket.socket, source: str | None) -> None:
    if source is None:
        return
    try:
        sock.bind((source, 0))
    except (OSError, OverflowError) as exc:
        detail = errno_text(exc) if isinstance(exc, OSError) else str(exc)
        raise ProbeError(f"cannot bind source address {source!r}: {detail}") from None


async def probe_socket(
    target: Target, kind: int, deadline: float, proto: int = 0
) -> tuple[socket.socket, tuple[Any, ...]]:
    """A probe's socket (non-blocking, bound to the target's source address) and the
    address to send to; the socket is the caller's to close."""
    family, sockaddr = await resolve(target, kind, deadline)
    try:
        sock = new_socket(family, kind, proto)
    except OSError as exc:
        if proto == IPPROTO_SCTP and exc.errno in SCTP_UNSUPPORTED_ERRNOS:
            raise ProbeError(SCTP_UNSUPPORTED) from None
        raise ProbeError(f"cannot create socket: {errno_text(exc)}") from None
    try:
        sock.setblocking(False)
        bind_source(sock, target.source)
    except BaseException:
        sock.close()
        raise
    return sock, sockaddr


async def probe_stream(target: Target, timeout: float) -> dict[str, Any]:
    """TCP or SCTP: connect, then read the token line."""
    start = time.monotonic()
    deadline = start + timeout
    proto = socket.IPPROTO_TCP if target.protocol == "TCP" else IPPROTO_SCTP
    sock, sockaddr = await probe_socket(target, socket.SOCK_STREAM, deadline, proto)
    with sock:
        connect_start = time.monotonic()
        failed = await stream_connect(sock, sockaddr, deadline)
        if failed is not None:
            return {"observed": failed}
        latency = elapsed_ms(connect_start)
        token = await read_token_line(sock, deadline)
        return {"observed": "connected", "token": token, "latency_ms": latency}


async def stream_connect(
    sock: socket.socket, sockaddr: tuple[Any, ...], deadline: float
) -> str | None:
    """Connect a stream socket by the deadline: None once connected, else "timeout" or
    "refused" (other failures raise ProbeError)."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(
            loop.sock_connect(sock, sockaddr), max(deadline - time.monotonic(), 0.001)
        )
    except TimeoutError:
        if not connected_late(sock):
            return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        raise ProbeError(errno_text(exc)) from None
    return None


def connected_late(sock: socket.socket) -> bool:
    """At the deadline, did the connection complete all the same? On a busy machine the
    event loop can run late: the kernel completed the handshake in time (a policy drop
    never completes it), the loop had not looked yet. One look, not a longer wait."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def recv_late(sock: socket.socket) -> bytes | None:
    """At the deadline, what has arrived all the same (the loop ran late); None if nothing."""
    try:
        return sock.recv(TOKEN_MAX_BYTES)
    except OSError:  # BlockingIOError: nothing has
        return None


async def read_token_line(sock: socket.socket, deadline: float) -> str | None:
    """Read up to the first newline before the deadline; None if nothing usable."""
    loop = asyncio.get_running_loop()
    buf = b""
    while b"\n" not in buf and len(buf) < TOKEN_MAX_BYTES:
        remaining = deadline - time.monotonic()
        chunk: bytes | None = None
        if remaining > 0:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, TOKEN_MAX_BYTES), remaining)
            except TimeoutError:
                chunk = None
            except OSError:
                return None
        if chunk is None:
            chunk = recv_late(sock)
            if chunk is None:
                return None
        if not chunk:
            break
        buf += chunk
    if b"\n" not in buf:
        # The server closed (or overflowed) without a full line.
        return None
    token = buf.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return token or None


class UdpProbeProtocol(asyncio.DatagramProtocol):
    """Waits for the reply carrying one of our nonces, or for an ICMP error."""

    def __init__(self, nonces: dict[str, float]) -> None:
        self.nonces = nonces  # nonce -> monotonic time it was sent
        self.done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.done.done():
            return
        text = data.decode("utf-8", "replace").strip()
        nonce, _, rest = text.partition(" ")
        sent = self.nonces.get(nonce)
        if sent is None:
            return  # not an answer to us: keep waiting
        latency = round((time.monotonic() - sent) * 1000.0, 3)
        token = rest.strip() or None
        self.done.set_result({"observed": "connected", "token": token, "latency_ms": latency})

    def error_received(self, exc: Exception) -> None:
        if self.done.done():
            return
        if isinstance(exc, ConnectionRefusedError):
            self.done.set_result({"observed": "refused"})
        elif isinstance(exc, OSError):
            self.done.set_result({"observed": "error", "error": errno_text(exc)})
        else:
            self.done.set_result({"observed": "error", "error": str(exc)})


async def probe_udp(target: Target, timeout: float) -> dict[str, Any]:
    """UDP: send NONCE\\n up to UDP_SENDS times across the timeout on a connected socket."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    deadline = start + timeout
    sock, sockaddr = await probe_socket(target, socket.SOCK_DGRAM, deadline)
    try:
        # Connected, so that ICMP port-unreachable surfaces as ECONNREFUSED.
        sock.connect(sockaddr)
    except OSError as exc:
        sock.close()
        raise ProbeError(errno_text(exc)) from None
    except BaseException:
        sock.close()
        raise

    base = secrets.token_hex(8)
    nonces: dict[str, float] = {}
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: UdpProbeProtocol(nonces), sock=sock
    )
    try:
        step = (deadline - time.monotonic()) / UDP_SENDS
        for attempt in range(UDP_SENDS):
            nonce = f"np{base}.{attempt}"
            nonces[nonce] = time.monotonic()
            transport.sendto(f"{nonce}\n".encode())
            wait_until = deadline if attempt == UDP_SENDS - 1 else (time.monotonic() + step)
            await asyncio.wait({protocol.done}, timeout=max(wait_until - time.monotonic(), 0))
            if protocol.done.done():
                return protocol.done.result()
        while not protocol.done.done():  # what has arrived all the same (the loop ran late)
            try:
                protocol.datagram_received(sock.recv(65535), sockaddr)
            except ConnectionRefusedError as exc:
                protocol.error_received(exc)
            except OSError:  # BlockingIOError: nothing has
                break
        return protocol.done.result() if protocol.done.done() else {"observed": "timeout"}
    finally:
        transport.close()


# --------------------------------------------------------------------------- essential checks

DNS_DEFAULT_NAME = "kubernetes.default.svc.cluster.local"
DNS_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
CHECKS = ("dns", "connect")


def dns_query(name: str, query_id: int) -> bytes:
    """A DNS query (RD set) for the A record of `name`."""
    header = query_id.to_bytes(2, "big") + b"\x01\x00" + b"\x00\x01" + b"\x00" * 6
    labels = b"".join(
        len(part).to_bytes(1, "big") + part
        for part in (p.encode("ascii") for p in name.split("."))
        if part
    )
    return header + labels + b"\x00" + b"\x00\x01" + b"\x00\x01"


def dns_answer(reply: bytes, query_id: int) -> str | None:
    """`RCODE ANSWERS` of a reply to `query_id`, None where it is not one."""
    if len(reply) < 12 or int.from_bytes(reply[:2], "big") != query_id or not reply[2] & 0x80:
        return None
    rcode = reply[3] & 0x0F
    return f"{DNS_RCODES.get(rcode, str(rcode))} {int.from_bytes(reply[6:8], 'big')}"


async def probe_dns(target: Target, name: str, timeout: float) -> dict[str, Any]:
    """One DNS query over UDP (or TCP, length-prefixed); connected when a reply arrives."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    deadline = start + timeout
    tcp = target.protocol == "TCP"
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    sock, sockaddr = await probe_socket(target, kind, deadline)
    query_id = secrets.randbelow(0xFFFF) + 1
    query = dns_query(name, query_id)
    with sock:
        try:
            await asyncio.wait_for(
                loop.sock_connect(sock, sockaddr), max(deadline - time.monotonic(), 0.001)
            )
            await loop.sock_sendall(sock, (len(query).to_bytes(2, "big") + query) if tcp else query)
            while True:
                data = await asyncio.wait_for(
                    loop.sock_recv(sock, 65535), max(deadline - time.monotonic(), 0.001)
                )
                if tcp and not data:
                    return {"observed": "error", "error": "the DNS server closed without a reply"}
                answer = dns_answer(data[2:] if tcp else data, query_id)
                if answer is not None:
                    return {
                        "observed": "connected",
                        "token": answer,
                        "latency_ms": elapsed_ms(start),
                    }
        except TimeoutError:
            return {"observed": "timeout"}
        except ConnectionRefusedError:
            return {"observed": "refused"}
        except OSError as exc:
            raise ProbeError(errno_text(exc)) from None


async def probe_connect(target: Target, timeout: float) -> dict[str, Any]:
    """A TCP connect alone (the API server cannot answer a token): connected once accepted."""
    start = time.monotonic()
    deadline = start + timeout
    sock, sockaddr = await probe_socket(target, socket.SOCK_STREAM, deadline)
    with sock:
        failed = await stream_connect(sock, sockaddr, deadline)
        if failed is not None:
            return {"observed": failed}
        return {"observed": "connected", "token": None, "latency_ms": elapsed_ms(start)}


async def probe_check(raw: dict[str, Any], target: Target, timeout: float) -> dict[str, Any]:
    """An essential probe: raw["check"] is "dns" or "connect"."""
    check = raw.get("check")
    if check not in CHECKS:
        return {"observed": "error", "error": 'invalid target: "check" must be dns or connect'}
    if check == "connect":
        if target.protocol != "TCP":
            return {"observed": "error", "error": 'invalid target: "connect" is a TCP check'}
        return await probe_connect(target, timeout)
    if target.protocol == "SCTP":
        return {"observed": "error", "error": 'invalid target: "dns" is a UDP or TCP check'}
    name = raw.get("name", DNS_DEFAULT_NAME)
    if not isinstance(name, str) or not name.strip("."):
        return {"observed": "error", "error": 'invalid target: "name" must be a DNS name'}
    return await probe_dns(target, name, timeout)


async def probe_one(raw: object, timeout: float, limit: asyncio.Semaphore) -> dict[str, Any]:
    result = echo(raw)
    target = validate_target(raw)
    if isinstance(target, str):
        result.update(observed="error", error=target)
        return result
    async with limit:
        try:
            if isinstance(raw, dict) and raw.get("check") is not None:
                outcome = await probe_check(raw, target, timeout)
            elif target.protocol == "UDP":
                outcome = await probe_udp(target, timeout)
            else:
                outcome = await probe_stream(target, timeout)
        except ProbeError as exc:
            outcome = {"observed": "error", "error": str(exc)}
        except Exception as exc:  # one bad target must not sink the batch
            outcome = {"observed": "error", "error": f"{type(exc).__name__}: {exc}"}
    result.update(outcome)
    return result


async def probe_all(targets: list[Any], timeout: float, nofile: int) -> list[dict[str, Any]]:
    concurrency = max(1, min(MAX_CONCURRENCY, nofile - 64))
    limit = asyncio.Semaphore(concurrency)
    return await asyncio.gather(*(probe_one(raw, timeout, limit) for raw in targets))


def run_probe(args: argparse.Namespace) -> int:
    try:
        default_timeout = parse_timeout(args.timeout, "--timeout")
        timeout, targets = parse_document(sys.stdin.buffer.read(), default_timeout)
    except BadDocument as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return EXIT_FAIL
    nofile = raise_nofile_limit()
    results = asyncio.run(probe_all(targets, timeout, nofile))
    out = "".join(json.dumps(r) + "\n" for r in results)
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:
        return EXIT_FAIL
    return EXIT_OK


# --------------------------------------------------------------------------- health


def run_health(args: argparse.Namespace) -> int:
    """Exit 0 when the serving agent answers on loopback with the expected token."""
    try:
        with socket.create_connection(("127.0.0.1", args.tcp), timeout=args.timeout) as sock:
            sock.settimeout(args.timeout)
            data = b""
            while b"\n" not in data and len(data) < TOKEN_MAX_BYTES:
                chunk = sock.recv(TOKEN_MAX_BYTES)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        print(
            f"{PROG}: no agent answers on TCP port {args.tcp}: {errno_text(exc)}", file=sys.stderr
        )
        return EXIT_FAIL
    token = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    if args.name is not None and token != args.name:
        print(f"{PROG}: TCP port {args.tcp} answered {token!r}, not {args.name!r}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent.py", description="netparity probe agent (serve or probe)."
    )
    parser.add_argument("--version", action="version", version=VERSION)
    sub = parser.add_subparsers(dest="command", required=True)

    serve_p = sub.add_parser("serve", help="listen on ports and answer with a token")
    serve_p.add_argument("--name", required=True, help="token sent to every prober")
    serve_p.add_argument("--tcp", action="append", metavar="PORTS", help="e.g. 80,8080,9000-9005")
    serve_p.add_argument("--udp", action="append", metavar="PORTS")
    serve_p.add_argument("--sctp", action="append", metavar="PORTS")
    serve_p.add_argument("--bind", default="0.0.0.0", help="local address (default 0.0.0.0)")
    serve_p.add_argument(
        "--dns-answer",
        metavar="ADDR",
        help="also answer DNS queries on the UDP and TCP ports: type A with this IPv4 address",
    )
    serve_p.set_defaults(func=run_serve)

    probe_p = sub.add_parser("probe", help="probe the JSON batch of targets read on stdin")
    probe_p.add_argument(
        "--timeout", type=float, default=2.0, help="seconds per target (default 2.0)"
    )
    probe_p.set_defaults(func=run_probe)

    health_p = sub.add_parser(
        "health", help="exit 0 if the agent serving on this host answers with its token"
    )
    health_p.add_argument("--tcp", type=int, required=True, metavar="PORT")
    health_p.add_argument("--name", help="the token it must answer (default: any)")
    health_p.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2.0)")
    health_p.set_defaults(func=run_health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
