"""Evaluate traffic under a dataplane: resolve the path, then judge each pod's side.

`Engine(snapshot)` compiles once; `engine.evaluate(traffic, dataplane)` is a pure function
of its arguments. A pod no policy isolates is open; an isolated pod admits traffic that
any rule of any selecting policy admits (union); the verdict is egress AND ingress; every
verdict names the policies and rules that decided it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from netparity.engine.compile import (
    EGRESS,
    INGRESS,
    NAMESPACE_KEY,
    NAMESPACE_LABEL_PREFIX,
    CiliumTarget,
    NPTarget,
    cilium_refusal,
    compile_cilium_policy,
    compile_network_policy,
)
from netparity.engine.dataplane import Dataplane
from netparity.engine.matcher.cilium import Match
from netparity.engine.matcher.leg import Leg
from netparity.engine.paths import PathResolver
from netparity.engine.peers import HostPeer, PodPeer
from netparity.engine.traffic import (
    Decision,
    DirectionResult,
    ExternalEndpoint,
    PathKind,
    PodEndpoint,
    RuleRef,
    ServiceEndpoint,
    Traffic,
    Verdict,
    Via,
)
from netparity.facts.cilium_config import LabelFilter
from netparity.model.objects import Pod, Protocol
from netparity.model.selectors import LabelSelector
from netparity.model.snapshot import Snapshot

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
SERVICE_ACCOUNT_KEY = "io.cilium.k8s.policy.serviceaccount"  # D28
CLUSTER_KEY = "io.cilium.k8s.policy.cluster"  # D28
APISERVER_SERVICE = "default/kubernetes"


@dataclass(frozen=True, slots=True)
class _Selection:
    """Who governs one (pod group, direction, dataplane)."""

    nps: list[NPTarget]
    cts: list[CiliumTarget]  # Cilium policies that isolate the pod
    notes: list[str]
    names: tuple[str, ...]
    adders: list[CiliumTarget]  # enableDefaultDeny false: rules without isolating
    requires: tuple[LabelSelector, ...]  # fromRequires/toRequires of every selecting policy
    requires_deny: tuple[LabelSelector, ...]


@dataclass(slots=True, kw_only=True)
class _Match:
    """The dataplane-independent part of a selection (`Engine._match`)."""

    nps: list[NPTarget]
    skipped: list[NPTarget]  # NetworkPolicies the dataplane does not translate (D11)
    cts: list[CiliumTarget] = field(default_factory=list)
    adders: list[CiliumTarget] = field(default_factory=list)
    refused: list[CiliumTarget] = field(default_factory=list)
    requires_ignored: list[CiliumTarget] = field(default_factory=list)
    requires: tuple[LabelSelector, ...] = ()
    requires_deny: tuple[LabelSelector, ...] = ()


@functools.lru_cache(maxsize=4096)
def _port_text(port: int, protocol: Protocol) -> str:
    return f"{port}/{protocol}"


def _combine(decisions: Sequence[Decision]) -> Decision:
    """Every side must admit: a deny anywhere denies; else an unknown side leaves it unknown."""
    if Decision.DENY in decisions:
        return Decision.DENY
    if Decision.UNKNOWN in decisions:
        return Decision.UNKNOWN
    return Decision.ALLOW


def _lit(text: str) -> str:
    """Text to embed in a reason template: braces escaped."""
    return text.replace("{", "{{").replace("}", "}}")


class Engine:
    """A snapshot compiled for evaluation. Thread-safe for reads; caches per dataplane."""

    def __init__(self, snapshot: Snapshot, *, compiled: Engine | None = None) -> None:
        """`compiled`: an engine over a snapshot with (some of) the same policies (the same
        objects), whose compiled policies are reused instead of compiled again."""
        self.snapshot = snapshot
        self.np_targets: tuple[NPTarget, ...]
        self.cilium_targets: tuple[CiliumTarget, ...]
        if (
            compiled is not None
            and compiled.snapshot.network_policies is snapshot.network_policies
            and compiled.snapshot.cilium_policies is snapshot.cilium_policies
        ):
            self.np_targets = compiled.np_targets
            self.cilium_targets = compiled.cilium_targets
        elif compiled is not None:  # the policies both snapshots hold are compiled once
            old = compiled.snapshot
            nps = {id(p): t for p, t in zip(old.network_policies, compiled.np_targets, strict=True)}
            cps = {
                id(c): t for c, t in zip(old.cilium_policies, compiled.cilium_targets, strict=True)
            }
            self.np_targets = tuple(
                nps.get(id(p)) or compile_network_policy(p) for p in snapshot.network_policies
            )
            self.cilium_targets = tuple(
                cps.get(id(c)) or compile_cilium_policy(c) for c in snapshot.cilium_policies
            )
        else:
            self.np_targets = tuple(compile_network_policy(p) for p in snapshot.network_policies)
            self.cilium_targets = tuple(compile_cilium_policy(p) for p in snapshot.cilium_policies)
        self._np_by_ns: dict[str, list[NPTarget]] = defaultdict(list)
        for t in self.np_targets:
            self._np_by_ns[t.namespace].append(t)
        self._ns_labels = {ns.name: ns.labels for ns in snapshot.namespaces}
        self.paths = PathResolver(snapshot)
        # D3: every (number, protocol) each port name has, over all pods (Cilium's egress view).
        named: dict[str, set[tuple[int, Protocol]]] = defaultdict(set)
        for p in snapshot.pods:
            if not p.host_network:
                for cp in p.ports:
                    if cp.name:
                        named[cp.name].add((cp.port, cp.protocol))
        self.named_ports: Mapping[str, frozenset[tuple[int, Protocol]]] = {
            k: frozenset(v) for k, v in named.items()
        }
        self._label_cache: dict[tuple[str, LabelFilter | None], Mapping[str, str]] = {}
        self._cilium_label_cache: dict[tuple[str, LabelFilter | None, str], Mapping[str, str]] = {}
        self._select_cache: dict[tuple[int, str, int], _Selection] = {}
        # D28: the kube-apiserver entity is the default/kubernetes EndpointSlices' addresses
        api = snapshot.endpoints.get(APISERVER_SERVICE)
        self.apiserver_ips: frozenset[str] = frozenset(api.outside) if api else frozenset()
        # the policies one (label group, direction, selection-relevant knobs) selects
        self._match_cache: dict[tuple[object, ...], _Match] = {}
        self._label_group: dict[str, int] = {}  # pod key -> its (namespace, labels) group
        self._label_groups: dict[object, int] = {}
        # Selection reads only the label keys some policy's subject names: pods that agree
        # on those (and on namespace and hostNetwork) share one selection, whatever their
        # other labels (pod-template-hash, a StatefulSet's pod name) say.
        subjects = [t.subject for t in self.np_targets]
        subjects += [c.subject for c in self.cilium_targets if c.subject is not None]
        self._subject_keys = frozenset(k for sel in subjects for k in sel.keys())  # noqa: SIM118
        # Cilium policies with the one namespace their subject pins ("": any namespace).
        self._cilium_pins: list[tuple[CiliumTarget, str]] = []
        for c in self.cilium_targets:
            if c.subject is not None:
                pins = {v for k, v in c.subject.match_labels if k == NAMESPACE_KEY}
                self._cilium_pins.append((c, pins.pop() if len(pins) == 1 else ""))
        self._cilium_by_ns: dict[str, list[CiliumTarget]] = {}
        self._dp_refs: dict[int, Dataplane] = {}  # keeps the ids used in cache keys alive
        self._ips: dict[str, _IP] = {}

    # ---------------------------------------------------------------- labels

    def labels(self, pod: Pod, dp: Dataplane) -> Mapping[str, str]:
        """The pod labels a dataplane's selectors see (D6: Cilium drops some keys)."""
        if dp.label_filter is None:
            return pod.labels
        key = (pod.key, dp.label_filter)
        cached = self._label_cache.get(key)
        if cached is None:
            cached = dp.label_filter.identity(pod.labels)
            self._label_cache[key] = cached
        return cached

    def cilium_labels(self, pod: Pod, dp: Dataplane) -> Mapping[str, str]:
        """Identity labels: filtered pod labels, the namespace, the namespace's labels, the
        service account and the cluster name (D28; cilium/cilium pkg/k8s/utils/utils.go
        SanitizePodLabels)."""
        key = (pod.key, dp.label_filter, dp.cilium_cluster_name)
        cached = self._cilium_label_cache.get(key)
        if cached is None:
            out = dict(self.labels(pod, dp))
            out[NAMESPACE_KEY] = pod.namespace
            out[SERVICE_ACCOUNT_KEY] = pod.service_account
            out[CLUSTER_KEY] = dp.cilium_cluster_name
            for k, v in self._ns_labels.get(pod.namespace, {}).items():
                out[NAMESPACE_LABEL_PREFIX + k] = v
            self._cilium_label_cache[key] = cached = out
        return cached

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self._ns_labels.get(namespace, {"kubernetes.io/metadata.name": namespace})

    # ---------------------------------------------------------------- selection

    def selecting(
        self, pod: Pod, direction: str, dp: Dataplane
    ) -> tuple[list[NPTarget], list[CiliumTarget], list[str]]:
        """Policies that select `pod` and isolate it for `direction`, and notes on skipped ones."""
        sel = self._selection(pod, direction, dp)
        return sel.nps, sel.cts, sel.notes

    def cilium_refusal(self, target: CiliumTarget, dp: Dataplane) -> str | None:
        """Why `target` has no effect under `dp` (refused, or a host policy); None: it has."""
        return cilium_refusal(target, dp)

    def _selection(self, pod: Pod, direction: str, dp: Dataplane) -> _Selection:
        """`selecting` and the names of the selecting policies. Selection depends only on the
        namespace, the service account, hostNetwork and the labels some policy's subject
        reads, so pods alike (replicas) share one entry."""
        group = self._label_group.get(pod.key)
        if group is None:
            keys = self._subject_keys
            raw = (
                pod.namespace,
                pod.host_network,
                pod.service_account,
                tuple(kv for kv in pod.labels.items() if kv[0] in keys),
            )
            group = self._label_groups.setdefault(raw, len(self._label_groups))
            self._label_group[pod.key] = group
        key = (group, direction, id(dp))
        cached = self._select_cache.get(key)
        if cached is not None:
            return cached
        self._dp_refs[id(dp)] = dp
        # Profiles that differ only in what selection never reads (the cause finder's
        # one-knob variants) share the matching; only the notes name the dataplane.
        view = (
            group,
            direction,
            dp.label_filter,
            dp.rules_beyond_policy_types,
            dp.skip_untranslatable,
            dp.cilium_policies,
            dp.cilium_cluster_name,
            dp.cilium_non_default_deny,
            dp.cnp_requires,
            dp.cilium_l7_proxy,
            dp.cilium_icmp_rules,
            dp.cilium_node_selector_labels,
            dp.cilium_host_firewall,
        )
        m = self._match_cache.get(view)
        if m is None:
            m = self._match_cache[view] = self._match(pod, direction, dp)
        notes = [
            f"{t.name} is not enforced by {dp.name}: {t.untranslatable} (D11)" for t in m.skipped
        ]
        for c in m.refused:
            refused = cilium_refusal(c, dp)
            if refused is not None:
                notes.append(refused)
        notes += [
            f"{c.name} uses {', '.join(c.requires_fields)}, which {dp.name} ignores "
            "(deprecated in Cilium 1.17, removed in 1.19)"
            for c in m.requires_ignored
        ]
        names = tuple(t.name for t in m.nps) + tuple(c.name for c in m.cts)
        result = _Selection(m.nps, m.cts, notes, names, m.adders, m.requires, m.requires_deny)
        self._select_cache[key] = result
        return result

    def _match(self, pod: Pod, direction: str, dp: Dataplane) -> _Match:
        """The policies that select `pod` for `direction` under `dp`, those `dp` skips (D11)
        or refuses, and the requirements. Reads only the fields `_selection` keys on."""
        nps: list[NPTarget] = []
        skipped: list[NPTarget] = []
        if not pod.host_network:
            labels = self.labels(pod, dp)
            for t in self._np_by_ns.get(pod.namespace, ()):
                # D23: a dataplane that ignores policyTypes enforces any direction with rules
                isolated = direction in t.isolates or (
                    dp.rules_beyond_policy_types and direction in t.ruled
                )
                if isolated and t.subject.matches(labels):
                    if dp.skip_untranslatable and t.untranslatable:
                        skipped.append(t)
                        continue
                    nps.append(t)
        m = _Match(nps=nps, skipped=skipped)
        if dp.cilium_policies and not pod.host_network:
            self._match_cilium(pod, direction, dp, m)
        return m

    def _match_cilium(self, pod: Pod, direction: str, dp: Dataplane, m: _Match) -> None:
        clabels = self.cilium_labels(pod, dp)
        requires: list[LabelSelector] = []
        requires_deny: list[LabelSelector] = []
        for c in self._cilium_in(pod.namespace):
            assert c.subject is not None
            if direction not in c.ruled or not c.subject.matches(clabels):
                continue
            if cilium_refusal(c, dp) is not None:
                m.refused.append(c)
                continue
            # enableDefaultDeny is honoured only with enable-non-default-deny-policies
            # (pkg/policy/api/rule_validation.go:101-119, Rule.Sanitize)
            if direction in c.isolates or not dp.cilium_non_default_deny:
                m.cts.append(c)
            else:
                m.adders.append(c)
            if c.requires_fields and not dp.cnp_requires:
                m.requires_ignored.append(c)
            elif dp.cnp_requires:
                requires.extend(c.requires.get(direction, ()))
                requires_deny.extend(c.requires_deny.get(direction, ()))
        m.requires = tuple(requires)
        m.requires_deny = tuple(requires_deny)

    def _cilium_in(self, namespace: str) -> list[CiliumTarget]:
        """The Cilium policies (in policy order) whose subject can select a pod of
        `namespace`: those that pin it, and those that pin none."""
        found = self._cilium_by_ns.get(namespace)
        if found is None:
            found = [c for c, pin in self._cilium_pins if pin in (namespace, "")]
            self._cilium_by_ns[namespace] = found
        return found

    # ---------------------------------------------------------------- evaluation

    def evaluate(self, traffic: Traffic, dp: Dataplane) -> Verdict:
        if traffic.protocol is Protocol.SCTP and dp.sctp_dropped:
            return self._sctp_dropped(traffic, dp)
        return self._evaluate(traffic, dp)

    def _sctp_dropped(self, traffic: Traffic, dp: Dataplane) -> Verdict:
        """D24: without enable-sctp, Cilium drops every SCTP packet from or to its endpoints
        (and cannot translate an SCTP Service), whatever the policy says."""
        v = self._evaluate(traffic, dp)
        src, dst = traffic.source, traffic.destination

        def endpoint(e: object) -> bool:
            return type(e) is PodEndpoint and not e.pod.host_network

        if v.decision is Decision.UNKNOWN or not (
            endpoint(src) or endpoint(dst) or type(dst) is ServiceEndpoint
        ):
            return v
        note = (
            f"{_lit(dp.name)} runs without enable-sctp: every SCTP packet of its endpoints is "
            "dropped, whatever the policy below says (D24)"
        )
        return replace(v, decision=Decision.DENY, notes=(note, *v.notes))

    def _evaluate(self, traffic: Traffic, dp: Dataplane) -> Verdict:
        src, dst, port = traffic.source, traffic.destination, traffic.port
        if (
            type(src) is PodEndpoint
            and type(dst) is PodEndpoint
            and type(port) is int
            and not src.pod.host_network
            and not dst.pod.host_network
            and src.pod.key != dst.pod.key
        ):
            return self._pod_to_pod(src.pod, dst.pod, port, traffic.protocol, dp)
        if type(dst) is ServiceEndpoint and dst.backend is None:
            several = self._each_backend(traffic, dst, dp)
            if several is not None:
                return several
            outside = self._outside_backend(traffic, dst, dp)
            if outside is not None:
                return outside
        path = self.paths.resolve(traffic, dp)
        if path.decided is not None:
            return Verdict(
                decision=path.decided,
                path=path.kind,
                notes=(*path.notes, path.reason) if path.reason else path.notes,
                uncertain=path.uncertain,
                backend=path.backend.key if path.backend else None,
                port=path.port,
                refused_is_deny=path.refused_is_deny,
            )
        sides: dict[str, DirectionResult] = {}
        uncertain = list(path.uncertain)
        notes = list(path.notes)
        decisions: list[Decision] = []
        for leg in path.legs:
            result, unc = self._judge(leg, dp)
            uncertain.extend(unc)
            decisions.append(result.decision)
            if leg.direction in sides:  # a second hop of the same direction: keep both reasons
                notes.append(f"{leg.direction} (first hop): {sides[leg.direction].reason}")
            sides[leg.direction] = result
        decision = _combine(decisions)
        if not path.legs:
            notes.append(path.reason or "no pod policy applies to this path")
        return Verdict(
            decision=decision,
            path=path.kind,
            egress=sides.get(EGRESS),
            ingress=sides.get(INGRESS),
            notes=tuple(notes),
            uncertain=tuple(dict.fromkeys(uncertain)),
            backend=path.backend.key if path.backend else None,
            port=path.port,
        )

    def _outside_backend(
        self, traffic: Traffic, dst: ServiceEndpoint, dp: Dataplane
    ) -> Verdict | None:
        """A selectorless Service whose EndpointSlices name only addresses outside the pods
        (`default/kubernetes`: the API server): by ClusterIP, a connection to the first of
        them (both dataplanes translate the ClusterIP before policy)."""
        svc = dst.service
        ep = self.snapshot.endpoints.get(svc.key)
        if dst.via is not Via.CLUSTER_IP or ep is None or ep.pods or not ep.outside:
            return None
        sp = svc.port_named(traffic.port, traffic.protocol)
        if sp is None:
            return None
        port = sp.target_port if isinstance(sp.target_port, int) else sp.port
        to = ExternalEndpoint(ip=ep.outside[0])
        v = self.evaluate(
            Traffic(source=traffic.source, destination=to, port=port, protocol=sp.protocol), dp
        )
        note = f"Service {svc.key} -> {to.ip}:{port} (its EndpointSlice: outside the pods)"
        return replace(v, notes=(note, *v.notes))

    def _each_backend(
        self, traffic: Traffic, dst: ServiceEndpoint, dp: Dataplane
    ) -> Verdict | None:
        """A Service probed without naming a backend reaches any of them. When their verdicts
        differ the engine says so, backend by backend, and picks none (`unknown`); when they
        agree, None: the usual verdict (for the first backend) stands."""
        svc = dst.service
        backends = self.paths.backends(svc)
        if len(backends) < 2:
            return None
        src = traffic.source
        if (
            dst.via is not Via.CLUSTER_IP
            and svc.external_traffic_policy == "Local"
            and not isinstance(src, PodEndpoint)
        ):
            # outside traffic with Local stays on the receiving node (D5c)
            backends = tuple(b for b in backends if dst.node and b.node_name == dst.node.name)
            if len(backends) < 2:
                return None
        itp_node = self.paths.internal_local_node(svc, dst.via, self.paths.peer_of(src))
        if itp_node is not None:
            # internalTrafficPolicy Local: only the client's node's endpoints (D22)
            backends = tuple(b for b in backends if b.node_name == itp_node.name)
            if len(backends) < 2:
                return None
        verdicts = [
            self.evaluate(
                Traffic(
                    source=src,
                    destination=ServiceEndpoint(service=svc, via=dst.via, node=dst.node, backend=b),
                    port=traffic.port,
                    protocol=traffic.protocol,
                ),
                dp,
            )
            for b in backends
        ]
        if len({v.decision for v in verdicts}) == 1:
            return None
        first = verdicts[0]
        return Verdict(
            decision=Decision.UNKNOWN,
            path=first.path,
            notes=(
                f"Service {svc.key} has {len(backends)} backends and their verdicts differ; "
                "which one a connection reaches is the Service's choice",
                *(
                    f"backend {b.key} on {b.node_name}: {v.decision} ({v.explanation})"
                    for b, v in zip(backends, verdicts, strict=True)
                ),
            ),
            uncertain=tuple(dict.fromkeys(u for v in verdicts for u in v.uncertain)),
            port=first.port if len({v.port for v in verdicts}) == 1 else None,
        )

    def _pod_to_pod(
        self, client: Pod, server: Pod, port: int, protocol: Protocol, dp: Dataplane
    ) -> Verdict:
        """The common path, without the general resolution: the same two legs `_to_pod`
        makes for a pod reaching another pod on a numbered port."""
        egress, u1 = self._judge(
            Leg(
                direction=EGRESS,
                subject=client,
                peer=PodPeer(pod=server),
                port=port,
                protocol=protocol,
            ),
            dp,
        )
        ingress, u2 = self._judge(
            Leg(
                direction=INGRESS,
                subject=server,
                peer=PodPeer(pod=client),
                port=port,
                protocol=protocol,
            ),
            dp,
        )
        decision = _combine((egress.decision, ingress.decision))
        return Verdict(
            decision=decision,
            path=PathKind.POD_POD,
            egress=egress,
            ingress=ingress,
            uncertain=tuple(dict.fromkeys(u1 + u2)) if u1 or u2 else (),
            backend=server.key,
            port=port,
        )

    def _judge(self, leg: Leg, dp: Dataplane) -> tuple[DirectionResult, list[str]]:
        subject, peer, direction = leg.subject, leg.peer, leg.direction
        uncertain: list[str] = []
        if isinstance(peer, HostPeer) and peer.node.name == subject.node_name:
            if direction == INGRESS and dp.own_node_ingress_bypass:
                # D26: a Cilium deny beats allow-localhost: the deny entries are computed
                # first and the localhost allow is added only where none covers the host
                # (cilium/cilium pkg/policy/mapstate.go:741-750 at v1.17.5).
                denied = self._cilium_denied(leg, dp, uncertain)
                if denied is not None:
                    return denied, uncertain
                return self._result(
                    leg, Decision.ALLOW, "traffic from the pod's own node is always allowed (D4c)"
                ), uncertain
            if direction == EGRESS and dp.own_node_egress_bypass:
                return self._result(
                    leg,
                    Decision.ALLOW,
                    "traffic to the pod's own node is not policed by " + _lit(dp.name) + " (D4a)",
                ), uncertain
        if subject.host_network:
            return self._result(
                leg, Decision.ALLOW, "hostNetwork pods are never policy subjects"
            ), uncertain
        sel = self._selection(subject, direction, dp)
        nps, cts, skipped, selected = sel.nps, sel.cts, sel.notes, sel.names
        every = (*cts, *sel.adders)
        # Cilium deny rules win over every allow, and apply without isolation too.
        deny_maybe: list[str] = []
        for c in every:
            for ref, rule in c.deny_rules.get(direction, ()):
                m, hinge = c.matchers[id(rule)].match(leg, dp, self, uncertain, sel.requires_deny)
                if m is Match.YES:
                    return self._result(
                        leg, Decision.DENY, "denied by {rules}", selected=selected, rules=(ref,)
                    ), uncertain
                if m is Match.MAYBE:
                    deny_maybe.append(f"{ref} may deny it: it hinges on {hinge} (not modelled)")
        if not nps and not cts:
            why = "{subject} is not isolated for {direction}"
            if skipped:
                why += " (" + _lit("; ".join(skipped)) + ")"
            if deny_maybe:
                return self._result(
                    leg, Decision.UNKNOWN, _lit("; ".join(deny_maybe)) + "; " + why
                ), uncertain
            return self._result(leg, Decision.ALLOW, why), uncertain
        admitted: list[RuleRef] = []
        maybe: list[str] = []
        for t in nps:
            for np_rule in t.rules.get(direction, ()):
                if np_rule.peer.matches(leg, dp, self) and np_rule.port.matches(
                    leg, dp, self, uncertain
                ):
                    admitted.append(np_rule.ref)
        for c in every:
            for ref, crule in c.rules.get(direction, ()):
                m, hinge = c.matchers[id(crule)].match(leg, dp, self, uncertain, sel.requires)
                if m is Match.YES:
                    admitted.append(ref)
                elif m is Match.MAYBE:
                    if crule.conditions and hinge.endswith(", ".join(crule.conditions)):
                        maybe.append(
                            f"{ref} admits it at L3/L4, but {hinge} may still refuse "
                            "the connection or its requests (not modelled)"
                        )
                    else:
                        maybe.append(f"{ref} may admit it: it hinges on {hinge} (not modelled)")
        aside = " (" + _lit("; ".join(skipped)) + ")" if skipped else ""
        if admitted and not deny_maybe:
            word = "from" if direction == INGRESS else "to"
            return self._result(
                leg,
                Decision.ALLOW,
                "{subject} {direction} " + word + " {peer} on {port} admitted by {rules}" + aside,
                selected=selected,
                rules=tuple(admitted),
            ), uncertain
        if admitted or maybe or deny_maybe:
            return self._result(
                leg,
                Decision.UNKNOWN,
                "not modelled: " + _lit("; ".join((*deny_maybe, *maybe))) + aside,
                selected=selected,
                rules=tuple(admitted),
            ), uncertain
        why = "{subject} is isolated for {direction} by {selected}; no rule admits {peer} on {port}"
        return self._result(leg, Decision.DENY, why + aside, selected=selected), uncertain

    def _cilium_denied(
        self, leg: Leg, dp: Dataplane, uncertain: list[str]
    ) -> DirectionResult | None:
        """A Cilium deny rule of the subject's that matches `leg` (D26), or None."""
        if not dp.cilium_policies or leg.subject.host_network:
            return None
        sel = self._selection(leg.subject, leg.direction, dp)
        for c in (*sel.cts, *sel.adders):
            for ref, rule in c.deny_rules.get(leg.direction, ()):
                m, _ = c.matchers[id(rule)].match(leg, dp, self, uncertain, sel.requires_deny)
                if m is Match.YES:
                    return self._result(
                        leg, Decision.DENY, "denied by {rules}", selected=sel.names, rules=(ref,)
                    )
        return None

    @staticmethod
    def _result(
        leg: Leg,
        decision: Decision,
        why: str,
        *,
        selected: tuple[str, ...] = (),
        rules: tuple[RuleRef, ...] = (),
    ) -> DirectionResult:
        return DirectionResult(
            direction=leg.direction,
            subject=leg.subject.key,
            decision=decision,
            why=why,
            peer=leg.peer,
            port=_port_text(leg.port, leg.protocol),
            selected_by=selected,
            rules=rules,
        )

    def address(self, ip: str) -> _IP:
        parsed = self._ips.get(ip)
        if parsed is None:
            parsed = self._ips[ip] = ipaddress.ip_address(ip)
        return parsed
