"""`pods/exec` over a websocket (v4.channel.k8s.io or v5.channel.k8s.io), as the official
client speaks it: channel 0 stdin, 1 stdout, 2 stderr, 3 the exit status, 255 (v5) close."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
Send = Callable[[int, bytes], None]


def ws_read_frame(rfile: Any) -> tuple[int, bytes] | None:
    head = rfile.read(2)
    if len(head) < 2:
        return None
    opcode = head[0] & 0x0F
    masked = head[1] & 0x80
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", rfile.read(2))
    elif length == 127:
        (length,) = struct.unpack(">Q", rfile.read(8))
    mask = rfile.read(4) if masked else b""
    data = rfile.read(length)
    if masked:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return int(opcode), bytes(data)


def ws_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
    return head + payload


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def choose_protocol(preferred: str, offered_header: str) -> str:
    offered = [p.strip() for p in offered_header.split(",") if p.strip()]
    if preferred in offered:
        return preferred
    return next((p for p in offered if p.endswith("channel.k8s.io")), "")


def exit_status(code: int) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _pump(stream: IO[bytes], channel: int, send: Send) -> None:
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            return
        send(0x2, bytes([channel]) + chunk)


def _read_client(rfile: Any, proc: subprocess.Popen[bytes], proto: str, send: Send) -> None:
    stdin = proc.stdin
    assert stdin is not None
    while True:
        try:
            frame = ws_read_frame(rfile)
        except OSError:
            frame = None
        if frame is None or frame[0] == 0x8:
            if proc.poll() is None:
                proc.kill()
            return
        opcode, data = frame
        if opcode == 0x9:
            send(0xA, data)
            continue
        if not data:
            continue
        channel, payload = data[0], data[1:]
        if channel == 255 and proto.startswith("v5") and payload[:1] == b"\x00":
            with contextlib.suppress(OSError):
                stdin.close()
        elif channel == 0 and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.write(payload)
                stdin.flush()


def run_session(conn: socket.socket, rfile: Any, argv: Sequence[str], proto: str) -> None:
    """Run `argv` with the websocket as its stdin, stdout and stderr; send its exit status."""
    lock = threading.Lock()

    def send(opcode: int, payload: bytes) -> None:
        with lock, contextlib.suppress(OSError):
            conn.sendall(ws_frame(opcode, payload))

    proc = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, 1, send), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, 2, send), daemon=True),
    ]
    for t in pumps:
        t.start()
    reader = threading.Thread(target=_read_client, args=(rfile, proc, proto, send), daemon=True)
    reader.start()
    code = proc.wait()
    for t in pumps:
        t.join(timeout=5)
    send(0x2, bytes([3]) + json.dumps(exit_status(code)).encode())
    send(0x8, struct.pack(">H", 1000))
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    for s in (proc.stdin, proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            s.close()


def send_failure(conn: socket.socket, failure: dict[str, Any]) -> None:
    """An exec the kubelet could not start: its Status on channel 3, then close."""
    with contextlib.suppress(OSError):
        conn.sendall(ws_frame(0x2, bytes([3]) + json.dumps(failure).encode()))
        conn.sendall(ws_frame(0x8, struct.pack(">H", 1000)))
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
