"""The connections each policy and each NodePort/LoadBalancer Service governs.

For a class of pods a policy isolates, the representative peers are: the pods each rule
selects (one per behaviour: matched on which dataplane, which number a named port has),
the pods, nodes and an outside address inside each ipBlock, the pod's own node and another
node, and the default outside client; on the rule's ports, range edges and named-port
numbers, or the destination's container ports for a rule without ports. For a Service: the
outside clients through each backend's node and another node, and the pods that share the
backend's node (the in-cluster LoadBalancer path).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from netparity.engine.compile import EGRESS, INGRESS, NPRule, NPTarget
from netparity.engine.dataplane import Dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.matcher.peer import flatten
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    Decision,
    Endpoint,
    ExternalEndpoint,
    NodeEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Via,
)
from netparity.lint.classes import PodClass, PodClasses
from netparity.lint.findings import PodGroup, Probe
from netparity.model.networkpolicy import IPBlock, PolicyPeer
from netparity.model.objects import Node, Pod, Protocol, Service, ServiceType
from netparity.model.selectors import LabelSelector
from netparity.model.snapshot import Snapshot

KUBELET_PORT = 10250
EXTERNAL_PORT = 443
DEFAULT_PORT = {Protocol.TCP: 80, Protocol.UDP: 53, Protocol.SCTP: 9999}
MAX_PORTS = 4  # container ports taken from one pod for a rule without ports
MAX_EXTRA_PORTS = 6  # rule ports added to the node / outside probes
MAX_NODE_PORTS = 4  # ports probed on the own node and on the default outside client
MAX_NAMED_NUMBERS = 4  # cluster-wide numbers of one port name tried on non-pod peers
MAX_STANDS_FOR = 20  # client classes named with a representative (the rest are counted)

_PortList = list[tuple[int, Protocol]]
# an in-cluster client of a Service: (client, backend, node, targetPort, client class, pods)
_Client = tuple[Pod, Pod, Node, int, PodClass, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class _View:
    """What a backend's ingress policies can tell in-cluster clients apart by."""

    key: tuple[str, ...]
    peers: tuple[tuple[str, PolicyPeer], ...]  # (policy namespace, selector peer)
    blocks: tuple[IPBlock, ...]
    selectors: tuple[LabelSelector, ...]  # Cilium endpoint selectors (identity labels)


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    """A representative other end and what it stands for."""

    endpoint: Endpoint
    desc: str
    pod: Pod | None = None
    node: Node | None = None
    spare: Pod | None = None  # another pod it stands for (when `pod` is the subject itself)


def describe_pods(groups: Sequence[PodGroup], limit: int = 3) -> str:
    total = sum(g.count for g in groups)
    head = "; ".join(str(g) for g in groups[:limit])
    more = f"; and {len(groups) - limit} more classes" if len(groups) > limit else ""
    if len(groups) == 1:
        return f"pods {head}"
    return f"{total} pods: {head}{more}"


class ProbeBuilder:
    """Builds the probes; caches what does not depend on the subject pod."""

    def __init__(
        self,
        snapshot: Snapshot,
        engine: Engine,
        classes: PodClasses,
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
        self.hostnet_ports: dict[str, _PortList] = defaultdict(list)
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
        self.on_node: dict[str, dict[PodClass, list[Pod]]] = defaultdict(lambda: defaultdict(list))
        for c in classes.classes:
            for p in c.pods:
                if p.node_name:
                    self.on_node[p.node_name][c].append(p)
        self._selector_cache: dict[tuple[int, int, str], list[Peer]] = {}
        self._ipblock_cache: dict[tuple[int, int], list[Peer]] = {}
        self._named_cache: dict[tuple[int, str], list[Peer]] = {}
        self._sample_cache: dict[int, str | None] = {}
        self._inside_cache: dict[str, dict[PodClass, list[Pod]]] = {}
        self._inside_by_id: dict[int, tuple[IPBlock, dict[PodClass, list[Pod]]]] = {}
        self._peer_match: dict[tuple[int, str, PodClass], tuple[bool, bool]] = {}
        self._views: dict[tuple[str, ...], _View] = {}
        self._match_cache: dict[tuple[str, str, str], list[PodClass]] = {}
        self._signatures: dict[tuple[tuple[str, ...], PodClass], tuple[object, ...]] = {}
        self._egress_sigs: dict[PodClass, tuple[object, ...]] = {}
        self.pod_ip: dict[str, tuple[int, int]] = {}
        for p in classes.all_pods:
            if p.ip:
                addr = ipaddress.ip_address(p.ip)
                self.pod_ip[p.key] = (addr.version, int(addr))

    # ---------------------------------------------------------------- subjects

    def governing(self, cls: PodClass, direction: str) -> list[NPTarget]:
        """NetworkPolicies that isolate the class for `direction` on either dataplane."""
        rep = cls.rep
        labels_n = self.engine.labels(rep, self.npm)
        labels_t = self.engine.labels(rep, self.target)
        return [
            t
            for t in self.np_by_ns.get(cls.namespace, ())
            if direction in t.isolates
            and (t.subject.matches(labels_n) or t.subject.matches(labels_t))
        ]

    def subject_probes(
        self, cls: PodClass, direction: str, governing: Sequence[NPTarget]
    ) -> list[Probe]:
        s = cls.rep
        group = cls.group()
        out: dict[tuple[str, str, int, Protocol], Probe] = {}

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
                out[key] = Probe(
                    traffic=Traffic(source=src, destination=dst, port=port, protocol=proto),
                    side=direction,
                    pods=group,
                    peer=peer.desc,
                    port=port,
                    port_label=f"{port}/{proto}",
                )

        extra: _PortList = []
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
                node_ports = _unique(
                    [*self.hostnet_ports.get(own.name, [])[:2], (KUBELET_PORT, Protocol.TCP)]
                )
                for port, proto in _unique([*node_ports, *extra])[:MAX_NODE_PORTS]:
                    add(peer, port, proto)
            for port, proto in _unique([(EXTERNAL_PORT, Protocol.TCP), *extra])[:MAX_NODE_PORTS]:
                add(outside, port, proto)
        else:
            mine = [(cp.port, cp.protocol) for cp in s.ports[:MAX_PORTS]] or [(80, Protocol.TCP)]
            for port, proto in _unique([*mine, *extra])[:MAX_NODE_PORTS]:
                add(outside, port, proto)
        return list(out.values())

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
        named = self._named(rule, direction)
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
            for name, proto in named:
                cp = c.rep.named_port(name, proto)
                key.append(None if cp is None else cp.port)
            groups[tuple(key)].append(c)
        out = []
        for members in groups.values():
            pods = [p for m in members[:2] for p in m.pods[:2]]
            out.append(
                Peer(
                    endpoint=PodEndpoint(pod=pods[0]),
                    desc=describe_pods([m.group() for m in members]),
                    pod=pods[0],
                    spare=pods[1] if len(pods) > 1 else None,
                )
            )
        return out

    def _selector_pods(
        self, t: NPTarget, peer: PolicyPeer, rule: NPRule, direction: str
    ) -> list[Peer]:
        key = (id(peer), id(rule), t.namespace)
        cached = self._selector_cache.get(key)
        if cached is None:
            cached = self._behaviour(self._matching(t, peer), rule, direction, peer)
            self._selector_cache[key] = cached
        return cached

    def _matching(self, t: NPTarget, peer: PolicyPeer) -> list[PodClass]:
        """The classes a selector peer matches on either dataplane."""
        key = (str(peer.namespace_selector), str(peer.pod_selector), t.namespace)
        cached = self._match_cache.get(key)
        if cached is not None:
            return cached
        if peer.namespace_selector is None:
            namespaces = [t.namespace]
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

    def pods_in(self, block: IPBlock) -> dict[PodClass, list[Pod]]:
        """The pods (by class) whose IP the block covers, `except` included."""
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
        inside: dict[PodClass, list[Pod]] = defaultdict(list)
        for c in self.classes.classes:
            for p in c.pods:
                addr = self.pod_ip.get(p.key)
                if addr is None or addr[0] != net.version or not lo <= addr[1] <= hi:
                    continue
                if not any(a <= addr[1] <= b for a, b in holes):
                    inside[c].append(p)
        self._inside_cache[key] = inside
        self._inside_by_id[id(block)] = (block, inside)
        return inside

    def _ipblock_pods(self, block: IPBlock, rule: NPRule, direction: str) -> list[Peer]:
        key = (id(block), id(rule))
        cached = self._ipblock_cache.get(key)
        if cached is not None:
            return cached
        inside = self.pods_in(block)
        named = self._named(rule, direction)
        groups: dict[tuple[int | None, ...], list[tuple[PodClass, list[Pod]]]] = defaultdict(list)
        for c, pods in inside.items():
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
                    desc=describe_pods([c.group(pods) for c, pods in members])
                    + f" (pod IPs in ipBlock {block})",
                    pod=inside_pods[0],
                    spare=inside_pods[1] if len(inside_pods) > 1 else None,
                )
            )
        self._ipblock_cache[key] = result
        return result

    def _ipblock_nodes(self, block: IPBlock, s: Pod) -> list[Peer]:
        out = []
        own_seen = other_seen = False
        for n in self.nodes:
            if not block.contains(ipaddress.ip_address(n.ip)):
                continue
            own = n.name == s.node_name
            if (own and own_seen) or (not own and other_seen):
                continue
            what = "own node" if own else "another node"
            out.append(
                Peer(
                    endpoint=NodeEndpoint(node=n),
                    desc=f"node {n.name} ({what}; node IP in ipBlock {block})",
                    node=n,
                )
            )
            own_seen = own_seen or own
            other_seen = other_seen or not own
        return out

    def _sample_outside(self, block: IPBlock) -> str | None:
        """An address inside the block (not excepted) that no pod, node or Service owns."""
        key = id(block)
        if key in self._sample_cache:
            return self._sample_cache[key]
        net = block.cidr
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        default = ipaddress.ip_address(DEFAULT_EXTERNAL_IP)
        if default.version == net.version:
            candidates.append(default)
        size = net.num_addresses
        first = net.network_address
        candidates += [first + min(1, size - 1), first + size // 2, first + max(0, size - 2)]
        for e in block.excepts:
            after = int(e.broadcast_address) + 1
            if after <= int(net.broadcast_address):
                candidates.append(ipaddress.ip_address(after))
        fallback: str | None = None
        chosen: str | None = None
        for c in candidates:
            if not block.contains(c) or str(c) in self.owned:
                continue
            if any(c in cidr for cidr in self.pod_cidrs if cidr.version == c.version):
                fallback = fallback or str(c)
                continue
            chosen = str(c)
            break
        result = chosen or fallback
        self._sample_cache[key] = result
        return result

    def _all_peers(self, rule: NPRule, direction: str, s: Pod) -> list[Peer]:
        """A rule without from/to: a pod (one per named-port behaviour), nodes, the outside."""
        named = self._named(rule, direction)
        key = (id(rule), s.namespace)
        pods = self._named_cache.get(key)
        if pods is None:
            if named:
                names = {n for n, _ in named}
                classes = [
                    c for c in self.classes.classes if any(cp.name in names for cp in c.rep.ports)
                ]
                other = next(
                    (c for c in self.classes.classes if c not in classes and c.rep.key != s.key),
                    None,
                )
                if other is not None:
                    classes.append(other)
            else:
                other = next(
                    (c for c in self.classes.classes if c.namespace != s.namespace),
                    next((c for c in self.classes.classes if c.rep.key != s.key), None),
                )
                classes = [other] if other is not None else []
            pods = self._behaviour(classes, rule, direction, None)
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

    # ---------------------------------------------------------------- ports

    def _ports(self, rule: NPRule, direction: str, s: Pod, peer: Peer) -> _PortList:
        dest_pod = s if direction == INGRESS else peer.pod
        if not rule.ports:
            return self._default_ports(direction, dest_pod, peer)
        out: _PortList = []
        for pp in rule.ports:
            proto = pp.protocol
            if pp.port is None:
                out.append((self._default_port(proto, dest_pod, peer), proto))
            elif isinstance(pp.port, int):
                if pp.end_port is None:
                    out.append((pp.port, proto))
                else:
                    lo, hi = pp.port, pp.end_port
                    out.extend(
                        (p, proto) for p in sorted({lo, min(lo + 1, hi), (lo + hi) // 2, hi})
                    )
            elif direction == INGRESS:
                cp = s.named_port(pp.port, proto)
                if cp is not None:
                    out.append((cp.port, proto))
            else:
                cp = peer.pod.named_port(pp.port, proto) if peer.pod is not None else None
                if cp is not None:
                    out.append((cp.port, proto))
                else:
                    numbers = sorted(
                        n
                        for n, pr in self.engine.named_ports.get(pp.port, frozenset())
                        if pr is proto
                    )
                    out.extend((n, proto) for n in numbers[:MAX_NAMED_NUMBERS])
        return _unique(out)

    def _default_ports(self, direction: str, dest_pod: Pod | None, peer: Peer) -> _PortList:
        if dest_pod is not None:
            return [(cp.port, cp.protocol) for cp in dest_pod.ports[:MAX_PORTS]] or [
                (80, Protocol.TCP)
            ]
        if peer.node is not None:
            return _unique(
                [*self.hostnet_ports.get(peer.node.name, [])[:2], (KUBELET_PORT, Protocol.TCP)]
            )
        return [(EXTERNAL_PORT, Protocol.TCP)]

    def _default_port(self, proto: Protocol, dest_pod: Pod | None, peer: Peer) -> int:
        if dest_pod is not None:
            for cp in dest_pod.ports:
                if cp.protocol is proto:
                    return cp.port
        if peer.node is not None:
            for port, pr in self.hostnet_ports.get(peer.node.name, []):
                if pr is proto:
                    return port
        return DEFAULT_PORT[proto]

    # ---------------------------------------------------------------- Services

    def service_probes(self, svc: Service) -> list[Probe]:
        if svc.type not in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER):
            return []
        via = Via.LOAD_BALANCER if svc.type is ServiceType.LOAD_BALANCER else Via.NODE_PORT
        by_class: dict[PodClass, dict[str, list[Pod]]] = defaultdict(lambda: defaultdict(list))
        for p in self.classes.pods_by_namespace.get(svc.namespace, []):
            if svc.selects(p) and p.node_name in self.node_by_name:
                by_class[self.classes.of_pod[p.key]][p.node_name].append(p)
        out: list[Probe] = []
        where = "LoadBalancer IP" if via is Via.LOAD_BALANCER else "NodePort"
        for sp in svc.ports:
            if via is Via.NODE_PORT and sp.node_port is None:
                continue
            for cls in sorted(by_class, key=lambda c: c.rep.key):
                nodes = by_class[cls]
                reps: list[tuple[Node, Pod, int, PodGroup]] = []
                for node_name in sorted(nodes):
                    pods = sorted(nodes[node_name], key=lambda p: p.key)
                    b = pods[0]
                    if isinstance(sp.target_port, int):
                        target_port: int | None = sp.target_port
                    else:
                        cp = b.named_port(sp.target_port, sp.protocol)
                        target_port = None if cp is None else cp.port
                    if target_port is not None:
                        reps.append((self.node_by_name[node_name], b, target_port, cls.group(pods)))
                for node, b, target_port, backend_group in reps:
                    label = f"{sp.port}/{sp.protocol} (targetPort {target_port})"
                    clients = [DEFAULT_EXTERNAL_IP, *self._client_samples(svc, b)]
                    other = self._other_node(node)
                    for recv, what in ((node, "the backend's node"), (other, "another node")):
                        if recv is None:
                            continue
                        dst = ServiceEndpoint(service=svc, via=via, node=recv, backend=b)
                        for ip in clients:
                            out.append(
                                Probe(
                                    traffic=Traffic(
                                        source=ExternalEndpoint(ip=ip),
                                        destination=dst,
                                        port=sp.port,
                                        protocol=sp.protocol,
                                    ),
                                    side=None,
                                    from_pods=False,
                                    pods=backend_group,
                                    peer=f"outside address {ip} through the {where} of "
                                    f"Service {svc.key}, received by node {recv.name} ({what})",
                                    port=target_port,
                                    port_label=label,
                                )
                            )
                out.extend(self._in_cluster_probes(svc, via, sp.port, sp.protocol, reps, where))
        return out

    def _in_cluster_probes(
        self,
        svc: Service,
        via: Via,
        port: int,
        protocol: Protocol,
        reps: Sequence[tuple[Node, Pod, int, PodGroup]],
        where: str,
    ) -> list[Probe]:
        """D5d: pods on a backend's node reaching the Service's external address.

        Under the target both sides are judged; a deny on either side decides. Client
        classes the backend's ingress policies see alike (the same peers match them) share
        the ingress side: the engine judges it once, through the first of them. Where it
        denies, that class stands for all of them; where it admits, the classes split again
        by the policies that isolate them for egress, one probe each.
        """
        if not reps:
            return []
        view = self._ingress_view(reps[0][1])
        by_ingress: dict[tuple[object, ...], list[_Client]] = {}
        for node, b, target_port, _ in reps:
            for klass, pods in self.on_node.get(node.name, {}).items():
                count = len(pods) - sum(1 for m in pods if m.key == b.key)
                if not count:
                    continue
                client = pods[0] if pods[0].key != b.key else pods[1]
                sig = self._client_signature(klass, view)
                by_ingress.setdefault(sig, []).append((client, b, node, target_port, klass, count))
        out: list[Probe] = []
        for members in by_ingress.values():
            members.sort(key=lambda m: m[0].key)
            c, b, node, target_port, cls, _ = members[0]
            dst = self._d5d_destination(svc, via, node, b)
            verdict = self.engine.evaluate(
                Traffic(source=PodEndpoint(pod=c), destination=dst, port=port, protocol=protocol),
                self.target,
            )
            if verdict.ingress is not None and verdict.ingress.decision is Decision.DENY:
                groups = [members]
            else:
                by_egress: dict[tuple[object, ...], list[_Client]] = {}
                for m in members:
                    by_egress.setdefault(self._egress_signature(m[4]), []).append(m)
                groups = list(by_egress.values())
            for group in groups:
                c, b, node, target_port, cls, _ = group[0]
                on_node = [m for m in self.on_node[node.name][cls] if m.key != b.key]
                others: dict[PodClass, int] = {}
                for m in group[1:]:
                    others[m[4]] = others.get(m[4], 0) + m[5]
                out.append(
                    Probe(
                        traffic=Traffic(
                            source=PodEndpoint(pod=c),
                            destination=self._d5d_destination(svc, via, node, b),
                            port=port,
                            protocol=protocol,
                        ),
                        side=None,
                        from_pods=True,
                        pods=cls.group(on_node),
                        stands_for=tuple(
                            k.group(self._on_backend_nodes(k, reps))
                            for k in list(others)[:MAX_STANDS_FOR]
                        ),
                        stands_for_pods=sum(others.values()),
                        stands_for_classes=len(others),
                        peer=f"the {where} of Service {svc.key} (a backend on the client's node)",
                        port=target_port,
                        port_label=f"{port}/{protocol} (targetPort {target_port})",
                    )
                )
        return out

    @staticmethod
    def _d5d_destination(svc: Service, via: Via, node: Node, backend: Pod) -> ServiceEndpoint:
        return ServiceEndpoint(
            service=svc,
            via=via,
            node=None if via is Via.LOAD_BALANCER else node,
            backend=backend,
        )

    def _on_backend_nodes(
        self, cls: PodClass, reps: Sequence[tuple[Node, Pod, int, PodGroup]]
    ) -> list[Pod]:
        nodes = {r[0].name for r in reps}
        backends = {r[1].key for r in reps}
        return [p for p in cls.pods if p.node_name in nodes and p.key not in backends]

    def _ingress_view(self, backend: Pod) -> _View:
        """What the backend's ingress policies can tell clients apart by."""
        npm_sel = self.engine.selecting(backend, INGRESS, self.npm)
        tgt_sel = self.engine.selecting(backend, INGRESS, self.target)
        key = (
            *(t.name for t in npm_sel[0]),
            *(c.name for c in npm_sel[1]),
            "|",
            *(t.name for t in tgt_sel[0]),
            *(c.name for c in tgt_sel[1]),
        )
        cached = self._views.get(key)
        if cached is not None:
            return cached
        peers: list[tuple[str, PolicyPeer]] = []
        blocks: list[IPBlock] = []
        selectors: list[LabelSelector] = []
        for t in {t.name: t for t in (*npm_sel[0], *tgt_sel[0])}.values():
            for rule in t.rules.get(INGRESS, ()):
                for pe in rule.peers:
                    if pe.ip_block is not None:
                        blocks.append(pe.ip_block)
                    else:
                        peers.append((t.namespace, pe))
        for c in tgt_sel[1]:
            for sels in c.endpoints.values():
                selectors.extend(sels)
            for _, crule in (*c.rules.get(INGRESS, ()), *c.deny_rules.get(INGRESS, ())):
                blocks.extend(crule.cidrs)
        view = _View(key=key, peers=tuple(peers), blocks=tuple(blocks), selectors=tuple(selectors))
        self._views[key] = view
        return view

    def _egress_signature(self, cls: PodClass) -> tuple[object, ...]:
        """The policies that isolate the class for egress, on each dataplane."""
        cached = self._egress_sigs.get(cls)
        if cached is None:
            sig: list[object] = []
            for dp in (self.npm, self.target):
                selected = self.engine.selecting(cls.rep, EGRESS, dp)
                nps, cts, notes = selected[0], selected[1], selected[2]
                sig.append(tuple(t.name for t in nps) + tuple(c.name for c in cts) + tuple(notes))
            cached = self._egress_sigs[cls] = tuple(sig)
        return cached

    def _client_signature(self, cls: PodClass, view: _View) -> tuple[object, ...]:
        """What the backend's ingress policies see of a client class."""
        cache_key = (view.key, cls)
        cached = self._signatures.get(cache_key)
        if cached is not None:
            return cached
        client = cls.rep
        sig: list[object] = []
        ns_labels = self.engine.namespace_labels(client.namespace)
        for home, pe in view.peers:
            pkey = (id(pe), home, cls)
            match = self._peer_match.get(pkey)
            if match is None:
                nsel = pe.namespace_selector
                n, t = (
                    (
                        client.namespace == home
                        if nsel is None
                        else ns_selector_matches(nsel, ns_labels, dp)
                    )
                    and (
                        pe.pod_selector is None
                        or pe.pod_selector.matches(self.engine.labels(client, dp))
                    )
                    for dp in (self.npm, self.target)
                )
                match = self._peer_match[pkey] = (n, t)
            sig.append(match)
        if view.selectors:
            clabels = self.engine.cilium_labels(client, self.target)
            sig.extend(sel.matches(clabels) for sel in view.selectors)
        if view.blocks:
            sig.extend(cls in self.pods_in(b) for b in view.blocks)
        result = tuple(sig)
        self._signatures[cache_key] = result
        return result

    def _client_samples(self, svc: Service, backend: Pod) -> list[str]:
        """Outside addresses inside the ipBlocks of the ingress rules that govern the backend."""
        labels = self.engine.labels(backend, self.npm)
        out: list[str] = []
        for t in self.np_by_ns.get(svc.namespace, ()):
            if INGRESS not in t.isolates or not t.subject.matches(labels):
                continue
            for rule in t.rules.get(INGRESS, ()):
                for peer in rule.peers:
                    if peer.ip_block is not None:
                        ip = self._sample_outside(peer.ip_block)
                        if ip is not None and ip not in out and ip != DEFAULT_EXTERNAL_IP:
                            out.append(ip)
        return out


def ns_selector_matches(sel: LabelSelector, labels: Mapping[str, str], dp: Dataplane) -> bool:
    """A namespaceSelector as `dp` reads it (D19: NPM ORs each value of a multi-value
    In/NotIn, engine.matcher.peer.flatten)."""
    if dp.ns_selector_flattened:
        return any(f.matches(labels) for f in flatten(sel))
    return sel.matches(labels)


def _unique(ports: Iterable[tuple[int, Protocol]]) -> _PortList:
    out: _PortList = []
    for p in ports:
        if p not in out:
            out.append(p)
    return out
