"""Opening a cluster's backend and probing a plan, without pytest (verdicts: netparity.verdicts).

The pytest plugin is glue around these functions: it resolves options, calls them once on
the controller, and turns each `ItemVerdict` into an item's outcome. Everything a worker
needs travels as the JSON of `ItemVerdict`s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from netparity.backend import Backend, Observed, ProbeResult, Progress, Target
from netparity.engine.dataplane import CURRENT
from netparity.errors import ClusterError, InputError
from netparity.example import example_path
from netparity.plan.essential_probes import essential_check
from netparity.plan.model import PlannedProbe
from netparity.record import needs_retry

# The verdict types and judges live in netparity.verdicts; these names stay importable here.
from netparity.verdicts import (  # noqa: F401
    ItemVerdict,
    counts_line,
    judge_post,
    judge_pre,
    probe_properties,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The example a lab is built from when none is given: examples/ in a checkout, the package
# data netparity/examples/ in an installed wheel (netparity.example).
DEFAULT_EXAMPLE = example_path()
# Sources probed at once in a lab (one agent process each; a deny costs the whole timeout).
LAB_PARALLEL = 32


# --------------------------------------------------------------------------- clusters


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSpec:
    """What `--cluster` names: a lab, a snapshot file (dry run), or a kubeconfig context."""

    text: str
    kind: str  # lab | file | kubernetes
    value: str  # the lab name, the file spec, or the context

    @property
    def id(self) -> str:
        """The cluster's name in records and under reports/ (before the backend says more)."""
        return self.text


def parse_cluster(text: str) -> ClusterSpec:
    text = text.strip()
    if not text:
        raise InputError(
            "is empty: give lab, lab:NAME, file:SNAPSHOT.yaml or a kubeconfig context",
            field="--cluster",
        )
    if text == "lab" or text.startswith("lab:"):
        from netparity.lab.build import DEFAULT_LAB, check_lab_name

        name = text.partition(":")[2] or DEFAULT_LAB
        try:
            check_lab_name(name)
        except InputError as e:
            raise InputError(f"{text!r}: {e.message}", field="--cluster") from None
        return ClusterSpec(
            text="lab" if name == DEFAULT_LAB else f"lab:{name}", kind="lab", value=name
        )
    if text.startswith("file:"):
        from netparity.dryrun import parse_file_cluster

        parse_file_cluster(text)
        return ClusterSpec(text=text, kind="file", value=text)
    return ClusterSpec(text=text, kind="kubernetes", value=text)


def lab_is_up(name: str) -> bool:
    from netparity.lab.state import READY, load_state

    try:
        state = load_state(name)
    except ClusterError:
        return False
    return state is not None and state.status == READY and state.topology is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeOptions:
    """The Kubernetes backend's settings (the plugin's --probe-image, --max-parallel, ...)."""

    probe_image: str | None = None
    max_parallel: int = 8
    allow_load_balancer: bool = False
    dataplane: str | None = None
    max_duration: float | None = None  # seconds; None: the run's planned length + a margin
    settle: float | None = None  # None: the backend's default
    wait_ready: float = 0.0  # seconds to wait for a cluster in the migration window
    responder: str | None = None  # --responder ADDRESS[:PORTS]: checked to answer on open
    external_ip: str | None = None  # outside sources run from here only as this address
    allow_host_network: bool = False  # node sources from hostNetwork pods (a privileged namespace)
    kube_qps: float | None = None  # --kube-qps; None: the client's default


def open_backend(
    spec: ClusterSpec,
    *,
    kube: KubeOptions | None = None,
    example: Path = DEFAULT_EXAMPLE,
    on_bring_up: Callable[[str], None] | None = None,
    lab_progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Backend, str]:
    """The backend for a cluster spec and the cluster's name in records.

    A lab that is not up is built from `example` under npm first (as `netparity lab up`).
    """
    if spec.kind == "lab":
        from netparity.lab import LabBackend, up
        from netparity.model.snapshot import load_snapshot

        if not lab_is_up(spec.value):
            if on_bring_up is not None:
                on_bring_up(
                    f"no lab named {spec.value} is up: building it from {example} under {CURRENT} "
                    f"(`netparity lab down --name {spec.value}` removes it)"
                )
            up(
                load_snapshot([str(example)]),
                name=spec.value,
                dataplane=CURRENT,
                progress=lab_progress,
            )
        # held as a user until the run closes it (docs/faults.md)
        return LabBackend(spec.value, parallel=LAB_PARALLEL, hold=True), spec.text
    if spec.kind == "file":
        from netparity.dryrun import SnapshotBackend

        backend = SnapshotBackend.from_spec(spec.value)
        return backend, backend.facts().name
    try:
        from netparity.kube.backend import DEFAULT_SETTLE, KubeBackend
        from netparity.kube.render import DEFAULT_IMAGE
    except ImportError as e:
        raise ClusterError(
            f"cluster {spec.text!r} would be a kubeconfig context, but the Kubernetes backend "
            f"cannot be loaded ({e})"
        ) from e
    options = kube or KubeOptions()
    responder = None
    if options.responder is not None:  # before any probe relies on it
        from netparity.kube.responder import check_responder, parse_responder

        responder = check_responder(parse_responder(options.responder))
    kube_backend: Backend = KubeBackend(
        spec.value,
        probe_image=options.probe_image or DEFAULT_IMAGE,
        max_parallel=options.max_parallel,
        allow_load_balancer=options.allow_load_balancer,
        allow_host_network=options.allow_host_network,
        dataplane=options.dataplane,
        log=log,
        max_duration=options.max_duration,
        settle=options.settle if options.settle is not None else DEFAULT_SETTLE,
        wait_ready=options.wait_ready,
        responder=responder,
        external_ip=options.external_ip,
        kube_qps=options.kube_qps,
    )
    return kube_backend, spec.text


# --------------------------------------------------------------------------- probing


def probe_all(
    backend: Backend,
    probes: Sequence[PlannedProbe],
    *,
    timeout: float,
    retries: int,
    progress: Progress | None = None,
    dataplane: str | None = None,
) -> dict[str, list[ProbeResult]]:
    """Run every probe once (one batch per source, by the backend), then re-probe every deny
    and error up to `retries` times, in batches again; with `dataplane`, a first allow that
    the prediction for it says is a deny is probed again too (a dataplane that had not yet
    programmed a new pod lets it through; a verdict that then changes is flaky).
    Returns every try per probe id."""
    predicted = {
        p.id: p.predicted[dataplane].decision
        for p in probes
        if dataplane is not None and dataplane in p.predicted
    }
    tries: dict[str, list[ProbeResult]] = {p.id: [] for p in probes}
    todo = [Target(id=p.id, traffic=p.traffic, check=essential_check(p)) for p in probes]
    for attempt in range(retries + 1):
        if not todo:
            break
        what = "probing" if attempt == 0 else f"retry {attempt}"

        def report(_what: str, done: int, total: int, _label: str = what) -> None:
            if progress is not None:
                progress(_label, done, total)

        results = backend.run(todo, timeout=timeout, progress=report)
        by_id = {r.id: r for r in results}
        for t in todo:
            r = by_id.get(t.id)
            tries[t.id].append(
                r
                if r is not None
                else ProbeResult(
                    id=t.id, observed=Observed.ERROR, error="the backend returned no result"
                )
            )
        todo = [
            t
            for t in todo
            if needs_retry([r.observed for r in tries[t.id]])
            or (len(tries[t.id]) == 1 and _disagrees(tries[t.id][0], predicted.get(t.id)))
        ]
    return tries


def _disagrees(result: ProbeResult, decision: object) -> bool:
    """An allow observed where a deny was predicted (the other way round is a deny, which
    is probed again anyway)."""
    return result.allowed is True and str(decision) == "deny"


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self.start


# --------------------------------------------------------------------------- ids


def param_ids(items: Iterable[tuple[str, str]]) -> list[str]:
    """Readable, unique and stable pytest ids for (key, title) pairs: the title, with a
    short key suffix where two titles are the same."""
    pairs = list(items)
    cleaned = [(key, _clean(title)) for key, title in pairs]
    counts: dict[str, int] = {}
    for _, t in cleaned:
        counts[t] = counts.get(t, 0) + 1
    out = []
    seen: set[str] = set()
    for key, t in cleaned:
        pid = t if counts[t] == 1 else f"{t} #{key[:8]}"
        n = 8
        while pid in seen:  # two keys sharing a prefix: lengthen the suffix
            n += 4
            pid = f"{t} #{key[:n]}"
        seen.add(pid)
        out.append(pid)
    return out


def _clean(title: str) -> str:
    t = re.sub(r"\s+", " ", title).strip().replace("::", ":")
    return t or "probe"
