"""The lab and the engine are two implementations of SEMANTICS.md: on the shipped example
they must give the same verdict for every probe under every dataplane.

The lab enforces with packet filters compiled from the snapshot (netparity/lab/dataplanes);
the engine predicts from the same snapshot. A disagreement names the probe, both verdicts,
what the lab observed and the engine's explanation, so the reader can tell which is wrong.
An `error` from the lab fails the test: it is never a pass and never a deny.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netparity.backend import Observed, Target
from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Traffic
from netparity.model.snapshot import Snapshot, load_snapshot, snapshot_from_dicts
from netparity.probefile import load_probe_file, resolve_endpoint, resolve_probes

from lab_fixtures import LabFactory, module_lab_factory  # noqa: F401

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def compare(lab_snapshot_factory: LabFactory, lab: object, dataplane: str) -> list[str]:
    from lab_fixtures import Lab

    assert isinstance(lab, Lab)
    snapshot = lab.snapshot  # the lab's live state: pods at their current addresses
    probes = resolve_probes(load_probe_file(EXAMPLES / "probes.yaml"), snapshot)
    engine = Engine(snapshot)
    dp = get_dataplane(dataplane).with_config(snapshot.config)
    results = lab.backend.run(
        [Target(id=f"p{i}", traffic=p.traffic) for i, p in enumerate(probes)], timeout=1.5
    )
    problems = []
    for probe, result in zip(probes, results, strict=True):
        verdict = engine.evaluate(probe.traffic, dp)
        if result.observed in (Observed.ERROR, Observed.NOT_RUN):
            problems.append(f"{probe.spec.label()}: the lab could not run it: {result.error}")
            continue
        observed = "allow" if result.allowed else "deny"
        if observed != verdict.decision:
            problems.append(
                f"{probe.spec.label()} under {dataplane}: lab {observed} ({result.observed}, "
                f"{result.address}), engine {verdict.decision}: {verdict.explanation}"
            )
    return problems


def test_lab_and_engine_agree_on_every_example_probe_under_each_dataplane(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    snapshot = load_snapshot([EXAMPLES / "aks-migration.yaml"])
    lab = module_lab_factory(snapshot, dataplane="npm")
    problems = compare(module_lab_factory, lab, "npm")
    for dataplane in ("cilium", "cilium-1.16"):
        module_lab_factory.upgrade(lab, dataplane)
        problems += compare(module_lab_factory, lab, dataplane)
    assert problems == []


def test_the_example_flips_where_the_engine_says_and_the_lab_confirms_it(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """Guards the test above against passing vacuously: the example must hold real flips."""
    snapshot = load_snapshot([EXAMPLES / "aks-migration.yaml"])
    probes = resolve_probes(load_probe_file(EXAMPLES / "probes.yaml"), snapshot)
    engine = Engine(snapshot)
    flips = [
        p.spec.label()
        for p in probes
        if engine.evaluate(p.traffic, get_dataplane("npm")).decision
        != engine.evaluate(p.traffic, get_dataplane("cilium")).decision
    ]
    assert len(flips) >= 10


def service_paths_cluster() -> Snapshot:
    """Clients on n1 (one with egress open, one limited to pods), backends behind NodePort
    and LoadBalancer Services with both traffic policies, on n1 and on n2; the backends admit
    only `role=client` pods, so every SNAT and every bypass shows."""
    from builders import netpol, node, ns, pod, service

    docs = [
        ns("c"),
        ns("s"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        node("n3", "10.224.0.6", "10.244.2.0/24"),
        pod("c/free", "10.244.0.10", "n1", {"role": "client"}),
        pod("c/locked", "10.244.0.11", "n1", {"role": "client", "lock": "yes"}),
        pod("c/stranger", "10.244.0.12", "n1", {"role": "other"}),
        netpol(
            "c/lock",
            {
                "podSelector": {"matchLabels": {"lock": "yes"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {}}]}],
            },
        ),
    ]
    for i, (etp, where) in enumerate([(e, n) for e in ("Cluster", "Local") for n in ("n1", "n2")]):
        name = f"{etp.lower()}-{where}"
        ip = f"10.244.{0 if where == 'n1' else 1}.{40 + i}"
        docs.append(pod(f"s/{name}", ip, where, {"app": name}, [("http", 8080, "TCP")]))
        docs.append(
            service(
                f"s/{name}",
                {"app": name},
                80,
                8080,
                type_="LoadBalancer",
                cluster_ip=f"10.0.1.{10 + i}",
                node_port=30100 + i,
                etp=etp,
                lb_ip=f"192.0.2.{20 + i}",
            )
        )
    docs.append(
        netpol(
            "s/clients-only",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"role": "client"}},
                            }
                        ]
                    }
                ],
            },
        )
    )
    return snapshot_from_dicts(docs)


def test_lab_and_engine_agree_on_in_cluster_nodeport_and_lb_paths(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    snapshot = service_paths_cluster()
    lab = module_lab_factory(snapshot, dataplane="npm")
    texts = [
        (src, f"{via}:s/{etp}-{where}{at}")
        for src in ("c/free", "c/locked", "c/stranger", "external", "node:n2")
        for etp in ("cluster", "local")
        for where in ("n1", "n2")
        for via, at in (
            ("lb", ""),
            ("nodeport", "@n1"),
            ("nodeport", "@n2"),
            ("nodeport", "@n3"),
            ("svc", ""),
        )
        if not (src.startswith(("external", "node")) and via == "svc")
    ]
    problems: list[str] = []
    for dataplane in ("npm", "cilium"):
        if dataplane != "npm":
            module_lab_factory.upgrade(lab, dataplane)
        live = lab.snapshot
        engine = Engine(live)
        dp = get_dataplane(dataplane)
        traffic = [
            Traffic(
                source=resolve_endpoint(src, live, as_source=True),
                destination=resolve_endpoint(dst, live, as_source=False),
                port=80,
            )
            for src, dst in texts
        ]
        results = lab.run(traffic, timeout=1.5)
        for (src, dst), t, result in zip(texts, traffic, results, strict=True):
            verdict = engine.evaluate(t, dp)
            if result.observed in (Observed.ERROR, Observed.NOT_RUN):
                if verdict.decision != "unknown":
                    problems.append(f"{dataplane} {src} -> {dst}: lab error {result.error}")
                continue
            observed = "allow" if result.allowed else "deny"
            if observed != verdict.decision:
                problems.append(
                    f"{dataplane} {src} -> {dst}: lab {observed} ({result.token}), "
                    f"engine {verdict.decision}: {verdict.explanation}"
                )
    assert problems == [], "\n".join(problems)


# ---------------------------------------------------------------- cilium-config settings
#
# The same comparison under non-default `kube-system/cilium-config` settings: the engine and
# the lab read them through netparity/facts/cilium_config.py, and each acts on them with its
# own code. Each row also states the verdict Cilium gives, so neither test passes by the two
# sides agreeing on a wrong answer.


def cilium_config(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": "kube-system"},
        "data": data,
    }


def deny_all(key: str, selector: dict[str, str]) -> dict[str, Any]:
    from builders import netpol

    return netpol(key, {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"]})


def check_rows(
    lab_factory: LabFactory, snapshot: Snapshot, rows: list[tuple[str, str, str]]
) -> None:
    """Build `snapshot` as a Cilium lab; for each (source, destination, Cilium's verdict) the
    lab must observe that verdict and the engine must predict it."""
    lab = lab_factory(snapshot, dataplane="cilium")
    live = lab.snapshot
    engine = Engine(live)
    dp = get_dataplane("cilium").with_config(live.config)
    traffic = [
        Traffic(
            source=resolve_endpoint(src, live, as_source=True),
            destination=resolve_endpoint(dst, live, as_source=False),
            port=8080,
        )
        for src, dst, _ in rows
    ]
    results = lab.run(traffic, timeout=1.5)
    problems: list[str] = []
    for (src, dst, want), t, result in zip(rows, traffic, results, strict=True):
        verdict = engine.evaluate(t, dp)
        if result.observed in (Observed.ERROR, Observed.NOT_RUN):
            problems.append(f"{src} -> {dst}: the lab could not run it: {result.error}")
            continue
        observed = "allow" if result.allowed else "deny"
        if (observed, str(verdict.decision)) != (want, want):
            problems.append(
                f"{src} -> {dst}: Cilium {want}, lab {observed} ({result.observed}), "
                f"engine {verdict.decision}: {verdict.explanation}"
            )
    assert problems == [], "\n".join(problems)


def test_exclusions_the_k8s_prefix_beta_labels_and_allow_localhost_policy(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """`labels: "!spark-role k8s:!job-name"` excludes exactly those keys (not `park-role`),
    Cilium's default `.*beta\\.kubernetes\\.io` exclusion matches inside a key, and under
    `allow-localhost: policy` a pod's own node is subject to the pod's ingress policy."""
    from builders import cnp, netpol, node, ns, pod

    http = [("http", 8080, "TCP")]
    snapshot = snapshot_from_dicts(
        [
            cilium_config(labels="!spark-role k8s:!job-name", **{"allow-localhost": "policy"}),
            ns("a"),
            node("n1", "10.224.0.4", "10.244.0.0/24"),
            node("n2", "10.224.0.5", "10.244.1.0/24"),
            pod("a/client", "10.244.0.10", "n1", {"app": "client"}, http),
            pod("a/spark", "10.244.0.11", "n1", {"app": "spark", "spark-role": "driver"}, http),
            pod("a/park", "10.244.0.12", "n1", {"app": "park", "park-role": "x"}, http),
            pod("a/job", "10.244.1.11", "n2", {"app": "job", "job-name": "j1"}, http),
            pod(
                "a/zone",
                "10.244.1.12",
                "n2",
                {"app": "zone", "failure-domain.beta.kubernetes.io/zone": "z1"},
                http,
            ),
            pod("a/web", "10.244.0.13", "n1", {"app": "web"}, http),
            pod("a/open", "10.244.0.14", "n1", {"app": "open"}, http),
            pod("a/hostok", "10.244.0.15", "n1", {"app": "hostok"}, http),
            deny_all("a/spark", {"spark-role": "driver"}),
            deny_all("a/park", {"park-role": "x"}),
            deny_all("a/job", {"job-name": "j1"}),
            deny_all("a/zone", {"failure-domain.beta.kubernetes.io/zone": "z1"}),
            netpol(
                "a/web",
                {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
                },
            ),
            netpol("a/open", {"podSelector": {"matchLabels": {"app": "open"}}, "ingress": [{}]}),
            cnp(
                "a/hostok",
                {
                    "endpointSelector": {"matchLabels": {"app": "hostok"}},
                    "ingress": [{"fromEntities": ["host"]}],
                },
            ),
        ]
    )
    check_rows(
        module_lab_factory,
        snapshot,
        [
            ("a/client", "a/spark", "allow"),  # spark-role excluded: the policy selects nothing
            ("a/client", "a/park", "deny"),  # park-role is not spark-role
            ("a/client", "a/job", "allow"),  # k8s:!job-name
            ("a/client", "a/zone", "allow"),  # failure-domain.beta.kubernetes.io/zone
            ("a/client", "a/web", "allow"),
            ("node:n1", "a/web", "deny"),  # allow-localhost: policy
            ("node:n2", "a/web", "deny"),
            ("node:n1", "a/park", "deny"),
            ("node:n1", "a/spark", "allow"),  # not isolated
            ("node:n1", "a/open", "allow"),  # a rule without peers admits the host too
            ("node:n1", "a/hostok", "allow"),  # fromEntities: host
            ("a/client", "a/hostok", "deny"),
        ],
    )


def test_an_include_list_keeps_only_the_included_keys_and_cilium_own_labels(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """`labels: "k8s:app k8s:!app-version"`: once one include is given only included keys make
    identities (`tier` is dropped), the longer exclusion beats the shorter include
    (`app-version`), and the default includes (namespace labels, `app.kubernetes.io`) stay."""
    from builders import netpol, node, ns, pod

    http = [("http", 8080, "TCP")]

    def ingress_from(key: str, peer: dict[str, Any]) -> dict[str, Any]:
        app = key.split("/")[1]
        return netpol(
            key, {"podSelector": {"matchLabels": {"app": app}}, "ingress": [{"from": [peer]}]}
        )

    every_ns = {"namespaceSelector": {}}
    snapshot = snapshot_from_dicts(
        [
            cilium_config(labels="k8s:app k8s:!app-version"),
            ns("a", team="a"),
            ns("b", team="b"),
            node("n1", "10.224.0.4", "10.244.0.0/24"),
            node("n2", "10.224.0.5", "10.244.1.0/24"),
            pod(
                "a/client",
                "10.244.0.10",
                "n1",
                {"app": "client", "tier": "front", "app.kubernetes.io/name": "cl"},
                http,
            ),
            pod("b/client", "10.244.1.20", "n2", {"app": "client", "tier": "front"}, http),
            pod("b/tiered", "10.244.1.10", "n2", {"app": "tiered", "tier": "back"}, http),
            pod(
                "b/versioned", "10.244.1.11", "n2", {"app": "versioned", "app-version": "v2"}, http
            ),
            pod("b/web", "10.244.1.12", "n2", {"app": "web"}, http),
            pod("b/fronted", "10.244.1.13", "n2", {"app": "fronted"}, http),
            pod("b/named", "10.244.1.14", "n2", {"app": "named"}, http),
            deny_all("b/tiered", {"tier": "back"}),
            deny_all("b/versioned", {"app-version": "v2"}),
            ingress_from(
                "b/web",
                {
                    "namespaceSelector": {"matchLabels": {"team": "a"}},
                    "podSelector": {"matchLabels": {"app": "client"}},
                },
            ),
            ingress_from(
                "b/fronted", {**every_ns, "podSelector": {"matchLabels": {"tier": "front"}}}
            ),
            ingress_from(
                "b/named",
                {**every_ns, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "cl"}}},
            ),
        ]
    )
    check_rows(
        module_lab_factory,
        snapshot,
        [
            ("a/client", "b/tiered", "allow"),  # tier is not included: the policy selects nothing
            ("a/client", "b/versioned", "allow"),  # app-version excluded although `app` includes
            ("a/client", "b/web", "allow"),  # namespace labels and `app` still select
            ("b/client", "b/web", "deny"),
            ("a/client", "b/fronted", "deny"),  # a peer selector on `tier` matches no identity
            ("a/client", "b/named", "allow"),  # app.kubernetes.io is a default include
            ("b/client", "b/named", "deny"),
        ],
    )


def check_under(
    lab_factory: LabFactory, snapshot: Snapshot, rows: list[tuple[str, str, dict[str, str]]]
) -> None:
    """Build `snapshot` as an NPM lab, then migrate it to each Cilium profile; for each
    (source, destination, {dataplane: verdict}) the lab must observe the verdict on port 8080
    with real packets and the engine must predict it."""
    dataplanes = list(rows[0][2])
    lab = lab_factory(snapshot, dataplane=dataplanes[0])
    problems: list[str] = []
    for i, dataplane in enumerate(dataplanes):
        if i:
            lab_factory.upgrade(lab, dataplane)
        live = lab.snapshot
        engine = Engine(live)
        dp = get_dataplane(dataplane).with_config(live.config)
        traffic = [
            Traffic(
                source=resolve_endpoint(src, live, as_source=True),
                destination=resolve_endpoint(dst, live, as_source=False),
                port=8080,
            )
            for src, dst, _ in rows
        ]
        for (src, dst, want), t, result in zip(
            rows, traffic, lab.run(traffic, timeout=1.5), strict=True
        ):
            verdict = engine.evaluate(t, dp)
            if result.observed in (Observed.ERROR, Observed.NOT_RUN):
                problems.append(f"{src} -> {dst}: the lab could not run it: {result.error}")
                continue
            observed = "allow" if result.allowed else "deny"
            expected = want[dataplane]
            if (observed, str(verdict.decision)) != (expected, expected):
                problems.append(
                    f"{src} -> {dst} under {dataplane}: want {expected}, lab {observed} "
                    f"({result.observed}), engine {verdict.decision}: {verdict.explanation}"
                )
    assert problems == [], "\n".join(problems)


def test_d19_and_d23_flip_on_migration_in_the_lab_and_the_engine(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """D19: NPM flattens `env NotIn [prod, stage]` in a namespaceSelector into two rules
    (an OR), so every namespace matches; Cilium ANDs them. D23: Cilium enforces ingress rules
    of a policy whose policyTypes names only Egress; NPM ignores them."""
    from builders import netpol, node, ns, pod

    http = [("http", 8080, "TCP")]
    snapshot = snapshot_from_dicts(
        [
            ns("prod", env="prod"),
            ns("stage", env="stage"),
            ns("dev", env="dev"),
            ns("srv"),
            node("n1", "10.224.0.4", "10.244.0.0/24"),
            node("n2", "10.224.0.5", "10.244.1.0/24"),
            pod("prod/client", "10.244.0.10", "n1", {"app": "client"}, http),
            pod("stage/client", "10.244.0.11", "n1", {"app": "client"}, http),
            pod("dev/client", "10.244.0.12", "n1", {"app": "client"}, http),
            pod("srv/web", "10.244.1.10", "n2", {"app": "web"}, http),
            pod("srv/typed", "10.244.1.11", "n2", {"app": "typed"}, http),
            netpol(
                "srv/not-prod-or-stage",
                {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchExpressions": [
                                            {
                                                "key": "env",
                                                "operator": "NotIn",
                                                "values": ["prod", "stage"],
                                            }
                                        ]
                                    }
                                }
                            ]
                        }
                    ],
                },
            ),
            netpol(
                "srv/egress-only",
                {
                    "podSelector": {"matchLabels": {"app": "typed"}},
                    "policyTypes": ["Egress"],
                    "egress": [{}],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "zzz"}}}]}],
                },
            ),
        ]
    )
    both = {"npm": "allow", "cilium": "allow", "cilium-1.16": "allow"}
    flip = {"npm": "allow", "cilium": "deny", "cilium-1.16": "deny"}
    check_under(
        module_lab_factory,
        snapshot,
        [
            ("prod/client", "srv/web", flip),  # D19
            ("stage/client", "srv/web", flip),  # D19
            ("dev/client", "srv/web", both),
            ("dev/client", "srv/typed", flip),  # D23
            ("srv/typed", "dev/client", both),  # egress: [{}]
        ],
    )


# ---------------------------------------------------------------- D18, D25-D27
#
# Rows where NPM and Cilium agree with each other and not with the spec, and the Cilium
# release where that changes (1.19, D18). Each row states the verdict every dataplane gives;
# the lab must observe it with real packets and the engine must predict it.

CILIUM_PROFILES = ("cilium", "cilium-1.16", "cilium-1.19")


def check_ports(
    lab_factory: LabFactory,
    snapshot: Snapshot,
    rows: list[tuple[str, str, int, dict[str, str]]],
) -> None:
    """Like check_under, with each row's own destination port (a Service port, a NodePort)."""
    dataplanes = list(rows[0][3])
    lab = lab_factory(snapshot, dataplane=dataplanes[0])
    problems: list[str] = []
    for i, dataplane in enumerate(dataplanes):
        if i:
            lab_factory.upgrade(lab, dataplane)
        live = lab.snapshot
        engine = Engine(live)
        dp = get_dataplane(dataplane).with_config(live.config)
        traffic = [
            Traffic(
                source=resolve_endpoint(src, live, as_source=True),
                destination=resolve_endpoint(dst, live, as_source=False),
                port=port,
            )
            for src, dst, port, _ in rows
        ]
        for (src, dst, port, want), t, result in zip(
            rows, traffic, lab.run(traffic, timeout=1.5), strict=True
        ):
            verdict = engine.evaluate(t, dp)
            if result.observed in (Observed.ERROR, Observed.NOT_RUN):
                problems.append(f"{src} -> {dst}: the lab could not run it: {result.error}")
                continue
            observed = "allow" if result.allowed else "deny"
            expected = want[dataplane]
            if (observed, str(verdict.decision)) != (expected, expected):
                problems.append(
                    f"{src} -> {dst}:{port} under {dataplane}: want {expected}, lab {observed} "
                    f"({result.observed}), engine {verdict.decision}: {verdict.explanation}"
                )
    assert problems == [], "\n".join(problems)


def test_d18_a_negative_namespace_selector_admits_non_pods_until_cilium_1_19(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """`from: namespaceSelector {name NotIn [blocked]}`: NPM (`! --match-set nslabel-..`) and
    Cilium up to 1.18 (a selector true of reserved identities) also admit the outside, nodes
    and hostNetwork pods; Cilium 1.19 adds the local-cluster label and admits pods only. An
    `Exists` beside the NotIn keeps it to pods everywhere."""
    from builders import netpol, node, ns, pod

    http = [("http", 8080, "TCP")]
    not_blocked = {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["blocked"],
    }
    snapshot = snapshot_from_dicts(
        [
            ns("blocked"),
            ns("dev"),
            ns("srv"),
            node("n1", "10.224.0.4", "10.244.0.0/24"),
            node("n2", "10.224.0.5", "10.244.1.0/24"),
            pod("blocked/client", "10.244.0.10", "n1", {"app": "client"}, http),
            pod("dev/client", "10.244.0.11", "n1", {"app": "client"}, http),
            pod("dev/hostnet", "10.224.0.4", "n1", {"app": "hostnet"}, host_network=True),
            pod("srv/web", "10.244.1.10", "n2", {"app": "web"}, http),
            pod("srv/strict", "10.244.1.11", "n2", {"app": "strict"}, http),
            netpol(
                "srv/not-blocked",
                {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [
                        {"from": [{"namespaceSelector": {"matchExpressions": [not_blocked]}}]}
                    ],
                },
            ),
            netpol(
                "srv/not-blocked-exists",
                {
                    "podSelector": {"matchLabels": {"app": "strict"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchExpressions": [
                                            not_blocked,
                                            {
                                                "key": "kubernetes.io/metadata.name",
                                                "operator": "Exists",
                                            },
                                        ]
                                    }
                                }
                            ]
                        }
                    ],
                },
            ),
        ]
    )
    old = {"npm": "allow", "cilium": "allow", "cilium-1.16": "allow", "cilium-1.19": "deny"}
    deny = dict.fromkeys(old, "deny")
    allow = dict.fromkeys(old, "allow")
    check_ports(
        module_lab_factory,
        snapshot,
        [
            ("external", "srv/web", 8080, old),
            ("node:n1", "srv/web", 8080, old),  # remote-node for n2's pod
            ("dev/hostnet", "srv/web", 8080, old),
            ("dev/client", "srv/web", 8080, allow),
            ("blocked/client", "srv/web", 8080, deny),
            ("external", "srv/strict", 8080, deny),
            ("node:n1", "srv/strict", 8080, deny),
            ("dev/client", "srv/strict", 8080, allow),
        ],
    )


def test_d25_d26_d27_hairpin_deny_over_localhost_and_named_ports_without_host_pods(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """D25: a pod closed to everything reaches itself through its ClusterIP, its LB IP and its
    own node's NodePort under Cilium (both policy checks skipped; NPM: the masquerade mark,
    D5d; the spec would judge the LB and NodePort paths). D26: an `ingressDeny
    fromEntities: host` beats allow-localhost. D27: a hostNetwork pod declaring `http` as
    another number does not void an egress rule on `http` under Cilium."""
    from builders import cnp, netpol, node, ns, pod, service

    http = [("http", 8080, "TCP")]
    snapshot = snapshot_from_dicts(
        [
            ns("a"),
            node("n1", "10.224.0.4", "10.244.0.0/24"),
            node("n2", "10.224.0.5", "10.244.1.0/24"),
            pod("a/self", "10.244.0.10", "n1", {"app": "self"}, http),
            pod("a/client", "10.244.0.11", "n1", {"app": "client"}, http),
            pod("a/web", "10.244.1.10", "n2", {"app": "web"}, http),
            pod("a/guarded", "10.244.1.11", "n2", {"app": "guarded"}, http),
            pod(
                "a/hostnet",
                "10.224.0.5",
                "n2",
                {"app": "hostnet"},
                [("http", 9090, "TCP")],
                host_network=True,
            ),
            service(
                "a/self",
                {"app": "self"},
                80,
                8080,
                type_="LoadBalancer",
                cluster_ip="10.0.1.10",
                node_port=30110,
                lb_ip="192.0.2.30",
            ),
            netpol(
                "a/self-closed",
                {
                    "podSelector": {"matchLabels": {"app": "self"}},
                    "policyTypes": ["Ingress", "Egress"],
                },
            ),
            netpol(
                "a/client-http",
                {
                    "podSelector": {"matchLabels": {"app": "client"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": [{"port": "http"}]}],
                },
            ),
            cnp(
                "a/guarded",
                {
                    "endpointSelector": {"matchLabels": {"app": "guarded"}},
                    "ingress": [{"fromEntities": ["all"]}],
                    "ingressDeny": [{"fromEntities": ["host"]}],
                },
            ),
        ]
    )
    everywhere = {"npm": "allow", **dict.fromkeys(CILIUM_PROFILES, "allow")}
    cilium_deny = {"npm": "allow", **dict.fromkeys(CILIUM_PROFILES, "deny")}
    check_ports(
        module_lab_factory,
        snapshot,
        [
            (
                "a/self",
                "svc:a/self",
                80,
                everywhere,
            ),
            ("a/self", "lb:a/self", 80, everywhere),  # npm: the masquerade mark skips NPM (D5d)
            ("a/self", "nodeport:a/self@n1", 80, everywhere),
            ("a/client", "a/web", 8080, everywhere),  # D27: a/hostnet's 9090 does not count
            ("node:n2", "a/guarded", 8080, cilium_deny),  # D26
            ("node:n1", "a/guarded", 8080, everywhere),
        ],
    )


def place_first(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`docs` with azure-npm-config's PlaceAzureChainFirst set (NPM's jump first in FORWARD)."""
    import json

    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "azure-npm-config", "namespace": "kube-system"},
        "data": {"azure-npm.json": json.dumps({"Toggles": {"PlaceAzureChainFirst": True}})},
    }
    return [*docs, config]


def test_d20_npm_validates_what_translate_policy_validates_and_no_more(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """D20: an allow-all ingress rule returns before NPM reads the rule with an IPv6 block, so
    the policy (and its egress deny) is enforced; a 70-character NotIn value passes NPM's
    regex, so the policy is enforced; `10.0.0.0/0` fails util.IsIPV4, so NPM skips that policy
    whole (fail-open) while Cilium enforces its egress deny. Under npm with PlaceAzureChainFirst
    false and true, then migrated to cilium."""
    from builders import netpol, node, ns, pod

    http = [("http", 8080, "TCP")]
    docs = [
        ns("d20"),
        ns("other"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("d20/client", "10.244.0.10", "n1", {"app": "client"}, http),
        pod("other/client", "10.244.0.11", "n1", {"app": "client"}, http),
        pod("d20/allall", "10.244.1.10", "n2", {"app": "allall"}, http),
        pod("d20/long", "10.244.1.11", "n2", {"app": "long"}, http),
        pod("d20/slash0", "10.244.0.12", "n1", {"app": "slash0"}, http),
        netpol(
            "d20/allall",
            {
                "podSelector": {"matchLabels": {"app": "allall"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{}, {"from": [{"ipBlock": {"cidr": "fd00::/8"}}]}],
                "egress": [],
            },
        ),
        netpol(
            "d20/long",
            {
                "podSelector": {"matchLabels": {"app": "long"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchExpressions": [
                                        {"key": "x", "operator": "NotIn", "values": ["v" * 70]}
                                    ]
                                }
                            }
                        ]
                    }
                ],
            },
        ),
        netpol(
            "d20/slash0",
            {
                "podSelector": {"matchLabels": {"app": "slash0"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/0"}}]}],
                "egress": [],
            },
        ),
    ]
    both_allow = {"npm": "allow", "cilium": "allow"}
    both_deny = {"npm": "deny", "cilium": "deny"}
    rows = [
        ("d20/client", "d20/allall", both_allow),
        ("d20/allall", "other/client", both_deny),  # the allow-all early return
        ("d20/client", "d20/long", both_allow),
        ("other/client", "d20/long", both_deny),  # no 63-character limit
        ("d20/slash0", "other/client", {"npm": "allow", "cilium": "deny"}),  # IsIPV4 fails
    ]
    for variant in (docs, place_first(docs)):
        check_under(module_lab_factory, snapshot_from_dicts(variant), rows)


def test_d22_a_service_without_endpoints_is_rejected_and_judged_a_deny(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """D22: kube-proxy writes only REJECT rules in filter for a Service port with no
    endpoints: KUBE-SERVICES (FORWARD, OUTPUT) for the ClusterIP, KUBE-EXTERNAL-SERVICES
    (INPUT) for a nodePort. The probe sees `refused`, which for such a Service is the deny the
    engine predicts. D21: with PlaceAzureChainFirst an active NPM accepts the pod's packet
    before KUBE-SERVICES, so the REJECT is never reached and the packet to the ClusterIP goes
    nowhere: a timeout, still a deny. Cilium answers ICMP port unreachable (refused) with
    `service-no-backend-response: reject`, its default, and drops with `drop`."""
    from netparity.record.model import Outcome, judge

    from builders import netpol, node, ns, pod, service

    docs = [
        ns("d22"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("d22/client", "10.244.0.10", "n1", {"app": "client"}, [("http", 8080, "TCP")]),
        pod("d22/web", "10.244.1.10", "n2", {"app": "web"}, [("http", 8080, "TCP")]),
        service("d22/empty", {"app": "nobody"}, 80, 8080, cluster_ip="10.0.0.50"),
        service(
            "d22/emptynp",
            {"app": "nobody"},
            80,
            8080,
            type_="NodePort",
            cluster_ip="10.0.0.51",
            node_port=30222,
        ),
        # NPM is active (AZURE-NPM has rules) only once it has a policy
        netpol(
            "d22/web",
            {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]},
        ),
    ]
    # (source, destination, observed under npm, npm place-first, cilium, cilium with `drop`)
    rows = [
        ("d22/client", "svc:d22/empty", ("refused", "timeout", "refused", "timeout")),
        ("node:n2", "svc:d22/empty", ("refused", "refused", "refused", "timeout")),
        ("d22/client", "nodeport:d22/emptynp@n2", ("refused", "refused", "refused", "timeout")),
        ("external", "nodeport:d22/emptynp@n2", ("refused", "refused", "refused", "timeout")),
    ]
    dropping = [*docs, cilium_config(**{"service-no-backend-response": "drop"})]
    problems: list[str] = []
    for variant, dataplanes in (
        (docs, ("npm", "cilium")),
        (place_first(docs), ("npm",)),
        (dropping, ("cilium-1.19",)),
    ):
        lab = module_lab_factory(snapshot_from_dicts(variant), dataplane="npm")
        for dataplane in dataplanes:
            if dataplane != "npm":
                module_lab_factory.upgrade(lab, dataplane)
            live = lab.snapshot
            engine = Engine(live)
            dp = get_dataplane(dataplane).with_config(live.config)
            column = {"npm": 1 if variant is not docs else 0, "cilium": 2}.get(dataplane, 3)
            traffic = [
                Traffic(
                    source=resolve_endpoint(src, live, as_source=True),
                    destination=resolve_endpoint(dst, live, as_source=False),
                    port=80,
                )
                for src, dst, _ in rows
            ]
            for (src, dst, want), t, result in zip(
                rows, traffic, lab.run(traffic, timeout=1.5), strict=True
            ):
                verdict = engine.evaluate(t, dp)
                where = f"{src} -> {dst} under {dataplane} (place-first: {variant is not docs})"
                if verdict.decision != "deny" or verdict.refused_is_deny != (column != 3):
                    problems.append(f"{where}: engine {verdict.decision}: {verdict.explanation}")
                elif "D22" not in verdict.explanation:
                    problems.append(f"{where}: the reason does not name D22")
                if result.observed != want[column]:
                    problems.append(f"{where}: lab {result.observed}, want {want[column]}")
                if judge([result.observed], refused_is_deny=verdict.refused_is_deny) != (
                    Outcome.DENY
                ):
                    problems.append(f"{where}: {result.observed} is not judged a deny")
    assert problems == [], "\n".join(problems)


def test_d22_a_service_backed_by_a_hostnetwork_pod_bypasses_npm_on_the_clients_node(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """D22 + D4a: kube-proxy DNATs a Service whose endpoint is a hostNetwork pod to
    nodeIP:port. From a pod on that node the packet goes to INPUT, which NPM never hooks:
    even an egress deny-all lets it through, PlaceAzureChainFirst or not. From another node it
    is the pod's egress to a node address, which NPM judges. Cilium polices both."""
    from builders import netpol, node, ns, pod, service

    hostnet = [("hostnet", 18080, "TCP")]
    docs = [
        ns("a"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("kube-system/hn1", "10.224.0.4", "n1", {"app": "hostnet"}, hostnet, True),
        pod("kube-system/hn2", "10.224.0.5", "n2", {"app": "hostnet"}, hostnet, True),
        pod("a/locked", "10.244.0.10", "n1", {"lock": "yes"}, [("http", 8080, "TCP")]),
        pod("a/locked2", "10.244.1.10", "n2", {"lock": "yes"}, [("http", 8080, "TCP")]),
        pod("a/free", "10.244.1.11", "n2", {"app": "free"}, [("http", 8080, "TCP")]),
        service("kube-system/hostsvc", {"app": "hostnet"}, 80, 18080, cluster_ip="10.0.0.60"),
        netpol(
            "a/lock",
            {"podSelector": {"matchLabels": {"lock": "yes"}}, "policyTypes": ["Egress"]},
        ),
    ]
    rows = [
        # the endpoint is kube-system/hn1 (the first by key), on n1
        ("a/locked", "svc:kube-system/hostsvc", {"npm": "allow", "cilium": "deny"}),
        ("a/locked2", "svc:kube-system/hostsvc", {"npm": "deny", "cilium": "deny"}),
        ("a/free", "svc:kube-system/hostsvc", {"npm": "allow", "cilium": "allow"}),
    ]
    problems: list[str] = []
    for variant in (docs, place_first(docs)):
        lab = module_lab_factory(snapshot_from_dicts(variant), dataplane="npm")
        dataplanes = ("npm", "cilium") if variant is docs else ("npm",)
        for dataplane in dataplanes:
            if dataplane != "npm":
                module_lab_factory.upgrade(lab, dataplane)
            live = lab.snapshot
            engine = Engine(live)
            dp = get_dataplane(dataplane).with_config(live.config)
            traffic = [
                Traffic(
                    source=resolve_endpoint(src, live, as_source=True),
                    destination=resolve_endpoint(dst, live, as_source=False),
                    port=80,
                )
                for src, dst, _ in rows
            ]
            for (src, dst, want), t, result in zip(
                rows, traffic, lab.run(traffic, timeout=1.5), strict=True
            ):
                verdict = engine.evaluate(t, dp)
                where = f"{src} -> {dst} under {dataplane} (place-first: {variant is not docs})"
                if result.observed in (Observed.ERROR, Observed.NOT_RUN):
                    problems.append(f"{where}: the lab could not run it: {result.error}")
                    continue
                observed = "allow" if result.allowed else "deny"
                if (observed, str(verdict.decision)) != (want[dataplane], want[dataplane]):
                    problems.append(
                        f"{where}: want {want[dataplane]}, lab {observed} ({result.observed}, "
                        f"{result.token}), engine {verdict.decision}: {verdict.explanation}"
                    )
    assert problems == [], "\n".join(problems)


def judged(result: Any, verdict: Any) -> str:
    """The lab's observation judged as the record judges it (refused is a deny where the
    engine says the dataplane rejects: D22)."""
    from netparity.record.model import judge

    if result.observed in (Observed.ERROR, Observed.NOT_RUN):
        return f"error ({result.error})"
    return str(judge([result.observed], refused_is_deny=verdict.refused_is_deny))


def run_rows(
    lab: Any, rows: list[tuple[str, str, dict[str, str]]], dataplane: str, where: str = ""
) -> list[str]:
    """Run `rows` (source, destination, want per family: npm or cilium) on port 80 in `lab`
    and return every disagreement between the want, the lab and the engine."""
    live = lab.snapshot
    engine = Engine(live)
    dp = get_dataplane(dataplane).with_config(live.config)
    family = "cilium" if dp.cilium_policies else "npm"
    traffic = [
        Traffic(
            source=resolve_endpoint(src, live, as_source=True),
            destination=resolve_endpoint(dst, live, as_source=False),
            port=80,
        )
        for src, dst, _ in rows
    ]
    problems: list[str] = []
    for (src, dst, want), t, result in zip(
        rows, traffic, lab.run(traffic, timeout=1.5), strict=True
    ):
        verdict = engine.evaluate(t, dp)
        seen = judged(result, verdict)
        label = f"{src} -> {dst} under {dataplane}{where}"
        if (seen, str(verdict.decision)) != (want[family], want[family]):
            problems.append(
                f"{label}: want {want[family]}, lab {seen} ({result.observed}), "
                f"engine {verdict.decision}: {verdict.explanation}"
            )
        if want[family] == "deny" and "D22" not in verdict.explanation:
            problems.append(f"{label}: the engine's reason does not name D22")
    return problems


def test_d22_internal_traffic_policy_local_keeps_clusterip_traffic_on_the_clients_node(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """D22: with internalTrafficPolicy Local kube-proxy sends ClusterIP traffic only to an
    endpoint on the client's node (KUBE-SVL-*) and drops it where there is none ("has no
    local endpoints"), for pods and nodes alike; NPM's placement does not change that.
    Cilium's local-scope lookup finds no backend there and rejects it (refused), as for a
    Service without endpoints: a deny too."""
    from builders import node, ns, pod, service

    http = [("http", 8080, "TCP")]
    svc = service("b/local", {"app": "web"}, 80, 8080, cluster_ip="10.0.0.70")
    svc["spec"]["internalTrafficPolicy"] = "Local"
    docs = [
        ns("a"),
        ns("b"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("a/near", "10.244.0.10", "n1", {"app": "client"}, http),
        pod("a/far", "10.244.1.10", "n2", {"app": "client"}, http),
        pod("b/web", "10.244.0.20", "n1", {"app": "web"}, http),
        svc,
    ]
    allow = {"npm": "allow", "cilium": "allow"}
    deny = {"npm": "deny", "cilium": "deny"}
    rows = [
        ("a/near", "svc:b/local", allow),
        ("a/far", "svc:b/local", deny),
        ("node:n1", "svc:b/local", allow),
        ("node:n2", "svc:b/local", deny),
    ]
    problems: list[str] = []
    for variant in (docs, place_first(docs)):
        lab = module_lab_factory(snapshot_from_dicts(variant), dataplane="npm")
        where = f" (place-first: {variant is not docs})"
        problems += run_rows(lab, rows, "npm", where)
        if variant is docs:
            for dataplane in ("cilium", "cilium-1.19"):
                module_lab_factory.upgrade(lab, dataplane)
                problems += run_rows(lab, rows, dataplane, where)
    assert problems == [], "\n".join(problems)


def test_d22_load_balancer_source_ranges_kube_proxy_checks_every_client_cilium_outside_ones(
    module_lab_factory: LabFactory,  # noqa: F811
) -> None:
    """D22: kube-proxy DNATs a LoadBalancer IP only for sources inside
    loadBalancerSourceRanges (nat KUBE-FW-*); KUBE-PROXY-FIREWALL, first in FORWARD, INPUT and
    OUTPUT, drops the rest: pods, nodes and outside clients alike. Cilium's KPR checks only
    traffic from outside the cluster (nodeport_lb4): pods and nodes outside the ranges get
    through, an outside client outside them is dropped. No NetworkPolicy here."""
    from builders import node, ns, pod, service

    http = [("http", 8080, "TCP")]
    ranged = service(
        "b/ranged",
        {"app": "web"},
        80,
        8080,
        type_="LoadBalancer",
        cluster_ip="10.0.0.80",
        node_port=30280,
        lb_ip="192.0.2.80",
    )
    ranged["spec"]["loadBalancerSourceRanges"] = ["10.244.0.0/24", "203.0.113.0/24"]
    closed = service(
        "b/closed",
        {"app": "web"},
        80,
        8080,
        type_="LoadBalancer",
        cluster_ip="10.0.0.81",
        node_port=30281,
        lb_ip="192.0.2.81",
    )
    closed["spec"]["loadBalancerSourceRanges"] = ["198.51.100.0/24"]
    docs = [
        ns("a"),
        ns("b"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        node("n2", "10.224.0.5", "10.244.1.0/24"),
        pod("a/inside", "10.244.0.10", "n1", {"app": "client"}, http),
        pod("a/outside", "10.244.1.10", "n2", {"app": "client"}, http),
        pod("b/web", "10.244.1.20", "n2", {"app": "web"}, http),
        ranged,
        closed,
    ]
    allow = {"npm": "allow", "cilium": "allow"}
    rows = [
        ("a/inside", "lb:b/ranged", allow),
        ("a/outside", "lb:b/ranged", {"npm": "deny", "cilium": "allow"}),  # 10.244.1.10
        ("node:n1", "lb:b/ranged", {"npm": "deny", "cilium": "allow"}),  # 10.224.0.4
        ("external", "lb:b/ranged", allow),  # 203.0.113.10
        ("a/outside", "svc:b/ranged", allow),  # the ClusterIP is not restricted
        ("external", "lb:b/closed", {"npm": "deny", "cilium": "deny"}),
        ("a/inside", "lb:b/closed", {"npm": "deny", "cilium": "allow"}),
    ]
    lab = module_lab_factory(snapshot_from_dicts(docs), dataplane="npm")
    problems = run_rows(lab, rows, "npm")
    module_lab_factory.upgrade(lab, "cilium")
    problems += run_rows(lab, rows, "cilium")
    assert problems == [], "\n".join(problems)


def test_d22_cilium_source_range_check_off_checks_no_range() -> None:
    """`enable-svc-source-range-check: false` in cilium-config: Cilium checks no range; NPM's
    kube-proxy reads no cilium-config and still checks every client."""
    from builders import node, ns, pod, service

    svc = service(
        "b/closed",
        {"app": "web"},
        80,
        8080,
        type_="LoadBalancer",
        cluster_ip="10.0.0.81",
        lb_ip="192.0.2.81",
    )
    svc["spec"]["loadBalancerSourceRanges"] = ["198.51.100.0/24"]
    docs = [
        ns("b"),
        node("n1", "10.224.0.4", "10.244.0.0/24"),
        pod("b/web", "10.244.0.20", "n1", {"app": "web"}, [("http", 8080, "TCP")]),
        svc,
    ]
    off = snapshot_from_dicts([*docs, cilium_config(**{"enable-svc-source-range-check": "false"})])
    on = snapshot_from_dicts(docs)
    for snap, cilium in ((off, "allow"), (on, "deny")):
        t = Traffic(
            source=resolve_endpoint("external", snap, as_source=True),
            destination=resolve_endpoint("lb:b/closed", snap, as_source=False),
            port=80,
        )
        engine = Engine(snap)
        assert engine.evaluate(t, get_dataplane("cilium").with_config(snap.config)).decision == (
            cilium
        )
        assert engine.evaluate(t, get_dataplane("npm").with_config(snap.config)).decision == "deny"
