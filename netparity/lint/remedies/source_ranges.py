"""The remedy for `lb-source-ranges` (SEMANTICS D22): there is none, and the finding says why.

kube-proxy in front of NPM checks a LoadBalancer Service's `loadBalancerSourceRanges` for
every client of the LB IP: the nat `KUBE-FW-*` chain DNATs only sources inside the ranges
and filter `KUBE-PROXY-FIREWALL`, first in INPUT, FORWARD and OUTPUT, drops the rest
(kubernetes pkg/proxy/iptables/proxier.go). Cilium's kube-proxy replacement checks them only
for traffic from outside the cluster: `lb4_src_range_ok` (bpf/lib/lb.h) is called from
`nodeport_lb4` (bpf/lib/nodeport.h, "Main node-port entry point for host-external
ingressing node-port traffic"), never from bpf_lxc.c or bpf_sock.c. A pod (or node) outside
the ranges that reached the LB IP was dropped and now gets through.

Why no fix restores today's behaviour: Cilium translates the LB IP to the backend at the
client's socket (or at bpf_lxc) before any policy is looked up, so the backend's ingress
policy (and the client's egress policy) see client -> backend:targetPort, exactly what a
ClusterIP connection or a direct one looks like. kube-proxy never restricted those, and the
connection through the LB IP now decides as they do. A policy that denied it would deny
them too (an outage in place of a hole); a policy that admits them admits it. So the
finding is a hole with advice, not a fix the engine could check.
"""

from __future__ import annotations

from netparity.lint.findings import Finding
from netparity.lint.remedies.context import NoFix, Proposal, RemedyContext


def lb_source_ranges(ctx: RemedyContext, finding: Finding) -> Proposal:
    """D22: say why no policy keeps these clients off the LB IP only."""
    ranges = ""
    if finding.service is not None:
        ns, _, name = finding.service.partition("/")
        svc = ctx.snapshot.service(ns, name)
        if svc is not None and svc.load_balancer_source_ranges:
            ranges = f" ({', '.join(svc.load_balancer_source_ranges)})"
    raise NoFix(
        "Cilium translates the LoadBalancer IP to the backend at the client before any "
        "policy is looked up, so the backend sees these connections exactly as ClusterIP "
        "or direct ones from the same clients, which kube-proxy never restricted: no "
        "policy can drop them through the LB IP only (D22). If loadBalancerSourceRanges"
        f"{ranges} were meant to keep in-cluster clients out, give the backends an ingress "
        "NetworkPolicy that admits the ranges (ipBlock) and only the in-cluster clients "
        "that should reach them, knowing it also governs their ClusterIP and direct "
        "traffic; otherwise accept the finding (--accept)"
    )
