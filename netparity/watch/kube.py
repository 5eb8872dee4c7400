"""The watch on a Kubernetes cluster: the sentinels' twins placed by the Kubernetes backend
(`KubeBackend`: its layout, placement, twins, Services and exec batches, as the suites'
run uses them), re-placed as nodes come and go, probed every interval.

Each round:
1. the nodes are read with the agents on them (what `netparity.kube.detect` reads: the
   kube-system pods `k8s-app=cilium`, Ready, and `k8s-app=azure-npm`, by node), which
   gives each node's dataplane changes (`netparity.watch.nodes`);
2. the backend forgets the twins that are gone and reads the cluster again; where the pods
   or nodes changed the probes are planned again: ids are by meaning, so a sentinel is
   the same probe when its pods came back under new names on new nodes;
3. a sentinel with no probe of its id in the plan now, or whose pods stand on a node
   being reimaged, is "not placed" for the round; the others run once (no retries), the
   backend never waiting for a twin (one still starting is "not placed");
4. a probe that did not connect while one of its twins went away or its node stopped
   being steady is "not placed": its node was reimaged meanwhile, not a policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from netparity.backend import ProbeResult, Target
from netparity.engine.dataplane import DETECTIONS
from netparity.errors import InputError
from netparity.kube.backend import KubeBackend
from netparity.kube.client import NODES, PODS
from netparity.kube.detect import KUBE_SYSTEM, image_of, image_version, release_of
from netparity.kube.rounds import live_pods
from netparity.model.snapshot import Snapshot
from netparity.plan.model import PlannedProbe
from netparity.watch.nodes import NodeSeen, NodeTracker
from netparity.watch.probes import nodes_of, pods_of, seen_of
from netparity.watch.timeline import NodeChange, Sample, Seen

# Twins live this much longer than --max-duration: the first round's placing and the last
# round's probes, and a margin; the API lets a deadline be lowered, never raised.
TWIN_MARGIN = 300.0


def _ready(obj: Mapping[str, Any]) -> bool | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return None


def _image(pod: Mapping[str, Any], container: str) -> str:
    """The image of the agent's container (else the first container's)."""
    spec = pod.get("spec") or {}
    return image_of(spec, container) or ""


def read_nodes(backend: KubeBackend) -> dict[str, NodeSeen]:
    """Every node with its Ready condition, cordon and the agent that runs on it."""
    kube = backend.kube
    agents: dict[str, str] = {}
    # the registered dataplanes' agents (engine/dataplane.py Detection), in registration order
    products = {d.daemonset: d.container for d in DETECTIONS.values()}
    for daemonset, container in products.items():
        selector = f"k8s-app={daemonset}"
        for pod in kube.list(PODS, namespace=KUBE_SYSTEM, label_selector=selector) or []:
            node = (pod.get("spec") or {}).get("nodeName")
            running = (pod.get("status") or {}).get("phase") == "Running"
            if isinstance(node, str) and running and _ready(pod) is not False:
                agents[node] = release_of(daemonset, image_version(_image(pod, container)))
    out: dict[str, NodeSeen] = {}
    for n in kube.list(NODES) or []:
        meta = n.get("metadata") or {}
        name = str(meta.get("name"))
        out[name] = NodeSeen(
            name=name,
            ready=_ready(n) is not False,  # a node without conditions (none reported): Ready
            cordoned=bool((n.get("spec") or {}).get("unschedulable")),
            dataplane=agents.get(name, "none"),
        )
    return out


class KubeSource:
    """The watch's view of a Kubernetes cluster (module doc)."""

    def __init__(
        self,
        context: str,
        *,
        max_duration: float,
        probe_image: str | None = None,
        kubeconfig: str | None = None,
        settle: float | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from netparity.kube.backend import DEFAULT_SETTLE
        from netparity.kube.render import DEFAULT_IMAGE

        self.backend = KubeBackend(
            context,
            kubeconfig=kubeconfig,
            probe_image=probe_image or DEFAULT_IMAGE,
            max_duration=max_duration + TWIN_MARGIN,
            settle=DEFAULT_SETTLE if settle is None else settle,
            log=log,
        )
        self.log = log if log is not None else (lambda _m: None)
        self.nodes = NodeTracker()
        self.enforced_at: float | None = None
        self.replan: Callable[[Snapshot], Mapping[str, PlannedProbe]] | None = None
        self._planned: Mapping[str, PlannedProbe] = {}
        self._shape: object = None

    # what the watch asks of any source

    def snapshot(self) -> Snapshot:
        return self.backend.snapshot()

    def current(self) -> str:
        """The dataplane every node runs now (without a baseline); refused mid-migration."""
        seen = read_nodes(self.backend)
        planes = {s.dataplane for s in seen.values() if s.steady}
        if len(planes) == 1 and all(s.steady for s in seen.values()):
            return planes.pop()
        raise InputError(
            "the nodes do not all run one dataplane now (a migration under way?): give the "
            "pre run's record with --baseline",
            field="--baseline",
        )

    def node_changes(self, start: float) -> tuple[NodeChange, ...]:
        return self.nodes.changes()

    def enforced(self, start: float) -> float | None:
        return self.enforced_at

    def enforcing(self, target: str) -> bool:
        return self.nodes.enforcing(target)

    def close(self) -> None:
        self.backend.close()
        for line in self.backend.cleanup_errors:
            self.log(line)

    def replan_first(self, planned: Mapping[str, PlannedProbe], snap: Snapshot) -> None:
        """The plan the sentinels were chosen from, for the cluster as `snap` shows it."""
        self._planned, self._shape = planned, _shape(snap)

    # the round

    def round(self, watched: Sequence[Any], began: float, timeout: float, target: str) -> None:
        self.nodes.update(read_nodes(self.backend), began)
        if self.enforced_at is None and self.nodes.enforcing(target):
            self.enforced_at = began
        for line in self.backend.refresh():
            self.log(line)
        snap = self.backend.snapshot()
        shape = _shape(snap)
        if shape != self._shape and self.replan is not None:
            self._planned = self.replan(snap)
            self._shape = shape
        busy = self.nodes.busy()
        run: list[tuple[Any, PlannedProbe]] = []
        for w in watched:
            probe = self._planned.get(w.probe.id)
            if probe is None:
                w.samples.append(
                    Sample(
                        time=began,
                        verdict=Seen.NOT_PLACED,
                        detail="no pod of its class runs now (being recreated?)",
                    )
                )
                continue
            nodes = nodes_of(probe)
            w.see_nodes(nodes)
            away = sorted(busy & set(nodes))
            if away:
                w.samples.append(
                    Sample(
                        time=began,
                        verdict=Seen.NOT_PLACED,
                        detail=f"node {away[0]} is being reimaged",
                    )
                )
                continue
            run.append((w, probe))
        targets = [Target(id=p.id, traffic=p.traffic) for _, p in run]
        results = self.backend.run_round(targets, timeout=timeout) if targets else []
        self._judge(run, results, began)

    def _judge(
        self, run: Sequence[tuple[Any, PlannedProbe]], results: Sequence[ProbeResult], began: float
    ) -> None:
        after_nodes = read_nodes(self.backend) if run else {}
        live = live_pods(self.backend) if run else {}
        made = self.backend._made
        for (w, probe), r in zip(run, results, strict=True):
            seen = seen_of(r)
            if seen is Seen.DENY or seen is Seen.ERROR:
                moved = [
                    n for n in nodes_of(probe) if n not in after_nodes or not after_nodes[n].steady
                ]
                gone = [
                    key
                    for key in pods_of(probe)
                    if (twin := made.twins.get(key)) is not None
                    and twin.obj is not None
                    and (
                        (twin.obj["metadata"]["namespace"], twin.obj["metadata"]["name"])
                        not in live
                    )
                ]
                if moved or gone:
                    why = (
                        f"node {moved[0]} was reimaged meanwhile"
                        if moved
                        else f"the probe pod of {gone[0]} went away meanwhile"
                    )
                    w.samples.append(Sample(time=began, verdict=Seen.NOT_PLACED, detail=why))
                    continue
            detail = r.error if seen in (Seen.ERROR, Seen.NOT_PLACED) else None
            w.samples.append(Sample(time=began, verdict=seen, detail=detail))


def _shape(snap: Snapshot) -> object:
    """What a new plan depends on that a migration changes: the pods, their nodes, the nodes."""
    return (
        tuple(sorted((p.key, p.node_name or "") for p in snap.pods)),
        tuple(sorted(n.name for n in snap.nodes)),
    )
