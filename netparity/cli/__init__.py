"""The command line: thin subcommands over the same functions the pytest plugin uses.

Each subcommand lives in its own module with `register(subparsers)`; the parsed
namespace carries `func`, which returns the exit code. NetparityError -> exit 2;
Ctrl-C, SIGTERM and SIGHUP -> the same clean-up, exit 130, 143 or 129.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from netparity import __version__, interrupts
from netparity.errors import NetparityError

# Subcommand modules, in the order `netparity --help` lists them.
COMMANDS = (
    "predict",
    "explain",
    "plan",
    "lint",
    "lab",
    "snapshot",
    "cleanup",
    "rbac",
    "compare",
    "report",
    "demo",
    "watch",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, that subcommand alone (its module alone is
    imported: every module costs start-up time, the Kubernetes client's 0.4 s of CPU)."""
    parser = argparse.ArgumentParser(
        prog="netparity",
        description="Prove NetworkPolicy parity when an AKS cluster moves from Azure NPM to Cilium.",
    )
    parser.add_argument("--version", action="version", version=f"netparity {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if only is None else (only,):
        module = importlib.import_module(f"netparity.cli.{name.replace('-', '_')}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, exit_fast: bool = False) -> int:
    """Run one command; its exit code. `exit_fast` (the process's own entry, `entry`):
    a command that leaves nothing to tear down ends the process here (`_exit_now`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        with interrupts.signals_as_interrupt():  # SIGTERM, SIGHUP: the clean-up of Ctrl-C
            code: int = args.func(args)
    except NetparityError as e:
        print(f"netparity: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        sig = signal.Signals(interrupts.interrupt_signal()).name
        print(f"netparity: interrupted ({sig})", file=sys.stderr)
        return interrupts.exit_code()
    except BrokenPipeError:
        return _closed_pipe()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _closed_pipe()
    if exit_fast and getattr(args, "exit_fast", False):
        _exit_now(code)
    return code


def entry() -> None:
    """The `netparity` command and `python -m netparity`: `main`, as a process."""
    sys.exit(main(exit_fast=True))


def _exit_now(code: int) -> NoReturn:
    """End the process without freeing its heap object by object: `lint`, `plan` and
    `predict` hold millions of objects and nothing else (1.5 s of CPU at 20,000 pods went
    to taking them apart, as mypy's fast exit finds too). The exit handlers run and the
    output is flushed first, as at a normal exit."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # the reader went away, or the stream is closed: nothing more to say there
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _closed_pipe() -> int:
    """The reader went away (`netparity plan | head -1`): end quietly, as `yes | head` does.

    Python would report the failed flush of stdout at exit; pointing stdout at /dev/null
    first keeps that quiet. The exit code is the shell's for SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13


if __name__ == "__main__":
    entry()
