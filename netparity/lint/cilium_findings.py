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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from netparity.lint.findings import (
    Change,
    ChangedTraffic,
    Expectation,
    Finding,
    Fix,
    FixAction,
    FixWhen,
    PodGroup,
    Probe,
)
from netparity.lint.tally import NP
from netparity.lint.tally import side as _side
from netparity.lint.wire import ip_block_dict, selector_dict
from netparity.model.ciliumpolicy import CiliumPolicy, CiliumRule
from netparity.model.objects import Pod, Protocol
from netparity.model.snapshot import Snapshot
from netparity.plan.essential_probes import essential_flows
from netparity.plan.model import Scenario

KIND = str(Scenario.CILIUM_POLICY)
TITLE = "a Cilium policy cuts traffic NPM allowed"
MAX_PEERS = 24  # pod classes probed per class and direction (same namespace first)
MAX_PORTS = 3  # container ports per destination class
KUBELET_PORT = 10250
OUTSIDE_PORT = 443
_FIELDS = {
    INGRESS: ("fromEndpoints", "fromEntities", "fromCIDRSet", "toPorts"),
    EGRESS: ("toEndpoints", "toEntities", "toCIDRSet", "toPorts"),
}


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
    snapshot: Snapshot, engine: Engine, npm: Dataplane, target: Dataplane, *, fixes: bool = True
) -> list[Finding]:
    """One `cilium-policy` finding per Cilium policy that cuts what NPM allowed, with its
    checked fix (or why there is none) where `fixes`."""
    if not target.cilium_policies or not engine.cilium_targets:
        return []
    return _CiliumLint(snapshot, engine, npm, target).findings(fixes=fixes)


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
        self.verdicts: dict[tuple[str, str], Verdict] = {}

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
        same = [g for g in self.groups if g[0].namespace == pod.namespace and g[0].key != pod.key]
        other = [g for g in self.groups if g[0].namespace != pod.namespace]
        return [g for g in (*same, *other) if g[0].node_name or g[0].ip][:MAX_PEERS]

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
            out.append(self._with_fix(finding, acc) if fixes else finding)
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
        vt = self._verdict(flow.traffic, self.tgt)
        sn, st = _side(vn, direction), _side(vt, direction)
        if sn is None or st is None:
            return
        if sn.decision is not Decision.ALLOW or st.decision is not Decision.DENY:
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

    # ---------------------------------------------------------------- fixes

    def _with_fix(self, finding: Finding, acc: _Acc) -> Finding:
        specs = self._specs(acc.target)
        if specs is None:
            return replace(
                finding,
                no_fix_reason="the policy uses fields the lint cannot copy into a fix; "
                + _by_hand(acc),
            )
        tried: list[str] = []
        for fix in self._candidates(acc, specs):
            if self._restores(fix, acc):
                return replace(finding, fix=fix)
            tried.append(fix.summary)
        return replace(
            finding,
            no_fix_reason="no fix restores every cut connection under the engine (tried: "
            + "; ".join(tried)
            + "); "
            + _by_hand(acc),
        )

    def _specs(self, c: CiliumTarget) -> list[CiliumPolicy] | None:
        """Every spec of the policy's object, in order; None where one cannot be copied."""
        kind, _, key = c.name.partition(" ")
        base = key.split("#", 1)[0]
        specs = [
            p
            for p in self.snapshot.cilium_policies
            if p.kind == kind and (f"{p.namespace}/{p.name}" if p.namespace else p.name) == base
        ]
        if not specs or any(
            r.unsupported
            for p in specs
            for r in (*(p.ingress or ()), *(p.egress or ()), *p.ingress_deny, *p.egress_deny)
        ):
            return None
        return sorted(specs, key=lambda p: p.spec_index)

    def _candidates(self, acc: _Acc, specs: list[CiliumPolicy]) -> Iterator[Fix]:
        c = acc.target
        which = next(p for p in specs if f"{p.kind} {p.key}" == c.name)
        directions = list(acc.directions)
        if not acc.refs:
            edited = [
                replace(
                    p,
                    default_deny_ingress=False if INGRESS in directions else p.default_deny_ingress,
                    default_deny_egress=False if EGRESS in directions else p.default_deny_egress,
                )
                if p is which
                else p
                for p in specs
            ]
            dd = ", ".join(f"{d}: false" for d in directions)
            yield Fix(
                summary=f"sets enableDefaultDeny: {{{dd}}}: the policy adds its allows to pods "
                "other policies isolate, and isolates none itself",
                action=FixAction.APPLY,
                when=FixWhen.BEFORE,
                objects=(_policy_dict(edited),),
                explanation="Cilium honours enableDefaultDeny only where "
                "enable-non-default-deny-policies is on; the engine checked it under "
                f"{self.tgt.name} with the snapshot's cilium-config",
            )
        if which.namespace is None or len(directions) != 1:
            return
        direction = directions[0]
        subjects = [
            t.subject
            for t in self.engine.np_targets
            if t.namespace == which.namespace and direction in t.isolates
        ]
        if not subjects:
            yield Fix(
                summary=f"deletes the policy: no NetworkPolicy isolates a pod of namespace "
                f"{which.namespace} for {direction}, so it only cuts there",
                action=FixAction.DELETE,
                when=FixWhen.BEFORE,
                objects=(_policy_dict(specs),),
                explanation="keep it where pods are isolated for "
                f"{direction} (copy it into those namespaces)",
            )
            return
        scoped = [replace(which, spec_index=i, endpoint_selector=s) for i, s in enumerate(subjects)]
        others = [p for p in specs if p is not which]
        yield Fix(
            summary=f"scopes endpointSelector to the pods NetworkPolicies already isolate for "
            f"{direction} (one spec per NetworkPolicy podSelector)",
            action=FixAction.APPLY,
            when=FixWhen.BEFORE,
            objects=(_policy_dict([*others, *scoped]),),
            explanation="the policy's rules are unchanged; pods isolated later need the "
            "selector widened",
        )

    def _restores(self, fix: Fix, acc: _Acc) -> bool:
        from netparity.lint.fixes import apply_objects

        try:
            fixed = apply_objects(self.snapshot, fix.objects, fix.action)
        except Exception:  # a fix the parser refuses is no fix
            return False
        engine = Engine(fixed, compiled=self.engine)
        for traffic, direction in acc.cuts:
            result = _side(engine.evaluate(traffic, self.tgt), direction)
            if result is None or result.decision is not Decision.ALLOW:
                return False
        return True


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


def _by_hand(acc: _Acc) -> str:
    if acc.refs:
        return "remove or narrow the deny rules named, or accept the change (--accept)"
    dd = ", ".join(f"{d}: false" for d in acc.directions)
    return (
        f"add enableDefaultDeny: {{{dd}}} to its spec, scope its endpointSelector to pods "
        "already isolated, or accept the change (--accept)"
    )


def _policy_dict(specs: Sequence[CiliumPolicy]) -> dict[str, Any]:
    first = specs[0]
    meta: dict[str, Any] = {"name": first.name}
    if first.namespace is not None:
        meta["namespace"] = first.namespace
    out: dict[str, Any] = {"apiVersion": "cilium.io/v2", "kind": first.kind, "metadata": meta}
    bodies = [_spec_dict(p) for p in specs]
    if len(bodies) == 1:
        out["spec"] = bodies[0]
    else:
        out["specs"] = bodies
    return out


def _spec_dict(p: CiliumPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.endpoint_selector is not None:
        out["endpointSelector"] = selector_dict(p.endpoint_selector)
    if p.node_selector is not None:
        out["nodeSelector"] = selector_dict(p.node_selector)
    for key, rules, direction in (
        ("ingress", p.ingress, INGRESS),
        ("egress", p.egress, EGRESS),
        ("ingressDeny", p.ingress_deny or None, INGRESS),
        ("egressDeny", p.egress_deny or None, EGRESS),
    ):
        if rules is not None:
            out[key] = [_rule_dict(r, direction) for r in rules]
    dd = {
        k: v
        for k, v in (("ingress", p.default_deny_ingress), ("egress", p.default_deny_egress))
        if v is not None
    }
    if dd:
        out["enableDefaultDeny"] = dd
    return out


def _rule_dict(rule: CiliumRule, direction: str) -> dict[str, Any]:
    endpoints, entities, cidrs, ports = _FIELDS[direction]
    out: dict[str, Any] = {}
    if rule.endpoints is not None:
        out[endpoints] = [selector_dict(s) for s in rule.endpoints]
    if rule.entities:
        out[entities] = [str(e) for e in rule.entities]
    if rule.cidrs:
        out[cidrs] = [ip_block_dict(b) for b in rule.cidrs]
    if rule.ports:
        items = []
        for cp in rule.ports:
            item: dict[str, Any] = {"port": "0" if cp.port is None else str(cp.port)}
            if cp.end_port:
                item["endPort"] = cp.end_port
            item["protocol"] = str(cp.protocol)
            items.append(item)
        out[ports] = [{"ports": items}]
    return out


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
