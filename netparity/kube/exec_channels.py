"""One exec's websocket, once open: feed it, read its channels, understand its Status.

Works on the socket the official client hands back without importing `kubernetes`
(only `netparity.kube.client` does).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Seconds the exec websocket handshake may take: the API server dials the kubelet (on AKS
# through the konnectivity tunnel) before it answers 101; a stuck tunnel never answers.
EXEC_HANDSHAKE_TIMEOUT = 30.0
# Seconds an exec may take beyond its command's limit to close its socket.
EXEC_CLOSE_SLACK = 10.0

STDOUT_CHANNEL = 1
STDERR_CHANNEL = 2
ERROR_CHANNEL = 3
V5_CHANNEL_PROTOCOL = "v5.channel.k8s.io"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    """What one exec gave back: its output, exit code (None: unknown) and any failure."""

    stdout: str
    stderr: str
    exit_code: int | None
    error: str | None = None
    message: str | None = None  # what a failed exec's Status said (why the command failed)


def run_bounded(
    attempt: Callable[[threading.Event, threading.Event], ExecResult],
    *,
    where: str,
    timeout: float,
    handshake_timeout: float,
) -> ExecResult:
    """Run one exec `attempt` in a thread of its own and never hang waiting for it.

    `attempt(shaken, abandoned)` sets `shaken` once its handshake is over and checks
    `abandoned` before it drives the socket. An attempt still stuck when its time is up is
    abandoned, and the caller gets an error (naming the pod `where`) that says which stage hung.
    """
    shaken = threading.Event()
    finished = threading.Event()
    abandoned = threading.Event()
    box: dict[str, ExecResult] = {}

    def work() -> None:
        try:
            box["result"] = attempt(shaken, abandoned)
        except Exception as e:  # never let a thread die silently
            box["result"] = ExecResult(
                stdout="",
                stderr="",
                exit_code=None,
                error=f"exec in pod {where} failed: {e}",
            )
        finally:
            shaken.set()
            finished.set()

    worker = threading.Thread(target=work, name=f"exec {where}", daemon=True)
    worker.start()
    if not shaken.wait(handshake_timeout):
        abandoned.set()
        return ExecResult(
            stdout="",
            stderr="",
            exit_code=None,
            error=(
                f"exec in pod {where}: the API server did not complete the exec "
                f"handshake within {handshake_timeout:g} s (its connection to the kubelet "
                f"of the pod's node hangs; on AKS check the konnectivity-agent pods in "
                f"kube-system)"
            ),
        )
    if not finished.wait(timeout + EXEC_CLOSE_SLACK):
        abandoned.set()
        return ExecResult(
            stdout="",
            stderr="",
            exit_code=None,
            error=(
                f"exec in pod {where}: the connection gave no end within "
                f"{timeout + EXEC_CLOSE_SLACK:g} s (the command's limit plus "
                f"{EXEC_CLOSE_SLACK:g} s to close)"
            ),
        )
    return box["result"]


def drive(ws: Any, stdin: str, timeout: float) -> ExecResult:
    """Feed an open exec websocket `stdin`, read it until it closes or `timeout` passes."""
    broke: str | None = None
    deadline = time.monotonic() + timeout
    try:
        ws.write_stdin(stdin)
        if getattr(ws, "subprotocol", None) == V5_CHANNEL_PROTOCOL and hasattr(ws, "close_channel"):
            ws.close_channel(
                0
            )  # v5 can say "stdin is over"; v4 cannot (the command reads one line)
        while ws.is_open():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ws.update(timeout=min(remaining, 1.0))
    except Exception as e:  # the connection broke: keep whatever output arrived
        broke = f"the exec connection broke: {e}"
    finished = broke is None and not ws.is_open()
    stdout = read_channel(ws, STDOUT_CHANNEL)
    stderr = read_channel(ws, STDERR_CHANNEL)
    status_text = read_channel(ws, ERROR_CHANNEL)
    if broke is None and not finished:
        broke = f"the command did not finish within {timeout:g} s"
    code = exit_code_of(status_text) if finished else None
    message = status_message_of(status_text)
    if code is None and message is not None:
        # a Failure without an exit code: the command never ran (e.g. no such executable);
        # the server then closes at once, so feeding stdin may have broken the socket too
        broke = f"the exec failed: {message}"
    return ExecResult(
        stdout=stdout,
        stderr=stderr,
        exit_code=code,
        error=broke,
        message=message,
    )


def read_channel(ws: Any, channel: int) -> str:
    try:
        return str(ws.read_channel(channel, timeout=0) or "")
    except Exception:  # a broken socket: nothing more to read
        return ""


@contextmanager
def closing(ws: Any) -> Iterator[Any]:
    try:
        yield ws
    finally:
        ws.close()


def exit_code_of(status_text: str) -> int | None:
    """The exit code an exec's error channel reports (a v1 Status), None if it says nothing."""
    if not status_text.strip():
        return None
    try:
        status = json.loads(status_text)
    except ValueError:
        return None
    if not isinstance(status, dict):
        return None
    if status.get("status") == "Success":
        return 0
    details = status.get("details") if isinstance(status.get("details"), dict) else {}
    assert isinstance(details, dict)
    for cause in details.get("causes") or ():
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", ""))
            except ValueError:
                return None
    return None


def status_message_of(status_text: str) -> str | None:
    """What a failed exec's Status (its error channel) says, None on success or silence."""
    try:
        status = json.loads(status_text) if status_text.strip() else None
    except ValueError:
        return status_text.strip()[:500] or None
    if not isinstance(status, dict) or status.get("status") == "Success":
        return None
    message = status.get("message")
    if isinstance(message, str) and message.strip():
        return message.strip()
    reason = status.get("reason")
    return str(reason) if reason else None
