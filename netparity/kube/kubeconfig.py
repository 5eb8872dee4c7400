"""Where the Kubernetes client connects: a kubeconfig context, or the in-cluster service
account. One of the two modules beside `kube/client.py` that import `kubernetes` (with
`kube/pod_exec.py`); `Kube.connect` is its entry point.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as _k8s_config
from kubernetes.config.config_exception import ConfigException

from netparity.errors import ClusterError

# The client is untyped: reach it through Any so that nothing untyped leaks out.
k8s_config: Any = _k8s_config

IN_CLUSTER = "in-cluster"


def _kubeconfig_paths(kubeconfig: str | None) -> str:
    if kubeconfig:
        return kubeconfig
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def _kubeconfig_exists(paths: str) -> bool:
    return any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p)


def api_client_for(context: str | None, *, kubeconfig: str | None = None) -> tuple[Any, str]:
    """The official client's ApiClient for a kubeconfig context (None: the current one), or
    for the in-cluster service account, and the name the cluster goes by."""
    paths = _kubeconfig_paths(kubeconfig)
    in_cluster = context == IN_CLUSTER or (
        context is None
        and "KUBERNETES_SERVICE_HOST" in os.environ
        and not _kubeconfig_exists(paths)
    )
    if in_cluster:
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as e:
            raise ClusterError(f"cannot use the in-cluster configuration: {e}") from None
        return k8s.ApiClient(configuration), IN_CLUSTER
    if not _kubeconfig_exists(paths):
        raise ClusterError(
            f"no kubeconfig at {paths}: set KUBECONFIG or run `az aks get-credentials`"
        )
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=paths)
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as e:
        raise ClusterError(f"cannot read the kubeconfig {paths}: {e}") from None
    names = [str(c.get("name")) for c in contexts or ()]
    if context is not None and context not in names:
        listed = ", ".join(sorted(names)) or "none"
        raise ClusterError(
            f"the kubeconfig {paths} has no context {context!r} (contexts: {listed})"
        )
    chosen = context if context is not None else str((current or {}).get("name", ""))
    try:
        api = k8s_config.new_client_from_config(
            config_file=paths, context=chosen, persist_config=False
        )
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as e:
        raise ClusterError(f"cannot load context {chosen!r} from {paths}: {e}") from None
    return api, chosen
