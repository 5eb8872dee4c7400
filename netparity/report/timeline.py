"""The migration window as a picture: a watch's timeline (netparity.watch.timeline) as an
inline SVG for parity.html (one row per node with its reimage span, one row per probe that
had a window, red spans for exposures, amber for disruptions, the moment the target began
enforcing), and as Markdown lines listing the windows with their durations. No network,
no script: plain SVG text."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from netparity.watch.timeline import Timeline, timeline_from_json, windows

_ROW = 18
_LABEL = 260
_WIDTH = 900
_COLOURS = {"exposure": "#d62728", "disruption": "#ff9f1c", "reimage": "#9ecae1"}


def timeline_svg(tl: Timeline) -> str:
    found = windows(tl)
    probes = sorted({w.probe for w in found})
    titles = {p.id: p.title for p in tl.probes}
    rows = [("node", n.node) for n in tl.nodes] + [("probe", p) for p in probes]
    span = max(tl.end - tl.start, 1e-3)
    plot = _WIDTH - _LABEL - 10
    height = _ROW * (len(rows) + 2)

    def x(t: float) -> float:
        return round(_LABEL + plot * min(max((t - tl.start) / span, 0.0), 1.0), 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'role="img" aria-label="migration window timeline" font-family="sans-serif" '
        f'font-size="11">'
    ]
    for i, (kind, key) in enumerate(rows):
        y = _ROW * (i + 1)
        label = f"node {key}" if kind == "node" else titles.get(key, key)
        out.append(f'<text x="4" y="{y + 12}">{escape(label[:42])}</text>')
        if kind == "node":
            for n in tl.nodes:
                if n.node == key:
                    end = n.end if n.end is not None else tl.end
                    out.append(_rect(x(n.start), y, x(end), "reimage", f"reimaged {n.node}"))
        else:
            for w in found:
                if w.probe == key:
                    what = f"{w.kind} {w.seconds:.1f} s on {w.node or '?'}"
                    out.append(_rect(x(w.start), y, x(w.end), str(w.kind), what))
    if tl.enforced is not None:
        ex = x(tl.enforced)
        out.append(
            f'<line x1="{ex}" y1="{_ROW // 2}" x2="{ex}" y2="{height - _ROW}" stroke="#2ca02c" '
            f'stroke-width="2"><title>{escape(tl.target)} enforces</title></line>'
        )
    out.append(
        f'<text x="{_LABEL}" y="{height - 4}">0 s</text>'
        f'<text x="{_WIDTH - 60}" y="{height - 4}">{span:.0f} s</text></svg>'
    )
    return "".join(out)


def _rect(x0: float, y: int, x1: float, kind: str, title: str) -> str:
    width = max(x1 - x0, 2.0)
    return (
        f'<rect x="{x0}" y="{y + 2}" width="{round(width, 1)}" height="{_ROW - 4}" '
        f'fill="{_COLOURS[kind]}"><title>{escape(title)}</title></rect>'
    )


def timeline_markdown(tl: Timeline) -> list[str]:
    """A `## Migration window` section: every window with its duration."""
    found = windows(tl)
    titles = {p.id: p.title for p in tl.probes}
    lines = ["## Migration window", ""]
    lines.append(
        f"{len(tl.probes)} sentinel probes watched every {tl.interval:g} s for "
        f"{tl.end - tl.start:.0f} s ({tl.stopped}); {len(found)} windows."
    )
    lines.append("")
    if not found:
        return lines
    lines += ["| kind | probe | node | from | seconds |", "|---|---|---|---|---|"]
    for w in found:
        more = " (open)" if w.open else ""
        lines.append(
            f"| {w.kind} | {titles.get(w.probe, w.probe)} | {w.node or ''} | "
            f"+{w.start - tl.start:.1f} s | {w.seconds:.1f}{more} |"
        )
    lines.append("")
    return lines


TIMELINE_FILE = "timeline.json"


def with_timeline(html: str, markdown: str, folder: Path) -> tuple[str, str]:
    """parity.html and parity.md with the watch's timeline where `folder` has one (a
    timeline.json beside the report); unchanged otherwise, or where it cannot be read."""
    path = folder / TIMELINE_FILE
    if not path.is_file():
        return html, markdown
    try:
        tl = timeline_from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return html, markdown
    section = (
        f'<section id="migration-window"><h2>Migration window</h2>{timeline_svg(tl)}</section>'
    )
    at = html.rfind("</body>")
    html = html[:at] + section + html[at:] if at >= 0 else html + section
    return html, markdown.rstrip("\n") + "\n\n" + "\n".join(timeline_markdown(tl))
