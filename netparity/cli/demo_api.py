"""`netparity demo --backend kubernetes`: the demo's migration through the lab's Kubernetes API.

The lab is built as for the lab demo, then its API server starts (`lab up --api`: context
`netparity-lab-NAME` merged into the kubeconfig) and the suites run against that context
from the lab's outside host (`ip netns exec np-NAME-ext0`), as docs/lab-api.md describes:
the Kubernetes backend creates its twins, Services and Leases through the API, and they
become lab pods under the lab's dataplane. After `lab upgrade` the demo waits until the API
shows the upgraded lab. At the end the server stops, which removes the context.

The probes the Kubernetes backend cannot run here (LoadBalancer without
--allow-load-balancer, node sources without --allow-host-network, outside addresses nothing
answers at) are listed with their reasons: never hidden.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """How the demo's suites reach the lab: the --cluster value, a command prefix (the
    network namespace they run in), the environment, and whether it is the lab's API."""

    cluster: str
    prefix: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    api: bool = False


def cluster(lab: str) -> str:
    from netparity.labapi.kubeconfig import context_name

    return context_name(lab)


def start(lab: str, kubeconfig: str | None, say: Callable[[str], None]) -> Route:
    """Start the API server of lab `lab` (built and ready); the route of its suites runs."""
    from netparity.errors import ClusterError
    from netparity.labapi import serve
    from netparity.labapi.kubeconfig import default_kubeconfig

    config = Path(kubeconfig).resolve() if kubeconfig else default_kubeconfig()
    from netparity.cli.rbac import lab_rbac
    from netparity.lab import status

    state = status(lab)
    assert state.topology is not None
    url = serve.start(lab, config, rbac=lab_rbac(state.topology.snapshot, state.dataplane))
    outside = serve.outside_host(lab)
    if outside is None:
        raise ClusterError(f"lab {lab} has no outside host to run the suites from")
    say(
        f"lab {lab} answers the Kubernetes API at {url}: context {cluster(lab)} in {config}; "
        f"the suites run from the lab's outside host {outside} (the cluster sees them as "
        "the outside client, as on AKS it sees your machine)"
    )
    env = {**os.environ, "KUBECONFIG": str(config)}
    return Route(cluster=cluster(lab), prefix=("ip", "netns", "exec", outside), env=env, api=True)


def shown(lab: str) -> None:
    """Wait until the API shows the lab's current generation (after `lab upgrade`)."""
    from netparity.lab import status
    from netparity.labapi import serve

    serve.wait_shown(lab, status(lab).generation)


def stop(lab: str) -> bool:
    """End the lab's API server (it removes the pods a run left and its context)."""
    from netparity.labapi import serve

    return serve.stop(lab)


def not_run_lines(folder: Path, phases: tuple[str, ...] = ("pre", "post")) -> list[str]:
    """The probes the newest run of each phase in `folder` could not run, by reason, each
    named once per reason; one not run in only some of the phases says in which. A probe
    not run before the upgrade but run after it is listed too: its "new" verdict compares
    with nothing."""
    found: dict[tuple[str, str], tuple[str, list[str]]] = {}  # (reason, id) -> title, phases
    backend = "this"
    lines: list[str] = []
    read: list[str] = []
    for phase in phases:
        records = sorted(folder.glob(f"record-{phase}-*.json"))
        if not records:
            continue
        try:
            doc = json.loads(records[-1].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            lines.append(f"the {phase} record {records[-1]} cannot be read")
            continue
        read.append(phase)
        backend = str(doc.get("backend") or backend)
        for entry in doc.get("not_run") or ():
            if isinstance(entry, dict):
                key = (str(entry.get("reason") or "no reason given"), str(entry.get("id")))
                found.setdefault(key, (str(entry.get("title")), []))[1].append(phase)
    if not found:
        return lines
    ids = {pid for _, pid in found}
    reasons = Counter(reason for reason, _ in found)
    lines.append(f"{len(ids)} probes were not run by the {backend} backend here, by reason:")
    for reason, count in reasons.most_common():
        lines.append(f"  {count} x {reason}")
        for (why, pid), (title, seen) in sorted(found.items()):
            if why == reason:
                only = "" if len(seen) == len(read) else f" (only {' and '.join(seen)})"
                lines.append(f"      {pid} {title}{only}")
    return lines
