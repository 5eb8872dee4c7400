"""The findings made of what the linter gathered (netparity.lint.lint's Linter)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from netparity.lint.findings import KIND_ROWS, Brief, Change, ChangedTraffic, Finding, Probe
from netparity.lint.kinds import TITLES, row_key
from netparity.lint.tally import Acc, ns_name


def findings(
    accs: Mapping[tuple[str, str, tuple[str, ...]], Acc],
    target: str,
    shown: int | None = None,
    explain: Callable[[Probe], tuple[str, str]] | None = None,
) -> list[Finding]:
    """The findings of what a Linter gathered, in the order it saw them. A connection
    whose reasons were not written as it was seen (`Entry.unwritten`) gets them from
    `explain` where it is among its finding's first `shown` (None: every one)."""
    out = []
    for (raw_kind, ns, key), acc in accs.items():
        kind = str(raw_kind)
        traffic = _traffic(acc, shown, explain)
        outages = sum(1 for c in traffic if c.change is Change.OUTAGE)
        holes = len(traffic) - outages
        parts = []
        if outages:
            parts.append(f"{outages} allowed connection group(s) will be cut")
        if holes:
            parts.append(f"{holes} denied connection group(s) will open")
        message = (
            f"{acc.object}: {TITLES.get(kind, kind)} under {target}; "
            + " and ".join(parts)
            + f", e.g. {traffic[0].describe()}"
        )
        rows = dict.fromkeys([KIND_ROWS[kind]] if kind in KIND_ROWS else [])
        rows.update(acc.rows)
        out.append(
            Finding(
                id=_id(kind, ns, key, acc),
                kind=kind,
                namespace=ns,
                object=acc.object,
                policies=tuple(acc.policies),
                rules=tuple(str(r) for r in acc.refs),
                rule_refs=tuple(acc.refs),
                service=None if acc.service is None else acc.service.key,
                title=TITLES.get(kind, kind),
                message=message,
                traffic=tuple(traffic),
                rows=tuple(sorted(rows, key=row_key)),
                uncertain=tuple(acc.uncertain),
                expectations=tuple(acc.expectations),
            )
        )
    return out


def briefs(accs: Mapping[tuple[str, str, tuple[str, ...]], Acc]) -> list[Brief]:
    """What each finding a brief Linter gathered is, in the order `findings` makes them."""
    out = []
    for (raw_kind, ns, key), acc in accs.items():
        kind = str(raw_kind)
        severity = "outage" if Change.OUTAGE in acc.changes else "hole"
        out.append(Brief(_id(kind, ns, key, acc), kind, severity, ns, acc.object))
    return out


def _id(kind: str, ns: str, key: tuple[str, ...], acc: Acc) -> str:
    """A finding's id: kind/namespace/object names (the Service's, or the policies')."""
    names = acc.service.name if acc.service is not None else "+".join(ns_name(p)[1] for p in key)
    return f"{kind}/{ns}/{names}"


def _traffic(
    acc: Acc, shown: int | None, explain: Callable[[Probe], tuple[str, str]] | None
) -> list[ChangedTraffic]:
    """A finding's rows in report order, the first `shown` with their reasons written."""
    traffic = []
    unwritten: dict[int, Probe] = {}  # by id of the row
    for (change, direction, path, pods, peer), e in acc.entries.items():
        ports = sorted(e.ports)
        traffic.append(
            ChangedTraffic(
                change=change,
                direction=direction,
                path=path,
                pods=pods,
                peer=peer,
                ports=tuple(label for _, label in ports),
                npm=e.npm,
                target=e.target,
                uncertain=tuple(e.uncertain),
                from_pods=e.from_pods,
                others=e.others,
                others_pods=e.others_pods,
                others_classes=e.others_classes,
            )
        )
        if e.unwritten is not None:
            unwritten[id(traffic[-1])] = e.unwritten
    traffic.sort(
        key=lambda c: (
            c.change.rank,
            c.direction,
            c.pods.namespace,
            c.pods.labels,
            c.pods.example,
            c.peer,
        )
    )
    if unwritten:
        assert explain is not None, "a Linter that leaves reasons unwritten explains them"
        for i, row in enumerate(traffic[:shown]):
            probe = unwritten.get(id(row))
            if probe is not None:
                npm, tgt = explain(probe)
                traffic[i] = replace(row, npm=npm, target=tgt)
    return traffic
