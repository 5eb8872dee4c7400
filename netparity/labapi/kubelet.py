"""The fake kubelet: a bound pod's image pulled (or failing the way a test asked), its
ConfigMap volumes written to a folder, its command started by the server's pod host (a
local process, or the lab's agent in the pod's network namespace), its status reported as
the kubelet would; and what the Cilium agent does for a running pod (a CiliumEndpoint)."""

from __future__ import annotations

import copy
import select
import subprocess
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from netparity.labapi.scheduling import PodEdit, schedule
from netparity.labapi.wire import PodRuntime, now

if TYPE_CHECKING:
    from netparity.labapi.server import KubeAPI

READY: dict[str, str] = {"type": "Ready", "status": "True"}
AGENT_READY_TIMEOUT = 15.0


def waiting(cname: str, image: str, reason: str, message: str | None = None) -> PodEdit:
    def fn(p: dict[str, Any]) -> None:
        state: dict[str, Any] = {"reason": reason}
        if message:
            state["message"] = message
        p["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        p["status"]["containerStatuses"] = [
            {
                "name": cname,
                "image": image,
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": state},
            }
        ]

    return fn


def run_kubelet(api: KubeAPI, namespace: str, name: str, uid: str) -> None:
    """Everything from a created pod to Running (or the failure the test asked for)."""
    if api.pod_start_delay:
        time.sleep(api.pod_start_delay)
    with api.lock:
        pod = copy.deepcopy(api.store.get(("pods", namespace, name)))
    if pod is None or pod["metadata"]["uid"] != uid:
        return
    spec = pod["spec"]
    node = schedule(api, namespace, name, uid, spec)
    if node is None or api.node_ip(node) is None:
        return  # no kubelet for a node that does not exist: Pending forever
    container = spec["containers"][0]
    cname, image = container["name"], container["image"]
    if node in api.reject_nodes:
        reason, message = api.reject_nodes[node]

        def reject(p: dict[str, Any]) -> None:
            p["status"].update(phase="Failed", reason=reason, message=message)

        api._update_pod(namespace, name, uid, reject)
        return
    if node in api.stuck_nodes:
        api._update_pod(namespace, name, uid, waiting(cname, image, "ContainerCreating"))
        return
    if not _pull(api, namespace, name, uid, cname, image):
        return
    api._update_pod(namespace, name, uid, waiting(cname, image, "ContainerCreating"))
    _start(api, pod, node)


def _pull(api: KubeAPI, namespace: str, name: str, uid: str, cname: str, image: str) -> bool:
    """A registry that refuses some pulls (429) before one succeeds, or never has the image."""
    while True:
        with api.lock:
            left = api.pull_flaky.get(image, 0)
            if left > 0:
                api.pull_flaky[image] = left - 1
        if left <= 0:
            break
        message = (
            f'failed to pull and unpack image "{image}": failed to copy: httpReadSeeker: '
            "failed open: unexpected status code: 429 Too Many Requests - Server message: "
            "toomanyrequests: You have reached your pull rate limit."
        )
        if not api._update_pod(
            namespace, name, uid, waiting(cname, image, "ErrImagePull", message)
        ):
            return False
        time.sleep(api.pull_backoff / 2)
        backoff = waiting(cname, image, "ImagePullBackOff", f'Back-off pulling image "{image}"')
        if not api._update_pod(namespace, name, uid, backoff):
            return False
        time.sleep(api.pull_backoff / 2)
    if image in api.pull_fail_images:
        failed = f'failed to pull and unpack image "{image}": not found'
        api._update_pod(namespace, name, uid, waiting(cname, image, "ErrImagePull", failed))
        time.sleep(0.2)
        backoff = waiting(cname, image, "ImagePullBackOff", f'Back-off pulling image "{image}"')
        api._update_pod(namespace, name, uid, backoff)
        return False
    return True


def mount_volumes(api: KubeAPI, pod: Mapping[str, Any], rt: PodRuntime) -> bool:
    """Write the pod's ConfigMap volumes to a folder of their own (False: one is missing,
    the pod stays ContainerCreating)."""
    spec, namespace = pod["spec"], pod["metadata"]["namespace"]
    container = spec["containers"][0]
    folder = api.tmp / rt.uid
    for vol in spec.get("volumes") or ():
        cm = vol.get("configMap")
        if not cm:
            continue
        with api.lock:
            source = copy.deepcopy(api.store.get(("configmaps", namespace, cm["name"])))
        if source is None:
            return False
        vdir = folder / vol["name"]
        vdir.mkdir(parents=True)
        data = source.get("data") or {}
        items = cm.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            (vdir / item["path"]).write_text(data[item["key"]], encoding="utf-8")
        for mount in container.get("volumeMounts") or ():
            if mount["name"] == vol["name"]:
                rt.mounts[mount["mountPath"]] = str(vdir)
    return True


def _start(api: KubeAPI, pod: dict[str, Any], node: str) -> None:
    meta, spec = pod["metadata"], pod["spec"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    container = spec["containers"][0]
    rt = PodRuntime(uid=uid, ip="")
    if not mount_volumes(api, pod, rt):
        return
    ip = api.pod_address(pod, node, rt)
    if ip is None:
        return
    rt.ip = ip
    argv = api.local_argv(rt, [*(container.get("command") or ()), *(container.get("args") or ())])
    if "serve" in argv:
        argv += ["--bind", ip]
        if "--name" in argv:
            at = argv.index("--name") + 1
            argv[at] = api.answer_as.get(argv[at], argv[at])
    with api.lock:
        if ("pods", namespace, name) not in api.store or api.stopping:
            api.release(rt)
            return
        api.runtimes[uid] = rt
        # Started under the lock: `stop()` and the pod's deletion either find the process
        # in the runtime (and end it) or come first (and it never starts). Started after
        # the lock, it could start after they ended the runtime and outlive the server.
        rt.proc = api.launch(rt, argv)
    stdout = rt.proc.stdout
    assert stdout is not None
    try:
        r, _, _ = select.select([stdout], [], [], AGENT_READY_TIMEOUT)
        ready = bool(r) and stdout.readline().strip() == "ready"
    except (ValueError, OSError):  # ended meanwhile (`stop()`, the pod deleted): its pipe shut
        return
    if ready:
        _running(api, pod, node, ip)
        return
    _crashed(api, pod, ip, rt.proc)


def _running(api: KubeAPI, pod: Mapping[str, Any], node: str, ip: str) -> None:
    meta, container = pod["metadata"], pod["spec"]["containers"][0]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    started = now()
    status = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": api.node_ip(node),
        "startTime": started,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            ready_condition(pod),
        ],
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }
        ],
    }

    def running(p: dict[str, Any]) -> None:
        p["status"].update(copy.deepcopy(status))

    api._update_pod(namespace, name, uid, running)
    api.running_at[name] = time.monotonic()
    api.pod_running(namespace, name, uid)


def ready_condition(pod: Mapping[str, Any]) -> dict[str, str]:
    """The Ready condition of a pod whose containers are ready, as the kubelet sets it: True
    unless a readiness gate's condition is not True (nobody sets netparity's gate)."""
    conditions = {
        c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or ()
    }
    for gate in pod["spec"].get("readinessGates") or ():
        kind = gate.get("conditionType")
        if conditions.get(kind) != "True":
            how = "does not exist" if kind not in conditions else f"is {conditions[kind]}"
            return {
                "type": "Ready",
                "status": "False",
                "reason": "ReadinessGatesNotReady",
                "message": f'corresponding condition of pod readiness gate "{kind}" {how}.',
            }
    return dict(READY)


def _crashed(api: KubeAPI, pod: Mapping[str, Any], ip: str, proc: subprocess.Popen[str]) -> None:
    meta, container = pod["metadata"], pod["spec"]["containers"][0]
    proc.kill()
    _, err = proc.communicate(timeout=5)
    code = proc.returncode
    terminated = {"exitCode": code, "reason": "Error", "message": (err or "")[-500:]}

    def crashed(p: dict[str, Any]) -> None:
        p["status"].update(
            phase="Failed",
            podIP=ip,
            containerStatuses=[
                {
                    "name": container["name"],
                    "image": container["image"],
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        )

    api._update_pod(meta["namespace"], meta["name"], meta["uid"], crashed)


def cilium_endpoint(api: KubeAPI, namespace: str, name: str, uid: str) -> None:
    """What the Cilium agent does for a new pod: a CiliumEndpoint (same name), first
    waiting for its identity, then ready after `cep_ready_delay`."""
    cep = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumEndpoint",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}],
        },
        "status": {"state": "waiting-for-identity"},
    }
    with api.lock:
        if ("pods", namespace, name) not in api.store:
            return
        api._stamp(cep)
        api.store[("ciliumendpoints", namespace, name)] = cep
    delay = api.cep_ready_delay
    if delay is None:
        return

    def ready() -> None:
        time.sleep(delay)
        with api.lock:
            obj = api.store.get(("ciliumendpoints", namespace, name))
            if obj is None:
                return
            obj["status"] = {"state": "ready", "identity": {"id": 12345}}
            api._stamp(obj)
            api.cep_ready_at[name] = time.monotonic()

    api._spawn(ready, ())
