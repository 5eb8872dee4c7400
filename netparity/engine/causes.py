"""The causes of a predicted change: the dataplane knobs whose difference alone flips it.

A probe's *purpose* is why the planner chose it; its *cause* is derived here. For traffic
whose decision differs between the current and the target dataplane, each knob that
differs between the two (`Dataplane`, each citing its SEMANTICS.md row) is set, alone, to
the target's value on the current profile; the knobs whose change alone gives the
target's decision are the causes. Where no single knob does, pairs (then triples) are
tried, each member a cause `together` with the others; a change none of these explains
has no cause and says so (`UNEXPLAINED`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from netparity.engine.dataplane import KNOB_ROWS, NOTE_ONLY_KNOBS, Dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.peers import HostPeer
from netparity.engine.traffic import Decision, DirectionResult, PathKind, Traffic, Verdict

UNEXPLAINED = "no single difference between the dataplanes explains it"
MAX_TOGETHER = 3  # the largest group of knobs tried together (only when no smaller one flips)

_EXTERNAL = frozenset({PathKind.EXTERNAL_NODEPORT, PathKind.EXTERNAL_LB})
_IN_CLUSTER = frozenset({PathKind.POD_NODEPORT, PathKind.POD_LB})
_SERVICE_KNOBS = frozenset({"masquerade_bypass", "service_nat_in_node", "snat_to_receiving_node"})
_NP = "NetworkPolicy "

# The lint's scenario (netparity.plan.model.Scenario values) for a knob whose scenario
# does not depend on the path or the peer. None: the lint has no scenario for it.
_SCENARIOS: dict[str, str | None] = {
    "end_port": "endport",
    "named_port_egress": "named-port",
    "own_node_egress_bypass": "node-egress",
    "label_filter": "identity-labels",
    "sctp_port_rules": "sctp",
    "sctp_dropped": "sctp",  # D24: SCTP dropped whole; the lint's SCTP finding covers it
    "rules_beyond_policy_types": "policy-types",  # D23
    "negative_ns_selector_non_pods": None,  # D18: NPM and Cilium <= 1.18 agree; a lint note
    "hairpin_skips_policy": None,  # D25: a pod's own traffic; no lint scenario
    "skip_untranslatable": "untranslatable",
    "ns_selector_flattened": "ns-selector-or",  # D19
    "own_node_ingress_bypass": None,  # D4c: a cilium-config host policy; no lint scenario
    "cilium_policies": None,  # D14: Cilium policies already in the cluster; the lint's notes
    "lb_source_ranges_in_cluster": "lb-source-ranges",  # D22: in-cluster clients not checked
    "lb_source_range_check": "lb-source-ranges",  # D22: enable-svc-source-range-check false
    "itp_external_frontends": "itp-local",  # D22: Cilium's ITP on a pod's LB IP/own NodePort
}

# The knobs that may decide a change (every field but the name, the description and the
# knobs that only add a [VERIFY] note), in the Dataplane's order.
DECIDING_KNOBS: tuple[str, ...] = tuple(
    f.name
    for f in fields(Dataplane)
    if f.name not in ("name", "description") and f.name not in NOTE_ONLY_KNOBS
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cause:
    """One difference between the dataplanes that flips a decision."""

    knob: str  # the Dataplane field, e.g. "ipblock_matches_cluster"
    row: str  # the SEMANTICS.md row, e.g. "D2"
    scenario: str | None  # the lint's scenario ("ipblock-pods"); None where it has none
    rule: str | None = None  # the rule involved ("NetworkPolicy ns/p egress[0]"), or the
    # policy that isolates where no rule decided; None where no NetworkPolicy is involved
    together: tuple[str, ...] = ()  # other knobs it flips the decision only together with

    @property
    def policy(self) -> str | None:
        """The policy of `rule` ("NetworkPolicy ns/name"), if any."""
        if self.rule is None:
            return None
        kind, _, rest = self.rule.partition(" ")
        return f"{kind} {rest.split(' ', 1)[0]}"

    @property
    def name(self) -> str:
        """How reports group it: the lint's scenario, else the knob."""
        return self.scenario or self.knob

    def short(self) -> str:
        """ "ipblock-pods (D2)", "+"-joined with the knobs it acts together with."""
        return f"{'+'.join((self.name, *self.together))} ({self.row})"

    def __str__(self) -> str:
        text = f"{self.name} ({self.row})"
        if self.together:
            text += f" together with {', '.join(self.together)}"
        return text + (f" via {self.rule}" if self.rule else "")


def causes_short(causes: Sequence[Cause]) -> str:
    """The causes in a few words, e.g. "ipblock-pods (D2); endport (D1)"."""
    return "; ".join(dict.fromkeys(c.short() for c in causes))


def differing_knobs(current: Dataplane, target: Dataplane) -> tuple[str, ...]:
    return tuple(k for k in DECIDING_KNOBS if getattr(current, k) != getattr(target, k))


_KNOBS = frozenset(DECIDING_KNOBS)


class _Recorder(Dataplane):
    """A profile that notes which deciding knobs are read while traffic is evaluated.

    A fresh one per evaluation: the engine's caches are keyed by the profile object or by
    the values read to make their key, so a fresh object hides no read behind a cache."""

    __slots__ = ("reads",)

    def __getattribute__(self, name: str) -> Any:
        if name in _KNOBS:
            object.__getattribute__(self, "reads").add(name)
        return object.__getattribute__(self, name)


def _recorder(dp: Dataplane) -> _Recorder:
    rec = _Recorder(**{f.name: getattr(dp, f.name) for f in fields(Dataplane)})
    object.__setattr__(rec, "reads", set())
    return rec


class CauseFinder:
    """Finds the causes of changes between two dataplanes on one engine (cached profiles).

    A group of knobs is tried only where its verdict can differ from a smaller group's:
    evaluation is a pure function of the traffic and the knobs it reads (the profile's
    name only words notes), so a profile that differs from another only in knobs that
    the other's evaluation never read gets that one's decision, which flipped nothing."""

    def __init__(self, engine: Engine, current: Dataplane, target: Dataplane) -> None:
        self.engine = engine
        self.current = current
        self.target = target
        self.knobs = differing_knobs(current, target)
        self._profiles: dict[tuple[str, ...], Dataplane] = {}

    def profile(self, knobs: Sequence[str]) -> Dataplane:
        """The current profile with `knobs` set to the target's values (kept: the engine
        caches selections per profile object)."""
        key = tuple(knobs)
        dp = self._profiles.get(key)
        if dp is None:
            values = {k: getattr(self.target, k) for k in key}
            dp = replace(self.current, name=f"{self.current.name}+{'+'.join(key)}", **values)
            self._profiles[key] = dp
        return dp

    def causes(
        self, traffic: Traffic, now: Verdict | None = None, then: Verdict | None = None
    ) -> tuple[Cause, ...]:
        """The causes of the change of `traffic`; () where it does not change, or where
        no single knob, nor group of up to MAX_TOGETHER knobs, explains it."""
        now = now if now is not None else self.engine.evaluate(traffic, self.current)
        then = then if then is not None else self.engine.evaluate(traffic, self.target)
        if now.decision is then.decision:
            return ()
        runs: dict[tuple[str, ...], tuple[Verdict, frozenset[str]]] = {}

        def run(group: tuple[str, ...]) -> tuple[Verdict, frozenset[str]]:
            """The verdict under the group's profile and the knobs its evaluation read."""
            done = runs.get(group)
            if done is None:
                for knob in group:  # unread by the smaller group's run: it decides alike
                    smaller = tuple(k for k in group if k != knob)
                    if knob not in run(smaller)[1]:
                        done = runs[group] = runs[smaller]
                        return done
                rec = _recorder(self.profile(group) if group else self.current)
                v = self.engine.evaluate(traffic, rec)
                done = runs[group] = (v, frozenset(object.__getattribute__(rec, "reads")))
            return done

        found: list[Cause] = []
        for knob in self.knobs:
            if knob not in run(())[1]:
                continue  # the current profile's evaluation never read it
            v = self.engine.evaluate(traffic, self.profile((knob,)))
            if v.decision is then.decision:
                found.append(self._cause(knob, now, v))
        if found:
            return tuple(found)
        for size in range(2, MAX_TOGETHER + 1):
            for group in itertools.combinations(self.knobs, size):
                if any(k not in run(tuple(g for g in group if g != k))[1] for k in group):
                    continue  # decides as a smaller group, which flipped nothing
                v = self.engine.evaluate(traffic, self.profile(group))
                if v.decision is then.decision:
                    for knob in group:
                        others = tuple(k for k in group if k != knob)
                        found.append(replace(self._cause(knob, now, v), together=others))
            if found:
                break
        return tuple(found)

    def _cause(self, knob: str, now: Verdict, then: Verdict) -> Cause:
        flipped = _flipped(now, then)
        return Cause(
            knob=knob,
            row=_row(knob, then.path),
            scenario=_scenario(knob, then.path, flipped),
            rule=_rule(now, then, flipped),
        )


def _flipped(
    now: Verdict, then: Verdict
) -> list[tuple[DirectionResult | None, DirectionResult | None]]:
    """The (now, then) sides whose decisions differ (or that only one verdict has)."""
    out = []
    for a, b in ((now.egress, then.egress), (now.ingress, then.ingress)):
        if a is None and b is None:
            continue
        if a is not None and b is not None and a.decision is b.decision:
            continue
        out.append((a, b))
    return out


def _row(knob: str, path: PathKind) -> str:
    if knob in _SERVICE_KNOBS:
        if path in _EXTERNAL:
            return "D5"
        if path in _IN_CLUSTER:
            return "D5d"
        return "D10"
    return KNOB_ROWS[knob]


def _scenario(
    knob: str, path: PathKind, flipped: list[tuple[DirectionResult | None, DirectionResult | None]]
) -> str | None:
    if knob in _SERVICE_KNOBS:
        if path in _EXTERNAL:
            return "external-ingress"
        if path in _IN_CLUSTER:
            return "lb-in-cluster"
        return None
    if knob == "ipblock_matches_cluster":
        for a, b in flipped:
            for side in (a, b):
                if side is not None and isinstance(side.peer, HostPeer):
                    return "ipblock-nodes"
        return "ipblock-pods"
    return _SCENARIOS.get(knob)


def _rule(
    now: Verdict,
    then: Verdict,
    flipped: list[tuple[DirectionResult | None, DirectionResult | None]],
) -> str | None:
    """The NetworkPolicy rule involved, as the lint blames it: the rule that admitted an
    allow that is lost (or a hole's new admitting rule); where none decided (a bypass, a
    lost or new isolation), the policy that isolates the denying side."""
    for a, b in flipped:
        allow, deny = (a, b) if now.decision is Decision.ALLOW else (b, a)
        if allow is not None and allow.decision is Decision.ALLOW:
            refs = [r for r in allow.rules if r.policy.startswith(_NP)]
            if refs:
                return str(refs[0])
        for side in (deny, allow):
            if side is not None:
                isolating = [p for p in side.selected_by if p.startswith(_NP)]
                if isolating:
                    return isolating[0]
    return None
