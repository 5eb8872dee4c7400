"""Plan values: planned probes with stable ids, predictions per dataplane, and coverage.

A probe's id is derived from what it means (namespaces, labels, port, protocol, path
kind), never from pod names or IPs, so that the same probe is found again after the
upgrade recreates and renumbers every pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from netparity.engine.causes import Cause
from netparity.engine.traffic import Decision, PathKind, Traffic
from netparity.model.objects import Service


class Scenario(StrEnum):
    """The guide's five scenarios (split as the lint names them) and the other SEMANTICS rows."""

    ENDPORT = "endport"  # D1
    IPBLOCK_PODS = "ipblock-pods"  # D2
    IPBLOCK_NODES = "ipblock-nodes"  # D2 / D4b / D4d
    NAMED_PORT = "named-port"  # D3
    NODE_EGRESS = "node-egress"  # D4a
    EXTERNAL_INGRESS = "external-ingress"  # D5
    IDENTITY_LABELS = "identity-labels"  # D6
    SCTP = "sctp"  # D8
    LB_IN_CLUSTER = "lb-in-cluster"  # D5d
    UNTRANSLATABLE = "untranslatable"  # D11
    CILIUM_POLICY = "cilium-policy"  # a Cilium policy that isolates or cuts (lint, D13)
    ESSENTIAL = "essential"  # DNS and the API server from every class (purpose only)
    POLICY_TYPES = "policy-types"  # D23: Cilium enforces rules policyTypes leaves out
    NS_SELECTOR_OR = "ns-selector-or"  # D19: NPM ORs a multi-value In/NotIn namespaceSelector
    LB_SOURCE_RANGES = "lb-source-ranges"  # D22: Cilium checks the ranges for outside clients only
    ITP_LOCAL = "itp-local"  # D22: Cilium applies ITP Local to a pod's LB IP / own NodePort


GUIDE_SCENARIOS = (
    Scenario.ENDPORT,
    Scenario.IPBLOCK_PODS,
    Scenario.IPBLOCK_NODES,
    Scenario.NAMED_PORT,
    Scenario.NODE_EGRESS,
    Scenario.EXTERNAL_INGRESS,
)


class Intent(StrEnum):
    ADMIT = "admit"  # a rule must admit it
    REJECT = "reject"  # just outside a rule: must not be admitted
    SCENARIO = "scenario"  # reveals a migration scenario
    EXPLICIT = "explicit"  # from a user's probe file


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    decision: Decision
    explanation: str
    rules: tuple[str, ...] = ()  # the rules that admitted (or denied) it
    uncertain: tuple[str, ...] = ()
    # why it differs from the plan's current dataplane (netparity.engine.causes); () where
    # it does not differ, or where nothing explains it
    causes: tuple[Cause, ...] = ()
    # D22: a Service without endpoints: the probe's `refused` is the dataplane's deny
    refused_is_deny: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedProbe:
    id: str  # stable: a digest of the meaning
    title: str  # readable, also derived from meaning: "x[app=a] -> y[app=c] 80/TCP pod-pod"
    kind: PathKind
    traffic: Traffic  # with the representative pods of their classes
    intent: Intent
    rule: str | None = None  # the rule the probe exercises, e.g. "NetworkPolicy x/p ingress[0]"
    scenario: Scenario | None = None
    stands_for: tuple[str, ...] = ()  # real source pods the source class stands for
    predicted: Mapping[str, Prediction] = field(default_factory=dict)  # dataplane -> prediction
    rules: tuple[str, ...] = ()  # every rule the probe exercises (merged duplicates), `rule` first
    scenarios: tuple[Scenario, ...] = ()  # every scenario it reveals, `scenario` first
    source_class: str | None = None  # the equivalence class of a pod source (Plan.classes)
    destination_class: str | None = None  # the equivalence class of a pod destination
    expect: Mapping[str, Decision] | None = None  # an explicit probe's expectation ("*": all)


@dataclass(frozen=True, slots=True, kw_only=True)
class Coverage:
    rules_total: int
    rules_with_admit: int
    rules_with_reject: int
    scenarios_present: tuple[str, ...]
    scenarios_probed: tuple[str, ...]
    uncovered: tuple[str, ...] = ()  # "rule: why" for every rule without an admit probe


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    probes: tuple[PlannedProbe, ...]
    coverage: Coverage
    digest: str  # digest of the probe ids, in order: which plan a record belongs to
    current: str  # the dataplane the cluster runs now
    target: str  # the dataplane it moves to
    classes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # class -> pod keys
    # run-owned NodePort Services the probes need (backends create them, then remove them)
    synthetic_services: tuple[Service, ...] = ()
