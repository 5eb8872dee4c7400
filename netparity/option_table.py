"""The plugin's option table: each option's flag, destination, metavar, help text and ini
twin, declared to pytest by `pytest_addoption`. The resolvers that read them are in
options.py (which re-exports these names).
"""

from __future__ import annotations

import pytest

from netparity.engine.dataplane import NEWEST_TARGET, TARGETS

GROUP = "netparity"
GROUP_DESCRIPTION = "netparity: NetworkPolicy parity probes (pytest suites/ --cluster NAME)"

HELP_CLUSTER = (
    "the cluster to probe: lab or lab:NAME (a local lab of network namespaces; built from "
    "examples/aks-migration.yaml under npm if none is up), file:SNAPSHOT.yaml[@DATAPLANE] "
    "(a dry run: the engine answers every probe), or a kubeconfig context"
)
HELP_PHASE = (
    "auto (default): pre where this cluster has no baseline, post where it has one and "
    "the dataplane changed; pre: check against the predictions and record the baseline; "
    "post: compare with the baseline; during: watch the sentinel probes every --interval "
    "while the nodes are migrated (timeline.json; one item per sentinel, failing on a "
    "disruption or exposure window the accept file does not list)"
)
HELP_INTERVAL = "with --phase during: seconds between two rounds of the sentinel probes (default 2)"
HELP_UNTIL_STABLE = (
    "with --phase during: stop once the target dataplane enforces on every node and every "
    "sentinel has its target prediction for 3 rounds in a row"
)
HELP_MAX_SENTINELS = "with --phase during: the most sentinel probes watched (default 500)"
HELP_BASELINE = "the baseline record (default: REPORT_DIR/<cluster>/baseline.json)"
HELP_TARGET = "the dataplane the cluster moves to: cilium (default) or cilium-1.16"
HELP_ACCEPT = "accept file: a YAML list of {id, reason}, changes reviewed and accepted (they pass)"
HELP_PROBES = "an explicit probe file (docs/probes.md); may be given more than once"
HELP_PROBE_TIMEOUT = "seconds a probe waits before it counts as dropped (default 2)"
HELP_PROBE_RETRIES = (
    "how many times a deny is probed again before it is believed (default 1); "
    "was --retries, which pytest-retry defines"
)
HELP_REPORT_DIR = "where records, the baseline and the parity report go (default reports/)"
HELP_FORCE = "with --phase pre: replace an existing baseline"
HELP_DATAPLANE = (
    "the dataplane the cluster runs, overriding what is detected in kube-system "
    "(npm, cilium, cilium-1.16, spec)"
)
HELP_PROBE_IMAGE = (
    "Kubernetes: the image of the probe pods (needs python3; mirrors and digest pins "
    "such as registry/python@sha256:... are fine; default python:3.12-slim)"
)
HELP_SETTLE = (
    "Kubernetes: seconds to let the dataplane program new probe pods before probing when it "
    "shows no per-pod state (NPM; Cilium is waited for through its CiliumEndpoints), and "
    "between a probe and its retry (default 5)"
)
HELP_WAIT_READY = (
    "Kubernetes: a cluster in the middle of the migration to Cilium (azure-npm and cilium "
    "both present, or Cilium not ready on every Linux node) is refused; wait up to this "
    "many seconds for it to finish instead (default 0: refuse at once)"
)
HELP_MAX_PARALLEL = "Kubernetes: how many probe batches run at once (default 8)"
HELP_KUBE_QPS = (
    "Kubernetes: the most API requests a second the run makes (a token bucket with a burst "
    "of twice that, as client-go's; default 20). The run prints how many it made"
)
HELP_MAX_DURATION = (
    "Kubernetes: the longest the run may take, in seconds; probe pods are removed by the "
    "cluster after it even if pytest is killed (their activeDeadlineSeconds; default: the "
    "run's planned length plus 10 minutes). Give it for long runs. With --phase during: "
    "how long the watch goes on at most (on a lab too; Kubernetes default 7200), the probe "
    "pods' deadline adding 300 s"
)
HELP_EXTERNAL_IP = (
    "the address the cluster sees when the machine running pytest connects from outside "
    "(after any NAT): the planner predicts outside traffic from it; default 203.0.113.10, "
    "a documentation address that suits the lab"
)
HELP_RESPONDER = (
    "Kubernetes: ADDRESS[:PORTS] of a machine outside the cluster that its pods reach, "
    "running `python3 probes/agent.py serve --name netparity-responder --tcp PORTS "
    "[--udp PORTS]` (PORTS: 443,8080-8081,53/udp; default 80,443,8080,8443,53/udp). "
    "Checked to answer before probing; outside probes go only there (every ipBlock holding "
    "it), the others are predicted only. Give the same one to every phase"
)
HELP_SERVICE_CIDR = (
    "the cluster's Service range (az aks show --query networkProfile.serviceCidr) where the "
    "ClusterIPs do not show it: no outside address is chosen inside it"
)
HELP_ALLOW_LB = (
    "Kubernetes: let the run create its own LoadBalancer Services (they cost money and "
    "minutes on AKS); without it, LoadBalancer probes are reported as not run"
)
HELP_ALLOW_HOST_NETWORK = (
    "Kubernetes: probe node sources from one hostNetwork pod per node, in a namespace of "
    "the run at the privileged Pod Security level (no added capabilities, no listening "
    "port; needs namespace create/delete: netparity rbac --allow-host-network); without "
    "it, node sources are reported as not run"
)

PHASES = ("auto", "pre", "post", "during")
DEFAULT_TARGET = NEWEST_TARGET
DEFAULT_PROBE_TIMEOUT = 2.0
DEFAULT_PROBE_RETRIES = 1
DEFAULT_REPORT_DIR = "reports"
RETRIES_INI = "netparity_probe_retries"
OLD_RETRIES_INI = "netparity_retries"  # the ini twin of --retries, before --probe-retries


# --------------------------------------------------------------------------- options


# The options that take one value: (flag, dest, metavar, help), in --help's order.
VALUE_OPTIONS = (
    ("--cluster", "netparity_cluster", "NAME", HELP_CLUSTER),
    ("--phase", "netparity_phase", "auto|pre|post|during", HELP_PHASE),
    ("--baseline", "netparity_baseline", "FILE", HELP_BASELINE),
    ("--target", "netparity_target", "|".join(TARGETS), HELP_TARGET),
    ("--accept", "netparity_accept", "FILE", HELP_ACCEPT),
)
# Not --retries: pytest-retry defines it, and argparse refuses a second definition,
# so pytest could not start at all with both plugins installed (README: renamed options).
MORE_VALUE_OPTIONS = (
    ("--probe-timeout", "netparity_probe_timeout", "SECONDS", HELP_PROBE_TIMEOUT),
    ("--probe-retries", "netparity_probe_retries", "N", HELP_PROBE_RETRIES),
    ("--report-dir", "netparity_report_dir", "DIR", HELP_REPORT_DIR),
    ("--interval", "netparity_interval", "SECONDS", HELP_INTERVAL),
    ("--max-sentinels", "netparity_max_sentinels", "N", HELP_MAX_SENTINELS),
)
KUBE_VALUE_OPTIONS = (
    ("--dataplane", "netparity_dataplane", "NAME", HELP_DATAPLANE),
    ("--probe-image", "netparity_probe_image", "IMAGE", HELP_PROBE_IMAGE),
    ("--max-parallel", "netparity_max_parallel", "N", HELP_MAX_PARALLEL),
    ("--kube-qps", "netparity_kube_qps", "N", HELP_KUBE_QPS),
    ("--settle", "netparity_settle", "SECONDS", HELP_SETTLE),
    ("--wait-ready", "netparity_wait_ready", "SECONDS", HELP_WAIT_READY),
    ("--max-duration", "netparity_max_duration", "SECONDS", HELP_MAX_DURATION),
    ("--external-ip", "netparity_external_ip", "ADDRESS", HELP_EXTERNAL_IP),
    ("--responder", "netparity_responder", "ADDRESS[:PORTS]", HELP_RESPONDER),
    ("--service-cidr", "netparity_service_cidr", "CIDR", HELP_SERVICE_CIDR),
)
# The ini twins: (name, help), read where the command line does not give the option.
INI_OPTIONS = (
    ("netparity_probe_image", HELP_PROBE_IMAGE),
    ("netparity_target", HELP_TARGET),
    ("netparity_accept", HELP_ACCEPT),
    ("netparity_probe_timeout", HELP_PROBE_TIMEOUT),
    ("netparity_probe_retries", HELP_PROBE_RETRIES),
    # The ini twin's old name collides with nothing: still read, with a warning.
    (OLD_RETRIES_INI, f"renamed {RETRIES_INI} (still read, with a warning)"),
    ("netparity_report_dir", HELP_REPORT_DIR),
    ("netparity_max_duration", HELP_MAX_DURATION),
    ("netparity_settle", HELP_SETTLE),
    ("netparity_wait_ready", HELP_WAIT_READY),
    ("netparity_interval", HELP_INTERVAL),
    ("netparity_max_sentinels", HELP_MAX_SENTINELS),
    ("netparity_kube_qps", HELP_KUBE_QPS),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, GROUP_DESCRIPTION)
    for flag, dest, metavar, text in VALUE_OPTIONS:
        group.addoption(flag, dest=dest, metavar=metavar, help=text)
    group.addoption(
        "--probes",
        dest="netparity_probes",
        metavar="FILE",
        action="append",
        default=[],
        help=HELP_PROBES,
    )
    for flag, dest, metavar, text in MORE_VALUE_OPTIONS:
        group.addoption(flag, dest=dest, metavar=metavar, help=text)
    group.addoption(
        "--force", dest="netparity_force", action="store_true", default=False, help=HELP_FORCE
    )
    for flag, dest, metavar, text in KUBE_VALUE_OPTIONS:
        group.addoption(flag, dest=dest, metavar=metavar, help=text)
    for flag, dest, text in (
        ("--allow-load-balancer", "netparity_allow_lb", HELP_ALLOW_LB),
        ("--allow-host-network", "netparity_allow_host_network", HELP_ALLOW_HOST_NETWORK),
        ("--until-stable", "netparity_until_stable", HELP_UNTIL_STABLE),
    ):
        group.addoption(flag, dest=dest, action="store_true", default=False, help=text)
    parser.addini(
        "netparity_allow_host_network", HELP_ALLOW_HOST_NETWORK, type="bool", default=False
    )
    parser.addini("netparity_until_stable", HELP_UNTIL_STABLE, type="bool", default=False)
    for name, text in INI_OPTIONS:
        parser.addini(name, text)
