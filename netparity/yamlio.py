"""Reading files that users name: UTF-8 text and YAML documents, with bounded aliases.

Every reader of user input goes through here, so that bytes that are not UTF-8, malformed
YAML and YAML whose aliases expand without bound (the "billion laughs" shape of
CVE-2019-11253) end in one sentence naming the file, never in a traceback or a
MemoryError. Manifests from a pull request are untrusted input.

YAML is read by yaml_rs where it is installed and the text holds nothing on which YAML 1.2
(yaml_rs) and YAML 1.1 (PyYAML) build different objects; everything else, and whatever
yaml_rs refuses, is read by PyYAML with libyaml (`fast_path_applies`, tests/test_yamlio.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from netparity.errors import InputError

_yaml_rs: Any
try:  # Rust, 15x faster than libyaml on a kubectl snapshot; PyYAML where it has no wheel
    import yaml_rs as _yaml_rs
except ImportError:  # pragma: no cover - the fallback is tested by setting FAST_PARSER off
    _yaml_rs = None

_BASE_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster
# The fast path: yaml_rs where installed (`None` turns it off, as a missing wheel does).
FAST_PARSER: Any = _yaml_rs

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


# -- the fast path --------------------------------------------------------------------------
# yaml_rs implements YAML 1.2 (core schema); PyYAML implements YAML 1.1. They build the same
# objects except for the plain scalars and constructs below, so text that may hold one of
# them goes to PyYAML, as does text with an alias (the bound above is PyYAML's) and text
# that yaml_rs refuses (PyYAML then names the line, or reads what yaml_rs did not).
# The scalars that differ: YAML 1.1 booleans, octal and leading-zero numbers, sexagesimal,
# exponents, underscores in numbers, signed dot-floats, timestamps, `=`, merge keys `<<`.
_RISKY_SCALAR = (
    r"(?:[yY]es|YES|[nN]o|NO|[oO]n|ON|[oO]ff|OFF|=|<<"
    r"|[-+]?0[0-9_]+|[-+]?0o[0-7_]*"
    r"|[-+]?[0-9][0-9_]*(?::[0-9_]+)+(?:\.[0-9_]*)?"
    r"|[-+]?[0-9.][0-9_.]*[eE][-+]?[0-9_]*"
    r"|[-+]?[0-9.][0-9.]*_[0-9_.]*"
    r"|[-+]\.[0-9a-zA-Z]\S*"
    r"|[0-9]{4}-[0-9][0-9]?-\S*)"
)
# After white space or a flow indicator (a superset of where a plain scalar starts: a
# word inside a string only costs the fast path): such a scalar up to its end, a tag `!`,
# a complex key `?` or an alias `*`; or a flow collection used as a key. One pass, with a
# look-ahead that skips most positions at once (3 MB in 0.2 s).
_SLOW_ONLY = re.compile(
    r"[\s\[{,](?:(?=[yYnNoO=<+\-.0-9])"
    + _RISKY_SCALAR
    + r"[ \t]*(?=[\n,\]}:#]|\Z)|[!?*])|[\]}][ \t]*:(?:[ \t]|$)",
    re.MULTILINE,
)
# Directives, and document markers with content on their line or an end marker `...`
# (what follows one is a bare document): looked for only where `%`, `---`, `...` start a line.
_SLOW_MARKERS = re.compile(r"^%|^(?:---|\.\.\.)[ \t]*[^\s#]|^\.\.\.(?:[ \t]|$)", re.MULTILINE)
# A scalar that starts with `:` (`::/0`) in a flow collection that is not empty: PyYAML
# refuses some that yaml_rs reads (kubectl writes only empty ones, `{}` and `[]`).
_COLON_START = re.compile(r"[\s\[{,]:")
_FLOW = re.compile(r"[\[{]\s*[^\s\]}]")
_DOC_START = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)
_BLANK = re.compile(r"(?:[ \t]*(?:#.*)?(?:\n|$))*")


def fast_path_applies(text: str) -> bool:
    """Whether the fast parser reads `text` (else PyYAML does)."""
    if FAST_PARSER is None or "\r" in text or "\ufeff" in text:
        return False  # PyYAML reads other line ends and a byte order mark
    lined = "\n" + text
    if ("\n%" in lined or "\n---" in lined or "\n..." in lined) and _SLOW_MARKERS.search(text):
        return False
    if _SLOW_ONLY.search(lined):
        return False
    return not (_FLOW.search(text) and _COLON_START.search(lined))


def _fast_documents(text: str) -> list[Any] | None:
    """The documents of `text` from the fast parser, or None where PyYAML must read it."""
    parser = FAST_PARSER
    if not fast_path_applies(text):
        return None
    # `---` at the start of a line always starts a document (YAML forbids it in content).
    parts = _DOC_START.split(text)
    docs: list[Any] = []
    try:
        for i, part in enumerate(parts):
            if i == 0 and _BLANK.fullmatch(part):
                continue  # no document before the first `---` (or in an empty stream)
            docs.append(
                parser.loads(
                    part,
                    # timestamps are plain scalars (sent to PyYAML); yaml_rs also turns
                    # quoted ones into datetimes, which PyYAML keeps as strings
                    parse_datetime=False,
                    duplicate_key_policy=parser.DuplicateKeyPolicy.LastWins,
                )
            )
    except Exception:  # whatever it refuses, PyYAML reads or names the line
        return None
    return docs


def same_objects(a: Any, b: Any) -> bool:
    """Equal and of the same types (True is not 1), with mapping keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return same_objects(list(a), list(b)) and all(
            same_objects(x, y) for x, y in zip(a.values(), b.values(), strict=True)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same_objects(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def load_all(text: str, source: str) -> Iterator[Any]:
    """Every YAML document in `text`, each checked for alias expansion before it is built."""
    fast = _fast_documents(text)
    if fast is not None:
        yield from fast
        return
    try:
        yield from yaml.load_all(text, Loader=_loader(text, source))
    except yaml.YAMLError as e:
        raise _malformed(e, source) from e


def load_one(text: str, source: str) -> Any:
    """The single YAML document in `text` (None when empty)."""
    fast = _fast_documents(text)
    if fast is not None and len(fast) <= 1:
        return fast[0] if fast else None
    try:
        return yaml.load(text, Loader=_loader(text, source))
    except yaml.YAMLError as e:
        raise _malformed(e, source) from e


def read_yaml(path: str | Path, what: str) -> Any:
    """The file's single YAML document; `what` names it in errors ("the probe file")."""
    return load_one(read_text(path, what), str(path))
