"""Lab lifecycle: `up`, `down`, `upgrade`, `status`, and the edits a run makes to a ready
lab (external hosts, the run's own Services), under the lab's locks (docs/faults.md: users
share a lab, changers take it alone, an upgrader runs beside users but no changer).

A build or teardown cut short leaves a state that reads as broken, never as a live lab;
the next `up`, `upgrade` or `down` removes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO

from netparity.backend import Progress
from netparity.errors import ClusterError
from netparity.interrupts import checkpoint
from netparity.lab import netns as nx
from netparity.lab.addressing import (
    DEFAULT_LAB,
    check_dataplane,
    check_lab_name,
    netns_prefix,
    plan_added_services,
    plan_new_hosts,
    plan_topology,
)
from netparity.lab.agents import agent_specs, host_agent, reap_agents, start_agents
from netparity.lab.fabric import (
    Render,
    apply_rules,
    build_fabric,
    default_render,
    require_root,
    route_services,
    wire_hosts,
)
from netparity.lab.state import (
    BUILDING,
    CHANGER,
    READY,
    REMOVING,
    UPGRADER,
    AgentRecord,
    LabState,
    change_lock_path,
    held_by_changer,
    held_depth,
    hold,
    lab_lock,
    load_state,
    remove_state,
    save_state,
    state_names,
    unlink_lock,
)
from netparity.lab.topology import LabTopology, NodeRules
from netparity.model.objects import Service, run_owned
from netparity.model.snapshot import Snapshot


def _say(message: str) -> None:
    print(f"netparity lab: {message}", file=sys.stderr, flush=True)


class StderrProgress:
    """A Progress callback that keeps one line on stderr: `lab NAME: nodes 3/3, pods 12/60`."""

    def __init__(
        self,
        name: str,
        *,
        stream: IO[str] | None = None,
        interval: float = 0.25,
        prefix: str | None = None,
    ) -> None:
        self.name = name
        self.prefix = prefix if prefix is not None else f"lab {name}"  # `plan`, `lint` too
        self.stream = stream if stream is not None else sys.stderr
        self.counts: dict[str, tuple[int, int]] = {}
        self.interval = interval
        self._last = 0.0
        self._lock = threading.Lock()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, what: str, done: int, total: int) -> None:
        with self._lock:
            self.counts[what] = (done, total)
            now = time.monotonic()
            if done < total and now - self._last < self.interval:
                return
            self._last = now
            line = f"{self.prefix}: " + ", ".join(
                f"{w} {d}/{t}" for w, (d, t) in self.counts.items()
            )
            if self._tty:
                self.stream.write("\r\033[K" + line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self._tty and self.counts:
            self.stream.write("\n")
            self.stream.flush()


def _build(
    topology: LabTopology,
    rendered: Mapping[str, NodeRules],
    progress: Progress | None,
) -> tuple[AgentRecord, ...]:
    """Create namespaces, links, addresses, routes, rules and agents (the caller cleans up)."""
    report: Progress = progress if progress is not None else (lambda what, done, total: None)
    build_fabric(topology, rendered, report)
    specs = agent_specs(topology)
    checkpoint("build:agents")
    report("agents", 0, len(specs))
    return start_agents(topology.lab, specs, lambda done, total: report("agents", done, total))


def _teardown(name: str, *, keep_state: bool = False) -> int:
    """Kill every process in the lab's namespaces, delete them, remove the state (or, with
    `keep_state`, leave it saying `removing` for the rebuild that follows).

    The state says `removing` by this process first, so that a teardown cut short (SIGKILL)
    reads as broken, not as a live lab. Only processes found inside the namespaces are
    killed (never a pid from the state file alone: it may have been reused since)."""
    with contextlib.suppress(ClusterError, OSError):
        state = load_state(name)
        if state is not None and state.status != REMOVING:
            save_state(
                dataclasses.replace(
                    state,
                    status=REMOVING,
                    pid=os.getpid(),
                    pid_start=nx.process_start(os.getpid()),
                )
            )
    names = nx.list_netns(netns_prefix(name))
    nx.end_processes_in(names)
    reap_agents(name)
    checkpoint("teardown:namespaces")
    nx.delete_netns(names)
    if not keep_state:
        remove_state(name)
    return len(names)


def _builder_alive(state: LabState) -> bool:
    """Is the process named by a `building`/`removing` state still at it? It is while it
    holds the lab's change lock (a state file naming a dead builder holds nothing)."""
    if state.pid in held_by_changer(state.name):
        return True
    if os.path.exists("/proc/locks"):
        return False
    return nx.same_process(state.pid, state.pid_start)  # no /proc/locks: the pid alone


def _broken(state: LabState, *, agents: bool = True) -> str | None:
    """Why the lab in `state` cannot be used (a clause), or None; a live build is not broken."""
    if state.status != READY:
        if _builder_alive(state):
            return None
        doing = "removing" if state.status == REMOVING else "building"
        return f"process {state.pid}, which was {doing} it, is gone"
    if state.topology is None or state.topology.vnet_netns not in nx.list_netns(
        netns_prefix(state.name)
    ):
        return "its network namespaces are gone"
    if agents:
        gone = [a for a in state.agents if not nx.pid_alive(a.pid)]
        if gone:
            return (
                f"{len(gone)} of {len(state.agents)} probe agents are gone "
                f"(the first in {gone[0].netns})"
            )
    return None


def lab_problem(state: LabState) -> str | None:
    """One sentence saying why the lab cannot be probed and how to repair it, or None."""
    reason = _broken(state)
    if reason is None:
        return None
    n = state.name
    return (
        f"lab {n} is broken: {reason}; `netparity lab down --name {n}` removes it and "
        f"`netparity lab up --name {n}` builds it again"
    )


@contextlib.contextmanager
def changing(
    name: str, *, kind: str = CHANGER, wait: float = 0.0, edit: bool = True
) -> Iterator[None]:
    """Hold lab `name` as a changer (`up`, `down`) or an upgrader (`upgrade`, a demo's whole
    run), with its edit lock unless `edit` is False. When the outermost hold of this process
    ends and nothing of the lab is left, its lock files go too."""
    with hold(name, kind, wait=wait):
        outermost = held_depth(change_lock_path(name), fcntl.LOCK_EX) == 1
        try:
            with lab_lock(name) if edit else contextlib.nullcontext():
                try:
                    yield
                finally:
                    if edit and outermost:
                        _forget_if_gone(name)
        finally:
            if not edit and outermost:
                with lab_lock(name):
                    _forget_if_gone(name)


def _forget_if_gone(name: str) -> None:
    try:
        gone = load_state(name) is None
    except ClusterError:
        gone = False
    if gone and not nx.list_netns(netns_prefix(name)):
        remove_state(name)  # the log folder
        unlink_lock(name)


def _clear_leftovers(name: str, *, for_up: bool) -> LabState | None:
    """Under the change lock: remove a half-built lab (its builder is gone: the lock was
    free), a broken one, or orphan namespaces; return a live state."""
    try:
        state = load_state(name)
    except ClusterError as e:
        _say(f"lab {name}: removing it, its state cannot be read ({e})")
        _teardown(name)
        return None
    names = nx.list_netns(netns_prefix(name))
    if state is None:
        if names:
            _say(
                f"lab {name}: removing {len(names)} leftover namespaces np-{name}-* that have no state"
            )
            _teardown(name)
        return None
    if state.status != READY:
        doing = "removed" if state.status == REMOVING else "half-built"
        _say(f"lab {name}: removing a {doing} lab left by process {state.pid}, which is gone")
        _teardown(name)
        return None
    reason = _broken(state, agents=for_up)
    if reason is not None:
        _say(f"lab {name}: removing it, {reason}")
        _teardown(name)
        return None
    if for_up:
        raise ClusterError(
            f"lab {name} already exists ({state.dataplane}, generation {state.generation}); "
            f"run `netparity lab down --name {name}` first or choose another --name"
        )
    return state


def _up_locked(
    topology: LabTopology,
    *,
    original: Snapshot,
    generation: int,
    render: Render | None,
    progress: Progress | None,
) -> LabTopology:
    start = time.monotonic()
    rendered = (render or default_render())(topology)
    unknown = sorted(set(rendered) - {n.name for n in topology.nodes})
    if unknown:
        raise ClusterError(f"the dataplane rendered rules for unknown nodes: {', '.join(unknown)}")
    base = LabState(
        name=topology.lab,
        dataplane=topology.dataplane,
        generation=generation,
        status=BUILDING,
        pid=os.getpid(),
        pid_start=nx.process_start(os.getpid()),
        sources=original.sources,
        created=time.time(),
        topology=topology,
        original=original,
    )
    save_state(base)
    try:
        checkpoint("build:namespaces")
        agents = _build(topology, rendered, progress)
        save_state(
            dataclasses.replace(
                base, status=READY, agents=agents, build_seconds=round(time.monotonic() - start, 3)
            )
        )
    except BaseException:
        _teardown(topology.lab)
        raise
    return topology


def up(
    snapshot: Snapshot,
    *,
    name: str = DEFAULT_LAB,
    dataplane: str = "npm",
    generation: int = 0,
    render: Render | None = None,
    progress: Progress | None = None,
    wait: float = 0.0,
) -> LabTopology:
    """Build lab `name` from a snapshot (as root), holding it alone. A half-built or broken
    leftover of that name is removed first; an existing lab is an error. On any failure,
    Ctrl-C or SIGTERM included, everything built so far is removed."""
    check_lab_name(name)
    check_dataplane(dataplane)
    require_root()
    with changing(name, wait=wait):
        _clear_leftovers(name, for_up=True)
        topology = plan_topology(snapshot, lab=name, dataplane=dataplane, generation=generation)
        return _up_locked(
            topology, original=snapshot, generation=generation, render=render, progress=progress
        )


def down(name: str = DEFAULT_LAB, *, wait: float = 0.0) -> bool:
    """Tear lab `name` down: agents, namespaces (links, ipsets, rules), state, lock files,
    holding it alone (refused while a user holds it). Idempotent: False when there was
    nothing to remove."""
    check_lab_name(name)
    require_root()
    with changing(name, wait=wait):
        try:
            state = load_state(name)
        except ClusterError:
            state = None
            _say(f"lab {name}: its state cannot be read; removing it anyway")
        names = nx.list_netns(netns_prefix(name))
        if state is None and not names:
            remove_state(name)
            return False
        if state is not None and state.status != READY:
            doing = "removed" if state.status == REMOVING else "half-built"
            _say(f"lab {name}: removing a {doing} lab left by process {state.pid}, which is gone")
        elif state is None:
            _say(
                f"lab {name}: removing {len(names)} leftover namespaces np-{name}-* that have no state"
            )
        _teardown(name)
        return True


def upgrade(
    name: str = DEFAULT_LAB,
    dataplane: str = "cilium",
    *,
    render: Render | None = None,
    progress: Progress | None = None,
    wait: float = 0.0,
) -> LabTopology:
    """What `az aks update --network-dataplane` does: every pod recreated (same name, labels,
    node; a new IP) under the new dataplane's rules. The lab's generation goes up by one.
    Runs while users hold the lab, never beside another changer."""
    check_lab_name(name)
    check_dataplane(dataplane)
    require_root()
    with changing(name, kind=UPGRADER, wait=wait):
        state = _clear_leftovers(name, for_up=False)
        if state is None or state.original is None:
            raise ClusterError(
                f"there is no lab named {name}; build it with `netparity lab up` first"
            )
        generation = state.generation + 1
        topology = plan_topology(
            state.original, lab=name, dataplane=dataplane, generation=generation
        )
        rendered = (render or default_render())(topology)  # fails before anything is torn down
        try:
            _teardown(name, keep_state=True)
            checkpoint("upgrade:rebuild")
        except BaseException:
            _teardown(name)
            raise
        return _up_locked(
            topology,
            original=state.original,
            generation=generation,
            render=lambda _: rendered,
            progress=progress,
        )


def status(name: str = DEFAULT_LAB) -> LabState:
    """The state of a lab (ClusterError if there is none, or if it is too broken to show)."""
    check_lab_name(name)
    state = load_state(name)
    if state is None:
        others = [n for n in state_names() if n != name]
        hint = f" (labs here: {', '.join(others)})" if others else ""
        raise ClusterError(f"there is no lab named {name}{hint}; build it with `netparity lab up`")
    if state.topology is None:
        raise ClusterError(
            lab_problem(state) or f"lab {name} is {state.status} by process {state.pid}"
        )
    return state


def list_labs() -> list[str]:
    return state_names()


def add_hosts(name: str, ips: Sequence[str]) -> LabTopology:
    """Add external hosts (a namespace on the bridge, routes on every node, an agent) to a
    ready lab, recorded in its state so that `down` removes them. Returns the new topology."""
    check_lab_name(name)
    require_root()
    with lab_lock(name):
        state = status(name)
        assert state.topology is not None
        topology = state.topology
        new = plan_new_hosts(topology, ips)
        if not new:
            return topology
        updated = dataclasses.replace(topology, hosts=(*topology.hosts, *new))
        wire_hosts(updated, new)
        agents = start_agents(name, [host_agent(h, topology.snapshot) for h in new])
        save_state(dataclasses.replace(state, topology=updated, agents=(*state.agents, *agents)))
        return updated


def remove_services(name: str, keys: Iterable[str]) -> LabTopology:
    """Remove Services a run created for itself (labelled netparity.io/run) from a ready
    lab and re-apply every node's rules without them, as `kubectl delete` would on a
    cluster. Services without the run label are never removed. Returns the new topology."""
    check_lab_name(name)
    require_root()
    with lab_lock(name):
        state = status(name)
        assert state.topology is not None
        topology = state.topology
        snap = topology.snapshot
        wanted = set(keys)
        gone = [s for s in snap.services if s.key in wanted and run_owned(s.labels)]
        if not gone:
            return topology
        keep = tuple(s for s in snap.services if s not in gone)
        updated = dataclasses.replace(topology, snapshot=dataclasses.replace(snap, services=keep))
        # The run's Services take their addresses from the Service range, whose one route
        # stays; only the packet filters change.
        apply_rules(updated, default_render()(updated), lambda: None)
        save_state(dataclasses.replace(state, topology=updated))
        return updated


def add_services(
    name: str, services: Sequence[Service], *, avoid: Iterable[str] = ()
) -> LabTopology:
    """Add Services a run creates for itself (the planner's run-owned NodePorts) to a ready
    lab: allocate their addresses (never one of `avoid`: the run's outside probe
    addresses), then re-render and re-apply every node's rules, as kube-proxy or Cilium
    would on a Service event. Returns the new topology."""
    check_lab_name(name)
    require_root()
    with lab_lock(name):
        state = status(name)
        assert state.topology is not None
        topology = state.topology
        added = plan_added_services(topology, services, avoid)
        if not added:
            return topology
        snap = topology.snapshot
        new_snapshot = dataclasses.replace(
            snap, services=tuple(sorted((*snap.services, *added), key=lambda s: s.key))
        )
        updated = dataclasses.replace(topology, snapshot=new_snapshot)
        route_services(topology, added)
        apply_rules(updated, default_render()(updated), lambda: None)
        save_state(dataclasses.replace(state, topology=updated))
        return updated
