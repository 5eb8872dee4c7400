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
from dataclasses import dataclass, replace

from netparity.engine.compile import (
    EGRESS,
    INGRESS,
    NAMESPACE_KEY,
    NAMESPACE_LABEL_PREFIX,
    CiliumTarget,
    NPTarget,
    compile_cilium_policy,
    compile_network_policy,
)
from netparity.engine.dataplane import Dataplane, EndPortMode, NamedPortEgress
from netparity.engine.peers import ExternalPeer, HostPeer, Peer, PodPeer
from netparity.engine.traffic import (
    Decision,
    DirectionResult,
    ExternalEndpoint,
    NodeEndpoint,
    PathKind,
    PodEndpoint,
    RuleRef,
    ServiceEndpoint,
    Traffic,
    Verdict,
    Via,
)
from netparity.facts.cilium_config import LabelFilter
from netparity.model.ciliumpolicy import CiliumPort, CiliumProtocol, CiliumRule, Entity
from netparity.model.networkpolicy import PolicyPeer, PolicyPort
from netparity.model.objects import Node, Pod, Protocol, Service, ServicePort
from netparity.model.snapshot import Snapshot

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


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


# The two internal values below are built for every verdict: plain (not frozen) slotted
# classes, which construct several times faster; nothing outside this module sees them.
@dataclass(slots=True, kw_only=True)
class _Leg:
    """One side to judge: `subject`'s `direction` policy against `peer` on port/protocol."""

    direction: str
    subject: Pod
    peer: Peer
    port: int
    protocol: Protocol


@dataclass(slots=True, kw_only=True)
class _Path:
    kind: PathKind
    legs: tuple[_Leg, ...] = ()
    notes: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()
    backend: Pod | None = None
    port: int | None = None
    decided: Decision | None = None  # set when the path alone decides (bypass, no backend)
    reason: str = ""


class Engine:
    """A snapshot compiled for evaluation. Thread-safe for reads; caches per dataplane."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.np_targets = tuple(compile_network_policy(p) for p in snapshot.network_policies)
        self.cilium_targets = tuple(compile_cilium_policy(p) for p in snapshot.cilium_policies)
        self._np_by_ns: dict[str, list[NPTarget]] = defaultdict(list)
        for t in self.np_targets:
            self._np_by_ns[t.namespace].append(t)
        self._ns_labels = {ns.name: ns.labels for ns in snapshot.namespaces}
        self._nodes = {n.name: n for n in snapshot.nodes}
        self._pods_by_ip = {p.ip: p for p in snapshot.pods if p.ip and not p.host_network}
        self._nodes_by_ip = {n.ip: n for n in snapshot.nodes}
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
        self._cilium_label_cache: dict[tuple[str, LabelFilter | None], Mapping[str, str]] = {}
        self._select_cache: dict[
            tuple[int, str, int],
            tuple[list[NPTarget], list[CiliumTarget], list[str], tuple[str, ...]],
        ] = {}
        self._label_group: dict[str, int] = {}  # pod key -> its (namespace, labels) group
        self._label_groups: dict[object, int] = {}
        self._dp_refs: dict[int, Dataplane] = {}  # keeps the ids used in cache keys alive
        self._ips: dict[str, _IP] = {}
        self._backends: dict[str, tuple[Pod, ...]] = {}

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
        """Identity labels: filtered pod labels, the namespace, and the namespace's labels."""
        key = (pod.key, dp.label_filter)
        cached = self._cilium_label_cache.get(key)
        if cached is None:
            out = dict(self.labels(pod, dp))
            out[NAMESPACE_KEY] = pod.namespace
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
        nps, cts, notes, _ = self._selection(pod, direction, dp)
        return nps, cts, notes

    def _selection(
        self, pod: Pod, direction: str, dp: Dataplane
    ) -> tuple[list[NPTarget], list[CiliumTarget], list[str], tuple[str, ...]]:
        """`selecting` and the names of the selecting policies. Selection depends only on the
        namespace, the labels and hostNetwork, so pods alike (replicas) share one entry."""
        group = self._label_group.get(pod.key)
        if group is None:
            raw = (pod.namespace, pod.host_network, tuple(pod.labels.items()))
            group = self._label_groups.setdefault(raw, len(self._label_groups))
            self._label_group[pod.key] = group
        key = (group, direction, id(dp))
        cached = self._select_cache.get(key)
        if cached is not None:
            return cached
        self._dp_refs[id(dp)] = dp
        nps: list[NPTarget] = []
        notes: list[str] = []
        if not pod.host_network:
            labels = self.labels(pod, dp)
            for t in self._np_by_ns.get(pod.namespace, ()):
                if direction in t.isolates and t.subject.matches(labels):
                    if dp.skip_untranslatable and t.untranslatable:
                        notes.append(
                            f"{t.name} is not enforced by {dp.name}: {t.untranslatable} (D11)"
                        )
                        continue
                    nps.append(t)
        cts: list[CiliumTarget] = []
        if dp.cilium_policies and not pod.host_network:
            clabels = self.cilium_labels(pod, dp)
            for c in self.cilium_targets:
                if c.subject is None:
                    continue
                if direction in c.isolates and c.subject.matches(clabels):
                    cts.append(c)
        names = tuple(t.name for t in nps) + tuple(c.name for c in cts)
        result = (nps, cts, notes, names)
        self._select_cache[key] = result
        return result

    # ---------------------------------------------------------------- evaluation

    def evaluate(self, traffic: Traffic, dp: Dataplane) -> Verdict:
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
        path = self._resolve(traffic, dp)
        if path.decided is not None:
            return Verdict(
                decision=path.decided,
                path=path.kind,
                notes=(*path.notes, path.reason) if path.reason else path.notes,
                uncertain=path.uncertain,
                backend=path.backend.key if path.backend else None,
                port=path.port,
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
        backends = self._backends.get(svc.key)
        if backends is None:
            backends = self._backends[svc.key] = self.snapshot.backends(svc)
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
            _Leg(
                direction=EGRESS,
                subject=client,
                peer=PodPeer(pod=server),
                port=port,
                protocol=protocol,
            ),
            dp,
        )
        ingress, u2 = self._judge(
            _Leg(
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

    def _judge(self, leg: _Leg, dp: Dataplane) -> tuple[DirectionResult, list[str]]:
        subject, peer, direction = leg.subject, leg.peer, leg.direction
        uncertain: list[str] = []
        if isinstance(peer, HostPeer) and peer.node.name == subject.node_name:
            if direction == INGRESS and dp.own_node_ingress_bypass:
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
        nps, cts, skipped, selected = self._selection(subject, direction, dp)
        if not nps and not cts:
            why = "{subject} is not isolated for {direction}"
            if skipped:
                why += " (" + _lit("; ".join(skipped)) + ")"
            return self._result(leg, Decision.ALLOW, why), uncertain
        # Cilium deny rules win over every allow.
        for c in cts:
            for ref, rule in c.deny_rules.get(direction, ()):
                if self._cilium_rule_matches(c, rule, leg, dp, uncertain):
                    return self._result(
                        leg, Decision.DENY, "denied by {rules}", selected=selected, rules=(ref,)
                    ), uncertain
        admitted: list[RuleRef] = []
        for t in nps:
            for np_rule in t.rules.get(direction, ()):
                if self._np_peers_match(t, np_rule.peers, leg, dp) and self._np_ports_match(
                    np_rule.ports, leg, dp, uncertain
                ):
                    admitted.append(np_rule.ref)
        for c in cts:
            for ref, crule in c.rules.get(direction, ()):
                if not crule.unsupported and self._cilium_rule_matches(
                    c, crule, leg, dp, uncertain
                ):
                    admitted.append(ref)
        if admitted:
            word = "from" if direction == INGRESS else "to"
            return self._result(
                leg,
                Decision.ALLOW,
                "{subject} {direction} " + word + " {peer} on {port} admitted by {rules}",
                selected=selected,
                rules=tuple(admitted),
            ), uncertain
        unmodelled = [
            f"{ref} uses {', '.join(crule.unsupported)}"
            for c in cts
            for ref, crule in (*c.rules.get(direction, ()), *c.deny_rules.get(direction, ()))
            if crule.unsupported
        ]
        if unmodelled:
            return self._result(
                leg,
                Decision.UNKNOWN,
                "not modelled: " + _lit("; ".join(unmodelled)),
                selected=selected,
            ), uncertain
        return self._result(
            leg,
            Decision.DENY,
            "{subject} is isolated for {direction} by {selected}; no rule admits {peer} on {port}",
            selected=selected,
        ), uncertain

    @staticmethod
    def _result(
        leg: _Leg,
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

    def _address(self, ip: str) -> _IP:
        parsed = self._ips.get(ip)
        if parsed is None:
            parsed = self._ips[ip] = ipaddress.ip_address(ip)
        return parsed

    # ---------------------------------------------------------------- NetworkPolicy rules

    def _np_peers_match(
        self, target: NPTarget, peers: tuple[PolicyPeer, ...], leg: _Leg, dp: Dataplane
    ) -> bool:
        if not peers:
            return True  # from/to omitted: every peer, nodes and outside included (D14)
        peer = leg.peer
        for p in peers:
            if p.ip_block is not None:
                if isinstance(peer, PodPeer | HostPeer) and not dp.ipblock_matches_cluster:
                    continue  # D2: Cilium's CIDR rules never match pods or nodes
                ip = peer.ip
                if ip is not None and p.ip_block.contains(self._address(ip)):
                    return True
                continue
            if not isinstance(peer, PodPeer) or peer.pod.host_network:
                continue  # selectors only ever match pods
            pod = peer.pod
            if p.namespace_selector is None:
                if pod.namespace != target.namespace:
                    continue
            elif not p.namespace_selector.matches(self.namespace_labels(pod.namespace)):
                continue
            if p.pod_selector is not None and not p.pod_selector.matches(self.labels(pod, dp)):
                continue
            return True
        return False

    def _np_ports_match(
        self, ports: tuple[PolicyPort, ...], leg: _Leg, dp: Dataplane, uncertain: list[str]
    ) -> bool:
        if not ports:
            return True
        return any(
            self._port_matches(pp.port, pp.end_port, leg, dp, uncertain)
            for pp in ports
            if pp.protocol is leg.protocol
        )

    def _port_matches(
        self,
        port: int | str | None,
        end: int | None,
        leg: _Leg,
        dp: Dataplane,
        uncertain: list[str],
    ) -> bool:
        """One ports entry of the leg's protocol: every port (None), a name or a number."""
        if leg.protocol is Protocol.SCTP and not dp.sctp_port_rules:
            uncertain.append("SCTP port rules under Cilium without enable-sctp (D8)")
            return False
        if port is None:
            return True
        if isinstance(port, str):
            return self._named_port_matches(port, leg, dp)
        return self._number_matches(port, end, leg, dp, uncertain)

    def _number_matches(
        self, port: int, end: int | None, leg: _Leg, dp: Dataplane, uncertain: list[str]
    ) -> bool:
        if end is None:
            return leg.port == port
        if dp.end_port is EndPortMode.PORT_ONLY:
            if port < leg.port <= end and dp.end_port_uncertain:
                uncertain.append(f"endPort range {port}-{end} on {dp.name} (D1)")
            return leg.port == port
        return port <= leg.port <= end

    def _named_port_matches(self, name: str, leg: _Leg, dp: Dataplane) -> bool:
        if leg.direction == INGRESS:
            cp = leg.subject.named_port(name, leg.protocol)
            return cp is not None and cp.port == leg.port
        if dp.named_port_egress is NamedPortEgress.CLUSTER_WIDE:
            values = {n for n, proto in self.named_ports.get(name, ()) if proto is leg.protocol}
            return len(values) == 1 and leg.port in values  # D3: a conflict voids the rule
        peer = leg.peer
        if not isinstance(peer, PodPeer):
            return False  # D3b: named-port sets hold pod IPs only
        cp = peer.pod.named_port(name, leg.protocol)
        return cp is not None and cp.port == leg.port

    # ---------------------------------------------------------------- Cilium rules

    def _cilium_rule_matches(
        self, target: CiliumTarget, rule: CiliumRule, leg: _Leg, dp: Dataplane, uncertain: list[str]
    ) -> bool:
        if rule.has_l3:
            if not self._cilium_l3_matches(target, rule, leg, dp, uncertain):
                return False
        elif not rule.ports:
            return False  # an empty rule `{}` selects nothing; it only turns on default deny
        return self._cilium_ports_match(rule.ports, leg, dp, uncertain)

    def _cilium_l3_matches(
        self, target: CiliumTarget, rule: CiliumRule, leg: _Leg, dp: Dataplane, uncertain: list[str]
    ) -> bool:
        peer = leg.peer
        for entity in rule.entities:
            if self._entity_matches(entity, leg, uncertain):
                return True
        if isinstance(peer, PodPeer) and not peer.pod.host_network:
            labels = self.cilium_labels(peer.pod, dp)
            for sel in target.endpoints.get(id(rule), ()):
                if sel.matches(labels):
                    return True
        if isinstance(peer, ExternalPeer):
            ip = ipaddress.ip_address(peer.ip)
            if any(block.contains(ip) for block in rule.cidrs):
                return True
        return False

    @staticmethod
    def _entity_matches(entity: Entity, leg: _Leg, uncertain: list[str]) -> bool:
        peer = leg.peer
        if entity is Entity.ALL:
            return True
        if entity in (Entity.WORLD, Entity.WORLD_IPV4, Entity.WORLD_IPV6):
            if not isinstance(peer, ExternalPeer):
                return False
            version = ipaddress.ip_address(peer.ip).version
            return entity is Entity.WORLD or (entity is Entity.WORLD_IPV4) == (version == 4)
        if entity is Entity.CLUSTER:
            return isinstance(peer, PodPeer | HostPeer)
        if isinstance(peer, HostPeer):
            own = peer.node.name == leg.subject.node_name
            return (entity is Entity.HOST and own) or (entity is Entity.REMOTE_NODE and not own)
        if entity is Entity.KUBE_APISERVER:
            uncertain.append("the kube-apiserver entity is not modelled")
        return False

    def _cilium_ports_match(
        self, ports: tuple[CiliumPort, ...], leg: _Leg, dp: Dataplane, uncertain: list[str]
    ) -> bool:
        if not ports:
            return True
        for cp in ports:
            if cp.protocol is CiliumProtocol.ANY:
                if leg.protocol is Protocol.SCTP and not dp.sctp_port_rules:
                    continue  # ANY means the protocols the datapath parses
            elif cp.protocol.value != leg.protocol.value:
                continue
            if self._port_matches(cp.port, cp.end_port, leg, dp, uncertain):
                return True
        return False

    # ---------------------------------------------------------------- paths

    def _as_peer(self, endpoint: PodEndpoint | NodeEndpoint | ExternalEndpoint) -> Peer:
        if isinstance(endpoint, PodEndpoint):
            pod = endpoint.pod
            if pod.host_network:
                node = self._nodes.get(pod.node_name or "")
                if node is not None:
                    return HostPeer(node=node, via=f"hostNetwork pod {pod.key}")
            return PodPeer(pod=pod)
        if isinstance(endpoint, NodeEndpoint):
            return HostPeer(node=endpoint.node)
        return self._classify_ip(endpoint.ip)

    def _classify_ip(self, ip: str) -> Peer:
        """An address named by IP is whatever owns it: a pod, a node, or the outside."""
        pod = self._pods_by_ip.get(ip)
        if pod is not None:
            return PodPeer(pod=pod)
        node = self._nodes_by_ip.get(ip)
        if node is not None:
            return HostPeer(node=node)
        return ExternalPeer(ip=ip)

    def _resolve(self, traffic: Traffic, dp: Dataplane) -> _Path:
        dst = traffic.destination
        src = traffic.source
        if isinstance(src, ServiceEndpoint):
            return _Path(
                kind=PathKind.OTHER, decided=Decision.UNKNOWN, reason="a Service cannot be a source"
            )
        client = self._as_peer(src)
        if isinstance(dst, ServiceEndpoint):
            return self._resolve_service(traffic, client, dst, dp)
        target = self._as_peer(dst)
        if isinstance(target, PodPeer):
            pod = target.pod
            if isinstance(traffic.port, str):
                cp = pod.named_port(traffic.port, traffic.protocol)
                if cp is None:
                    return _Path(
                        kind=PathKind.OTHER,
                        decided=Decision.UNKNOWN,
                        reason=f"pod {pod.key} has no {traffic.protocol} port named {traffic.port!r}",
                    )
                port = cp.port
            else:
                port = traffic.port
            return self._to_pod(client, pod, port, traffic.protocol, dp, kind=None)
        if isinstance(traffic.port, str):
            return _Path(
                kind=PathKind.OTHER,
                decided=Decision.UNKNOWN,
                reason=f"a port name ({traffic.port!r}) means nothing for {dst}",
            )
        port = traffic.port
        if isinstance(client, PodPeer):
            kind = PathKind.POD_NODE if isinstance(target, HostPeer) else PathKind.POD_EXTERNAL
            return _Path(
                kind=kind,
                legs=(
                    _Leg(
                        direction=EGRESS,
                        subject=client.pod,
                        peer=target,
                        port=port,
                        protocol=traffic.protocol,
                    ),
                ),
                port=port,
            )
        kind = PathKind.NODE_NODE if isinstance(client, HostPeer) else PathKind.EXTERNAL_NODE
        if isinstance(target, ExternalPeer):
            kind = PathKind.OTHER
        return _Path(kind=kind, port=port, reason="neither end is a pod: no pod policy applies")

    def _to_pod(
        self,
        client: Peer,
        pod: Pod,
        port: int,
        protocol: Protocol,
        dp: Dataplane,
        *,
        kind: PathKind | None,
    ) -> _Path:
        if isinstance(client, PodPeer):
            if client.pod.key == pod.key:
                return _Path(
                    kind=kind or PathKind.POD_POD,
                    decided=Decision.ALLOW,
                    reason="a pod cannot block traffic to itself",
                    port=port,
                    backend=pod,
                )
            legs = (
                _Leg(
                    direction=EGRESS,
                    subject=client.pod,
                    peer=PodPeer(pod=pod),
                    port=port,
                    protocol=protocol,
                ),
                _Leg(direction=INGRESS, subject=pod, peer=client, port=port, protocol=protocol),
            )
            return _Path(kind=kind or PathKind.POD_POD, legs=legs, port=port, backend=pod)
        if pod.host_network:
            return _Path(
                kind=PathKind.OTHER, port=port, reason="hostNetwork pods are never policy subjects"
            )
        default_kind = PathKind.NODE_POD if isinstance(client, HostPeer) else PathKind.EXTERNAL_POD
        return _Path(
            kind=kind or default_kind,
            legs=(_Leg(direction=INGRESS, subject=pod, peer=client, port=port, protocol=protocol),),
            port=port,
            backend=pod,
        )

    def _resolve_service(
        self, traffic: Traffic, client: Peer, dst: ServiceEndpoint, dp: Dataplane
    ) -> _Path:
        svc = dst.service
        sp = svc.port_named(traffic.port, traffic.protocol)
        if sp is None:
            return _Path(
                kind=PathKind.OTHER,
                decided=Decision.UNKNOWN,
                reason=f"Service {svc.key} has no {traffic.protocol} port {traffic.port!r}",
            )
        if dst.via is not Via.CLUSTER_IP and sp.node_port is None and dst.via is Via.NODE_PORT:
            return _Path(
                kind=PathKind.OTHER,
                decided=Decision.UNKNOWN,
                reason=f"Service {svc.key} has no nodePort",
            )
        receiving = dst.node
        if dst.via is Via.LOAD_BALANCER and isinstance(client, PodPeer):
            # a pod's packets to a LoadBalancer IP leave through, and are taken by, its own node
            receiving = self._nodes.get(client.pod.node_name or "")
        elif dst.via is Via.LOAD_BALANCER and isinstance(client, HostPeer):
            receiving = client.node  # a node translates its own traffic to an LB IP
        external = not isinstance(client, PodPeer)
        local_only = (
            dst.via is not Via.CLUSTER_IP and svc.external_traffic_policy == "Local" and external
        )
        if (
            not external
            and dst.via is Via.NODE_PORT
            and svc.external_traffic_policy == "Local"
            and not dp.service_nat_in_node
            and receiving is not None
            and isinstance(client, PodPeer)
            and client.pod.node_name != receiving.name
        ):
            # Cilium translates only its own node's NodePorts at the pod; another node's
            # NodePort is handled there like outside traffic: Local keeps local backends.
            local_only = True
        backend = dst.backend or self._backend(svc, receiving if local_only else None)
        if receiving is None and dst.via is not Via.CLUSTER_IP and backend is not None:
            receiving = self._nodes.get(backend.node_name or "")
        kind = {
            (False, Via.CLUSTER_IP): PathKind.POD_SERVICE,
            (False, Via.NODE_PORT): PathKind.POD_NODEPORT,
            (False, Via.LOAD_BALANCER): PathKind.POD_LB,
            (True, Via.CLUSTER_IP): PathKind.NODE_SERVICE,
            (True, Via.NODE_PORT): PathKind.EXTERNAL_NODEPORT,
            (True, Via.LOAD_BALANCER): PathKind.EXTERNAL_LB,
        }[(external, dst.via)]
        if backend is None:
            where = f" on {receiving.name}" if local_only and receiving else ""
            return _Path(
                kind=kind,
                decided=Decision.DENY if local_only else Decision.UNKNOWN,
                reason=f"Service {svc.key} has no backend{where}"
                + (" (externalTrafficPolicy Local drops it)" if local_only else ""),
            )
        if isinstance(sp.target_port, str):
            cp = backend.named_port(sp.target_port, sp.protocol)
            if cp is None:
                return _Path(
                    kind=kind,
                    decided=Decision.UNKNOWN,
                    reason=f"backend {backend.key} has no port named {sp.target_port!r}",
                )
            port = cp.port
        else:
            port = sp.target_port
        on = f"backend {backend.key} on {backend.node_name}, targetPort {port}"
        notes = [f"Service {svc.key} -> {on}"]
        if receiving is not None and dst.via is not Via.CLUSTER_IP:
            notes[0] = f"Service {svc.key} received by {receiving.name} -> {on}"
        if dst.via is Via.CLUSTER_IP:
            return self._cluster_ip(client, backend, port, sp.protocol, dp, kind, notes)
        assert receiving is not None
        same_node = backend.node_name == receiving.name
        if svc.external_traffic_policy == "Local" and external:
            notes.append("externalTrafficPolicy Local keeps the client address (D5c)")
            return self._with_notes(
                self._to_pod(client, backend, port, sp.protocol, dp, kind=kind), notes
            )
        if not external:
            return self._in_cluster_external_ip(
                client, backend, receiving, port, sp, svc, dp, kind, notes, via=dst.via
            )
        # external client, externalTrafficPolicy Cluster (D5 / D5b)
        if dp.masquerade_bypass and same_node:
            notes.append(
                "kube-proxy marks it for masquerade and KUBE-FORWARD accepts it before NPM (D5)"
            )
            return _Path(
                kind=kind, decided=Decision.ALLOW, notes=tuple(notes), backend=backend, port=port
            )
        if dp.snat_to_receiving_node and not same_node:
            first: tuple[_Leg, ...] = ()
            if (
                dp.service_nat_in_node
                and not dp.masquerade_bypass
                and not (isinstance(client, HostPeer) and client.node.name == receiving.name)
            ):
                # PlaceAzureChainFirst: NPM on the receiving node judges the translated packet
                # before KUBE-FORWARD's accept and before the SNAT (D5, D5b)
                notes.append(
                    f"NPM runs before KUBE-FORWARD on {receiving.name}: it judges the client's "
                    "address there, before the SNAT (D5)"
                )
                first = (
                    _Leg(
                        direction=INGRESS,
                        subject=backend,
                        peer=client,
                        port=port,
                        protocol=sp.protocol,
                    ),
                )
            notes.append(f"SNAT to the receiving node {receiving.name} (D5b)")
            snat = HostPeer(node=receiving, via="SNAT by the receiving node")
            path = self._to_pod(snat, backend, port, sp.protocol, dp, kind=kind)
            if first and path.decided is None:
                path.legs = (*first, *path.legs)
            return self._with_notes(path, notes)
        if dp.snat_to_receiving_node:
            notes.append("the backend is on the receiving node: the client address is kept (D5)")
        return self._with_notes(
            self._to_pod(client, backend, port, sp.protocol, dp, kind=kind), notes
        )

    def _in_cluster_external_ip(
        self,
        client: Peer,
        backend: Pod,
        receiving: Node,
        port: int,
        sp: ServicePort,
        svc: Service,
        dp: Dataplane,
        kind: PathKind,
        notes: list[str],
        *,
        via: Via,
    ) -> _Path:
        """A pod reaching a Service through a NodePort or a LoadBalancer IP (D5d)."""
        assert isinstance(client, PodPeer)
        protocol = sp.protocol
        legs: list[_Leg] = []
        remote = client.pod.node_name != receiving.name
        if remote and via is Via.NODE_PORT and sp.node_port is not None:
            # the packet first leaves the client's node towards another node's address
            legs.append(
                _Leg(
                    direction=EGRESS,
                    subject=client.pod,
                    peer=HostPeer(node=receiving),
                    port=sp.node_port,
                    protocol=protocol,
                )
            )
            notes.append(f"egress to {receiving.name}:{sp.node_port} is judged before translation")
        pod_to_pod = (
            _Leg(
                direction=EGRESS,
                subject=client.pod,
                peer=PodPeer(pod=backend),
                port=port,
                protocol=protocol,
            ),
            _Leg(direction=INGRESS, subject=backend, peer=client, port=port, protocol=protocol),
        )
        if dp.service_nat_in_node:
            return self._kube_proxy_external_ip(
                client, backend, receiving, port, svc, dp, kind, notes, legs, pod_to_pod
            )
        if not legs:
            notes.append("translated at the client like pod-to-pod, both sides evaluated (D5d)")
            return _Path(kind=kind, legs=pod_to_pod, notes=tuple(notes), backend=backend, port=port)
        # another node's NodePort: that node translates it like outside traffic
        if backend.node_name == receiving.name or not dp.snat_to_receiving_node:
            peer: Peer = client
        else:
            peer = HostPeer(node=receiving, via="SNAT by the receiving node")
            notes.append(f"SNAT to {receiving.name} (D5b)")
        legs.append(
            _Leg(direction=INGRESS, subject=backend, peer=peer, port=port, protocol=protocol)
        )
        return _Path(kind=kind, legs=tuple(legs), notes=tuple(notes), backend=backend, port=port)

    @staticmethod
    def _kube_proxy_external_ip(
        client: PodPeer,
        backend: Pod,
        receiving: Node,
        port: int,
        svc: Service,
        dp: Dataplane,
        kind: PathKind,
        notes: list[str],
        legs: list[_Leg],
        pod_to_pod: tuple[_Leg, _Leg],
    ) -> _Path:
        """A pod's packet to a NodePort or LoadBalancer IP that kube-proxy translates on
        `receiving` (D5d). Two effects, modelled apart:
        - where NPM judges it: kube-proxy marks eTP=Cluster traffic for masquerade; with the
          default placement KUBE-FORWARD accepts the mark before NPM (masquerade_bypass), with
          PlaceAzureChainFirst NPM judges the translated packet first, with the client's
          address (egress and, ipsets being cluster-wide, the backend's ingress);
        - what address the backend sees: the mark masquerades it to `receiving`'s IP, so a
          backend on another node is judged there against that node (D5b), either way."""
        protocol = pod_to_pod[0].protocol
        if svc.external_traffic_policy == "Local":
            notes.append(
                "externalTrafficPolicy Local: kube-proxy sends pods' traffic like "
                "ClusterIP traffic, unmarked"
            )
            remote = client.pod.node_name != receiving.name
            if remote and backend.node_name != receiving.name:
                return _Path(
                    kind=kind,
                    decided=Decision.DENY,
                    notes=tuple(notes),
                    backend=backend,
                    port=port,
                    reason=(
                        f"without SNAT the backend on {backend.node_name} answers the client "
                        f"directly, not through {receiving.name}: the reply does not match "
                        "the connection (a routing failure, not a policy)"
                    ),
                )
            return _Path(
                kind=kind, legs=(*legs, *pod_to_pod), notes=tuple(notes), backend=backend, port=port
            )
        same = backend.node_name == receiving.name
        if dp.masquerade_bypass:
            notes.append("kube-proxy's masquerade mark skips NPM on the receiving node (D5d)")
            if same:
                return _Path(
                    kind=kind,
                    legs=tuple(legs),
                    notes=tuple(notes),
                    backend=backend,
                    port=port,
                    reason="masquerade-marked traffic is accepted before NPM (D5d)",
                )
        else:
            notes.append(
                f"PlaceAzureChainFirst: NPM judges the translated packet on {receiving.name} "
                "before KUBE-FORWARD accepts the masquerade mark (D5d)"
            )
            legs.extend(pod_to_pod)
        if not same:
            legs.append(
                _Leg(
                    direction=INGRESS,
                    subject=backend,
                    peer=HostPeer(node=receiving, via="SNAT by the receiving node"),
                    port=port,
                    protocol=protocol,
                )
            )
            notes.append(f"SNAT to {receiving.name}; the backend's node judges its ingress (D5d)")
        return _Path(kind=kind, legs=tuple(legs), notes=tuple(notes), backend=backend, port=port)

    def _cluster_ip(
        self,
        client: Peer,
        backend: Pod,
        port: int,
        protocol: Protocol,
        dp: Dataplane,
        kind: PathKind,
        notes: list[str],
    ) -> _Path:
        if isinstance(client, PodPeer) and client.pod.key == backend.key:
            if dp.service_nat_in_node and not dp.masquerade_bypass:
                # PlaceAzureChainFirst: the hairpin is forwarded by the node, and NPM judges it
                # before KUBE-FORWARD accepts its masquerade mark (D10, D25)
                notes.append(
                    "hairpin: NPM runs before KUBE-FORWARD (PlaceAzureChainFirst) and judges "
                    "the pod's own traffic (D10)"
                )
                legs = (
                    _Leg(
                        direction=EGRESS,
                        subject=backend,
                        peer=PodPeer(pod=backend),
                        port=port,
                        protocol=protocol,
                    ),
                    _Leg(
                        direction=INGRESS,
                        subject=backend,
                        peer=PodPeer(pod=backend),
                        port=port,
                        protocol=protocol,
                    ),
                )
                return _Path(kind=kind, legs=legs, notes=tuple(notes), backend=backend, port=port)
            if dp.masquerade_bypass:
                notes.append(
                    "hairpin: kube-proxy marks it for masquerade, accepted before NPM (D10)"
                )
                return _Path(
                    kind=kind,
                    decided=Decision.ALLOW,
                    notes=tuple(notes),
                    backend=backend,
                    port=port,
                )
            if dp.hairpin_uncertain:
                return _Path(
                    kind=kind,
                    decided=Decision.ALLOW,
                    notes=tuple(notes),
                    uncertain=("hairpin through a Service under Cilium (D10)",),
                    backend=backend,
                    port=port,
                    reason="a pod cannot block traffic to itself",
                )
        notes.append("evaluated after service translation against the backend and targetPort (D10)")
        return self._with_notes(self._to_pod(client, backend, port, protocol, dp, kind=kind), notes)

    @staticmethod
    def _with_notes(path: _Path, notes: list[str]) -> _Path:
        return _Path(
            kind=path.kind,
            legs=path.legs,
            notes=(*notes, *path.notes),
            uncertain=path.uncertain,
            backend=path.backend,
            port=path.port,
            decided=path.decided,
            reason=path.reason,
        )

    def _backend(self, svc: Service, on_node: Node | None) -> Pod | None:
        """The first ready backend by pod key (the lab sends to it too); for Local, on the node."""
        backends = self._backends.get(svc.key)
        if backends is None:
            backends = self._backends[svc.key] = self.snapshot.backends(svc)
        for pod in backends:
            if on_node is None or pod.node_name == on_node.name:
                return pod
        return None
