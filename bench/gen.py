"""A deterministic generator of large AKS-like snapshots for benchmarks.

`generate(pods=5000, namespaces=100, policies=1000, nodes=20, seed=1)` returns wire dicts
(what `kubectl get -o yaml` lists hold): namespaces, nodes, pods (Deployments and
StatefulSets, a hostNetwork DaemonSet, CoreDNS), Services (ClusterIP, NodePort and
LoadBalancer with both traffic policies) and NetworkPolicies plus a few
CiliumNetworkPolicies. The policies mix every selector form (matchLabels, every
matchExpressions operator, namespaceSelector alone and with podSelector, empty
selectors, ipBlock with except) and every port form (number, name, range, UDP, SCTP,
none), and hold the guide's five scenarios (endPort, ipBlock over pods and nodes, a
conflicting named port, restricted egress, ingress-restricted pods behind NodePort and
LoadBalancer Services) plus D6 (a StatefulSet pod-name selector) and D11 (an IPv6 ipBlock).

    python bench/gen.py --pods 5000 --namespaces 100 --policies 1000 --nodes 20 -o big.yaml
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import random
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

TEAMS = (
    "payments",
    "search",
    "identity",
    "catalog",
    "orders",
    "data",
    "ml",
    "platform",
    "mobile",
    "ads",
    "media",
    "support",
)
ENVS = ("prod", "staging", "dev")
KINDS = ("frontend", "api", "worker", "db", "cache", "gateway", "exporter", "legacy", "stream")
NODE_SUBNET = ipaddress.IPv4Network("10.224.0.0/16")
POD_SPACE = ipaddress.IPv4Network("10.244.0.0/14")
PER_NODE_PREFIX = 20  # each node's podCIDR: a /20 (4094 pods) out of POD_SPACE
# more than 50 nodes (a realistic density: AKS allows 250 pods a node): a /23 each (508 pods)
MANY_NODES_PREFIX = 23
Doc = dict[str, Any]


@dataclass(slots=True)
class _App:
    namespace: str
    name: str
    kind: str
    labels: dict[str, str]
    ports: list[tuple[str | None, int, str]]
    stateful: bool = False
    pods: list[str] = field(default_factory=list)  # pod names


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


def _ports(kind: str, rng: random.Random) -> list[tuple[str | None, int, str]]:
    if kind == "frontend":
        return [("http", 8080, "TCP"), ("metrics", 9090, "TCP")]
    if kind == "api":
        return [("http", 8080, "TCP"), ("grpc", 9443, "TCP"), ("metrics", 9090, "TCP")]
    if kind == "worker":
        return [("metrics", 9100, "TCP")]  # "metrics" means another number here (D3)
    if kind == "db":
        return [("postgres", 5432, "TCP"), ("metrics", 9187, "TCP")]
    if kind == "cache":
        return [("redis", 6379, "TCP")]
    if kind == "gateway":
        return [("http", 8080, "TCP"), ("sctp", 9999, "SCTP"), ("mdns", 5353, "UDP")]
    if kind == "exporter":
        return [("http", 8080, "TCP")] + [(None, p, "TCP") for p in (9000, 9003, 9005, 9006)]
    if kind == "legacy":
        return [("http", 8000, "TCP")]  # the same name, another number (D3)
    return [("http", 8080, "TCP"), ("stream", 7000, "UDP")]


def _meta(kind: str, name: str, namespace: str | None = None, **extra: Any) -> Doc:
    meta: Doc = {"name": name, **extra}
    if namespace is not None:
        meta["namespace"] = namespace
    api = {"NetworkPolicy": "networking.k8s.io/v1", "CiliumNetworkPolicy": "cilium.io/v2"}
    return {"apiVersion": api.get(kind, "v1"), "kind": kind, "metadata": meta}


def _netpol(namespace: str, name: str, spec: Doc) -> Doc:
    return {**_meta("NetworkPolicy", name, namespace), "spec": spec}


def _sel(**labels: str) -> Doc:
    return {"matchLabels": dict(labels)}


def generate(
    pods: int = 5000,
    namespaces: int = 100,
    policies: int = 1000,
    nodes: int = 20,
    seed: int = 1,
    *,
    service_cidr: str | None = None,
    vnet_egress: int = 0,
) -> list[Doc]:
    """Wire dicts of one cluster; the same arguments always give the same dicts.

    `service_cidr` (AKS's default is 10.0.0.0/16) gives every Service a ClusterIP from that
    range, as the API server does, and adds `default/kubernetes` (its first address) and
    `kube-system/kube-dns` (its tenth, AKS's dnsServiceIP). `vnet_egress` adds that many
    egress policies to `ipBlock: 10.0.0.0/8` (the VNet, as many teams write them) plus DNS.
    Without them the output is what it always was."""
    if not 3 <= nodes <= 512:
        raise ValueError("nodes must be between 3 and 512")
    if namespaces < 2 or pods < namespaces + nodes + 2:
        raise ValueError("too few pods for the namespaces and nodes asked for")
    rng = random.Random(seed)
    docs: list[Doc] = []
    # ------------------------------------------------------------------ nodes
    node_names = [f"aks-nodepool1-{i:02d}" for i in range(nodes)]
    node_ips = [str(NODE_SUBNET.network_address + 4 + i) for i in range(nodes)]
    prefix = PER_NODE_PREFIX if nodes <= 50 else MANY_NODES_PREFIX  # <= 50: as it always was
    cidrs = list(POD_SPACE.subnets(new_prefix=prefix))[:nodes]
    next_ip = [int(c.network_address) + 4 for c in cidrs]
    for name, ip, cidr in zip(node_names, node_ips, cidrs, strict=True):
        docs.append(
            {
                **_meta("Node", name, labels={"kubernetes.io/os": "linux", "agentpool": "np1"}),
                "spec": {"podCIDR": str(cidr)},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
            }
        )
    # ------------------------------------------------------------------ namespaces
    ns_names = ["kube-system"] + [f"team-{i:03d}" for i in range(1, namespaces)]
    ns_team = {n: TEAMS[i % len(TEAMS)] for i, n in enumerate(ns_names)}
    ns_env = {n: ENVS[i % len(ENVS)] for i, n in enumerate(ns_names)}
    for n in ns_names:
        labels = {"kubernetes.io/metadata.name": n}
        if n != "kube-system":
            labels |= {"team": ns_team[n], "env": ns_env[n]}
            if rng.random() < 0.2:
                labels["monitoring"] = "enabled"
        docs.append(_meta("Namespace", n, labels=labels))
    # ------------------------------------------------------------------ pods
    pod_docs: list[Doc] = []

    def add_pod(app: _App, name: str, node: int, extra: dict[str, str], host: bool = False) -> None:
        if host:
            ip = node_ips[node]
        else:
            ip = str(ipaddress.IPv4Address(next_ip[node]))
            next_ip[node] += 1
            if next_ip[node] > int(cidrs[node].broadcast_address):
                raise ValueError(f"too many pods for node {node_names[node]}'s {cidrs[node]}")
        ports = [
            {k: v for k, v in (("name", pn), ("containerPort", pp), ("protocol", pr)) if v}
            for pn, pp, pr in app.ports
        ]
        pod_docs.append(
            {
                **_meta("Pod", name, app.namespace, labels={**app.labels, **extra}),
                "spec": {
                    "nodeName": node_names[node],
                    "hostNetwork": host,
                    "containers": [{"name": app.kind, "image": "app:1", "ports": ports}],
                },
                "status": {"phase": "Running", "podIP": ip},
            }
        )
        app.pods.append(name)

    hostnet = _App(
        "kube-system", "hostnet", "hostnet", {"app": "hostnet"}, [("hostnet", 18080, "TCP")]
    )
    for i in range(nodes):
        add_pod(
            hostnet, f"hostnet-{_hex(rng, 5)}", i, {"controller-revision-hash": "7d9f"}, host=True
        )
    dns = _App(
        "kube-system",
        "coredns",
        "dns",
        {"k8s-app": "kube-dns", "pod-template-hash": _hex(rng, 10)},
        [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")],
    )
    for i in range(2):
        add_pod(dns, f"coredns-{_hex(rng, 5)}", i % nodes, {})
    apps: dict[str, list[_App]] = {n: [] for n in ns_names[1:]}
    remaining = pods - len(pod_docs)
    per_ns = [remaining // (namespaces - 1)] * (namespaces - 1)
    for i in range(remaining - sum(per_ns)):
        per_ns[i] += 1
    for ns, budget in zip(ns_names[1:], per_ns, strict=True):
        k = 0
        while budget > 0:
            kind = KINDS[(k + rng.randrange(len(KINDS))) % len(KINDS)] if k else "frontend"
            replicas = min(budget, rng.randint(1, 8))
            name = f"{kind}-{k}"
            labels = {"app": name, "tier": {"frontend": "web", "db": "data"}.get(kind, "backend")}
            if rng.random() < 0.3:
                labels["version"] = rng.choice(("v1", "v2"))
            if kind == "exporter":
                labels["role"] = "exporter"
            if kind == "legacy":
                labels["legacy"] = "true"
            if rng.random() < 0.25:
                labels["monitoring"] = "scrape"
            app = _App(ns, name, kind, labels, _ports(kind, rng), stateful=kind == "db")
            apps[ns].append(app)
            template = _hex(rng, 10)
            for r in range(replicas):
                node = rng.randrange(nodes)
                if app.stateful:
                    extra = {
                        "statefulset.kubernetes.io/pod-name": f"{name}-{r}",
                        "controller-revision-hash": f"{name}-{template[:6]}",
                    }
                    add_pod(app, f"{name}-{r}", node, extra)
                else:
                    add_pod(
                        app,
                        f"{name}-{template}-{_hex(rng, 5)}",
                        node,
                        {"pod-template-hash": template},
                    )
            budget -= replicas
            k += 1
    docs.extend(pod_docs)
    # ------------------------------------------------------------------ services
    # 240 documentation addresses, then the benchmarking range (50,000 pods need more)
    lb_ips = itertools.chain(
        (str(ipaddress.IPv4Address("192.0.2.10") + i) for i in range(240)),
        (str(ipaddress.IPv4Address("198.18.0.10") + i) for i in range(130_000)),
    )
    node_port = 30000
    for ns in ns_names[1:]:
        for app in apps[ns]:
            first = app.ports[0]
            spec: Doc = {
                "type": "ClusterIP",
                "selector": {"app": app.name},
                "ports": [
                    {
                        "name": first[0] or "p",
                        "port": 80,
                        "targetPort": first[0] or first[1],
                        "protocol": first[2],
                    }
                ],
            }
            status: Doc = {}
            roll = rng.random()
            if app.kind in ("frontend", "gateway") and roll < 0.25:
                spec["type"] = "LoadBalancer" if roll < 0.12 else "NodePort"
                spec["externalTrafficPolicy"] = "Local" if roll < 0.06 else "Cluster"
                spec["ports"][0]["nodePort"] = node_port
                node_port += 1
                if spec["type"] == "LoadBalancer":
                    status = {"loadBalancer": {"ingress": [{"ip": next(lb_ips)}]}}
            docs.append({**_meta("Service", app.name, ns), "spec": spec, "status": status})
    if service_cidr is not None:
        _cluster_ips(docs, ipaddress.IPv4Network(service_cidr), rng)
    # ------------------------------------------------------------------ policies
    cnp_count = max(1, policies // 50)
    np_count = policies - cnp_count
    docs.extend(_policies(rng, np_count, ns_names[1:], apps, ns_team, cidrs))
    docs.extend(_cilium_policies(rng, cnp_count, ns_names[1:], apps))
    for i in range(vnet_egress):
        ns = ns_names[1 + i % (namespaces - 1)]
        app = apps[ns][i // (namespaces - 1) % len(apps[ns])]
        docs.append(
            _netpol(
                ns,
                f"vnet-egress-{i}",
                {
                    "podSelector": _sel(app=app.name),
                    "policyTypes": ["Egress"],
                    "egress": [
                        {
                            "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                            "ports": [{"port": 443, "protocol": "TCP"}],
                        },
                        {
                            "to": [
                                {
                                    "namespaceSelector": _sel(
                                        **{"kubernetes.io/metadata.name": "kube-system"}
                                    ),
                                    "podSelector": _sel(**{"k8s-app": "kube-dns"}),
                                }
                            ],
                            "ports": [
                                {"port": 53, "protocol": "UDP"},
                                {"port": 53, "protocol": "TCP"},
                            ],
                        },
                    ],
                },
            )
        )
    return docs


def _cluster_ips(docs: list[Doc], cidr: ipaddress.IPv4Network, rng: random.Random) -> None:
    """ClusterIPs from `cidr` for every Service (random, as the API server allocates), plus
    `default/kubernetes` on the first address and `kube-system/kube-dns` on the tenth."""
    base = int(cidr.network_address)
    docs.append(
        {
            **_meta("Service", "kubernetes", "default", labels={"component": "apiserver"}),
            "spec": {
                "type": "ClusterIP",
                "clusterIP": str(ipaddress.IPv4Address(base + 1)),
                "ports": [{"name": "https", "port": 443, "targetPort": 443, "protocol": "TCP"}],
            },
        }
    )
    docs.append(
        {
            **_meta("Service", "kube-dns", "kube-system", labels={"k8s-app": "kube-dns"}),
            "spec": {
                "type": "ClusterIP",
                "clusterIP": str(ipaddress.IPv4Address(base + 10)),
                "selector": {"k8s-app": "kube-dns"},
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"},
                ],
            },
        }
    )
    taken = {base + 1, base + 10}
    for doc in docs:
        if doc["kind"] != "Service" or "clusterIP" in doc["spec"]:
            continue
        while True:
            ip = base + rng.randrange(11, cidr.num_addresses - 1)
            if ip not in taken:
                break
        taken.add(ip)
        doc["spec"]["clusterIP"] = str(ipaddress.IPv4Address(ip))


def _two(rng: random.Random, apps: list[_App]) -> tuple[_App, _App]:
    """Two apps of a namespace, distinct where it has two (a pod cannot probe itself)."""
    a = apps[rng.randrange(len(apps))]
    others = [x for x in apps if x is not a]
    return a, (others[rng.randrange(len(others))] if others else a)


def _policies(
    rng: random.Random,
    count: int,
    namespaces: list[str],
    apps: dict[str, list[_App]],
    ns_team: dict[str, str],
    cidrs: list[ipaddress.IPv4Network],
) -> list[Doc]:
    out: list[Doc] = []
    dns_peer = {
        "namespaceSelector": _sel(**{"kubernetes.io/metadata.name": "kube-system"}),
        "podSelector": _sel(**{"k8s-app": "kube-dns"}),
    }
    dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    forms = [
        "deny-ingress",
        "allow-same-ns",
        "allow-team",
        "allow-ns-only",
        "expressions",
        "named-ingress",
        "named-egress",
        "range",
        "egress-range",
        "ipblock-egress",
        "ipblock-pods",
        "ipblock-nodes",
        "partner",
        "ports-only",
        "sctp",
        "deny-egress",
        "monitoring",
        "statefulset",
        "allow-all",
        "ipv6",
    ]
    i = 0
    while len(out) < count:
        form = forms[i % len(forms)]
        if form == "ipv6" and i // len(forms) % 20:
            form = "allow-same-ns"  # D11 is rare
        ns = namespaces[(i * 7 + i // len(namespaces)) % len(namespaces)]
        local = apps[ns]
        a, b = _two(rng, local)
        name = f"{form}-{i}"
        i += 1
        if form == "deny-ingress":
            out.append(_netpol(ns, name, {"podSelector": {}, "policyTypes": ["Ingress"]}))
        elif form == "deny-egress":
            out.append(_netpol(ns, name, {"podSelector": {}, "policyTypes": ["Egress"]}))
            out.append(
                _netpol(
                    ns,
                    f"allow-dns-{i}",
                    {
                        "podSelector": {},
                        "policyTypes": ["Egress"],
                        "egress": [{"to": [dns_peer], "ports": dns_ports}],
                    },
                )
            )
        elif form == "allow-same-ns":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "ingress": [
                            {
                                "from": [{"podSelector": _sel(app=b.name)}],
                                "ports": [{"port": a.ports[0][1], "protocol": a.ports[0][2]}],
                            }
                        ],
                    },
                )
            )
        elif form == "allow-team":
            other = namespaces[rng.randrange(len(namespaces))]
            peer_app = apps[other][rng.randrange(len(apps[other]))]
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": _sel(team=ns_team[other]),
                                        "podSelector": _sel(tier=peer_app.labels["tier"]),
                                    }
                                ]
                            }
                        ],
                    },
                )
            )
        elif form == "allow-ns-only":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": {
                            "matchExpressions": [
                                {"key": "tier", "operator": "In", "values": ["web", "backend"]}
                            ]
                        },
                        "ingress": [
                            {
                                "from": [{"namespaceSelector": _sel(env=rng.choice(ENVS))}],
                                "ports": [{"port": 8080}],
                            }
                        ],
                    },
                )
            )
        elif form == "expressions":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": {
                            "matchExpressions": [
                                {"key": "app", "operator": "NotIn", "values": [b.name]},
                                {"key": "legacy", "operator": "DoesNotExist"},
                            ]
                        },
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {},
                                        "podSelector": {
                                            "matchExpressions": [
                                                {"key": "monitoring", "operator": "Exists"}
                                            ]
                                        },
                                    }
                                ],
                                "ports": [{"port": "metrics"}],
                            }
                        ],
                    },
                )
            )
        elif form == "named-ingress":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(tier="web"),
                        "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "http"}]}],
                    },
                )
            )
        elif form == "named-egress":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "policyTypes": ["Egress"],
                        "egress": [
                            {"ports": [{"port": "http", "protocol": "TCP"}]},
                            {"to": [dns_peer], "ports": dns_ports},
                        ],
                    },
                )
            )
        elif form == "range":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "ingress": [
                            {
                                "from": [{"podSelector": _sel(app=b.name)}],
                                "ports": [{"port": 9000, "endPort": 9005}],
                            }
                        ],
                    },
                )
            )
        elif form == "egress-range":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "policyTypes": ["Egress"],
                        "egress": [
                            {
                                "to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}],
                                "ports": [{"port": 32000, "endPort": 32768}],
                            },
                            {"to": [dns_peer], "ports": dns_ports},
                        ],
                    },
                )
            )
        elif form == "ipblock-egress":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "policyTypes": ["Egress"],
                        "egress": [
                            {
                                "to": [
                                    {
                                        "ipBlock": {
                                            "cidr": "0.0.0.0/0",
                                            "except": ["169.254.169.254/32"],
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                )
            )
        elif form == "ipblock-pods":
            # the pod CIDR or the VNet, now and then a single node's podCIDR (splits classes)
            cidr = rng.choice((POD_SPACE, POD_SPACE, ipaddress.IPv4Network("10.0.0.0/8")))
            if i % 200 == 10:
                cidr = cidrs[0]
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "ingress": [
                            {"from": [{"ipBlock": {"cidr": str(cidr)}}], "ports": [{"port": 8080}]}
                        ],
                    },
                )
            )
        elif form == "ipblock-nodes":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "ingress": [{"from": [{"ipBlock": {"cidr": str(NODE_SUBNET)}}]}],
                    },
                )
            )
        elif form == "partner":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(tier="web"),
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "ipBlock": {
                                            "cidr": "203.0.113.0/24",
                                            "except": ["203.0.113.128/25"],
                                        }
                                    }
                                ],
                                "ports": [{"port": 8080, "protocol": "TCP"}],
                            }
                        ],
                    },
                )
            )
        elif form == "ports-only":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "ingress": [{"ports": [{"port": 8080}, {"protocol": "UDP"}]}],
                    },
                )
            )
        elif form == "sctp":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "ingress": [
                            {
                                "from": [{"podSelector": {}}],
                                "ports": [{"port": 9999, "protocol": "SCTP"}],
                            }
                        ],
                    },
                )
            )
        elif form == "monitoring" and not any("monitoring" in x.labels for x in local):
            out.append(_netpol(ns, name, {"podSelector": _sel(app=a.name), "ingress": [{}]}))
        elif form == "monitoring":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": {"matchLabels": {"monitoring": "scrape"}},
                        "ingress": [
                            {
                                "from": [{"namespaceSelector": _sel(monitoring="enabled")}],
                                "ports": [{"port": 9090}, {"port": 9100}],
                            }
                        ],
                    },
                )
            )
        elif form == "statefulset":
            db = next((x for x in local if x.stateful), a)
            key = "statefulset.kubernetes.io/pod-name" if db.stateful else "app"
            value = db.pods[0] if db.stateful else db.name
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": {"matchLabels": {key: value}},
                        "ingress": [{"from": [{"podSelector": _sel(tier="backend")}]}],
                    },
                )
            )
        elif form == "allow-all":
            out.append(_netpol(ns, name, {"podSelector": _sel(app=b.name), "ingress": [{}]}))
        elif form == "ipv6":
            out.append(
                _netpol(
                    ns,
                    name,
                    {
                        "podSelector": _sel(app=a.name),
                        "policyTypes": ["Egress"],
                        "egress": [
                            {
                                "to": [
                                    {"ipBlock": {"cidr": "::/0"}},
                                    {"ipBlock": {"cidr": "10.0.0.0/8"}},
                                ]
                            }
                        ],
                    },
                )
            )
    return out[:count]


def _cilium_policies(
    rng: random.Random, count: int, namespaces: list[str], apps: dict[str, list[_App]]
) -> list[Doc]:
    out: list[Doc] = []
    for i in range(count):
        ns = namespaces[(i * 13) % len(namespaces)]
        a, b = _two(rng, apps[ns])
        spec: Doc = {
            "endpointSelector": _sel(app=a.name),
            "ingress": [
                {
                    "fromEndpoints": [_sel(app=b.name)],
                    "toPorts": [{"ports": [{"port": str(a.ports[0][1]), "protocol": "TCP"}]}],
                }
            ],
            "egress": [
                {
                    "toEntities": ["host", "remote-node"],
                    "toPorts": [{"ports": [{"port": "10250"}]}],
                },
                {
                    "toEndpoints": [
                        {
                            "matchLabels": {
                                "k8s:io.kubernetes.pod.namespace": "kube-system",
                                "k8s-app": "kube-dns",
                            }
                        }
                    ],
                    "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}]}],
                },
                {"toCIDR": ["198.51.100.0/24"]},
            ],
        }
        out.append({**_meta("CiliumNetworkPolicy", f"cnp-{i}", ns), "spec": spec})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a generated snapshot as one YAML List.")
    p.add_argument("--pods", type=int, default=5000)
    p.add_argument("--namespaces", type=int, default=100)
    p.add_argument("--policies", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--service-cidr", help="give Services ClusterIPs from it (AKS: 10.0.0.0/16)")
    p.add_argument(
        "--vnet-egress", type=int, default=0, help="add N egress policies to ipBlock 10.0.0.0/8"
    )
    p.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    args = p.parse_args(argv)
    docs = generate(
        args.pods,
        args.namespaces,
        args.policies,
        args.nodes,
        args.seed,
        service_cidr=args.service_cidr,
        vnet_egress=args.vnet_egress,
    )
    base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class Dumper(base):  # type: ignore[misc, valid-type]
        """No anchors or aliases for shared objects: `kubectl get -o yaml` writes none."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    text = yaml.dump(
        {"apiVersion": "v1", "kind": "List", "items": docs}, Dumper=Dumper, sort_keys=False
    )
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
