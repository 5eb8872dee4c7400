"""Windows from verdicts over time (pure), the timeline.json round trip, and its picture."""

from __future__ import annotations

from netparity.report.timeline import timeline_markdown, timeline_svg
from netparity.watch.timeline import (
    NodeChange,
    Sample,
    Seen,
    Timeline,
    WatchedProbe,
    timeline_from_json,
    timeline_json,
    windows,
)

A, D, N, E = Seen.ALLOW, Seen.DENY, Seen.NOT_PLACED, Seen.ERROR


def _probe(pid: str, current: str, target: str, verdicts: list[Seen]) -> WatchedProbe:
    return WatchedProbe(
        id=pid,
        title=f"title {pid}",
        current=current,
        target=target,
        nodes=("n1", "n2"),
        samples=tuple(Sample(time=100.0 + i, verdict=v) for i, v in enumerate(verdicts)),
    )


def _tl(*probes: WatchedProbe) -> Timeline:
    return Timeline(
        cluster="lab:x",
        current="npm",
        target="cilium",
        start=100.0,
        end=110.0,
        interval=1.0,
        probes=probes,
        nodes=(
            NodeChange(node="n1", start=101.0, end=102.0, dataplane="cilium"),
            NodeChange(node="n2", start=104.0, end=105.5, dataplane="cilium"),
        ),
        enforced=108.0,
        stopped="stable",
    )


def test_an_exposure_runs_from_the_first_connect_to_the_next_deny_across_gaps() -> None:
    tl = _tl(_probe("p", "deny", "deny", [D, N, N, A, N, A, E, D, D]))
    [w] = windows(tl)
    assert (str(w.kind), w.start, w.end, w.open) == ("exposure", 103.0, 107.0, False)
    assert w.node == "n1"  # the probe's node that came back last before it began


def test_a_disruption_still_open_at_the_end_is_marked_open() -> None:
    tl = _tl(_probe("p", "allow", "allow", [A, A, A, A, A, A, D, D]))
    [w] = windows(tl)
    assert (str(w.kind), w.start, w.end, w.open, w.node) == ("disruption", 106.0, 110.0, True, "n2")


def test_not_placed_gaps_and_predicted_changes_make_no_window() -> None:
    tl = _tl(
        _probe("gap", "allow", "allow", [A, N, N, E, A]),
        _probe("change", "allow", "deny", [A, A, D, D]),
    )
    assert windows(tl) == []


def test_the_json_form_reads_back_to_the_same_windows() -> None:
    tl = _tl(_probe("p", "deny", "deny", [D, A, A, D]), _probe("q", "allow", "allow", [A, D, A]))
    doc = timeline_json(tl)
    assert doc["kind"] == "netparity.timeline" and doc["schema_version"] == 1
    assert [(w["probe"], w["kind"], w["seconds"]) for w in doc["windows"]] == [
        ("p", "exposure", 2.0),
        ("q", "disruption", 1.0),
    ]
    assert windows(timeline_from_json(doc)) == windows(tl)


def test_the_picture_and_the_markdown_show_each_window_and_node() -> None:
    tl = _tl(_probe("p", "deny", "deny", [D, D, D, A, A, D]))
    svg = timeline_svg(tl)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('fill="#d62728"') == 1  # one exposure span
    assert svg.count('fill="#9ecae1"') == 2  # two node reimages
    assert "cilium enforces" in svg and "http" not in svg.replace("http://www.w3.org", "")
    md = "\n".join(timeline_markdown(tl))
    assert "| exposure | title p | n1 | +3.0 s | 2.0 |" in md


def test_a_report_beside_a_timeline_shows_the_window(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from netparity.report.timeline import with_timeline

    tl = _tl(_probe("p", "deny", "deny", [D, A, D]))
    (tmp_path / "timeline.json").write_text(json.dumps(timeline_json(tl)))
    html, md = with_timeline("<html><body><h1>x</h1></body></html>", "# parity\n", tmp_path)
    assert html.index("<svg") < html.index("</body>") and 'id="migration-window"' in html
    assert md.startswith("# parity\n") and "| exposure | title p |" in md
    (tmp_path / "timeline.json").write_text("{broken")
    assert with_timeline("<body></body>", "m", tmp_path) == ("<body></body>", "m")
