"""Reading files that users name: UTF-8 text and YAML documents, with bounded aliases.

Every reader of user input goes through here, so that bytes that are not UTF-8, malformed
YAML and YAML whose aliases expand without bound (the "billion laughs" shape of
CVE-2019-11253) end in one sentence naming the file, never in a traceback or a
MemoryError. Manifests from a pull request are untrusted input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from netparity.errors import InputError

_BASE_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster

# Where an alias could start: `*` at the start of a node, after white space or a flow
# indicator. Text without one has no alias, and its documents skip the walk.
_MAYBE_ALIAS = re.compile(r"(?:^|[\s\[\{,])\*")


def _allowed_alias_ratio(expanded: int) -> float:
    """The share of expanded nodes that may come from aliases, as the API server allows.

    The Kubernetes API server's YAML decoder (go-yaml v2, since CVE-2019-11253) allows 99%
    for small documents and 10% for huge ones, linearly in between."""
    low, high = 400_000, 4_000_000
    if expanded <= low:
        return 0.99
    if expanded >= high:
        return 0.10
    return 0.99 - 0.89 * (expanded - low) / (high - low)


def check_aliases(node: yaml.Node, source: str) -> None:
    """Refuse a composed document whose aliases would expand it beyond the API server's bound.

    Counts the nodes the document would have with every alias expanded (each distinct node
    once, memoised, so the check is linear in the file) and compares the expansion with
    the distinct nodes the file really holds."""
    sizes: dict[int, int] = {}
    distinct = 0
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, done = stack.pop()
        key = id(current)
        if done:
            total = 1
            if isinstance(current, yaml.SequenceNode):
                total += sum(sizes[id(c)] for c in current.value)
            elif isinstance(current, yaml.MappingNode):
                total += sum(sizes[id(k)] + sizes[id(v)] for k, v in current.value)
            sizes[key] = total
            continue
        if key in sizes:
            if sizes[key] < 0:
                raise InputError(
                    "YAML alias refers to itself (a recursive document)", source=source
                )
            continue
        sizes[key] = -1  # in progress: a cycle back to it is a recursive alias
        distinct += 1
        stack.append((current, True))
        if isinstance(current, yaml.SequenceNode):
            stack.extend((c, False) for c in current.value)
        elif isinstance(current, yaml.MappingNode):
            for k, v in current.value:
                stack.append((k, False))
                stack.append((v, False))
    expanded = sizes[id(node)]
    aliased = expanded - distinct
    if expanded > 1_000 and aliased > 100 and aliased / expanded > _allowed_alias_ratio(expanded):
        raise InputError(
            f"YAML aliases would expand {distinct} nodes into {expanded}: refused, as the "
            "Kubernetes API server refuses excessive aliasing",
            source=source,
        )


def _loader(text: str, source: str) -> type[Any]:
    if not _MAYBE_ALIAS.search(text):
        return _BASE_LOADER

    class BoundedLoader(_BASE_LOADER):  # type: ignore[misc]
        """The safe loader (libyaml where present) that checks each composed document."""

        def get_node(self) -> Any:
            node = super().get_node()
            if node is not None:
                check_aliases(node, source)
            return node

        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None:
                check_aliases(node, source)
            return node

    return BoundedLoader


def read_text(path: str | Path, what: str = "the file") -> str:
    """The file's text; a file that cannot be read or is not UTF-8 is one sentence."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError as e:
        raise InputError(f"{what} is a folder, not a file", source=str(p)) from e
    except OSError as e:
        raise InputError(f"cannot read {what} ({e.strerror})", source=str(p)) from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{what} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})",
            source=str(p),
        ) from e


def _malformed(e: yaml.YAMLError, source: str) -> InputError:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return InputError(f"malformed YAML{where}: {problem}", source=source)


def load_all(text: str, source: str) -> Iterator[Any]:
    """Every YAML document in `text`, each checked for alias expansion before it is built."""
    try:
        yield from yaml.load_all(text, Loader=_loader(text, source))
    except yaml.YAMLError as e:
        raise _malformed(e, source) from e


def load_one(text: str, source: str) -> Any:
    """The single YAML document in `text` (None when empty)."""
    try:
        return yaml.load(text, Loader=_loader(text, source))
    except yaml.YAMLError as e:
        raise _malformed(e, source) from e


def read_yaml(path: str | Path, what: str) -> Any:
    """The file's single YAML document; `what` names it in errors ("the probe file")."""
    return load_one(read_text(path, what), str(path))
