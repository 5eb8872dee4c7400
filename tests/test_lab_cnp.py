"""CiliumNetworkPolicies with real packets (#23): the lab (its own nftables compilation of
the policies) and the engine give the same verdict, and the verdict the issue states.

- The guide's CNP (`endpointSelector: {}`, egress `toEntities: [host, remote-node]`) in a
  namespace without an egress NetworkPolicy: the planned essential DNS probe, run as the
  agent's DNS check against the lab's CoreDNS (which answers DNS), is allowed under NPM and
  cut under Cilium.
- A service-account selector (io.cilium.k8s.policy.serviceaccount) admits only that account.
- An endpointSelector naming another namespace selects the policy's own namespace.
- `enableDefaultDeny: {egress: false}` adds its allows without isolating, only while
  `enable-non-default-deny-policies` is on.
"""

from __future__ import annotations

from typing import Any

from netparity.backend import Observed, ProbeResult, Target
from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import Traffic
from netparity.model.objects import Protocol
from netparity.model.snapshot import Snapshot, snapshot_from_dicts
from netparity.plan.essential_probes import essential_check
from netparity.plan.model import PlannedProbe, Scenario
from netparity.plan.planner import make_plan
from netparity.probefile import resolve_endpoint

from builders import base_docs, cnp, netpol, ns, pod
from lab_fixtures import Lab, LabFactory, lab_factory  # noqa: F401

KUBE_DNS = {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns"}


def with_sa(doc: dict[str, Any], account: str) -> dict[str, Any]:
    doc["spec"]["serviceAccountName"] = account
    return doc


def docs(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return base_docs(
        ns("kube-system"),
        ns("z", team="guide"),
        pod("z/g", "10.244.0.30", "n1", {"app": "g"}, [("http", 80, "TCP")]),
        pod(
            "kube-system/coredns",
            "10.244.1.20",
            "n2",
            {"k8s-app": "kube-dns"},
            [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")],
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {
                "selector": {"k8s-app": "kube-dns"},
                "clusterIP": "10.0.0.10",
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"},
                ],
            },
        },
        # the guide's CNP, copied into a namespace without any egress NetworkPolicy
        cnp(
            "z/allow-node-egress",
            {"endpointSelector": {}, "egress": [{"toEntities": ["host", "remote-node"]}]},
        ),
        with_sa(pod("y/leia", "10.244.1.11", "n2", {"app": "leia"}, [("http", 80, "TCP")]), "leia"),
        with_sa(pod("y/luke", "10.244.1.12", "n2", {"app": "luke"}), "luke"),
        cnp(
            "y/only-leia",
            {
                "endpointSelector": {"matchLabels": {"app": "c"}},
                "ingress": [
                    {
                        "fromEndpoints": [
                            {"matchLabels": {"io.cilium.k8s.policy.serviceaccount": "leia"}}
                        ]
                    }
                ],
            },
        ),
        # names namespace y, written in x: Cilium selects x's pods (ParseToCiliumRule)
        cnp(
            "x/overwrite",
            {
                "endpointSelector": {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "y"}},
                "ingress": [{"fromEntities": ["host"]}],
            },
        ),
        # x/a: egress-isolated by a NetworkPolicy; a CNP that adds DNS without isolating
        netpol(
            "x/deny-egress",
            {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"]},
        ),
        cnp(
            "x/dns-for-a",
            {
                "endpointSelector": {"matchLabels": {"app": "a"}},
                "enableDefaultDeny": {"egress": False},
                "egress": [{"toEndpoints": [{"matchLabels": KUBE_DNS}]}],
            },
        ),
        # x/b: isolated by nothing else; the same kind of CNP must not isolate it
        cnp(
            "x/dns-for-b",
            {
                "endpointSelector": {"matchLabels": {"app": "b"}},
                "enableDefaultDeny": {"egress": False},
                "egress": [{"toEndpoints": [{"matchLabels": KUBE_DNS}]}],
            },
        ),
        *extra,
    )


def essential_dns(plan_probes: tuple[PlannedProbe, ...], pod_key: str) -> PlannedProbe:
    """The planned essential DNS probe over UDP that stands for `pod_key`."""
    (probe,) = [
        p
        for p in plan_probes
        if Scenario.ESSENTIAL in p.scenarios
        and pod_key in p.stands_for
        and p.traffic.protocol is Protocol.UDP
        and essential_check(p) == "dns"
    ]
    return probe


def flow(snap: Snapshot, src: str, dst: str, port: int) -> Traffic:
    return Traffic(
        source=resolve_endpoint(src, snap, as_source=True),
        destination=resolve_endpoint(dst, snap, as_source=False),
        port=port,
        protocol=Protocol.TCP,
    )


def run_and_judge(
    lab: Lab, dataplane: str, cases: dict[str, tuple[Target, str]]
) -> dict[str, tuple[str, str, ProbeResult]]:
    """Each case's (lab verdict, engine verdict, the lab's result) under `dataplane`."""
    snap = lab.snapshot
    engine = Engine(snap)
    dp = get_dataplane(dataplane).with_config(snap.config)
    results = lab.backend.run([t for t, _ in cases.values()], timeout=1.5)
    out = {}
    for (name, (target, _)), r in zip(cases.items(), results, strict=True):
        assert r.observed not in (Observed.ERROR, Observed.NOT_RUN), (name, r)
        seen = "allow" if r.allowed else "deny"
        out[name] = (seen, str(engine.evaluate(target.traffic, dp).decision), r)
    return out


def cases_of(snap: Snapshot) -> dict[str, tuple[Target, str]]:
    plan = make_plan(snap, current="npm", target="cilium")
    out: dict[str, tuple[Target, str]] = {}
    for who in ("z/g", "y/c", "x/a"):
        p = essential_dns(plan.probes, who)
        out[f"{who} DNS"] = (
            Target(id=f"{who} DNS", traffic=p.traffic, check=essential_check(p)),
            "",
        )
    for name, src, dst, port in (
        ("leia -> c", "y/leia", "y/c", 80),
        ("luke -> c", "y/luke", "y/c", 80),
        ("luke -> x/b", "y/luke", "x/b", 8080),
        ("a -> leia", "x/a", "y/leia", 80),
        ("b -> leia", "x/b", "y/leia", 80),
    ):
        out[name] = (Target(id=name, traffic=flow(snap, src, dst, port)), "")
    return out


EXPECTED = {
    #               npm      cilium
    "z/g DNS": ("allow", "deny"),  # the guide's CNP isolates z for egress
    "y/c DNS": ("allow", "allow"),  # a namespace the guide's CNP is not in
    "x/a DNS": ("deny", "allow"),  # enableDefaultDeny false adds DNS to an isolated pod
    "leia -> c": ("allow", "allow"),
    "luke -> c": ("allow", "deny"),  # only the leia service account
    "luke -> x/b": ("allow", "deny"),  # x/overwrite selects x's pods, not y's
    "a -> leia": ("deny", "deny"),  # x/a stays isolated for everything but DNS
    "b -> leia": ("allow", "allow"),  # x/dns-for-b does not isolate x/b
}


def test_cilium_policies_lab_and_engine_agree_with_real_packets(
    lab_factory: LabFactory,  # noqa: F811
) -> None:
    snapshot = snapshot_from_dicts(docs())
    lab = lab_factory(snapshot, dataplane="npm")
    got: dict[str, dict[str, tuple[str, str, ProbeResult]]] = {}
    got["npm"] = run_and_judge(lab, "npm", cases_of(lab.snapshot))
    lab_factory.upgrade(lab, "cilium")
    got["cilium"] = run_and_judge(lab, "cilium", cases_of(lab.snapshot))
    table = {name: tuple(got[dp][name][:2] for dp in ("npm", "cilium")) for name in EXPECTED}
    assert table == {
        name: tuple((v, v) for v in verdicts) for name, verdicts in EXPECTED.items()
    }, table
    # the DNS check got a real DNS answer from the lab's CoreDNS (through the kube-dns
    # ClusterIP), not an agent's name; cut, it times out
    dns_ok = got["npm"]["z/g DNS"][2]
    assert dns_ok.observed is Observed.CONNECTED and dns_ok.token == "NOERROR 1", dns_ok
    assert dns_ok.address == "10.0.0.10:53/UDP"
    assert got["cilium"]["z/g DNS"][2].observed is Observed.TIMEOUT


def test_enable_default_deny_false_isolates_where_the_setting_is_off(
    lab_factory: LabFactory,  # noqa: F811
) -> None:
    """With `enable-non-default-deny-policies: false` Cilium ignores `enableDefaultDeny`:
    x/dns-for-b then isolates x/b for egress, so x/b reaches DNS and nothing else."""
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": "kube-system"},
        "data": {"enable-non-default-deny-policies": "false"},
    }
    snapshot = snapshot_from_dicts(docs(config))
    lab = lab_factory(snapshot, dataplane="cilium")
    snap = lab.snapshot
    plan = make_plan(snap, current="npm", target="cilium")
    b_dns = essential_dns(plan.probes, "x/b")
    cases = {
        "b -> leia": (Target(id="b", traffic=flow(snap, "x/b", "y/leia", 80)), ""),
        "b DNS": (Target(id="d", traffic=b_dns.traffic, check=essential_check(b_dns)), ""),
    }
    got = run_and_judge(lab, "cilium", cases)
    assert {k: v[:2] for k, v in got.items()} == {
        "b -> leia": ("deny", "deny"),
        "b DNS": ("allow", "allow"),
    }
