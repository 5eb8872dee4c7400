"""The lint's walk on several cores (issue 19): the same findings, byte for byte, sooner.

The walk is a list of units (each pod class, then each Service). What observing one adds
to the Linters' findings depends on that unit alone (netparity.lint.gather), so processes
can share the units: each takes the next unit from a pipe of unit numbers and logs what
observing it adds instead of adding it (`log`). A helper sends each unit's logs to this
process as it finishes it; this process adds the logs in the units' order as soon as the
units before are in (`apply`), so that what it adds is what a walk on one core would have
added, in the same order.

A helper is a fork: it shares the snapshot, the engine and their caches as they are, and
never returns into the caller's code. It ends with `os._exit` (none of the caller's
clean-up runs in it), dies with this process (PR_SET_PDEATHSIG), and is killed when this
one is interrupted. Its logs travel pickled, with their reasons written and the
snapshot's pods, nodes and Services as their place in it, so that the findings hold this
process's own objects. A unit a helper took and did not send (it failed, or was killed)
is observed here.

Not multiprocessing's Pool nor concurrent.futures: this process walks units too (in a
pool it would only collect, a third process on two cores), the logs are pickled our way
(the snapshot's objects by place, dataclasses by field), a killed worker leaves
`Pool.imap` waiting forever and `ProcessPoolExecutor` raising BrokenProcessPool with the
results not yet collected lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import io
import os
import queue
import signal
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from netparity.lint import pickling
from netparity.lint.gather import Effect, written
from netparity.model.snapshot import Snapshot

_PR_SET_PDEATHSIG = 1
_F_SETPIPE_SZ = 1031
MAX_JOBS = 8
_TOKENS = 16384  # unit numbers the pipe holds before a write blocks (64 KiB)
_TOKEN = struct.Struct("=I")
# Below this many pods a walk stays on one core: a fork costs more than it saves.
MIN_PODS = 2000

B = TypeVar("B")
Logs = list[list[Effect]]  # a unit's effects, one list per observer


class Observer(Protocol):
    """What the walk needs of a Linter (netparity.lint.lint)."""

    log: list[Effect] | None
    connections: int

    def apply(self, effect: Effect) -> None: ...


def jobs_available() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_jobs(snapshot: Snapshot) -> int:
    """Two processes where the cluster is large enough and two cores are there, else one
    (more only when asked: each helper's copy of what it touches costs memory)."""
    if len(snapshot.pods) < MIN_PODS:
        return 1
    return min(2, jobs_available())


def walk(
    snapshot: Snapshot,
    units: int,
    unit: Callable[[int], int],
    observers: Sequence[Observer],
    tick: Callable[[int], None],
    jobs: int,
) -> int:
    """Observe units 0..units-1 (`unit(i)` returns a count, summed), on `jobs` processes
    (this one and jobs-1 helpers, at most MAX_JOBS in all); `tick(done)` as units are
    observed."""
    if jobs >= 2 and units >= 2 and _may_fork():
        try:
            work = _Units(units)
        except OSError:  # no pipe to be had, or one too small for the unit numbers
            pass
        else:
            return _Parent(snapshot, units, unit, observers, tick).run(
                work, min(jobs, MAX_JOBS) - 1
            )
    total = 0
    for i in range(units):
        total += unit(i)
        tick(i + 1)
    return total


class Beside(Generic[B]):
    """there() in a helper forked now, its result taken when asked (`result`, pickled as
    the walk's logs are), or made then, here, where no helper could be had (`jobs` < 2, no
    process, no pipe) or the one forked failed. It must not need what this process does
    meanwhile. Fork it before the walk: the walk's helper shares every page anyway, so it
    costs the walk no copied page. (Forked after the walk, beside the fixes, it made the
    lint of 50,000 pods on 20 nodes slower, 80.2 s against 67.9 s: each page either
    process then writes is copied, a reference counted, an allocator's pool filled, and
    both read most of the heap.)"""

    def __init__(self, snapshot: Snapshot, there: Callable[[], B], jobs: int) -> None:
        self.there = there
        self.lookup = pickling.lookup(snapshot)
        self.pid: int | None = None
        self.read: int | None = None
        if jobs < 2 or not _may_fork():
            return
        try:
            read, write = os.pipe()
        except OSError:
            return
        try:
            pid = os.fork()
        except OSError:  # no process to be had (a pids limit, no memory): made here
            os.close(read)
            os.close(write)
            return
        if pid == 0:  # the helper: never returns
            os.close(read)
            _helper(lambda: _send(write, pickling.Reducers(snapshot), there()))
        os.close(write)
        self.pid, self.read = pid, read

    def result(self) -> B:
        if self.read is None:
            return self.there()
        try:
            theirs = _result(self.read, self.lookup)
        finally:
            self.close()
        return self.there() if theirs is None else theirs[0]

    def close(self) -> None:
        """The helper ended (at once where it still runs) and its pipe closed."""
        if self.read is not None:
            os.close(self.read)
            self.read = None
        if self.pid is not None:
            _reap(self.pid)
            self.pid = None


def _result(read: int, lookup: Callable[[str, int], object]) -> tuple[Any] | None:
    """The one message that comes through `read` (None: it did not come whole)."""
    data = bytearray()
    while chunk := os.read(read, 1 << 20):
        data += chunk
    if (
        len(data) < pickling.FRAME.size
        or pickling.FRAME.unpack_from(data)[0] != len(data) - pickling.FRAME.size
    ):
        return None
    return (pickling.Unpickler(io.BytesIO(memoryview(data)[pickling.FRAME.size :]), lookup).load(),)


def _may_fork() -> bool:
    # Linux's: PR_SET_PDEATHSIG. A fork copies only this thread: a lock another thread
    # holds would stay held in the copy.
    return sys.platform == "linux" and threading.active_count() == 1


def _logged(i: int, unit: Callable[[int], int], observers: Sequence[Observer]) -> tuple[Logs, int]:
    """Unit i observed, what it adds logged; and its count."""
    logs: Logs = [[] for _ in observers]
    for observer, log in zip(observers, logs, strict=True):
        observer.log = log
    try:
        count = unit(i)
    finally:
        for observer in observers:
            observer.log = None
    return logs, count


class _Units:
    """The units to take, as a pipe of chunk numbers both processes read (a read of a few
    bytes from a pipe is whole: no lock to be left held by a process that dies)."""

    def __init__(self, units: int) -> None:
        self.units = units
        self.chunk = -(-units // _TOKENS)
        self.read, write = os.pipe()
        try:
            data = b"".join(_TOKEN.pack(c) for c in range(-(-units // self.chunk)))
            # 64 KiB fits a pipe, except where the user's pipes already hold more than
            # pipe-user-pages-soft (each new one then gets a page): never wait for a reader
            os.set_blocking(write, False)
            if os.write(write, data) != len(data):
                raise BlockingIOError("the pipe holds fewer unit numbers than the walk has")
        except OSError:
            os.close(self.read)
            raise
        finally:
            os.close(write)

    def take(self) -> range:
        """The next chunk of units (empty: none left)."""
        got = os.read(self.read, _TOKEN.size)
        if len(got) < _TOKEN.size:
            return range(0)
        start = _TOKEN.unpack(got)[0] * self.chunk
        return range(start, min(start + self.chunk, self.units))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.read)


class _Parent:
    """This process's side of a walk on several: its units, the others' as they come,
    every unit's logs added in order."""

    def __init__(
        self,
        snapshot: Snapshot,
        units: int,
        unit: Callable[[int], int],
        observers: Sequence[Observer],
        tick: Callable[[int], None],
    ) -> None:
        self.snapshot, self.units, self.unit = snapshot, units, unit
        self.observers, self.tick = observers, tick
        self.logs: dict[int, Logs] = {}
        self.added = 0  # units 0..added-1 are added
        self.done = 0  # units observed, here or there
        self.total = 0
        self.buffers: dict[int, bytearray] = {}  # per pipe, what came of a message
        self.lookup = pickling.lookup(snapshot)

    def run(self, work: _Units, helpers: int) -> int:
        children: dict[int, int] = {}  # pid -> the pipe its logs come through
        try:
            for _ in range(helpers):
                try:
                    read, write = os.pipe()
                except OSError:  # too many files open: fewer helpers
                    break
                with contextlib.suppress(OSError):
                    fcntl.fcntl(write, _F_SETPIPE_SZ, 1 << 20)  # a helper rarely waits
                try:
                    pid = os.fork()
                except OSError:  # no process to be had (a pids limit, no memory): fewer
                    os.close(read)
                    os.close(write)
                    break
                if pid == 0:  # a helper: never returns
                    for fd in (read, *children.values()):
                        os.close(fd)
                    _child(self.snapshot, work, self.unit, self.observers, write)
                os.close(write)
                os.set_blocking(read, False)
                children[pid] = read
                self.buffers[read] = bytearray()
            while chunk := work.take():
                for i in chunk:
                    logs, count = _logged(i, self.unit, self.observers)
                    # added at once where it is next; else kept until it is, without the
                    # verdicts (their reasons written): a helper's long unit can hold
                    # back thousands of this process's
                    self.logs[i] = logs if i == self.added else _written(logs)
                    self.total += count
                    self._finished()
                    self._add()
                for read in children.values():
                    self._receive(read)
            for read in children.values():
                os.set_blocking(read, True)
                self._receive(read)  # to its end
        finally:
            work.close()
            for pid, read in children.items():
                os.close(read)
                _reap(pid)
        for i in range(self.units):  # a unit a helper took and did not send
            if i not in self.logs and i >= self.added:
                self.logs[i], count = _logged(i, self.unit, self.observers)
                self.total += count
                self._finished()
        self._add()
        return self.total

    def _finished(self) -> None:
        self.done += 1
        self.tick(self.done)

    def _receive(self, read: int) -> None:
        """A helper's messages that are in (all of them, to its end, where `read`
        blocks), and the logs that are next added."""
        while True:
            try:
                data = os.read(read, 1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            self.buffers[read] += data
            self._messages(self.buffers[read])
        self._add()

    def _messages(self, buffer: bytearray) -> None:
        at = 0
        while len(buffer) - at >= pickling.FRAME.size:
            (size,) = pickling.FRAME.unpack_from(buffer, at)
            if len(buffer) - at - pickling.FRAME.size < size:
                break
            start = at + pickling.FRAME.size
            i, logs, connections, count = pickling.Unpickler(
                io.BytesIO(buffer[start : start + size]), self.lookup
            ).load()
            at = start + size
            self.logs[i] = logs
            for observer, n in zip(self.observers, connections, strict=True):
                observer.connections += n
            self.total += count
            self._finished()
        del buffer[:at]

    def _add(self) -> None:
        """The logs of the units next in order, added."""
        while (logs := self.logs.pop(self.added, None)) is not None:
            for observer, log in zip(self.observers, logs, strict=True):
                for effect in log:
                    observer.apply(effect)
            self.added += 1


def _child(
    snapshot: Snapshot,
    work: _Units,
    unit: Callable[[int], int],
    observers: Sequence[Observer],
    write: int,
) -> None:
    """A helper of the walk: units taken until none is left, each one's logs sent."""

    def run() -> None:
        reducers = pickling.Reducers(snapshot)
        with _Sender(write) as sender:
            while chunk := work.take():
                for i in chunk:
                    before = [o.connections for o in observers]
                    logs, count = _logged(i, unit, observers)
                    counts = [o.connections - b for o, b in zip(observers, before, strict=True)]
                    sender.send(pickling.message(reducers, (i, _written(logs), counts, count)))

    _helper(run)


class _Sender:
    """A helper's messages written to the pipe by a thread of their own: the helper goes
    on with its units while the parent is busy with a long one of its own and the pipe is
    full (at 50,000 pods on 20 nodes, blocked writes were a fifth of the helper's time)."""

    def __init__(self, write: int) -> None:
        self.write = write
        self.queue: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Sender:
        self.thread.start()
        return self

    def send(self, data: memoryview) -> None:
        if self.failed is not None:  # the parent stopped reading: it ended
            raise self.failed
        self.queue.put(data)

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is not None:  # interrupted: the helper ends now (the writer may be blocked)
            return
        self.queue.put(None)
        self.thread.join()
        if self.failed is not None:
            raise self.failed

    def _run(self) -> None:
        try:
            while (data := self.queue.get()) is not None:
                while data:
                    data = data[os.write(self.write, data) :]
        except OSError as e:
            self.failed = e


def _helper(run: Callable[[], None]) -> None:
    """A forked helper's life: `run`, then `os._exit`, whatever happens."""
    code = 1
    try:
        gc.disable()  # a collection would touch (and copy) every page shared with the parent
        _die_with_parent()
        run()
        code = 0
    except BaseException:  # nothing may unwind into the caller's code
        pass
    finally:
        os._exit(code)


def _written(logs: Logs) -> Logs:
    """The logs with their reasons written; an effect both observers logged, written once
    (and pickled once)."""
    made: dict[int, tuple[Effect, Effect]] = {}  # id -> (the effect, written)
    out: Logs = []
    for log in logs:
        new = []
        for effect in log:
            pair = made.get(id(effect))
            if pair is None:
                pair = made[id(effect)] = (effect, written(effect))
            new.append(pair[1])
        out.append(new)
    return out


def _send(write: int, reducers: pickling.Reducers, message: object) -> None:
    view = pickling.message(reducers, message)
    while view:
        view = view[os.write(write, view) :]


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the line above
        os._exit(1)


def _reap(pid: int) -> None:
    """A helper ended: at once where it still runs (this one was interrupted)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
