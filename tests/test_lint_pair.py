"""The lint's shared work (issue 19): one pass for the target and the older release's note,
the JSON writer, the exact-selector index. Each must give what the plain way gives."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from netparity.cli import main
from netparity.engine.dataplane import get_dataplane
from netparity.engine.evaluate import Engine
from netparity.engine.traffic import PodEndpoint, ServiceEndpoint, Traffic, Via
from netparity.lint import lint_snapshot
from netparity.lint.classes import LabelIndex
from netparity.lint.findings import SHOWN_OTHERS, LintReport
from netparity.lint.json_text import Lazy, dumps_indented, write_indented
from netparity.lint.lint import lint_brief, lint_pair, same_enumeration
from netparity.lint.output import (
    MAX_TEXT_TRAFFIC,
    finding_json,
    render_json,
    render_junit,
    render_text,
    report_json,
    write_json,
)
from netparity.lint.pair import EndPortRanges, Needless
from netparity.model.objects import Pod, Protocol
from netparity.model.selectors import LabelSelector, Operator, Requirement
from netparity.model.snapshot import Snapshot, load_snapshot, snapshot_from_dicts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "aks-migration.yaml"


def _generated() -> Snapshot:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from gen import generate
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return snapshot_from_dicts(generate(pods=400, namespaces=10, policies=80, nodes=4, seed=2))


@pytest.mark.parametrize("which", ["example", "gen400"])
@pytest.mark.parametrize(("target", "also"), [("cilium", "cilium-1.16"), ("cilium", "cilium-1.19")])
def test_the_pair_gives_each_targets_own_lint(which: str, target: str, also: str) -> None:
    """The report is lint_snapshot's for the target (fixes and all); the second findings
    are a fix-less lint's for `also`: shared connections where the enumerations agree
    (1.16: endPort only), a lint of its own where they do not (1.19)."""
    snapshot = load_snapshot([EXAMPLE]) if which == "example" else _generated()
    report, extra = lint_pair(snapshot, target=target, also=also)
    assert report_json(report) == report_json(lint_snapshot(snapshot, target=target))
    alone = lint_snapshot(snapshot, target=also, fixes=False)
    assert [finding_json(f) for f in extra] == [finding_json(f) for f in alone.findings]
    if which == "example" and also == "cilium-1.16":  # the example has an endPort change
        assert {f.id for f in extra} - {f.id for f in report.findings}


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize(
    ("which", "also"),
    [("gen400", "cilium-1.16"), ("example", "cilium-1.16"), ("example", "cilium-1.19")],
)
def test_the_briefs_are_the_findings_told_short(which: str, also: str, jobs: int) -> None:
    """lint_brief (the CLI's way) gathers no connections for the older release: what it
    tells of each finding (id, kind, severity, and so the order) is what the findings
    lint_pair makes say, and the report is the same."""
    snapshot = load_snapshot([EXAMPLE]) if which == "example" else _generated()
    report, extra = lint_pair(snapshot, target="cilium", also=also, jobs=jobs)
    short, briefs = lint_brief(snapshot, target="cilium", also=also, jobs=jobs)
    assert report_json(short) == report_json(report)
    assert list(briefs) == [f.brief() for f in extra]
    assert {b.severity for b in briefs} >= {"outage"}
    assert [b.order() for b in briefs] == sorted(b.order() for b in briefs)


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("which", ["example", "gen400"])
def test_reasons_written_when_shown_are_the_reasons_written_as_seen(which: str, jobs: int) -> None:
    """`shown` (the text and JUnit reports): the reasons of a finding's first connections
    are written when the report is made, from the verdicts again; they are the reasons
    written as each connection is seen, row for row (every row, where all are shown), and
    the rows not shown have none."""
    snapshot = load_snapshot([EXAMPLE]) if which == "example" else _generated()
    eager, _ = lint_pair(snapshot, target="cilium", jobs=jobs)
    every, _ = lint_brief(snapshot, target="cilium", jobs=jobs, shown=10**9)
    assert report_json(every) == report_json(_others_shown(eager))
    few, _ = lint_brief(snapshot, target="cilium", jobs=jobs, shown=1)
    assert [f.id for f in few.findings] == [f.id for f in eager.findings]
    longer = 0
    for f, e in zip(few.findings, eager.findings, strict=True):
        first, *rest = f.traffic
        assert (first.npm, first.target) == (e.traffic[0].npm, e.traffic[0].target)
        assert first.npm and first.target
        longer += len(rest)
        if f.kind != "cilium-policy":  # the Cilium policies' findings write theirs apart
            assert all(r.npm == r.target == "" for r in rest)
        assert [replace(r, npm="", target="") for r in f.traffic] == [
            replace(r, npm="", target="", others=r.others[:SHOWN_OTHERS]) for r in e.traffic
        ]
    assert longer  # some finding has connections not shown


def _others_shown(report: LintReport) -> LintReport:
    """The report, each connection naming the other classes it stands for as a text does."""
    return replace(
        report,
        findings=tuple(
            replace(f, traffic=tuple(replace(r, others=r.others[:SHOWN_OTHERS]) for r in f.traffic))
            for f in report.findings
        ),
    )


@pytest.mark.parametrize("which", ["example", "gen400"])
def test_the_text_and_junit_reports_read_alike_with_reasons_written_when_shown(
    which: str,
) -> None:
    """What the CLI renders for text and JUnit (`shown`: the rows those show) reads as
    the report with every reason written: the reasons they show are there, the others
    are not read."""
    snapshot = load_snapshot([EXAMPLE]) if which == "example" else _generated()
    eager, _ = lint_pair(snapshot, target="cilium", jobs=2)
    few, _ = lint_brief(snapshot, target="cilium", jobs=2, shown=MAX_TEXT_TRAFFIC)
    assert render_text(few) == render_text(eager)
    assert render_junit(few) == render_junit(eager)
    if which == "gen400":  # some finding there has rows the reports do not show
        assert any(len(f.traffic) > MAX_TEXT_TRAFFIC for f in few.findings)
        # and a connection that stands for more classes than a text names: the text
        # lint names only those (and counts the rest), the JSON's names more
        named = [len(r.others) for f in few.findings for r in f.traffic]
        listed = [len(r.others) for f in eager.findings for r in f.traffic]
        assert max(named) == SHOWN_OTHERS < max(listed)


def test_only_an_end_port_difference_shares_the_connections() -> None:
    cilium, old, new = (get_dataplane(n) for n in ("cilium", "cilium-1.16", "cilium-1.19"))
    assert same_enumeration(cilium, old)
    assert not same_enumeration(cilium, new)
    assert not same_enumeration(cilium, get_dataplane("npm"))


def test_the_cli_names_what_the_older_release_adds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --target (and no Kubernetes version in the input) the newest target is
    linted and a note counts what cilium-1.16 adds: the findings a lint with --target
    cilium-1.16 reports beyond it, by kind and severity."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from gen import generate
    finally:
        sys.path.remove(str(ROOT / "bench"))
    docs = generate(pods=400, namespaces=10, policies=80, nodes=4, seed=1)
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    assert main(["lint", str(path), "--format", "json", "--no-progress"]) == 1
    notes = json.loads(capsys.readouterr().out)["notes"]
    snapshot = load_snapshot([path])
    newest = {f.id for f in lint_snapshot(snapshot, target="cilium").findings}
    extra = [
        f for f in lint_snapshot(snapshot, target="cilium-1.16").findings if f.id not in newest
    ]
    assert extra
    counts: dict[str, int] = {}
    for f in extra:
        counts[f"{f.kind} {f.severity}s"] = counts.get(f"{f.kind} {f.severity}s", 0) + 1
    line = next(n for n in notes if n.startswith("under cilium-1.16"))
    assert line == (
        "under cilium-1.16 (AKS on Kubernetes 1.31) also: "
        + ", ".join(f"{n} {k}" for k, n in counts.items())
        + " (lint with --target cilium-1.16 for the details)"
    )


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        {"a": [], "b": {}, "c": [{}], "d": [[1, 2.5], ["x"]]},
        {3: "int key", 2.5: True, None: False, True: None, False: 0},
        ['é ünïcode \n " \\ \u2028', float("nan"), float("inf"), -float("inf"), 1e16, -0.0],
        (1, (2, (3,))),
        Operator.NOT_IN,  # a StrEnum, as the reports hold
        7,
        None,
    ],
)
def test_the_json_writer_writes_what_json_dumps_writes(value: object) -> None:
    assert dumps_indented(value, 2) == json.dumps(value, indent=2)
    assert dumps_indented({"nested": value}, 4) == json.dumps({"nested": value}, indent=4)
    for whole in (value, {"a": {"b": [value, value]}}):
        parts: list[str] = []
        write_indented(whole, parts.append, 2)
        assert "".join(parts) == json.dumps(whole, indent=2)


def test_a_lazy_list_is_written_as_the_list() -> None:
    for items in ([], [1], [{"a": []}, "b"]):
        parts: list[str] = []
        write_indented({"x": Lazy(iter(items)), "y": 1}, parts.append, 2)
        assert "".join(parts) == json.dumps({"x": items, "y": 1}, indent=2)
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_indented({"x": Lazy([object()])}, [].append, 2)


def test_a_plain_lazy_list_goes_through_orjson_with_json_dumps_text() -> None:
    """Items without floats are written by orjson where its text is json.dumps's; non-ASCII
    text, keys that are not strings and integers beyond 64 bits go the other way."""
    items = [
        {"a": [], "b": {}, "c": [{}], "d": [[1, 2], ["x"]], "e": None, "f": True},
        {"text": 'é ünïcode \n " \\ \u2028', "n": 7},
        {3: "int key", None: False, True: None},
        {"big": 2**70, "small": -(2**63)},
        {"enum": Operator.NOT_IN, "tuple": (1, (2, (3,)))},
        "a string",
        [],
    ]
    for outer in ({"x": items}, {"a": {"b": items}}):
        parts: list[str] = []
        lazy = {k: Lazy(iter(v), plain=True) if k == "x" else v for k, v in outer.items()}
        write_indented(lazy, parts.append, 2)
        assert "".join(parts) == json.dumps(outer, indent=2)
    parts = []
    write_indented({"x": Lazy(iter(items), plain=True)}, parts.append, 4)
    assert "".join(parts) == json.dumps({"x": items}, indent=4)
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_indented({"x": Lazy([{"a": object()}], plain=True)}, [].append, 2)


def test_the_json_writer_leaves_what_json_rejects_to_json() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps_indented({"a": object()})
    with pytest.raises(TypeError, match="keys must be"):
        dumps_indented({(1, 2): "tuple key"})


def test_a_whole_lint_report_is_written_as_json_dumps_writes_it() -> None:
    report = lint_snapshot(load_snapshot([EXAMPLE]), target="cilium-1.16")
    data = report_json(report)
    assert dumps_indented(data, 2) == json.dumps(data, indent=2)
    out = io.StringIO()
    write_json(report, out)
    assert out.getvalue() == json.dumps(data, indent=2) + "\n" == render_json(report)


def _pod(name: str, ns: str, labels: Mapping[str, str]) -> Pod:
    return Pod(name=name, namespace=ns, labels=dict(labels), node_name="n1", ip="10.0.0.1")


def test_the_label_index_matches_as_the_selector_does() -> None:
    pods = [
        _pod("a", "x", {"app": "a", "tier": "web"}),
        _pod("b", "x", {"app": "b", "tier": "web"}),
        _pod("c", "x", {"app": "a", "tier": "db"}),
        _pod("d", "x", {}),
    ]
    labels = {p.key: p.labels for p in pods}
    index = LabelIndex(pods, labels)
    selectors = [
        LabelSelector(match_labels=(("app", "a"),)),
        LabelSelector(match_labels=(("app", "a"), ("tier", "web"))),
        LabelSelector(match_labels=(("app", "z"),)),
        LabelSelector(match_labels=(("tier", "web"),)),
        LabelSelector(
            match_expressions=(Requirement(key="app", operator=Operator.DOES_NOT_EXIST),)
        ),
        LabelSelector(),
    ]
    for want in ({"x/a"}, {"x/a", "x/c"}, {"x/d"}, set()):
        groups = index.other_groups(want)
        for sel in selectors:
            brute = any(sel.matches(p.labels) for p in pods if p.key not in want)
            assert index.matches_any(sel, groups) is brute, (sel, want)


def _end_port_behind_a_service() -> Snapshot:
    """A NodePort Service whose named targetPort (8081) lies inside an ingress endPort range
    (8080-8090) past its first port: npm and cilium admit it, cilium-1.16 (first port
    only) does not. The Service's own port (80) is outside the range."""
    meta = {"namespace": "shop"}
    return snapshot_from_dicts(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": "n1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.224.0.4"}]},
            },
            *(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, **meta, "labels": {"app": name}},
                    "spec": {
                        "nodeName": "n1",
                        "containers": [
                            {"name": "c", "ports": [{"name": "web", "containerPort": 8081}]}
                        ],
                    },
                    "status": {"phase": "Running", "podIP": ip},
                }
                for name, ip in (("api", "10.244.0.5"), ("client", "10.244.0.6"))
            ),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "api", **meta},
                "spec": {
                    "type": "NodePort",
                    "selector": {"app": "api"},
                    "ports": [{"port": 80, "targetPort": "web", "nodePort": 30080}],
                },
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "api-range", **meta},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "api"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"ports": [{"port": 8080, "endPort": 8090}]}],
                },
            },
        ]
    )


def test_the_older_release_is_judged_where_a_range_holds_a_named_target_port() -> None:
    """The shared pass leaves the older release out only where it must agree: here the
    Service's named targetPort falls inside the endPort range, so its findings are the
    ones a lint of its own reports (and there are some)."""
    snapshot = _end_port_behind_a_service()
    report, extra = lint_pair(snapshot, target="cilium", also="cilium-1.16")
    alone = lint_snapshot(snapshot, target="cilium-1.16", fixes=False)
    assert [finding_json(f) for f in extra] == [finding_json(f) for f in alone.findings]
    assert extra, "cilium-1.16 cuts the Service's targetPort 8081 (first port only)"
    assert {f.id for f in extra} - {f.id for f in report.findings}


def test_end_port_ranges_hold_the_ports_past_the_first() -> None:
    ranges = EndPortRanges(_end_port_behind_a_service())
    assert [p for p in (80, 8079, 8080, 8081, 8090, 8091, None, "web") if ranges.holds(p)] == [
        8081,
        8090,
    ]
    assert not EndPortRanges(load_snapshot([EXAMPLE])).holds(80)


def test_needless_judges_through_a_service_on_every_port_it_may_translate_to() -> None:
    """Through a Service, the older release is left out only when no endPort range holds
    the Service's ports, nodePorts or the numbers its named targetPort stands for, even
    where the verdict names no port (a Service probed without a backend); straight to a
    pod, the connection's own port decides."""
    snapshot = _end_port_behind_a_service()
    cilium, old = get_dataplane("cilium"), get_dataplane("cilium-1.16")
    engine = Engine(snapshot)
    pods = {p.name: p for p in snapshot.pods}
    svc = snapshot.services[0]
    needless = Needless(snapshot, cilium, old)

    def probe(traffic: Traffic) -> SimpleNamespace:
        return SimpleNamespace(traffic=traffic)

    via_service = Traffic(
        source=PodEndpoint(pod=pods["client"]),
        destination=ServiceEndpoint(service=svc, via=Via.CLUSTER_IP),
        port=80,
    )
    vt = replace(engine.evaluate(via_service, cilium), port=None)
    assert not needless(probe(via_service), vt)  # type: ignore[arg-type]
    assert not needless(probe(via_service), None)  # type: ignore[arg-type]
    for port, expected in ((80, True), (8081, False)):
        direct = Traffic(
            source=PodEndpoint(pod=pods["client"]),
            destination=PodEndpoint(pod=pods["api"]),
            port=port,
        )
        vt = engine.evaluate(direct, cilium)
        assert needless(probe(direct), vt) is expected  # type: ignore[arg-type]
    assert not Needless(snapshot, cilium, get_dataplane("npm"))(probe(direct), vt)  # type: ignore[arg-type]


def test_the_targets_verdict_is_reused_only_where_it_is_the_older_releases() -> None:
    """`Needless.same_verdict` lets the shared pass take the target's verdict for the older
    release's: wherever it says so, the older release's own verdict is that verdict, equal
    field by field (texts included); SCTP, whose D24 note names the dataplane, is judged."""
    snapshot = load_snapshot([EXAMPLE])
    engine = Engine(snapshot)
    tgt, old = get_dataplane("cilium"), get_dataplane("cilium-1.16")
    needless = Needless(snapshot, tgt, old)
    pods = [p for p in snapshot.pods if p.ip and not p.host_network][:12]
    reused = judged = 0
    for src in pods:
        for dst in pods:
            if src.key == dst.key:
                continue
            for port, proto in ((8080, Protocol.TCP), (80, Protocol.TCP), (9999, Protocol.SCTP)):
                traffic = Traffic(
                    source=PodEndpoint(pod=src),
                    destination=PodEndpoint(pod=dst),
                    port=port,
                    protocol=proto,
                )
                vt = engine.evaluate(traffic, tgt)
                if needless.same_verdict(traffic, vt):
                    assert engine.evaluate(traffic, old) == vt, traffic
                    assert proto is not Protocol.SCTP
                    reused += 1
                else:
                    judged += 1
    assert reused and judged


@pytest.mark.parametrize("which", ["example", "gen400"])
def test_the_verdicts_the_enumerator_made_are_the_connections_own(which: str) -> None:
    """`judged`: the target's verdict on an in-cluster client group's first connection,
    made to split the group, is what the lint takes instead of judging it again. Each
    must be the engine's verdict on that very connection, and there must be some."""
    from netparity.lint.probes import ProbeBuilder
    from netparity.plan.class_index import ClassIndex

    snapshot = load_snapshot([EXAMPLE]) if which == "example" else _generated()
    npm, tgt = get_dataplane("npm"), get_dataplane("cilium")
    engine = Engine(snapshot)
    builder = ProbeBuilder(snapshot, engine, ClassIndex(engine, (npm, tgt)), npm, tgt)
    reused = 0
    for svc in snapshot.services:
        probes = builder.service_probes(svc)
        ids = {id(p) for p in probes}
        for key, (conn, verdict) in builder.judged.items():
            assert key == id(conn) and key in ids
            assert verdict == engine.evaluate(conn.traffic, tgt)
            reused += 1
    assert reused
