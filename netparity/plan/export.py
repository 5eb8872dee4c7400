"""A plan as JSON values and as table rows (the CLI prints them; reports may reuse them).

Endpoints are written in the probe-file syntax (`ns/name`, `node:NAME`, `ip:ADDR`,
`svc:NS/NAME`, `nodeport:NS/NAME@NODE`, `lb:NS/NAME@NODE`), so any probe of a plan can be
copied into a probe file.
"""

from __future__ import annotations

from typing import Any

from netparity.engine.traffic import Endpoint, ServiceEndpoint
from netparity.model.objects import Service
from netparity.plan.model import Plan, PlannedProbe


def endpoint_text(endpoint: Endpoint) -> str:
    return str(endpoint)


def probe_json(probe: PlannedProbe) -> dict[str, Any]:
    t = probe.traffic
    dst = t.destination
    return {
        "id": probe.id,
        "title": probe.title,
        "kind": str(probe.kind),
        "intent": str(probe.intent),
        "rule": probe.rule,
        "rules": list(probe.rules),
        "scenario": None if probe.scenario is None else str(probe.scenario),
        "scenarios": [str(s) for s in probe.scenarios],
        "from": endpoint_text(t.source),
        "to": endpoint_text(dst),
        "backend": dst.backend.key
        if isinstance(dst, ServiceEndpoint) and dst.backend is not None
        else None,
        "port": t.port,
        "protocol": str(t.protocol),
        "source_class": probe.source_class,
        "destination_class": probe.destination_class,
        "stands_for": list(probe.stands_for),
        "expect": None
        if probe.expect is None
        else {k: str(v) for k, v in sorted(probe.expect.items())},
        "predicted": {
            name: {
                "decision": str(p.decision),
                "explanation": p.explanation,
                "rules": list(p.rules),
                "uncertain": list(p.uncertain),
            }
            for name, p in probe.predicted.items()
        },
    }


def service_json(svc: Service) -> dict[str, Any]:
    """A Service as the wire dict the API server takes (what backends create)."""
    ports = []
    for sp in svc.ports:
        port: dict[str, Any] = {
            "name": sp.name,
            "protocol": str(sp.protocol),
            "port": sp.port,
            "targetPort": sp.target_port,
        }
        if sp.node_port:
            port["nodePort"] = sp.node_port
        ports.append(port)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": svc.name,
            "namespace": svc.namespace,
            **({"labels": dict(svc.labels)} if svc.labels else {}),
        },
        "spec": {
            "type": str(svc.type),
            "selector": dict(svc.selector or {}),
            "ports": ports,
            "externalTrafficPolicy": svc.external_traffic_policy,
            "publishNotReadyAddresses": svc.publish_not_ready,
        },
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    c = plan.coverage
    return {
        "current": plan.current,
        "target": plan.target,
        "digest": plan.digest,
        "coverage": {
            "rules_total": c.rules_total,
            "rules_with_admit": c.rules_with_admit,
            "rules_with_reject": c.rules_with_reject,
            "scenarios_present": list(c.scenarios_present),
            "scenarios_probed": list(c.scenarios_probed),
            "uncovered": list(c.uncovered),
        },
        "classes": {name: list(pods) for name, pods in plan.classes.items()},
        "synthetic_services": [service_json(s) for s in plan.synthetic_services],
        "probes": [probe_json(p) for p in plan.probes],
    }


def changes(probe: PlannedProbe, current: str, target: str) -> bool:
    """Whether the predictions differ between the current and any target dataplane."""
    now = probe.predicted.get(current)
    return (
        any(
            now is None or p.decision != now.decision
            for name, p in probe.predicted.items()
            if name != current
        )
        and target in probe.predicted
    )


def predicted_cell(probe: PlannedProbe, current: str, target: str) -> str:
    """`allow -> deny !`: current -> target, then other dataplanes where they differ."""
    pred = probe.predicted
    now = pred[current].decision if current in pred else "?"
    then = pred[target].decision if target in pred else "?"
    text = f"{now} -> {then}"
    for name, p in pred.items():
        if name not in (current, target) and p.decision != then:
            text += f" ({name}: {p.decision})"
    return text + (" !" if changes(probe, current, target) else "")


def table_rows(plan: Plan) -> list[list[str]]:
    return [
        [
            p.id,
            p.title,
            str(p.intent),
            ",".join(str(s) for s in p.scenarios) or "-",
            p.rule or "-",
            predicted_cell(p, plan.current, plan.target),
        ]
        for p in plan.probes
    ]
