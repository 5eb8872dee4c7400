"""Fault injection into the lab's lifecycle: SIGTERM, SIGINT, SIGHUP and SIGKILL at known
points of `lab up`, `lab upgrade`, `lab down`, a suites run and `netparity demo`, each
followed by the next command working and by nothing left over (docs/faults.md).

A command reaches a point and stops there when NETPARITY_FAULT_PAUSE names it
(`netparity.interrupts.checkpoint`); the test then signals it. "Nothing left" means: no
network namespace of the lab, no process in one of its namespaces (agents), no pytest
child, no state, lock or log file of the lab, and the root namespace's rules unchanged
(the lab never touches them). Needs root; never skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netparity import interrupts
from netparity.lab import down
from netparity.lab.netns import NETNS_DIR, list_netns
from netparity.lab.state import state_dir

import lab_fixtures

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[1]

SNAPSHOT = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: x}}
- apiVersion: v1
  kind: Node
  metadata: {name: n1}
  spec: {podCIDR: 10.244.0.0/24}
  status: {addresses: [{type: InternalIP, address: 10.224.0.4}]}
- apiVersion: v1
  kind: Node
  metadata: {name: n2}
  spec: {podCIDR: 10.244.1.0/24}
  status: {addresses: [{type: InternalIP, address: 10.224.0.5}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x, labels: {app: a}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
  status: {phase: Running, podIP: 10.244.0.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: b, namespace: x, labels: {app: b}}
  spec: {nodeName: n2, containers: [{name: c, ports: [{containerPort: 80}]}]}
  status: {phase: Running, podIP: 10.244.1.10}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: only-a, namespace: x}
  spec:
    podSelector: {matchLabels: {app: b}}
    ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]
"""

PROBES = "probes:\n  - {from: x/a, to: x/b, port: 80, expect: allow}\n"


# --------------------------------------------------------------------------- helpers


def _env(pause: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.pop(interrupts.PAUSE_ENV, None)
    if pause is not None:
        env[interrupts.PAUSE_ENV] = pause
    return env


def netparity(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netparity", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # and SIGHUP, which `nohup` leaves ignored


class Run:
    """A command started in the background, its output (stdout and stderr) collected."""

    def __init__(self, argv: list[str], *, pause: str | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=_env(pause),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # SIGINT as a terminal's Ctrl-C: a test run started in the background by a shell
            # (`pytest ... &`) inherits SIGINT ignored, and so would the command (SIGHUP
            # likewise under `nohup`: the command rightly leaves an ignored signal alone)
            preexec_fn=_default_signals,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        stream = self.proc.stdout
        self._reader = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._reader.start()

    @classmethod
    def netparity(cls, *args: str, pause: str | None = None) -> Run:
        return cls([sys.executable, "-m", "netparity", *args], pause=pause)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def paused(self, timeout: float = 180.0, *, nth: int = 1) -> int:
        """Wait until the command stops at its pause point (for the nth time); the pid of the
        paused process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(r"netparity: paused at \S+ \(process (\d+)\)", self.output)
            if len(found) >= nth:
                return int(found[nth - 1])
            assert self.proc.poll() is None, f"ended before its pause point:\n{self.output}"
            time.sleep(0.05)
        raise AssertionError(f"never reached its pause point:\n{self.output}")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def finish(self, timeout: float = 180.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Pinned:
    """The lab's namespaces as they were when noted, each held open (its descriptor), so
    that it is not freed while the test may still look into it. A freed namespace's inode
    number is given to the next namespace made on the machine (another lab of a parallel
    worker): without the pin, that lab's agents would read as processes left in this one."""

    def __init__(self) -> None:
        self.fds: dict[tuple[int, int], int] = {}

    def add(self, name: str) -> None:
        for n in list_netns(f"np-{name}-"):
            try:
                fd = os.open(NETNS_DIR / n, os.O_RDONLY)
            except OSError:
                continue  # removed meanwhile
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in self.fds:
                os.close(fd)
            else:
                self.fds[(st.st_dev, st.st_ino)] = fd

    def __bool__(self) -> bool:
        return bool(self.fds)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def processes_in(pinned: Pinned) -> list[str]:
    """The live processes (pid and command line) in one of the pinned namespaces."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
                with open(f"/proc/{entry}/stat") as f:
                    zombie = f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in pinned.fds and not zombie:
                found.append(f"{entry} {cmd.decode(errors='replace').strip()}")
    return found


def processes_with(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmd:
                found.append(int(entry))
    return found


def lab_files(name: str) -> list[str]:
    try:
        entries = os.listdir(state_dir())
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if e.startswith(f"{name}.") or e.startswith(f".{name}."))


def root_rules() -> str:
    """The root namespace's packet filters: nftables and iptables (counters left out)."""
    out = []
    for argv in (["nft", "list", "ruleset"], ["iptables-save"]):
        text = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        out += [
            re.sub(r"\[\d+:\d+\]", "", line)
            for line in text.splitlines()
            if not line.startswith("#")
        ]
    return "\n".join(out)


@pytest.fixture(scope="module")
def root_before() -> str:
    if os.geteuid() != 0:
        pytest.fail("the fault-injection tests need root (they build labs)", pytrace=False)
    return root_rules()


@pytest.fixture
def lab(root_before: str, tmp_path: Path) -> Iterator[Lab]:
    name = lab_fixtures.unique_lab_name("f")
    down(name)
    lab = Lab(name=name, root_before=root_before, tmp=tmp_path)
    try:
        yield lab
    finally:
        for run in lab.runs:
            run.kill()
        down(name, wait=30)  # a killed demo's pytest run may still be ending
        lab.pinned.close()


class Lab:
    def __init__(self, *, name: str, root_before: str, tmp: Path) -> None:
        self.name = name
        self.root_before = root_before
        self.tmp = tmp
        self.runs: list[Run] = []
        self.pinned = Pinned()
        self.snapshot = tmp / "snapshot.yaml"
        self.snapshot.write_text(SNAPSHOT)
        self.probes = tmp / "probes.yaml"
        self.probes.write_text(PROBES)

    def start(self, *args: str, pause: str) -> Run:
        run = Run.netparity(*args, pause=pause)
        self.runs.append(run)
        return run

    def start_suites(self, pause: str) -> Run:
        run = Run(
            [
                sys.executable,
                "-m",
                "pytest",
                "suites/",
                "--cluster",
                f"lab:{self.name}",
                "--report-dir",
                str(self.tmp / "reports"),
                "-p",
                "no:cacheprovider",
                "-q",
            ],
            pause=pause,
        )
        self.runs.append(run)
        return run

    def up(self) -> None:
        done = netparity("lab", "up", str(self.snapshot), "--name", self.name)
        assert done.returncode == 0, done.stderr
        self.remember()

    def remember(self) -> None:
        """Note the lab's namespaces now, to look for processes left in them later."""
        self.pinned.add(self.name)

    def status(self) -> subprocess.CompletedProcess[str]:
        return netparity("lab", "status", "--name", self.name)

    def broken(self, doing: str) -> str:
        n = self.name
        return (
            f"lab {n} is broken: process {{pid}}, which was {doing} it, is gone; "
            f"`netparity lab down --name {n}` removes it and `netparity lab up --name {n}` "
            "builds it again"
        )

    def assert_nothing_left(self) -> None:
        deadline = time.monotonic() + 5
        while processes_in(self.pinned) and time.monotonic() < deadline:
            time.sleep(0.05)  # killed processes being reaped
        assert list_netns(f"np-{self.name}-") == []
        left = processes_in(self.pinned)
        assert left == [], f"processes left in the lab's namespaces: {left}"
        assert processes_with(f"lab:{self.name} ") == [], "a pytest run of the lab is left"
        assert lab_files(self.name) == []
        assert root_rules() == self.root_before, "the root namespace's rules changed"


# --------------------------------------------------------------------------- lab up


@pytest.mark.parametrize(
    ("sig", "point"),
    [
        (signal.SIGTERM, "build:namespaces"),
        (signal.SIGINT, "build:agents"),
        (signal.SIGHUP, "build:agents"),
    ],
)
def test_an_interrupted_lab_up_removes_what_it_built_and_the_next_up_works(
    lab: Lab, sig: signal.Signals, point: str
) -> None:
    run = lab.start("lab", "up", str(lab.snapshot), "--name", lab.name, pause=point)
    run.paused()
    lab.remember()
    if point == "build:agents":
        assert list_netns(f"np-{lab.name}-"), "the namespaces exist at this point"
    run.signal(sig)
    assert run.finish() == 128 + sig, run.output
    assert f"netparity: interrupted ({sig.name})" in run.output
    lab.assert_nothing_left()
    lab.up()
    assert netparity("lab", "down", "--name", lab.name).returncode == 0
    lab.assert_nothing_left()


def test_a_lab_whose_builder_was_killed_is_broken_refused_for_probing_and_repaired(
    lab: Lab,
) -> None:
    run = lab.start("lab", "up", str(lab.snapshot), "--name", lab.name, pause="build:agents")
    pid = run.paused()
    lab.remember()
    run.signal(signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    sentence = lab.broken("building").format(pid=pid)

    st = lab.status()
    assert st.returncode == 1 and st.stderr.strip() == f"netparity: {sentence}"
    assert f"lab {lab.name}: broken" in st.stdout
    doc = json.loads(netparity("lab", "status", "--name", lab.name, "--format", "json").stdout)
    assert (doc["health"], doc["problem"]) == ("broken", sentence)
    probe = netparity("lab", "probe", "--name", lab.name, "--probes", str(lab.probes))
    assert probe.returncode == 2 and probe.stderr.strip() == f"netparity: {sentence}"
    assert probe.stdout == ""

    repaired = netparity("lab", "up", str(lab.snapshot), "--name", lab.name)
    assert repaired.returncode == 0, repaired.stderr
    assert f"removing a half-built lab left by process {pid}, which is gone" in repaired.stderr
    lab.remember()
    assert lab.status().returncode == 0
    probe = netparity("lab", "probe", "--name", lab.name, "--probes", str(lab.probes))
    assert probe.returncode == 0, probe.stdout + probe.stderr

    # the same for an upgrade killed while it rebuilt; `lab down` removes what is left
    run = lab.start("lab", "upgrade", "--name", lab.name, pause="build:agents")
    pid = run.paused()
    lab.remember()
    run.signal(signal.SIGKILL)
    run.finish()
    st = lab.status()
    assert st.returncode == 1 and lab.broken("building").format(pid=pid) in st.stderr
    gone = netparity("lab", "down", "--name", lab.name)
    assert gone.returncode == 0 and f"lab {lab.name} removed" in gone.stdout
    lab.assert_nothing_left()


def test_a_lab_with_a_dead_agent_is_broken_and_refused_for_probing(lab: Lab) -> None:
    lab.up()
    state = json.loads((state_dir() / f"{lab.name}.json").read_text())
    victim = state["agents"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    st = lab.status()
    assert st.returncode == 1
    assert (
        f"1 of {len(state['agents'])} probe agents are gone (the first in {victim['netns']})"
        in st.stderr
    )
    probe = netparity("lab", "probe", "--name", lab.name, "--probes", str(lab.probes))
    assert probe.returncode == 2 and "probe agents are gone" in probe.stderr
    assert netparity("lab", "down", "--name", lab.name).returncode == 0
    lab.assert_nothing_left()


def test_commands_on_a_lab_that_does_not_exist_leave_no_lock_file(lab: Lab) -> None:
    for args in (("probe", "--probes", str(lab.probes)), ("upgrade",), ("down",)):
        done = netparity("lab", *args, "--name", lab.name)
        assert done.returncode == (0 if args == ("down",) else 2), done.stderr
        assert lab_files(lab.name) == [], args


# --------------------------------------------------------------------------- upgrade, down


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_upgrade_removes_the_lab_and_the_next_up_works(
    lab: Lab, sig: signal.Signals
) -> None:
    lab.up()
    run = lab.start("lab", "upgrade", "--name", lab.name, pause="upgrade:rebuild")
    run.paused()
    run.signal(sig)
    assert run.finish() == 128 + sig, run.output
    lab.assert_nothing_left()
    lab.up()
    assert lab.status().returncode == 0
    assert netparity("lab", "down", "--name", lab.name).returncode == 0
    lab.assert_nothing_left()


def test_a_down_killed_midway_reads_as_broken_and_the_next_down_finishes_it(lab: Lab) -> None:
    lab.up()
    run = lab.start("lab", "down", "--name", lab.name, pause="teardown:namespaces")
    pid = run.paused()
    run.signal(signal.SIGKILL)
    run.finish()
    st = lab.status()
    assert st.returncode == 1 and lab.broken("removing").format(pid=pid) in st.stderr
    assert netparity("lab", "down", "--name", lab.name).returncode == 0
    lab.assert_nothing_left()


# --------------------------------------------------------------------------- users


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_suites_run_holds_the_lab_as_a_user_until_it_ends_however_it_ends(
    lab: Lab, sig: signal.Signals
) -> None:
    lab.up()
    run = lab.start_suites(pause="lab:held")
    pid = run.paused()

    refused = netparity("lab", "down", "--name", lab.name)
    assert refused.returncode == 2
    assert re.fullmatch(
        rf"netparity: lab {lab.name} is in use by process {pid} \(pytest suites/ --cluster "
        rf"lab:{lab.name} [^)]*\); try again when it has ended \(or give --wait SECONDS\)\n",
        refused.stderr,
    ), refused.stderr
    assert lab.status().returncode == 0  # untouched
    other_user = netparity("lab", "probe", "--name", lab.name, "--probes", str(lab.probes))
    assert other_user.returncode == 0, other_user.stdout + other_user.stderr  # users share

    run.signal(sig)
    code = run.finish()
    assert code == (pytest.ExitCode.INTERRUPTED if sig == signal.SIGTERM else -sig), run.output
    assert processes_with(f"lab:{lab.name} ") == []
    # the lock died with its holder: the lab is whole and a changer gets it at once
    assert lab.status().returncode == 0
    assert netparity("lab", "down", "--name", lab.name).returncode == 0
    lab.assert_nothing_left()


def test_a_user_of_a_lab_being_built_is_refused_naming_the_builder(lab: Lab) -> None:
    run = lab.start("lab", "up", str(lab.snapshot), "--name", lab.name, pause="build:agents")
    pid = run.paused()
    lab.remember()
    probe = netparity("lab", "probe", "--name", lab.name, "--probes", str(lab.probes))
    assert probe.returncode == 2
    assert probe.stderr.startswith(
        f"netparity: lab {lab.name} is being built or removed by process {pid} "
        f"(netparity lab up {lab.snapshot}"
    ), probe.stderr
    second = netparity("lab", "upgrade", "--name", lab.name)
    assert second.returncode == 2 and f"is in use by process {pid}" not in second.stderr
    assert f"is being changed by process {pid}" in second.stderr
    run.signal(signal.SIGTERM)
    assert run.finish() == 143
    lab.assert_nothing_left()


# --------------------------------------------------------------------------- the demo


def _demo(lab: Lab, pause: str) -> Run:
    run = Run.netparity(
        "demo", "--name", lab.name, "--report-dir", str(lab.tmp / "reports"), pause=pause
    )
    lab.runs.append(run)
    return run


def test_two_demos_on_one_lab_do_not_corrupt_each_other(lab: Lab) -> None:
    first = _demo(lab, "lab:held")
    child = first.paused()  # its pytest run (pre) holds the lab
    lab.remember()
    before = json.loads((state_dir() / f"{lab.name}.json").read_text())

    second = netparity("demo", "--name", lab.name, "--report-dir", str(lab.tmp / "other"))
    assert second.returncode == 2
    assert re.fullmatch(
        rf"netparity: lab {lab.name} is being changed by process {first.proc.pid} "
        rf"\(netparity demo --name {lab.name} [^)]*\); try again when it has ended "
        r"\(or give --wait SECONDS\)\n",
        second.stderr,
    ), second.stderr
    assert not (lab.tmp / "other").exists()
    after = json.loads((state_dir() / f"{lab.name}.json").read_text())
    assert (after["generation"], after["agents"]) == (before["generation"], before["agents"])
    assert processes_in(lab.pinned), "the first demo's agents still run"

    os.kill(child, signal.SIGUSR1)  # resume the first demo's pre run
    os.kill(first.paused(nth=2), signal.SIGUSR1)  # and its post run
    assert first.finish() == 0, first.output
    assert "nothing else changed" in first.output
    lab.assert_nothing_left()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_cancelled_demo_leaves_no_lab_and_no_pytest_run(lab: Lab, sig: signal.Signals) -> None:
    run = _demo(lab, "lab:held")
    child = run.paused()
    lab.remember()
    run.signal(sig)
    code = run.finish()
    deadline = time.monotonic() + 30
    while processes_with(f"lab:{lab.name} ") and time.monotonic() < deadline:
        time.sleep(0.1)  # after SIGKILL the child ends on its own (it is told its parent died)
    assert processes_with(f"lab:{lab.name} ") == [], f"pytest {child} outlived the demo"
    if sig == signal.SIGTERM:
        assert code == 143, run.output
        assert "interrupted (SIGTERM)" in run.output and f"lab {lab.name} removed" in run.output
    else:
        assert code == -signal.SIGKILL
        assert lab.status().returncode == 0  # a whole lab, free: the next command can remove it
        gone = netparity("lab", "down", "--name", lab.name)
        assert gone.returncode == 0, gone.stderr
    lab.assert_nothing_left()


# --------------------------------------------------------------------------- the handlers


def test_sigterm_and_sighup_raise_keyboard_interrupt_and_the_old_handlers_come_back() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(KeyboardInterrupt), interrupts.signals_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert interrupts.exit_code() == 143
    assert {s: signal.getsignal(s) for s in before} == before


def test_an_ignored_sighup_stays_ignored_under_nohup() -> None:
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with interrupts.signals_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGHUP, old)


def test_an_interrupted_child_run_leaves_nothing_of_its_process_group() -> None:
    marker = f"netparity-fault-{os.getpid()}"
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'])\n"
        "time.sleep(300)\n"
    )

    def interrupt_soon() -> None:
        deadline = time.monotonic() + 30
        while not processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=interrupt_soon, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), interrupts.signals_as_interrupt():
        interrupts.run_child([sys.executable, "-c", script], env=dict(os.environ), grace=5)
    assert time.monotonic() - started < 20
    assert processes_with(marker) == [], "a grandchild outlived the interrupted child"
