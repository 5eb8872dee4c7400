"""Cilium policies the lint judges: a CNP or CCNP that, under the target, cuts what NPM allowed.

NPM ignores CiliumNetworkPolicies, so every connection a Cilium policy in the snapshot
changes is a change the migration brings. Two ways a Cilium policy cuts:

- it **isolates pods NPM did not isolate** for a direction (any allow or deny rule puts
  the pods it selects into default-deny for that direction, unless `enableDefaultDeny`
  says otherwise): everything its rules do not admit is cut. The guide's own example
  (`endpointSelector: {}`, egress `toEntities: [host, remote-node]`) copied into a
  namespace without an egress NetworkPolicy cuts DNS, other pods and the internet;
- one of its **deny rules** cuts traffic the NetworkPolicies allowed.

For every pod class a Cilium policy selects, the lint evaluates the flows that matter
(the essential ones first: DNS, then the API server; then the other pods, the own node
and the outside, see `_flows`) under npm and under the target. A flow the pod's side
allowed under npm and denies under the target, where no NetworkPolicy isolates that side
under the target (or a deny rule of the policy decided), belongs to the Cilium policy:
one finding of kind `cilium-policy` per policy.

The fix is checked by the engine like every other fix: `enableDefaultDeny: {DIRECTION:
false}` (the policy adds its allows without isolating; the target must support it), else
the selector scoped to the pods NetworkPolicies already isolate for that direction (one
spec per isolating NetworkPolicy's podSelector), or the policy deleted where no pod of its
namespace is isolated for that direction. An intended tightening is accepted with an entry
in the accept file (its id is the finding's id; `netparity lint --accept FILE`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netparity.engine.compile import EGRESS, INGRESS, CiliumTarget
from netparity.engine.dataplane import Dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    Decision,
    ExternalEndpoint,
    NodeEndpoint,
    PathKind,
    PodEndpoint,
    RuleRef,
    Traffic,
    Verdict,
)
from netparity.lint.cilium_fixes import CiliumFixer
from netparity.lint.findings import (
    Change,
    ChangedTraffic,
    Expectation,
    Finding,
    PodGroup,
    Probe,
)
from netparity.lint.tally import NP
from netparity.lint.tally import side as _side
from netparity.model.objects import Pod, Protocol
from netparity.model.quick import quick_init
from netparity.model.snapshot import Snapshot
from netparity.plan.essential_probes import essential_flows
from netparity.plan.model import Scenario

KIND = str(Scenario.CILIUM_POLICY)
TITLE = "a Cilium policy cuts traffic NPM allowed"
MAX_PEERS = 24  # pod classes probed per class and direction (same namespace first)
MAX_PORTS = 3  # container ports per destination class
KUBELET_PORT = 10250
OUTSIDE_PORT = 443


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class _Flow:
    traffic: Traffic
    peer: str  # the other end, for a reader
    essential: bool  # DNS or the API server
    order: int


@dataclass(slots=True)
class _Acc:
    target: CiliumTarget
    rows: dict[tuple[str, str, str, PathKind], _Row] = field(default_factory=dict)
    refs: dict[RuleRef, None] = field(default_factory=dict)
    expectations: list[Expectation] = field(default_factory=list)
    directions: dict[str, None] = field(default_factory=dict)
    cuts: list[tuple[Traffic, str]] = field(default_factory=list)  # (traffic, side)


@dataclass(slots=True)
class _Row:
    order: int
    direction: str
    pods: PodGroup
    peer: str
    path: PathKind
    from_pods: bool
    npm: str
    target: str
    ports: dict[tuple[int, str], None] = field(default_factory=dict)
    uncertain: dict[str, None] = field(default_factory=dict)


def cilium_findings(
    snapshot: Snapshot,
    engine: Engine,
    npm: Dataplane,
    target: Dataplane,
    *,
    fixes: bool = True,
    verdicts: dict[tuple[str, str], Verdict] | None = None,
    like: tuple[str, Callable[[Traffic, Verdict], bool]] | None = None,
) -> list[Finding]:
    """One `cilium-policy` finding per Cilium policy that cuts what NPM allowed, with its
    checked fix (or why there is none) where `fixes`. `verdicts`: a cache of verdicts by
    (connection, dataplane name) to share with another call on the same engine. `like`:
    (a dataplane's name, whether `target`'s verdict on a connection has the decisions of
    that dataplane's verdict in `verdicts`): where it has and that verdict cuts nothing,
    `target` is not evaluated."""
    if not target.cilium_policies or not engine.cilium_targets:
        return []
    lint = _CiliumLint(snapshot, engine, npm, target)
    if verdicts is not None:
        lint.verdicts = verdicts
    lint.like = like
    return lint.findings(fixes=fixes)


class _CiliumLint:
    def __init__(self, snapshot: Snapshot, engine: Engine, npm: Dataplane, tgt: Dataplane):
        self.snapshot = snapshot
        self.engine = engine
        self.npm = npm
        self.tgt = tgt
        self.nodes = {n.name: n for n in snapshot.nodes}
        self.essential = essential_flows(snapshot)
        groups: dict[tuple[object, ...], list[Pod]] = {}
        for p in snapshot.pods:
            if not p.host_network:
                groups.setdefault((p.namespace, tuple(sorted(p.labels.items()))), []).append(p)
        self.groups = [sorted(g, key=lambda p: p.key) for g in groups.values()]
        self.groups.sort(key=lambda g: (g[0].namespace, g[0].key))
        self.by_namespace: dict[str, list[list[Pod]]] = {}  # in the order of `groups`
        for g in self.groups:
            self.by_namespace.setdefault(g[0].namespace, []).append(g)
        self.verdicts: dict[tuple[str, str], Verdict] = {}
        self.like: tuple[str, Callable[[Traffic, Verdict], bool]] | None = None
        self.fixer = CiliumFixer(snapshot, engine, tgt)

    # ---------------------------------------------------------------- flows

    def _flows(self, pod: Pod, direction: str) -> Iterator[_Flow]:
        """DNS first, the API server, then pods (same namespace first), the own node and
        the outside; for ingress: the pods and the own node towards `pod`'s ports."""
        me = PodEndpoint(pod=pod)
        order = 0
        if direction == EGRESS:
            for f in self.essential:
                dst = f.endpoint(pod, self.nodes)
                if dst is None or (f.service is not None and f.service.selects(pod)):
                    continue  # (a backend's own Service: hairpin, not what DNS needs)
                order += 1
                yield _Flow(
                    traffic=Traffic(source=me, destination=dst, port=f.port, protocol=f.protocol),
                    peer=f"{f.what}: {dst}",
                    essential=True,
                    order=order,
                )
        for group in self._peer_groups(pod):
            peer = group[0]
            ports = [(cp.port, cp.protocol) for cp in (peer if direction == EGRESS else pod).ports]
            if not ports:
                ports = [(80, Protocol.TCP)]
            for number, proto in ports[:MAX_PORTS]:
                order += 1
                src, dst = (me, PodEndpoint(pod=peer))
                if direction == INGRESS:
                    src, dst = dst, src
                yield _Flow(
                    traffic=Traffic(source=src, destination=dst, port=number, protocol=proto),
                    peer=str(self._pod_group(group)),
                    essential=False,
                    order=order,
                )
        node = self.nodes.get(pod.node_name or "")
        if node is not None:
            order += 1
            if direction == EGRESS:
                yield _Flow(
                    traffic=Traffic(
                        source=me, destination=NodeEndpoint(node=node), port=KUBELET_PORT
                    ),
                    peer=f"node {node.name} (own node)",
                    essential=False,
                    order=order,
                )
            else:
                for cp in pod.ports[:MAX_PORTS]:
                    yield _Flow(
                        traffic=Traffic(
                            source=NodeEndpoint(node=node),
                            destination=me,
                            port=cp.port,
                            protocol=cp.protocol,
                        ),
                        peer=f"node {node.name} (own node)",
                        essential=False,
                        order=order,
                    )
        if direction == EGRESS:
            order += 1
            yield _Flow(
                traffic=Traffic(
                    source=me,
                    destination=ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP),
                    port=OUTSIDE_PORT,
                ),
                peer=f"outside address {DEFAULT_EXTERNAL_IP}",
                essential=False,
                order=order,
            )

    def _peer_groups(self, pod: Pod) -> list[list[Pod]]:
        """The first MAX_PEERS placed groups: the pod's namespace first, then the others in
        order (read through the per-namespace index: never every group per pod)."""
        out = [
            g
            for g in self.by_namespace.get(pod.namespace, ())
            if g[0].key != pod.key and (g[0].node_name or g[0].ip)
        ][:MAX_PEERS]
        for ns, groups in self.by_namespace.items():
            if ns == pod.namespace:
                continue
            for g in groups:
                if len(out) >= MAX_PEERS:
                    return out
                if g[0].node_name or g[0].ip:
                    out.append(g)
        return out

    def _pod_group(self, pods: Sequence[Pod]) -> PodGroup:
        """The class as a reader sees it: the labels Cilium keeps (D6), a count, an example."""
        rep = pods[0]
        return PodGroup(
            namespace=rep.namespace,
            labels=tuple(sorted(self.engine.labels(rep, self.tgt).items())),
            count=len(pods),
            example=rep.key,
            template=rep.template,
        )

    def _verdict(self, traffic: Traffic, dp: Dataplane) -> Verdict:
        key = (str(traffic), dp.name)
        v = self.verdicts.get(key)
        if v is None:
            v = self.verdicts[key] = self.engine.evaluate(traffic, dp)
        return v

    # ---------------------------------------------------------------- judging

    def findings(self, *, fixes: bool = True) -> list[Finding]:
        accs: dict[str, _Acc] = {}
        for group in self.groups:
            pod = group[0]
            for direction in (EGRESS, INGRESS):
                _, cts, _ = self.engine.selecting(pod, direction, self.tgt)
                if not cts:
                    continue
                for flow in self._flows(pod, direction):
                    self._judge(flow, group, direction, cts, accs)
        out = []
        for acc in accs.values():
            finding = self._finding(acc)
            out.append(self.fixer.with_fix(finding, acc) if fixes else finding)
        return out

    def _judge(
        self,
        flow: _Flow,
        group: list[Pod],
        direction: str,
        cts: Sequence[CiliumTarget],
        accs: dict[str, _Acc],
    ) -> None:
        vn = self._verdict(flow.traffic, self.npm)
        sn = _side(vn, direction)
        if sn is None or sn.decision is not Decision.ALLOW:
            return  # nothing npm allowed to cut: the target's verdict is not needed
        if self.like is not None:
            name, alike = self.like
            known = self.verdicts.get((str(flow.traffic), name))
            if known is not None and alike(flow.traffic, known):
                sk = _side(known, direction)
                if sk is None or sk.decision is not Decision.DENY:
                    return  # the target decides as `known` does, which cuts nothing
        vt = self._verdict(flow.traffic, self.tgt)
        st = _side(vt, direction)
        if st is None or st.decision is not Decision.DENY:
            return
        deny_refs = [r for r in st.rules if not r.policy.startswith(NP)]
        if deny_refs:
            blamed = [c for c in cts if any(r.policy == c.name for r in deny_refs)]
        elif any(n.startswith(NP) for n in st.selected_by):
            return  # a NetworkPolicy isolates it under the target: the lint's other kinds
        else:
            blamed = list(cts)
        for c in blamed:
            acc = accs.setdefault(c.name, _Acc(target=c))
            acc.directions[direction] = None
            acc.refs.update(dict.fromkeys(r for r in deny_refs if r.policy == c.name))
            acc.cuts.append((flow.traffic, direction))
            pods = self._pod_group(group)
            key = (direction, pods.example, flow.peer, vt.path)
            row = acc.rows.get(key)
            if row is None:
                row = acc.rows[key] = _Row(
                    order=flow.order,
                    direction=direction,
                    pods=pods,
                    peer=flow.peer,
                    path=vt.path,
                    from_pods=direction == EGRESS,
                    npm=sn.reason,
                    target=st.reason,
                )
            port = flow.traffic.port if isinstance(flow.traffic.port, int) else 0
            row.ports[(port, f"{flow.traffic.port}/{flow.traffic.protocol}")] = None
            row.uncertain.update(dict.fromkeys((*vn.uncertain, *vt.uncertain)))
            acc.expectations.append(
                Expectation(
                    probe=Probe(
                        traffic=flow.traffic,
                        side=direction,
                        pods=pods,
                        peer=flow.peer,
                        port=port,
                        port_label=f"{flow.traffic.port}/{flow.traffic.protocol}",
                        from_pods=direction == EGRESS,
                    ),
                    expected=Decision.ALLOW,
                )
            )

    def _finding(self, acc: _Acc) -> Finding:
        c = acc.target
        rows = sorted(
            acc.rows.values(), key=lambda r: (r.direction != EGRESS, r.order, r.pods.example)
        )
        traffic = tuple(
            ChangedTraffic(
                change=Change.OUTAGE,
                direction=r.direction,
                path=r.path,
                pods=r.pods,
                peer=r.peer,
                ports=tuple(label for _, label in sorted(r.ports)),
                npm=r.npm,
                target=r.target,
                uncertain=tuple(r.uncertain),
                from_pods=r.from_pods,
            )
            for r in rows
        )
        namespace = c.namespace or ""
        name = c.name.split(" ", 1)[1].split("#", 1)[0]
        cut = _what_is_cut(traffic)
        how = (
            "its deny rules cut"
            if acc.refs
            else f"it isolates pods for {'/'.join(acc.directions)} that NPM left open and cuts"
        )
        message = (
            f"{c.name}: {TITLE} under {self.tgt.name}: {how} {cut}; e.g. {traffic[0].describe()}"
        )
        return Finding(
            id=f"{KIND}/{namespace or '-'}/{name.rsplit('/', 1)[-1]}",
            kind=KIND,
            namespace=namespace,
            object=c.name,
            policies=(c.name,),
            rules=tuple(str(r) for r in acc.refs),
            service=None,
            title=TITLE,
            message=message,
            traffic=traffic,
            rows=("D13",) if any(t.peer.startswith("DNS") for t in traffic) else (),
            uncertain=tuple(dict.fromkeys(u for t in traffic for u in t.uncertain)),
            expectations=tuple(acc.expectations),
            rule_refs=tuple(acc.refs),
        )


# -------------------------------------------------------------------- helpers


def _what_is_cut(traffic: Sequence[ChangedTraffic]) -> str:
    kinds: dict[str, None] = {}
    for t in traffic:
        if t.peer.startswith("DNS"):
            kinds["DNS"] = None
        elif t.peer.startswith("the API server"):
            kinds["the API server"] = None
        elif t.peer.startswith("node "):
            kinds["nodes"] = None
        elif t.peer.startswith("outside"):
            kinds["the outside"] = None
        else:
            kinds["other pods"] = None
    return ", ".join(kinds)


def accepted(
    findings: Sequence[Finding], accepts: Mapping[str, Any]
) -> tuple[list[Finding], list[str]]:
    """The findings no accept entry names, and a note per accepted one (`id (reason)`)."""
    kept: list[Finding] = []
    notes: list[str] = []
    for f in findings:
        entry = accepts.get(f.id)
        if entry is None:
            kept.append(f)
        else:
            notes.append(f"accepted {f.id}: {getattr(entry, 'reason', entry)}")
    return kept, notes
