"""The connections each NodePort/LoadBalancer Service governs (D5, D5d).

The outside clients through each backend's node and another node, and the pods that share
a backend's node reaching the Service's external address (the in-cluster LoadBalancer
path). Client classes a backend's ingress policies see alike are judged once.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from netparity.engine.compile import EGRESS, INGRESS
from netparity.engine.matcher.peer import ns_selector_matches
from netparity.engine.traffic import (
    DEFAULT_EXTERNAL_IP,
    Decision,
    ExternalEndpoint,
    PodEndpoint,
    ServiceEndpoint,
    Traffic,
    Verdict,
    Via,
)
from netparity.model.networkpolicy import IPBlock, PolicyPeer
from netparity.model.objects import Node, Pod, Protocol, Service, ServiceType
from netparity.model.selectors import LabelSelector
from netparity.plan.classes import PodClass
from netparity.plan.connection import Connection
from netparity.plan.governed import (
    GovernedTraffic,
    isolates,
)
from netparity.plan.governed_clients import (
    BulkGroup,
    ListGroup,
    NodeBulk,
    Signature,
    group_clients,
)
from netparity.plan.groups import PodGroup

# how a selector peer matches a class (under npm, under the target): one object each
_PAIRS = {(n, t): (n, t) for n in (False, True) for t in (False, True)}
_BOTH, _NEITHER = _PAIRS[True, True], _PAIRS[False, False]
MAX_STANDS_FOR = 20  # client classes named with a representative (the rest are counted)


@dataclass(frozen=True, slots=True, kw_only=True)
class _View:
    """What a backend's ingress policies can tell in-cluster clients apart by."""

    key: tuple[str, ...]
    peers: tuple[tuple[str, PolicyPeer], ...]  # (policy namespace, selector peer)
    blocks: tuple[IPBlock, ...]
    selectors: tuple[LabelSelector, ...]  # Cilium endpoint selectors (identity labels)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Caches:
    # per (selector peer, its policy's namespace): the classes it matches, and how
    peer_hits: dict[tuple[int, str], tuple[list[PodClass], dict[str, tuple[bool, bool]]]] = field(
        default_factory=dict
    )
    peer_values: dict[tuple[str, str, str], tuple[list[PodClass], dict[str, tuple[bool, bool]]]] = (
        field(default_factory=dict)
    )
    views: dict[tuple[str, ...], _View] = field(default_factory=dict)
    # per candidate list (by id, the list kept): its classes' names (`_peer_lookup`)
    candidate_names: dict[int, tuple[list[PodClass], frozenset[str]]] = field(default_factory=dict)
    # per view key, per class name: what the view sees of the class (`_signatures`)
    signatures: dict[tuple[str, ...], dict[str, tuple[object, ...]]] = field(default_factory=dict)
    egress_sigs: dict[str, tuple[object, ...]] = field(default_factory=dict)
    on_node_entries: dict[str, list[tuple[str, list[Pod], PodClass]]] = field(default_factory=dict)
    node_bulks: dict[str, NodeBulk] = field(default_factory=dict)
    # per list of nodes (their NodeBulks, by identity: kept in node_bulks): class names
    names_on: dict[tuple[int, ...], dict[str, None]] = field(default_factory=dict)
    stand_ins: dict[tuple[str, frozenset[str], frozenset[str]], PodGroup] = field(
        default_factory=dict
    )


class ServiceTraffic(GovernedTraffic):
    """Adds the connections through NodePort/LoadBalancer Services."""

    # the client classes a connection names with a representative (the rest are counted):
    # fewer where a report shows fewer (the lint's text and JUnit reports)
    stands_for_cap = MAX_STANDS_FOR

    @cached_property
    def on_node(self) -> dict[str, dict[str, list[Pod]]]:
        """Per node, per class name, the class's pods there (by key)."""
        out: dict[str, dict[str, list[Pod]]] = defaultdict(lambda: defaultdict(list))
        for c in self.classes.classes:
            for p in self.classes.members[c.name]:
                if p.node_name:
                    out[p.node_name][c.name].append(p)
        return out

    def _node_bulk(self, node: str) -> NodeBulk:
        """The classes on `node`, sorted and counted once (governed_clients.py)."""
        bulk = self._caches.node_bulks.get(node)
        if bulk is None:
            bulk = self._caches.node_bulks[node] = NodeBulk.of(self._on_node_entries(node))
        return bulk

    def _on_node_entries(self, node: str) -> list[tuple[str, list[Pod], PodClass]]:
        """`on_node[node]` as (class name, its pods there, the class), listed once."""
        entries = self._caches.on_node_entries.get(node)
        if entries is None:
            by_name = self.classes.by_name
            entries = [(n, pods, by_name[n]) for n, pods in self.on_node.get(node, {}).items()]
            self._caches.on_node_entries[node] = entries
        return entries

    @cached_property
    def _caches(self) -> _Caches:
        return _Caches()

    @cached_property
    def judged(self) -> dict[int, tuple[Connection, Verdict]]:
        """The target's verdict on some of the last Service's connections, by the
        connection's id: an in-cluster client group's first, judged to split the group,
        need not be judged again (the lint's `observe`)."""
        return {}

    def service_connections(self, svc: Service) -> list[Connection]:
        self.judged.clear()
        if svc.type not in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER):
            return []
        via = Via.LOAD_BALANCER if svc.type is ServiceType.LOAD_BALANCER else Via.NODE_PORT
        self._caches.stand_ins.clear()  # kept for this Service's ports only
        by_class: dict[str, dict[str, list[Pod]]] = defaultdict(lambda: defaultdict(list))
        for p in self.classes.pods_by_namespace.get(svc.namespace, []):
            if svc.selects(p) and p.node_name in self.node_by_name:
                by_class[self.classes.of_pod[p.key].name][p.node_name].append(p)
        out: list[Connection] = []
        where = "LoadBalancer IP" if via is Via.LOAD_BALANCER else "NodePort"
        for sp in svc.ports:
            if via is Via.NODE_PORT and sp.node_port is None:
                continue
            for cls in sorted((self.classes.by_name[n] for n in by_class), key=lambda c: c.rep.key):
                nodes = by_class[cls.name]
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
                        reps.append(
                            (
                                self.node_by_name[node_name],
                                b,
                                target_port,
                                self.classes.group(cls, pods),
                            )
                        )
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
                                Connection(
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
    ) -> list[Connection]:
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
        nodes = [self._node_bulk(r[0].name) for r in reps]
        own = self.classes.of_pod[reps[0][1].key].name  # the backends' class: less the backend
        groups = group_clients(reps, nodes, self._signatures_on(view, nodes), own)
        out: list[Connection] = []
        cap = self.stands_for_cap
        rep_nodes = frozenset(r[0].name for r in reps)
        rep_backends = frozenset(r[1].key for r in reps)
        for members in groups:
            first = members.first()
            assert first is not None  # a group is listed where it has a member
            c, b, node, target_port, cls, _ = first
            dst = self._d5d_destination(svc, via, node, b)
            verdict = self.engine.evaluate(
                Traffic(source=PodEndpoint(pod=c), destination=dst, port=port, protocol=protocol),
                self.target,
            )
            split: Sequence[ListGroup | BulkGroup] = [members]
            if verdict.ingress is None or verdict.ingress.decision is not Decision.DENY:
                split = members.split(self._egress_signature)
            judged = (c, b, node)  # the connection whose verdict is known
            for group in split:
                first = group.first()
                assert first is not None
                c, b, node, target_port, cls, count = first
                same = judged[0] is c and judged[1] is b and judged[2] is node
                on_node = [m for m in self.on_node[node.name][cls.name] if m.key != b.key]
                others: dict[str, None] = {}
                for m in itertools.islice(group.members(), 1, None):
                    if len(others) >= cap:
                        break
                    others[m[4].name] = None
                conn = Connection(
                    traffic=Traffic(
                        source=PodEndpoint(pod=c),
                        destination=dst if same else self._d5d_destination(svc, via, node, b),
                        port=port,
                        protocol=protocol,
                    ),
                    side=None,
                    from_pods=True,
                    pods=self.classes.group(cls, on_node),
                    stands_for=tuple(
                        self._stand_in(self.classes.by_name[k], rep_nodes, rep_backends)
                        for k in others
                    ),
                    stands_for_pods=group.pods - count,
                    stands_for_classes=group.distinct - (group.occurrences(cls.name) == 1),
                    peer=f"the {where} of Service {svc.key} (a backend on the client's node)",
                    port=target_port,
                    port_label=f"{port}/{protocol} (targetPort {target_port})",
                )
                out.append(conn)
                if same:  # the target's verdict on it, for the lint (`judged`)
                    self.judged[id(conn)] = (conn, verdict)
        return out

    @staticmethod
    def _d5d_destination(svc: Service, via: Via, node: Node, backend: Pod) -> ServiceEndpoint:
        return ServiceEndpoint(
            service=svc,
            via=via,
            node=None if via is Via.LOAD_BALANCER else node,
            backend=backend,
        )

    def _stand_in(self, cls: PodClass, nodes: frozenset[str], backends: frozenset[str]) -> PodGroup:
        """The pods of `cls` on the backends' nodes (not a backend), as a reader sees them
        (kept while the Service's other ports ask again)."""
        key = (cls.name, nodes, backends)
        cached = self._caches.stand_ins.get(key)
        if cached is None:
            members = self.classes.members[cls.name]  # by key
            pods = [p for p in members if p.node_name in nodes and p.key not in backends]
            cached = self.classes.group(cls, pods)
            self._caches.stand_ins[key] = cached
        return cached

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
        cached = self._caches.views.get(key)
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
        self._caches.views[key] = view
        return view

    def _egress_signature(self, cls: PodClass) -> tuple[object, ...]:
        """The policies that isolate the class for egress, on each dataplane."""
        cached = self._caches.egress_sigs.get(cls.name)
        if cached is None:
            sig: list[object] = []
            for dp in (self.npm, self.target):
                selected = self.engine.selecting(cls.rep, EGRESS, dp)
                nps, cts, notes = selected[0], selected[1], selected[2]
                sig.append(tuple(t.name for t in nps) + tuple(c.name for c in cts) + tuple(notes))
            cached = self._caches.egress_sigs[cls.name] = tuple(sig)
        return cached

    def _signatures(self, view: _View) -> dict[str, tuple[object, ...]]:
        """What the view sees of each class it sees anything of, by class name: the peers
        (by position) that match it on either dataplane and how, the Cilium selectors and
        the ipBlocks that hold it, in that order. A class missing here is seen as nothing
        (the empty signature). Built once per view from each peer's matching classes
        (issue 19: never every class against every peer of every view)."""
        cached = self._caches.signatures.get(view.key)
        if cached is not None:
            return cached
        seen: dict[str, list[object]] = defaultdict(list)
        for i, (home, pe) in enumerate(view.peers):
            # the classes the peer matches and how (a loop of its own: millions of classes
            # over a large cluster's views), each (position, how) made once per peer
            candidates, odd = self._peer_entry(home, pe)
            hits = {m: (i, m) for m in _PAIRS.values()}
            both = hits[_BOTH]
            if not odd:
                for cls in candidates:
                    seen[cls.name].append(both)
                continue
            for cls in candidates:
                match = odd.get(cls.name, _BOTH)
                if match is not _NEITHER:
                    seen[cls.name].append(hits[match])
        if view.selectors:
            for c in self.classes.classes:
                clabels = self.engine.cilium_labels(c.rep, self.target)
                for j, sel in enumerate(view.selectors):
                    if sel.matches(clabels):
                        seen[c.name].append(("selector", j))
        for k, block in enumerate(view.blocks):
            for name in self.pods_in(block):
                seen[name].append(("block", k))
        if len(self._caches.signatures) >= 8:  # views rarely come again: keep a few
            self._caches.signatures.clear()
        cached = self._caches.signatures[view.key] = {n: tuple(v) for n, v in seen.items()}
        return cached

    def _signatures_on(self, view: _View, nodes: Sequence[NodeBulk]) -> Mapping[str, Signature]:
        """`_signatures(view)` for the classes on `nodes` only (all a Service port's clients
        are there): worked out class by class where that is less work than walking every
        class each peer matches (issue 19: at 100 pods a node, a Service's clients are a few
        hundred of 20,000 classes). The same signatures, in the same order."""
        names = self._names_on(nodes)
        lookups = [self._peer_lookup(home, pe) for home, pe in view.peers]
        walk = sum(len(cands) for cands, _ in lookups)
        if view.selectors:
            walk += len(self.classes.classes)
        if walk <= len(names) * (len(lookups) + 1):
            return self._signatures(view)
        by_name = self.classes.by_name
        insides = [self.pods_in(block) for block in view.blocks]
        out: dict[str, Signature] = {}
        for name in names:
            sig: list[object] = []
            for i, (cands, odd) in enumerate(lookups):
                if name in cands:
                    match = odd.get(name, _BOTH)
                    if match is not _NEITHER:
                        sig.append((i, match))
            if view.selectors:
                clabels = self.engine.cilium_labels(by_name[name].rep, self.target)
                sig.extend(
                    ("selector", j) for j, sel in enumerate(view.selectors) if sel.matches(clabels)
                )
            sig.extend(("block", k) for k, inside in enumerate(insides) if name in inside)
            if sig:
                out[name] = tuple(sig)
        return out

    def _names_on(self, nodes: Sequence[NodeBulk]) -> dict[str, None]:
        """The names of the classes on `nodes`, in order (kept per set of nodes: a
        Service's backends are often on the same nodes as another's)."""
        key = tuple(id(n) for n in nodes)
        cached = self._caches.names_on.get(key)
        if cached is None:
            cached = dict.fromkeys(e[0] for n in nodes for e in n.entries)
            if len(self._caches.names_on) >= 8:
                self._caches.names_on.clear()
            self._caches.names_on[key] = cached
        return cached

    def _peer_lookup(
        self, home: str, pe: PolicyPeer
    ) -> tuple[frozenset[str], dict[str, tuple[bool, bool]]]:
        """`_peer_entry` to look a class up in: the candidates' names (one set per
        candidate list, which peers with the same selectors share) and how the odd ones
        match."""
        candidates, odd = self._peer_entry(home, pe)
        names = self._caches.candidate_names.get(id(candidates))
        if names is None or names[0] is not candidates:
            names = (candidates, frozenset(c.name for c in candidates))
            self._caches.candidate_names[id(candidates)] = names
        return names[1], odd

    def _peer_entry(
        self, home: str, pe: PolicyPeer
    ) -> tuple[list[PodClass], dict[str, tuple[bool, bool]]]:
        """A selector peer of a policy in `home`: the classes it may match (shared with the
        enumerator) and, for those it does not match on both dataplanes, how it does:
        (under npm, under the target), (False, False) where on neither. Worked out once per
        peer (by identity) and shared by equal peers (by value: the policies of many
        namespaces name the same peers)."""
        key = (id(pe), home)
        cached = self._caches.peer_hits.get(key)
        if cached is None:
            nsel = pe.namespace_selector
            value = (str(nsel), str(pe.pod_selector), home if nsel is None else "")
            cached = self._caches.peer_values.get(value)
        if cached is None:
            candidates = self.matching(home, pe)
            odd: dict[str, tuple[bool, bool]] = {}
            nsel = pe.namespace_selector
            for cls in candidates:
                client = cls.rep
                ns_labels = self.engine.namespace_labels(client.namespace)
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
                if not (n and t):
                    odd[cls.name] = _PAIRS[bool(n), bool(t)]
            cached = self._caches.peer_values[value] = (candidates, odd)
        self._caches.peer_hits[key] = cached
        return cached

    def _client_samples(self, svc: Service, backend: Pod) -> list[str]:
        """Outside addresses inside the ipBlocks of the ingress rules that govern the backend."""
        labels = self.engine.labels(backend, self.npm)
        out: list[str] = []
        for t in self.np_by_ns.get(svc.namespace, ()):
            # D23: the target may isolate by rules outside policyTypes
            if not isolates(t, INGRESS, self.target) or not t.subject.matches(labels):
                continue
            for rule in t.rules.get(INGRESS, ()):
                for peer in rule.peers:
                    if peer.ip_block is not None:
                        ip = self._sample_outside(peer.ip_block)
                        if ip is not None and ip not in out and ip != DEFAULT_EXTERNAL_IP:
                            out.append(ip)
        return out
