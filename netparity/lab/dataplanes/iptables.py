"""A small builder for `iptables-restore` and `ipset restore` input, deterministic text out."""

from __future__ import annotations

import re

BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}

_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:/,=+@#()\[\]<>-]")


def comment(text: str) -> str:
    """`-m comment --comment "..."` with the text made safe for iptables-restore."""
    safe = _UNSAFE.sub("_", text)[:250]
    return f'-m comment --comment "{safe}"'


class Table:
    """One table of an iptables-restore file: chain declarations, then rules in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._chains: dict[str, None] = {}
        self._rules: list[str] = []
        self._notes: list[str] = []

    def chain(self, name: str) -> str:
        if name not in BUILTIN_CHAINS[self.name]:
            self._chains.setdefault(name, None)
        return name

    def add(self, chain: str, spec: str) -> None:
        self.chain(chain)
        self._rules.append(f"-A {chain} {spec}".rstrip())

    def note(self, text: str) -> None:
        """A comment line in the file (iptables-restore ignores lines starting with #)."""
        self._notes.append("# " + text.replace("\n", " "))

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(self._rules)

    def extend(self, other: Table) -> None:
        """Append another table's chains, rules and notes (same table name)."""
        if other.name != self.name:
            raise ValueError(f"cannot extend table {self.name} with table {other.name}")
        for chain in other._chains:
            self.chain(chain)
        self._rules.extend(other._rules)
        self._notes.extend(other._notes)

    def render(self) -> str:
        lines = [*self._notes, f"*{self.name}"]
        lines += [f":{c} ACCEPT [0:0]" for c in BUILTIN_CHAINS[self.name]]
        lines += [f":{c} - [0:0]" for c in self._chains]
        lines += self._rules
        lines.append("COMMIT")
        return "\n".join(lines) + "\n"


def render_tables(*tables: Table) -> str:
    return "".join(t.render() for t in tables)


class IpsetFile:
    """`ipset restore` input: each set created if missing, flushed, then filled (re-appliable)."""

    def __init__(self) -> None:
        self._sets: dict[str, tuple[str, list[str], str]] = {}

    def define(self, name: str, kind: str, members: list[str], *, note: str = "") -> str:
        if len(name) > 31:
            raise ValueError(f"ipset name {name!r} is longer than 31 characters")
        if name in self._sets:
            prev = self._sets[name]
            if prev[0] != kind or prev[1] != members:
                raise ValueError(f"ipset {name!r} defined twice with different contents")
            return name
        self._sets[name] = (kind, members, note)
        return name

    def __contains__(self, name: str) -> bool:
        return name in self._sets

    def extend(self, other: IpsetFile) -> None:
        for name, (kind, members, note) in other._sets.items():
            self.define(name, kind, members, note=note)

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, members, note) in self._sets.items():
            if note:
                lines.append(f"# {name}: {note}")
            lines.append(f"create {name} {kind} family inet -exist")
            lines.append(f"flush {name}")
            lines += [f"add {name} {m}" for m in members]
        return "\n".join(lines) + ("\n" if lines else "")
