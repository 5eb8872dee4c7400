"""The connections each policy governs: the traffic the lint judges under both dataplanes.

For a class of pods (the planner's classes, class_index.py) a policy isolates, the
representative peers are: the pods each rule selects (one per behaviour: matched on which
dataplane, which number a named port has), the pods, nodes and an outside address inside
each ipBlock, the pod's own node and another node, and the default outside client; on the
rule's ports, range edges and named-port numbers, or the destination's container ports for
a rule without ports. Only peers some rule of a governing policy names are enumerated (a
rule without from/to stands for any peer: one pod per named-port behaviour, the nodes, the
outside), and each (rule, peer) is worked out once per plan, not per subject. A policy
isolates a direction on a dataplane by policyTypes, or (D23, `rules_beyond_policy_types`)
by having rules there; where only one dataplane isolates, a pod of another class in the
subject's namespace and one in another namespace stand for the peers no rule names.
NodePort/LoadBalancer Services: governed_services.py.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence

from netparity.engine.compile import EGRESS, INGRESS, NPRule, NPTarget
from netparity.engine.dataplane import Dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.matcher.peer import ns_selector_matches
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    Traffic,
)
from netparity.model.networkpolicy import IPBlock, PolicyPeer
from netparity.model.objects import Node, Pod, Protocol, ip_address
from netparity.model.snapshot import Snapshot
from netparity.plan.class_index import ClassIndex
from netparity.plan.classes import PodClass
from netparity.plan.connection import Connection
from netparity.plan.governed_blocks import covered_nodes, ipblock_nodes, sample_outside
from netparity.plan.governed_ports import (
    EXTERNAL_PORT,
    KUBELET_PORT,
    MAX_EXTRA_PORTS,
    MAX_NODE_PORTS,
    MAX_PORTS,
    Peer,
    PortChoice,
    PortList,
    PortNameIndex,
    unique,
)
from netparity.plan.groups import describe_pods

_Named = tuple[tuple[str, Protocol], ...]  # a rule's egress named ports


def isolates(t: NPTarget, direction: str, dp: Dataplane) -> bool:
    """Whether `dp` isolates `direction` for the policy's subjects: policyTypes names it, or
    the dataplane enforces rules beyond policyTypes (D23) and the direction has some."""
    return direction in t.isolates or (dp.rules_beyond_policy_types and direction in t.ruled)


class GovernedTraffic(PortChoice):
    """Enumerates the connections policies govern; caches what does not depend on the
    subject pod."""

    def __init__(
        self,
        snapshot: Snapshot,
        engine: Engine,
        classes: ClassIndex,
        npm: Dataplane,
        target: Dataplane,
    ) -> None:
        self.snapshot = snapshot
        self.engine = engine
        self.classes = classes
        self.npm = npm
        self.target = target
        self.nodes = tuple(n for n in snapshot.nodes if n.os != "windows") or snapshot.nodes
        self.node_by_name = {n.name: n for n in snapshot.nodes}
        self.hostnet_ports: dict[str, PortList] = defaultdict(list)
        for p in snapshot.pods:
            if p.host_network and p.node_name:
                for cp in p.ports:
                    if (cp.port, cp.protocol) not in self.hostnet_ports[p.node_name]:
                        self.hostnet_ports[p.node_name].append((cp.port, cp.protocol))
        owned: set[str] = {n.ip for n in snapshot.nodes}
        owned.update(p.ip for p in snapshot.pods if p.ip)
        for s in snapshot.services:
            owned.update(s.load_balancer_ips)
            if s.cluster_ip:
                owned.add(s.cluster_ip)
        self.owned = frozenset(owned)
        self.pod_cidrs = tuple(
            ipaddress.ip_network(n.pod_cidr, strict=False) for n in snapshot.nodes if n.pod_cidr
        )
        self.np_by_ns: dict[str, list[NPTarget]] = defaultdict(list)
        for t in engine.np_targets:
            self.np_by_ns[t.namespace].append(t)
        self._selector_cache: dict[tuple[PolicyPeer, str, _Named], list[Peer]] = {}
        self._ipblock_cache: dict[tuple[str, _Named], list[Peer]] = {}
        self._named_cache: dict[tuple[int, str], list[Peer]] = {}
        self._naming_cache: dict[
            _Named, tuple[dict[tuple[object, ...], list[PodClass]], list[Peer], list[PodClass]]
        ] = {}
        self._naming_other: dict[tuple[_Named, str], list[Peer]] = {}
        self._port_names = PortNameIndex(classes.classes)
        self._sample_cache: dict[int, str | None] = {}
        self._nodes_cache: dict[tuple[str, str | None], list[Peer]] = {}
        self._covered_cache: dict[str, list[Node]] = {}
        self._inside_cache: dict[str, dict[str, list[Pod]]] = {}
        self._inside_by_id: dict[int, tuple[IPBlock, dict[str, list[Pod]]]] = {}
        self._match_cache: dict[tuple[str, str, str], list[PodClass]] = {}
        self.pod_ip: dict[str, tuple[int, int]] = {}
        for p in classes.all_pods:
            if p.ip:
                addr = ip_address(p.ip)
                self.pod_ip[p.key] = (addr.version, int(addr))

    # ---------------------------------------------------------------- subjects

    def governing(self, cls: PodClass, direction: str) -> list[NPTarget]:
        """NetworkPolicies that isolate the class for `direction` on either dataplane: by
        policyTypes, or (D23, `rules_beyond_policy_types`) by rules in that direction."""
        rep = cls.rep
        labels_n = self.engine.labels(rep, self.npm)
        labels_t = self.engine.labels(rep, self.target)
        return [
            t
            for t in self.np_by_ns.get(cls.namespace, ())
            if (
                (isolates(t, direction, self.npm) and t.subject.matches(labels_n))
                or (isolates(t, direction, self.target) and t.subject.matches(labels_t))
            )
        ]

    def subject_connections(
        self, cls: PodClass, direction: str, governing: Sequence[NPTarget]
    ) -> list[Connection]:
        s = cls.rep
        group = self.classes.group(cls)
        out: dict[tuple[str, str, int, Protocol], Connection] = {}

        def add(peer: Peer, port: int, proto: Protocol) -> None:
            if isinstance(peer.endpoint, PodEndpoint) and peer.endpoint.pod.key == s.key:
                return
            src, dst = (
                (peer.endpoint, PodEndpoint(pod=s))
                if direction == INGRESS
                else (PodEndpoint(pod=s), peer.endpoint)
            )
            key = (str(src), str(dst), port, proto)
            if key not in out:
                out[key] = Connection(
                    traffic=Traffic(source=src, destination=dst, port=port, protocol=proto),
                    side=direction,
                    pods=group,
                    peer=peer.desc,
                    port=port,
                    port_label=f"{port}/{proto}",
                )

        extra: PortList = []
        for t in governing:
            for rule in t.rules.get(direction, ()):
                for peer in self._rule_peers(t, rule, direction, s):
                    if peer.pod is not None and peer.pod.key == s.key:
                        if peer.spare is None:
                            continue  # the subject alone: a pod cannot block itself
                        peer = Peer(
                            endpoint=PodEndpoint(pod=peer.spare), desc=peer.desc, pod=peer.spare
                        )
                    for port, proto in self._ports(rule, direction, s, peer):
                        add(peer, port, proto)
                for pp in rule.ports:
                    if isinstance(pp.port, int) and (pp.port, pp.protocol) not in extra:
                        extra.append((pp.port, pp.protocol))
        extra = extra[:MAX_EXTRA_PORTS]
        if any(
            isolates(t, direction, self.npm) != isolates(t, direction, self.target)
            for t in governing
        ):
            for peer, port, proto in self._bystander_peers(cls, direction, extra):
                add(peer, port, proto)
        own = self.node_by_name.get(s.node_name or "")
        outside = Peer(
            endpoint=ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP),
            desc=f"outside address {DEFAULT_EXTERNAL_IP} (the default outside client)",
        )
        # Beyond the rules' peers: the own node (NPM never polices it, D4a) and the default
        # outside client (any connection no rule admits: a lost or gained isolation shows).
        # Other nodes differ only through ipBlocks and rules without peers, probed above.
        if direction == EGRESS:
            if own is not None:
                peer = Peer(
                    endpoint=NodeEndpoint(node=own), desc=f"node {own.name} (own node)", node=own
                )
                node_ports = unique(
                    [*self.hostnet_ports.get(own.name, [])[:2], (KUBELET_PORT, Protocol.TCP)]
                )
                for port, proto in unique([*node_ports, *extra])[:MAX_NODE_PORTS]:
                    add(peer, port, proto)
            for port, proto in unique([(EXTERNAL_PORT, Protocol.TCP), *extra])[:MAX_NODE_PORTS]:
                add(outside, port, proto)
        else:
            mine = [(cp.port, cp.protocol) for cp in s.ports[:MAX_PORTS]] or [(80, Protocol.TCP)]
            for port, proto in unique([*mine, *extra])[:MAX_NODE_PORTS]:
                add(outside, port, proto)
        return list(out.values())

    def _bystander_peers(
        self, cls: PodClass, direction: str, extra: PortList
    ) -> list[tuple[Peer, int, Protocol]]:
        """D23: one dataplane isolates the direction by rules the other ignores; pods no
        rule names show the isolation gained or lost, as the outside client does."""
        out = []
        for other in self._bystanders(cls):
            peer = Peer(
                endpoint=PodEndpoint(pod=other.rep),
                desc=describe_pods([self.classes.group(other)]),
                pod=other.rep,
            )
            dst = cls.rep if direction == INGRESS else other.rep
            ports = [(cp.port, cp.protocol) for cp in dst.ports[:MAX_PORTS]]
            for port, proto in unique([*(ports or [(80, Protocol.TCP)]), *extra])[:MAX_NODE_PORTS]:
                out.append((peer, port, proto))
        return out

    def _bystanders(self, cls: PodClass) -> list[PodClass]:
        """Another class in the subject's namespace and one in another namespace."""
        out = []
        for same in (True, False):
            other = next(
                (
                    c
                    for c in self.classes.classes
                    if c.name != cls.name and (c.namespace == cls.namespace) is same
                ),
                None,
            )
            if other is not None:
                out.append(other)
        return out

    def _other_node(self, own: Node | None) -> Node | None:
        for n in self.nodes:
            if own is None or n.name != own.name:
                return n
        return None

    # ---------------------------------------------------------------- rule peers

    def _rule_peers(self, t: NPTarget, rule: NPRule, direction: str, s: Pod) -> list[Peer]:
        if not rule.peers:
            return self._all_peers(rule, direction, s)
        out: list[Peer] = []
        for peer in rule.peers:
            if peer.ip_block is not None:
                out.extend(self._ipblock_pods(peer.ip_block, rule, direction))
                out.extend(self._ipblock_nodes(peer.ip_block, s))
                ip = self._sample_outside(peer.ip_block)
                if ip is not None:
                    out.append(
                        Peer(
                            endpoint=ExternalEndpoint(ip=ip),
                            desc=f"outside address {ip} (in ipBlock {peer.ip_block})",
                        )
                    )
            else:
                out.extend(self._selector_pods(t, peer, rule, direction))
        return out

    def _named(self, rule: NPRule, direction: str) -> list[tuple[str, Protocol]]:
        if direction != EGRESS:
            return []
        return [(pp.port, pp.protocol) for pp in rule.ports if isinstance(pp.port, str)]

    def _behaviour(
        self, classes: Iterable[PodClass], rule: NPRule, direction: str, peer: PolicyPeer | None
    ) -> list[Peer]:
        """One peer per behaviour: which dataplane's labels match, which number each named port has."""
        return [
            self._peer_of(m) for m in self._by_behaviour(classes, rule, direction, peer).values()
        ]

    def _by_behaviour(
        self, classes: Iterable[PodClass], rule: NPRule, direction: str, peer: PolicyPeer | None
    ) -> dict[tuple[object, ...], list[PodClass]]:
        """`classes` by behaviour (`_behaviour`), in the order each first appears."""
        named = [self._port_names.numbers(n, proto) for n, proto in self._named(rule, direction)]
        groups: dict[tuple[object, ...], list[PodClass]] = defaultdict(list)
        for c in classes:
            key: list[object] = []
            if peer is not None and peer.pod_selector is not None:
                key.append(peer.pod_selector.matches(self.engine.labels(c.rep, self.npm)))
                key.append(peer.pod_selector.matches(self.engine.labels(c.rep, self.target)))
            if peer is not None and peer.namespace_selector is not None:
                # D19: the namespace passes as one dataplane reads the selector, not the other
                ns_labels = self.engine.namespace_labels(c.rep.namespace)
                key.extend(
                    ns_selector_matches(peer.namespace_selector, ns_labels, dp)
                    for dp in (self.npm, self.target)
                )
            key.extend(numbers.get(c.name) for numbers in named)
            groups[tuple(key)].append(c)
        return groups

    def _peer_of(self, members: list[PodClass]) -> Peer:
        pods = [p for m in members[:2] for p in m.pods[:2]]
        return Peer(
            endpoint=PodEndpoint(pod=pods[0]),
            desc=describe_pods([self.classes.group(m) for m in members]),
            pod=pods[0],
            spare=pods[1] if len(pods) > 1 else None,
        )

    def _selector_pods(
        self, t: NPTarget, peer: PolicyPeer, rule: NPRule, direction: str
    ) -> list[Peer]:
        # by value: the policies that name the same peer share its classes (issue 19)
        home = t.namespace if peer.namespace_selector is None else ""
        key = (peer, home, tuple(self._named(rule, direction)))
        cached = self._selector_cache.get(key)
        if cached is None:
            cached = self._behaviour(self.matching(t.namespace, peer), rule, direction, peer)
            self._selector_cache[key] = cached
        return cached

    def matching(self, home: str, peer: PolicyPeer) -> list[PodClass]:
        """The classes a selector peer of a policy in `home` matches on either dataplane
        (`home` is read only when the peer has no namespaceSelector)."""
        if peer.namespace_selector is not None:
            home = ""
        key = (str(peer.namespace_selector), str(peer.pod_selector), home)
        cached = self._match_cache.get(key)
        if cached is not None:
            return cached
        if peer.namespace_selector is None:
            namespaces = [home]
        else:
            sel = peer.namespace_selector
            namespaces = [
                ns
                for ns in self.classes.by_namespace
                if any(
                    ns_selector_matches(sel, self.engine.namespace_labels(ns), dp)
                    for dp in (self.npm, self.target)
                )
            ]
        candidates: list[PodClass] = []
        for ns in namespaces:
            for c in self.classes.by_namespace.get(ns, ()):
                if peer.pod_selector is None or (
                    peer.pod_selector.matches(self.engine.labels(c.rep, self.npm))
                    or peer.pod_selector.matches(self.engine.labels(c.rep, self.target))
                ):
                    candidates.append(c)
        self._match_cache[key] = candidates
        return candidates

    def pods_in(self, block: IPBlock) -> dict[str, list[Pod]]:
        """The pods (by class name) whose IP the block covers, `except` included."""
        by_id = self._inside_by_id.get(id(block))
        if by_id is not None and by_id[0] is block:
            return by_id[1]
        key = str(block)
        cached = self._inside_cache.get(key)
        if cached is not None:
            self._inside_by_id[id(block)] = (block, cached)
            return cached
        net = block.cidr
        lo, hi = int(net.network_address), int(net.broadcast_address)
        holes = [
            (int(e.network_address), int(e.broadcast_address))
            for e in block.excepts
            if e.version == net.version
        ]
        inside: dict[str, list[Pod]] = defaultdict(list)
        for c in self.classes.classes:
            for p in self.classes.members[c.name]:
                addr = self.pod_ip.get(p.key)
                if addr is None or addr[0] != net.version or not lo <= addr[1] <= hi:
                    continue
                if not any(a <= addr[1] <= b for a, b in holes):
                    inside[c.name].append(p)
        self._inside_cache[key] = inside
        self._inside_by_id[id(block)] = (block, inside)
        return inside

    def _ipblock_pods(self, block: IPBlock, rule: NPRule, direction: str) -> list[Peer]:
        named = self._named(rule, direction)
        key = (str(block), tuple(named))
        cached = self._ipblock_cache.get(key)
        if cached is not None:
            return cached
        inside = self.pods_in(block)
        groups: dict[tuple[int | None, ...], list[tuple[PodClass, list[Pod]]]] = defaultdict(list)
        for name, pods in inside.items():
            c = self.classes.by_name[name]
            nums = []
            for name, proto in named:
                cp = c.rep.named_port(name, proto)
                nums.append(None if cp is None else cp.port)
            groups[tuple(nums)].append((c, pods))
        result = []
        for members in groups.values():
            inside_pods = [p for _, pods in members[:2] for p in pods[:2]]
            result.append(
                Peer(
                    endpoint=PodEndpoint(pod=inside_pods[0]),
                    desc=describe_pods([self.classes.group(c, pods) for c, pods in members])
                    + f" (pod IPs in ipBlock {block})",
                    pod=inside_pods[0],
                    spare=inside_pods[1] if len(inside_pods) > 1 else None,
                )
            )
        self._ipblock_cache[key] = result
        return result

    def _ipblock_nodes(self, block: IPBlock, s: Pod) -> list[Peer]:
        key = (str(block), s.node_name)  # the same for every pod on the node
        cached = self._nodes_cache.get(key)
        if cached is None:
            if key[0] not in self._covered_cache:  # per block, not per node (issue 19)
                self._covered_cache[key[0]] = covered_nodes(block, self.nodes)
            cached = self._nodes_cache[key] = ipblock_nodes(block, self._covered_cache[key[0]], s)
        return cached

    def _sample_outside(self, block: IPBlock) -> str | None:
        """An address inside the block (not excepted) that no pod, node or Service owns."""
        key = id(block)
        if key not in self._sample_cache:
            self._sample_cache[key] = sample_outside(block, self.owned, self.pod_cidrs)
        return self._sample_cache[key]

    def _all_peers(self, rule: NPRule, direction: str, s: Pod) -> list[Peer]:
        """A rule without from/to: a pod (one per named-port behaviour), nodes, the outside."""
        named = tuple(self._named(rule, direction))
        key = (id(rule), s.namespace)
        pods = self._naming_peers(rule, named, s) if named else self._named_cache.get(key)
        if pods is None:
            other = next(
                (c for c in self.classes.classes if c.namespace != s.namespace),
                next((c for c in self.classes.classes if c.rep.key != s.key), None),
            )
            pods = self._behaviour([other] if other is not None else [], rule, direction, None)
            if other is None or other.namespace != s.namespace:  # else chosen for `s` alone
                self._named_cache[key] = pods
        out = list(pods)
        own = self.node_by_name.get(s.node_name or "")
        for node, what in ((own, "own node"), (self._other_node(own), "another node")):
            if node is not None:
                out.append(
                    Peer(
                        endpoint=NodeEndpoint(node=node),
                        desc=f"node {node.name} ({what})",
                        node=node,
                    )
                )
        out.append(
            Peer(
                endpoint=ExternalEndpoint(ip=DEFAULT_EXTERNAL_IP),
                desc=f"outside address {DEFAULT_EXTERNAL_IP} (the default outside client)",
            )
        )
        return out

    def _naming_peers(self, rule: NPRule, named: _Named, s: Pod) -> list[Peer]:
        """`_all_peers`' pods for egress to named ports: the classes naming any of them by
        the number each gives, and a class naming none (not `s`'s), grouped once per set of
        names (issue 19: not every naming class again for each rule)."""
        cached = self._naming_cache.get(named)
        if cached is None:
            classes = self._port_names.naming(n for n, _ in named)
            groups = self._by_behaviour(classes, rule, EGRESS, None)
            chosen = {c.name for c in classes}
            rest = [c for c in self.classes.classes if c.name not in chosen][:2]
            cached = (groups, [self._peer_of(m) for m in groups.values()], rest)
            self._naming_cache[named] = cached
        groups, peers, rest = cached
        other = next((c for c in rest if c.rep.key != s.key), None)
        if other is None:
            return peers
        out = self._naming_other.get((named, other.name))
        if out is None:
            none = (None,) * len(named)  # how the class naming none groups
            out = [
                self._peer_of([*m, other]) if k == none else p
                for (k, m), p in zip(groups.items(), peers, strict=True)
            ]
            if none not in groups:
                out.append(self._peer_of([other]))
            self._naming_other[(named, other.name)] = out
        return out
