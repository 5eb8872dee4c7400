"""A lab's state file: /run/netparity/labs/<name>.json, written atomically, plus a per-lab lock.

The file holds everything needed to act on the lab from another process: the dataplane,
the generation, the building process's pid, the agents' pids, the topology (with the lab's
live snapshot) and the original snapshot it was planned from (for `upgrade`). Values are
stored with a small lossless encoding of the model's frozen dataclasses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import importlib
import ipaddress
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from netparity.errors import ClusterError
from netparity.lab.topology import LabTopology
from netparity.model.snapshot import Snapshot

STATE_VERSION = 1
BUILDING = "building"
READY = "ready"
REMOVING = "removing"  # a changer is tearing the lab down (`down`, or `upgrade` before it rebuilds)
# Modules whose classes may appear in a state file (nothing else is ever instantiated).
_ALLOWED_MODULES = ("netparity.model.", "netparity.lab.topology")


def state_dir() -> Path:
    return Path(os.environ.get("NETPARITY_LAB_DIR", "/run/netparity/labs"))


def state_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def log_dir(name: str) -> Path:
    return state_dir() / f"{name}.logs"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRecord:
    pid: int
    netns: str
    token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reimage:
    """One node reimaged by `lab upgrade --rolling`: when it went down and came back (Unix
    seconds; `end` None while it is being reimaged)."""

    node: str
    start: float
    end: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rolling:
    """The reimage log of the lab's latest rolling upgrade: to which dataplane, each node in
    the order it was reimaged, and when the new dataplane began enforcing policies (None
    until every node is done)."""

    source: str  # the dataplane before
    target: str  # the dataplane after
    start: float
    reimages: tuple[Reimage, ...] = ()
    enforced: float | None = None

    def reimaging(self) -> tuple[str, ...]:
        """The nodes being reimaged now (started, not back)."""
        return tuple(r.node for r in self.reimages if r.end is None)

    def reimaged(self) -> tuple[str, ...]:
        """The nodes back on the new dataplane."""
        return tuple(r.node for r in self.reimages if r.end is not None)


def rolling_json(r: Rolling) -> dict[str, Any]:
    return {
        "source": r.source,
        "target": r.target,
        "start": r.start,
        "enforced": r.enforced,
        "reimages": [{"node": x.node, "start": x.start, "end": x.end} for x in r.reimages],
    }


def rolling_from_json(raw: Any) -> Rolling | None:
    if raw is None:
        return None
    return Rolling(
        source=str(raw["source"]),
        target=str(raw["target"]),
        start=float(raw["start"]),
        enforced=None if raw.get("enforced") is None else float(raw["enforced"]),
        reimages=tuple(
            Reimage(
                node=str(x["node"]),
                start=float(x["start"]),
                end=None if x.get("end") is None else float(x["end"]),
            )
            for x in raw.get("reimages") or ()
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LabState:
    name: str
    dataplane: str
    generation: int
    status: str  # "building", "ready" or "removing"
    pid: int  # the process that built (or is building) the lab
    pid_start: int | None = None  # its start time (/proc/PID/stat), so a reused pid is not it
    sources: tuple[str, ...] = ()
    created: float = 0.0
    build_seconds: float | None = None
    topology: LabTopology | None = None
    original: Snapshot | None = None  # the snapshot the lab was planned from
    agents: tuple[AgentRecord, ...] = ()
    rolling: Rolling | None = None  # the reimage log of the latest `upgrade --rolling`


# --------------------------------------------------------------------------- encoding


def encode(value: Any) -> Any:
    """Frozen dataclasses, enums, tuples, frozensets, mappings, networks -> JSON values."""
    if value is None or (
        isinstance(value, bool | int | float) and not isinstance(value, enum.Enum)
    ):
        return value
    if isinstance(value, enum.Enum):
        ecls = type(value)
        return {"__enum__": f"{ecls.__module__}:{ecls.__qualname__}", "value": value.value}
    if isinstance(value, str):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        out: dict[str, Any] = {"__dc__": f"{cls.__module__}:{cls.__qualname__}"}
        for f in dataclasses.fields(value):
            if f.init:
                out[f.name] = encode(getattr(value, f.name))
        return out
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, frozenset | set):
        return {"__set__": sorted((encode(v) for v in value), key=json.dumps)}
    if isinstance(value, Mapping):
        return {"__map__": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return {"__net__": str(value)}
    raise TypeError(f"cannot store a {type(value).__name__} in a lab state file")


def _class(ref: str) -> Any:
    module, _, qual = ref.partition(":")
    if not any(module == m or module.startswith(m) for m in _ALLOWED_MODULES):
        raise ClusterError(f"lab state names a class outside the model: {ref}")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def decode(raw: Any) -> Any:
    if isinstance(raw, list):
        return tuple(decode(v) for v in raw)
    if not isinstance(raw, dict):
        return raw
    if "__dc__" in raw:
        cls = _class(raw["__dc__"])
        return cls(**{k: decode(v) for k, v in raw.items() if k != "__dc__"})
    if "__enum__" in raw:
        return _class(raw["__enum__"])(raw["value"])
    if "__set__" in raw:
        return frozenset(decode(v) for v in raw["__set__"])
    if "__map__" in raw:
        return MappingProxyType({decode(k): decode(v) for k, v in raw["__map__"]})
    if "__net__" in raw:
        return ipaddress.ip_network(raw["__net__"])
    raise ClusterError(f"lab state has an unknown value {sorted(raw)[:3]}")


# --------------------------------------------------------------------------- files


def save_state(state: LabState) -> None:
    """Write the state atomically (temporary file in the same folder, fsync, rename)."""
    path = state_path(state.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": STATE_VERSION,
        "name": state.name,
        "dataplane": state.dataplane,
        "generation": state.generation,
        "status": state.status,
        "pid": state.pid,
        "pid_start": state.pid_start,
        "sources": list(state.sources),
        "created": state.created,
        "build_seconds": state.build_seconds,
        "agents": [{"pid": a.pid, "netns": a.netns, "token": a.token} for a in state.agents],
        "topology": None if state.topology is None else encode(state.topology),
        "original": None if state.original is None else encode(state.original),
        "rolling": None if state.rolling is None else rolling_json(state.rolling),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(name: str) -> LabState | None:
    """The lab's state, or None if there is no state file."""
    path = state_path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
        if doc.get("version") != STATE_VERSION:
            raise ClusterError(f"{path}: unsupported state version {doc.get('version')!r}")
        topology = None if doc.get("topology") is None else decode(doc["topology"])
        original = None if doc.get("original") is None else decode(doc["original"])
        return LabState(
            name=str(doc["name"]),
            dataplane=str(doc["dataplane"]),
            generation=int(doc["generation"]),
            status=str(doc["status"]),
            pid=int(doc["pid"]),
            pid_start=None if doc.get("pid_start") is None else int(doc["pid_start"]),
            sources=tuple(str(s) for s in doc.get("sources") or ()),
            created=float(doc.get("created") or 0.0),
            build_seconds=doc.get("build_seconds"),
            topology=topology,
            original=original,
            agents=tuple(
                AgentRecord(pid=int(a["pid"]), netns=str(a["netns"]), token=str(a["token"]))
                for a in doc.get("agents") or ()
            ),
            rolling=rolling_from_json(doc.get("rolling")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ClusterError(
            f"{path}: unreadable lab state ({e}); `netparity lab down` removes it"
        ) from e


def remove_state(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(name).unlink()
    for tmp in state_dir().glob(f".{name}.json.*.tmp"):  # a writer killed mid-save
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    logs = log_dir(name)
    if logs.is_dir():
        for f in logs.iterdir():
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        with contextlib.suppress(OSError):
            logs.rmdir()


def state_names() -> list[str]:
    """Names of every lab with a state file."""
    try:
        return sorted(p.stem for p in state_dir().glob("*.json"))
    except FileNotFoundError:
        return []


def lock_path(name: str) -> Path:
    return state_dir() / f"{name}.lock"


def use_lock_path(name: str) -> Path:
    return state_dir() / f"{name}.use"


def change_lock_path(name: str) -> Path:
    return state_dir() / f"{name}.change"


def _lock_file(path: Path, op: int, *, create: bool = True) -> int | None:
    """flock `path` (op: LOCK_EX or LOCK_SH, maybe | LOCK_NB) and return the fd; None if the
    file does not exist and `create` is False. BlockingIOError when LOCK_NB and taken.

    A holder that removes the lab unlinks the file while holding it; a waiter that then gets
    the lock on the unlinked file notices (the path no longer names its file) and retries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, op)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def lab_lock(name: str) -> Iterator[None]:
    """The short exclusive lock (flock on <name>.lock) of whoever edits the lab's namespaces
    or state: a changer while it works, a user adding an external host or a Service."""
    fd = _lock_file(lock_path(name), fcntl.LOCK_EX)
    assert fd is not None
    try:
        yield
    finally:
        os.close(fd)


def unlink_lock(name: str) -> None:
    """Remove the lock files; only while holding the change lock and the edit lock, when
    nothing of the lab is left (see _lock_file)."""
    for path in (lock_path(name), use_lock_path(name), change_lock_path(name)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --------------------------------------------------------------------------- holders

# Two kinds of holder (docs/faults.md):
#   users (`lab probe`, a suites run) share the lab: LOCK_SH on <name>.use;
#   changers (`lab up`, `lab down`, a demo) take it alone: LOCK_EX on <name>.use and
#   <name>.change; `lab upgrade` runs beside users but never beside another changer:
#   LOCK_EX on <name>.change only.
# Always taken in the order .use, .change, .lock (the edit lock): no two processes wait on
# each other. flock locks die with their process: a holder that is gone holds nothing.
USER = "user"
CHANGER = "changer"
UPGRADER = "upgrader"
HOLDS = (USER, CHANGER, UPGRADER)


class LabBusy(ClusterError):
    """The lab is held by another process (a changer or a user, as the sentence says)."""


# Locks this process holds, by lock file: [fd, depth] (a demo holds the change lock for the
# whole run, and its own up, upgrade and down take it again).
_HELD: dict[tuple[str, int], list[int]] = {}


def _proc_cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "a process that has just ended"
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if argv and os.path.basename(argv[0]).startswith("python"):
        argv = argv[1:]
        if argv[:2] == ["-m", "netparity"]:
            argv = ["netparity", *argv[2:]]
        elif argv[:2] == ["-m", "pytest"]:
            argv = ["pytest", *argv[2:]]
    text = " ".join(argv) or "?"
    return text if len(text) <= 120 else text[:117] + "..."


def lock_holders(path: Path) -> list[int]:
    """Pids holding a flock on `path` (from /proc/locks; waiters excluded), sorted."""
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: set[int] = set()
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->" or parts[1] != "FLOCK":
            continue
        if parts[5] == want:
            with contextlib.suppress(ValueError):
                pids.add(int(parts[4]))
    return sorted(pids)


def describe_holders(pids: list[int]) -> str:
    """`process 123 (netparity lab up x.yaml)` and `N other(s)`, for one sentence."""
    if not pids:
        return "another process"
    first = f"process {pids[0]} ({_proc_cmdline(pids[0])})"
    more = len(pids) - 1
    return first + (f" and {more} other{'s' if more > 1 else ''}" if more else "")


def _take(path: Path, op: int, wait: float, busy: Callable[[list[int]], str]) -> int:
    key = (str(path), op)
    held = _HELD.get(key)
    if held is not None:
        held[1] += 1
        return held[0]
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        try:
            fd = _lock_file(path, op | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LabBusy(busy(lock_holders(path))) from None
            time.sleep(0.1)
            continue
        assert fd is not None
        _HELD[key] = [fd, 1]
        return fd


def held_depth(path: Path, op: int) -> int:
    """How many times this process holds `path` with `op` (0: not at all)."""
    held = _HELD.get((str(path), op))
    return 0 if held is None else held[1]


def _drop(path: Path, op: int) -> None:
    key = (str(path), op)
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[key]
        os.close(held[0])


@contextlib.contextmanager
def hold(name: str, kind: str, *, wait: float = 0.0) -> Iterator[None]:
    """Hold lab `name` as a user, a changer or an upgrader (see HOLDS) for the block.

    Refuses at once with LabBusy (one sentence naming the holder's pid and command), or
    after `wait` seconds of trying. A process may take the same hold again inside it."""
    if kind not in HOLDS:
        raise ValueError(f"unknown lab hold {kind!r}")
    retry = "try again when it has ended (or give --wait SECONDS)"
    taken: list[tuple[Path, int]] = []
    try:
        if kind == USER:
            path = use_lock_path(name)
            _take(
                path,
                fcntl.LOCK_SH,
                wait,
                lambda pids: (
                    f"lab {name} is being built or removed by {describe_holders(pids)}; " + retry
                ),
            )
            taken.append((path, fcntl.LOCK_SH))
        else:
            if kind == CHANGER:
                path = use_lock_path(name)
                _take(
                    path,
                    fcntl.LOCK_EX,
                    wait,
                    lambda pids: f"lab {name} is in use by {describe_holders(pids)}; " + retry,
                )
                taken.append((path, fcntl.LOCK_EX))
            path = change_lock_path(name)
            _take(
                path,
                fcntl.LOCK_EX,
                wait,
                lambda pids: f"lab {name} is being changed by {describe_holders(pids)}; " + retry,
            )
            taken.append((path, fcntl.LOCK_EX))
        yield
    finally:
        for path, op in reversed(taken):
            _drop(path, op)


def held_by_changer(name: str) -> list[int]:
    """Pids holding lab `name`'s change lock (a changer or an upgrader at work)."""
    return lock_holders(change_lock_path(name))
