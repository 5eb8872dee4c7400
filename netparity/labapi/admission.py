"""Admission as the API server applies it to pods: the Pod Security Standards (restricted,
baseline, privileged) from the namespace's enforce label, and an AKS Deployment
Safeguards-like policy (Gatekeeper's 403)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from netparity.labapi.wire import status_body

SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
    }
)


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """The `restricted` Pod Security Standard (latest), as the admission plugin checks it."""
    spec = pod.get("spec") or {}
    out: list[str] = []
    for field_name in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field_name):
            out.append(f"{field_name}=true")
    psc = spec.get("securityContext") or {}
    for sysctl in psc.get("sysctls") or ():
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"forbidden sysctl {sysctl.get('name')}")
    for vol in spec.get("volumes") or ():
        if not set(vol) - {"name"} <= {
            "configMap",
            "secret",
            "emptyDir",
            "projected",
            "downwardAPI",
            "csi",
            "persistentVolumeClaim",
            "ephemeral",
        }:
            out.append(f"restricted volume type in {vol.get('name')}")
    for c in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("privileged"):
            out.append(f"container {name} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(
                f'container "{name}" must set securityContext.allowPrivilegeEscalation=false'
            )
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            out.append(f'container "{name}" must set securityContext.capabilities.drop=["ALL"]')
        if set(caps.get("add") or ()) - {"NET_BIND_SERVICE"}:
            out.append(f'container "{name}" adds capabilities')
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            out.append(f'container "{name}" must set runAsNonRoot=true')
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f'container "{name}" must not set runAsUser=0')
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(
                f'container "{name}" must set seccompProfile.type to RuntimeDefault or Localhost'
            )
        for port in c.get("ports") or ():
            if port.get("hostPort"):
                out.append(f'container "{name}" uses hostPort')
    return out


PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
# Capabilities the baseline level lets a container add (Pod Security Standards, baseline).
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)


def baseline_violations(pod: Mapping[str, Any]) -> list[str]:
    """The `baseline` Pod Security Standard (latest): host namespaces, privileged
    containers, capabilities beyond the default set, hostPath volumes, host ports, unsafe
    sysctls."""
    spec = pod.get("spec") or {}
    out: list[str] = []
    for field_name in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field_name):
            out.append(f"host namespaces ({field_name}=true)")
    for sysctl in (spec.get("securityContext") or {}).get("sysctls") or ():
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"forbidden sysctl {sysctl.get('name')}")
    for vol in spec.get("volumes") or ():
        if "hostPath" in vol:
            out.append(f"hostPath volume {vol.get('name')}")
    for c in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("privileged"):
            out.append(f'privileged (container "{name}" must not set privileged=true)')
        added = set((sc.get("capabilities") or {}).get("add") or ()) - BASELINE_CAPABILITIES
        if added:
            out.append(f'non-default capabilities (container "{name}" adds {sorted(added)})')
        for port in c.get("ports") or ():
            if port.get("hostPort"):
                out.append(f'hostPort (container "{name}" uses hostPort)')
    return out


def pod_security_violations(level: str, pod: Mapping[str, Any]) -> list[str]:
    """What the Pod Security admission denies at `level` (restricted includes baseline)."""
    if level == "privileged":
        return []
    if level == "baseline":
        return baseline_violations(pod)
    return restricted_violations(pod)


def safeguards_violations(pod: Mapping[str, Any]) -> list[str]:
    """What AKS Deployment Safeguards (Enforcement; Azure Policy's Gatekeeper constraints)
    deny in a pod, as far as it applies to pods that netparity creates: readiness and
    liveness probes, CPU and memory requests and limits, a pinned image (no `:latest`, no
    missing tag), no host namespaces, no privileged containers."""
    spec = pod.get("spec") or {}
    out: list[str] = []
    for field_name in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field_name):
            out.append(f"{field_name} is not allowed")
    for c in spec.get("containers") or ():
        name = c.get("name")
        for probe in ("readinessProbe", "livenessProbe"):
            p = c.get(probe) or {}
            if not {"exec", "httpGet", "tcpSocket", "grpc"} & set(p):
                out.append(f"Container <{name}> in your Pod has no <{probe}>")
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if not (resources.get(kind) or {}).get(res):
                    out.append(f"container <{name}> has no resource {kind[:-1]} for {res}")
        image = str(c.get("image") or "")
        tail = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in tail or tail.endswith(":latest")):
            out.append(f"container <{name}> uses an image without a pinned tag: {image}")
        if (c.get("securityContext") or {}).get("privileged"):
            out.append(f"container <{name}> is privileged")
    return out


def denial(
    level: str, name: str, pod: Mapping[str, Any], *, safeguards: bool
) -> dict[str, Any] | None:
    """Pod Security at `level` (the namespace's enforce label), then the Safeguards-like
    policy if it is on: the 403 Status body of the first that denies, or None (admitted)."""
    problems = pod_security_violations(level, pod)
    if problems:
        return status_body(
            403,
            "Forbidden",
            f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": '
            + ", ".join(problems),
        )
    denied = safeguards_violations(pod) if safeguards else []
    if denied:
        return status_body(
            403,
            "Forbidden",
            'admission webhook "validation.gatekeeper.sh" denied the request: '
            + "; ".join(f"[azurepolicy-safeguards] {d}" for d in denied),
        )
    return None
