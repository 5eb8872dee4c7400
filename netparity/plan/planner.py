"""The planner: the probes that prove every rule and reveal every migration scenario.

`make_plan(snapshot)` is pure. It groups pods into equivalence classes (classes.py), then
for every rule of every policy plans probes the rule must admit (a matching peer on the
rule's ports: both ends of a range, the destination's number for a named port, a
declared port for "all ports") and probes just outside it (a peer no rule of the subject
admits, the ports below and above a range, another protocol), kept only where the
subject's side would deny them. Scenario probes reveal the SEMANTICS rows: egress to the
own and another node (D4), ipBlocks over pods and nodes (D2), conflicting named ports
(D3), endPort (D1), external NodePort/LoadBalancer ingress with the receiving node on and
off the backend's node (D5), in-cluster clients of those Services (D5d), SCTP (D8),
excluded identity labels (D6) and policies NPM cannot translate (D11). Pods whose ingress
is restricted but that no NodePort/LoadBalancer Service exposes get a run-owned Service
(`Plan.synthetic_services`).

Node and outside-traffic probes depend on fewer things than pod-to-pod ones: whether the
class is isolated and which of its policies could match a node (egress) or a non-pod
source (ingress), under both dataplanes. Classes alike in that are probed once on those
paths (the node probes' `stands_for` lists all their pods), which keeps the plan and the
number of run-owned Services proportional to behaviours, not workloads.

Coverage counts a Cilium deny rule's probes (traffic it must reject) as both its admit
("exercised") and its reject probes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import ipaddress
from collections.abc import Iterable, Iterator, Sequence

from netparity.engine.causes import CauseFinder
from netparity.engine.compile import EGRESS, INGRESS
from netparity.engine.dataplane import CURRENT, NEWEST_TARGET, Dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import DEFAULT_EXTERNAL_IP, PodEndpoint, Verdict
from netparity.model.networkpolicy import IPBlock
from netparity.model.objects import Protocol, ServiceType
from netparity.model.snapshot import Snapshot
from netparity.plan.base import Draft, Port, Progress
from netparity.plan.classes import block_members, ip_int
from netparity.plan.essential_probes import EssentialProbes, essential_flows
from netparity.plan.ids import plan_digest
from netparity.plan.infer import infer_scenario
from netparity.plan.model import Coverage, Intent, Plan, PlannedProbe, Prediction, Scenario
from netparity.plan.rule_probes import RuleProbes
from netparity.plan.scenario_probes import ScenarioProbes
from netparity.probefile import ProbeSpec, ResolvedProbe, resolve_probes

# Bump when what an id means changes: records of another version are refused (netparity.record).
PLAN_VERSION = "1"
_INTENT_ORDER = {Intent.EXPLICIT: 0, Intent.ADMIT: 1, Intent.REJECT: 2, Intent.SCENARIO: 3}
_SCENARIO_ORDER = {s: i for i, s in enumerate(Scenario)}


def make_plan(
    snapshot: Snapshot,
    *,
    current: str = CURRENT,
    target: str = NEWEST_TARGET,
    explicit: Iterable[ProbeSpec | ResolvedProbe] = (),
    external_ip: str = DEFAULT_EXTERNAL_IP,
    responder: str | None = None,
    service_cidr: ipaddress.IPv4Network | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Plan the probes for `snapshot` moving from `current` to `target` (deterministic).
    `external_ip` is the outside client's address as the cluster sees it; `responder` the
    address of an agent that answers outside destinations (used for every ipBlock that
    holds it, and for "anywhere"); `service_cidr` replaces the guessed Service range;
    `progress` is told (what, done, total) as classes are built, policies planned and
    probes predicted."""
    with gc_paused():
        return _Planner(
            snapshot,
            current=current,
            target=target,
            external_ip=external_ip,
            responder=responder,
            service_cidr=service_cidr,
            progress=progress,
        ).plan(tuple(explicit))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Planning allocates millions of small acyclic objects; Python's cycle collector would
    walk the whole heap again and again while they pile up (a third of the time at 20,000
    pods) and find nothing. It runs again, once, when the plan is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Planner(RuleProbes, ScenarioProbes, EssentialProbes):
    def __init__(
        self,
        snapshot: Snapshot,
        *,
        current: str,
        target: str,
        external_ip: str,
        responder: str | None = None,
        service_cidr: ipaddress.IPv4Network | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(
            snapshot,
            current=current,
            target=target,
            external_ip=external_ip,
            responder=responder,
            service_cidr=service_cidr,
            progress=progress,
        )
        self.synthetic = self._synthetic_services(snapshot)
        self.snapshot = dataclasses.replace(
            snapshot, services=(*snapshot.services, *self.synthetic)
        )
        self.engine = Engine(self.snapshot, compiled=self.base_engine)
        self.twins = {name: self._find_twin(dp) for name, dp in self.dps.items()}
        self.cause_finders: dict[str, CauseFinder] = {}

    def _plan_explicit(self, explicit: Sequence[ProbeSpec | ResolvedProbe]) -> None:
        specs = [e for e in explicit if isinstance(e, ProbeSpec)]
        resolved = {id(r.spec): r for r in resolve_probes(specs, self.snapshot)}
        for item in explicit:
            rp = item if isinstance(item, ResolvedProbe) else resolved[id(item)]
            t = rp.traffic
            number: int | str = t.port
            name: str | None = None
            if isinstance(t.port, str) and isinstance(t.destination, PodEndpoint):
                cp = t.destination.pod.named_port(t.port, t.protocol)
                if cp is not None:
                    number, name = cp.port, t.port
            m = self._meaning(t.source, t.destination, number, name, t.protocol)
            if isinstance(number, str):
                # a Service port name: keep the name for the engine
                pid = m.id
                if pid not in self.drafts:
                    self.seq += 1
                    src_cls = (
                        self.classes.of.get(t.source.pod.key)
                        if isinstance(t.source, PodEndpoint)
                        else None
                    )
                    self.drafts[pid] = Draft(
                        meaning=m,
                        traffic=t,
                        intent=Intent.EXPLICIT,
                        rule=None,
                        rule_order=None,
                        title=rp.spec.name or m.title,
                        stands_for=src_cls.keys if src_cls else (),
                        source_class=src_cls.name if src_cls else None,
                        destination_class=None,
                        expect=rp.spec.expect,
                        seq=self.seq,
                    )
                continue
            self._add(
                t.source,
                t.destination,
                Port(number=number, name=name, protocol=t.protocol),
                Intent.EXPLICIT,
                title=rp.spec.name,
                expect=rp.spec.expect,
                mean=m,
            )

    def _present(self) -> list[Scenario]:
        present: set[Scenario] = set()
        with_ip = sorted(
            (ip, i)
            for i, p in enumerate(self.snapshot.pods)
            if p.ip and not p.host_network and (ip := ip_int(p.ip)) is not None
        )
        ips = [ip for ip, _ in with_ip]
        order = [i for _, i in with_ip]
        node_ips = [ipaddress.ip_address(n.ip) for n in self.nodes]
        covers_pods: dict[IPBlock, bool] = {}
        for spec in self.specs:
            present.update(spec.tags)
            for rule in spec.rules:
                for ps in rule.ports:
                    if ps.is_range:
                        present.add(Scenario.ENDPORT)
                    if ps.protocol is Protocol.SCTP:
                        present.add(Scenario.SCTP)
                    if (
                        rule.direction == EGRESS
                        and isinstance(ps.port, str)
                        and self._name_conflicts(ps.port, ps.protocol or Protocol.TCP)
                    ):
                        present.add(Scenario.NAMED_PORT)
                if spec.cilium:
                    continue
                for peer in rule.peers:
                    if peer.block is None:
                        continue
                    if peer.block not in covers_pods:
                        covers_pods[peer.block] = bool(block_members(peer.block, ips, order))
                    if covers_pods[peer.block]:
                        present.add(Scenario.IPBLOCK_PODS)
                    if any(peer.block.contains(ip) for ip in node_ips):
                        present.add(Scenario.IPBLOCK_NODES)
        for c in self.classes.classes:
            if Scenario.NODE_EGRESS not in present and self._restricted(c, EGRESS):
                present.add(Scenario.NODE_EGRESS)
        for svc in self.snapshot.services:
            if svc.type not in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER):
                continue
            backends = self._backends(svc)
            bcls = self.classes.of.get(backends[0].key) if backends else None
            if bcls is not None and self._restricted(bcls, INGRESS):
                present.add(Scenario.EXTERNAL_INGRESS)
                if svc.external_traffic_policy != "Local":
                    present.add(Scenario.LB_IN_CLUSTER)
            if svc.type is ServiceType.LOAD_BALANCER and svc.load_balancer_source_ranges:
                present.add(Scenario.LB_SOURCE_RANGES)  # D22: in-cluster clients unchecked
            if svc.internal_traffic_policy == "Local":
                present.add(Scenario.ITP_LOCAL)  # D22: Cilium's ITP on LB IP / own NodePort
        if essential_flows(self.snapshot) and any(
            c.rep.node_name and not c.rep.host_network for c in self.classes.classes
        ):
            present.add(Scenario.ESSENTIAL)  # every pod class needs DNS and the API server
        return [s for s in Scenario if s in present]

    def plan(self, explicit: Sequence[ProbeSpec | ResolvedProbe]) -> Plan:
        self._plan_explicit(explicit)
        self._plan_rules()
        self._plan_node_egress()
        self._plan_services()
        self._plan_essential()
        drafts = sorted(self.drafts.values(), key=self._order)
        probes = tuple(self._probe(d, i, len(drafts)) for i, d in enumerate(drafts, 1))
        ids = {p.id for p in probes}
        all_rules = [r.ref for spec in self.specs for r in spec.rules]
        with_admit = [r for r in all_rules if self.inside.get(r, set()) & ids]
        with_reject = [
            r
            for r in all_rules
            if (
                self.outside.get(r, set())
                | (self.inside.get(r, set()) if self._is_deny(r) else set())
            )
            & ids
        ]
        admitted = set(with_admit)
        present = self._present()
        probed = {s for p in probes for s in p.scenarios}
        coverage = Coverage(
            rules_total=len(all_rules),
            rules_with_admit=len(with_admit),
            rules_with_reject=len(with_reject),
            scenarios_present=tuple(str(s) for s in present),
            scenarios_probed=tuple(str(s) for s in Scenario if s in probed),
            uncovered=tuple(
                f"{r}: {self.uncovered.get(r, 'no admit probe')}"
                for r in all_rules
                if r not in admitted
            ),
        )
        return Plan(
            probes=probes,
            coverage=coverage,
            digest=plan_digest(p.id for p in probes),
            current=self.current,
            target=self.target,
            classes={c.name: c.keys for c in self.classes.classes},
            synthetic_services=self.synthetic,
        )

    def _is_deny(self, ref: str) -> bool:
        return "ingressDeny[" in ref or "egressDeny[" in ref

    @staticmethod
    def _order(d: Draft) -> tuple[object, ...]:
        if d.intent is Intent.EXPLICIT:
            return (0, (d.seq, 0, 0), 0, 0, "", "")
        if d.rule_order is not None:
            return (1, d.rule_order, _INTENT_ORDER[d.intent], 0, d.title, d.meaning.id)
        first = _SCENARIO_ORDER[d.scenarios[0]] if d.scenarios else len(_SCENARIO_ORDER)
        return (2, (0, 0, 0), _INTENT_ORDER[d.intent], first, d.title, d.meaning.id)

    def _find_twin(self, dp: Dataplane) -> Dataplane | None:
        """A dataplane listed before `dp` that differs from it only in endPort handling."""
        for other in self.dps.values():
            if other is dp:
                return None
            same = dataclasses.replace(
                dp,
                name=other.name,
                description=other.description,
                end_port=other.end_port,
                end_port_uncertain=other.end_port_uncertain,
            )
            if same == other:
                return other
        return None

    def _causes(self, name: str) -> CauseFinder:
        """Finds why `name`'s predictions differ from the current dataplane's."""
        finder = self.cause_finders.get(name)
        if finder is None:
            finder = CauseFinder(self.engine, self.dps[self.current], self.dps[name])
            self.cause_finders[name] = finder
        return finder

    def _in_a_range(self, v: Verdict, protocol: Protocol) -> bool:
        """Whether the destination port lies in (port, endPort] of some rule (D1 matters)."""
        if v.port is None:
            return True
        return v.port in self.range_ports.get(protocol, ()) or v.port in self.range_ports.get(
            None, ()
        )

    def _probe(self, d: Draft, done: int = 0, total: int = 0) -> PlannedProbe:
        if total:
            self._progress("probes predicted", done, total)
        predicted: dict[str, Prediction] = {}
        verdicts: dict[str, Verdict] = {}
        for name, dp in self.dps.items():
            twin = self.twins[name]
            if twin is not None and (d.meaning.id, dp.name) not in self.verdicts:
                tv = self._verdict(d.meaning.id, d.traffic, twin)
                if not self._in_a_range(tv, d.traffic.protocol):
                    self.verdicts[(d.meaning.id, dp.name)] = tv  # endPort cannot matter here
            v = verdicts[name] = self._verdict(d.meaning.id, d.traffic, dp)
            rules = tuple(
                str(r) for side in (v.egress, v.ingress) if side is not None for r in side.rules
            )
            predicted[name] = Prediction(
                decision=v.decision,
                explanation=v.explanation,
                rules=rules,
                uncertain=v.uncertain,
                refused_is_deny=v.refused_is_deny,
            )
        now = verdicts.get(self.current)
        for name, v in verdicts.items():
            if now is not None and name != self.current and v.decision is not now.decision:
                twin = self.twins[name]
                if twin is not None and v is verdicts.get(twin.name):
                    # the twin's verdict stands (endPort cannot matter here): so do its
                    # causes, as no endPort knob can flip this traffic
                    causes = predicted[twin.name].causes
                else:
                    causes = self._causes(name).causes(d.traffic, now, v)
                predicted[name] = dataclasses.replace(predicted[name], causes=causes)
        scenarios = list(d.scenarios)
        if not scenarios and self.current in verdicts and self.target in verdicts:
            inferred = infer_scenario(
                self.engine, d.traffic, verdicts[self.current], verdicts[self.target]
            )
            if inferred is not None:
                scenarios.append(inferred)
        return PlannedProbe(
            id=d.meaning.id,
            title=d.title,
            kind=d.meaning.kind,
            traffic=d.traffic,
            intent=d.intent,
            rule=d.rule or (d.rules[0] if d.rules else None),
            scenario=scenarios[0] if scenarios else None,
            stands_for=d.stands_for,
            predicted=predicted,
            rules=tuple(d.rules),
            scenarios=tuple(scenarios),
            source_class=d.source_class,
            destination_class=d.destination_class,
            expect=d.expect,
        )
