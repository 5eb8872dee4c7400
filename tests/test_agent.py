"""Behaviour of the probe agent (probes/agent.py), with real sockets and processes.

Everything talks to 127.0.0.1.  Drops are made real in a throw-away network
namespace with an iptables DROP rule (root only; deleted in a finalizer).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

AGENT = Path(__file__).resolve().parents[1] / "probes" / "agent.py"
TOKEN = "pod-a"
LOCAL = "127.0.0.1"
DROPPED_PORT = 9  # dropped by iptables inside the test namespace (TCP and UDP)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port that is free on 127.0.0.1 (for both TCP and UDP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((LOCAL, 0))
            port: int = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind((LOCAL, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def sctp_available() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


@contextmanager
def serving(args: Sequence[str], prefix: Sequence[str] = ()) -> Iterator[subprocess.Popen[str]]:
    """Run `agent.py serve ARGS`, wait for `ready`, stop it with SIGTERM afterwards."""
    proc = subprocess.Popen(
        [*prefix, sys.executable, str(AGENT), "serve", "--name", TOKEN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else ""
        if line != "ready\n":
            proc.kill()
            _, err = proc.communicate(timeout=5)
            pytest.fail(f"serve did not print ready (got {line!r}); stderr: {err}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def probe(
    targets: list[Any], timeout: float = 1.0, prefix: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Run `agent.py probe` on one batch; return the parsed result lines."""
    done = subprocess.run(
        [*prefix, sys.executable, str(AGENT), "probe"],
        input=json.dumps({"timeout": timeout, "targets": targets}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(targets)
    return results


def target(ident: str, port: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"id": ident, "host": LOCAL, "port": port, "protocol": protocol}


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, int]]:
    """One agent serving a TCP and a UDP port on 127.0.0.1: yields (tcp, udp)."""
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    with serving(["--bind", LOCAL, "--tcp", str(tcp), "--udp", str(udp)]):
        yield tcp, udp


@pytest.fixture(scope="module")
def netns() -> Iterator[list[str]]:
    """A fresh network namespace whose INPUT drops port 9: yields the exec prefix."""
    # Like every lab test: never skipped; without root or the tools it fails loudly.
    if os.geteuid() != 0:
        pytest.fail("a real drop needs a network namespace, which needs root", pytrace=False)
    if shutil.which("ip") is None or shutil.which("iptables") is None:
        pytest.fail(
            "ip and iptables are needed for a real drop (bash scripts/setup)", pytrace=False
        )
    name = f"np-agent-test-{os.getpid()}"
    prefix = ["ip", "netns", "exec", name]
    try:
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], check=True)
        for proto in ("tcp", "udp"):
            subprocess.run(
                [
                    *prefix,
                    "iptables",
                    "-A",
                    "INPUT",
                    "-p",
                    proto,
                    "--dport",
                    str(DROPPED_PORT),
                    "-j",
                    "DROP",
                ],
                check=True,
            )
        yield prefix
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


# ------------------------------------------------------------------ the CLI


def test_version_prints_the_agent_version() -> None:
    done = subprocess.run(
        [sys.executable, str(AGENT), "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "netparity-agent 1"


# ------------------------------------------------------------------ serve


def test_serve_answers_a_tcp_connection_with_its_token(server: tuple[int, int]) -> None:
    tcp, _ = server
    with socket.create_connection((LOCAL, tcp), timeout=5) as conn:
        data = b""
        while chunk := conn.recv(100):
            data += chunk
    assert data == b"pod-a\n"


def test_serve_answers_a_udp_nonce_with_the_nonce_and_its_token(
    server: tuple[int, int],
) -> None:
    _, udp = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"n0nce42\n", (LOCAL, udp))
        data, _ = s.recvfrom(100)
    assert data == b"n0nce42 pod-a\n"


def test_serve_accepts_port_ranges_and_repeated_options() -> None:
    first = free_port()
    ports = [first, first + 1, first + 2]
    for port in ports[1:]:
        try:
            with socket.socket() as s:
                s.bind((LOCAL, port))
        except OSError:
            pytest.skip("the ports after a free port are taken")
    other = free_port()
    args = ["--bind", LOCAL, "--tcp", f"{first}-{first + 2}", "--tcp", str(other)]
    with serving(args):
        results = probe([target(str(p), p) for p in [*ports, other]])
    assert [r["observed"] for r in results] == ["connected"] * 4


def test_serve_handles_hundreds_of_concurrent_connections(server: tuple[int, int]) -> None:
    tcp, _ = server
    results = probe([target(f"c{i}", tcp) for i in range(400)], timeout=3.0)
    assert {(r["observed"], r["token"]) for r in results} == {("connected", TOKEN)}


def test_serve_exits_0_on_sigint() -> None:
    with serving(["--bind", LOCAL, "--tcp", str(free_port())]) as proc:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0


def test_serve_exits_0_on_sigterm() -> None:
    with serving(["--bind", LOCAL, "--udp", str(free_port(socket.SOCK_DGRAM))]) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM], ids=["tcp", "udp"])
def test_serve_exits_2_naming_the_port_when_the_port_is_in_use(kind: socket.SocketKind) -> None:
    protocol = "TCP" if kind == socket.SOCK_STREAM else "UDP"
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind((LOCAL, 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                str(AGENT),
                "serve",
                "--name",
                TOKEN,
                "--bind",
                LOCAL,
                f"--{protocol.lower()}",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
    assert done.returncode == 2
    assert "ready" not in done.stdout
    assert f"{protocol} port {port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ probe


def test_probe_reports_connected_with_the_token_over_tcp_and_udp(
    server: tuple[int, int],
) -> None:
    tcp, udp = server
    results = probe([target("t", tcp), target("u", udp, "udp")])
    for result, protocol, port in zip(results, ["TCP", "UDP"], [tcp, udp], strict=True):
        assert result["observed"] == "connected"
        assert result["token"] == TOKEN
        assert isinstance(result["latency_ms"], float) and result["latency_ms"] >= 0
        assert (result["host"], result["port"], result["protocol"]) == (LOCAL, port, protocol)


def test_probe_reports_refused_for_a_closed_tcp_port() -> None:
    port = free_port()
    assert probe([target("closed", port)]) == [
        {"id": "closed", "host": LOCAL, "port": port, "protocol": "TCP", "observed": "refused"}
    ]


def test_probe_reports_refused_for_a_closed_udp_port() -> None:
    port = free_port(socket.SOCK_DGRAM)
    [result] = probe([target("closed", port, "UDP")], timeout=2.0)
    assert result["observed"] == "refused"  # the ICMP error: a timeout would say "timeout"
    assert result["protocol"] == "UDP"


def test_probe_writes_results_in_input_order_with_the_target_echoed(
    server: tuple[int, int],
) -> None:
    tcp, udp = server
    closed = free_port()
    targets = [target("a", closed), target("b", tcp), target("c", udp, "Udp"), target("d", tcp)]
    results = probe(targets)
    assert [r["id"] for r in results] == ["a", "b", "c", "d"]
    assert [r["observed"] for r in results] == ["refused", "connected", "connected", "connected"]
    assert results[2]["protocol"] == "UDP"


def test_probe_reports_error_for_an_invalid_target() -> None:
    targets = [
        {"id": "no-host", "port": 80},
        {"id": "bad-port", "host": LOCAL, "port": 70000},
        {"id": "bad-protocol", "host": LOCAL, "port": 80, "protocol": "ICMP"},
        "not an object",
    ]
    results = probe(targets)
    assert [r["observed"] for r in results] == ["error"] * 4
    assert all(r["error"].startswith("invalid target") for r in results)
    assert [r["id"] for r in results] == ["no-host", "bad-port", "bad-protocol", None]


def test_probe_binds_the_source_address_when_given(server: tuple[int, int]) -> None:
    tcp, _ = server
    good = {**target("good", tcp), "source": LOCAL}
    bad = {**target("bad", tcp), "source": "192.0.2.1"}  # not a local address
    results = probe([good, bad])
    assert results[0]["observed"] == "connected"
    assert results[1]["observed"] == "error"
    assert "192.0.2.1" in results[1]["error"]


@pytest.mark.parametrize(
    "stdin", ["{not json", '["a list"]', '{"targets": 3}', '{"timeout": -1, "targets": []}']
)
def test_probe_exits_2_with_a_single_error_object_on_a_bad_document(stdin: str) -> None:
    done = subprocess.run(
        [sys.executable, str(AGENT), "probe"], input=stdin, capture_output=True, text=True
    )
    assert done.returncode == 2
    [line] = done.stdout.splitlines()
    assert set(json.loads(line)) == {"error"}


@pytest.mark.skipif(sctp_available(), reason="this kernel has SCTP: see the SCTP round trip")
def test_probe_reports_sctp_unsupported_and_serve_still_serves_tcp() -> None:
    tcp, sctp = free_port(), free_port()
    with serving(["--bind", LOCAL, "--tcp", str(tcp), "--sctp", str(sctp)]) as proc:
        results = probe([target("s", sctp, "SCTP"), target("t", tcp)])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stderr is not None
        stderr = proc.stderr.read()
    assert results[0]["observed"] == "error"
    assert results[0]["error"] == "SCTP is not supported by this kernel"
    assert results[1]["observed"] == "connected" and results[1]["token"] == TOKEN
    [line] = stderr.strip().splitlines()
    assert "SCTP" in line and "not available in this kernel" in line and str(sctp) in line


@pytest.mark.skipif(not sctp_available(), reason="this kernel has no SCTP")
def test_probe_reports_connected_and_refused_over_real_sctp() -> None:
    sctp, closed = free_port(), free_port()
    with serving(["--bind", LOCAL, "--sctp", str(sctp)]):
        results = probe([target("s", sctp, "SCTP"), target("c", closed, "SCTP")])
    assert results[0]["observed"] == "connected" and results[0]["token"] == TOKEN
    assert results[1]["observed"] == "refused"


# ------------------------------------------------------------------ real drops


def test_probe_reports_timeout_for_dropped_targets_inside_a_namespace(netns: list[str]) -> None:
    tcp, udp, closed = free_port(), free_port(), free_port()
    with serving(["--tcp", str(tcp), "--udp", str(udp)], prefix=netns):
        started = time.monotonic()
        results = probe(
            [
                target("served-tcp", tcp),
                target("served-udp", udp, "UDP"),
                target("dropped-tcp", DROPPED_PORT),
                target("dropped-udp", DROPPED_PORT, "UDP"),
                target("closed-tcp", closed),
            ],
            timeout=1.0,
            prefix=netns,
        )
        wall = time.monotonic() - started
    assert [r["observed"] for r in results] == [
        "connected",
        "connected",
        "timeout",
        "timeout",
        "refused",
    ]
    assert results[0]["token"] == results[1]["token"] == TOKEN
    assert wall < 3.0


def test_a_batch_of_500_dropped_targets_finishes_in_about_one_timeout(netns: list[str]) -> None:
    targets = [target(f"d{i}", DROPPED_PORT) for i in range(500)]
    started = time.monotonic()
    results = probe(targets, timeout=1.0, prefix=netns)
    wall = time.monotonic() - started
    assert {r["observed"] for r in results} == {"timeout"}
    assert wall < 4.0


# ------------------------------------------------------------------ essential checks (#23)


@pytest.fixture
def dns_server() -> Iterator[tuple[int, list[bytes]]]:
    """A minimal DNS responder on 127.0.0.1 (UDP and TCP, one port): answers every query
    NOERROR with one answer; yields (port, the queries it got)."""
    import threading

    queries: list[bytes] = []
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((LOCAL, 0))
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((LOCAL, port))
    tcp.listen()
    udp.settimeout(0.2)
    tcp.settimeout(0.2)
    stop = threading.Event()

    def reply(query: bytes) -> bytes:
        queries.append(query)
        return query[:2] + b"\x81\x80" + b"\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:]

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = udp.recvfrom(512)
                udp.sendto(reply(data), addr)
            except TimeoutError:
                pass
            try:
                conn, _ = tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                data = conn.recv(512)
                answer = reply(data[2:])
                conn.sendall(len(answer).to_bytes(2, "big") + answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, queries
    finally:
        stop.set()
        thread.join(5)
        udp.close()
        tcp.close()


def test_a_dns_check_queries_the_name_over_udp_and_tcp_and_needs_an_answer(
    dns_server: tuple[int, list[bytes]],
) -> None:
    port, queries = dns_server
    silent = free_port(socket.SOCK_DGRAM)
    targets = [
        {**target("u", port, "UDP"), "check": "dns"},
        {
            **target("t", port, "TCP"),
            "check": "dns",
            "name": "kube-dns.kube-system.svc.cluster.local",
        },
        {**target("s", silent, "UDP"), "check": "dns"},
        {**target("x", port, "SCTP"), "check": "dns"},
        {**target("y", port, "UDP"), "check": "ping"},
    ]
    u, t, s, x, y = probe(targets, timeout=1.0)
    assert (u["observed"], u["token"]) == ("connected", "NOERROR 1")
    assert (t["observed"], t["token"]) == ("connected", "NOERROR 1")
    assert s["observed"] in ("refused", "timeout")
    assert x["observed"] == "error" and "UDP or TCP" in x["error"]
    assert y["observed"] == "error" and '"check"' in y["error"]
    assert any(b"\x0akubernetes\x07default\x03svc\x07cluster\x05local\x00" in q for q in queries)
    assert any(b"\x08kube-dns" in q for q in queries)


def test_a_connect_check_needs_only_an_accepted_connection() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOCAL, 0))
    listener.listen()
    closed = free_port()
    try:
        ok, refused, udp = probe(
            [
                {**target("a", listener.getsockname()[1]), "check": "connect"},
                {**target("b", closed), "check": "connect"},
                {**target("c", closed, "UDP"), "check": "connect"},
            ]
        )
    finally:
        listener.close()
    assert ok["observed"] == "connected" and ok["token"] is None
    assert refused["observed"] == "refused"
    assert udp["observed"] == "error" and "TCP check" in udp["error"]


def _a_record(reply: bytes) -> tuple[int, int, bytes]:
    """(rcode, answer count, the first answer's RDATA) of a DNS reply to one question."""
    pos = 12
    while reply[pos] != 0:
        pos += reply[pos] + 1
    pos += 5  # the root label, QTYPE, QCLASS
    count = int.from_bytes(reply[6:8], "big")
    if not count:
        return reply[3] & 0x0F, 0, b""
    assert reply[pos : pos + 2] == b"\xc0\x0c"  # the answer names the question
    rdlength = int.from_bytes(reply[pos + 10 : pos + 12], "big")
    return reply[3] & 0x0F, count, reply[pos + 12 : pos + 12 + rdlength]


def test_serve_with_dns_answer_is_a_dns_server_and_still_answers_tokens() -> None:
    """--dns-answer (the lab's CoreDNS): a DNS query over UDP or TCP gets an A record with
    the address; a token probe to the same ports still gets the token."""
    port = free_port()
    with serving(["--udp", str(port), "--tcp", str(port), "--dns-answer", "10.0.0.1"]):
        checks = probe(
            [
                {**target("u", port, "UDP"), "check": "dns"},
                {**target("t", port, "TCP"), "check": "dns"},
                target("tu", port, "UDP"),
                target("tt", port, "TCP"),
            ]
        )
        assert [(r["observed"], r["token"]) for r in checks] == [
            ("connected", "NOERROR 1"),
            ("connected", "NOERROR 1"),
            ("connected", TOKEN),
            ("connected", TOKEN),
        ]
        query = bytes.fromhex("abcd0100000100000000000003617069036e657400") + b"\x00\x01\x00\x01"
        aaaa = query[:-4] + b"\x00\x1c\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(query, (LOCAL, port))
            reply = s.recv(512)
            s.sendto(aaaa, (LOCAL, port))
            other = s.recv(512)
    assert reply[:2] == b"\xab\xcd" and reply[2] & 0x80  # the query's id, QR set
    assert _a_record(reply) == (0, 1, bytes([10, 0, 0, 1]))
    assert _a_record(other) == (0, 0, b"")  # AAAA: NOERROR, no answer


def test_serve_refuses_a_dns_answer_that_is_not_an_ipv4_address() -> None:
    done = subprocess.run(
        [
            *(sys.executable, str(AGENT), "serve", "--name", TOKEN, "--udp", "53"),
            *("--dns-answer", "not-an-ip"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "--dns-answer" in done.stderr
