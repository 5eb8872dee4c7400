"""A Kubernetes API server that netparity's Kubernetes backend can run against: the part of
the API netparity uses (docs/lab-api.md), in memory, on loopback.

`KubeAPI` (`server`) keeps the objects and answers the verbs; `handler` routes HTTP and
authenticates; `admission` is Pod Security and a Safeguards-like policy; `scheduling`
places pods; `kubelet` starts them; `endpoints` is the EndpointSlice controller of the lab
pods `labhost` starts; `proxy` is a TCP kube-proxy on loopback; `websocket`
serves `pods/exec`. The tests run it with loopback pods; `labhost` makes its pods lab pods
(network namespaces under the lab's dataplane) and `serve` is `netparity lab up --api`.
"""

from netparity.labapi.admission import (
    BASELINE_CAPABILITIES,
    PSA_ENFORCE,
    SAFE_SYSCTLS,
    baseline_violations,
    pod_security_violations,
    restricted_violations,
    safeguards_violations,
)
from netparity.labapi.scheduling import node_matches
from netparity.labapi.server import KubeAPI
from netparity.labapi.watch import WATCH_POLL, list_page, serve_watch
from netparity.labapi.websocket import WS_GUID, ws_frame, ws_read_frame
from netparity.labapi.wire import (
    KIND_TO_RESOURCE,
    RESOURCES,
    Fault,
    PodRuntime,
    now,
    selector_matches,
    status_body,
)

__all__ = [
    "BASELINE_CAPABILITIES",
    "KIND_TO_RESOURCE",
    "PSA_ENFORCE",
    "RESOURCES",
    "SAFE_SYSCTLS",
    "WATCH_POLL",
    "WS_GUID",
    "Fault",
    "KubeAPI",
    "PodRuntime",
    "baseline_violations",
    "list_page",
    "node_matches",
    "now",
    "pod_security_violations",
    "restricted_violations",
    "safeguards_violations",
    "selector_matches",
    "serve_watch",
    "status_body",
    "ws_frame",
    "ws_read_frame",
]
