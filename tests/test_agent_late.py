"""The probe agent's last look at its deadline: on a busy machine the event loop can run
past a probe's deadline while the kernel has already completed the connection or received
the answer. That is a connection (a policy drop never completes one), not a timeout, and an
answer that has arrived is read, not reported as "something else answered"."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from netparity.lab.prober import load_agent

AGENT = load_agent(Path(__file__).resolve().parents[1] / "probes" / "agent.py")


def test_a_token_that_arrived_is_read_even_when_the_loop_looks_after_the_deadline() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.sendall(b"pod-a\n")
        late = time.monotonic() - 1.0  # the loop got to it a second after the deadline
        assert asyncio.run(AGENT.read_token_line(ours, late)) == "pod-a"


def test_nothing_arrived_by_a_late_look_is_no_token() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        assert asyncio.run(AGENT.read_token_line(ours, time.monotonic() - 1.0)) is None


def test_a_completed_connection_counts_at_the_deadline_and_a_pending_one_does_not() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), timeout=10) as done:
            assert AGENT.connected_late(done)
    with socket.socket() as never:
        never.setblocking(False)
        assert not AGENT.connected_late(never)
