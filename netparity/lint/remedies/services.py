"""Remedies for Service paths: outside clients of a NodePort or LoadBalancer, in-cluster
clients of a LoadBalancer address."""

from __future__ import annotations

from typing import Any

from netparity.engine.traffic import Decision, ExternalEndpoint, ServiceEndpoint
from netparity.lint.findings import Finding, FixAction, FixWhen
from netparity.lint.remedies.context import NoFix, Proposal, RemedyContext


def external_ingress(ctx: RemedyContext, finding: Finding) -> Proposal:
    assert finding.service is not None
    ns, _, name = finding.service.partition("/")
    svc = ctx.snapshot.service(ns, name)
    if svc is None or not svc.selector:
        raise NoFix(f"Service {finding.service} has no selector to pick its backends")
    remote = False
    for e in finding.expectations:
        dst = e.traffic.destination
        if (
            e.expected is Decision.ALLOW
            and isinstance(dst, ServiceEndpoint)
            and dst.node is not None
            and dst.backend is not None
            and dst.backend.node_name != dst.node.name
        ):
            remote = True
    ports = []
    for sp in svc.ports:
        entry = {"protocol": str(sp.protocol), "port": sp.target_port}
        if entry not in ports:
            ports.append(entry)
    rule: dict[str, Any] = {"ports": ports}
    if not remote:
        rule = {
            "from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ctx.cluster_ranges()}}],
            "ports": ports,
        }
    policy_name = ctx.free_name("NetworkPolicy", ns, f"{name}-external-clients")
    obj = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": policy_name, "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": dict(svc.selector)},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }
    clients = sorted(
        {
            e.traffic.source.ip
            for e in finding.expectations
            if isinstance(e.traffic.source, ExternalEndpoint)
        }
    )
    if remote:
        summary = "a ports-only ingress rule on the Service's targetPorts"
        explanation = (
            "A backend reached through another node sees the receiving node as the "
            "source: NPM admitted it through an ipBlock of node addresses (D5b), Cilium "
            "sees remote-node, which no ipBlock or selector matches. Only a rule without "
            "`from` admits it, and it admits every source on these ports, in-cluster pods "
            "included. (After the upgrade, a CiliumNetworkPolicy with fromEntities "
            "[world, remote-node] on these ports is narrower.)"
        )
    else:
        summary = (
            "an ingress rule admitting addresses outside the cluster on the Service's targetPorts"
        )
        explanation = (
            "NPM lets outside clients through to a backend on the receiving node without "
            "evaluating policy (kube-proxy's masquerade mark, D5); Cilium evaluates them "
            f"with the client's address ({', '.join(clients)} in the lint). The rule "
            "admits every address outside the cluster's node and pod ranges, which is what "
            "NPM let through; narrow the ipBlock to your clients' ranges if they are known "
            "(keep 168.63.129.16 if the Azure load balancer probes the nodePort). It is "
            "safe before the migration: NPM already let these clients through."
        )
    return Proposal(
        objects=(obj,),
        action=FixAction.APPLY,
        when=FixWhen.BEFORE,
        summary=summary,
        explanation=explanation,
    )


def lb_in_cluster(ctx: RemedyContext, finding: Finding) -> Proposal:
    raise NoFix(
        "NPM skips policy for these connections only because the client and the backend "
        "share a node (kube-proxy's masquerade mark, D5d); the same clients on another "
        "node are judged by NPM with the node's address. No policy can depend on "
        "placement, so no fix restores exactly today's behaviour: if these clients need "
        "the Service, admit them by label in the backend's ingress policy (and in their "
        "own egress policy)"
    )
