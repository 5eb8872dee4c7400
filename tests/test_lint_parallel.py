"""The lint's walk on several processes (netparity.lint.parallel, issue 19): the same
report byte for byte as on one, whatever the helpers do (fail, die, get killed), and no
process left behind, also when the walk is interrupted."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netparity.cli import main
from netparity.lint import parallel, pickling
from netparity.lint.lint import lint_pair
from netparity.lint.output import render_json
from netparity.model.snapshot import Snapshot, load_snapshot, snapshot_from_dicts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "aks-migration.yaml"


def _generated(seed: int, pods: int = 400, nodes: int = 4) -> Snapshot:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from gen import generate
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return snapshot_from_dicts(
        generate(pods=pods, namespaces=10, policies=pods // 5, nodes=nodes, seed=seed)
    )


def _lint(snapshot: Snapshot, jobs: int, **kw: Any) -> tuple[str, list[str]]:
    """The report's JSON text and the older release's finding ids, on `jobs` processes."""
    report, extra = lint_pair(snapshot, target="cilium", also="cilium-1.16", jobs=jobs, **kw)
    return render_json(report), [f.id for f in extra]


@pytest.fixture(scope="module")
def cluster() -> Snapshot:
    return _generated(seed=3)


@pytest.fixture(scope="module")
def alone(cluster: Snapshot) -> tuple[str, list[str]]:
    return _lint(cluster, 1)


@pytest.fixture
def no_child_left() -> Iterator[list[int]]:
    """The helpers forked during the test (their pids); none may be left, not even as a
    zombie, at its end."""
    forked: list[int] = []
    fork = os.fork

    def spy() -> int:
        pid = fork()
        if pid:
            forked.append(pid)
        return pid

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parallel.os, "fork", spy)
        yield forked
    for pid in forked:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped already: no zombie
        assert not Path(f"/proc/{pid}").exists(), f"helper {pid} outlived the walk"


@pytest.mark.parametrize("seed", [1, 2, 5])
@pytest.mark.parametrize("jobs", [2, 3])
def test_several_processes_give_one_process_report(seed: int, jobs: int) -> None:
    snapshot = _generated(seed=seed, pods=300 + 100 * seed, nodes=3 + seed)
    one = _lint(snapshot, 1)
    assert json.loads(one[0])["findings"], "a cluster with nothing to compare"
    assert _lint(snapshot, jobs) == one


def test_the_example_on_two_processes(no_child_left: list[int]) -> None:
    snapshot = load_snapshot([EXAMPLE])
    assert _lint(snapshot, 2) == _lint(snapshot, 1)
    assert len(no_child_left) == 2  # the walk's helper, and the one beside the fixes


def _in_helper(parent: int, action: Callable[[], None]) -> Callable[[Any], Any]:
    """A wrapper of the walk's unit function that runs `action` in a helper (not in the
    parent) at its third unit."""

    def wrap(unit: Callable[[int], int]) -> Callable[[int], int]:
        calls = [0]

        def patched(i: int) -> int:
            if os.getpid() != parent:
                calls[0] += 1
                if calls[0] == 3:
                    action()
            return unit(i)

        return patched

    return wrap


@pytest.mark.parametrize(
    "fault",
    ["raises", "exits", "killed"],
)
def test_a_helper_that_fails_loses_nothing(
    fault: str,
    cluster: Snapshot,
    alone: tuple[str, list[str]],
    no_child_left: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A helper that raises, exits or is killed at its third unit: the units it took and
    did not send are observed by the parent, and the report is the same."""

    def fail() -> None:
        if fault == "raises":
            raise RuntimeError("a bug in the helper")
        if fault == "exits":
            os._exit(3)
        os.kill(os.getpid(), signal.SIGKILL)

    wrap = _in_helper(os.getpid(), fail)
    walk = parallel.walk

    def patched_walk(snapshot: Snapshot, units: int, unit: Any, *rest: Any) -> int:
        return walk(snapshot, units, wrap(unit), *rest)

    monkeypatch.setattr(parallel, "walk", patched_walk)
    assert _lint(cluster, 2) == alone
    assert len(no_child_left) == 2


@pytest.mark.parametrize("at", ["classes", "findings checked"])
def test_an_interrupted_lint_leaves_no_helper(
    at: str, cluster: Snapshot, no_child_left: list[int]
) -> None:
    """Ctrl-C (or SIGTERM made one) in the middle of the walk, or while the fixes are
    checked (the Cilium policies' findings made beside): the KeyboardInterrupt reaches
    the caller, and no helper is left."""
    seen: list[tuple[str, int, int]] = []

    def progress(what: str, done: int, total: int) -> None:
        seen.append((what, done, total))
        if what == at and len([s for s in seen if s[0] == at]) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lint_pair(cluster, target="cilium", also="cilium-1.16", jobs=2, progress=progress)
    assert len(no_child_left) == 2  # the walk's helper, and the one beside


def test_progress_on_several_processes_counts_every_unit(cluster: Snapshot) -> None:
    """Classes, then Services, each counted up to its total, never backwards."""
    seen: list[tuple[str, int, int]] = []
    lint_pair(cluster, target="cilium", jobs=2, progress=lambda *a: seen.append(a))
    walk = [s for s in seen if s[0] in ("classes", "services")]
    classes = [d for w, d, _ in walk if w == "classes"]
    services = [d for w, d, _ in walk if w == "services"]
    assert classes == sorted(classes) and services == sorted(services)
    assert walk[-1] == ("services", len(cluster.services), len(cluster.services))
    assert ("classes", walk[0][2], walk[0][2]) in walk
    assert walk.index(("classes", walk[0][2], walk[0][2])) < walk.index(walk[-1])


def test_the_default_stays_on_one_core_for_small_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    small = load_snapshot([EXAMPLE])
    assert parallel.default_jobs(small) == 1
    big = _generated(seed=1, pods=parallel.MIN_PODS, nodes=8)
    monkeypatch.setattr(parallel, "jobs_available", lambda: 2)
    assert parallel.default_jobs(big) == 2
    monkeypatch.setattr(parallel, "jobs_available", lambda: 1)
    assert parallel.default_jobs(big) == 1


def test_the_cli_takes_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outs = []
    for jobs in ("1", "2"):
        assert main(["lint", str(EXAMPLE), "--format", "json", "--jobs", jobs]) == 1
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]
    with pytest.raises(SystemExit) as e:
        main(["lint", str(EXAMPLE), "--jobs", "0"])
    assert e.value.code == 2
    assert "--jobs: must be a number from 1 to 8, not '0'" in capsys.readouterr().err


class _Fake:
    """An observer whose effects are the unit numbers, in the order they are added."""

    def __init__(self) -> None:
        self.log: list[Any] | None = None
        self.connections = 0
        self.added: list[int] = []

    def apply(self, effect: Any) -> None:
        self.added.append(effect[1][0])

    def observe(self, i: int) -> None:
        self.connections += 1
        effect = ("unattributed", (i,))
        if self.log is None:
            self.apply(effect)
        else:
            self.log.append(effect)


@pytest.mark.parametrize("jobs", [1, 2, 4])
def test_logs_are_added_in_the_units_order(jobs: int, no_child_left: list[int]) -> None:
    """Whoever observes a unit, and however late its logs come (a helper that is slow
    on every third unit), the effects are added in the units' order, and every unit's
    connections and count are there."""
    import time

    parent = os.getpid()
    fakes = [_Fake(), _Fake()]

    def unit(i: int) -> int:
        if os.getpid() != parent and i % 3 == 0:
            time.sleep(0.002)
        for f in fakes:
            f.observe(i)
        return i % 2

    snapshot = load_snapshot([EXAMPLE])
    total = parallel.walk(snapshot, 300, unit, fakes, lambda done: None, jobs)
    assert total == 150
    for f in fakes:
        assert f.added == list(range(300))
        assert f.connections == 300
    assert len(no_child_left) == jobs - 1


def test_the_walk_keeps_nothing_the_cycle_collector_must_free(cluster: Snapshot) -> None:
    """A lint pauses the cycle collector (collector_paused); what a helper sent is freed
    once added (an unpickler in a cycle kept every message: hundreds of MB at 50,000
    pods). What stays is what the findings hold, and each Linter's last effect."""
    import gc

    from netparity.lint.gather import Seen

    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        report, _ = lint_pair(cluster, target="cilium", also="cilium-1.16", jobs=2)
        assert report.findings
        alive = sum(1 for o in gc.get_objects() if type(o) is Seen)
    finally:
        if enabled:
            gc.enable()
    assert alive <= 2, alive


@pytest.mark.parametrize("fault", [None, "raises", "exits", "killed", "unpicklable"])
def test_beside_gives_its_result_whatever_the_helper_does(
    fault: str | None, no_child_left: list[int]
) -> None:
    """there() runs in a helper while this process works on, and its result comes back;
    where the helper fails, it is made here. The snapshot's objects come back as this
    process's own."""
    snapshot = load_snapshot([EXAMPLE])
    parent = os.getpid()
    calls: list[int] = []

    def here() -> str:
        return "here"

    def there() -> tuple[Any, ...]:
        calls.append(os.getpid())
        if os.getpid() != parent:
            if fault == "raises":
                raise RuntimeError("a bug in the helper")
            if fault == "exits":
                os._exit(3)
            if fault == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            if fault == "unpicklable":
                return (lambda: None,)
        return (snapshot.pods[3], snapshot.services[0], [snapshot.nodes[1]], "x")

    beside = parallel.Beside(snapshot, there, 2)
    try:
        mine = here()
        theirs = beside.result()
    finally:
        beside.close()
    assert mine == "here"
    assert theirs[0] is snapshot.pods[3] and theirs[1] is snapshot.services[0]
    assert theirs[2][0] is snapshot.nodes[1] and theirs[3] == "x"
    assert calls == ([] if fault is None else [parent])  # made here only where it failed
    assert len(no_child_left) == 1


def test_slotted_dataclasses_cross_the_pipe_as_they_are() -> None:
    """`pickling.Reducers` writes a slotted dataclass as its field values (frozen or not, with
    fields left out of __init__, with a parent's fields); `_slotted` rebuilds it equal,
    and the snapshot's own objects come back as themselves."""
    import io as _io

    from netparity.engine.traffic import Decision, DirectionResult, PathKind, Verdict
    from netparity.lint.tally import Entry

    snapshot = load_snapshot([EXAMPLE])
    pod = snapshot.pods[0]
    side = DirectionResult(direction="ingress", subject=pod.key, decision=Decision.DENY, why="x")
    verdict = Verdict(decision=Decision.DENY, path=PathKind.POD_POD, ingress=side)
    assert side.reason and verdict.explanation  # the cached texts (init=False fields) made
    entry = Entry(from_pods=True, npm="a", target="b")
    entry.ports[(80, "80/TCP")] = None
    out = _io.BytesIO()
    pickling.Pickler(out, pickling.Reducers(snapshot)).dump((verdict, entry, pod))
    back = pickling.Unpickler(_io.BytesIO(out.getvalue()), pickling.lookup(snapshot)).load()
    assert back[0] == verdict and back[0] is not verdict
    assert back[0].ingress.reason == side.reason and back[0].explanation == verdict.explanation
    assert back[1] == entry and back[2] is pod


def test_beside_stays_here_on_one_core_or_without_a_process(
    monkeypatch: pytest.MonkeyPatch, no_child_left: list[int]
) -> None:
    """`jobs` 1, or no process to be had: there() is made here, when its result is asked."""
    import errno

    snapshot = load_snapshot([EXAMPLE])
    parent = os.getpid()
    assert parallel.Beside(snapshot, os.getpid, 1).result() == parent
    assert parallel.Beside(snapshot, os.getpid, 2).result() != parent
    assert len(no_child_left) == 1

    def refuse(*args: Any) -> Any:
        raise OSError(errno.EAGAIN, "refused")

    monkeypatch.setattr(parallel.os, "fork", refuse)
    assert parallel.Beside(snapshot, os.getpid, 2).result() == parent
    assert len(no_child_left) == 1


def test_a_helper_does_not_wait_for_a_busy_parent() -> None:
    """`_Sender`: messages larger than the pipe holds are queued at once (a thread writes
    them while the parent is busy), arrive whole and in order; once the parent stops
    reading, the next send raises."""
    read, write = os.pipe()
    chunks = [bytes([n]) * (1 << 20) for n in range(6)]  # 6 MiB: a pipe holds 64 KiB-1 MiB
    with parallel._Sender(write) as sender:
        for chunk in chunks:
            sender.send(memoryview(chunk))  # returns with nobody reading yet
        got = bytearray()
        while len(got) < len(chunks) << 20:
            got += os.read(read, 1 << 20)
    assert bytes(got) == b"".join(chunks)
    os.close(read)
    with pytest.raises(OSError), parallel._Sender(write) as sender:  # EPIPE: no reader
        for _ in range(100):
            sender.send(memoryview(chunks[0]))
    os.close(write)


def test_an_interrupted_helper_does_not_wait_for_its_writer() -> None:
    """Ctrl-C in a helper whose writer is blocked on a full pipe nobody reads: leaving
    the sender returns at once (the helper then ends), it does not wait for the pipe."""
    import threading

    read, write = os.pipe()
    ended = threading.Event()

    def helper() -> None:
        try:
            with parallel._Sender(write) as sender:
                sender.send(memoryview(bytes(4 << 20)))  # more than the pipe holds
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            ended.set()

    threading.Thread(target=helper, daemon=True).start()
    try:
        assert ended.wait(5), "the sender waited for a pipe nobody reads"
    finally:
        os.close(read)  # the blocked writer fails (EPIPE) and its thread ends
        os.close(write)


@pytest.mark.parametrize("fails", ["fork", "pipe"])
def test_no_process_or_pipe_to_be_had_means_one_process(
    fails: str,
    cluster: Snapshot,
    alone: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pids limit or no memory (fork fails), or too many files open (pipe fails): the
    lint runs on one process, with the same report, rather than failing."""
    import errno

    def refuse(*args: Any) -> Any:
        raise OSError(errno.EAGAIN if fails == "fork" else errno.EMFILE, "refused")

    monkeypatch.setattr(parallel.os, fails, refuse)
    assert _lint(cluster, 2) == alone


def test_a_pipe_too_small_for_the_unit_numbers_does_not_hang(
    cluster: Snapshot,
    alone: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    no_child_left: list[int],
) -> None:
    """Once a user's pipes hold more than pipe-user-pages-soft, a new pipe holds one page:
    the walk does not wait for a reader that never comes, it walks on one process. (Unit
    numbers padded to 64 bytes here, so that a page holds 64 of them, fewer than the
    walk's units.)"""
    import fcntl
    import struct

    pipe = os.pipe
    sizes: list[int] = []

    def small() -> tuple[int, int]:
        read, write = pipe()
        sizes.append(fcntl.fcntl(write, 1031, 4096))  # F_SETPIPE_SZ: one page
        return read, write

    monkeypatch.setattr(parallel, "_TOKEN", struct.Struct("=I60x"))
    monkeypatch.setattr(parallel, "_TOKENS", 1 << 20)  # one number per unit
    monkeypatch.setattr(parallel.os, "pipe", small)
    assert _lint(cluster, 2) == alone
    assert sizes and sizes[0] == 4096
    assert len(no_child_left) == 1  # the helper beside the fixes only: no walk helper
