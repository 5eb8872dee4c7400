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
from collections.abc import Iterator, Mapping
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
class LabState:
    name: str
    dataplane: str
    generation: int
    status: str  # "building" or "ready"
    pid: int  # the process that built (or is building) the lab
    pid_start: int | None = None  # its start time (/proc/PID/stat), so a reused pid is not it
    sources: tuple[str, ...] = ()
    created: float = 0.0
    build_seconds: float | None = None
    topology: LabTopology | None = None
    original: Snapshot | None = None  # the snapshot the lab was planned from
    agents: tuple[AgentRecord, ...] = ()


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
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ClusterError(
            f"{path}: unreadable lab state ({e}); `netparity lab down` removes it"
        ) from e


def remove_state(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(name).unlink()
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


@contextlib.contextmanager
def lab_lock(name: str) -> Iterator[None]:
    """An exclusive lock on one lab (flock on <name>.lock) for up, down, upgrade, hosts.

    `down` unlinks the lock file while holding it; a waiter that then gets the lock on the
    unlinked file notices (the path no longer names its file) and locks the new one.
    """
    path = lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def unlink_lock(name: str) -> None:
    """Remove the lock file; only while holding the lock, as the last step (see lab_lock)."""
    with contextlib.suppress(FileNotFoundError):
        lock_path(name).unlink()
