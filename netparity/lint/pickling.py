"""The walk's logs on the wire (netparity.lint.parallel): pickled so that the snapshot's
pods, nodes and Services travel as their place in it (the parent's own objects come
back) and slotted dataclasses as their field values (dataclasses' own __getstate__ and
__setstate__ take twice as long both ways)."""

from __future__ import annotations

import dataclasses
import io
import operator
import pickle
import struct
from collections.abc import Callable
from typing import Any

from netparity.model.objects import Node, Pod, Service
from netparity.model.snapshot import Snapshot

FRAME = struct.Struct("=Q")  # a message's length, before it


def message(reducers: Reducers, message: object) -> memoryview:
    """A message pickled, its length before it."""
    out = io.BytesIO()
    out.write(bytes(FRAME.size))
    Pickler(out, reducers).dump(message)
    data = out.getbuffer()
    FRAME.pack_into(data, 0, len(data) - FRAME.size)
    return data


_KINDS = ("pods", "nodes", "services")


def _shared(kind: str, index: int) -> object:  # stands for the snapshot's object (unpickled)
    raise pickle.UnpicklingError(f"{kind}[{index}] outside a walk")


class Reducers(dict[type, Callable[[Any], Any]]):
    """How the pickler writes an object, by its type: the snapshot's pods, nodes and
    Services as their place in it; a slotted dataclass as its class and field values,
    rebuilt by `_slotted` (dataclasses' own __getstate__/__setstate__ take twice as long
    both ways: a fifth of what the walk's parent spends on a helper's logs); any other
    type the way pickle writes it (KeyError)."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.places: dict[int, tuple[str, int]] = {}  # by identity
        for kind_name in _KINDS:
            for i, obj in enumerate(getattr(snapshot, kind_name)):
                self.places[id(obj)] = (kind_name, i)
        for kind in (Pod, Node, Service):
            self[kind] = self._place

    def _place(self, obj: object) -> Any:
        at = self.places.get(id(obj))
        if at is not None:
            return _shared, at
        return obj.__reduce_ex__(pickle.HIGHEST_PROTOCOL)

    def __missing__(self, kind: type) -> Callable[[Any], Any]:
        names = _fields(kind)
        if names is None:
            raise KeyError(kind)
        values = operator.attrgetter(*names)
        one = len(names) == 1

        def reduce(obj: object) -> Any:
            return _slotted, (kind, (values(obj),) if one else values(obj))

        self[kind] = reduce
        return reduce


def _fields(kind: type) -> tuple[str, ...] | None:
    """A slotted dataclass's fields, in order (None: another type)."""
    if not dataclasses.is_dataclass(kind) or "__slots__" not in kind.__dict__:
        return None
    return tuple(f.name for f in dataclasses.fields(kind)) or None


_SETTERS: dict[type, tuple[Callable[[object, Any], None], ...]] = {}


def _slotted(kind: type, values: tuple[Any, ...]) -> object:
    """A slotted dataclass from its field values (what `Reducers` wrote)."""
    setters = _SETTERS.get(kind)
    if setters is None:
        names = _fields(kind)
        if names is None:
            raise pickle.UnpicklingError(f"{kind.__qualname__} is not a slotted dataclass")
        slots = {n: k.__dict__[n] for k in reversed(kind.__mro__) for n in names if n in k.__dict__}
        setters = _SETTERS[kind] = tuple(slots[n].__set__ for n in names)
    obj: object = object.__new__(kind)
    for setter, value in zip(setters, values, strict=True):
        setter(obj, value)
    return obj


class Pickler(pickle.Pickler):
    def __init__(self, file: Any, reducers: Reducers) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.dispatch_table = reducers


class Unpickler(pickle.Unpickler):
    """The snapshot's pods, nodes and Services back from their place in it. (The memo
    holds what `find_class` returns: a method of the unpickler would make a cycle that
    only the cycle collector, paused during a lint, frees: every message kept.)"""

    def __init__(self, file: Any, lookup: Callable[[str, int], object]) -> None:
        super().__init__(file)
        self._lookup = lookup

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_shared":
            return self._lookup
        return super().find_class(module, name)


def lookup(snapshot: Snapshot) -> Callable[[str, int], object]:
    def find(kind: str, index: int) -> object:
        return getattr(snapshot, kind)[index]

    return find
