"""The remedy for `itp-local` (SEMANTICS D22): there is none in policy, and the finding says
what to change instead.

kube-proxy in front of NPM applies internalTrafficPolicy to the ClusterIP only: a pod's
connection to a Service's LoadBalancer IP or NodePort goes through KUBE-EXT-* to every
endpoint (kubernetes pkg/proxy/iptables/proxier.go). Cilium looks a pod's own connection up
in the internal scope (socket LB / bpf_lxc, SVC_FLAG_TWO_SCOPES), so internalTrafficPolicy
Local keeps it on the client's node, and where the node has no endpoint the no-backend
response refuses it. That is an outage no NetworkPolicy can undo: nothing is denied by
policy. The Service (internalTrafficPolicy Cluster) or the placement of its backends (one on
every node with clients) has to change.
"""

from __future__ import annotations

from netparity.engine.service_d22 import itp_local_nodes
from netparity.lint.findings import Finding
from netparity.lint.remedies.context import NoFix, Proposal, RemedyContext


def itp_local(ctx: RemedyContext, finding: Finding) -> Proposal:
    """D22: name the Service and the nodes without a backend; advise instead of a fix."""
    name = finding.service or "the Service"
    nodes = ""
    if finding.service is not None:
        ns, _, svc_name = finding.service.partition("/")
        svc = ctx.snapshot.service(ns, svc_name)
        if svc is not None:
            bare = itp_local_nodes(svc, ctx.snapshot.backends(svc), ctx.snapshot.pods)
            if bare:
                nodes = f" (nodes without a backend: {', '.join(bare)})"
    raise NoFix(
        f"Service {name} has internalTrafficPolicy Local, which Cilium also applies to a "
        "pod's connections to its LoadBalancer IP and its own node's NodePort (kube-proxy "
        "sent them to every endpoint): pods on a node without a ready backend"
        f"{nodes} are refused, and no NetworkPolicy can change that (D22). Set "
        "internalTrafficPolicy: Cluster on the Service, or run a backend on every node "
        "with clients (a DaemonSet, or topologySpreadConstraints); otherwise accept the "
        "finding (--accept)"
    )
