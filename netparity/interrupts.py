"""SIGTERM and SIGHUP end a run the way Ctrl-C does: one place, for every command.

`signals_as_interrupt()` turns SIGTERM (what a CI cancel sends) and SIGHUP (a closed
terminal or SSH session) into the KeyboardInterrupt that SIGINT raises, so the clean-up
that already runs on Ctrl-C (a lab torn down, twins deleted, locks released) runs for them
too; the previous handlers come back at the end. The CLI's `main` and the pytest plugin
install it; nothing else does.

`run_child()` runs a child command (the demo's pytest runs) in a process group of its
own: on an interrupt the group gets SIGINT, then SIGKILL after a grace period, and the
child gets SIGTERM if this process dies without a word (SIGKILL). Nothing it started
outlives it.

`checkpoint()` is a test seam: with NETPARITY_FAULT_PAUSE=POINT in the environment, the
process stops at POINT (saying so on stderr) until a signal arrives, so that the
fault-injection tests (tests/test_lab_faults.py) can signal it at a known step.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType

PAUSE_ENV = "NETPARITY_FAULT_PAUSE"
_PR_SET_PDEATHSIG = 1

# The signals received since the handlers were installed, the first one first.
_received: list[int] = []


def interrupt_signal() -> int:
    """The signal that interrupted this process: SIGTERM, SIGHUP or (Ctrl-C) SIGINT."""
    return _received[0] if _received else int(signal.SIGINT)


def exit_code() -> int:
    """The shell's exit code for a process ended by that signal: 130, 143 or 129."""
    return 128 + interrupt_signal()


def _handler(signum: int, frame: FrameType | None) -> None:
    first = not _received
    _received.append(signum)
    if first or signum == signal.SIGINT:
        # A second SIGTERM or SIGHUP while the clean-up of the first interrupt runs is
        # ignored (SIGKILL still ends the process); Ctrl-C keeps its usual meaning.
        raise KeyboardInterrupt(signal.Signals(signum).name)


def _ours(sig: int, current: object) -> bool:
    """Take over a signal only where it would end the process: never one that is ignored
    (`nohup`, a background job's SIGINT) or that someone else handles."""
    if sig == signal.SIGINT:
        return current is signal.default_int_handler
    return current == signal.SIG_DFL


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, as SIGINT does, for
    the block; the previous handlers come back after it. Outside the main thread, or where
    a signal is ignored or handled already, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    _received.clear()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        current = signal.getsignal(sig)
        if _ours(sig, current):
            previous[sig] = signal.signal(sig, _handler)
    try:
        yield
    finally:
        for num, old in previous.items():
            signal.signal(num, old if old is not None else signal.SIG_DFL)


def install() -> Callable[[], None]:
    """signals_as_interrupt() for a span that is not one block (pytest's configure to
    unconfigure); returns the function that restores the previous handlers."""
    ctx = signals_as_interrupt()
    ctx.__enter__()

    def restore() -> None:
        ctx.__exit__(None, None, None)

    return restore


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def run_child(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    grace: float = 15.0,
) -> int:
    """Run `argv` to its end and return its exit code, in a process group of its own.

    On KeyboardInterrupt (Ctrl-C, or SIGTERM/SIGHUP under signals_as_interrupt) the group
    gets SIGINT, `grace` seconds to clean up, then SIGKILL; the interrupt is re-raised once
    the child has ended. Whatever the child left running in its group is killed too."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        process_group=0,
        preexec_fn=_die_with_parent,
    )
    try:
        _wait_no_reap(proc.pid)
    except BaseException:
        _signal_group(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not _exited(proc.pid):
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: still wait
                time.sleep(0.05)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    # The child has exited but is not reaped yet, so its pid (the group's id) cannot be
    # reused: whatever is left in the group is the child's and can go.
    _signal_group(proc.pid, signal.SIGKILL)
    return proc.wait()


def _wait_no_reap(pid: int) -> None:
    while True:
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            return
        except ChildProcessError:
            return
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue


def _exited(pid: int) -> bool:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
    except ChildProcessError:
        return True
    return info is not None


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def checkpoint(point: str) -> None:
    """Stop here until a signal arrives when NETPARITY_FAULT_PAUSE names this point (tests).

    SIGUSR1 resumes; any other signal acts as it would have here."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    resumed: list[int] = []
    in_main = threading.current_thread() is threading.main_thread()
    old: Callable[[int, FrameType | None], object] | int | None = None
    if in_main:
        old = signal.signal(signal.SIGUSR1, lambda s, f: resumed.append(s))
    try:
        print(f"netparity: paused at {point} (process {os.getpid()})", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 600
        while not resumed and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if in_main:
            signal.signal(signal.SIGUSR1, old if old is not None else signal.SIG_DFL)
