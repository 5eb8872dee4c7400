"""Cilium's `kube-system/cilium-config` settings that change verdicts, and Cilium's default
identity-label filter, as data (SEMANTICS D4c, D6, D8).

The engine (`netparity/engine/dataplane.py`) and the lab (`netparity/lab/dataplanes/cilium.py`)
both read this module: the lab enforces with its own rules and the engine predicts with its
own code, but the facts (which label keys make an identity, what a setting means) are one.

Read from Cilium's source, not its documentation where the two differ:

- `pkg/labelsfilter/filter.go` at cilium/cilium@0b22469da6e3659b027ab2827de9f346c4db95cd
  (`defaultLabelPrefixCfg`, `parseLabelPrefix`, `LabelPrefix.matches`, `filterLabels`), and
  the same file at @82241fa527b37e29471cae1058b8addd6e113e2c (an older default list);
- `Documentation/operations/performance/scalability/identity-relevant-labels.rst` at
  cilium/cilium@019c1234ad2c8a8110423a1fd620d82e1233dadb, which also lists
  `batch.kubernetes.io/controller-uid` and `controller-uid` (kept here: SEMANTICS D6), but
  shows `beta\\.kubernetes\\.io` where the code has `.*beta\\.kubernetes\\.io` (the code wins).

How Cilium reads the `labels` setting (a space-separated list of patterns):

- A pattern is `[SOURCE:][!]REGEX`. The text before the first `:` is the label source; pod
  labels have source `k8s`, so `k8s:app` and `app` both match the pod label `app`, while any
  other source (`container:`, `reserved:`, and literally `any:`) matches no pod label. The
  `!` comes after the source: `k8s:!job-name` excludes; `!k8s:job-name` is an *include* of the
  source `!k8s`, which matches nothing (and so still switches on include-only mode, below).
- The regex is anchored at the start of the key only: `app` also matches `app-production`,
  `.*beta\\.kubernetes\\.io` matches the text anywhere. An invalid regex stops the agent.
- The user's patterns are added to the defaults, never replace them. Once one include (a
  pattern without `!`) is given, only keys that an include matches are kept; the default
  includes (namespace, namespace labels, cluster name, `app.kubernetes.io`) always count.
- When an include and an exclusion both match a key, the key is kept only when the longest
  matching include is longer than the shortest matching exclusion: `io.kubernetes.pod.namespace`
  (include, 27 characters) beats `io\\.kubernetes` (exclusion, 13). This is why the labels
  Cilium adds to every pod (`io.kubernetes.pod.namespace`, `io.cilium.k8s.namespace.labels.*`,
  `io.cilium.k8s.policy.cluster`) stay in its identity whatever the user excludes, short of
  an exclusion at least as long as the include.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from netparity.errors import InputError

CILIUM_CONFIG = "kube-system/cilium-config"

POD_LABEL_SOURCE = "k8s"  # the source of every label Cilium takes from a pod or its namespace

# Cilium's defaultLabelPrefixCfg, in the `labels` setting's own syntax (see the docstring).
DEFAULT_LABEL_INCLUDES: tuple[str, ...] = (
    r"reserved:.*",
    r"io\.kubernetes\.pod\.namespace",
    r"io\.cilium\.k8s\.namespace\.labels",
    r"app\.kubernetes\.io",
    r"io\.cilium\.k8s\.policy\.cluster",
)
DEFAULT_LABEL_EXCLUSIONS: tuple[str, ...] = (
    r"io\.kubernetes",
    r"kubernetes\.io",
    r"statefulset\.kubernetes\.io/pod-name",
    r"apps\.kubernetes\.io/pod-index",
    r"batch\.kubernetes\.io/job-completion-index",
    r"batch\.kubernetes\.io/controller-uid",  # the docs' list; not in filter.go @0b22469
    r".*beta\.kubernetes\.io",
    r"k8s\.io",
    r"pod-template-generation",
    r"pod-template-hash",
    r"controller-revision-hash",
    r"annotation.*",
    r"controller-uid",  # the docs' list; not in filter.go @0b22469
    r"etcd_node",
)


def _where(field_name: str) -> dict[str, str]:
    return {"kind": "ConfigMap", "name": CILIUM_CONFIG, "field": f"data.{field_name}"}


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelPattern:
    """One pattern of the filter: a label source ("" for any), an anchored regex, and `!`."""

    source: str
    regex: str
    exclude: bool
    compiled: re.Pattern[str] = field(compare=False, repr=False)

    def match_length(self, key: str, source: str = POD_LABEL_SOURCE) -> int | None:
        """How many characters of `key` the pattern matches from its start; None: no match."""
        if self.source and self.source != source:
            return None
        m = self.compiled.match(key)
        return None if m is None else m.end()


def parse_label_pattern(text: str) -> LabelPattern:
    """One token of the `labels` setting, read as Cilium's parseLabelPrefix reads it."""
    source, colon, rest = text.partition(":")
    if not colon:
        source, rest = "", text
    if not rest:
        raise InputError(f"label pattern {text!r} has an empty pattern", **_where("labels"))
    exclude = rest.startswith("!")
    regex = rest[1:] if exclude else rest
    try:
        compiled = re.compile(regex)
    except re.error as e:
        raise InputError(
            f"label pattern {text!r} is not a regular expression ({e})", **_where("labels")
        ) from None
    return LabelPattern(source=source, regex=regex, exclude=exclude, compiled=compiled)


_DEFAULT_PATTERNS: tuple[LabelPattern, ...] = tuple(
    parse_label_pattern(p)
    for p in (*DEFAULT_LABEL_INCLUDES, *(f"!{x}" for x in DEFAULT_LABEL_EXCLUSIONS))
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelFilter:
    """Which label keys take part in a Cilium identity: the defaults plus the user's patterns.

    Two filters are equal when their user patterns are; the defaults are the same for all.
    """

    setting: tuple[str, ...]  # the user's patterns, in order
    patterns: tuple[LabelPattern, ...] = field(compare=False, repr=False)
    include_only: bool = field(compare=False)  # a user include was given
    _kept: dict[str, bool] = field(default_factory=dict, init=False, compare=False, repr=False)

    def keeps(self, key: str) -> bool:
        """True when the pod label `key` is part of the pod's identity (filterLabels)."""
        kept = self._kept.get(key)
        if kept is None:
            included = ignored = 0
            for p in self.patterns:
                n = p.match_length(key)
                if n is None:
                    continue
                if p.exclude:
                    if ignored == 0 or n < ignored:
                        ignored = n
                elif n > included:
                    included = n
            kept = (not self.include_only and ignored == 0) or included > ignored
            self._kept[key] = kept
        return kept

    def excludes(self, key: str) -> bool:
        return not self.keeps(key)

    def identity(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels that make the identity, in their original order."""
        return {k: v for k, v in labels.items() if self.keeps(k)}


def label_filter(setting: str | None = None) -> LabelFilter:
    """The filter for a `labels` setting (None or "": Cilium's defaults alone)."""
    tokens = tuple((setting or "").split())
    user = tuple(parse_label_pattern(t) for t in tokens)
    return LabelFilter(
        setting=tokens,
        patterns=_DEFAULT_PATTERNS + user,
        include_only=any(not p.exclude for p in user),
    )


DEFAULT_LABEL_FILTER = label_filter()


class AllowLocalhost(StrEnum):
    """`allow-localhost`: `auto` becomes `always` under Kubernetes; `policy` polices the host."""

    AUTO = "auto"
    ALWAYS = "always"
    POLICY = "policy"


_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})  # Go's strconv.ParseBool


@dataclass(frozen=True, slots=True, kw_only=True)
class CiliumSettings:
    """The `cilium-config` settings the engine and the lab model (SEMANTICS 0.1)."""

    labels: LabelFilter = DEFAULT_LABEL_FILTER  # D6
    enable_sctp: bool = False  # D8: off as AKS runs Cilium
    allow_localhost: AllowLocalhost = AllowLocalhost.AUTO  # D4c
    # D28 and docs/semantics-notes.md "Cilium policies as Cilium imports them". A key absent
    # from a cilium-config that exists means the agent's default (pkg/defaults/defaults.go).
    cluster_name: str = "default"  # `cluster-name`: the io.cilium.k8s.policy.cluster label
    enable_l7_proxy: bool = True  # `enable-l7-proxy`: L7 (HTTP, Kafka, DNS) rules, DNS proxy
    enable_icmp_rules: bool = True  # `enable-icmp-rules`: `icmps` rules
    enable_node_selector_labels: bool = False  # `enable-node-selector-labels`: fromNodes/toNodes
    enable_host_firewall: bool = False  # `enable-host-firewall`: host policies (nodeSelector)
    enable_non_default_deny_policies: bool = True  # honours `enableDefaultDeny: false`
    # D22: `service-no-backend-response` (reject | drop, default reject: the agent's
    # SERVICE_NO_BACKEND_RESPONSE define, answered by tail_no_service_ipv4 in bpf/lib/lb.h
    # with ICMP port unreachable) and `enable-svc-source-range-check` (default true).
    service_no_backend_reject: bool = True
    svc_source_range_check: bool = True

    @property
    def host_policed(self) -> bool:
        """True when traffic from a pod's own node is subject to the pod's ingress policy."""
        return self.allow_localhost is AllowLocalhost.POLICY


def cilium_settings(config: Mapping[str, Mapping[str, str]]) -> CiliumSettings:
    """Read `kube-system/cilium-config` from a snapshot's ConfigMaps; absent: the defaults.

    `enable-sctp` is read as the agent reads a boolean (anything but Go's true spellings is
    false); an `allow-localhost` value the agent refuses is an input error.
    """
    data = config.get(CILIUM_CONFIG)
    if data is None:
        return CiliumSettings()
    raw = data.get("allow-localhost", "auto").strip() or "auto"
    try:
        allow = AllowLocalhost(raw)
    except ValueError:
        raise InputError(
            f"allow-localhost {raw!r} is not one of auto, always, policy",
            **_where("allow-localhost"),
        ) from None

    no_backend = (data.get("service-no-backend-response") or "").strip() or "reject"
    if no_backend not in ("reject", "drop"):
        raise InputError(
            f"service-no-backend-response {no_backend!r} is not one of reject, drop",
            **_where("service-no-backend-response"),
        )

    def flag(key: str, default: bool) -> bool:
        raw_flag = data.get(key)
        return default if raw_flag is None else raw_flag.strip() in _TRUE

    return CiliumSettings(
        labels=label_filter(data.get("labels")),
        enable_sctp=flag("enable-sctp", False),
        allow_localhost=allow,
        cluster_name=(data.get("cluster-name") or "").strip() or "default",
        enable_l7_proxy=flag("enable-l7-proxy", True),
        enable_icmp_rules=flag("enable-icmp-rules", True),
        enable_node_selector_labels=flag("enable-node-selector-labels", False),
        enable_host_firewall=flag("enable-host-firewall", False),
        enable_non_default_deny_policies=flag("enable-non-default-deny-policies", True),
        service_no_backend_reject=no_backend == "reject",
        svc_source_range_check=flag("enable-svc-source-range-check", True),
    )


def acns_level(l7_proxy: bool) -> str:
    """Which Advanced Container Networking Services policy level a setting means on AKS."""
    if not l7_proxy:
        return (
            "no advanced network policies (enable-l7-proxy off: L3/L4 rules only; L7 and DNS "
            "rules are refused and toFQDNs rules admit nothing)"
        )
    return "ACNS advanced network policies FQDN or L7 (enable-l7-proxy on: DNS proxy, L7 rules)"
