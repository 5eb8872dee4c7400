"""One prober for every source of a lab run: the agent's own probing code (`probes/agent.py`,
imported, not a second implementation), driven from one process for all sources at once.

Each probe's socket is created inside its source's network namespace: the thread that runs
the event loop enters the namespace with setns(2), creates the socket and comes back (a
socket keeps the namespace it was created in; setns changes only the calling thread). Every
probe of every source then runs in the same event loop, concurrently: its timeout stays its
own, and a dropped probe costs one timeout in parallel with everything else. No process
starts per source batch (about 100 ms of CPU each with the agent).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import importlib.util
import os
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from netparity.errors import ClusterError
from netparity.lab.netns import NETNS_DIR
from netparity.lab.resolve import Probe

CLONE_NEWNET = 0x40000000
_LIBC: Any = None
_AGENTS: dict[Path, ModuleType] = {}
_LOCK = threading.Lock()


def load_agent(path: Path) -> ModuleType:
    """`probes/agent.py` as a module (once per path), for its probing functions."""
    with _LOCK:
        module = _AGENTS.get(path)
        if module is None:
            name = f"netparity_probe_agent_{len(_AGENTS)}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ClusterError(f"cannot load the probe agent {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # its dataclasses look their module up there
            try:
                spec.loader.exec_module(module)
                for needed in ("probe_one", "SOCKET_FACTORY", "raise_nofile_limit"):
                    if not hasattr(module, needed):
                        raise ClusterError(f"the probe agent {path} has no {needed}")
            except (Exception, SystemExit) as e:
                del sys.modules[name]
                if isinstance(e, ClusterError):
                    raise
                raise ClusterError(f"cannot load the probe agent {path}: {e!r}") from e
            _AGENTS[path] = module
        return module


def _setns(fd: int) -> None:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class _Namespace:
    """Makes sockets inside one network namespace from the calling thread."""

    def __init__(self, fd: int, home: int) -> None:
        self.fd = fd
        self.home = home

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        _setns(self.fd)
        try:
            return socket.socket(family, kind, proto)
        finally:
            _setns(self.home)  # failing to come back raises: this thread is no longer usable


def target_docs(probes: Sequence[Probe]) -> list[dict[str, Any]]:
    """The agent's target objects for `probes` (ids are their positions)."""
    return [
        {"id": str(i), "host": p.host, "port": p.port, "protocol": str(p.protocol)}
        | ({"check": p.check} if p.check is not None else {})
        for i, p in enumerate(probes)
    ]


def probe(
    batches: Sequence[tuple[str, Sequence[Probe]]], timeout: float, agent_file: Path
) -> list[list[dict[str, Any]]]:
    """Run every batch (source namespace, its probes) at once; for each batch, the agent's
    result objects in its probes' order. Runs in a thread of its own (setns and the event
    loop stay there)."""
    agent = load_agent(agent_file)
    out: list[list[dict[str, Any]]] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            out.extend(asyncio.run(_probe_all(agent, batches, timeout)))
        except BaseException as e:  # handed to the caller's thread
            error.append(e)

    thread = threading.Thread(target=run, name="netparity-prober", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return out


async def _probe_all(
    agent: ModuleType, batches: Sequence[tuple[str, Sequence[Probe]]], timeout: float
) -> list[list[dict[str, Any]]]:
    nofile = agent.raise_nofile_limit()
    limit = asyncio.Semaphore(max(1, min(agent.MAX_CONCURRENCY, nofile - 64)))
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fds: list[int] = []
    try:
        waits: list[asyncio.Future[list[dict[str, Any]]]] = []
        for netns, probes in batches:
            targets = target_docs(probes)
            try:
                fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                gone = f"the source namespace {netns} cannot be entered ({e.strerror})"
                waits.append(_given([{"observed": "error", "error": gone}] * len(targets)))
                continue
            fds.append(fd)
            token = agent.SOCKET_FACTORY.set(_Namespace(fd, home).socket)
            try:  # each task keeps the context (the namespace) it is created in
                tasks = [asyncio.ensure_future(agent.probe_one(t, timeout, limit)) for t in targets]
            finally:
                agent.SOCKET_FACTORY.reset(token)
            waits.append(asyncio.ensure_future(_gather(tasks)))
        return list(await asyncio.gather(*waits))
    finally:
        for fd in (*fds, home):
            os.close(fd)


async def _gather(tasks: list[asyncio.Future[dict[str, Any]]]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*tasks))


def _given(value: list[dict[str, Any]]) -> asyncio.Future[list[dict[str, Any]]]:
    future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
