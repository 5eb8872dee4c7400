"""Low-level helpers for the lab: network namespaces, `ip -batch`, sysctls, processes.

Everything here shells out to iproute2 (batched: one process per namespace, not per
command) or reads /proc; nothing touches the root network namespace's links or routes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from netparity.errors import ClusterError

NETNS_DIR = Path("/run/netns")


def run(
    argv: Sequence[str], *, input: str | None = None, what: str | None = None, timeout: float = 60.0
) -> str:
    """Run a command; a non-zero exit raises ClusterError naming `what` and quoting stderr."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ClusterError(f"{argv[0]} is not installed (the lab needs iproute2)") from None
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{what or argv[0]}: no answer after {timeout:.0f} s") from None
    if proc.returncode != 0:
        err = " / ".join(line for line in proc.stderr.strip().splitlines()[:6] if line)
        raise ClusterError(f"{what or ' '.join(argv[:4])} failed (exit {proc.returncode}): {err}")
    return proc.stdout


def ip_batch(lines: Sequence[str], *, netns: str | None = None, what: str | None = None) -> None:
    """Run `ip -batch -` (inside `netns` with `ip -n`), stopping at the first failing line."""
    if not lines:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, input="\n".join(lines) + "\n", what=what or f"ip -batch in {netns or 'root'}")


def ip_batch_force(lines: Sequence[str], *, netns: str | None = None) -> None:
    """`ip -force -batch -`: run every line, ignore failures (for best-effort cleanup)."""
    if not lines:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-force", "-batch", "-"]
    subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False)


def netns_exec(
    netns: str, argv: Sequence[str], *, input: str | None = None, what: str | None = None
) -> str:
    return run(
        ["ip", "netns", "exec", netns, *argv], input=input, what=what or f"{argv[0]} in {netns}"
    )


def sysctl(
    netns: str, settings: Mapping[str, str], *, optional: Mapping[str, str] | None = None
) -> None:
    """Write sysctls inside a namespace in one process; `optional` keys may not exist."""

    def path(key: str) -> str:
        return "/proc/sys/" + key.replace(".", "/")

    script = "set -e\n" + "".join(f"echo {v} > {path(k)}\n" for k, v in settings.items())
    script += "".join(
        f"if [ -e {path(k)} ]; then echo {v} > {path(k)}; fi\n" for k, v in (optional or {}).items()
    )
    netns_exec(netns, ["sh", "-c", script], what=f"setting sysctls in {netns}")


LINKS_UP_TIMEOUT = 30.0


def _links_not_up(netns: str) -> list[str]:
    """The veths of `netns` that do not carry traffic yet: operstate not UP, or a bridge
    port not forwarding."""
    raw = run(["ip", "-n", netns, "-d", "-j", "link", "show"], what=f"ip link show in {netns}")
    waiting: list[str] = []
    for link in json.loads(raw or "[]"):
        info = link.get("linkinfo") or {}
        name = str(link.get("ifname"))
        if info.get("info_kind") == "veth" and link.get("operstate") != "UP":
            waiting.append(f"{netns}/{name} is {link.get('operstate')}")
        elif info.get("info_slave_kind") == "bridge":
            state = (info.get("info_slave_data") or {}).get("state")
            if state != "forwarding":
                waiting.append(f"{netns}/{name} is a bridge port {state}")
    return waiting


def wait_links_up(names: Sequence[str], *, timeout: float = LINKS_UP_TIMEOUT) -> None:
    """Wait until every veth in the namespaces `names` is operationally UP and every bridge
    port there forwards.

    `ip link set X up` returns before the kernel has acted on the veth's carrier: that
    happens later, in the kernel's link watch (a work item that needs the rtnl lock, so it
    lags on a busy machine where other namespaces come and go). Until then a bridge port
    drops what it receives; an ARP request dropped so is sent again only after a second,
    so every probe across it with a shorter timeout is a false "timeout". Both ends of a
    veth are handled by the same link watch run, so looking at one end of each suffices."""
    deadline = time.monotonic() + timeout
    left = list(names)
    while True:
        found = {n: _links_not_up(n) for n in left}
        left = [n for n, waiting in found.items() if waiting]  # look again only there
        if not left:
            return
        if time.monotonic() > deadline:
            shown = "; ".join(w for n in left for w in found[n][:2])
            raise ClusterError(f"links not up after {timeout:.0f} s: {shown}")
        time.sleep(0.02)


def list_netns(prefix: str) -> list[str]:
    """Names of the namespaces under /run/netns starting with `prefix`, sorted."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def add_netns(names: Sequence[str]) -> None:
    ip_batch([f"netns add {n}" for n in names], what="creating namespaces")


def delete_netns(names: Sequence[str]) -> None:
    """Delete namespaces (`ip -force -batch`: keeps going past ones already gone)."""
    if not names:
        return
    subprocess.run(
        ["ip", "-force", "-batch", "-"],
        input="".join(f"netns del {n}\n" for n in names),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _ns_inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def netns_pids(names: Sequence[str]) -> dict[int, str]:
    """Processes whose network namespace is one of `names` (what `ip netns pids` does)."""
    wanted: dict[tuple[int, int], str] = {}
    for n in names:
        key = _ns_inode(str(NETNS_DIR / n))
        if key is not None:
            wanted[key] = n
    found: dict[int, str] = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        key = _ns_inode(f"/proc/{entry}/ns/net")
        if key is not None and key in wanted:
            found[int(entry)] = wanted[key]
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def pid_alive(pid: int) -> bool:
    return pid > 0 and _alive(pid)


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[-1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def same_process(pid: int, start: int | None) -> bool:
    """Is `pid` alive and (if `start` is known) the process that started then?"""
    return pid_alive(pid) and (start is None or process_start(pid) == start)


def kill_pids(pids: Iterable[int], *, grace: float = 1.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL whatever is left."""
    left = [p for p in set(pids) if p > 1 and p != os.getpid()]
    for p in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if _alive(p)]
    for p in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    # A command that removed a lab ends with nothing of it running: wait for the killed to go
    # (bounded; a SIGKILLed process is gone as soon as the kernel has run its exit).
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if _alive(p)]


def end_processes_in(names: Sequence[str], *, grace: float = 1.0, rounds: int = 5) -> None:
    """End every process in the namespaces `names` and wait until each is gone, looking
    again after each kill: a process that entered one meanwhile (`ip netns exec` of a
    probe or of a child of a killed process) is found and ended too. Call it before the
    namespaces are deleted: a process in a deleted namespace can no longer be found."""
    for _ in range(rounds):
        pids = netns_pids(names)
        if not pids:
            return
        kill_pids(pids, grace=grace)
