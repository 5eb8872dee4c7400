"""`netparity explain`: what each policy does, as a table."""

from __future__ import annotations

import argparse

from netparity.cli._common import add_snapshot_arguments, print_json, snapshot_from_args, table
from netparity.engine.evaluate import Engine
from netparity.model.networkpolicy import NetworkPolicy, PolicyRule


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("explain", help="what each policy does, as a table")
    add_snapshot_arguments(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run)


def describe_rule(rule: PolicyRule, direction: str) -> str:
    who = "every peer" if not rule.peers else " or ".join(str(p) for p in rule.peers)
    ports = "all ports" if not rule.ports else ", ".join(str(p) for p in rule.ports)
    word = "from" if direction == "ingress" else "to"
    return f"{direction}[{rule.index}]: {word} {who} on {ports}"


def describe(policy: NetworkPolicy) -> list[str]:
    lines = []
    for direction, rules in (("ingress", policy.ingress), ("egress", policy.egress)):
        if direction.capitalize() not in policy.policy_types:
            continue
        if not rules:
            lines.append(f"{direction}: deny all")
        lines.extend(describe_rule(r, direction) for r in rules)
    return lines


def run(args: argparse.Namespace) -> int:
    snapshot = snapshot_from_args(args, command="explain")
    engine = Engine(snapshot)
    from netparity.engine.dataplane import SPEC

    items: list[dict[str, object]] = []
    rows = []
    for policy in snapshot.network_policies:
        selected = [
            p.key
            for p in snapshot.pods
            if p.namespace == policy.namespace
            and not p.host_network
            and policy.pod_selector.matches(engine.labels(p, SPEC))
        ]
        lines = describe(policy)
        items.append(
            {
                "policy": policy.key,
                "kind": "NetworkPolicy",
                "selector": str(policy.pod_selector),
                "policyTypes": sorted(policy.policy_types),
                "selects": selected,
                "rules": lines,
            }
        )
        rows.append(
            [
                policy.key,
                str(policy.pod_selector),
                f"{len(selected)} pods",
                "; ".join(lines) or "(no rules)",
            ]
        )
    from netparity.engine.dataplane import NEWEST_TARGET, get_dataplane
    from netparity.facts.cilium_config import acns_level

    cilium = get_dataplane(NEWEST_TARGET).with_config(snapshot.config)
    for cp, target in zip(snapshot.cilium_policies, engine.cilium_targets, strict=True):
        why_not = engine.cilium_refusal(target, cilium)
        if target.subject is not None:
            selected = [
                p.key
                for p in snapshot.pods
                if not p.host_network and target.subject.matches(engine.cilium_labels(p, cilium))
            ]
            count = f"{len(selected)} pods"
            selector = str(target.subject)
        else:
            nodesel = target.node_selector
            selected = [
                n.name for n in snapshot.nodes if nodesel is None or nodesel.matches(n.labels)
            ]
            count = f"{len(selected)} nodes"
            selector = f"nodeSelector {cp.node_selector}"
        effect = why_not or f"enforced under {cilium.name}"
        if why_not and "enable-l7-proxy" in why_not:
            effect += f"; cilium-config means {acns_level(cilium.cilium_l7_proxy)}"
        items.append(
            {
                "policy": cp.key,
                "kind": cp.kind,
                "selector": selector,
                "selects": selected,
                "effect": effect,
                "noEffect": why_not is not None,
            }
        )
        rows.append([f"{cp.kind} {cp.key}", selector, count, effect])
    if args.format == "json":
        print_json(items)
    else:
        print(table(["POLICY", "SELECTS", "PODS", "RULES"], rows))
    return 0
