"""Where a twin may stand, decided before anything is created.

Pure: it reads the wire objects the snapshot was read from (nodes with their
allocatable and taints, the pods on them with their requests, PodDisruptionBudgets,
the policies) and answers, per twin:

- why it cannot be placed (the real pod is not scheduled, its node is gone, Windows,
  a virtual node, cordoned, or full: allocatable pods, CPU or memory), naming the node;
- which labels it leaves out so that no PodDisruptionBudget selects it (only labels no
  policy selects on), or why it is skipped instead;
- what the user should know up front (a mesh label the twin cannot carry that a policy
  selects on; a label left out for a PodDisruptionBudget).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from netparity.errors import InputError
from netparity.kube.render import (
    HOSTNAME_LABEL,
    TWIN_CPU_MILLI,
    TWIN_MEMORY_BYTES,
    changed_labels,
)
from netparity.model._wire import Ctx
from netparity.model.objects import Pod
from netparity.model.selectors import LabelSelector

VIRTUAL_KUBELET_LABEL = ("type", "virtual-kubelet")
VIRTUAL_KUBELET_TAINT = "virtual-kubelet.io/provider"
POLICY_KINDS = frozenset({"NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"})
_CILIUM_SOURCE = re.compile(r"^(k8s|any|reserved|cidr|fqdn|container)[:.]")
_SUFFIXES: dict[str, Decimal | int] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity (`100m`, `1.5`, `128Mi`, `1e9`) as a number, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix) and not (suffix == "E" and re.search(r"\de[+-]?\d*$", text)):
            number = text[: -len(suffix)]
            try:
                return Decimal(number) * Decimal(_SUFFIXES[suffix])
            except InvalidOperation:
                return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _m(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _requests(spec: Mapping[str, Any]) -> tuple[Decimal, Decimal]:
    """(cpu cores, memory bytes) the scheduler counts for a pod: the sum over containers,
    or the largest init container if larger, plus the pod overhead."""

    def of(container: Any) -> tuple[Decimal, Decimal]:
        req = _m(_m(_m(container).get("resources")).get("requests"))
        return quantity(req.get("cpu")) or Decimal(0), quantity(req.get("memory")) or Decimal(0)

    cpu = mem = Decimal(0)
    for c in spec.get("containers") or ():
        c_cpu, c_mem = of(c)
        cpu, mem = cpu + c_cpu, mem + c_mem
    for c in spec.get("initContainers") or ():
        c_cpu, c_mem = of(c)
        cpu, mem = max(cpu, c_cpu), max(mem, c_mem)
    overhead = _m(spec.get("overhead"))
    cpu += quantity(overhead.get("cpu")) or Decimal(0)
    mem += quantity(overhead.get("memory")) or Decimal(0)
    return cpu, mem


@dataclass(slots=True, kw_only=True)
class NodeRoom:
    """One node as the scheduler sees it (what the snapshot holds of it)."""

    name: str
    hostname: str
    os: str = "linux"
    virtual: bool = False
    cordoned: bool = False
    pods_allocatable: int | None = None
    cpu_allocatable: Decimal | None = None  # cores
    memory_allocatable: Decimal | None = None  # bytes
    pods: int = 0
    cpu_requested: Decimal = Decimal(0)
    memory_requested: Decimal = Decimal(0)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> NodeRoom:
        meta = _m(raw.get("metadata"))
        spec = _m(raw.get("spec"))
        status = _m(raw.get("status"))
        labels = {str(k): str(v) for k, v in _m(meta.get("labels")).items()}
        name = str(meta.get("name"))
        taints = [_m(t) for t in spec.get("taints") or ()]
        alloc = _m(status.get("allocatable"))
        pods = quantity(alloc.get("pods"))
        return cls(
            name=name,
            hostname=labels.get(HOSTNAME_LABEL, name),
            os=labels.get("kubernetes.io/os", "linux"),
            virtual=labels.get(VIRTUAL_KUBELET_LABEL[0]) == VIRTUAL_KUBELET_LABEL[1]
            or any(t.get("key") == VIRTUAL_KUBELET_TAINT for t in taints),
            cordoned=bool(spec.get("unschedulable")),
            pods_allocatable=int(pods) if pods is not None else None,
            cpu_allocatable=quantity(alloc.get("cpu")),
            memory_allocatable=quantity(alloc.get("memory")),
        )


def _fmt_cpu(cores: Decimal) -> str:
    return f"{int(cores * 1000)}m"


def _fmt_mem(size: Decimal) -> str:
    return f"{int(size / 2**20)}Mi"


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """A PodDisruptionBudget: what it selects, in its namespace."""

    key: str
    namespace: str
    selector: LabelSelector | None  # None: selects nothing


def _selector_keys(node: Any) -> Iterator[str]:
    """Every label key any selector in a policy mentions (matchLabels, matchExpressions),
    without Cilium's source prefixes: what a policy may select pods on."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "matchLabels" and isinstance(value, Mapping):
                yield from (str(k) for k in value)
            elif key == "matchExpressions" and isinstance(value, list):
                for expr in value:
                    if isinstance(expr, Mapping) and isinstance(expr.get("key"), str):
                        yield expr["key"]
            else:
                yield from _selector_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _selector_keys(item)


def _plain(key: str) -> str:
    return _CILIUM_SOURCE.sub("", key, count=1)


@dataclass(slots=True, kw_only=True)
class Placement:
    """Answers for one snapshot (see the module docstring)."""

    nodes: dict[str, NodeRoom] = field(default_factory=dict)
    budgets: list[Budget] = field(default_factory=list)
    policy_keys: dict[str, list[str]] = field(default_factory=dict)  # label key -> policies

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]]) -> Placement:
        """From wire dicts (what `read_objects` returns; a snapshot file's items)."""
        placement = cls()
        pods: list[Mapping[str, Any]] = []
        for obj in objects:
            kind = obj.get("kind")
            meta = _m(obj.get("metadata"))
            if kind == "Node":
                node = NodeRoom.from_dict(obj)
                placement.nodes[node.name] = node
            elif kind == "Pod":
                pods.append(obj)
            elif kind == "PodDisruptionBudget":
                ns = str(meta.get("namespace") or "default")
                key = f"{ns}/{meta.get('name')}"
                raw = _m(obj.get("spec")).get("selector")
                try:
                    selector = (
                        LabelSelector.from_dict(raw, Ctx("PodDisruptionBudget", key))
                        if raw is not None
                        else None
                    )
                except InputError:
                    selector = None  # an API server never stores an invalid one
                placement.budgets.append(Budget(key=key, namespace=ns, selector=selector))
            elif kind in POLICY_KINDS:
                pns = meta.get("namespace")
                name = f"{kind} {pns}/{meta.get('name')}" if pns else f"{kind} {meta.get('name')}"
                for key in sorted(
                    set(map(_plain, _selector_keys(obj.get("spec"))))
                    | set(map(_plain, _selector_keys(obj.get("specs"))))
                ):
                    placement.policy_keys.setdefault(key, []).append(name)
        for pod in pods:
            spec = _m(pod.get("spec"))
            phase = _m(pod.get("status")).get("phase")
            room = placement.nodes.get(str(spec.get("nodeName") or ""))
            if room is None or phase in ("Succeeded", "Failed"):
                continue
            cpu, mem = _requests(spec)
            room.pods += 1
            room.cpu_requested += cpu
            room.memory_requested += mem
        return placement

    # ------------------------------------------------------------------ nodes

    def hostname(self, pod: Pod) -> str | None:
        """The value of the node's kubernetes.io/hostname label (the twin's node affinity)."""
        if not pod.node_name:
            return None
        node = self.nodes.get(pod.node_name)
        return node.hostname if node is not None else pod.node_name

    def check(self, pod: Pod, planned: Mapping[str, Pod]) -> str | None:
        """Why the twin of `pod` cannot be placed, given the twins already planned; None: it can."""
        if not pod.node_name:
            return (
                f"pod {pod.key} is not scheduled on any node (Pending): there is no node for its "
                f"twin to stand on, so it is not probed"
            )
        node = self.nodes.get(pod.node_name)
        if node is None:
            if not self.nodes:
                return None  # the snapshot has no nodes: nothing to check against
            return f"node {pod.node_name} (where pod {pod.key} ran) is not in the cluster any more"
        if node.os != "linux":
            return (
                f"pod {pod.key} runs on {node.os} node {node.name}: probe pods run the Linux "
                f"agent image, so it is not probed"
            )
        if node.virtual:
            return (
                f"pod {pod.key} runs on virtual node {node.name} (virtual-kubelet): a twin there "
                f"would not stand where the pod stands, so it is not probed"
            )
        if node.cordoned:
            return (
                f"node {node.name} (where pod {pod.key} runs) is cordoned (spec.unschedulable): "
                f"it is being drained or reimaged, so no twin is placed there and it is not probed"
            )
        if pod.key in planned:
            return None
        mine = 1 + sum(
            1 for key, p in planned.items() if p.node_name == node.name and key != pod.key
        )
        cpu = node.cpu_requested + Decimal(TWIN_CPU_MILLI) / 1000 * mine
        mem = node.memory_requested + Decimal(TWIN_MEMORY_BYTES) * mine
        full: list[str] = []
        if node.pods_allocatable is not None and node.pods + mine > node.pods_allocatable:
            full.append(
                f"{node.pods} pods of {node.pods_allocatable} allocatable, "
                f"{mine} twin(s) to add (Too many pods)"
            )
        if node.cpu_allocatable is not None and cpu > node.cpu_allocatable:
            full.append(
                f"CPU requests would be {_fmt_cpu(cpu)} of {_fmt_cpu(node.cpu_allocatable)} "
                f"allocatable (Insufficient cpu)"
            )
        if node.memory_allocatable is not None and mem > node.memory_allocatable:
            full.append(
                f"memory requests would be {_fmt_mem(mem)} of "
                f"{_fmt_mem(node.memory_allocatable)} allocatable (Insufficient memory)"
            )
        if full:
            return (
                f"node {node.name} (where pod {pod.key} runs) has no room for its twin: "
                + "; ".join(full)
            )
        return None

    def refuse(self, pod: Pod, planned: Mapping[str, Pod]) -> str | None:
        """Why no twin of `pod` is made (its node, or a PodDisruptionBudget); None: it is."""
        return self.check(pod, planned) or self.budget_check(pod)

    def check_host(self, node_name: str, planned: Mapping[str, Pod]) -> str | None:
        """Why no host probe pod (--allow-host-network) can stand on `node_name`, given the
        twins already planned there; None: it can."""
        node = self.nodes.get(node_name)
        if node is None:
            return None if not self.nodes else f"node {node_name} is not in the cluster any more"
        if node.os != "linux":
            return (
                f"node {node.name} is a {node.os} node: probe pods run the Linux agent image, "
                f"so it is not probed as a source"
            )
        if node.virtual:
            return f"node {node.name} is a virtual node (virtual-kubelet): it has no host network"
        if node.cordoned:
            return (
                f"node {node.name} is cordoned (spec.unschedulable): it is being drained or "
                f"reimaged, so no host probe pod is placed there and it is not probed"
            )
        mine = 1 + sum(1 for p in planned.values() if p.node_name == node.name)
        if node.pods_allocatable is not None and node.pods + mine > node.pods_allocatable:
            return (
                f"node {node.name} has no room for its host probe pod: {node.pods} pods of "
                f"{node.pods_allocatable} allocatable, {mine} probe pod(s) to add (Too many pods)"
            )
        return None

    # ------------------------------------------------------------------ budgets

    def _budgets_of(self, labels: Mapping[str, str], namespace: str) -> list[Budget]:
        return [
            b
            for b in self.budgets
            if b.namespace == namespace and b.selector is not None and b.selector.matches(labels)
        ]

    def leave_out(self, pod: Pod) -> frozenset[str]:
        """Labels the twin leaves out so that no PodDisruptionBudget selects it (each one no
        policy selects on); empty when none selects it or when it is skipped (see budget_check)."""
        out, _ = self._budget_course(pod)
        return out

    def budget_check(self, pod: Pod) -> str | None:
        """Why the twin of `pod` is skipped for a PodDisruptionBudget; None: it is not."""
        _, why = self._budget_course(pod)
        return why

    def _budget_course(self, pod: Pod) -> tuple[frozenset[str], str | None]:
        labels = dict(pod.labels)
        dropped: set[str] = set()
        for budget in self._budgets_of(labels, pod.namespace):
            assert budget.selector is not None
            free = [k for k in sorted(set(budget.selector.keys())) if k not in self.policy_keys]
            done = False
            for key in free:
                trial = {k: v for k, v in labels.items() if k != key}
                if not budget.selector.matches(trial):
                    labels, done = trial, True
                    dropped.add(key)
                    break
            if not done:
                used = sorted(set(budget.selector.keys()) & set(self.policy_keys))
                if budget.selector.is_empty:
                    why = "it selects every pod of the namespace"
                elif used:
                    why = (
                        "every label it selects on is one a policy selects on too ("
                        + ", ".join(f"{k}: {self.policy_keys[k][0]}" for k in used)
                        + ")"
                    )
                else:
                    why = "no label can be left out to avoid it"
                return frozenset(), (
                    f"PodDisruptionBudget {budget.key} would select the twin of pod {pod.key} "
                    f"and block node drains and upgrades while it exists; {why}, so the twin "
                    f"is not made and its probes are not run"
                )
        return frozenset(dropped), None

    # ------------------------------------------------------------------ telling

    def notes(self, pods: Sequence[Pod]) -> list[str]:
        """What the user should know before the twins are made (one line each)."""
        out: list[str] = []
        for pod in pods:
            leave = self.leave_out(pod)
            for key in sorted(leave):
                budgets = [b.key for b in self._budgets_of(pod.labels, pod.namespace)]
                out.append(
                    f"the twin of pod {pod.key} leaves out label {key}={pod.labels[key]} so that "
                    f"PodDisruptionBudget {', '.join(budgets)} does not select it (no policy "
                    f"selects on {key})"
                )
            for key, now in changed_labels(pod, leave_out=leave).items():
                if key in leave or key not in self.policy_keys:
                    continue
                was = pod.labels.get(key)
                what = f"{key}={was}" if was is not None else f"no {key} label"
                carries = f"{key}={now}" if now else f"no {key} label"
                out.append(
                    f"the twin of pod {pod.key} carries {carries} (the pod: {what}) to keep "
                    f"service-mesh sidecars out, and {self.policy_keys[key][0]} selects on {key}: "
                    f"its probes may not see what the pod sees"
                )
        return out
