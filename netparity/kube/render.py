"""Probe objects rendered from the jinja2 manifests in probes/templates/ to wire dicts."""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2
import yaml

from netparity.errors import ClusterError, InputError
from netparity.kube import RUN_LABEL, TWIN_LABEL
from netparity.model.objects import ContainerPort, Pod, Protocol, Service, ServicePort, ServiceType

DEFAULT_IMAGE = "python:3.12-slim"
AGENT_MOUNT = "/agent"
AGENT_PATH = f"{AGENT_MOUNT}/agent.py"
CONTROL_PORT = (
    65531  # served (TCP) by a twin that has no TCP port of its own, for its startup probe
)
_RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
_IMAGE = re.compile(
    r"^[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)

# `agent.py probe` reads stdin to EOF. An exec over the v4 websocket protocol cannot
# close stdin, so the command reads exactly one line (the batch) and hands it to the
# unchanged agent as its whole stdin.
PROBE_COMMAND: tuple[str, ...] = (
    "python3",
    "-c",
    "import io,runpy,sys;"
    "d=sys.stdin.buffer.readline();"
    "sys.stdin=io.TextIOWrapper(io.BytesIO(d));"
    f"sys.argv=[{AGENT_PATH!r},'probe'];"
    f"runpy.run_path({AGENT_PATH!r},run_name='__main__')",
)


# Every mesh's own opt-out, forced on every twin: a sidecar would answer (or refuse) in
# the agent's place and change the traffic. Istio reads the label before the annotation,
# Kuma prefers the label; Linkerd, OSM and Consul read annotations.
MESH_OPT_OUT_LABELS: Mapping[str, str] = {
    "sidecar.istio.io/inject": "false",
    "kuma.io/sidecar-injection": "disabled",
}
MESH_OPT_OUT_ANNOTATIONS: Mapping[str, str] = {
    "sidecar.istio.io/inject": "false",
    "linkerd.io/inject": "disabled",
    "openservicemesh.io/sidecar-injection": "disabled",
    "kuma.io/sidecar-injection": "disabled",
    "consul.hashicorp.com/connect-inject": "false",
}
# Labels that opt a pod into a mesh revision (injection by revision): never copied.
MESH_DROPPED_LABELS = frozenset({"istio.io/rev"})
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# What a twin asks of its node (the template's requests): for the room check before creating.
TWIN_CPU_MILLI = 10
TWIN_MEMORY_BYTES = 32 * 1024 * 1024


def probes_dir() -> Traversable:
    """probes/ (the agent and the manifests): the package data `netparity/probes/` of an
    installed netparity, or the repository's own probes/ folder in a checkout."""
    root: Traversable
    try:
        root = importlib.resources.files("netparity.probes")
    except ModuleNotFoundError:  # a checkout on sys.path: probes/ beside the package
        root = Path(__file__).resolve().parents[2] / "probes"
    if not root.joinpath("agent.py").is_file() or not root.joinpath("templates").is_dir():
        raise ClusterError(f"the probe agent and manifests are missing: expected them in {root}")
    return root


def _template_source(name: str) -> str:
    return probes_dir().joinpath("templates").joinpath(name).read_text(encoding="utf-8")


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def render(template: str, **values: Any) -> dict[str, Any]:
    """Render one manifest template to a wire dict."""
    text = _env().get_template(template).render(**values)
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise ClusterError(f"the template {template} did not render to one object")
    return doc


def agent_source() -> str:
    return probes_dir().joinpath("agent.py").read_text(encoding="utf-8")


def rbac_source() -> str:
    """probes/rbac.yaml, as shipped."""
    return probes_dir().joinpath("rbac.yaml").read_text(encoding="utf-8")


def short_hash(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def new_run_id(now: datetime) -> str:
    """`YYYYMMDD-HHMMSS-xxxx` (UTC): sortable by start time, a valid name part and label value."""
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def is_run_id(value: str) -> bool:
    return bool(_RUN_ID.match(value))


def check_image(image: str) -> str:
    """An image reference (`name[:tag][@sha256:digest]`), or InputError."""
    if not _IMAGE.match(image):
        raise InputError(
            f"not an image reference: {image!r} (expected name[:tag][@sha256:<64 hex>])",
            field="--probe-image",
        )
    return image


def anchor_name(run_id: str) -> str:
    return f"netparity-run-{run_id}"


def twin_name(run_id: str, pod_key: str) -> str:
    return f"netparity-{run_id}-{short_hash(pod_key)}"


def service_name(run_id: str, service_key: str, backend_key: str) -> str:
    return f"np-{run_id}-{short_hash(service_key + '|' + backend_key, 8)}"


# A LoadBalancer Service of the run copies what decides its path and exposure, from an
# allow-list: internal or not and in which subnet, the health probe, the addresses allowed
# in. Never what claims an Azure resource (a static IP: loadBalancerIP,
# azure-load-balancer-ipv4/ipv6; a public IP name or prefix: azure-pip-*; a DNS label:
# azure-dns-label-name; a Private Link Service: azure-pls-*), which the real one holds.
_AZ = "service.beta.kubernetes.io/"
LB_ANNOTATIONS_COPIED = frozenset(
    {
        f"{_AZ}azure-load-balancer-internal",
        f"{_AZ}azure-load-balancer-internal-subnet",
        f"{_AZ}azure-allowed-service-tags",
        f"{_AZ}azure-allowed-ip-ranges",
    }
)
_LB_ANNOTATION_PATTERNS = (
    re.compile(re.escape(_AZ) + r"azure-load-balancer-health-probe-[a-z-]+"),
    re.compile(re.escape(_AZ) + r"port_\d+_(health-probe_[a-z-]+|no_probe_rule|no_lb_rule)"),
)


def copied_lb_annotations(service: Service) -> dict[str, str]:
    """The real Service's load balancer annotations that its run twin carries."""
    return {
        k: v
        for k, v in service.load_balancer_annotations.items()
        if k in LB_ANNOTATIONS_COPIED or any(p.fullmatch(k) for p in _LB_ANNOTATION_PATTERNS)
    }


# --------------------------------------------------------------------------- manifests


def anchor_manifest(*, run_id: str, namespace: str, started: str) -> dict[str, Any]:
    return render(
        "anchor.yaml.j2",
        name=anchor_name(run_id),
        namespace=namespace,
        run_id=run_id,
        started=started,
        agent_source=agent_source(),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServePorts:
    """What a twin's agent listens on: its real containerPorts plus the ports probed."""

    tcp: tuple[int, ...] = ()
    udp: tuple[int, ...] = ()
    sctp: tuple[int, ...] = ()

    def of(self, protocol: Protocol) -> tuple[int, ...]:
        return {Protocol.TCP: self.tcp, Protocol.UDP: self.udp, Protocol.SCTP: self.sctp}[protocol]


def serve_ports(pod: Pod, extra: Sequence[tuple[int, Protocol]] = ()) -> ServePorts:
    want: dict[Protocol, set[int]] = {p: set() for p in Protocol}
    for cp in pod.ports:
        want[cp.protocol].add(cp.port)
    for port, protocol in extra:
        want[protocol].add(port)
    if not want[Protocol.TCP]:
        want[Protocol.TCP].add(CONTROL_PORT)
    return ServePorts(
        tcp=tuple(sorted(want[Protocol.TCP])),
        udp=tuple(sorted(want[Protocol.UDP])),
        sctp=tuple(sorted(want[Protocol.SCTP])),
    )


def _ranges(ports: Sequence[int]) -> str:
    return ",".join(str(p) for p in ports)


def serve_command(pod: Pod, ports: ServePorts) -> list[str]:
    cmd = ["python3", AGENT_PATH, "serve", "--name", pod.key]
    for flag, values in (("--tcp", ports.tcp), ("--udp", ports.udp), ("--sctp", ports.sctp)):
        if values:
            cmd += [flag, _ranges(values)]
    return cmd


def health_command(pod: Pod, ports: ServePorts) -> list[str]:
    """The exec command of the twin's startup, readiness and liveness probes: the agent's
    `health`, which asks the serving agent on loopback for its token (no policy sees
    loopback, and the twin gets no extra port). The agent binds TCP ports in ascending
    order before any other: once the highest answers, every TCP listener is bound (UDP
    and SCTP follow within microseconds)."""
    return ["python3", AGENT_PATH, "health", "--tcp", str(max(ports.tcp)), "--name", pod.key]


def twin_labels(pod: Pod, *, leave_out: frozenset[str] = frozenset()) -> dict[str, str]:
    """The real pod's labels less mesh revisions and `leave_out`, with every mesh's
    opt-out forced (the run and twin labels are added by twin_manifest)."""
    labels = {
        k: v for k, v in pod.labels.items() if k not in MESH_DROPPED_LABELS and k not in leave_out
    }
    labels.update(MESH_OPT_OUT_LABELS)
    return labels


def changed_labels(pod: Pod, *, leave_out: frozenset[str] = frozenset()) -> dict[str, str]:
    """Label key -> what the twin carries instead of the real pod's value ("" = left out)."""
    twin = twin_labels(pod, leave_out=leave_out)
    out: dict[str, str] = {}
    for key in sorted(set(pod.labels) | set(twin)):
        if pod.labels.get(key) != twin.get(key):
            out[key] = twin.get(key, "")
    return out


def _container_ports(ports: Sequence[ContainerPort]) -> list[ContainerPort]:
    seen: set[tuple[int, Protocol]] = set()
    out: list[ContainerPort] = []
    for cp in ports:
        if (cp.port, cp.protocol) not in seen:
            seen.add((cp.port, cp.protocol))
            out.append(cp)
    return out


DEFAULT_DEADLINE = 3600  # seconds: a twin's activeDeadlineSeconds when none is given


def twin_manifest(
    *,
    run_id: str,
    pod: Pod,
    anchor_uid: str,
    image: str,
    ports: ServePorts,
    hostname: str | None = None,
    deadline: int = DEFAULT_DEADLINE,
    leave_out: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The twin of a real pod: its labels (less `leave_out`, with every mesh's opt-out),
    containerPorts and node (required node affinity on the node's `hostname` label, so
    the scheduler places it and says why not); the agent serving until `deadline` s."""
    host = hostname or pod.node_name
    if not host:
        raise ClusterError(f"pod {pod.key} has no node: a twin needs the node to stand on")
    if deadline < 1:
        raise ClusterError(f"activeDeadlineSeconds must be positive, got {deadline}")
    labels = twin_labels(pod, leave_out=leave_out)
    labels[RUN_LABEL] = run_id
    labels[TWIN_LABEL] = short_hash(pod.key)
    annotations = dict(MESH_OPT_OUT_ANNOTATIONS)
    annotations[SAFE_TO_EVICT] = "true"
    every_port = [*ports.tcp, *ports.udp, *ports.sctp]
    return render(
        "twin-pod.yaml.j2",
        name=twin_name(run_id, pod.key),
        namespace=pod.namespace,
        labels=labels,
        annotations=annotations,
        twin_of=pod.key,
        anchor_name=anchor_name(run_id),
        anchor_uid=anchor_uid,
        hostname=host,
        deadline=int(deadline),
        image=image,
        command=serve_command(pod, ports),
        health_command=health_command(pod, ports),
        ports=[
            {"port": cp.port, "protocol": str(cp.protocol), "name": cp.name}
            for cp in _container_ports(pod.ports)
        ],
        low_ports=any(p < 1024 for p in every_port),
    )


def service_manifest(
    *,
    run_id: str,
    service: Service,
    backend: Pod,
    anchor_uid: str,
    type: ServiceType,
) -> dict[str, Any]:
    """The run's own Service for a real one, selecting only the backend's twin."""
    external = type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
    lb = type is ServiceType.LOAD_BALANCER
    return render(
        "service.yaml.j2",
        name=service_name(run_id, service.key, backend.key),
        namespace=service.namespace,
        run_id=run_id,
        twin=short_hash(backend.key),
        twin_of=service.key,
        anchor_name=anchor_name(run_id),
        anchor_uid=anchor_uid,
        type=str(type),
        external_traffic_policy=service.external_traffic_policy if external else None,
        internal_traffic_policy=service.internal_traffic_policy,
        annotations=copied_lb_annotations(service) if lb else {},
        load_balancer_class=service.load_balancer_class if lb else None,
        source_ranges=service.load_balancer_source_ranges if lb else None,
        ports=[_service_port(sp) for sp in service.ports],
    )


def _service_port(sp: ServicePort) -> Mapping[str, Any]:
    return {
        "port": sp.port,
        "protocol": str(sp.protocol),
        "target_port": sp.target_port,
        "name": sp.name,
    }


# --------------------------------------------------------------------------- host probe pods
# --allow-host-network: node sources are probed from one hostNetwork pod per node, in a
# namespace of the run's own at the `privileged` Pod Security level (the one exception to
# the restricted rule: hostNetwork is forbidden under restricted and baseline).

PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
HOST_KEY_PREFIX = "node:"  # a host probe pod's key in a layout: node:NAME
# The host pod's command: say ready, then wait (it listens on no port; it only probes out).
HOST_WAIT_COMMAND: tuple[str, ...] = (
    "python3",
    "-c",
    "import signal,sys;"
    "signal.signal(signal.SIGTERM,lambda *a:sys.exit(0));"
    "print('ready',flush=True);"
    "signal.pause()",
)
# Its startup, readiness and liveness probes: the interpreter runs and the agent is mounted.
HOST_HEALTH_COMMAND: tuple[str, ...] = ("python3", AGENT_PATH, "--version")


def host_key(node: str) -> str:
    return f"{HOST_KEY_PREFIX}{node}"


def host_namespace_name(run_id: str) -> str:
    return f"netparity-host-{run_id}"


def host_pod_name(run_id: str, node: str) -> str:
    return f"netparity-{run_id}-node-{short_hash(node)}"


def host_namespace_manifest(*, run_id: str) -> dict[str, Any]:
    """The run's own namespace for its host probe pods: labelled with the run (so that every
    cleanup finds and removes it) and for the `privileged` Pod Security level."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": host_namespace_name(run_id),
            "labels": {
                RUN_LABEL: run_id,
                "app.kubernetes.io/managed-by": "netparity",
                PSA_ENFORCE: "privileged",
                f"{PSA_ENFORCE}-version": "latest",
            },
            "annotations": {
                "netparity.io/note": (
                    "Host probe pods of a netparity run (--allow-host-network): hostNetwork, "
                    "no added capabilities, no listening port; safe to delete (netparity cleanup)."
                ),
            },
        },
    }


def host_pod_manifest(
    *,
    run_id: str,
    node: str,
    hostname: str | None = None,
    anchor_uid: str,
    image: str,
    deadline: int = DEFAULT_DEADLINE,
) -> dict[str, Any]:
    """The host probe pod of `node`: hostNetwork, on that node (required node affinity on
    its `hostname` label), listening on nothing, in the run's host namespace."""
    if deadline < 1:
        raise ClusterError(f"activeDeadlineSeconds must be positive, got {deadline}")
    labels = dict(MESH_OPT_OUT_LABELS)
    labels[RUN_LABEL] = run_id
    labels[TWIN_LABEL] = short_hash(host_key(node))
    annotations = dict(MESH_OPT_OUT_ANNOTATIONS)
    annotations[SAFE_TO_EVICT] = "true"
    return render(
        "host-pod.yaml.j2",
        name=host_pod_name(run_id, node),
        namespace=host_namespace_name(run_id),
        labels=labels,
        annotations=annotations,
        node=node,
        anchor_name=anchor_name(run_id),
        anchor_uid=anchor_uid,
        hostname=hostname or node,
        deadline=int(deadline),
        image=image,
        command=list(HOST_WAIT_COMMAND),
        health_command=list(HOST_HEALTH_COMMAND),
    )
