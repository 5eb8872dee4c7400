"""Remedies that concern a rule's ports: endPort ranges, egress named ports, SCTP."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from netparity.engine.compile import EGRESS, NPRule
from netparity.lint.findings import Finding, FixAction, FixWhen
from netparity.lint.remedies.context import NoFix, Proposal, RemedyContext
from netparity.model.objects import Pod

MAX_EXPANDED_PORTS = 2048  # an endPort range longer than this is not expanded


def endport(ctx: RemedyContext, finding: Finding) -> Proposal:
    edits: dict[str, dict[str, Any]] = {}
    ranges: list[str] = []
    for name, direction, index in ctx.refs(finding):
        d = edits.get(name) or ctx.policy_dict(name)
        edits[name] = d
        rule = d["spec"][direction][index]
        out: list[dict[str, Any]] = []
        for entry in rule.get("ports", []):
            end = entry.get("endPort")
            if end is None:
                out.append(entry)
                continue
            start = int(entry["port"])
            if end - start + 1 > MAX_EXPANDED_PORTS:
                raise NoFix(
                    f"the range {start}-{end} in {name} {direction}[{index}] has "
                    f"{end - start + 1} ports, too many to list; move to Cilium >= 1.17 "
                    "(AKS on Kubernetes >= 1.32), which honours endPort"
                )
            ranges.append(f"{start}-{end}/{entry.get('protocol', 'TCP')}")
            out.extend(
                {"protocol": entry.get("protocol", "TCP"), "port": n} for n in range(start, end + 1)
            )
        rule["ports"] = out
    return Proposal(
        objects=tuple(edits.values()),
        action=FixAction.APPLY,
        when=FixWhen.BEFORE,
        summary=f"lists every port of {', '.join(dict.fromkeys(ranges))} instead of the "
        "endPort range",
        explanation=f"{ctx.target.name} does not honour endPort (Microsoft's migration "
        "guide: before Cilium 1.17, use single ports); NPM treats the list exactly as the "
        "range. On Cilium >= 1.17 the range itself works.",
        edits=tuple(edits),
    )


def named_port(ctx: RemedyContext, finding: Finding) -> Proposal:
    edits: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for name, direction, index in ctx.refs(finding):
        if direction != EGRESS:
            raise NoFix("ingress named ports resolve on the selected pod on both dataplanes")
        policy = ctx.policies[name]
        rule = ctx.rule(name, direction, index)
        if not any(isinstance(pp.port, str) for pp in rule.ports):
            continue  # a rule that also decided the connections, without a named port
        d = edits.get(name) or ctx.policy_dict(name)
        edits[name] = d
        wire_rule = d["spec"][direction][index]
        rule_key = (name, direction, index)  # the rule as compiled: its numbers once (#19)
        cached = ctx.named_numbers.get(rule_key)
        if cached is None:
            reach = (
                ctx.classes.all_pods
                if not rule.peers
                else list(
                    {p.key: p for pe in rule.peers for p in ctx.peer_pods(policy, pe)}.values()
                )
            )
            cached = ctx.named_numbers[rule_key] = _numbers(rule, reach, ctx.numbers_everywhere)
        numbers, plain = cached
        for (pname, proto), by_number in numbers.items():
            if not by_number:
                raise NoFix(f"no pod the rule reaches names a {proto} port {pname!r}")
            notes.append(
                f"{pname} is "
                + ", ".join(
                    f"{n} on {len(pods)} pod(s) ({pods[0].key})" for n, pods in by_number.items()
                )
            )
        if plain:
            for entry in wire_rule.get("ports", []):
                key = (entry.get("port"), entry.get("protocol", "TCP"))
                if key in numbers:
                    entry["port"] = next(iter(numbers[key]))
            continue
        _one_rule_per_number(ctx, d["spec"][direction], index, numbers, policy.namespace)
    if not edits:
        raise NoFix("no rule that decided these connections names a port")
    split = any(
        "to" in r and len(r.get("ports", [])) == 1
        for d in edits.values()
        for r in d["spec"].get("egress", [])
    )
    return Proposal(
        objects=tuple(edits.values()),
        action=FixAction.APPLY,
        when=FixWhen.BEFORE,
        summary="replaces the named port with its number"
        + (" (one rule per number, to the pods that name it)" if split else ""),
        explanation="Cilium < 1.20 resolves an egress named port over every pod in the "
        "cluster and voids the rule when the name has several numbers (cilium/cilium#30003); "
        "NPM resolves it on each destination pod, and only pods match. "
        + "; ".join(notes)
        + (
            ". A plain number would admit more than NPM did, so each number goes with "
            "the pods that name it today; pods created later with that name are not covered"
            if split
            else ""
        )
        + ".",
        edits=tuple(edits),
    )


# A named port's numbers: (name, protocol) -> number -> the pods that name it so.
Numbers = dict[tuple[str, str], dict[int, list[Pod]]]


def _numbers(
    rule: NPRule, reach: Sequence[Pod], everywhere: dict[tuple[str, str], dict[int, list[Pod]]]
) -> tuple[Numbers, bool]:
    """The numbers each named port of `rule` has on the pods it reaches, and whether a plain
    number admits exactly those pods (one number, served by no other pod the rule reaches,
    behind selector peers only). A rule without peers reaches every pod: its numbers come
    from `everywhere` (per name, worked out once; the same lists for every such rule)."""
    plain = bool(rule.peers) and all(pe.ip_block is None for pe in rule.peers)
    numbers: Numbers = {}
    for pp in rule.ports:
        if not isinstance(pp.port, str):
            continue
        key = (pp.port, str(pp.protocol))
        if not rule.peers and key in everywhere:
            numbers[key] = everywhere[key]
            plain = False
            continue
        by_number: dict[int, list[Pod]] = defaultdict(list)
        for p in reach:
            cp = p.named_port(pp.port, pp.protocol)
            if cp is not None:
                by_number[cp.port].append(p)
        numbers[key] = dict(sorted(by_number.items()))
        if not rule.peers:
            everywhere[key] = numbers[key]
        if len(by_number) != 1:
            plain = False
        elif plain:  # a pod the rule reaches that serves the number under another name
            number = next(iter(by_number))
            named_keys = {p.key for p in by_number[number]}
            if any(
                cp.port == number and cp.protocol is pp.protocol
                for p in reach
                if p.key not in named_keys
                for cp in p.ports
            ):
                plain = False
    return numbers, plain


def _one_rule_per_number(
    ctx: RemedyContext, rules: list[dict[str, Any]], index: int, numbers: Numbers, home: str
) -> None:
    """Rule `index` of `rules` (wire dicts) without its named ports, and one rule per number
    to the pods that name it (in its place if it had no other port)."""
    wire_rule = rules[index]
    keep = [e for e in wire_rule.get("ports", []) if not isinstance(e.get("port"), str)]
    new_rules = []
    for (_, proto), by_number in numbers.items():
        for number, pods in by_number.items():
            new_rules.append(
                {
                    "to": ctx.precise_peers(pods, home),
                    "ports": [{"protocol": proto, "port": number}],
                }
            )
    if keep:
        wire_rule["ports"] = keep
        rules.extend(new_rules)
    elif new_rules:
        rules[index] = new_rules[0]
        rules.extend(new_rules[1:])


def sctp(ctx: RemedyContext, finding: Finding) -> Proposal:
    raise NoFix(
        "Cilium as AKS runs it has SCTP disabled (enable-sctp: false), so it drops every "
        "SCTP packet before policy, whatever the rules say (D24; its SCTP port rules never "
        "match, D8): no NetworkPolicy admits SCTP; keeping these flows needs enable-sctp "
        "in cilium-config, or moving them to TCP/UDP"
    )
