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
from dataclasses import replace

from netparity.engine.compile import (
    EGRESS,
    INGRESS,
    CiliumTarget,
    NPTarget,
    compile_cilium_policy,
    compile_network_policy,
)
from netparity.engine.dataplane import Dataplane
from netparity.engine.matcher.cilium import Match
from netparity.engine.matcher.leg import Leg
from netparity.engine.paths import PathResolver
from netparity.engine.peers import HostPeer, PodPeer
from netparity.engine.selection import Selection, Selector
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
from netparity.model.objects import Pod, Protocol
from netparity.model.snapshot import Snapshot

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
APISERVER_SERVICE = "default/kubernetes"


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


def _named_ports(snapshot: Snapshot) -> Mapping[str, frozenset[tuple[int, Protocol]]]:
    """D3: every (number, protocol) each port name has, over all pods (Cilium's egress view)."""
    named: dict[str, set[tuple[int, Protocol]]] = defaultdict(set)
    for p in snapshot.pods:
        if not p.host_network:
            for cp in p.ports:
                if cp.name:
                    named[cp.name].add((cp.port, cp.protocol))
    return {k: frozenset(v) for k, v in named.items()}


class Engine(Selector):
    """A snapshot compiled for evaluation. Thread-safe for reads; caches per dataplane.
    Selection (which policies govern a pod) is `Selector`'s; this class judges traffic."""

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
        super().__init__(snapshot, self.np_targets, self.cilium_targets)
        # the same pods and nodes (a fix's snapshot): their indexes are the compiled engine's
        same = (
            compiled is not None
            and compiled.snapshot.pods is snapshot.pods
            and compiled.snapshot.nodes is snapshot.nodes
        )
        self.paths = PathResolver.__new__(PathResolver) if same else PathResolver(snapshot)
        if same and compiled:  # its indexes of pods and nodes shared, its Services' backends not
            self.paths.__dict__.update(vars(compiled.paths), snapshot=snapshot, _backends={})
        self.named_ports: Mapping[str, frozenset[tuple[int, Protocol]]] = (
            compiled.named_ports if same and compiled else _named_ports(snapshot)
        )
        # D28: the kube-apiserver entity is the default/kubernetes EndpointSlices' addresses
        api = snapshot.endpoints.get(APISERVER_SERVICE)
        self.apiserver_ips: frozenset[str] = frozenset(api.outside) if api else frozenset()
        self._ips: dict[str, _IP] = {}

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
        uncertain: list[str] = []
        bypass = self._own_node(leg, dp, uncertain)
        if bypass is not None:
            return bypass, uncertain
        if leg.subject.host_network:
            return self._result(
                leg, Decision.ALLOW, "hostNetwork pods are never policy subjects"
            ), uncertain
        return self._judge_policies(leg, dp, uncertain), uncertain

    def _own_node(self, leg: Leg, dp: Dataplane, uncertain: list[str]) -> DirectionResult | None:
        """The pod's own node's traffic a dataplane does not police (D4a, D4c), or None."""
        peer = leg.peer
        if not (isinstance(peer, HostPeer) and peer.node.name == leg.subject.node_name):
            return None
        if leg.direction == INGRESS and dp.own_node_ingress_bypass:
            # D26: a Cilium deny beats allow-localhost: the deny entries are computed
            # first and the localhost allow is added only where none covers the host
            # (cilium/cilium pkg/policy/mapstate.go:741-750 at v1.17.5).
            denied = self._cilium_denied(leg, dp, uncertain)
            if denied is not None:
                return denied
            return self._result(
                leg, Decision.ALLOW, "traffic from the pod's own node is always allowed (D4c)"
            )
        if leg.direction == EGRESS and dp.own_node_egress_bypass:
            return self._result(
                leg,
                Decision.ALLOW,
                "traffic to the pod's own node is not policed by " + _lit(dp.name) + " (D4a)",
            )
        return None

    def _judge_policies(self, leg: Leg, dp: Dataplane, uncertain: list[str]) -> DirectionResult:
        """The verdict of the policies that select the subject for the leg's direction."""
        direction = leg.direction
        sel = self._selection(leg.subject, direction, dp)
        skipped, selected = sel.notes, sel.names
        every = (*sel.cts, *sel.adders)
        # Cilium deny rules win over every allow, and apply without isolation too.
        deny_maybe: list[str] = []
        for c in every:
            for ref, rule in c.deny_rules.get(direction, ()):
                m, hinge = c.matchers[id(rule)].match(leg, dp, self, uncertain, sel.requires_deny)
                if m is Match.YES:
                    return self._result(
                        leg, Decision.DENY, "denied by {rules}", selected=selected, rules=(ref,)
                    )
                if m is Match.MAYBE:
                    deny_maybe.append(f"{ref} may deny it: it hinges on {hinge} (not modelled)")
        if not sel.nps and not sel.cts:
            why = "{subject} is not isolated for {direction}"
            if skipped:
                why += " (" + _lit("; ".join(skipped)) + ")"
            if deny_maybe:
                return self._result(leg, Decision.UNKNOWN, _lit("; ".join(deny_maybe)) + "; " + why)
            return self._result(leg, Decision.ALLOW, why)
        admitted, maybe = self._admitted(leg, dp, sel, uncertain)
        aside = " (" + _lit("; ".join(skipped)) + ")" if skipped else ""
        if admitted and not deny_maybe:
            word = "from" if direction == INGRESS else "to"
            return self._result(
                leg,
                Decision.ALLOW,
                "{subject} {direction} " + word + " {peer} on {port} admitted by {rules}" + aside,
                selected=selected,
                rules=tuple(admitted),
            )
        if admitted or maybe or deny_maybe:
            return self._result(
                leg,
                Decision.UNKNOWN,
                "not modelled: " + _lit("; ".join((*deny_maybe, *maybe))) + aside,
                selected=selected,
                rules=tuple(admitted),
            )
        why = "{subject} is isolated for {direction} by {selected}; no rule admits {peer} on {port}"
        return self._result(leg, Decision.DENY, why + aside, selected=selected)

    def _admitted(
        self, leg: Leg, dp: Dataplane, sel: Selection, uncertain: list[str]
    ) -> tuple[list[RuleRef], list[str]]:
        """The allow rules that admit `leg`, and why others may (not modelled)."""
        direction = leg.direction
        admitted: list[RuleRef] = []
        maybe: list[str] = []
        for t in sel.nps:
            for np_rule in t.rules.get(direction, ()):
                if np_rule.peer.matches(leg, dp, self) and np_rule.port.matches(
                    leg, dp, self, uncertain
                ):
                    admitted.append(np_rule.ref)
        for c in (*sel.cts, *sel.adders):
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
        return admitted, maybe

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
