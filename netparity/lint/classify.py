"""Whom a change blames and which kind it is: the SEMANTICS.md row a changed connection
shows, read from its verdicts under npm and the target (netparity.lint.lint's Linter)."""

from __future__ import annotations

from netparity.engine.compile import INGRESS, NPRule, NPTarget
from netparity.engine.dataplane import Dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import (
    DirectionResult,
    NodeEndpoint,
    PodEndpoint,
    RuleRef,
    Verdict,
)
from netparity.lint.findings import OTHER_KIND, Change, Probe
from netparity.lint.kinds import ns_selector_or
from netparity.lint.tally import NP as _NP
from netparity.lint.tally import nps as _nps
from netparity.model.objects import Protocol
from netparity.plan.model import Scenario


class Classifier:
    """Attribution and classification over one engine, npm and one target."""

    engine: Engine
    npm: Dataplane
    target: Dataplane
    targets: dict[str, NPTarget]

    @staticmethod
    def _attribute(
        change: Change, sn: DirectionResult, st: DirectionResult
    ) -> tuple[list[str], list[RuleRef]]:
        """The policies to blame: NPM's admitting rules for a cut, the target's for a hole;
        when no rule decided (a bypass, a lost isolation), the policies that isolate."""
        if change is Change.OUTAGE:
            refs = [r for r in sn.rules if r.policy.startswith(_NP)]
            if refs:
                return sorted({r.policy for r in refs}), refs
            if st.rules:  # a Cilium deny rule decided
                return [], []
            return sorted(set(_nps(st.selected_by))), []
        refs = [r for r in st.rules if r.policy.startswith(_NP)]
        if refs:
            return sorted({r.policy for r in refs}), refs
        if st.rules:  # a Cilium policy admits it
            return [], []
        lost = set(_nps(sn.selected_by)) - set(_nps(st.selected_by))
        return sorted(lost or set(_nps(sn.selected_by))), []

    def _rule(self, ref: RuleRef) -> NPRule | None:
        t = self.targets.get(ref.policy)
        if t is None or ref.index is None:
            return None
        for rule in t.rules.get(ref.direction, ()):
            if rule.ref.index == ref.index:
                return rule
        return None

    def _beyond_policy_types(
        self, change: Change, probe: Probe, st: DirectionResult, refs: list[RuleRef]
    ) -> bool:
        """D23: the target isolates the side only by policies whose policyTypes leave it
        out (a cut), or a rule outside its policy's policyTypes admits (a hole)."""

        def beyond(policy: str, side: str | None) -> bool:
            return policy in self.targets and side not in self.targets[policy].isolates

        if change is Change.OUTAGE:
            isolating = _nps(st.selected_by)
            return bool(isolating) and all(beyond(p, probe.side) for p in isolating)
        return any(beyond(r.policy, r.direction) for r in refs)

    def _classify(
        self,
        change: Change,
        probe: Probe,
        vt: Verdict,
        sn: DirectionResult,
        st: DirectionResult,
        policies: list[str],
        refs: list[RuleRef],
    ) -> str:
        t = probe.traffic
        if "(D11)" in sn.reason or (
            self.npm.skip_untranslatable
            and any(self.targets[p].untranslatable for p in policies if p in self.targets)
        ):
            return Scenario.UNTRANSLATABLE
        if self._beyond_policy_types(change, probe, st, refs):
            return Scenario.POLICY_TYPES
        subject_ep = t.destination if probe.side == INGRESS else t.source
        if isinstance(subject_ep, PodEndpoint):
            ln = self.engine.labels(subject_ep.pod, self.npm)
            lt = self.engine.labels(subject_ep.pod, self.target)
            if ln != lt and any(
                p in self.targets
                and self.targets[p].subject.matches(ln) != self.targets[p].subject.matches(lt)
                for p in policies
            ):
                return Scenario.IDENTITY_LABELS
        peer_ep = t.source if probe.side == INGRESS else t.destination
        rules = [r for r in (self._rule(ref) for ref in refs) if r is not None]
        if ns_selector_or(self, peer_ep, rules):
            return Scenario.NS_SELECTOR_OR
        if isinstance(peer_ep, PodEndpoint) and not peer_ep.pod.host_network:
            pod = peer_ep.pod
            ln, lt = self.engine.labels(pod, self.npm), self.engine.labels(pod, self.target)
            if ln != lt:
                for rule in rules:
                    for pe in rule.peers:
                        if pe.pod_selector is not None and (
                            pe.pod_selector.matches(ln) != pe.pod_selector.matches(lt)
                        ):
                            return Scenario.IDENTITY_LABELS
        if "(D4a)" in sn.reason:
            return Scenario.NODE_EGRESS
        target_text = " ".join((*vt.uncertain, st.reason))
        if "(D8)" in target_text or (
            t.protocol is Protocol.SCTP
            and any(
                pp.protocol is Protocol.SCTP and pp.port is not None
                for r in rules
                for pp in r.ports
            )
        ):
            return Scenario.SCTP
        if "(D1)" in target_text:
            return Scenario.ENDPORT
        for rule in rules:
            numeric = any(
                isinstance(pp.port, int)
                and pp.protocol is t.protocol
                and pp.port <= probe.port <= (pp.end_port or pp.port)
                for pp in rule.ports
            )
            named = any(isinstance(pp.port, str) and pp.protocol is t.protocol for pp in rule.ports)
            if named and not numeric:
                return Scenario.NAMED_PORT
        node_peer = isinstance(peer_ep, NodeEndpoint) or (
            isinstance(peer_ep, PodEndpoint) and peer_ep.pod.host_network
        )
        for rule in rules:
            if any(pe.ip_block is not None for pe in rule.peers):
                return Scenario.IPBLOCK_NODES if node_peer else Scenario.IPBLOCK_PODS
        return OTHER_KIND
